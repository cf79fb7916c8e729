"""Studio-like motion inputs cut from a [world] clip's ground truth: what users send, while the
whole clip stays the target.

The studio sends a few dragged patches and pinned grids, not a dense grid. The world knows which
layer owns every pixel and grid track (`Clip.owner`, `Clip.point_layer`), so a user's input can be
rebuilt from the truth: a drag patch (tracks.sources.drag_tracks) on each moving object, whose
pointer follows one of the object's ground-truth tracks, and pinned points on the background that
no object ever covers.

    moving_objects(clip)                  layers that move and show enough grid points on frame 0
    object_drag(clip, layer, rng)         one drag patch (TrackSet, role "drag") on that layer
    pinned_background(clip, spacing, rng) pinned points (role "static") the objects never cover
    drag_input(clip, rng=None)            drags + pins; rng None = the benchmark's fixed choice
    changed_mask(frames)                  bool [T, H, W]: pixels that differ from frame 0

Pins presume a still background, so clips for drag inputs are rendered with `DRAG_WORLD` (no camera
motion, no text effects): the studio's own case of a still photo whose parts the user moves.
"""

from __future__ import annotations

import cv2
import numpy as np

from motionstream.data.synth import Clip, WorldConfig
from motionstream.tracks.sources import DRAG_PATCH_RADIUS, DRAG_SPACING, drag_tracks, grid_points, static_grid
from motionstream.tracks.trackset import TrackSet

DRAG_WORLD = {"camera_prob": 0.0, "effect_prob": 0.0}   # WorldConfig overrides of drag clips
MIN_OBJECT_POINTS = 3         # grid tracks visible on frame 0 for an object to be grabbable
MIN_DRAG_PX = 2.0             # an object that never moves further than this is left alone
PIN_SPACING = 16.0            # px between the benchmark's pinned points
PIN_MARGIN = 8                # px: pins keep this far from every pixel any object ever covers
CHANGED_LEVEL = 12            # uint8 levels: a pixel "changed" when a channel differs more from frame 0
TRAIN_PIN_SPACINGS = (8.0, 16.0, 24.0, 32.0)
TRAIN_PATCH_RADII = (8.0, 16.0, 24.0, 32.0)
TRAIN_PIN_PROB = 0.8          # training inputs without any pin teach the model what a lone drag means


def drag_world(**overrides) -> WorldConfig:
    """The WorldConfig of drag clips (DRAG_WORLD over the defaults, then `overrides`)."""
    return WorldConfig(**{**DRAG_WORLD, **overrides})


def moving_objects(clip: Clip) -> list[int]:
    """Layer indices (>= 1) with at least MIN_OBJECT_POINTS grid tracks visible on frame 0 whose
    ground truth moves more than MIN_DRAG_PX at some frame."""
    if clip.point_layer is None:
        raise ValueError("moving_objects needs a rendered clip (point_layer is None)")
    tracks, layers = clip.tracks, clip.point_layer
    out = []
    for layer in np.unique(layers[layers > 0]):
        sel = (layers == layer) & tracks.visibility[0]
        if sel.sum() < MIN_OBJECT_POINTS:
            continue
        if np.abs(tracks.tracks[:, sel] - tracks.tracks[:1, sel]).max() > MIN_DRAG_PX:
            out.append(int(layer))
    return out


def object_drag(clip: Clip, layer: int, rng: np.random.Generator | None = None,
                patch_radius: float = DRAG_PATCH_RADIUS) -> TrackSet:
    """A drag patch grabbed on `layer` at frame 0 whose pointer follows the grab point's ground truth.

    rng None: the grab point is the layer's visible grid point nearest its visible points' mean (the
    benchmark's fixed choice); else a random visible point of the layer."""
    tracks = clip.tracks
    idx = np.flatnonzero((clip.point_layer == layer) & tracks.visibility[0])
    if len(idx) == 0:
        raise ValueError(f"layer {layer} shows no grid point on frame 0")
    p0 = tracks.tracks[0, idx]
    if rng is None:
        grab = idx[np.argmin(((p0 - p0.mean(0)) ** 2).sum(1))]
    else:
        grab = idx[rng.integers(len(idx))]
    path = tracks.tracks[:, grab].astype(np.float64)
    samples = [(k / tracks.fps, x, y) for k, (x, y) in enumerate(path)]
    return drag_tracks(samples, (path[0, 0], path[0, 1]), tracks.num_frames, tracks.width, tracks.height,
                       tracks.fps, patch_radius=patch_radius, spacing=DRAG_SPACING)


