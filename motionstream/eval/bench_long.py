"""`long`: streams far past the training horizon against ground truth (paper Table 4, Fig. 6).

The student streams one [world] test scene for >= `horizon_multiple` x its training horizon (the
DMD score window, 33 video frames in tiny-cpu), once per cache configuration (c3s1w1, c3s0w1,
c1s1w1, c3s0w6: one set of weights serves all, the student is distilled with random sink /
window; `cXsYwZ-rN` adds the engine's dynamic sink refresh every N chunks, paper Limitation F).
The ground truth is the same scene program rendered at the stream's length (data.synth.render_clip:
a longer clip starts with the same frames), and its exact tracks are the stream's motion input,
pushed once from frame 0.

Metrics per time window (tenths of the stream):
    PSNR        of the window's frames against the ground truth
    EPE         re-tracked *per window*: query points = the input tracks visible and in frame at the
                window's first frame, tracked through the window on the generated video and on the
                ground truth. With camera pans most frame-0 points leave the frame, and a tracker run
                over 330 frames drifts on its own; per-window queries measure the stream, not that.
                Reliable points = those the tracker follows within `reliable_px` on the ground truth
                window (floor beside it).
Drift = last tenth minus first tenth; relative drift = last / first - 1, with a bootstrap interval over
scenes (relative_drift): on 6 scenes one scene's hard last tenth decides the mean EPE's sign.

The scenes themselves change over a long stream (objects cross, the camera pans to content the first
frame never showed), so part of any drop is the scene's, not the model's. The forward warp of the
first frame along the same tracks (no model, nothing that can accumulate error) is scored on the
same windows as a reference row: a configuration drifts by what it loses beyond that row.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from motionstream.app.config import StudioConfig
from motionstream.config import section, video_config
from motionstream.eval.benchmarks import (BenchmarkContext, Table, benchmark, missing_weights,
                                          require_module)
from motionstream.models.codec import load_codec
from motionstream.models.text import load_text_encoder
from motionstream.scoring import metrics
from motionstream.scoring.baselines import forward_warp

STUDENT_WEIGHTS = "student-tiny-cpu"
VAE_WEIGHTS = "vae-tiny-cpu"
TINY_WEIGHTS = "tiny-decoder-tiny-cpu"
REFERENCE_ROW = "forward warp (no model)"


@dataclass
class LongBenchConfig:
    """Section `eval_long` of a preset (defaults when absent)."""

    # (+ the preset's studio.cache, the shape the studio streams, when it is not among them: long_bench_config)
    configurations: list[str] = field(default_factory=lambda: ["c3s1w1", "c3s0w1", "c1s1w1", "c3s0w6", "c3s1w1-r6"])
    horizon_multiple: int = 10        # stream length = this x the training horizon (paper: >= 10x)
    quick_horizon_multiple: int = 2   # --quick (CI): short streams that still roll the cache (3x took 403 s
                                      # with the full decoder, random tiny-cpu student, 1 thread, load 11)
    num_windows: int = 10             # tenths
    full_clips: int = 20              # scenes in a full run (each 10 clips long, x 5 configurations; ~30 min
                                      # on 2 cores): on 6 scenes the last tenth's mean EPE swung with one scene
    reliable_px: float = 1.0          # a point counts as reliable when the tracker follows it this well on the truth


def long_bench_config(cfg: dict[str, Any]) -> LongBenchConfig:
    """Section `eval_long` of the preset, its configurations followed by the studio's cache shape
    (studio.cache; tiny-cpu: c1s3w3) when that is not among them: the streams users watch drift too."""
    lcfg = section(cfg, "eval_long", LongBenchConfig)
    studio = section(cfg, "studio", StudioConfig).cache
    if studio and studio not in lcfg.configurations:
        lcfg = replace(lcfg, configurations=[*lcfg.configurations, studio])
    return lcfg


def stream_config(base, name: str):
    """The engine config of a row name: `cXsYwZ` (cache), optionally `-rN` (sink refresh every N chunks)."""
    cache, sep, every = name.partition("-r")
    if sep and not (every.isdigit() and int(every) > 0):
        raise ValueError(f"configuration {name!r}: expected cXsYwZ or cXsYwZ-rN with N >= 1 chunks")
    return replace(base.with_cache_name(cache), sink_refresh_chunks=int(every) if sep else 0)


# ------------------------------------------------------------------------------ the student
def text_encoder_for(ctx: BenchmarkContext):
    """The preset's text encoder (a seam: tests swap in a cheap deterministic one)."""

    return load_text_encoder(ctx.cfg)


