"""`transfer`: motion-transfer reconstruction (paper Table 1 in miniature).

Each clip gives its first frame, caption and tracks to a method, which generates the video; the
result is compared with the clip's ground-truth frames. Data: the [world] held-out split (exact
tracks, moving-object masks) and segments of the real videos in ../shared/media (tracks from our
tracker on a 50x50 grid). Rows: every registered method plus the tracker floor (the ground-truth
video itself re-tracked: the lowest EPE a method can reach).

Methods are rows registered with one call each; the shipped ones are the two baselines, the
teacher (motionstream.diffusion.generate.generate_teacher) and the student (stream.engine.StreamingGenerator):

    register_method("my-model", factory=make_fn, needs_weights=("my-model-tiny-cpu",))

where `factory(ctx) -> generate_fn`, `generate_fn(clip) -> uint8 [T,H,W,3]` (clip: see
motionstream.eval.clips). A method whose weights are missing gets a "not available" row, one that
raises gets a "failed" row; the other rows still run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from motionstream.app.config import StudioConfig
from motionstream.config import section, video_config
from motionstream.diffusion.student import parse_cache_name
from motionstream.eval.benchmarks import (BenchmarkContext, NotAvailable, Table, benchmark, missing_weights,
                                          require_module)
from motionstream.models.checkpoints import WeightsNotFound
from motionstream.models.codec import load_codec
from motionstream.models.text import load_text_encoder
from motionstream.scoring.baselines import BASELINES
from motionstream.scoring.track_following import GenerateFn, TrackFollowingEval
from motionstream.stream.engine import StreamConfig

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
        return BASELINES[name]
    return factory


TEACHER_WEIGHTS = "teacher-tiny-cpu"
STUDENT_WEIGHTS = "student-tiny-cpu"
STUDENT_ODE_WEIGHTS = "student-ode-tiny-cpu"
VAE_WEIGHTS = "vae-tiny-cpu"
TINY_WEIGHTS = "tiny-decoder-tiny-cpu"
STUDENT_METHOD = "student"          # the shipped student's row (the preset's stream.student)
WARP_METHOD = "forward-warp"


def _teacher_factory(ctx: BenchmarkContext) -> GenerateFn:
    """The offline teacher (motionstream.diffusion.generate.generate_teacher) at its shipped sampling settings
    (steps, joint guidance weights from its config.json; --quick: eval.quick_teacher_steps), conditioned on all of the clip's tracks
    (the paper's protocol: the full 50x50 grid) and its caption; full VAE decoder."""

    gen = require_module("motionstream.diffusion.generate", "teacher generation")
    sampling = require_module("motionstream.diffusion.sampling", "teacher sampling")

    model, param, dcfg, _ = sampling.load_teacher(TEACHER_WEIGHTS)
    codec = load_codec(VAE_WEIGHTS, tiny_decoder=None)
    text_encoder = load_text_encoder(ctx.cfg)
    steps = min(ctx.eval_cfg.quick_teacher_steps, dcfg.sample_steps) if ctx.quick else dcfg.sample_steps
    if steps != dcfg.sample_steps:
        ctx.note(f"teacher sampled with {steps} Euler steps (--quick; shipped: {dcfg.sample_steps}).")

    def generate(clip: Any) -> np.ndarray:
        return gen.generate_teacher(model, param, dcfg, codec, text_encoder, clip.frames[0], clip.caption,
                                    clip.tracks, len(clip.frames), steps, dcfg.text_scale,
                                    dcfg.motion_scale, seed=0, progress=False)
    return generate


def _student_factory(weights: str | None = None, **stream_overrides: Any) -> MethodFactory:
    """The causal student in folder `weights` (None: the preset's stream.student, which
    `eval --set stream.student=PATH` changes) streaming chunk by chunk
    (stream.engine.StreamingGenerator) with the preset's stream settings (c3s1w1, tiny decoder)
    overridden by what the student folder says it was trained for; the clip's tracks are pushed
    once, from frame 0, and chunks are pulled until the clip's length is covered. stream_overrides
    replace StreamConfig fields (e.g. composite=[])."""
    def factory(ctx: BenchmarkContext) -> GenerateFn:
        return _student_generate(ctx, weights or ctx.cfg.get("stream", {}).get("student", STUDENT_WEIGHTS),
                                 **stream_overrides)
    return factory


def _student_generate(ctx: BenchmarkContext, weights: str, **stream_overrides: Any) -> GenerateFn:
    engine = require_module("motionstream.stream.engine", "streaming engine")

    try:
        model, param, meta = engine.load_stream_model(weights)
    except WeightsNotFound as err:
        raise NotAvailable(str(err)) from err
    codec = load_codec(VAE_WEIGHTS, tiny_decoder=TINY_WEIGHTS)
    text_encoder = load_text_encoder(ctx.cfg)
    fps = video_config(ctx.cfg).fps
    config = engine.stream_config_for(ctx.cfg, meta, **stream_overrides)
    gen = engine.StreamingGenerator(model, codec, text_encoder, config, param, fps)

    def generate(clip: Any) -> np.ndarray:
        gen.start(clip.frames[0], clip.caption)
        gen.push(clip.tracks, start_frame=0)
        chunks, count = [], 0
        while count < len(clip.frames):
            chunks.append(gen.next_chunk())
            count += len(chunks[-1])
        gen.wait()
        return np.concatenate(chunks)[:len(clip.frames)]
    return generate


register_method("repeat-first-frame", _baseline_factory("repeat-first-frame"),
                description="the first frame, frozen (ignores the tracks)")
register_method(WARP_METHOD, _baseline_factory(WARP_METHOD),
                description="the first frame warped along the tracks (Gaussian-interpolated flow)")
register_method("teacher", _teacher_factory, needs_weights=(TEACHER_WEIGHTS, VAE_WEIGHTS),
                description="bidirectional teacher, joint guidance")
register_method(STUDENT_METHOD, _student_factory(), needs_weights=(VAE_WEIGHTS, TINY_WEIGHTS),
                description="the shipped causal student (stream.student), c3s1w1, tiny decoder")
register_method(f"{STUDENT_METHOD}, latents only", _student_factory(composite=[]),
                needs_weights=(VAE_WEIGHTS, TINY_WEIGHTS),
                description="the same student showing its decoded latents alone (stream.composite off): "
                            "the output the prior composite replaces")
register_method("student-ode", _student_factory(STUDENT_ODE_WEIGHTS),
                needs_weights=(STUDENT_ODE_WEIGHTS, VAE_WEIGHTS, TINY_WEIGHTS),
                description="the student after the ODE stage alone, c3s1w1, tiny decoder")


def rung_methods(ctx: BenchmarkContext) -> list[Method]:
    """A row of the shipped student on each quality rung of the preset other than its stream.quality."""
    stream = section(ctx.cfg, "stream", StreamConfig)
    return [Method(f"{STUDENT_METHOD} {rung}", _student_factory(quality=rung), (VAE_WEIGHTS, TINY_WEIGHTS),
                   f"the shipped student on quality rung {rung}") for rung in stream.rungs if rung != stream.quality]


def studio_methods(ctx: BenchmarkContext) -> list[Method]:
    """A row of the shipped student streamed as the studio streams it, when the preset gives the studio a
    cache shape of its own (studio.cache; tiny-cpu: c1s3w3, 4-frame chunks so a drag shows sooner)."""
    cache = section(ctx.cfg, "studio", StudioConfig).cache
    if not cache:
        return []
    chunk, sink, window = parse_cache_name(cache)
    return [Method(f"{STUDENT_METHOD} studio {cache}",
                   _student_factory(chunk_frames=chunk, sink_chunks=sink, window_chunks=window),
                   (VAE_WEIGHTS, TINY_WEIGHTS), f"the shipped student streamed as the studio does ({cache})")]


def methods_for(ctx: BenchmarkContext) -> list[Method]:
    """The registered methods, one row per quality rung of the streaming engine other than the
    preset's (stream.quality_ladder: what `--quality RUNG` and the studio's adaptive mode trade), one row of the
    studio's cache shape (studio_methods), then one row per folder in eval.compare_students (a candidate and the
    student it would replace, scored in the same run)."""
    extra = rung_methods(ctx) + studio_methods(ctx)
    extra += [Method(f"student {Path(w).parent.name + '/' if Path(w).name == 'student' else ''}{Path(w).name}",
                    _student_factory(w), (VAE_WEIGHTS, TINY_WEIGHTS), f"the student in {w}")
             for w in ctx.eval_cfg.compare_students]
    return list(METHODS.values()) + extra


def _plot(ctx: BenchmarkContext, results: dict[str, dict[str, dict]], truth: dict[str, dict[str, float]]) -> None:
    matplotlib.use("Agg")

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    sources = list(results)
    methods = sorted({m for r in results.values() for m in r})
    width = 0.8 / max(1, len(methods))
    panels = (("psnr", "PSNR (dB, higher better)"), ("ssim", "SSIM (higher better)"),
              ("epe", "EPE (px, lower better)"), ("epe_reliable", "EPE on reliable points (px)"))
    for ax, (key, label) in zip(axes, panels):
        for i, m in enumerate(methods):
            vals = [results[s].get(m, {}).get(key, np.nan) for s in sources]
            ax.bar(np.arange(len(sources)) + i * width, vals, width, label=m)
        if key.startswith("epe"):
            for j, s in enumerate(sources):
                ax.hlines(truth[s][key], j - width / 2, j + width * (len(methods) - 0.5), colors="k", linestyles="--",
                          label="tracker floor" if j == 0 else None)
        ax.set_xticks(np.arange(len(sources)) + width * (len(methods) - 1) / 2, sources)
        ax.set_title(label)
    axes[-1].legend(fontsize=8)
    fig.suptitle("Motion transfer reconstruction", y=1.03)
    ctx.add_plot(fig, "transfer")


def worst_of(scores) -> dict[str, float]:
    """The per-clip worst PSNR (lowest) and EPE (highest) of a method's ClipScores."""
    psnrs = [sc.psnr for sc in scores if not np.isnan(sc.psnr)]
    epes = [sc.epe for sc in scores if not np.isnan(sc.epe)]
    return {"worst_psnr": min(psnrs) if psnrs else float("nan"), "worst_epe": max(epes) if epes else float("nan")}


@dataclass
class MethodScores:
    """What run_transfer measured: per source, per method."""

    results: dict[str, dict[str, dict]]     # source -> method -> {"fps", summarized metrics, worst_*}
    per_clip: dict[str, dict[str, list]]    # source -> method -> one dict per clip (ClipScores.as_dict)
    skipped: dict[str, str]                 # method -> why it has no row ("missing ...", "failed: ...")
    sheet_fns: dict[str, GenerateFn]        # the methods drawn on the contact sheets


def load_sources(ctx: BenchmarkContext) -> dict[str, list[Any]]:
    """The clip sources that are available ([world] test, real media, real fast motion), each
    missing one noted; NotAvailable when none is."""
    sources: dict[str, list[Any]] = {}
    unavailable = []
    for label, loader in (("world test", ctx.world_clips), ("real media", ctx.media_clips),
                          ("real fast motion", ctx.fast_media_clips)):
        try:
            sources[label] = loader()
        except NotAvailable as err:
            unavailable.append(f"{label}: {err}")
    if not sources:
        raise NotAvailable("; ".join(unavailable))
    for msg in unavailable:
        ctx.note(f"source not available: {msg}")
    return sources


def score_methods(ctx: BenchmarkContext, evals: dict[str, Any]) -> MethodScores:
    """Generate and score every method of methods_for(ctx) on every source's TrackFollowingEval; a
    method without weights, or one that fails on any source, is skipped with the reason."""
    out = MethodScores({s: {} for s in evals}, {s: {} for s in evals}, {}, {})
    for method in methods_for(ctx):
        missing = missing_weights(method.needs_weights)
        if missing:
            out.skipped[method.name] = f"missing {', '.join(missing)}"
            continue
        try:
            fn = method.factory(ctx)
        except NotAvailable as err:
            out.skipped[method.name] = str(err)
            continue
        if method.name in (WARP_METHOD, STUDENT_METHOD):
            out.sheet_fns[method.name] = fn
        for s, ev in evals.items():
            try:
                scores, fps = ev.score(fn, lambda it: ctx.progress(it, f"{method.name} on {s}"))
            except Exception as err:  # noqa: BLE001 - one broken model must not lose the other rows
                out.skipped[method.name] = f"failed: {type(err).__name__}: {err}"
                break
            out.results[s][method.name] = {"fps": fps, **ev.summarize(scores), **worst_of(scores)}
            out.per_clip[s][method.name] = [{"clip": c.name, **sc.as_dict()} for c, sc in zip(ev.clips, scores)]
        if method.name in out.skipped:
            for s in out.results:
                out.results[s].pop(method.name, None)
    return out


def add_tables(ctx: BenchmarkContext, sources: dict[str, list[Any]], evals: dict[str, Any], scored: MethodScores,
               truth: dict[str, dict[str, float]]) -> None:
    """One table per source: a row per method (scored, failed or not available), then the tracker floor."""
    columns = ["method", "fps", "PSNR", "SSIM", "LPIPS", "EPE", "EPE reliable pts", "region PSNR", "text adh.",
               "worst PSNR", "worst EPE"]
    keys = ("psnr", "ssim", "lpips", "epe", "epe_reliable", "region_psnr", "text_adherence", "worst_psnr", "worst_epe")
    for s, clips in sources.items():
        rows = [[m, r["fps"], *[r[k] for k in keys]] for m, r in scored.results[s].items()]
        rows += [[m, "failed" if why.startswith("failed") else "not available"] + [None] * len(keys)
                 for m, why in scored.skipped.items()]
        t = truth[s]
        rows.append(["ground truth (tracker floor)", None, None, None, None, t["epe"], t["epe_reliable"], None,
                     t["text_adherence"], None, None])
        ctx.add_table(Table(f"{s} ({len(clips)} clips of {len(clips[0].frames)} frames)", columns, rows,
                            note=f"Reliable points: {100 * t['reliable_fraction']:.0f}% of the visible input points "
                                 f"(those the tracker follows within {evals[s].reliable_px:g} px on the ground truth)."))


def add_headline(ctx: BenchmarkContext, results: dict[str, dict[str, dict]], truth: dict[str, dict[str, float]]) -> None:
    """Summary: world EPE on reliable points (its plain-EPE floor is too high to rank methods), media plain EPE."""
    for s, short, epe_key, epe_label in (("world test", "world", "epe_reliable", "reliable-pt EPE"),
                                         ("real media", "media", "epe", "EPE"),
                                         ("real fast motion", "fast", "epe", "EPE")):
        for m in ("teacher", "student", "forward-warp", "repeat-first-frame"):
            if m in results.get(s, {}):
                ctx.summary[f"{short} {m} PSNR/{epe_label}"] = f"{results[s][m]['psnr']:.2f}/{results[s][m][epe_key]:.2f}"
        if s == "world test":
            ctx.summary["world EPE floor (reliable pts)"] = truth[s]["epe_reliable"]


@benchmark("transfer", "Motion transfer reconstruction (Table 1)")
def run_transfer(ctx: BenchmarkContext) -> None:
    """Reconstruct held-out videos from their first frame + tracks; compare with the ground truth.
    PSNR/SSIM over whole videos, region PSNR inside the moving objects ([world] only), EPE between
    input tracks and tracks re-extracted from the output (tracker floor = EPE of the ground truth;
    "reliable pts" = only points the tracker follows within 1 px on the ground truth),
    text adherence = fraction of the captions' effects visible in the output ([world] only; – when
    no clip has an effect)."""
    sources = load_sources(ctx)
    lpips_weights = ctx.eval_cfg.lpips_weights
    if not lpips_weights:
        ctx.note("LPIPS skipped: no local LPIPS weights (set eval.lpips_weights in the config).")

    evals = {s: TrackFollowingEval(clips, ctx.eval_cfg.max_points, with_ssim=True, lpips_weights=lpips_weights)
             for s, clips in ctx.progress(list(sources.items()), "tracker floor")}
    truth = {s: ev.ground_truth() for s, ev in evals.items()}
    scored = score_methods(ctx, evals)
    add_tables(ctx, sources, evals, scored, truth)
    for m, why in scored.skipped.items():
        ctx.note(f"{m}: not available ({why})")
    if "real media" in sources:
        ctx.note("real media: the input tracks come from our tracker on the same frames, so its floor there is "
                 "0 by construction; the [world] floor (exact tracks) is the meaningful one.")
    _plot(ctx, scored.results, truth)
    for s, clips in sources.items():
        if scored.sheet_fns:
            videos = {"ground truth": clips[0].frames, **{m: fn(clips[0]) for m, fn in scored.sheet_fns.items()}}
            ctx.add_contact_sheet(f"sheet-{s.replace(' ', '-')}", videos, f"{s}: {clips[0].name}")
    add_headline(ctx, scored.results, truth)
    ctx.raw.update(per_source=scored.results, ground_truth=truth, per_clip=scored.per_clip, skipped=scored.skipped)
