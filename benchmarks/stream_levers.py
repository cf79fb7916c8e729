"""Speed levers of the streaming engine, each against eager torch in ONE run (issue 21 item 7).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/stream_levers.py [--rounds 5] [--threads 2]
    (ONNX Runtime row: PYTHONPATH=DIR with onnxruntime + onnx, e.g. pip install --no-deps --target DIR
     onnxruntime==1.31.1 onnx==1.23.2 ml_dtypes protobuf; they do not pull torch. Skipped when absent.)

The cores are shared, so every lever is timed in alternating rounds with its eager baseline (A B A B
...) and reported as a ratio of medians (> 1 = the lever is faster); the load average is printed.

Two kinds of rows:
  - DiT pass: one denoising pass of the 6 blocks on a steady-state chunk (432 query tokens against a
    full c3s1w1 cache, inputs captured from the real stream), as a pure function (models/dit.ChunkBlocks,
    what stream.openvino exports) so that every backend runs the same computation: torch.compile, int8
    dynamic quantisation of the Linear layers (torch.ao quantize_dynamic), ONNX Runtime, OpenVINO at its
    CPU default precision (bf16 where the CPU has it) and at f32. The max abs difference of its output
    to eager says how exact it is.
  - whole chunk (generation + decode, serial, the engine's own code): stream.openvino (the DiT blocks
    and the tiny decoder in OpenVINO) against eager torch, channels_last(_3d) on the codec,
    the cache pass fused into the last denoising step, the preset's rung instead of the student's 3 steps,
    fewer tokens per chunk (2 latent frames, c2s1w1: fps, since the chunk yields fewer frames),
    torch threads 1 / 2 / 3 beside one busy process (pipeline fps), and the studio's JPEG encode
    (cv2, quality 85) per frame against the frame budget, with frame pacing: the share of chunks
    whose frames arrive later than the previous chunk's video has played (a one-chunk buffer stalls).

Measured 2026-12-05 on the shared 2-core machine (other agents + a training run, load average 4-6,
so ratios only), student-tiny-cpu, c3s1w1, 2 torch threads, `--rounds 4`:

  KEPT
    OpenMP passive waiting (motionstream/__init__.py sets OMP_WAIT_POLICY=PASSIVE unless the user did):
        eager DiT pass at 2 threads 146 ms vs 2654 ms with ACTIVE (18x), 130 vs 252 ms at 1 thread, load
        5. The benchmarks used to import torch first and so ran with spinning threads; they now import
        motionstream first.
    fused cache pass (stream.fuse_cache_pass, on in tiny-cpu): 3 DiT passes a chunk instead of 4 (DiT
        25.1 vs 33.5 GFLOP): 1.16x per frame (73.4 -> 63.2 ms, second run; the first run compared the
        fused preset with itself). Quality, same seeds, stream.composite on (main as merged 06:00): eval
        transfer --quick PSNR world / media / fast 14.525 / 21.184 / 22.428 vs 14.585 / 21.201 / 22.401
        unfused, EPE 2.26 / 0.45 / 0.76 vs 2.43 / 0.52 / 0.98; eval drag --quick --clips 4 changed /
        frame PSNR 16.030 / 20.455 vs 16.137 / 20.519, object EPE 5.6 vs 6.8.
    2 steps instead of 3 (rung `2-step`, u = [1, 1/3]: a subset of the trained times; the tiny-cpu
        default from this run until rung `1-step` below replaced it): 1.30x / 1.28x per frame in two runs
        (75.4 -> 58.1, 79.4 -> 62.2 ms).
        Quality (fused): transfer 14.532 / 21.201 / 22.444, EPE 2.28 / 0.43 / 0.77; drag 16.043 /
        20.462, object EPE 5.4. (Without the composite, before the merge: transfer within 0.03 dB, drag
        object EPE 17.7 vs 13.1 from one clip.)
    smaller size (rung `2-step-small`, 0.75x = 192x112, frames scaled back): 23 GFLOP a chunk vs 50
        (fused 2-step: 42); quality (fused): transfer 14.603 / 21.024 / 22.263 (-0.16 dB on media
        against 2-step), drag 16.128 / 20.580: the last rung of the adaptive ladder (without the
        composite it cost 0.4-0.5 dB on real clips).
    2 torch threads beside one busy process: 1 / 2 / 3 threads 4.87 / 7.05 / 7.25 fps (3 is within
        noise).
  KEPT SINCE (stream.int8, on in tiny-cpu since commit eb4bfb4; measured here while it was opt-in)
    int8 dynamic quantisation of the Linear layers of the DiT blocks (stream/engine.py int8_dit;
        attention, norms, embeddings and head fp32): 1.38x on the pass here (133 -> 96 ms; its output, the
        blocks' hidden states before the head, moves by up to 2.0). In the stream the latents (RMS 0.95)
        move by at most 0.09 over 3 chunks. `benchmarks/stream.py --int8` (2-step, fused, 2 threads, 3
        alternating rounds, two runs): pipeline 1.10x / 1.17x fps (--chunks 15: 22.36 vs 20.35 fps, load
        2.3 -> 4.2, peak 161 GFLOP/s; --chunks 30: 22.77 vs 19.43 fps, load 3.6 -> 5.4, peak 92 GFLOP/s),
        latency p50 0.71-0.77 vs 0.75-0.84 s, DiT passes 1.41x / 1.36x (0.188 vs 0.266, 0.192 vs 0.262
        s/chunk); the prior encode and the decode (over half the chunk's FLOPs) do not change. Quality, same seeds, one worktree run each, `eval transfer --quick` / `eval drag --quick
        --clips 4` with and without `--set stream.int8=true`: student PSNR world / media / fast 14.532 /
        21.200 / 22.442 vs 14.532 / 21.201 / 22.444 (all student rows within 0.003 dB), EPE 2.283 / 0.431 /
        0.757 vs 2.275 / 0.427 / 0.768; drag changed / object / frame PSNR 16.044 / 18.491 / 20.462 vs
        16.043 / 18.490 / 20.462, object EPE 5.48 vs 5.43 (reliable 3.10 vs 3.03).
    the video prior warped in latent space (rung `2-step-latent`, stream.quality_prior; measured
        2026-12-05 by `benchmarks/stream.py --chunks 40 --long-chunks 0 --against stream.prior=latent`,
        load ~1.9, peak 199-204 GFLOP/s): pipeline 58.95 vs 37.23 fps (1.58x, 3 alternating rounds),
        generation 0.156 vs 0.263 s/chunk, chunk 24.4 vs 41.6 GFLOP, 0.296 fps per GFLOP/s, latency
        p50 0.296 s (60/peak = 0.301 s). Quality -0.06..-0.22 dB against 2-step (student CARD): a
        rung of the ladder, not the default.
    one pass from the noised prior (rung `1-step`, u = [1/3]: the chunk starts from its video prior noised
        to t = 0.6, StudentSampler.initial_latents; the tiny-cpu default since 2026-12-06, replacing
        `2-step` and renaming the ladder 1-step / 1-step-latent / 1-step-small). At t = 1 the student's
        x0 is its prior minus a small correction, so `2-step`'s first pass changed almost nothing: a rung
        of one pass at t = 1 scored exactly the forward warp. `benchmarks/stream.py --chunks 40
        --long-chunks 0 --quality 1-step --against stream.quality=2-step` (a preset with both rungs, 3
        alternating rounds, load 0.8 -> 1.8, peak 374-377 GFLOP/s): 67.04 vs 52.93 fps (1.27x), DiT
        0.048 vs 0.094 s/chunk, latency p50 0.254 vs 0.307 s. Quality, same seeds, one run (`eval
        transfer --quick --clips 8`, `eval drag --quick --clips 16`): PSNR world / media / fast 19.733 /
        22.707 / 22.293 vs 19.738 / 22.706 / 22.293, reliable EPE 0.45 / 0.36 / 0.53 vs 0.48 / 0.35 /
        0.47; drag 17.501 / 18.808 / 25.571 vs 17.503 / 18.795 / 25.567 (student CARD, session 14).
    the video prior through the VAE encoder's linear path alone (stream.prior: linear, the tiny-cpu default
        since session 15; the rung `1-step-latent` left the ladder): 0.04 GFLOP a chunk instead of the
        encoder's 17.2. `benchmarks/stream.py --chunks 40 --long-chunks 0 --quality 1-step-linear --against
        stream.quality=1-step` (a preset with both, 3 alternating rounds, load 0.2 -> 1.6, peak 374-386
        GFLOP/s): 105.61 vs 62.05 fps (1.70x), generation 0.067 vs 0.135 s/chunk, latency p50 0.20 vs 0.29 s.
        Quality, one run: transfer PSNR world / media / fast 19.745 / 22.718 / 22.300 vs 19.733 / 22.707 /
        22.293, drag 17.501 / 18.803 / 25.562 vs 17.501 / 18.808 / 25.571 (student CARD, sessions 15-16).
    OpenVINO (stream.openvino, the tiny-cpu default since session 16; models/openvino_runner.py): the DiT
        blocks (ChunkBlocks) and the tiny decoder's step converted once and run at OpenVINO's CPU default
        precision. Measured 2026-12-06 on a 2-core AVX512-BF16 machine without AMX (`--rounds 4 --only dit
        --only chunk`, load 1.35 -> 1.47): DiT pass bf16 26.6 vs 84.1 ms eager (3.17x; the blocks' output
        moves by up to 0.37, int8's by 1.95), f32 36.2 vs 88.6 ms (2.45x, max |diff| 1.2e-4), convert 3.7 s
        each; whole chunk 5.3 vs 9.3 ms a frame against the preset's int8 torch (1.75x). Same run: torch.compile
        1.23x (compile 30 s), int8 1.34x. Pipeline (`benchmarks/stream.py --chunks 40 --long-chunks 0
        --against stream.openvino=true`, 3 alternating rounds, load 0.6 -> 1.3, peak 211-218 GFLOP/s):
        183.27 vs 114.44 fps (1.60x), DiT 0.032 vs 0.055 s/chunk, latency p50 0.11 vs 0.17 s. Quality, same
        seeds, one run each with and without it: transfer PSNR 19.746 / 22.717 / 22.300 vs 19.745 / 22.718 /
        22.300, drag 17.501 / 18.802 / 25.563 vs 17.501 / 18.803 / 25.562.
  NOT KEPT
    torch.compile (inductor) on the DiT pass: 1.12x (129 -> 116 ms), exact (max |diff| 5e-5); the pass
        is matmul / attention bound. Compiling the engine's forward_chunk recompiles per cache slot and
        write flag (hit the limit of 8) and took 94-361 s to compile on this machine: not worth a studio
        start.
    ONNX Runtime 1.31.1 (CPU provider, same threads, pass exported with the TorchScript exporter): 0.85x
        (164 -> 193 ms).
    channels_last(_3d) codec weights: 1.04x / 0.99x per frame in two runs (noise).
    generation and decode on one thread each (instead of both at the caller's 2 threads, which
        oversubscribes the 2 cores while a decode overlaps the next chunk). Measured 2026-12-05, idle
        machine (load 0.3 -> 1.8), the engine's pipeline (time_pipeline, 30 chunks) with the decode worker
        rebuilt at the given thread count, 3 alternating rounds per pair (main / worker threads),
        median fps: 2-step rung (encoded prior) 2/2 35.3, 1/1 23.6 (0.67x), 2/1 32.7 (0.93x);
        2-step-latent 2/2 57.6, 1/1 56.1 (0.97x), 2/1 56.2 (0.98x; rounds ranged 52-66 fps: noise). The
        generation is the larger share: on one thread it takes longer than the other thread's decode.
    fewer tokens per chunk (2 latent frames, c2s1w1): 0.74x / 0.82x per frame in two runs (64.8 -> 87.8
        ms): the per-chunk costs (text, prior encoder start, decode) do not shrink, and the student was
        trained at 3.
  COSTS, not levers
    JPEG encode (cv2, quality 85): 0.35 ms a frame, 0.6 % of the 62.5 ms frame budget.
    frame pacing: at load 5, chunks came every 0.93 s (p50) for 0.75 s of video: 71 % arrive after the
        previous one has played, so a one-chunk buffer stalls; the adaptive ladder is the answer.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import motionstream  # noqa: E402,F401  (first: it sets OMP_WAIT_POLICY=PASSIVE before torch starts OpenMP)
import torch  # noqa: E402

from benchmarks.stream import PROMPT, busy_loop, load_or_random  # noqa: E402
from motionstream.config import load_config, video_config  # noqa: E402
from motionstream.eval.stream_speed import begin, time_pipeline  # noqa: E402
from motionstream.models.dit import ChunkBlocks  # noqa: E402
from motionstream.models.openvino_runner import OpenVINORunner  # noqa: E402
from motionstream.stream import perf  # noqa: E402
from motionstream.stream.engine import FULL_QUALITY  # noqa: E402

JPEG_QUALITY = 85            # the studio's default (app/session.py StudioConfig.jpeg_quality)
CHUNK_ROUND = 3              # chunks per timed round of a whole-chunk lever (after one untimed chunk)
PIPELINE_CHUNKS = 10         # chunks of a pipeline run in the thread-count rows
THREAD_COUNTS = (1, 2, 3)
GROUPS = ("dit", "chunk", "threads", "jpeg", "wait")
PROBE_ROUNDS = 5             # alternating eager passes per thread count in a wait-policy child
PROBE_TIMEOUT_S = 600
TRACK_FRAMES = 1000          # frames of the pushed grid of tracks (longer than any stream here)
TRACK_COUNT = 231            # tracks pushed: what benchmarks/stream.py pushes at 256x144 (tracks.track_counts)
WARM_CHUNKS = 3              # chunks generated before any timing: sink and window full


# ----------------------------------------------------------------------------- DiT pass
def capture_pass_inputs(gen: Any) -> tuple[torch.Tensor, ...]:
    """Inputs of ChunkBlocks for a steady-state chunk of the started stream `gen` (cache full)."""
    captured: dict[str, Any] = {}
    model = gen.sampler.model
    inner = model.blocks[0].forward
    runner, model.chunk_runner = model.chunk_runner, None        # the eager blocks, where the spy sits

    def spy(x, e, self_attend, context_kv, context_mask):
        captured.setdefault("x", x.clone())
        captured.setdefault("e6", e.clone())
        return inner(x, e, self_attend, context_kv, context_mask)

    model.blocks[0].forward = spy
    try:
        gen.generate_latents()
    finally:
        del model.blocks[0].forward
        model.chunk_runner = runner
    keys, values, cos, sin, text_k, text_v = gen.cache.chunk_context()
    text_mask = torch.ones(text_k.shape[1], text_k.shape[3], dtype=torch.bool)
    return captured["x"], captured["e6"], keys.clone(), values.clone(), cos, sin, text_k, text_v, text_mask


def alternate(base: Callable[[], Any], lever: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """Median seconds of base() and lever(), timed in alternating rounds (one untimed call each first)."""
    base(), lever()
    tb, tl = [], []
    for _ in range(rounds):
        for fn, out in ((base, tb), (lever, tl)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(tb), statistics.median(tl)


def row(name: str, base_s: float, lever_s: float, note: str = "") -> None:
    print(f"{name:34s} eager {1e3 * base_s:8.1f} ms   lever {1e3 * lever_s:8.1f} ms   "
          f"speed-up {base_s / lever_s:5.2f}x  {note}")


def dit_levers(gen: Any, rounds: int) -> None:
    """torch.compile, int8 dynamic quantisation, ONNX Runtime and OpenVINO on one DiT denoising pass."""
    inputs = capture_pass_inputs(gen)
    eager = ChunkBlocks(gen.fp32_model).eval()     # the fp32 weights: the preset's int8 / openvino are levers here
    with torch.inference_mode():
        ref = eager(*inputs)[0]

    def run(module) -> Callable[[], torch.Tensor]:
        def call():
            with torch.inference_mode():
                return module(*inputs)
        return call

    def diff(out) -> str:
        """The blocks' output tokens (ChunkBlocks' first output) against eager."""
        return f"max |diff| {float((torch.as_tensor(out[0]) - ref).abs().max()):.2e}"

    t0 = time.perf_counter()
    compiled = torch.compile(eager, dynamic=False)
    try:
        out = run(compiled)()
        note = f"compile {time.perf_counter() - t0:.0f} s, {diff(out)}"
        row("DiT pass: torch.compile", *alternate(run(eager), run(compiled), rounds), note)
    except Exception as err:  # noqa: BLE001 - a backend failure is a result of this benchmark
        print(f"DiT pass: torch.compile            failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}")
    quant = torch.ao.quantization.quantize_dynamic(ChunkBlocks(gen.fp32_model), {torch.nn.Linear},
                                                   dtype=torch.qint8)
    row("DiT pass: int8 dynamic (Linear)", *alternate(run(eager), run(quant), rounds), diff(run(quant)()))
    ort_lever(eager, inputs, run(eager), rounds, diff)
    for precision in ("auto", "f32"):
        runner = OpenVINORunner(ChunkBlocks(gen.fp32_model), precision)
        t0 = time.perf_counter()
        out = run(runner)()
        note = f"{runner.inference_precision}, convert {time.perf_counter() - t0:.1f} s, {diff(out)}"
        row(f"DiT pass: OpenVINO {precision}", *alternate(run(eager), run(runner), rounds), note)


def ort_lever(eager: torch.nn.Module, inputs: tuple[torch.Tensor, ...], base: Callable[[], Any], rounds: int,
              diff: Callable[[Any], str]) -> None:
    """ONNX Runtime (CPU provider, the same thread count) on ChunkBlocks, when importable."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("DiT pass: ONNX Runtime             skipped: onnxruntime not importable (see the docstring)")
        return
    with torch.inference_mode(False):                 # the exporter traces with autograd: no inference tensors
        inputs = tuple(t.clone() for t in inputs)
    buf = io.BytesIO()
    names = ["x", "e6", "keys", "values", "cos", "sin", "text_k", "text_v", "text_mask"]
    try:
        with torch.no_grad():
            torch.onnx.export(eager, inputs, buf, dynamo=False, input_names=names, opset_version=17)
    except Exception as err:  # noqa: BLE001
        print(f"DiT pass: ONNX Runtime             export failed: {type(err).__name__}: {str(err)[:120]}")
        return
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    feed = {n: t.contiguous().numpy() for n, t in zip(names, inputs)}
    out = session.run(None, feed)
    row("DiT pass: ONNX Runtime " + ort.__version__, *alternate(base, lambda: session.run(None, feed), rounds),
        diff(out))


