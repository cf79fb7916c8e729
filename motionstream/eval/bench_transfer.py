"""`transfer`: motion-transfer reconstruction (paper Table 1 in miniature).

Each clip gives its first frame, caption and tracks to a method, which generates the video; the
result is compared with the clip's ground-truth frames. Data: the [world] held-out split (exact
tracks, moving-object masks) and segments of the real videos in ../shared/media (tracks from our
tracker on a 50x50 grid). Rows: every registered method plus the tracker floor (the ground-truth
video itself re-tracked: the lowest EPE a method can reach).

Methods plug in with one call (the teacher / student engineers add theirs):

    register_method("teacher", needs_weights=("teacher-tiny-cpu",), factory=make_teacher_fn)

where `factory(ctx) -> generate_fn`, `generate_fn(clip) -> uint8 [T,H,W,3]` (clip: see
motionstream.eval.clips). A method whose weights are missing gets a "not available" row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from motionstream.eval.benchmarks import BenchmarkContext, NotAvailable, Table, benchmark, missing_weights
from motionstream.eval.track_following import GenerateFn

MethodFactory = Callable[[BenchmarkContext], GenerateFn]


@dataclass
class Method:
    name: str
    factory: MethodFactory
    needs_weights: tuple[str, ...] = ()
    description: str = ""


METHODS: dict[str, Method] = {}


def register_method(name: str, factory: MethodFactory, needs_weights: tuple[str, ...] = (), description: str = "") -> None:
    """Add a row to the transfer table (and to any benchmark that iterates METHODS)."""
    METHODS[name] = Method(name, factory, tuple(needs_weights), description)


def _baseline_factory(name: str) -> MethodFactory:
    def factory(ctx: BenchmarkContext) -> GenerateFn:
        from motionstream.eval.baselines import BASELINES

        return BASELINES[name]
    return factory


def _model_hook(what: str) -> MethodFactory:
    def factory(ctx: BenchmarkContext) -> GenerateFn:
        raise NotAvailable(f"{what} generation hook not wired into eval yet")
    return factory


register_method("repeat-first-frame", _baseline_factory("repeat-first-frame"),
                description="the first frame, frozen (ignores the tracks)")
register_method("forward-warp", _baseline_factory("forward-warp"),
                description="the first frame warped along the tracks (Gaussian-interpolated flow)")
# Placeholders so the table shows the rows the paper has; replaced by register_method() calls
# from the teacher / student modules once their models exist.
register_method("teacher", _model_hook("teacher"), needs_weights=("teacher-tiny-cpu",),
                description="bidirectional teacher, joint guidance")
register_method("student", _model_hook("student"), needs_weights=("student-tiny-cpu",),
                description="causal distilled student, c3s1w1")


def evaluate_method(generate_fn: GenerateFn, clips: list[Any], max_points: int | None,
                    lpips_weights: str | None = None, progress=None) -> dict[str, Any]:
    """Mean PSNR / SSIM / LPIPS / EPE / region PSNR and generation fps of `generate_fn` over `clips`.
    The per-clip rows are under "per_clip"."""
    from motionstream.eval import metrics

    rows, gen_s, frames = [], 0.0, 0
    for clip in (progress(clips) if progress else clips):
        t0 = time.perf_counter()
        video = generate_fn(clip)
        gen_s += time.perf_counter() - t0
        frames += len(video)
        if video.shape != clip.frames.shape or video.dtype != np.uint8:
            raise ValueError(f"{clip.name}: generated video must be uint8 {clip.frames.shape}, got {video.dtype} {video.shape}")
        tracks = metrics.subsample_tracks(clip.tracks, max_points)
        rows.append({
            "clip": clip.name,
            "psnr": metrics.psnr(video, clip.frames),
            "ssim": metrics.ssim(video, clip.frames),
            "lpips": metrics.lpips(video, clip.frames, lpips_weights) if lpips_weights else None,
            "epe": metrics.epe(tracks, video),
            "region_psnr": (metrics.region_psnr(video, clip.frames, clip.moving_mask)
                            if clip.moving_mask is not None else float("nan")),
        })
    out = {k: _mean([r[k] for r in rows]) for k in ("psnr", "ssim", "lpips", "epe", "region_psnr")}
    out["fps"] = frames / gen_s if gen_s > 0 else float("inf")
    out["per_clip"] = rows
    return out


def _mean(values: list[Any]) -> float:
    from motionstream.eval.metrics import PSNR_CAP_DB

    vals = [min(float(v), PSNR_CAP_DB) for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def tracker_floor(clips: list[Any], max_points: int | None) -> float:
    """Mean EPE of the tracker on the ground-truth videos themselves."""
    from motionstream.eval import metrics

    return _mean([metrics.tracker_noise_floor(c.frames, metrics.subsample_tracks(c.tracks, max_points)) for c in clips])


def _plot(ctx: BenchmarkContext, results: dict[str, dict[str, dict]], floors: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    sources = list(results)
    methods = sorted({m for r in results.values() for m in r})
    width = 0.8 / max(1, len(methods))
    for ax, key, label in zip(axes, ("psnr", "ssim", "epe"), ("PSNR (dB, higher better)", "SSIM (higher better)",
                                                              "EPE (px, lower better)")):
        for i, m in enumerate(methods):
            vals = [results[s].get(m, {}).get(key, np.nan) for s in sources]
            ax.bar(np.arange(len(sources)) + i * width, vals, width, label=m)
        if key == "epe":
            for j, s in enumerate(sources):
                ax.hlines(floors[s], j - width / 2, j + width * (len(methods) - 0.5), colors="k", linestyles="--",
                          label="tracker floor" if j == 0 else None)
        ax.set_xticks(np.arange(len(sources)) + width * (len(methods) - 1) / 2, sources)
        ax.set_title(label)
    axes[-1].legend(fontsize=8)
    fig.suptitle("Motion transfer reconstruction")
    ctx.add_plot(fig, "transfer")


@benchmark("transfer", "Motion transfer reconstruction (Table 1)")
def run_transfer(ctx: BenchmarkContext) -> None:
    """Reconstruct held-out videos from their first frame + tracks; compare with the ground truth.
    PSNR/SSIM over whole videos, region PSNR inside the moving objects ([world] only), EPE between
    input tracks and tracks re-extracted from the output (tracker floor = EPE of the ground truth)."""
    sources: dict[str, list[Any]] = {}
    unavailable = []
    for label, loader in (("world test", ctx.world_clips), ("real media", ctx.media_clips)):
        try:
            sources[label] = loader()
        except NotAvailable as err:
            unavailable.append(f"{label}: {err}")
    if not sources:
        raise NotAvailable("; ".join(unavailable))
    for msg in unavailable:
        ctx.note(f"source not available: {msg}")
    lpips_weights = ctx.eval_cfg.lpips_weights
    if not lpips_weights:
        ctx.note("LPIPS skipped: no local LPIPS weights (set eval.lpips_weights in the config).")

    results: dict[str, dict[str, dict]] = {s: {} for s in sources}
    floors = {s: tracker_floor(clips, ctx.eval_cfg.max_points) for s, clips in sources.items()}
    skipped = {}
    for method in METHODS.values():
        missing = missing_weights(method.needs_weights)
        if missing:
            skipped[method.name] = f"missing {', '.join(missing)}"
            continue
        try:
            fn = method.factory(ctx)
        except NotAvailable as err:
            skipped[method.name] = str(err)
            continue
        for s, clips in sources.items():
            results[s][method.name] = evaluate_method(fn, clips, ctx.eval_cfg.max_points, lpips_weights,
                                                      lambda it: ctx.progress(it, f"{method.name} on {s}"))

    columns = ["method", "fps", "PSNR", "SSIM", "LPIPS", "EPE", "region PSNR"]
    for s, clips in sources.items():
        rows = [[m, r["fps"], r["psnr"], r["ssim"], r["lpips"], r["epe"], r["region_psnr"]] for m, r in results[s].items()]
        rows += [[m, "not available", None, None, None, None, None] for m in skipped]
        rows.append(["tracker floor (ground truth)", None, None, None, None, floors[s], None])
        ctx.add_table(Table(f"{s} ({len(clips)} clips of {len(clips[0].frames)} frames)", columns, rows))
    for m, why in skipped.items():
        ctx.note(f"{m}: not available ({why})")
    if "real media" in sources:
        ctx.note("real media: the input tracks come from our tracker on the same frames, so its floor there is "
                 "0 by construction; the [world] floor (exact tracks) is the meaningful one.")
    _plot(ctx, results, floors)
    for s, short in (("world test", "world"), ("real media", "media")):
        for m in ("forward-warp", "repeat-first-frame", "teacher", "student"):
            if m in results.get(s, {}):
                ctx.summary[f"{short} {m} PSNR"] = results[s][m]["psnr"]
                ctx.summary[f"{short} {m} EPE"] = results[s][m]["epe"]
        if s in floors:
            ctx.summary[f"{short} tracker floor"] = floors[s]
    ctx.raw.update(per_source=results, floors=floors, skipped=skipped)
