"""`speed`: teacher vs student throughput and latency on the same clip, decode included and excluded.

Both models get the first [world] test clip (first frame, caption, exact tracks, eval.num_frames
frames) on this machine's CPU threads.

Teacher (motionstream.diffusion.generate.generate_teacher): offline, the whole clip at once. fps = clip frames
/ generation time of the whole clip; its latency (time to the first frame) is that whole time,
since no frame exists before the last Euler step. Decode excluded = minus the VAE decode time,
measured inside the same call (TimedCodec).

Student (stream.engine.StreamingGenerator, the preset's stream settings, c3s1w1): three streams of
the clip's length from the same seed:
    latents only        generate_latents() per chunk                         (decode excluded)
    sequential decode   next_chunk() with overlap_decode off                 (decode included)
    overlapped decode   next_chunk_async(): decode of chunk i on the worker while i+1 generates
                        (the engine's default; throughput only)
Latency = seconds from asking for a chunk to holding its frames: first chunk (it includes the
first-frame encode) and the median of the later ones (steady state).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

from motionstream.config import section
from motionstream.eval.bench_long import load_student_stream, text_encoder_for
from motionstream.eval.benchmarks import BenchmarkContext, Table, benchmark, require_module
from motionstream.models.codec import load_codec

TEACHER_WEIGHTS = "teacher-tiny-cpu"
STUDENT_WEIGHTS = "student-tiny-cpu"
VAE_WEIGHTS = "vae-tiny-cpu"
TINY_WEIGHTS = "tiny-decoder-tiny-cpu"


@dataclass
class SpeedBenchConfig:
    """Section `eval_speed` of a preset (defaults when absent)."""

    teacher_steps: int | None = None   # None = the teacher's shipped sample_steps (50)
    quick_teacher_steps: int = 8       # --quick: fewer steps (time per step is what CI can afford)
    warmup_steps: int = 1              # an untimed teacher call of this many steps first (allocator, threads)


class TimedCodec:
    """A VideoCodec that adds up the seconds spent in encode() and decode(); everything else passes through."""

    def __init__(self, codec: Any):
        self._codec = codec
        self.encode_s = 0.0
        self.decode_s = 0.0

    def encode(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self._codec.encode(*args, **kwargs)
        self.encode_s += time.perf_counter() - t0
        return out

    def decode(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self._codec.decode(*args, **kwargs)
        self.decode_s += time.perf_counter() - t0
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._codec, name)


def time_teacher(ctx: BenchmarkContext, clip: Any, steps: int | None, warmup_steps: int) -> dict[str, Any]:
    """One timed generate_teacher call on `clip` at the teacher's guidance weights and `steps` Euler
    steps (None = its shipped sample_steps)."""

    gen = require_module("motionstream.diffusion.generate", "teacher generation")
    sampling = require_module("motionstream.diffusion.sampling", "teacher sampling")
    model, param, dcfg, _ = sampling.load_teacher(TEACHER_WEIGHTS)
    codec = TimedCodec(load_codec(VAE_WEIGHTS, tiny_decoder=None))
    text_encoder = text_encoder_for(ctx)
    frames = len(clip.frames)
    steps = steps or dcfg.sample_steps

    def run(n_steps: int) -> float:
        t0 = time.perf_counter()
        gen.generate_teacher(model, param, dcfg, codec, text_encoder, clip.frames[0], clip.caption, clip.tracks,
                             frames, n_steps, dcfg.text_scale, dcfg.motion_scale, seed=0, progress=False)
        return time.perf_counter() - t0

    if warmup_steps > 0:
        run(warmup_steps)
    codec.encode_s = codec.decode_s = 0.0
    total = run(steps)
    evals = sum(w > 0 for w in (dcfg.text_scale, dcfg.motion_scale)) + 1
    return {"model": f"teacher ({steps} steps x {evals} evals, w_t={dcfg.text_scale:g} w_m={dcfg.motion_scale:g})",
            "frames": frames, "steps": steps, "shipped_steps": dcfg.sample_steps, "nfe": steps * evals,
            "total_s": total, "decode_s": codec.decode_s, "encode_s": codec.encode_s, "fps": frames / total, "fps_no_decode": frames / (total - codec.decode_s),
            "latency_first_s": total, "latency_chunk_p50_s": total, "decode_ms_per_frame": 1e3 * codec.decode_s / frames}


def _stream(gen, clip: Any, num_frames: int, step) -> tuple[list[float], int]:
    """Start a stream on `clip` and call `step()` (-> frame count) until num_frames are out.
    Returns (seconds per chunk, the first including start(), frames)."""
    t0 = time.perf_counter()
    gen.start(clip.frames[0], clip.caption)
    gen.push(clip.tracks, start_frame=0)
    times, count = [], 0
    while count < num_frames:
        count += step()
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
    return times, count


def time_student(ctx: BenchmarkContext, clip: Any) -> list[dict[str, Any]]:
    """Rows for the student: latents only, sequential decode, overlapped decode."""

    num_frames = len(clip.frames)
    gen, _ = load_student_stream(ctx, STUDENT_WEIGHTS, VAE_WEIGHTS, TINY_WEIGHTS, overlap_decode=False)
    cfg = gen.config
    name = f"student {cfg.name} ({len(cfg.denoising_steps)} steps + 1 cache pass, {cfg.decoder} decoder)"
    def latents_only() -> int:
        n = gen.chunk_num_frames()
        gen.generate_latents()
        return n

    _stream(gen, clip, 1, lambda: len(gen.next_chunk()))            # warm-up: one chunk, untimed
    lat_times, lat_frames = _stream(gen, clip, num_frames, latents_only)
    seq_times, seq_frames = _stream(gen, clip, num_frames, lambda: len(gen.next_chunk()))
    gen.config = replace(cfg, overlap_decode=True)
    futs: list = []

    def submit() -> int:
        n = gen.chunk_num_frames()
        futs.append(gen.next_chunk_async())
        return n

    t0 = time.perf_counter()
    _, ovl_frames = _stream(gen, clip, num_frames, submit)
    ovl_out = sum(len(f.result()) for f in futs)
    ovl_s = time.perf_counter() - t0
    gen.close()
    if ovl_out != ovl_frames:
        raise RuntimeError(f"overlapped stream returned {ovl_out} frames, expected {ovl_frames}")

    def row(label: str, times: list[float], frames: int, decode_s: float | None) -> dict[str, Any]:
        later = times[1:] or times
        return {"model": f"{name}, {label}", "frames": frames, "nfe": None, "total_s": sum(times),
                "decode_s": decode_s, "encode_s": None, "fps": frames / sum(times), "fps_no_decode": None,
                "latency_first_s": times[0], "latency_chunk_p50_s": float(np.median(later)),
                "decode_ms_per_frame": None if decode_s is None else 1e3 * decode_s / frames}

    decode_s = max(0.0, sum(seq_times) - sum(lat_times))
    seq = row("decode included", seq_times, seq_frames, decode_s)
    seq["fps_no_decode"] = lat_frames / sum(lat_times)
    seq["nfe_per_chunk"] = len(cfg.denoising_steps) + 1
    ovl = {"model": f"{name}, decode overlapped", "frames": ovl_frames, "nfe": None, "total_s": ovl_s,
           "decode_s": None, "encode_s": None, "fps": ovl_frames / ovl_s, "fps_no_decode": None,
           "latency_first_s": None, "latency_chunk_p50_s": None, "decode_ms_per_frame": None}
    return [seq, ovl]


def _plot(ctx: BenchmarkContext, rows: list[dict[str, Any]]) -> None:
    matplotlib.use("Agg")

    labels = [r["model"].split(" (")[0] + (", overlapped" if "overlapped" in r["model"] else "") for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    nan = float("nan")
    axes[0].bar(x - 0.2, [r["fps"] for r in rows], 0.4, label="decode included")
    axes[0].bar(x + 0.2, [r["fps_no_decode"] if r["fps_no_decode"] is not None else nan for r in rows], 0.4,
                label="decode excluded")
    axes[0].set_title("throughput (frames / s, higher better)")
    axes[0].legend(fontsize=8)
    axes[1].bar(x, [r["latency_chunk_p50_s"] if r["latency_chunk_p50_s"] is not None else nan for r in rows], 0.5)
    axes[1].set_title("latency to frames (s, lower better; teacher = whole clip)")
    for ax in axes:
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_yscale("log")
    fig.suptitle("Teacher vs student on the same clip, this machine's CPU", y=1.03)
    ctx.add_plot(fig, "speed")


@benchmark("speed", "Throughput and latency, teacher vs student",
           needs_weights=(TEACHER_WEIGHTS, STUDENT_WEIGHTS, VAE_WEIGHTS))
def run_speed(ctx: BenchmarkContext) -> None:
    """Teacher vs student throughput and latency on the same clip, decode included and excluded
    (teacher fps = generation of the whole clip / its frames; its latency is that whole time)."""

    scfg = section(ctx.cfg, "eval_speed", SpeedBenchConfig)
    clip = ctx.world_clips(1)[0]
    teacher = time_teacher(ctx, clip, scfg.quick_teacher_steps if ctx.quick else scfg.teacher_steps,
                           scfg.warmup_steps)
    steps, shipped_steps = teacher["steps"], teacher["shipped_steps"]
    student = time_student(ctx, clip)
    rows = [teacher, *student]
    cols = ["model", "frames", "fps", "fps w/o decode", "latency first (s)", "latency/chunk p50 (s)",
            "decode ms/frame"]
    ctx.add_table(Table(f"{clip.name}: {teacher['frames']} frames, torch threads: {torch.get_num_threads()}",
                        cols, [[r["model"], r["frames"], r["fps"], r["fps_no_decode"], r["latency_first_s"],
                                r["latency_chunk_p50_s"], r["decode_ms_per_frame"]] for r in rows],
                        note="Teacher: latency = the whole clip (no frame exists before the last step). Student: "
                             "latency = request to frames of one chunk (first: includes the image encode). The "
                             "cores are shared with other jobs, so figures are indicative; ratios come from one run."))
    if steps != shipped_steps:
        ctx.note(f"teacher timed at {steps} steps (--quick); the shipped sampler uses {shipped_steps}, "
                 f"~{shipped_steps / steps:.1f}x its sampling time.")
    seq = student[0]
    ctx.summary["student/teacher fps"] = seq["fps"] / teacher["fps"]
    ctx.summary["student fps"] = seq["fps"]
    ctx.summary["student latency p50 (s)"] = seq["latency_chunk_p50_s"]
    ctx.summary["teacher latency (s)"] = teacher["latency_first_s"]
    _plot(ctx, rows)
    ctx.raw.update(rows=rows, teacher_steps=steps, shipped_teacher_steps=shipped_steps, clip=clip.name)


__all__ = ["SpeedBenchConfig", "TimedCodec", "time_teacher", "time_student", "run_speed"]
