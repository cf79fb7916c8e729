"""`guidance`: the joint guidance grid on the teacher (paper Eq. 2, Fig. 4 in miniature).

For every (w_t, w_m) of the grid the teacher (motionstream.diffusion.generate.generate_teacher, Euler on its
shifted schedule, 1-3 evaluations per step) generates each held-out [world] clip from its first
frame, caption and exact tracks, with the same noise seed in every cell. Scores per cell (means over
clips, motionstream.scoring.track_following): EPE on all visible points and on the reliable ones (the
tracker follows them within 1 px on the ground truth), PSNR, and text adherence (share of the
captions' effects the frame scorers see in the output). w_t = 0 is pure motion CFG, w_m = 0 pure
text CFG, (0, 0) the plain conditional prediction.

Clips with a text effect are preferred (text adherence is undefined without one): the first
clips of the test split are scanned `clip_pool_factor` times deeper than needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from motionstream.config import section
from motionstream.eval.bench_long import text_encoder_for
from motionstream.eval.benchmarks import BenchmarkContext, Table, benchmark, require_module
from motionstream.models.codec import load_codec
from motionstream.scoring.track_following import TrackFollowingEval

TEACHER_WEIGHTS = "teacher-tiny-cpu"
VAE_WEIGHTS = "vae-tiny-cpu"


@dataclass
class GuidanceBenchConfig:
    """Section `eval_guidance` of a preset (defaults when absent)."""

    text_scales: list[float] = field(default_factory=lambda: [0.0, 1.5, 3.0, 4.5])     # w_t
    motion_scales: list[float] = field(default_factory=lambda: [0.0, 1.5, 3.0])        # w_m
    quick_text_scales: list[float] = field(default_factory=lambda: [0.0, 3.0])        # keep the default (3, 1.5)
    quick_motion_scales: list[float] = field(default_factory=lambda: [0.0, 1.5])
    # Euler steps per sample (the teacher's periodic eval uses 12; the shipped 50 would cost 5x). Cost of a
    # full run: 29 evaluations per step over the 12 cells x 10 steps x 3 clips = 870 teacher passes at
    # 256x144x33 (~1 s each on 2 busy cores); --quick: 8 x 4 x 2 = 64.
    steps: int = 10
    quick_steps: int = 4
    full_clips: int = 3
    clip_pool_factor: int = 4     # scan this many x the clips needed for ones with a text effect


def pick_clips(clips: list, n: int) -> list:
    """`n` clips, those with a text effect first (stable order within each group)."""
    with_effect = [c for c in clips if getattr(c, "effects", None)]
    return (with_effect + [c for c in clips if not getattr(c, "effects", None)])[:n]


def _plot(ctx: BenchmarkContext, wts: list[float], wms: list[float], grids: dict[str, np.ndarray],
          last_frames: np.ndarray, clip_name: str) -> None:
    matplotlib.use("Agg")

    panels = (("epe_reliable", "EPE, reliable pts (px, lower better)", "viridis_r"),
              ("psnr", "PSNR (dB, higher better)", "viridis"),
              ("text_adherence", "text adherence (higher better)", "viridis"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (key, label, cmap) in zip(axes, panels):
        g = grids[key]
        ax.imshow(np.ma.masked_invalid(g), cmap=cmap, origin="lower", aspect="auto")
        for i in range(len(wts)):
            for j in range(len(wms)):
                ax.text(j, i, "–" if np.isnan(g[i, j]) else f"{g[i, j]:.2f}", ha="center", va="center",
                        fontsize=8, color="w", bbox=dict(facecolor="k", alpha=0.3, pad=1, linewidth=0))
        ax.set_xticks(range(len(wms)), [f"{w:g}" for w in wms])
        ax.set_yticks(range(len(wts)), [f"{w:g}" for w in wts])
        ax.set_xlabel("w_m (motion)")
        ax.set_ylabel("w_t (text)")
        ax.set_title(label, fontsize=9)
    fig.suptitle("Joint guidance grid on the teacher (Fig. 4 in miniature)", y=1.03)
    ctx.add_plot(fig, "grid")

    # the last frame of one clip in every cell: what the numbers look like
    fig, axes = plt.subplots(len(wts), len(wms), figsize=(2.4 * len(wms), 1.6 * len(wts)), squeeze=False)
    for i in range(len(wts)):
        for j in range(len(wms)):
            ax = axes[len(wts) - 1 - i, j]          # w_t grows upwards, as in the heat maps
            ax.imshow(last_frames[i, j])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"w_t={wts[i]:g} w_m={wms[j]:g}", fontsize=7)
    fig.suptitle(f"Last frame of {clip_name} per (w_t, w_m)", y=1.02)
    ctx.add_plot(fig, "frames")


@benchmark("guidance", "Joint guidance grid (Fig. 4)", needs_weights=(TEACHER_WEIGHTS, VAE_WEIGHTS))
def run_guidance(ctx: BenchmarkContext) -> None:
    """(w_t, w_m) grid on the teacher: EPE (all and reliable points), PSNR, text adherence, means
    over held-out [world] clips with the same noise in every cell."""

    gen = require_module("motionstream.diffusion.generate", "teacher generation")
    sampling = require_module("motionstream.diffusion.sampling", "teacher sampling")
    gcfg = section(ctx.cfg, "eval_guidance", GuidanceBenchConfig)
    wts = gcfg.quick_text_scales if ctx.quick else gcfg.text_scales
    wms = gcfg.quick_motion_scales if ctx.quick else gcfg.motion_scales
    steps = gcfg.quick_steps if ctx.quick else gcfg.steps
    n = ctx.num_clips if (ctx.quick or ctx.clips_override is not None) else gcfg.full_clips
    clips = pick_clips(ctx.world_clips(n * gcfg.clip_pool_factor), n)

    model, param, dcfg, _ = sampling.load_teacher(TEACHER_WEIGHTS)
    codec = load_codec(VAE_WEIGHTS, tiny_decoder=None)
    text_encoder = text_encoder_for(ctx)
    ev = TrackFollowingEval(clips, ctx.eval_cfg.max_points)
    keys = ("epe", "epe_reliable", "psnr", "text_adherence", "fps")
    grids = {k: np.full((len(wts), len(wms)), np.nan) for k in keys}
    last_frames = np.zeros((len(wts), len(wms), *clips[0].frames.shape[1:]), np.uint8)
    per_cell = []
    cells = [(i, j) for i in range(len(wts)) for j in range(len(wms))]
    for i, j in ctx.progress(cells, "grid"):
        scores, secs = [], 0.0
        for k, clip in enumerate(clips):
            t0 = time.perf_counter()
            video = gen.generate_teacher(model, param, dcfg, codec, text_encoder, clip.frames[0], clip.caption,
                                         clip.tracks, len(clip.frames), steps, wts[i], wms[j], seed=0, progress=False)
            secs += time.perf_counter() - t0
            scores.append(ev.score_video(k, video))
            if k == 0:
                last_frames[i, j] = video[-1]
        summary = ev.summarize(scores)
        for key in keys[:-1]:
            grids[key][i, j] = summary[key]
        grids["fps"][i, j] = sum(len(c.frames) for c in clips) / secs
        per_cell.append({"w_t": wts[i], "w_m": wms[j], **{k: float(grids[k][i, j]) for k in keys},
                         "per_clip": [{"clip": c.name, **s.as_dict()} for c, s in zip(clips, scores)]})

    truth = ev.ground_truth()
    rows = [[c["w_t"], c["w_m"], c["fps"], c["psnr"], c["epe"], c["epe_reliable"], c["text_adherence"]]
            for c in per_cell]
    rows.append(["ground truth", None, None, None, truth["epe"], truth["epe_reliable"], truth["text_adherence"]])
    with_effects = sum(bool(c.effects) for c in clips)
    ctx.add_table(Table(f"Teacher, {steps} Euler steps, {len(clips)} [world] test clips of {len(clips[0].frames)} frames "
                        f"({with_effects} with a text effect)",
                        ["w_t", "w_m", "fps", "PSNR", "EPE", "EPE reliable pts", "text adh."], rows,
                        note=f"Same noise seed in every cell. Reliable points: {100 * truth['reliable_fraction']:.0f}% "
                             f"of the visible input points. Text adherence: share of the captions' effects the "
                             f"frame scorers detect (– when no clip has one). The shipped sampler uses "
                             f"w_t={dcfg.text_scale:g}, w_m={dcfg.motion_scale:g}, {dcfg.sample_steps} steps."))
    _plot(ctx, wts, wms, grids, last_frames, clips[0].name)
    best = np.unravel_index(np.nanargmin(grids["epe_reliable"]), grids["epe_reliable"].shape) \
        if np.isfinite(grids["epe_reliable"]).any() else None
    if best is not None:
        ctx.summary["best w_t/w_m (reliable EPE)"] = f"{wts[best[0]]:g}/{wms[best[1]]:g}"
    default = [c for c in per_cell if c["w_t"] == dcfg.text_scale and c["w_m"] == dcfg.motion_scale]
    if default:
        ctx.summary["default PSNR/reliable EPE"] = f"{default[0]['psnr']:.2f}/{default[0]['epe_reliable']:.2f}"
    no_guidance = [c for c in per_cell if c["w_t"] == 0 and c["w_m"] == 0]
    if no_guidance:
        ctx.summary["unguided PSNR/reliable EPE"] = f"{no_guidance[0]['psnr']:.2f}/{no_guidance[0]['epe_reliable']:.2f}"
    ctx.raw.update(text_scales=list(wts), motion_scales=list(wms), steps=steps, cells=per_cell, ground_truth=truth,
                   clips=[c.name for c in clips], grids={k: v.tolist() for k, v in grids.items()})


__all__ = ["GuidanceBenchConfig", "pick_clips", "run_guidance"]