# ----------------------------------------------------------------------------- whole chunk
def chunk_time(gen: Any, image: np.ndarray, tracks: Any) -> Callable[[], float]:
    """A callable: start a stream, one untimed chunk, then CHUNK_ROUND chunks generated + decoded; returns
    seconds per video frame (so that configurations with other chunk sizes compare)."""
    def call() -> float:
        begin(gen, image, PROMPT, tracks)
        gen.decode_now(gen.generate_latents())
        frames, t0 = 0, time.perf_counter()
        for _ in range(CHUNK_ROUND):
            frames += gen.chunk_num_frames()
            gen.decode_now(gen.generate_latents())
        return (time.perf_counter() - t0) / frames
    return call


def alternate_configs(gen: Any, image: np.ndarray, tracks: Any, base_cfg, lever_cfg, rounds: int,
                      lever_setup: Callable[[bool], None] | None = None) -> tuple[float, float]:
    """Median seconds per frame of base_cfg and lever_cfg on `gen`, alternating rounds."""
    timer = chunk_time(gen, image, tracks)
    tb, tl = [], []
    for r in range(rounds + 1):
        for cfg, out, on in ((base_cfg, tb, False), (lever_cfg, tl, True)):
            gen.config = cfg
            if lever_setup:
                lever_setup(on)
            seconds = timer()
            if r > 0:                              # round 0: warm-up of both
                out.append(seconds)
    gen.config = base_cfg
    if lever_setup:
        lever_setup(False)
    return statistics.median(tb), statistics.median(tl)


