"""Motion sources that need no video: point grids, pinned (static) grids, drags and drawn paths.

All positions are pixels of the conditioning image ((0, 0) = top-left corner); all times are seconds,
and output frame k of a TrackSet is at time k / fps. Points are always visible here (points that
leave the image simply stop conditioning).

    grid_points     float32 [N, 2] grid over a rectangle (rows x cols, or a spacing in pixels)
    static_grid     points pinned in place for every frame              -> role "static"
    drag_tracks     a patch of points around the grab point follows a timestamped pointer path -> "drag"
    keyframe_path   a point (or patch) follows sparse keyframes, linearly interpolated -> "path"
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from motionstream.tracks.trackset import TrackError, TrackSet

DRAG_PATCH_RADIUS = 24.0  # px: the drag patch covers a disc this wide around the grab point ...
DRAG_SPACING = 8.0        # px: ... sampled every VAE cell (stride 8) so every latent cell gets a track


def grid_points(x0: float, y0: float, x1: float, y1: float, rows: int | None = None, cols: int | None = None,
                spacing: float | None = None) -> np.ndarray:
    """Points on a regular grid over the rectangle [x0, x1] x [y0, y1], row-major (y, then x).

    rows/cols: a rows x cols grid at the centres of equal cells (a 50 x 50 grid on a frame: rows=cols=50).
    spacing:   points `spacing` px apart, as many as fit, centred in the rectangle (at least one per axis).
    Returns float32 [N, 2] pixel (x, y)."""
    if x1 < x0 or y1 < y0:
        raise TrackError(f"grid rectangle must have x0 <= x1 and y0 <= y1, got ({x0}, {y0}, {x1}, {y1})")
    if spacing is not None:
        if rows is not None or cols is not None:
            raise TrackError("give either rows/cols or spacing, not both")
        if not spacing > 0:
            raise TrackError(f"grid spacing must be positive, got {spacing}")
        xs = _centred_steps(x0, x1, spacing)
        ys = _centred_steps(y0, y1, spacing)
    else:
        if rows is None and cols is None:
            raise TrackError("give rows and cols (or spacing) for a grid")
        rows, cols = rows or cols, cols or rows
        if rows < 1 or cols < 1:
            raise TrackError(f"grid needs rows, cols >= 1, got {rows} x {cols}")
        xs = x0 + (np.arange(cols) + 0.5) * (x1 - x0) / cols
        ys = y0 + (np.arange(rows) + 0.5) * (y1 - y0) / rows
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)


def _centred_steps(a: float, b: float, spacing: float) -> np.ndarray:
    count = int(np.floor((b - a) / spacing + 1e-6)) + 1
    return (a + b) / 2 + (np.arange(count) - (count - 1) / 2) * spacing


def static_grid(points: np.ndarray, num_frames: int, width: int, height: int, fps: float) -> TrackSet:
    """Points [N, 2] pinned at their position in every frame (the "keep this still" grid)."""
    points = _points(points)
    return TrackSet(tracks=np.repeat(points[None], num_frames, 0), visibility=np.ones((num_frames, len(points)), bool),
                    width=width, height=height, fps=fps, role=["static"] * len(points))


def drag_tracks(samples: Sequence[tuple[float, float, float]], grab_xy: tuple[float, float], num_frames: int,
                width: int, height: int, fps: float, patch_radius: float = DRAG_PATCH_RADIUS,
                spacing: float = DRAG_SPACING) -> TrackSet:
    """A patch of points around `grab_xy` that moves with the pointer.

    samples: pointer positions (t_seconds, x, y), t in the TrackSet's clock (frame k at k / fps). The
             patch moves by pointer(t) - pointer(first sample), so frame 0 shows the patch where it
             was grabbed even if the first sample is a few pixels off; before the first sample the
             patch rests, after the last one it stays where the pointer was released.
    patch:   grid points `spacing` px apart inside the disc of `patch_radius` around the grab point
             (patch_radius 0 = the grab point alone)."""
    path = _pointer_path(samples, num_frames, fps)
    offsets = path - path[0]  # [T, 2]
    patch = patch_points(grab_xy, patch_radius, spacing)
    return _moving(patch, offsets, width, height, fps, "drag")


def keyframe_path(keyframes: Sequence[tuple[float, float, float]], num_frames: int, width: int, height: int,
                  fps: float, patch_radius: float = 0.0, spacing: float = DRAG_SPACING) -> TrackSet:
    """A user-drawn trajectory: the point at the first keyframe (or a patch of points around it,
    see drag_tracks) follows keyframes (t_seconds, x, y), linearly interpolated; it holds the first
    keyframe's position before it and the last one's after it."""
    path = _pointer_path(keyframes, num_frames, fps)
    patch = patch_points(tuple(path[0]), patch_radius, spacing)
    return _moving(patch, path - path[0], width, height, fps, "path")


def _points(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, np.float32)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise TrackError(f"points must be a non-empty array [N, 2], got shape {points.shape}")
    if not np.isfinite(points).all():
        raise TrackError("points contain NaN/inf")
    return points


def _pointer_path(samples: Sequence[tuple[float, float, float]], num_frames: int, fps: float) -> np.ndarray:
    """float64 [T, 2] pointer position at each frame time, linear between samples, held outside them."""
    s = np.asarray(samples, np.float64)
    if s.ndim != 2 or s.shape[1] != 3 or len(s) == 0:
        raise TrackError(f"samples must be a non-empty list of (t_seconds, x, y), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise TrackError("samples contain NaN/inf")
    if num_frames < 1 or not fps > 0:
        raise TrackError(f"need num_frames >= 1 and fps > 0, got {num_frames} and {fps}")
    s = s[np.argsort(s[:, 0], kind="stable")]
    t = np.arange(num_frames) / fps
    return np.stack([np.interp(t, s[:, 0], s[:, 1]), np.interp(t, s[:, 0], s[:, 2])], 1)


def patch_points(centre: tuple[float, float], radius: float, spacing: float) -> np.ndarray:
    """float32 [N, 2] pixel (x, y): the points of a square grid of step `spacing` that lie within
    `radius` of `centre` (the centre itself always among them); radius <= 0 gives the centre alone.
    The patch of points a drag or a pin moves together."""
    cx, cy = float(centre[0]), float(centre[1])
    if radius <= 0:
        return np.array([[cx, cy]], np.float32)
    if not spacing > 0:
        raise TrackError(f"patch spacing must be positive, got {spacing}")
    # offsets k * spacing symmetric around the centre, so the grab point itself is always a track
    steps = np.arange(-int(radius / spacing + 1e-6), int(radius / spacing + 1e-6) + 1) * spacing
    dx, dy = np.meshgrid(steps, steps)
    inside = np.hypot(dx, dy) <= radius + 1e-6
    return np.stack([cx + dx[inside], cy + dy[inside]], 1).astype(np.float32)


def _moving(patch: np.ndarray, offsets: np.ndarray, width: int, height: int, fps: float, role: str) -> TrackSet:
    tracks = (patch[None].astype(np.float64) + offsets[:, None]).astype(np.float32)
    return TrackSet(tracks=tracks, visibility=np.ones(tracks.shape[:2], bool), width=width, height=height,
                    fps=fps, role=[role] * len(patch))
