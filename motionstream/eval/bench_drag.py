"""`drag`: the studio's own input on [world] test clips (sparse drags, pinned background).

Each case is a [world] test clip rendered with a still camera and no text effect
(data/drags.DRAG_WORLD). The methods get its first frame, caption and the tracks a user would
send (data/drags.drag_input): one drag patch (48 px wide, a point every 8 px, the studio's
defaults) on every moving object, its pointer following the ground-truth track of the object's
centre point, and pinned points every 16 px on background that no object ever covers. The result
is compared with the whole true clip:

    changed PSNR   pixels whose truth differs from frame 0: the moved objects and what they reveal
    object PSNR    pixels the dragged objects own in each true frame (do they keep their shape?)
    frame PSNR     the whole frame
    object EPE     our tracker on the output from ALL of the dragged objects' grid points on frame 0
                   (not only the dragged ones), against their true tracks; "reliable" only over the
                   points the tracker follows within 1 px on the true clip (its floor is below 1 px;
                   the plain one is high where objects leave the frame or turn)
(frames 1..T-1; frame 0 is the input). Means over cases, plus the worst case of each.

Rows: every method of the transfer benchmark (the no-model baselines, teacher, students); segment
paste, a no-model baseline of drags only (tracks/paste.py: GrabCut segments the object under each drag
patch, pasted at the patch's displacement over the inpainted first frame, from the studio's input
alone); and four headroom rows that no method can be (ORACLES, oracle_paste): the objects' frame-0
pixels pasted rigidly where the true layers say they are, moved by
  * their TRUE mean displacement (what the drag input tells at best: its patch only translates), or
  * their true turn and scale too (a similarity fitted to their true grid tracks on each frame),
over either the background inpainted where they were (it invents nothing behind the objects) or the
TRUE background (the clip rendered without them: data/synth.render_without). The first row is what
the input allows; the others show what knowing the objects' rotation, or what they hide, would add.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from skimage.transform import SimilarityTransform

from motionstream.config import video_config
from motionstream.data.drags import changed_mask, drag_input, drag_world
from motionstream.data.splits import held_out_seeds
from motionstream.data.synth import render_clip, render_without
from motionstream.eval.bench_transfer import STUDENT_METHOD, WARP_METHOD, methods_for
from motionstream.eval.benchmarks import BenchmarkContext, NotAvailable, Table, benchmark, missing_weights
from motionstream.scoring import metrics
from motionstream.scoring.track_following import mean_over_clips
from motionstream.tracks.paste import inpainted_plate, paste_transformed, segment_paste, translations
from motionstream.tracks.trackset import TrackSet

FULL_CASES = 16               # cases in a full run (--clips overrides; --quick: eval.quick_clips)
PASTE_METHOD = "segment paste"
METRIC_KEYS = ("changed_psnr", "object_psnr", "frame_psnr", "object_epe", "object_epe_reliable")
MIN_FIT_POINTS = 3            # true grid points a layer's turn-and-scale fit needs on a frame
ORACLES = {                   # headroom rows (module docstring): name -> oracle_paste's options
    "oracle: true motion, rigid paste": {},
    "oracle: true motion, true background": {"true_background": True},
    "oracle: true turn and scale, rigid paste": {"turn_and_scale": True},
    "oracle: true turn and scale, true background": {"turn_and_scale": True, "true_background": True},
}


@dataclass
class DragCase:
    """One test case: the fields a method's generate_fn reads (those of eval.clips.EvalClip) and the
    masks and true tracks the metrics need."""

    name: str
    frames: np.ndarray                 # uint8 [T, H, W, 3] the true clip
    tracks: TrackSet                   # the drag input (drags + pins)
    caption: str
    changed: np.ndarray                # bool [T, H, W]
    inside: np.ndarray                 # bool [T, H, W] pixels of the dragged objects
    object_tracks: TrackSet            # true tracks of the dragged objects' grid points
    reliable: np.ndarray               # bool [T, N] of object_tracks: followed within 1 px on the truth
    objects: list[int]
    owner0: np.ndarray                 # uint8 [H, W] layer per pixel on frame 0
    point_layer: np.ndarray            # int [N] layer of each true grid track
    true_tracks: TrackSet              # the clip's whole true grid
    hidden: np.ndarray                 # uint8 [T, H, W, 3] the clip without the dragged objects (what they hide)
    effects: list[str] = field(default_factory=list)
    moving_mask: np.ndarray | None = None


def drag_cases(n: int, cfg: dict[str, Any], num_frames: int, max_points: int | None) -> list[DragCase]:
    """The first `n` [world] test clips (in seed order) that have a moving object, as drag cases."""

    vcfg = video_config(cfg)
    width, height, fps = vcfg.width, vcfg.height, vcfg.fps
    world = drag_world()
    cases = []
    for seed in held_out_seeds():
        clip = render_clip(int(seed), num_frames=num_frames, width=width, height=height, fps=fps, cfg=world)
        made = drag_input(clip)
        if made is None:
            continue
        tracks, objects = made
        on_objects = np.flatnonzero(np.isin(clip.point_layer, objects) & clip.tracks.visibility[0])
        object_tracks = metrics.subsample_tracks(clip.tracks.subset(on_objects), max_points)
        cases.append(DragCase(
            name=f"world-{int(seed)}", frames=clip.frames, tracks=tracks, caption=clip.caption,
            changed=changed_mask(clip.frames), inside=np.isin(clip.owner, objects), object_tracks=object_tracks,
            reliable=metrics.reliable_points(clip.frames, object_tracks),
            objects=objects, owner0=clip.owner[0], point_layer=clip.point_layer, true_tracks=clip.tracks,
            hidden=render_without(int(seed), objects, num_frames, width, height, fps, world)))
        if len(cases) == n:
            break
    if not cases:
        raise NotAvailable("no [world] test clip has a moving object")
    return cases


def score_case(case: DragCase, video: np.ndarray) -> dict[str, float]:
    """The metrics of one video (module docstring)."""
    video = np.asarray(video)
    if video.shape != case.frames.shape or video.dtype != np.uint8:
        raise ValueError(f"generated video must be uint8 {case.frames.shape}, got {video.dtype} {video.shape}")
    out, truth = video[1:], case.frames[1:]
    err, valid = metrics.track_errors(case.object_tracks, video)
    return {"changed_psnr": metrics.psnr(out, truth, case.changed[1:]),
            "object_psnr": metrics.psnr(out, truth, case.inside[1:]),
            "frame_psnr": metrics.psnr(out, truth),
            "object_epe": metrics.masked_mean(err, valid),
            "object_epe_reliable": metrics.masked_mean(err, valid & case.reliable)}


def true_motions(case: DragCase, turn_and_scale: bool) -> np.ndarray:
    """float32 [T, K, 2, 3]: each dragged layer's true motion from frame 0 (cv2.warpAffine's form), layers
    in index order (nearer, higher index, last): the mean displacement of its frame-0-visible true grid
    tracks, or with turn_and_scale the least-squares similarity (rotation, uniform scale, shift) from
    those points on frame 0 to the ones still visible on frame t (the mean displacement when fewer than
    MIN_FIT_POINTS are)."""
    truth = case.true_tracks
    layers = sorted(case.objects)
    motions = np.zeros((len(case.frames), len(layers), 2, 3), np.float32)
    for k, layer in enumerate(layers):
        sel = (case.point_layer == layer) & truth.visibility[0]
        motions[:, k] = translations((truth.tracks[:, sel] - truth.tracks[:1, sel]).mean(1))
        if not turn_and_scale:
            continue
        for t in range(1, len(case.frames)):
            seen = sel & truth.visibility[t]
            if seen.sum() < MIN_FIT_POINTS:
                continue
            fit = SimilarityTransform.from_estimate(truth.tracks[0, seen], truth.tracks[t, seen])
            if fit:
                motions[t, k] = fit.params[:2]
    return motions


def oracle_paste(case: DragCase, turn_and_scale: bool = False, true_background: bool = False) -> np.ndarray:
    """uint8 [T, H, W, 3]: a headroom row (module docstring): tracks/paste.paste_transformed with the true
    layers as masks and their true_motions, over the background inpainted where they were
    (tracks/paste.inpainted_plate) or, with true_background, over the clip rendered without them."""
    masks = [case.owner0 == layer for layer in sorted(case.objects)]
    background = case.hidden if true_background else inpainted_plate(case.frames[0], masks)
    return paste_transformed(case.frames[0], masks, true_motions(case, turn_and_scale), background)


def paste_case(case: DragCase) -> np.ndarray:
    """uint8 [T, H, W, 3]: the segment-paste row (tracks/paste.py) from the case's first frame and drag input."""
    return segment_paste(case.frames[0], case.tracks)