def training_horizon_frames(meta: dict[str, Any], cfg: dict[str, Any], fallback: int, temporal_factor: int) -> int:
    """Video frames the student saw the teacher score in distillation: the folder's `horizon_frames`
    when it records one, else the preset's train_dmd.teacher_frames (latent frames), else `fallback`."""
    if meta.get("horizon_frames"):
        return int(meta["horizon_frames"])
    latent = (cfg.get("train_dmd") or {}).get("teacher_frames")
    return 1 + temporal_factor * (int(latent) - 1) if latent else int(fallback)


def load_student_stream(ctx: BenchmarkContext, student: str | None = None, vae: str | None = None,
                        tiny: str | None = None, **overrides: Any):
    """(StreamingGenerator, student metadata) at the preset's stream settings (+ StreamConfig
    `overrides`); model folders default to this module's STUDENT/VAE/TINY_WEIGHTS. The tiny streaming
    decoder is used when its weights exist, else the full VAE decoder (noted in the context)."""
    student, vae, tiny = student or STUDENT_WEIGHTS, vae or VAE_WEIGHTS, tiny or TINY_WEIGHTS

    engine = require_module("motionstream.stream.engine", "streaming engine")
    model, param, meta = engine.load_stream_model(student)
    has_tiny = not missing_weights((tiny,))
    if not has_tiny:
        ctx.note(f"tiny decoder missing ({tiny}): the student's frames are decoded with the full VAE decoder")
    codec = load_codec(vae, tiny_decoder=tiny if has_tiny else None)
    scfg = engine.stream_config_for(ctx.cfg, meta, decoder="tiny" if has_tiny else "full", **overrides)
    fps = video_config(ctx.cfg).fps
    return engine.StreamingGenerator(model, codec, text_encoder_for(ctx), scfg, param, fps), meta


def stream_frames(gen, image: np.ndarray, caption: str, tracks, num_frames: int, config=None) -> tuple[np.ndarray, float]:
    """(uint8 [num_frames, H, W, 3], seconds): one stream from `image`, tracks pushed once from frame 0,
    chunks pulled until num_frames are out (decode included)."""
    t0 = time.perf_counter()
    gen.start(image, caption, config)
    gen.push(tracks, start_frame=0)
    chunks, count = [], 0
    while count < num_frames:
        chunks.append(gen.next_chunk())
        count += len(chunks[-1])
    gen.wait()
    return np.concatenate(chunks)[:num_frames], time.perf_counter() - t0


# ------------------------------------------------------------------------------ scoring
def window_edges(num_frames: int, num_windows: int) -> np.ndarray:
    """int [num_windows + 1]: frame boundaries of equal time windows (strictly increasing)."""
    if num_frames < 2 * num_windows:
        raise ValueError(f"{num_frames} frames are too few for {num_windows} windows of >= 2 frames")
    return np.linspace(0, num_frames, num_windows + 1).round().astype(int)


@dataclass
class WindowReference:
    """Ground-truth side of one window: its query tracks and where the tracker is reliable."""

    start: int
    stop: int
    tracks: Any | None            # TrackSet of the window's frames (None: no point visible at its start)
    valid: np.ndarray | None      # bool [T_w, N]
    reliable: np.ndarray | None   # bool [T_w, N]
    floor: float                  # EPE of the tracker on the ground truth (valid points)
    floor_reliable: float


