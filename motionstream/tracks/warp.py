"""Moving an image along sparse tracks: a dense flow from the tracks, then a backward remap.

    dense_flow(points, displacements, W, H, sigma, prior_weight) -> flow [H, W, 2]
    warp_frame(image, p0, pt, visible, cfg) -> one frame: `image` moved by the displacements pt - p0
        = remap_back(image, frame_flow(p0, pt, visible, W, H, cfg)), the flow and the remap apart
    clip_flows(tracks, W, H) -> the flows from frame 0 to each frame, one at a time
    forward_warp(first_frame, tracks, cfg) -> [T, H, W, 3]: every frame of `tracks`

The choice made: for each frame t, every track visible at frames 0 and t carries a displacement
d = p_t - p_0, known at its *target* position p_t. A dense backward flow on the target grid is the
Gaussian-weighted average of nearby displacements (normalised convolution: splat d and a unit weight
to the nearest pixel, blur both with the same Gaussian, divide). Far from any track the weight fades
and the flow falls back to zero (content stays put), via a small prior weight. Then `cv2.remap`
samples frame 0 at q - d(q). This is one splat + two blurs + one remap per frame (O(H*W), a few ms),
smooth, hole-free, and exact for a rigid translation; it smears displacement across object
boundaries (no occlusion reasoning).

Used by the evaluation (the forward-warp baseline) and by the DiT's "video" prior
(diffusion/sampling.py): the conditions' own guess of the clip, encoded by the VAE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from motionstream.tracks.trackset import TrackSet


@dataclass
class WarpConfig:
    """Forward-warp settings. The Gaussian's sigma is `sigma_spacing` times the mean spacing of the
    tracks (sqrt(H*W / N)), so dense grids get a sharp flow and sparse ones a smooth one, clamped
    so that a lone drag moves its neighbourhood, not the whole image."""

    sigma_spacing: float = 1.0
    min_sigma: float = 1.0        # pixels; below this the flow gets holes between grid points
    max_sigma_frac: float = 0.1   # of the image's shorter side
    prior_weight: float = 1e-3    # weight of the zero-motion prior, relative to one track's peak weight


def dense_flow(points: np.ndarray, displacements: np.ndarray, width: int, height: int,
               sigma: float, prior_weight: float) -> np.ndarray:
    """float32 [H, W, 2]: Gaussian normalised-convolution interpolation of sparse displacements
    `displacements` [N, 2] known at pixel positions `points` [N, 2] (x, y); 0 far from all points.

    A wide Gaussian is applied on a grid coarsened by ~sigma / 4 and the result resized back: the
    flow is that smooth anyway, and the blur costs O(H W) instead of O(H W sigma)."""

    flow = np.zeros((height, width, 2), np.float32)
    inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    if not inside.any():
        return flow
    step = max(1, int(sigma // 4))
    gw, gh = -(-width // step), -(-height // step)
    xi = np.floor(points[inside, 0] / step).astype(np.int64)
    yi = np.floor(points[inside, 1] / step).astype(np.int64)
    num = np.zeros((gh, gw, 2), np.float64)
    den = np.zeros((gh, gw), np.float64)
    np.add.at(num, (yi, xi), displacements[inside])
    np.add.at(den, (yi, xi), 1.0)
    s = sigma / step
    ksize = 2 * int(np.ceil(3 * s)) + 1
    num = cv2.GaussianBlur(num, (ksize, ksize), s, borderType=cv2.BORDER_CONSTANT)
    den = cv2.GaussianBlur(den, (ksize, ksize), s, borderType=cv2.BORDER_CONSTANT)
    # peak of one splatted unit after the blur (on the coarse grid); the prior is a fraction of it
    peak = 1.0 / (2 * np.pi * s ** 2)
    coarse = (num / (den + prior_weight * peak)[..., None]).astype(np.float32)
    if step == 1:
        return coarse
    # coarse cell centres sit at step * (i + 0.5) - 0.5 in pixels: INTER_LINEAR with the same convention
    return cv2.resize(coarse, (gw * step, gh * step), interpolation=cv2.INTER_LINEAR)[:height, :width]


def warp_sigma(num_tracks: int, width: int, height: int, cfg: WarpConfig) -> float:
    """The flow's Gaussian sigma in pixels for `num_tracks` tracks on a width x height image."""
    return float(np.clip(cfg.sigma_spacing * np.sqrt(height * width / max(1, num_tracks)),
                         cfg.min_sigma, max(cfg.min_sigma, cfg.max_sigma_frac * min(height, width))))


def warp_frame(image: np.ndarray, start: np.ndarray, end: np.ndarray, visible: np.ndarray,
               cfg: WarpConfig | None = None, num_tracks: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3]: `image` [H, W, 3] moved so that the content at `start` [N, 2] (x, y pixels)
    lands at `end` [N, 2]; only tracks with `visible` [N] (visible at both ends) count. `num_tracks`
    sets the flow's smoothness (default N): pass the whole set's size so that every frame of a clip
    gets the same sigma."""

    h, w = image.shape[:2]
    return remap_back(image, frame_flow(start, end, visible, w, h, cfg, num_tracks))


def frame_flow(start: np.ndarray, end: np.ndarray, visible: np.ndarray, width: int, height: int,
               cfg: WarpConfig | None = None, num_tracks: int | None = None) -> np.ndarray:
    """float32 [H, W, 2]: the backward flow of warp_frame (target pixel q samples the image at q - flow)."""
    cfg = cfg or WarpConfig()
    sigma = warp_sigma(len(start) if num_tracks is None else num_tracks, width, height, cfg)
    end, start = np.asarray(end, np.float32)[visible], np.asarray(start, np.float32)[visible]
    return dense_flow(end, end - start, width, height, sigma, cfg.prior_weight)


def remap_back(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`image` [H, W, ...] sampled at q - flow[q] (bilinear, border replicated)."""
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, grid_x - flow[..., 0], grid_y - flow[..., 1],
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def clip_flows(tracks: TrackSet, width: int, height: int, num_frames: int | None = None,
               cfg: WarpConfig | None = None) -> Iterator[np.ndarray]:
    """frame_flow (float32 [H, W, 2]) from frame 0 to each of the first `num_frames` frames (default
    all) of `tracks`, rescaled to width x height; a track counts where it is visible at both ends.
    One frame at a time: a long clip's flows together would not be small."""
    if (tracks.width, tracks.height) != (width, height):
        tracks = tracks.scaled(width, height)
    pts = tracks.tracks
    vis = tracks.visibility & tracks.visibility[:1]
    for t in range(tracks.num_frames if num_frames is None else num_frames):
        yield frame_flow(pts[0], pts[t], vis[t], width, height, cfg, num_tracks=tracks.num_tracks)


def forward_warp(first_frame: np.ndarray, tracks: TrackSet, cfg: WarpConfig | None = None) -> np.ndarray:
    """uint8 [T, H, W, 3]: `first_frame` [H, W, 3] moved along `tracks` (T frames; tracks in another
    image size are rescaled to the frame's). Frame 0 is the first frame exactly."""
    first_frame = np.asarray(first_frame, np.uint8)
    h, w = first_frame.shape[:2]
    out = np.empty((tracks.num_frames, h, w, 3), np.uint8)
    for t, flow in enumerate(clip_flows(tracks, w, h, cfg=cfg)):
        out[t] = first_frame if t == 0 else remap_back(first_frame, flow)
    return out