def summarize(rows: list[dict[str, float]]) -> dict[str, float]:
    """Means over cases (nan skipped, capped PSNR) and the worst case of each metric."""

    out = {k: mean_over_clips([r[k] for r in rows]) for k in METRIC_KEYS}
    for k in METRIC_KEYS:
        vals = [r[k] for r in rows if not np.isnan(r[k])]
        out[f"worst_{k}"] = (max(vals) if k.endswith("epe") else min(vals)) if vals else float("nan")
    return out


@benchmark("drag", "Sparse drags: the studio's input on [world] test clips")
def run_drag(ctx: BenchmarkContext) -> None:
    """Drag patches on the moving objects of [world] test clips (still camera), pinned points on the
    background the objects never cover; the whole true clip is the reference. Changed PSNR is over
    the pixels that differ from frame 0 (moved objects + revealed background), object PSNR inside
    the dragged objects, frame PSNR over whole frames, object EPE over all of the dragged objects'
    grid points. The oracle rows are headroom, not methods: the true layers pasted at their true
    shift (all a drag patch, which only translates, can tell) or their true turn and scale, over the
    inpainted or the true background."""
    n = ctx.clips_override or (ctx.eval_cfg.quick_clips if ctx.quick else FULL_CASES)
    cases = drag_cases(n, ctx.cfg, ctx.eval_cfg.num_frames, ctx.eval_cfg.max_points)
    results: dict[str, dict[str, float]] = {}
    per_case: dict[str, list[dict[str, Any]]] = {}
    videos: dict[str, np.ndarray] = {"ground truth": cases[0].frames}
    skipped: dict[str, str] = {}
    rows_fns = [(m.name, m.needs_weights, m.factory) for m in methods_for(ctx)]
    after_warp = next((i + 1 for i, row in enumerate(rows_fns) if row[0] == WARP_METHOD), len(rows_fns))
    rows_fns.insert(after_warp, (PASTE_METHOD, (), lambda _ctx: paste_case))
    rows_fns += [(name, (), lambda _ctx, kw=kw: partial(oracle_paste, **kw)) for name, kw in ORACLES.items()]
    for name, needs, factory in rows_fns:
        missing = missing_weights(needs)
        if missing:
            skipped[name] = f"missing {', '.join(missing)}"
            continue
        try:
            fn = factory(ctx)
            scores = []
            for case in ctx.progress(cases, name):
                video = fn(case)
                scores.append({"case": case.name, **score_case(case, video)})
                if case is cases[0]:
                    videos[name] = video
        except NotAvailable as err:
            skipped[name] = str(err)
            continue
        except Exception as err:  # noqa: BLE001 - one broken model must not lose the other rows
            skipped[name] = f"failed: {type(err).__name__}: {err}"
            continue
        results[name], per_case[name] = summarize(scores), scores

    columns = ["method", "changed PSNR", "object PSNR", "frame PSNR", "object EPE", "object EPE reliable",
               "worst changed PSNR", "worst frame PSNR", "worst object EPE"]
    rows = [[m, r["changed_psnr"], r["object_psnr"], r["frame_psnr"], r["object_epe"], r["object_epe_reliable"],
             r["worst_changed_psnr"], r["worst_frame_psnr"], r["worst_object_epe"]] for m, r in results.items()]
    floor = summarize([score_case(c, c.frames) for c in cases])
    rows.append(["ground truth (tracker floor)", None, None, None, floor["object_epe"], floor["object_epe_reliable"],
                 None, None, floor["worst_object_epe"]])
    rows += [[m, "failed" if why.startswith("failed") else "not available"] + [None] * (len(columns) - 2)
             for m, why in skipped.items()]
    points = sum(c.tracks.num_tracks for c in cases) / len(cases)
    ctx.add_table(Table(f"{len(cases)} [world] test clips x {len(cases[0].frames)} frames, still camera", columns, rows,
                        note=f"{points:.0f} input tracks per case on average (drag patches + pins); "
                             f"the dense transfer benchmark gives 2500."))
    for m, why in skipped.items():
        ctx.note(f"{m}: not available ({why})")
    ctx.add_contact_sheet("sheet", {k: videos[k] for k in ("ground truth", WARP_METHOD, PASTE_METHOD, STUDENT_METHOD)
                                    if k in videos},
                          f"drag: {cases[0].name}")
    for m in ("repeat-first-frame", WARP_METHOD, PASTE_METHOD, STUDENT_METHOD):
        if m in results:
            r = results[m]
            ctx.summary[f"{m} changed/object/frame PSNR"] = (
                f"{r['changed_psnr']:.2f}/{r['object_psnr']:.2f}/{r['frame_psnr']:.2f}")
    ctx.raw.update(per_method=results, per_case=per_case, skipped=skipped)