def chunk_levers(gen: Any, image: np.ndarray, tracks: Any, rounds: int) -> None:
    base = gen.config
    per_frame = "(per frame, generation + decode)"
    unfused = replace(base, fuse_cache_pass=False)          # the preset may already fuse: compare both ways
    row("chunk: fused cache pass", *alternate_configs(gen, image, tracks, unfused,
                                                      replace(base, fuse_cache_pass=True), rounds), per_frame)
    if base.quality != FULL_QUALITY:                         # the sampler follows the rung at start()
        full = replace(base, quality=FULL_QUALITY)
        row(f"chunk: rung {base.quality} instead of full", *alternate_starts(gen, image, tracks, full, base, rounds),
            per_frame)
    row("chunk: OpenVINO DiT blocks + decoder", *alternate_starts(gen, image, tracks, replace(base, openvino=False),
                                                                  replace(base, openvino=True), rounds), per_frame)
    fewer = replace(base, chunk_frames=2)
    row("chunk: 2 latent frames (c2s1w1)", *alternate_starts(gen, image, tracks, base, fewer, rounds), per_frame)
    codec = gen.codec

    def channels_last(on: bool) -> None:
        fmt = torch.channels_last_3d if on else torch.contiguous_format
        for m in codec.modules():
            if isinstance(m, torch.nn.Conv3d):
                m.weight.data = m.weight.data.contiguous(memory_format=fmt)
            elif isinstance(m, torch.nn.Conv2d):
                m.weight.data = m.weight.data.contiguous(
                    memory_format=torch.channels_last if on else torch.contiguous_format)
    row("chunk: channels_last codec weights", *alternate_configs(gen, image, tracks, base, base, rounds,
                                                                 channels_last), per_frame)