def never_covered(clip: Clip, margin: int = PIN_MARGIN) -> np.ndarray:
    """bool [H, W]: background pixels farther than `margin` px from any object pixel of any frame."""

    covered = (clip.owner > 0).any(0).astype(np.uint8)
    size = 2 * margin + 1
    return cv2.dilate(covered, np.ones((size, size), np.uint8)) == 0


def pinned_background(clip: Clip, spacing: float = PIN_SPACING, rng: np.random.Generator | None = None
                      ) -> TrackSet | None:
    """Pinned points every `spacing` px on background the objects never cover (None when none fit).
    rng: a random offset of the grid, and a random rectangle of the frame to pin (as a user drags one)."""
    tracks = clip.tracks
    w, h = tracks.width, tracks.height
    x0, y0, x1, y1 = spacing / 2, spacing / 2, w - spacing / 2, h - spacing / 2
    if rng is not None:
        xs, ys = np.sort(rng.uniform(0, w, 2)), np.sort(rng.uniform(0, h, 2))
        x0, x1 = max(x0, xs[0]), min(x1, max(xs[1], xs[0] + 2 * spacing))
        y0, y1 = max(y0, ys[0]), min(y1, max(ys[1], ys[0] + 2 * spacing))
        if x1 < x0 or y1 < y0:
            return None
    pts = grid_points(x0, y0, x1, y1, spacing=spacing)
    free = never_covered(clip)
    xi = np.clip(pts[:, 0].astype(np.int64), 0, w - 1)
    yi = np.clip(pts[:, 1].astype(np.int64), 0, h - 1)
    pts = pts[free[yi, xi]]
    if len(pts) == 0:
        return None
    return static_grid(pts, tracks.num_frames, w, h, tracks.fps)


def drag_input(clip: Clip, rng: np.random.Generator | None = None) -> tuple[TrackSet, list[int]] | None:
    """(tracks the studio would send, dragged layers), or None when no object moves.

    rng None (benchmark): one drag of DRAG_PATCH_RADIUS on every moving object and pins every
    PIN_SPACING px. With rng (training): a random non-empty subset of the moving objects, a random
    patch radius, and pins (at a random spacing, over a random rectangle) with TRAIN_PIN_PROB."""
    objects = moving_objects(clip)
    if not objects:
        return None
    if rng is None:
        parts = [object_drag(clip, layer) for layer in objects]
        pins = pinned_background(clip)
    else:
        count = int(rng.integers(1, len(objects) + 1))
        objects = sorted(int(o) for o in rng.choice(objects, size=count, replace=False))
        radius = float(rng.choice(TRAIN_PATCH_RADII))
        parts = [object_drag(clip, layer, rng, radius) for layer in objects]
        pins = (pinned_background(clip, float(rng.choice(TRAIN_PIN_SPACINGS)), rng)
                if rng.random() < TRAIN_PIN_PROB else None)
    if pins is not None:
        parts.append(pins)
    return TrackSet.concat(parts), objects


def changed_mask(frames: np.ndarray, level: int = CHANGED_LEVEL) -> np.ndarray:
    """bool [T, H, W]: pixels whose ground truth differs from frame 0 by more than `level` in some
    channel (the moved objects and the background they reveal); frame 0 is all False."""
    diff = np.abs(frames.astype(np.int16) - frames[:1].astype(np.int16)).max(-1)
    return diff > level