def window_references(gt_frames: np.ndarray, tracks, edges: np.ndarray, max_points: int | None,
                      reliable_px: float, tracker=None) -> list[WindowReference]:
    """Per window: the input tracks visible and in frame at its first frame (a fixed random subset
    of at most max_points), re-tracked on the ground truth."""

    refs = []
    visible = tracks.conditioning_mask()
    for a, b in zip(edges[:-1], edges[1:]):
        idx = np.flatnonzero(visible[a])
        if len(idx) == 0:
            refs.append(WindowReference(int(a), int(b), None, None, None, float("nan"), float("nan")))
            continue
        ts = metrics.subsample_tracks(tracks.frames(int(a), int(b)).subset(idx), max_points)
        err, valid = metrics.track_errors(ts, gt_frames[a:b], tracker)
        reliable = valid & (err < reliable_px)
        refs.append(WindowReference(int(a), int(b), ts, valid, reliable, metrics.masked_mean(err, valid),
                                    metrics.masked_mean(err, reliable)))
    return refs


def window_scores(video: np.ndarray, gt_frames: np.ndarray, refs: list[WindowReference], fps: float,
                  tracker=None) -> list[dict[str, float]]:
    """Per window: start/stop frame, centre time (s), PSNR, EPE (valid and reliable points), point count."""

    out = []
    for r in refs:
        row = {"start": r.start, "stop": r.stop, "t_s": 0.5 * (r.start + r.stop - 1) / fps,
               "psnr": min(metrics.psnr(video[r.start:r.stop], gt_frames[r.start:r.stop]), metrics.PSNR_CAP_DB),
               "epe": float("nan"), "epe_reliable": float("nan"), "points": 0}
        if r.tracks is not None:
            err, _ = metrics.track_errors(r.tracks, video[r.start:r.stop], tracker)
            row.update(epe=metrics.masked_mean(err, r.valid), epe_reliable=metrics.masked_mean(err, r.reliable),
                       points=int(r.tracks.num_tracks))
        out.append(row)
    return out


def mean_windows(per_clip: list[list[dict[str, float]]], key: str) -> np.ndarray:
    """float [num_windows]: mean over clips of one per-window metric (nan-aware)."""
    vals = np.array([[w[key] for w in clip] for clip in per_clip], np.float64)
    with np.errstate(invalid="ignore"):
        return np.array([np.nanmean(col) if np.isfinite(col).any() else np.nan for col in vals.T])


def drift(curve: np.ndarray) -> "np.ndarray | float":
    """Last window minus first (ΔPSNR < 0 / ΔEPE > 0 is drift); works on [windows] or [scenes, windows]."""
    return curve[..., -1] - curve[..., 0]


def relative_drift(per_clip: list[list[dict[str, float]]], key: str, rounds: int = 2000, level: float = 0.9,
                   seed: int = 0) -> tuple[float, float, float]:
    """(change, lo, hi): the last tenth's mean over scenes relative to the first tenth's (last / first - 1,
    the [distill] criterion's "within 15 %"), and a bootstrap interval at `level` from resampling scenes.
    With a handful of scenes one hard last tenth moves the mean a lot; the interval says how much."""
    first, last = mean_windows(per_clip, key)[[0, -1]]                  # the drift table's first / last tenth
    vals = np.array([[clip[0][key], clip[-1][key]] for clip in per_clip], np.float64)   # [scenes, 2]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)                 # all-nan resamples give nan, dropped
        picks = np.random.default_rng(seed).integers(0, len(vals), (rounds, len(vals)))
        boot = np.nanmean(vals[picks], 1)                                # [rounds, 2]
        ratios = boot[:, 1] / boot[:, 0] - 1
    ratios = ratios[np.isfinite(ratios)]
    if not len(ratios):
        return float("nan"), float("nan"), float("nan")
    lo, hi = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return float(last / first - 1), float(lo), float(hi)


