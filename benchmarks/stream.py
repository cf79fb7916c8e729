"""Streaming speed of the student at the preset's size (tiny-cpu: 256x144, 16 fps), decode included,
normalised by the machine's measured matmul peak. Everything in one command (about 5 minutes idle):

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/stream.py --chunks 60 --long-chunks 0 --busy --without-composite

(--long-chunks 1010 adds the 1000-chunk flat-cost / flat-memory check; --teacher the offline teacher;
--int8 the pipeline with stream.int8 against the preset, alternating; --against stream.KEY=VALUE any
other stream setting, the same way.)

Uses weights/student-tiny-cpu when it exists, else a randomly initialised WanDiT of the preset's
`dit` size (speed does not depend on the weights; the output says which). Likewise the codec
(weights/vae-tiny-cpu + weights/tiny-decoder-tiny-cpu, else random ones of the preset's sizes) and
the real text encoder. A moving grid of tracks is pushed every chunk, as in live use. The timing
code is motionstream/eval/stream_speed.py, shared with `motionstream eval speed`.

Prints, from one run:
  - pipeline (the preset's cache and quality rung, tiny decoder on the worker thread overlapping the
    next chunk): throughput = frames out / wall time over --chunks chunks (first 3 excluded as
    warm-up); latency = inputs of a chunk fixed (next_chunk_async called) -> its frames decoded (the
    first frame is out when the chunk's decode returns); per-chunk wall time p50 / p99;
  - the same chunk without overlap: generation (and inside it the DiT passes) and decode separately;
  - normalised: the fp32 matmul peak on the torch threads (GFLOP/s), the model FLOPs of a chunk
    (DiT passes, the video prior's VAE encode, the decode; torch.utils.flop_counter), fps per GFLOP/s
    of peak, utilisation overall and in the DiT passes, against issue 21's targets;
  - with --busy: the pipeline again beside one busy process, as a ratio of the idle fps;
  - with --int8: the pipeline with stream.int8 (int8 dynamic quantisation of the DiT blocks' Linear
    layers) toggled, in ROUNDS alternating rounds against the preset (the cores are shared):
    fps of each round, the ratio of medians, and the DiT and generation seconds per chunk both ways
    (serial); --against stream.KEY=VALUE does the same for any stream setting (e.g. stream.prior=latent);
  - a long generation-only stream to --long-chunks: median time of chunks 10-29 vs the last 20,
    RSS at chunk 10 vs the end, peak RSS (ru_maxrss);
  - with --teacher: the offline teacher's fps on a clip of the same length as the first 3 chunks
    (33 frames, its default Euler steps x 3 guided evaluations), weights/teacher-tiny-cpu or random;
  - with --input drags: all of the above on the studio's input (drag patches + pins; segment paste
    runs where stream.drag_paste is on; compare with --against stream.drag_paste=false);
  - with --first-grab: a live drag pressed between chunks on a photo (skimage's chelsea), as the studio's
    worker applies input, then the worker's wait for playback, then the next chunk (the first that pastes
    the grabbed object, stream.drag_paste): press -> its latents with gen.presegment() at the press (as
    the studio does) and without, GRAB_ROUNDS alternating rounds: the GrabCut and plate run during the
    wait or inside the next chunk;
  - the 1-minute load average before and after: the 2 cores are shared, every figure is only
    meaningful next to it.

--max-isa avx2 and --cores N run all of it as a weaker CPU would: the command restarts with torch, MKL,
oneDNN and OpenVINO capped to AVX2 (no AVX-512, no bf16: OpenVINO then runs its f32 graph; NumPy and
OpenCV are not capped) and pinned to N CPUs (stream/perf.emulate_weaker_cpu); the peak is measured
under the same caps. With --cores 1 --threads 1
--busy, the busy process shares that one CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import motionstream  # noqa: E402,F401  (first: it sets OMP_WAIT_POLICY=PASSIVE before torch starts OpenMP)
import torch  # noqa: E402

from motionstream.config import WEIGHTS_DIR, apply_overrides, load_config, section, video_config  # noqa: E402
from motionstream.eval.stream_speed import normalise, time_pipeline, time_serial  # noqa: E402
from motionstream.stream.perf import add_emulation_args, apply_emulation_args, emulation_note  # noqa: E402


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


def drag_input_tracks(width: int, height: int, fps: float, num_frames: int):
    """The studio's input: DRAG_PATCHES drag patches (the studio's patch size) circling DRAG_CIRCLE_PX
    around their grab points, and pins every PIN_SPACING px along the top and bottom edges."""
    from motionstream.tracks.sources import drag_tracks, grid_points, static_grid
    from motionstream.tracks.trackset import TrackSet

    t = np.arange(num_frames) / fps
    parts = []
    for k in range(DRAG_PATCHES):
        gx, gy = width * (k + 1) / (DRAG_PATCHES + 1), height / 2
        samples = [(s, gx + DRAG_CIRCLE_PX * np.sin(s + k), gy + DRAG_CIRCLE_PX * (np.cos(s + k) - np.cos(k)))
                   for s in t]
        parts.append(drag_tracks(samples, (gx, gy), num_frames, width, height, fps))   # samples[0] is (0, gx, gy)
    edge = PIN_SPACING / 2
    for y in (edge, height - edge):
        parts.append(static_grid(grid_points(edge, y, width - edge, y, spacing=PIN_SPACING), num_frames,
                                 width, height, fps))
    ts = TrackSet.concat(parts)
    return TrackSet(ts.tracks, ts.visibility, width, height, fps, ids=np.arange(ts.num_tracks) * 7 + 1, role=ts.role)


PROMPT = "a calm lake at sunrise, gentle camera drift"
DRAG_PATCHES = 2             # --input drags: drag patches ...
DRAG_CIRCLE_PX = 16.0        # ... each circling its grab point at this radius, about one turn in 6 s
PIN_SPACING = 16.0           # px between the pins along the top and bottom edges
ROUNDS = 3                   # --int8 / --against / --without-composite: preset / variant pipeline pairs, alternating
GRAB_ROUNDS = 8              # --first-grab: presses with / without presegment, alternating
SERIAL_CHUNKS = 12           # serial split: medians over the chunks after the warm-up
LONG_EARLY = slice(10, 30)   # long stream: chunks compared against the last LONG_LATE
LONG_LATE = 20


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny-cpu")
    ap.add_argument("--chunks", type=int, default=110, help="pipeline chunks (>= 100 after warm-up)")
    ap.add_argument("--long-chunks", type=int, default=1010, help="generation-only stream length (0 = skip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--input", choices=("grid", "drags"), default="grid",
                    help="motion pushed every chunk: grid = a dense grid drifting in a circle (transfer-like); "
                         f"drags = {DRAG_PATCHES} drag patches + pins, the studio's input (stream.drag_paste applies)")
    ap.add_argument("--cache", default=None, help="cXsYwZ (default: the preset's student section, c3s1w1)")
    ap.add_argument("--quality", default=None, help="quality rung (default: the preset's stream.quality)")
    ap.add_argument("--busy", action="store_true", help="also run the pipeline beside one busy process "
                    "(a CPU-bound loop) and print its fps / the idle fps")
    ap.add_argument("--without-composite", action="store_true", help="also run the pipeline with the prior "
                    f"composite off (stream.composite = []), alternating {ROUNDS} rounds with the preset, and print "
                    "the ratio of median fps (issue 19: the composite may cost at most 10 %%)")
    ap.add_argument("--int8", action="store_true", help="also run the pipeline with stream.int8 toggled, "
                    f"alternating {ROUNDS} rounds with the preset, and print the ratio of median fps")
    ap.add_argument("--against", metavar="stream.KEY=VALUE", default=None,
                    help="also run the pipeline with this stream setting (YAML value), alternating "
                    f"{ROUNDS} rounds with the preset, and print the ratio of median fps")
    ap.add_argument("--first-grab", action="store_true", help="also time a drag pressed between chunks (as the "
                    "studio applies input) to the next chunk's latents, with and without gen.presegment() at the press")
    ap.add_argument("--teacher", action="store_true", help="also time the offline teacher on 33 frames")
    ap.add_argument("--teacher-steps", type=int, default=None, help="teacher Euler steps (default: its own)")
    add_emulation_args(ap)
    args = ap.parse_args()
    apply_emulation_args(ap, args)
    if args.against:
        check_against(ap, args)
    return args


@dataclass
class Setup:
    """What every section streams: the generator, its input image, tracks and the preset's video format."""

    cfg: dict
    gen: object
    image: np.ndarray
    tracks: object
    width: int
    height: int
    fps: float


