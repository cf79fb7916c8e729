"""A pure torch module run by OpenVINO on the CPU: the stream's `openvino` lever (stream/engine.py).

    runner = OpenVINORunner(module)      # nothing happens yet
    outputs = runner(*inputs)            # first call: converts and compiles (seconds); then runs.
                                         # a tuple of fp32 torch tensors, the module's outputs

The module must be a pure function of its tensor inputs (no state, no Python branching on values).
It is converted with dynamic shapes, so one compiled model serves every chunk size and cache fill.
Precision: "auto" is OpenVINO's CPU default, bf16 where the CPU has bf16 instructions (AVX512-BF16,
AMX) and f32 elsewhere. Measured in benchmarks/stream_levers.py: the tiny decoder and the DiT
blocks run 2-4x faster than eager torch in bf16, within 0.1 dB of it.
Threads: torch's thread count at the first call, the CPU share the stream was given.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import openvino as ov
import torch
import torch.nn as nn

PRECISIONS = ("auto", "bf16", "f32")


class OpenVINORunner:
    """module (pure, eval) converted by ov.convert_model and compiled for the CPU at `precision`."""

    def __init__(self, module: nn.Module, precision: str = "auto"):
        if precision not in PRECISIONS:
            raise ValueError(f"OpenVINO precision must be one of {PRECISIONS}, got {precision!r}")
        self.module, self.precision = module.eval(), precision
        self.compiled: ov.CompiledModel | None = None

    def _compile(self, example_inputs: Sequence[torch.Tensor]) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            # convert_model traces with torch.jit, which warns that it is deprecated: nothing a user can act on
            warnings.simplefilter("ignore", DeprecationWarning)
            model = ov.convert_model(self.module, example_input=tuple(example_inputs))
        config = {"INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
        if self.precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = self.precision
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()   # one caller at a time (the stream's thread)

    @property
    def inference_precision(self) -> str | None:
        """The precision OpenVINO runs at on this CPU ("bf16" | "f32"); None before the first call."""
        return None if self.compiled is None else self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.compiled is None:
            self._compile(inputs)
        self.request.infer([x.detach().contiguous().numpy() for x in inputs])
        # copies: the request reuses its output buffers on the next call
        return tuple(torch.from_numpy(self.request.get_output_tensor(i).data.copy())
                     for i in range(len(self.compiled.outputs)))