def scene_wins(per_config: dict[str, list[list[dict[str, float]]]], base: str) -> list[list[Any]]:
    """Per other configuration: in how many scenes `base` streams better (whole-stream PSNR higher,
    whole-stream reliable-point EPE lower, PSNR drift smaller), as "wins/scenes". Mean differences of a
    tenth of a dB are only worth something when they hold scene by scene."""
    def per_scene(name: str, key: str) -> np.ndarray:
        return np.array([[w[key] for w in clip] for clip in per_config[name]], np.float64)

    b_psnr, b_epe = per_scene(base, "psnr"), per_scene(base, "epe_reliable")
    rows = []
    for name in per_config:
        if name == base:
            continue
        o_psnr, o_epe = per_scene(name, "psnr"), per_scene(name, "epe_reliable")
        with np.errstate(invalid="ignore"):
            wins = [(b_psnr.mean(1) > o_psnr.mean(1)), (np.nanmean(b_epe, 1) < np.nanmean(o_epe, 1)),
                    (drift(b_psnr) > drift(o_psnr))]
        rows.append([name, *(f"{int(w.sum())}/{len(w)}" for w in wins)])
    return rows


# ------------------------------------------------------------------------------ the benchmark
def _plot(ctx: BenchmarkContext, times: np.ndarray, curves: dict[str, dict[str, np.ndarray]],
          reference: dict[str, np.ndarray], floor: np.ndarray, horizon_s: float) -> None:
    matplotlib.use("Agg")

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, c in curves.items():
        axes[0].plot(times, c["psnr"], marker="o", label=name)
        axes[1].plot(times, c["epe_reliable"], marker="o", label=name)
    for ax, key in zip(axes, ("psnr", "epe_reliable")):
        ax.plot(times, reference[key], color="grey", linestyle="--", label=REFERENCE_ROW)
    axes[1].plot(times, floor, "k--", label="tracker floor (ground truth)")
    for ax, label in zip(axes, ("PSNR per tenth (dB, higher better)", "EPE per tenth, reliable pts (px, lower better)")):
        ax.axvline(horizon_s, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("stream time (s); dotted: training horizon")
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    fig.suptitle("Quality over a long stream per cache configuration (Fig. 6 in miniature)", y=1.03)
    ctx.add_plot(fig, "drift")


@dataclass
class SceneRuns:
    """Window scores of every scene (outer lists: scenes in order; inner: the windows, window_scores)."""

    per_config: dict[str, list[list[dict]]]   # configuration -> the student's scores
    reference: list[list[dict]]               # the forward-warp reference's scores
    fps_of: dict[str, list[float]]            # configuration -> streaming fps per scene (decode included)
    floors: list[list[float]]                 # tracker floor (reliable points, px) per window
    clip_names: list[str]


def stream_scenes(ctx: BenchmarkContext, gen: Any, lcfg: LongBenchConfig, num_frames: int,
                  edges: np.ndarray) -> SceneRuns:
    """Render the [world] test scenes at `num_frames` frames, stream each under every configuration of
    `lcfg` with `gen` (closed at the end), and score windows `edges` of each stream and of the
    forward-warp reference against the ground truth."""

    synth = require_module("motionstream.data.synth", "[world] renderer")
    splits = require_module("motionstream.data.splits", "[world] splits")
    vcfg = video_config(ctx.cfg)
    n = ctx.num_clips if (ctx.quick or ctx.clips_override is not None) else lcfg.full_clips
    base = gen.config    # each row's config is built from this one (gen.start switches gen.config)
    runs = SceneRuns({c: [] for c in lcfg.configurations}, [], {c: [] for c in lcfg.configurations}, [], [])
    for seed in ctx.progress(splits.split_seeds("test", n), "scenes"):
        clip = synth.render_clip(int(seed), num_frames=num_frames, width=vcfg.width, height=vcfg.height, fps=vcfg.fps)
        runs.clip_names.append(f"world-{int(seed)}")
        refs = window_references(clip.frames, clip.tracks, edges, ctx.eval_cfg.max_points, lcfg.reliable_px)
        runs.floors.append([r.floor_reliable for r in refs])
        runs.reference.append(window_scores(forward_warp(clip.frames[0], clip.tracks), clip.frames, refs, vcfg.fps))
        for name in lcfg.configurations:
            video, secs = stream_frames(gen, clip.frames[0], clip.caption, clip.tracks, num_frames,
                                        stream_config(base, name))
            runs.per_config[name].append(window_scores(video, clip.frames, refs, vcfg.fps))
            runs.fps_of[name].append(num_frames / secs)
    gen.close()
    return runs


def drift_rows(scored: dict[str, dict[str, np.ndarray]], fps_of: dict[str, list[float]], ref_drop: float,
               floor: np.ndarray) -> list[list]:
    """Rows of the drift table: one per curve of `scored` (name -> {"psnr", "epe_reliable"}: per
    window), then the tracker floor. ref_drop: the reference's PSNR drift, subtracted in "beyond warp"."""
    rows = []
    for c, cur in scored.items():
        p, e = cur["psnr"], cur["epe_reliable"]
        rows.append([c, float(np.mean(fps_of[c])) if c in fps_of else None, float(np.nanmean(p)), p[0], p[-1],
                     drift(p), drift(p) - ref_drop,
                     float(np.nanmean(e)) if np.isfinite(e).any() else float("nan"), e[0], e[-1], drift(e)])
    rows.append(["ground truth (tracker floor)", None, None, None, None, None, None,
                 float(np.nanmean(floor)) if np.isfinite(floor).any() else float("nan"), floor[0], floor[-1], None])
    return rows


def relative_drift_cells(scenes: list[list[dict]]) -> list:
    """PSNR and reliable-EPE last-tenth change in %, each with its 90% bootstrap interval as text."""
    cells = []
    for key in ("psnr", "epe_reliable"):
        change, lo, hi = relative_drift(scenes, key)
        cells += [100 * change, f"{100 * lo:+.0f} to {100 * hi:+.0f}"]
    return cells


@benchmark("long", "Long streams: drift per time window (Table 4, Fig. 6)", needs_weights=(STUDENT_WEIGHTS, VAE_WEIGHTS))
def run_long(ctx: BenchmarkContext) -> None:
    """Streams of >= 10x the training horizon against ground truth; metrics per time window for
    c3s1w1, c3s0w1, c1s1w1, c3s0w6 and c3s1w1 with sink refresh every 6 chunks. PSNR per tenth;
    EPE re-tracked per tenth from the points visible at its start (reliable points: those the
    tracker follows within 1 px on the ground truth). Drift = last tenth minus first tenth."""
    lcfg = long_bench_config(ctx.cfg)
    gen, meta = load_student_stream(ctx)
    horizon = training_horizon_frames(meta, ctx.cfg, ctx.eval_cfg.num_frames, gen.temporal_factor)
    multiple = lcfg.quick_horizon_multiple if ctx.quick else lcfg.horizon_multiple
    num_frames = multiple * horizon
    fps = video_config(ctx.cfg).fps
    edges = window_edges(num_frames, lcfg.num_windows)
    base = gen.config
    runs = stream_scenes(ctx, gen, lcfg, num_frames, edges)
    per_config, reference, fps_of, clip_names = runs.per_config, runs.reference, runs.fps_of, runs.clip_names

    times = np.array([0.5 * (a + b - 1) / fps for a, b in zip(edges[:-1], edges[1:])])
    floors = runs.floors
    floor = np.nanmean(np.array(floors, np.float64), 0) if np.isfinite(floors).any() else np.full(len(times), np.nan)
    curves = {c: {k: mean_windows(v, k) for k in ("psnr", "epe", "epe_reliable")} for c, v in per_config.items()}
    ref_curve = {k: mean_windows(reference, k) for k in ("psnr", "epe", "epe_reliable")}
    ref_drop = drift(ref_curve["psnr"])
    scored = {**curves, REFERENCE_ROW: ref_curve}     # table rows: the configurations, then the reference

    title = (f"{len(clip_names)} [world] scenes x {num_frames} frames ({multiple}x the {horizon}-frame training "
             f"horizon{', quick' if ctx.quick else ''})")
    ctx.add_table(Table(f"Drift per configuration: {title}",
                        ["config", "fps", "PSNR", "PSNR 1st tenth", "PSNR last tenth", "ΔPSNR",
                         "ΔPSNR beyond warp", "EPE", "EPE 1st tenth", "EPE last tenth", "ΔEPE"],
                        drift_rows(scored, fps_of, ref_drop, floor),
                        note="EPE on reliable points, re-tracked per tenth from the points visible at its start; "
                             "Δ = last tenth minus first tenth (drift: ΔPSNR < 0, ΔEPE > 0); beyond warp = ΔPSNR "
                             f"minus the {REFERENCE_ROW} row's (the scenes' own change). PSNR and EPE: whole "
                             "stream (paper Table 4). fps: streaming with decode, on this machine."))
    base_name = lcfg.configurations[0]
    ctx.add_table(Table(f"Scene by scene: where {base_name} streams better",
                        ["vs config", "PSNR higher", "EPE lower", "smaller PSNR drop"],
                        scene_wins(per_config, base_name),
                        note="scenes where the first configuration beats the row's, on the whole-stream mean "
                             "PSNR, the whole-stream reliable-point EPE and the drift (last minus first tenth)."))
    rel_rows = [[c, *relative_drift_cells(v)] for c, v in per_config.items()]
    ctx.add_table(Table(f"Last tenth relative to the first, over {len(clip_names)} scenes (%)",
                        ["config", "PSNR change", "PSNR 90% interval", "EPE change", "EPE 90% interval"], rel_rows,
                        note="last-tenth mean / first-tenth mean - 1 (EPE on reliable points); the interval "
                             "resamples scenes (bootstrap, 2000 rounds): how far the figure would move with "
                             "other scenes of the same kind."))
    window_cols = [f"{a / fps:.1f}-{b / fps:.1f}s" for a, b in zip(edges[:-1], edges[1:])]
    for key, label in (("psnr", "PSNR (dB)"), ("epe_reliable", "EPE, reliable pts (px)")):
        trows = [[c, *cur[key]] for c, cur in scored.items()]
        if key == "epe_reliable":
            trows.append(["tracker floor", *floor])
        ctx.add_table(Table(f"{label} per tenth", ["config", *window_cols], trows, digits=2))
    ctx.note(f"stream settings: {base.name} sampler on rung {base.quality} ({len(base.steps_of(base.quality))} "
             f"denoising step(s), shift {base.shift:g}), "
             f"{base.decoder} decoder; sink / window set per row.")
    _plot(ctx, times, curves, ref_curve, floor, horizon / fps)
    for c in ("c3s1w1", "c3s0w1", "c3s0w6"):
        if c in curves:
            ctx.summary[f"{c} ΔPSNR (dB)"] = float(drift(curves[c]["psnr"]))
    ctx.summary["forward warp ΔPSNR (dB)"] = float(ref_drop)
    ctx.summary["stream frames"] = num_frames
    ctx.raw.update(num_frames=num_frames, horizon_frames=horizon, window_edges=edges.tolist(),
                   window_times_s=times.tolist(), clips=clip_names, tracker_floor=floor.tolist(),
                   fps=fps_of, per_clip=per_config, reference=reference)


__all__ = ["LongBenchConfig", "load_student_stream", "stream_frames", "training_horizon_frames", "window_edges",
           "window_references", "window_scores", "mean_windows", "drift", "relative_drift", "scene_wins", "run_long"]
