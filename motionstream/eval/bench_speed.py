"""`speed`: teacher vs student throughput and latency on the same clip, decode included and excluded.

Both models get the first [world] test clip (first frame, caption, exact tracks, eval.num_frames
frames) on this machine's CPU threads.

Teacher (motionstream.diffusion.generate.generate_teacher): offline, the whole clip at once. fps = clip frames
/ generation time of the whole clip; its latency (time to the first frame) is that whole time,
since no frame exists before the last Euler step. Decode excluded = minus the VAE decode time,
measured inside the same call (TimedCodec).

Student (stream.engine.StreamingGenerator, the preset's stream settings, c3s1w1): two streams of
the clip's length from the same seed:
    sequential decode   generate_latents() then the decode, each timed       (decode excluded / included)
    overlapped decode   next_chunk_async(): decode of chunk i on the worker while i+1 generates
                        (the engine's default; throughput only)
Latency = seconds from asking for a chunk to holding its frames: first chunk (it includes the
first-frame encode) and the median of the later ones (steady state). The student's timing is
eval/stream_speed.py, the code benchmarks/stream.py runs; the summary adds the machine's matmul peak,
the student's fps per GFLOP/s of it and its DiT utilisation (stream/perf.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

from motionstream.config import section
from motionstream.eval.bench_long import load_student_stream, text_encoder_for
from motionstream.eval.benchmarks import BenchmarkContext, Table, benchmark, require_module
from motionstream.eval.stream_speed import normalise, time_pipeline, time_serial
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


def time_student(ctx: BenchmarkContext, clip: Any) -> list[dict[str, Any]]:
    """Rows for the student (eval/stream_speed.py, the implementation benchmarks/stream.py runs too):
    generation and decode timed apart (decode included / excluded), then the overlapped pipeline; plus
    the machine-normalised figures (matmul peak, chunk FLOPs) in the first row."""

    num_frames = len(clip.frames)
    gen, _ = load_student_stream(ctx, STUDENT_WEIGHTS, VAE_WEIGHTS, TINY_WEIGHTS, overlap_decode=False)
    cfg = gen.config
    passes = "" if cfg.fuse_cache_pass else " + 1 cache pass"
    steps = len(cfg.steps_of(cfg.quality))
    name = (f"student {cfg.name} (rung {cfg.quality}: {steps} step{'s' if steps > 1 else ''}{passes}, "
            f"{cfg.decoder} decoder)")
    chunks = 1 + -(-(num_frames - gen.chunk_num_frames(0)) // gen.chunk_num_frames(1))
    args = (clip.frames[0], clip.caption, clip.tracks)
    time_serial(gen, *args, gen.WARM_UP_CHUNKS)     # warm-up, untimed: what the first chunks build (stream.openvino)
    serial = time_serial(gen, *args, chunks)
    pipeline = time_pipeline(gen, *args, chunks, warmup=0)
    norm = normalise(gen, *args)
    gen.close()
    frames = sum(serial.frames)
    per_chunk = [g + d for g, d in zip(serial.generate_s, serial.decode_s)]
    later = per_chunk[1:] or per_chunk
    decode_s = sum(serial.decode_s)
    seq = {"model": f"{name}, decode included", "frames": frames, "nfe": None, "total_s": sum(per_chunk),
           "decode_s": decode_s, "encode_s": None, "fps": serial.fps(skip=0),
           "fps_no_decode": serial.fps(skip=0, decode=False), "latency_first_s": serial.start_s + per_chunk[0],
           "latency_chunk_p50_s": float(np.median(later)), "decode_ms_per_frame": 1e3 * decode_s / frames,
           "nfe_per_chunk": len(cfg.steps_of(cfg.quality)) + (0 if cfg.fuse_cache_pass else 1),
           "peak_gflops": norm.peak_gflops,
           "fps_per_peak_gflops": norm.efficiency(serial.fps(skip=0)),
           "dit_utilisation": norm.dit_utilisation(float(np.median(serial.dit_s[1:] or serial.dit_s)))}
    ovl = {"model": f"{name}, decode overlapped", "frames": pipeline.frames, "nfe": None, "total_s": pipeline.seconds,
           "decode_s": None, "encode_s": None, "fps": pipeline.fps, "fps_no_decode": None,
           "latency_first_s": None, "latency_chunk_p50_s": None, "decode_ms_per_frame": None,
           "fps_per_peak_gflops": norm.efficiency(pipeline.fps)}
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
    ctx.summary["peak GFLOP/s"] = seq["peak_gflops"]
    ctx.summary["student fps per GFLOP/s of peak"] = student[1]["fps_per_peak_gflops"]
    ctx.summary["student DiT utilisation"] = seq["dit_utilisation"]
    _plot(ctx, rows)
    ctx.raw.update(rows=rows, teacher_steps=steps, shipped_teacher_steps=shipped_steps, clip=clip.name)


__all__ = ["SpeedBenchConfig", "TimedCodec", "time_teacher", "time_student", "run_speed"]