def setup(args: argparse.Namespace) -> Setup:
    """Load the stack (shipped weights or random ones), print the header."""
    from motionstream.models.text import load_text_encoder
    from motionstream.stream.engine import StreamingGenerator, stream_config_for
    from motionstream.tracks.embed import TracksConfig, track_counts

    cfg = load_config(args.config)
    video = video_config(cfg)
    width, height, fps = video.width, video.height, video.fps
    model, param, codec, what = load_or_random(cfg)
    sc = stream_config_for(cfg, quality=args.quality)
    if args.cache:
        sc = sc.with_cache_name(args.cache)
    image = (np.random.default_rng(0).random((height, width, 3)) * 255).astype(np.uint8)
    cells = (width // codec.spatial_stride) * (height // codec.spatial_stride)
    n_tracks = track_counts(cells, TracksConfig().min_tracks, TracksConfig().max_tracks)[1]
    total_frames = 1 + 4 * (sc.chunk_frames * (max(args.chunks, SERIAL_CHUNKS) + 1))
    if args.input == "drags":
        tracks = drag_input_tracks(width, height, fps, total_frames + 8)
        n_tracks = tracks.num_tracks
    else:
        tracks = grid_tracks(width, height, fps, total_frames + 8, n_tracks)
    gen = StreamingGenerator(model, codec, load_text_encoder(cfg), sc, param, fps=fps)
    print(f"# benchmarks/stream.py  {width}x{height} @ {fps:g} fps, cache {sc.name}, quality {gen.quality} "
          f"(K = {len(sc.steps_of(gen.quality))} step(s){', cache pass fused' if sc.fuse_cache_pass else ''}), "
          f"decoder {sc.decoder}, torch threads {args.threads}, "
          f"{n_tracks} tracks pushed per chunk")
    for line in what:
        print(f"#   {line}")
    return Setup(cfg, gen, image, tracks, width, height, fps)


def report_pipeline(st: Setup, chunks: int, label: str = "pipeline"):
    """The overlapped-decode pipeline (time_pipeline), printed; returns its PipelineTiming."""
    p = time_pipeline(st.gen, st.image, PROMPT, st.tracks, chunks)
    c = st.gen.config.chunk_frames
    print(f"{label:9s} {len(p.latency)} chunks, {p.frames} frames in {p.seconds:.1f} s: throughput {p.fps:.2f} fps "
          f"(target >= {st.fps:g}); quality rung at the end: {st.gen.quality}")
    print(f"          latency (chunk inputs fixed -> its first frame out): p50 {np.median(p.latency):.3f} s, "
          f"p99 {np.percentile(p.latency, 99):.3f} s")
    print(f"          per-chunk time (between chunk completions): p50 {np.median(p.per_chunk):.3f} s, "
          f"p99 {np.percentile(p.per_chunk, 99):.3f} s  ({4 * c} frames = {4 * c / st.fps:.2f} s of video)")
    return p


def report_serial(st: Setup, threads: int):
    """Generation and decode apart (time_serial), printed; returns its SerialTiming."""
    s = time_serial(st.gen, st.image, PROMPT, st.tracks, SERIAL_CHUNKS)
    steps = st.gen.sampler.cfg.num_steps
    passes = steps if st.gen.config.fuse_cache_pass else steps + 1
    print(f"serial    generation {s.median('generate_s'):.3f} s/chunk "
          f"({passes} DiT pass(es): {s.median('dit_s'):.3f} s), "
          f"decode {s.median('decode_s'):.3f} s/chunk (wall, medians of {SERIAL_CHUNKS - 2})")
    g, d = s.median("generate_cpu_s"), s.median("decode_cpu_s")
    print(f"cpu time  generation {g:.3f} CPU-s/chunk, decode {d:.3f} CPU-s/chunk (process CPU time: what the "
          f"work costs whatever the machine's load)")
    if threads == 1:
        # one thread: CPU time ~ wall time on an idle core. Two idle cores: generation on one, decode on the other
        per_chunk = s.frames[-1]
        print(f"          idle-core estimate (1 thread, CPU time as wall time): serial {per_chunk / (g + d):.1f} fps, "
              f"latency {g + d:.2f} s; 2 cores with overlapped decode {per_chunk / max(g, d):.1f} fps")
    return s


def report_normalised(st: Setup, pipeline, serial) -> None:
    """Peak GFLOP/s, chunk FLOPs and the figures divided by the peak (stream/perf.py)."""
    norm = normalise(st.gen, st.image, PROMPT, st.tracks)
    print("normalised " + norm.summary(pipeline.fps, float(np.median(pipeline.latency)), serial.median("dit_s")))


def report_busy(st: Setup, chunks: int, idle_fps: float) -> None:
    """The pipeline again beside one busy process (a CPU-bound loop in a child process)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    hog = ctx.Process(target=busy_loop, daemon=True)
    hog.start()
    try:
        busy = report_pipeline(st, chunks, label="busy")
    finally:
        hog.terminate()
        hog.join()
    print(f"          beside one busy process: {busy.fps / idle_fps:.2f}x the idle fps (target >= 0.5)")


def report_without_composite(st: Setup, chunks: int) -> None:
    """The pipeline with the prior composite off (the decoded latents alone) against the preset, same
    stream, ROUNDS alternating rounds (one run after the other read 0.90-0.92x on load drift alone)."""
    from dataclasses import replace

    preset = st.gen.config
    plain = replace(preset, composite=[])
    runs = alternating_runs(st, chunks, {"composite": preset, "no-comp": plain})
    ratio = median_fps(runs["composite"]) / median_fps(runs["no-comp"])
    print(f"          with the composite: {ratio:.2f}x the fps without it (medians of {ROUNDS} alternating "
          f"rounds; issue 19: >= 0.9)")


def alternating_runs(st: Setup, chunks: int, configs: dict) -> dict[str, list]:
    """Pipeline timings of each StreamConfig in `configs` (label -> config), ROUNDS rounds taking them in
    turn (the cores are shared and the load drifts: one after the other would compare two loads)."""
    preset = st.gen.config
    runs: dict[str, list] = {label: [] for label in configs}
    try:
        for _ in range(ROUNDS):
            for label, config in configs.items():
                st.gen.config = config
                runs[label].append(report_pipeline(st, chunks, label=label))
    finally:
        st.gen.config = preset
    return runs


def median_fps(runs: list) -> float:
    return float(np.median([r.fps for r in runs]))


def with_stream_override(config, item: str):
    """StreamConfig `config` with one 'stream.KEY=VALUE' (config.apply_overrides: known keys only, the
    value read as YAML)."""
    from dataclasses import fields, replace

    current = {"stream": {f.name: getattr(config, f.name) for f in fields(config)}}
    return replace(config, **apply_overrides(current, [item])["stream"])


def check_against(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--against must apply to the stream this run makes: the --config preset's (its own ladder names the
    rungs) at --quality."""
    from motionstream.stream.engine import stream_config_for

    try:
        stream = stream_config_for(load_config(args.config), quality=args.quality)
    except ValueError as err:            # ConfigError (a missing preset) and StreamConfig's own checks
        ap.error(str(err))
    try:
        variant = with_stream_override(stream, args.against)
    except ValueError as err:
        ap.error(f"argument --against: {err}")
    if variant == stream:
        ap.error(f"argument --against: {args.against} is the preset's own setting: nothing to compare")


def report_against(st: Setup, chunks: int, item: str) -> None:
    """The pipeline with one 'stream.KEY=VALUE' against the preset, alternating rounds; then the DiT and
    generation seconds per chunk of each (time_serial), so the gain is seen where it happens."""
    preset = st.gen.config
    variant = with_stream_override(preset, item)
    key = item.partition("=")[0].removeprefix("stream.")
    old_label, new_label = f"{key}={getattr(preset, key)}", f"{key}={getattr(variant, key)}"
    runs = alternating_runs(st, chunks, {old_label: preset, new_label: variant})
    serial = {}
    try:
        for label, config in ((old_label, preset), (new_label, variant)):
            st.gen.config = config
            serial[label] = time_serial(st.gen, st.image, PROMPT, st.tracks, SERIAL_CHUNKS)
        st.gen.config = variant
        norm = normalise(st.gen, st.image, PROMPT, st.tracks)
    finally:
        st.gen.config = preset
    new, old = median_fps(runs[new_label]), median_fps(runs[old_label])
    (dn, gn), (do, go) = ((serial[label].median("dit_s"), serial[label].median("generate_s"))
                          for label in (new_label, old_label))
    print(f"against   pipeline fps {new_label} {new:.2f} vs {old_label} {old:.2f} (medians of "
          f"{ROUNDS} alternating rounds): {new / old:.2f}x; generation {gn:.3f} vs {go:.3f} s/chunk: {go / gn:.2f}x; "
          f"DiT passes {dn:.3f} vs {do:.3f} s/chunk: {do / dn:.2f}x")
    latency = float(np.median(np.concatenate([r.latency for r in runs[new_label]])))
    print(f"          normalised with {new_label} (median fps, pooled latency) "
          + norm.summary(new, latency, dn))


def report_first_grab(st: Setup) -> None:
    """A drag pressed between chunks, as the studio's worker applies input (app/session.py): press, the
    worker's wait for playback (a chunk's video seconds minus the last chunk's generation time, none
    when generation is slower than real time), then the next chunk; press -> its latents, with
    gen.presegment() at the press and without, alternating rounds."""
    import cv2
    from skimage import data

    gen = st.gen
    if not gen.config.drag_paste:
        print("first-grab skipped: stream.drag_paste is off (nothing is segmented)")
        return
    photo = cv2.resize(data.chelsea(), (st.width, st.height), interpolation=cv2.INTER_AREA)
    grab = (0.45 * st.width, 0.5 * st.height)                    # on the cat
    seconds: dict[bool, list[float]] = {True: [], False: []}
    waits = []
    for k in range(GRAB_ROUNDS):
        for ahead in (False, True):
            gen.start(np.roll(photo, k, axis=1), PROMPT)          # another image each round: nothing cached
            gen.generate_latents()
            t0 = time.perf_counter()
            gen.generate_latents()
            pressed = time.perf_counter()
            drag = gen.controls.pointer_down(gen.stream_time, *grab)
            gen.controls.pointer_move(drag, gen.stream_time + 0.1, grab[0] + 16, grab[1])
            if ahead:
                gen.presegment()
            wait = max(0.0, gen.chunk_num_frames() / gen.fps - (pressed - t0))
            time.sleep(wait)
            gen.generate_latents()
            seconds[ahead].append(time.perf_counter() - pressed)
            waits.append(wait)
    with_, without = np.median(seconds[True]), np.median(seconds[False])
    print(f"first-grab press -> next chunk's latents (medians of {GRAB_ROUNDS}; the worker's playback wait "
          f"{np.median(waits):.3f} s included): with presegment {with_:.3f} s, without {without:.3f} s "
          f"({without - with_:+.3f} s saved)")


def busy_loop() -> None:
    """One busy process: a pure-Python loop, forever (terminated by the parent)."""
    x = 0
    while True:
        x = (x * 7 + 1) % 1000003


def report_long(st: Setup, chunks: int) -> None:
    """A generation-only stream of `chunks` chunks with a live drag: time and RSS early vs late."""
    from tqdm import tqdm

    gen, width, height = st.gen, st.width, st.height
    gen.start(st.image, PROMPT)
    d = gen.controls.pointer_down(0.0, width / 2, height / 2)
    times, rss = [], {}
    for i in tqdm(range(chunks), desc="long stream", unit="chunk", leave=False):
        t = gen.stream_time
        gen.push([(t + 0.5, width / 2 + 20 * np.sin(t), height / 2 + 10 * np.cos(t))], drag_id=d)
        t0 = time.perf_counter()
        gen.generate_latents()
        times.append(time.perf_counter() - t0)
        if i in (LONG_EARLY.start, chunks - 1):
            rss[i] = rss_mb()
    early, late = np.median(times[LONG_EARLY]), np.median(times[-LONG_LATE:])
    last = chunks - 1
    print(f"long      generation only, {chunks} chunks ({gen.next_frame} frames): chunk 10-29 median "
          f"{early:.3f} s vs chunks {last - LONG_LATE + 1}-{last} median {late:.3f} s (ratio {late / early:.2f}); "
          f"cache slot {gen.cache.current_slot} (<= S + W)")
    print(f"          RSS at chunk {LONG_EARLY.start}: {rss[LONG_EARLY.start]:.0f} MB, "
          f"at chunk {last}: {rss[last]:.0f} MB")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    cores = len(os.sched_getaffinity(0))
    print(f"# load average (1 min) before: {os.getloadavg()[0]:.2f} on {cores} cores{emulation_note()}")
    st = setup(args)
    pipeline = report_pipeline(st, args.chunks)
    serial = report_serial(st, args.threads)
    report_normalised(st, pipeline, serial)
    if args.busy:
        report_busy(st, args.chunks, pipeline.fps)
    if args.without_composite:
        report_without_composite(st, args.chunks)
    if args.int8:
        report_against(st, args.chunks, f"stream.int8={str(not st.gen.config.int8).lower()}")
    if args.against:
        report_against(st, args.chunks, args.against)
    if args.first_grab:
        report_first_grab(st)
    if args.long_chunks > LONG_EARLY.stop:
        report_long(st, args.long_chunks)
    st.gen.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"memory    peak RSS {peak:.0f} MB (whole process: model, codec, text encoder, Python)")
    if args.teacher:
        bench_teacher(st.cfg, st.gen.codec, st.gen.text_encoder, st.image, st.tracks, args.teacher_steps)
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
