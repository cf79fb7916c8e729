"""Machine-normalised speed: the CPU's fp32 matmul peak and the model FLOPs of one streaming chunk.

Machines of the same class differ 4x in matmul throughput (issue 21: 41.5 to 178 GFLOP/s on 2
threads), so an fps figure alone says little. Every speed benchmark measures, in the same run:

    peak        best fp32 GFLOP/s of square matmuls (1024^2 .. 2048^2) on the current torch threads
    chunk FLOPs torch.utils.flop_counter over one chunk's DiT passes (K steps + the cache pass) and
                its decode (FlopCounterMode counts matmuls, convolutions and attention, the ops that
                cost; element-wise work is not counted, so utilisation is a lower bound of busy-ness)

and derives fps / peak (fps per GFLOP/s: the engine's efficiency, comparable across machines) and
utilisation = achieved model GFLOP/s / peak. `benchmarks/stream.py`, `eval speed` and
`benchmarks/studio.py` use `matmul_peak_gflops` and `NormalisedSpeed` from here; the two benchmarks'
--max-isa / --cores run them as a weaker CPU would (`emulate_weaker_cpu`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _attention_flops(query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch's table counts the CUDA attention kernels only; the CPU one does the same two matmuls
ATTENTION_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops}

PEAK_SIZES = (1024, 1536, 2048)      # square fp32 matmuls: big enough to reach the BLAS kernel's peak
PEAK_REPEATS = 3                     # best of this many timings per size (the cores are shared)
GIGA = 1e9
EFFICIENCY_TARGET = 0.4            # fps per GFLOP/s of peak (issue 21)
DIT_UTILISATION_TARGET = 0.6       # achieved / peak in the DiT passes
LATENCY_TARGET_GFLOP = 60.0        # chunk latency p50 <= this / peak seconds


def matmul_peak_gflops(sizes: tuple[int, ...] = PEAK_SIZES, repeats: int = PEAK_REPEATS,
                       threads: int | None = None) -> float:
    """Best fp32 matmul throughput in GFLOP/s (2 n^3 per n x n product) on `threads` torch threads
    (None: the current torch.get_num_threads()). Takes about a second on a 40 GFLOP/s machine."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        best = 0.0
        for n in sizes:
            a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
            torch.mm(a, b)                                       # warm-up: allocation, thread pool
            for _ in range(repeats):
                t0 = time.perf_counter()
                torch.mm(a, b)
                best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / GIGA)
        return best
    finally:
        torch.set_num_threads(before)


# What a weaker CPU lacks, emulated on this one: each library's own cap on the instruction sets it
# dispatches to, read once when it loads (so set before the process starts). oneDNN covers torch's and
# OpenVINO's oneDNN kernels, OV_CPU_MAX_ISA OpenVINO's own (it must equal oneDNN's), MKL torch's matmul
# (the peak), ATEN_CPU_CAPABILITY torch's vectorised element-wise kernels. NumPy and OpenCV (the prior's
# warp, JPEG) keep the machine's own: a small share of a chunk.
ISA_CAP_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "OV_CPU_MAX_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                        "ATEN_CPU_CAPABILITY": "avx2"}}
EMULATED_ENV = "MOTIONSTREAM_EMULATED"    # set in the restarted process: what it emulates


def emulate_weaker_cpu(max_isa: str | None, cores: int | None) -> None:
    """Restart this command (same argv) capped to `max_isa` (a key of ISA_CAP_ENV: no AVX-512, no bf16)
    and pinned to its first `cores` CPUs, child processes included (a browser, a busy process), unless
    this process is that restart already. Nothing happens when both are None. A benchmark run this
    way measures its peak under the same caps, so fps per GFLOP/s stays comparable."""
    if (max_isa is None and cores is None) or os.environ.get(EMULATED_ENV):
        return
    env = dict(os.environ)
    if max_isa is not None:
        if max_isa not in ISA_CAP_ENV:
            raise ValueError(f"unknown instruction set cap {max_isa!r}; known: {sorted(ISA_CAP_ENV)}")
        env.update(ISA_CAP_ENV[max_isa])
    if cores is not None:
        available = sorted(os.sched_getaffinity(0))
        if not 1 <= cores <= len(available):
            raise ValueError(f"--cores must be 1..{len(available)} (the CPUs this process may use), got {cores}")
        os.sched_setaffinity(0, available[:cores])
    env[EMULATED_ENV] = f"max_isa={max_isa or 'native'} cores={cores or 'all'}"
    sys.stdout.flush()
    # orig_argv: the interpreter's own options and `-m module` / `-c` as given, not only the script's argv
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def emulation_note() -> str:
    """'' or what emulate_weaker_cpu restarted this process with, for a benchmark's first line."""
    what = os.environ.get(EMULATED_ENV)
    return f" (emulating a weaker CPU: {what})" if what else ""


def add_emulation_args(ap: argparse.ArgumentParser) -> None:
    """--max-isa / --cores: a benchmark run as a weaker CPU runs it (apply_emulation_args)."""
    ap.add_argument("--max-isa", choices=sorted(ISA_CAP_ENV), default=None,
                    help="restart capped to this instruction set (avx2: no AVX-512, no bf16; torch, MKL, oneDNN "
                    "and OpenVINO all capped): a CPU without AVX-512, on this one")
    ap.add_argument("--cores", type=int, default=None,
                    help="restart pinned to this many of the machine's CPUs (child processes too)")