def alternate_starts(gen: Any, image: np.ndarray, tracks: Any, base_cfg, lever_cfg, rounds: int):
    """Like alternate_configs for configurations that need a fresh start() (sampler or cache shape)."""
    def timed(cfg) -> float:
        gen.start(image, PROMPT, cfg)
        return chunk_time(gen, image, tracks)()
    tb, tl = [], []
    for r in range(rounds + 1):
        b, lv = timed(base_cfg), timed(lever_cfg)
        if r > 0:
            tb.append(b)
            tl.append(lv)
    gen.start(image, PROMPT, base_cfg)
    return statistics.median(tb), statistics.median(tl)


def thread_levers(gen: Any, image: np.ndarray, tracks: Any) -> None:
    """Pipeline fps at 1 / 2 / 3 torch threads beside one busy process."""
    hog = mp.get_context("spawn").Process(target=busy_loop, daemon=True)
    hog.start()
    before = torch.get_num_threads()
    try:
        fps = {}
        for n in THREAD_COUNTS:
            torch.set_num_threads(n)
            fps[n] = time_pipeline(gen, image, PROMPT, tracks, PIPELINE_CHUNKS).fps
    finally:
        hog.terminate()
        hog.join()
        torch.set_num_threads(before)
    print("threads beside one busy process:   " + ", ".join(f"{n} threads {v:.2f} fps" for n, v in fps.items())
          + f"  (best: {max(fps, key=fps.get)})")


