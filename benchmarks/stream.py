"""Streaming speed of the student at the preset's size (tiny-cpu: 256x144, 16 fps), decode included.

    .venv/bin/python benchmarks/stream.py [--chunks 110] [--long-chunks 1010] [--threads 2] [--teacher]

Uses weights/student-tiny-cpu when it exists, else a randomly initialised WanDiT of the preset's
`dit` size (speed does not depend on the weights; the output says which). Likewise the codec
(weights/vae-tiny-cpu + weights/tiny-decoder-tiny-cpu, else random ones of the preset's sizes) and
the real text encoder. A moving grid of tracks is pushed every chunk, as in live use.

Prints, from one run:
  - pipeline (cache c3s1w1, K steps, tiny decoder on the worker thread overlapping the next chunk):
    throughput = frames out / wall time over --chunks chunks (first 3 excluded as warm-up);
    latency = inputs of a chunk fixed (next_chunk_async called) -> its frames decoded (the first
    frame is out when the chunk's decode returns); per-chunk wall time p50 / p99;
  - the same chunk without overlap: generation and decode times separately;
  - a long generation-only stream to --long-chunks: median time of chunks 10-29 vs the last 20,
    RSS at chunk 10 vs the end, peak RSS (ru_maxrss);
  - with --teacher: the offline teacher's fps on a clip of the same length as the first 3 chunks
    (33 frames, its default Euler steps x 3 guided evaluations), weights/teacher-tiny-cpu or random;
  - the 1-minute load average before and after: the 2 cores are shared, every figure is only
    meaningful next to it.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from motionstream.config import WEIGHTS_DIR, load_config, section, video_config  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def load_or_random(cfg: dict) -> tuple:
    """(student model, param, codec, what) with shipped weights where they exist."""
    from motionstream.diffusion.sampling import TeacherParam
    from motionstream.models.codec import VideoCodec, load_codec
    from motionstream.models.dit import DiTConfig, WanDiT
    from motionstream.models.tiny_decoder import TinyVideoAutoencoder
    from motionstream.models.vae import CausalVAE, VAEConfig
    from motionstream.stream.engine import load_stream_model
    from motionstream.train.tiny_decoder import TinyDecoderSection

    what = []
    if (WEIGHTS_DIR / "student-tiny-cpu" / "model.safetensors").exists():
        model, param, _ = load_stream_model("student")
        what.append("student: shipped weights/student-tiny-cpu")
    else:
        model, param = WanDiT(section(cfg, "dit", DiTConfig)).eval(), TeacherParam("guide")
        what.append("student: RANDOMLY INITIALISED WanDiT of the preset's dit size (weights/student-tiny-cpu absent)")
    if (WEIGHTS_DIR / "vae-tiny-cpu" / "model.safetensors").exists() and \
            (WEIGHTS_DIR / "tiny-decoder-tiny-cpu" / "model.safetensors").exists():
        codec = load_codec()
        what.append("codec: shipped weights/vae-tiny-cpu + tiny-decoder-tiny-cpu")
    else:
        vae = CausalVAE(from_section(cfg, "vae", VAEConfig)).eval()
        tiny = TinyVideoAutoencoder(section(cfg, "tiny_decoder", TinyDecoderSection).model).eval()
        codec = VideoCodec(vae, tiny_decoder=tiny).eval()
        what.append("codec: random VAE + tiny decoder of the preset's sizes (shipped codec absent)")
    return model, param, codec, what


def from_section(cfg: dict, name: str, cls):
    from motionstream.config import from_dict

    return from_dict(cls, (cfg.get(name) or {}).get("model"), f"{name}.model")


def grid_tracks(width: int, height: int, fps: float, num_frames: int, count: int, seed: int = 0):
    """`count` points on a grid drifting in a slow circle (a live drag of the whole scene)."""
    from motionstream.tracks.sources import grid_points
    from motionstream.tracks.trackset import TrackSet

    side = int(np.ceil(np.sqrt(count)))
    pts = grid_points(0, 0, width, height, rows=side, cols=side)[:count]
    t = np.arange(num_frames)[:, None, None] / fps
    offset = np.concatenate([8 * np.sin(t), 4 * np.cos(t) - 4], axis=2)
    xy = (pts[None] + offset).astype(np.float32)
    return TrackSet(xy, np.ones(xy.shape[:2], bool), width, height, fps, ids=np.arange(len(pts)) * 7 + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny-cpu")
    ap.add_argument("--chunks", type=int, default=110, help="pipeline chunks (>= 100 after warm-up)")
    ap.add_argument("--long-chunks", type=int, default=1010, help="generation-only stream length (0 = skip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default=None, help="cXsYwZ (default: the preset's student section, c3s1w1)")
    ap.add_argument("--teacher", action="store_true", help="also time the offline teacher on 33 frames")
    ap.add_argument("--teacher-steps", type=int, default=None, help="teacher Euler steps (default: its own)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]

    from motionstream.models.text import load_text_encoder
    from motionstream.stream.engine import StreamingGenerator, stream_config_for
    from motionstream.tracks.embed import TracksConfig, track_counts

    cfg = load_config(args.config)
    video = video_config(cfg)
    width, height, fps = video.width, video.height, video.fps
    model, param, codec, what = load_or_random(cfg)
    text_encoder = load_text_encoder(cfg)
    sc = stream_config_for(cfg)
    if args.cache:
        sc = sc.with_cache_name(args.cache)
    rng = np.random.default_rng(0)
    image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    cells = (width // codec.spatial_stride) * (height // codec.spatial_stride)
    n_tracks = track_counts(cells, TracksConfig().min_tracks, TracksConfig().max_tracks)[1]
    print(f"# benchmarks/stream.py  {width}x{height} @ {fps:g} fps, cache {sc.name}, K = {len(sc.denoising_steps)} "
          f"steps, decoder {sc.decoder}, torch threads {args.threads}, {n_tracks} tracks pushed per chunk")
    for line in what:
        print(f"#   {line}")
    print(f"# load average (1 min) before: {load0:.2f} on {os.cpu_count()} cores")

    # ---------------------------------------------------------------- pipeline (overlapped decode)
    gen = StreamingGenerator(model, codec, text_encoder, sc, param, fps=fps)
    total_frames = 1 + 4 * (sc.chunk_frames * (args.chunks + 1))
    tracks = grid_tracks(width, height, fps, total_frames + 8, n_tracks)
    gen.start(image, "a calm lake at sunrise, gentle camera drift")
    gen.push(tracks, start_frame=0)
    warm = 3
    starts, dones, sizes = [], {}, []
    pending = []
    t_begin = None
    for i in range(args.chunks):
        if i == warm:
            for f in pending:
                f.result()
            pending.clear()
            t_begin = time.perf_counter()
        t0 = time.perf_counter()
        fut = gen.next_chunk_async()
        fut.add_done_callback(lambda f, i=i: dones.__setitem__(i, time.perf_counter()))
        starts.append(t0)
        pending.append(fut)
        while len(pending) > 1:            # keep one decode in flight, like run_stream
            sizes.append(len(pending.pop(0).result()))
    for f in pending:
        sizes.append(len(f.result()))
    t_end = time.perf_counter()
    gen.close()
    measured = args.chunks - warm
    frames_out = sum(sizes[warm:])
    latency = np.array([dones[i] - starts[i] for i in range(warm, args.chunks)])
    per_chunk = np.diff(np.array([dones[i] for i in range(warm - 1, args.chunks)]))
    print(f"pipeline  {measured} chunks, {frames_out} frames in {t_end - t_begin:.1f} s: "
          f"throughput {frames_out / (t_end - t_begin):.2f} fps (target >= {fps:g})")
    print(f"          latency (chunk inputs fixed -> its first frame out): p50 {np.median(latency):.3f} s, "
          f"p99 {np.percentile(latency, 99):.3f} s (target <= 1 s)")
    print(f"          per-chunk time (between chunk completions): p50 {np.median(per_chunk):.3f} s, "
          f"p99 {np.percentile(per_chunk, 99):.3f} s  ({4 * sc.chunk_frames} frames = "
          f"{4 * sc.chunk_frames / fps:.2f} s of video)")

    # ---------------------------------------------------------------- serial split
    gen_t, dec_t, gen_cpu, dec_cpu = [], [], [], []
    gen.start(image, "a calm lake at sunrise, gentle camera drift")
    gen.push(tracks, start_frame=0)
    for i in range(12):
        t0, c0 = time.perf_counter(), time.process_time()
        lat = gen.generate_latents()
        t1, c1 = time.perf_counter(), time.process_time()
        gen._decode(lat)
        t2, c2 = time.perf_counter(), time.process_time()
        if i >= 2:
            gen_t.append(t1 - t0)
            dec_t.append(t2 - t1)
            gen_cpu.append(c1 - c0)
            dec_cpu.append(c2 - c1)
    print(f"serial    generation {np.median(gen_t):.3f} s/chunk ({len(sc.denoising_steps)} NFE + 1 cache pass), "
          f"{sc.decoder} decode {np.median(dec_t):.3f} s/chunk (wall, medians of 10)")
    g, d = np.median(gen_cpu), np.median(dec_cpu)
    per_chunk = 4 * sc.chunk_frames
    print(f"cpu time  generation {g:.3f} CPU-s/chunk, decode {d:.3f} CPU-s/chunk (process CPU time: what the "
          f"work costs whatever the machine's load)")
    if args.threads == 1:
        # one thread: CPU time ~ wall time on an idle core. Two idle cores: generation on one, decode on the other
        print(f"          idle-core estimate (1 thread, CPU time as wall time): serial {per_chunk / (g + d):.1f} fps, "
              f"latency {g + d:.2f} s; 2 cores with overlapped decode {per_chunk / max(g, d):.1f} fps")

    # ---------------------------------------------------------------- long stream
    if args.long_chunks > 0:
        from tqdm import tqdm

        gen.start(image, "a calm lake at sunrise, gentle camera drift")
        d = gen.controls.pointer_down(0.0, width / 2, height / 2)
        times, rss = [], {}
        for i in tqdm(range(args.long_chunks), desc="long stream", unit="chunk", leave=False):
            t = gen.stream_time
            gen.push([(t + 0.5, width / 2 + 20 * np.sin(t), height / 2 + 10 * np.cos(t))], drag_id=d)
            t0 = time.perf_counter()
            gen.generate_latents()
            times.append(time.perf_counter() - t0)
            if i in (10, args.long_chunks - 1):
                rss[i] = rss_mb()
        early, late = np.median(times[10:30]), np.median(times[-20:])
        last = args.long_chunks - 1
        print(f"long      generation only, {args.long_chunks} chunks ({gen.next_frame} frames): chunk 10-29 median "
              f"{early:.3f} s vs chunks {last - 19}-{last} median {late:.3f} s (ratio {late / early:.2f}); "
              f"cache slot {gen.cache.current_slot} (<= S + W)")
        print(f"          RSS at chunk 10: {rss[10]:.0f} MB, at chunk {last}: {rss[last]:.0f} MB")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"memory    peak RSS {peak:.0f} MB (whole process: model, codec, text encoder, Python)")

    # ---------------------------------------------------------------- teacher
    if args.teacher:
        bench_teacher(cfg, codec, text_encoder, image, tracks, args.teacher_steps)
    print(f"# load average (1 min) after: {os.getloadavg()[0]:.2f}")


def bench_teacher(cfg, codec, text_encoder, image, tracks, steps) -> None:
    from motionstream.diffusion.flow import DiffusionConfig
    from motionstream.diffusion.guidance import needed_evaluations
    from motionstream.diffusion.sampling import TeacherParam, load_teacher
    from motionstream.diffusion.generate import generate_teacher
    from motionstream.models.dit import DiTConfig, WanDiT

    if (WEIGHTS_DIR / "teacher-tiny-cpu" / "model.safetensors").exists():
        model, param, dcfg, _ = load_teacher("teacher-tiny-cpu")
        what = "shipped weights/teacher-tiny-cpu"
    else:
        model, param = WanDiT(section(cfg, "dit", DiTConfig)).eval(), TeacherParam("guide")
        dcfg = section(cfg, "diffusion", DiffusionConfig)
        what = "RANDOMLY INITIALISED teacher of the preset's dit size (weights/teacher-tiny-cpu absent)"
    steps = steps or dcfg.sample_steps
    n = 33
    t0 = time.perf_counter()
    frames = generate_teacher(model, param, dcfg, codec, text_encoder, image, "a calm lake", tracks.frames(0, n), n,
                              steps, dcfg.text_scale, dcfg.motion_scale, progress=False)
    dt = time.perf_counter() - t0
    nfe = 1 + sum(needed_evaluations(dcfg.text_scale, dcfg.motion_scale))
    print(f"teacher   {what}: {len(frames)} frames, {steps} Euler steps x {nfe} NFE (guidance w_t={dcfg.text_scale:g}, "
          f"w_m={dcfg.motion_scale:g}), full decoder: "
          f"{dt:.1f} s = {len(frames) / dt:.3f} fps; first frame out after {dt:.1f} s")


if __name__ == "__main__":
    main()