def apply_emulation_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """emulate_weaker_cpu(args.max_isa, args.cores); a bad --cores, or more --threads than --cores (threads
    would share a CPU: not a weaker machine, a busier one), is a one-line usage error."""
    threads = getattr(args, "threads", None)
    if args.cores is not None and threads and threads > args.cores:
        ap.error(f"--threads {threads} on --cores {args.cores}: pass --threads {args.cores} (or fewer)")
    try:
        emulate_weaker_cpu(args.max_isa, args.cores)
    except ValueError as err:
        ap.error(str(err))


def count_flops(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(fn(), FLOPs it ran) counted by torch.utils.flop_counter on this thread (attention included)."""
    with FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOPS) as counter:
        out = fn()
    return out, int(counter.get_total_flops())


@dataclass
class PassMeter:
    """Seconds, calls and (when counting) FLOPs of the calls of one wrapped method."""

    seconds: float = 0.0
    calls: int = 0
    flops: int = 0


@contextlib.contextmanager
def metered(obj: Any, method: str, count: bool = False) -> Iterator[PassMeter]:
    """Time (and with count=True, count the FLOPs of) every call of obj.method inside the block; the
    method is restored after. Used on WanDiT.forward_chunk: the DiT passes apart from the rest of a chunk."""
    meter = PassMeter()
    inner = getattr(obj, method)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        if count:
            out, flops = count_flops(lambda: inner(*args, **kwargs))
            meter.flops += flops
        else:
            out = inner(*args, **kwargs)
        meter.seconds += time.perf_counter() - t0
        meter.calls += 1
        return out

    setattr(obj, method, wrapper)
    try:
        yield meter
    finally:
        delattr(obj, method)          # the instance attribute goes; the class method shows again


@dataclass
class ChunkFlops:
    """Model FLOPs of one steady-state streaming chunk: `dit` = its DiT passes (K denoising steps + the
    cache pass), `other` = the rest of its generation (the "video" prior's VAE encode, conditioning),
    `decode` = the streaming decoder; `frames` = video frames the chunk yields."""

    dit: int
    other: int
    decode: int
    frames: int

    @property
    def total(self) -> int:
        return self.dit + self.other + self.decode


def chunk_flops(gen: Any) -> ChunkFlops:
    """Count two chunks of a started StreamingGenerator (the stream advances by them; call it after the
    first chunks, whose cache is not yet full and whose attention is cheaper). Steady-state chunks cost
    the same, so one is counted whole and the next with its DiT passes apart."""
    frames = gen.chunk_num_frames()
    latents, generation = count_flops(gen.generate_latents)
    _, decode = count_flops(lambda: gen.decode_now(latents))
    with metered(gen.model, "forward_chunk", count=True) as dit:
        gen.generate_latents()
    return ChunkFlops(dit.flops, generation - dit.flops, decode, frames)


@dataclass
class NormalisedSpeed:
    """fps and seconds of one measurement divided by the machine's peak (GFLOP/s)."""

    peak_gflops: float
    flops: ChunkFlops

    def efficiency(self, fps: float) -> float:
        """fps per GFLOP/s of peak (issue 21 target >= 0.4: 16 fps on a 40 GFLOP/s machine)."""
        return fps / self.peak_gflops

    def utilisation(self, fps: float) -> float:
        """Achieved model GFLOP/s (chunk FLOPs x chunks per second) / peak, for the whole pipeline."""
        return self.flops.total * fps / self.flops.frames / GIGA / self.peak_gflops

    def dit_utilisation(self, dit_seconds_per_chunk: float) -> float:
        """DiT FLOPs of a chunk / the seconds its passes took / peak (issue 21 target >= 0.6)."""
        return self.flops.dit / dit_seconds_per_chunk / GIGA / self.peak_gflops

    def latency_target_s(self) -> float:
        """Issue 21's chunk latency target: 60 / peak seconds (0.4 s at 150 GFLOP/s)."""
        return LATENCY_TARGET_GFLOP / self.peak_gflops

    def summary(self, fps: float, latency_p50_s: float, dit_seconds_per_chunk: float) -> str:
        """One printable line of the normalised figures."""
        f = self.flops
        return (f"peak {self.peak_gflops:.1f} GFLOP/s; chunk {f.dit / GIGA:.2f} GFLOP DiT + {f.other / GIGA:.2f} "
                f"prior/conditioning + {f.decode / GIGA:.2f} decode for {f.frames} frames; "
                f"efficiency {self.efficiency(fps):.3f} fps per GFLOP/s (target >= {EFFICIENCY_TARGET}); "
                f"utilisation {100 * self.utilisation(fps):.0f} % overall, "
                f"{100 * self.dit_utilisation(dit_seconds_per_chunk):.0f} % in the DiT passes "
                f"(target >= {100 * DIT_UTILISATION_TARGET:.0f} %); latency p50 {latency_p50_s:.3f} s "
                f"(target <= 60/peak = {self.latency_target_s():.3f} s)")


__all__ = ["matmul_peak_gflops", "count_flops", "metered", "chunk_flops", "ChunkFlops", "NormalisedSpeed",
           "EFFICIENCY_TARGET", "DIT_UTILISATION_TARGET"]
