"""Draw tracks over frames (or over one image, repeated): a short tail of past positions and a dot.

Colours follow the studio: drag = green, static = red, path = blue; every other track (transfer,
camera, no role) gets a hue from its position on frame 0, so neighbouring tracks look alike and a
track is easy to follow by eye. Only visible points are drawn (tail segments need both ends visible).
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from motionstream.tracks.trackset import TrackError, TrackSet
from motionstream.video import IMAGE_SUFFIXES, VideoWriter, write_image

ROLE_COLORS = {"drag": (0, 220, 0), "static": (230, 30, 30), "path": (40, 90, 255)}  # RGB
HUE_BINS = 24          # tracks coloured by position share this many hues (one polyline call per hue)
HUE_SPAN = 0.85        # hue range used left -> right (stops short of wrapping back to red)
TAIL_DARKEN = 0.35     # the oldest tail segment is drawn this much darker than the newest


def track_colors(ts: TrackSet) -> np.ndarray:
    """uint8 [N, 3] RGB colour of each track (by role, else by hue from its frame-0 position)."""
    x0 = ts.tracks[0, :, 0] / ts.width
    y0 = ts.tracks[0, :, 1] / ts.height
    hue_bin = np.clip((x0 * HUE_BINS).astype(int), 0, HUE_BINS - 1)
    bright = np.where(np.clip(y0, 0, 1) < 0.5, 1.0, 0.75)  # two brightness bands: top / bottom half
    palette = np.array([colorsys.hsv_to_rgb(HUE_SPAN * b / HUE_BINS, 0.85, 1.0) for b in range(HUE_BINS)])
    colors = (palette[hue_bin] * bright[:, None] * 255).astype(np.uint8)
    if ts.role is not None:
        for n, role in enumerate(ts.role):
            if role in ROLE_COLORS:
                colors[n] = ROLE_COLORS[role]
    return colors


def draw_tracks(frames: np.ndarray, ts: TrackSet, tail: int = 8, radius: int = 2,
                colors: np.ndarray | None = None) -> np.ndarray:
    """Overlay `ts` on frames uint8 [T, H, W, 3] (or one image [H, W, 3], repeated for every frame
    of `ts`). Tracks are rescaled when the frames' size differs from the TrackSet's.

    tail: how many past frames the trail spans (0: dots only). radius: dot radius in px.
    colors: uint8 [N, 3] per-track RGB (default track_colors(ts); pass the whole clip's colours
            when drawing it piece by piece, so colours do not change between pieces).
    Returns new uint8 frames [T, H, W, 3]; the input is not modified."""

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or frames.shape[-1] != 3:
        raise TrackError(f"frames must be uint8 [T, H, W, 3] or an image [H, W, 3], got {frames.dtype} {frames.shape}")
    if frames.ndim == 3:
        frames = np.repeat(frames[None], ts.num_frames, 0)
    else:
        if len(frames) != ts.num_frames:
            raise TrackError(f"{len(frames)} frames but the tracks have {ts.num_frames}")
        frames = frames.copy()
    height, width = frames.shape[1:3]
    if (width, height) != (ts.width, ts.height):
        ts = ts.scaled(width, height)
    colors = track_colors(ts) if colors is None else np.asarray(colors, np.uint8)
    groups = [np.flatnonzero((colors == c).all(1)) for c in np.unique(colors, axis=0)]
    # integer pixel positions, clipped far outside the image so OpenCV's int maths cannot overflow
    px = np.clip(np.floor(ts.tracks), -4 * max(width, height), 5 * max(width, height)).astype(np.int32)
    vis = ts.visibility
    disc = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if dx * dx + dy * dy <= radius * radius + radius]
    for t in range(ts.num_frames):
        img = frames[t]
        for lag in range(min(tail, t), 0, -1):  # oldest first, so newer segments are drawn on top
            both = vis[t - lag] & vis[t - lag + 1]
            shade = 1.0 - TAIL_DARKEN * (lag - 1) / max(tail - 1, 1)
            for idx in groups:
                idx = idx[both[idx]]
                if len(idx):
                    seg = np.stack([px[t - lag, idx], px[t - lag + 1, idx]], 1)  # [M, 2 points, 2]
                    color = tuple(int(c * shade) for c in colors[idx[0]])
                    cv2.polylines(img, list(seg), False, color, 1, cv2.LINE_AA)
        # dots: stamp a small disc with numpy (one cv2.circle call per point is far slower)
        on = np.flatnonzero(vis[t])
        for dy, dx in disc:
            x, y = px[t, on, 0] + dx, px[t, on, 1] + dy
            ok = (x >= 0) & (x < width) & (y >= 0) & (y < height)
            img[y[ok], x[ok]] = colors[on[ok]]
    return frames


OVERLAY_CHUNK = 16  # frames drawn + encoded at a time, so long clips never hold two full copies in memory


def save_overlay(path: str | Path, frames: np.ndarray, ts: TrackSet, tail: int = 8, radius: int = 2,
                 frame_index: int = -1, progress: bool = True) -> Path:
    """Draw `ts` over frames [T, H, W, 3] (or an image [H, W, 3]) and write an .mp4 of every frame at
    ts.fps, or a .png/.jpg of frame `frame_index` (default the last; its tail shows the motion so far)."""

    path = Path(path)
    frames = np.asarray(frames)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        k = frame_index % ts.num_frames
        still = frames[k] if frames.ndim == 4 else frames
        return write_image(path, draw_tracks(still, ts.frames(0, k + 1), tail, radius)[k])

    colors = track_colors(ts)
    with VideoWriter(path, ts.fps) as writer:
        for start in tqdm(range(0, ts.num_frames, OVERLAY_CHUNK), desc="overlay", unit="chunk", leave=False,
                          disable=not progress):
            lo = max(0, start - tail)  # start earlier so the first frames' tails are complete
            part = ts.frames(lo, min(start + OVERLAY_CHUNK, ts.num_frames))
            src = frames if frames.ndim == 3 else frames[lo: lo + part.num_frames]
            writer.write(draw_tracks(src, part, tail, radius, colors)[start - lo:])
    return path
