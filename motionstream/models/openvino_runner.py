"""A pure torch module run by OpenVINO on the CPU: the stream's `openvino` lever (stream/engine.py).

    runner = OpenVINORunner(module)      # nothing happens yet
    outputs = runner(*inputs)            # first call: converts and compiles (seconds); then runs.
                                         # a tuple of fp32 torch tensors, the module's outputs

The module must be a pure function of its tensor inputs (no state, no Python branching on values).
It is converted with dynamic shapes, so one compiled model serves every chunk size and cache fill.
Precision: "auto" is OpenVINO's CPU default, bf16 where the CPU has bf16 instructions (AVX512-BF16,
AMX) and f32 elsewhere. Measured in benchmarks/stream_levers.py: the tiny decoder and the DiT
blocks run 2-4x faster than eager torch in bf16, within 0.1 dB of it.
Threads: torch's thread count at the first call, the CPU share the stream was given; fixed from then on.
OpenVINO's converter reports anonymous usage (openvino-telemetry) unless opted out: scripts/setup.sh opts out.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import warnings
from collections.abc import Iterator, Sequence

import openvino as ov
import torch
import torch.nn as nn

PRECISIONS = ("auto", "bf16", "f32")
_LIBC = ctypes.CDLL(None)            # the process's C library, for sigaltstack (opened once: it is on every call)


class _SignalStack(ctypes.Structure):
    """POSIX stack_t, for sigaltstack."""
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Restore the calling thread's alternate signal stack on exit.

    compile_model installs an alternate signal stack of OpenVINO's own on the calling thread, and a
    compiled model puts back, when it is freed, the one it found. Freed out of order, they leave the
    thread on a freed stack: the next Python signal handler (CPython's are SA_ONSTACK, e.g. torch's
    SIGCHLD handler) then kills the process with SIGSEGV (measured: the test suite, after a few dozen
    models). Keeping the thread's own stack makes every later restore a no-op."""
    saved = _SignalStack()
    _LIBC.sigaltstack(None, ctypes.byref(saved))
    try:
        yield
    finally:
        _LIBC.sigaltstack(ctypes.byref(saved), None)


class OpenVINORunner:
    """module (pure, eval) converted by ov.convert_model and compiled for the CPU at `precision`."""

    def __init__(self, module: nn.Module, precision: str = "auto"):
        if precision not in PRECISIONS:
            raise ValueError(f"OpenVINO precision must be one of {PRECISIONS}, got {precision!r}")
        self.module, self.precision = module.eval(), precision
        self.compiled: ov.CompiledModel | None = None
        # one infer request, so one caller at a time: streams that share a codec share its decoder runner
        self.lock = threading.Lock()

    def _compile(self, example_inputs: Sequence[torch.Tensor]) -> None:
        """Convert with the first call's inputs as examples (shapes stay dynamic) and compile. The weights
        are copied in now: later changes to the module's parameters do not reach the compiled model."""
        with torch.no_grad(), warnings.catch_warnings():
            # convert_model traces with torch.jit, which warns that it is deprecated: nothing a user can act on
            warnings.simplefilter("ignore", DeprecationWarning)
            model = ov.convert_model(self.module, example_input=tuple(example_inputs))
        config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
        if self.precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = self.precision
        with keep_signal_stack():
            self.compiled = ov.Core().compile_model(model, "CPU", config)
            self.request = self.compiled.create_infer_request()

    @property
    def inference_precision(self) -> str | None:
        """The precision OpenVINO runs at on this CPU ("bf16" | "f32"); None before the first call."""
        return None if self.compiled is None else self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The module's outputs for CPU tensors `inputs` (its forward's arguments), as fp32 CPU tensors."""
        if any(x.device.type != "cpu" for x in inputs):
            raise ValueError("OpenVINO runs on the CPU: its inputs must be CPU tensors (stream.openvino: false on a GPU)")
        with self.lock, keep_signal_stack():
            if self.compiled is None:
                self._compile(inputs)
            self.request.infer([x.detach().contiguous().numpy() for x in inputs])
            # copies: the request reuses its output buffers on the next call
            return tuple(torch.from_numpy(self.request.get_output_tensor(i).data.copy())
                         for i in range(len(self.compiled.outputs)))