def jpeg_and_pacing(gen: Any, image: np.ndarray, tracks: Any) -> None:
    """The studio's JPEG encode per frame, and chunk arrival against playback (frame pacing)."""
    import cv2

    begin(gen, image, PROMPT, tracks)
    frames = gen.next_chunk()
    t0 = time.perf_counter()
    for f in frames:
        cv2.imencode(".jpg", np.ascontiguousarray(f[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    ms = 1e3 * (time.perf_counter() - t0) / len(frames)
    budget = 1e3 / gen.fps
    print(f"JPEG encode (cv2, q{JPEG_QUALITY}):              {ms:.2f} ms/frame = {100 * ms / budget:.1f} % of the "
          f"{budget:.1f} ms frame budget")
    p = time_pipeline(gen, image, PROMPT, tracks, PIPELINE_CHUNKS)
    video_s = gen.chunk_num_frames(1) / gen.fps
    late = float(np.mean(p.per_chunk > video_s))
    print(f"frame pacing:                      chunks every {np.median(p.per_chunk):.3f} s (p50) for {video_s:.2f} s "
          f"of video: {100 * late:.0f} % of chunks arrive after the previous one has played (a stall with a "
          f"one-chunk buffer)")


def wait_policy_rows() -> None:
    """One eager DiT pass at 1 and 2 threads under each OpenMP wait policy (a child process each: the
    policy is read when OpenMP starts). motionstream/__init__.py sets PASSIVE unless the user chose."""
    import subprocess

    for policy in ("ACTIVE", "PASSIVE"):
        env = {**os.environ, "OMP_WAIT_POLICY": policy}
        out = subprocess.run([sys.executable, __file__, "--probe-pass"], env=env, capture_output=True, text=True,
                             timeout=PROBE_TIMEOUT_S)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else f"failed: {out.stderr[-200:]}"
        print(f"OMP_WAIT_POLICY={policy:8s}           eager DiT pass {line}")


def probe_pass() -> None:
    """Child of wait_policy_rows: median seconds of an eager DiT pass at 1 and 2 threads, alternating."""
    gen, _, _ = build(load_config("tiny-cpu"))
    eager = ChunkBlocks(gen.fp32_model).eval()
    inputs = capture_pass_inputs(gen)
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(PROBE_ROUNDS):
        for n in times:
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            with torch.inference_mode():
                eager(*inputs)
            times[n].append(time.perf_counter() - t0)
    print(", ".join(f"{n} thread{'s' if n > 1 else ''} {1e3 * statistics.median(v):.0f} ms" for n, v in times.items())
          + f" (load {os.getloadavg()[0]:.1f})")


def build(cfg: dict) -> tuple[Any, np.ndarray, Any]:
    """(started StreamingGenerator past its first chunks, image, tracks) on the preset's video size."""
    from benchmarks.stream import grid_tracks
    from motionstream.models.text import load_text_encoder
    from motionstream.stream.engine import StreamingGenerator, stream_config_for

    model, param, codec, what = load_or_random(cfg)
    print("# " + "; ".join(what))
    video = video_config(cfg)
    gen = StreamingGenerator(model, codec, load_text_encoder(cfg), stream_config_for(cfg), param, fps=video.fps)
    image = (np.random.default_rng(0).random((video.height, video.width, 3)) * 255).astype(np.uint8)
    tracks = grid_tracks(video.width, video.height, video.fps, TRACK_FRAMES, TRACK_COUNT)
    begin(gen, image, PROMPT, tracks)
    for _ in range(WARM_CHUNKS):
        gen.generate_latents()
    return gen, image, tracks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny-cpu")
    ap.add_argument("--rounds", type=int, default=5, help="alternating timed rounds per lever")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=GROUPS, action="append", help="run only these groups (repeatable; default all)")
    ap.add_argument("--probe-pass", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe_pass:
        probe_pass()
        return
    torch.set_num_threads(args.threads)
    print(f"# benchmarks/stream_levers.py  torch threads {args.threads}, load average (1 min) {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores")
    gen, image, tracks = build(load_config(args.config))
    groups = set(args.only or GROUPS)
    if "dit" in groups:
        dit_levers(gen, args.rounds)
    if "chunk" in groups:
        chunk_levers(gen, image, tracks, args.rounds)
    if "threads" in groups:
        thread_levers(gen, image, tracks)
    if "jpeg" in groups:
        jpeg_and_pacing(gen, image, tracks)
    if "wait" in groups:
        wait_policy_rows()
    gen.close()
    print(f"# load average (1 min) after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
