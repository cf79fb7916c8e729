"""Baselines that use no learned model (the Table 1 baselines, and the training-time references).

    repeat_first_frame(first_frame, T)  the frozen first frame: what a model that ignores the
                                        tracks produces; EPE and PSNR ratios are taken against it.
    forward_warp(first_frame, tracks)   the first frame moved along the tracks: what a model that
                                        only copies content along the tracks produces.

Forward warp, the choice made: for each frame t, every track visible at frames 0 and t carries a
displacement d = p_t - p_0, known at its *target* position p_t. A dense backward flow on the
target grid is the Gaussian-weighted average of nearby displacements (normalised convolution:
splat d and a unit weight to the nearest pixel, blur both with the same Gaussian, divide). Far
from any track the weight fades and the flow falls back to zero (content stays put), via a small
prior weight. Then `cv2.remap` samples frame 0 at q - d(q). This is one splat + two blurs + one
remap per frame (O(H*W), a few ms), smooth, hole-free, and exact for a rigid translation; it
smears displacement across object boundaries (the honest weakness of a baseline without
occlusion reasoning).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def repeat_first_frame(first_frame: np.ndarray, num_frames: int) -> np.ndarray:
    """uint8 [num_frames, H, W, 3]: the first frame [H, W, 3] repeated."""
    first_frame = np.asarray(first_frame, np.uint8)
    if first_frame.ndim != 3 or first_frame.shape[-1] != 3:
        raise ValueError(f"first_frame must be [H, W, 3], got {first_frame.shape}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return np.repeat(first_frame[None], num_frames, axis=0)


def dense_flow(points: np.ndarray, displacements: np.ndarray, width: int, height: int,
               sigma: float, prior_weight: float) -> np.ndarray:
    """float32 [H, W, 2]: Gaussian normalised-convolution interpolation of sparse displacements
    `displacements` [N, 2] known at pixel positions `points` [N, 2] (x, y); 0 far from all points."""
    import cv2

    flow = np.zeros((height, width, 2), np.float32)
    inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    if not inside.any():
        return flow
    xi = np.floor(points[inside, 0]).astype(np.int64)
    yi = np.floor(points[inside, 1]).astype(np.int64)
    num = np.zeros((height, width, 2), np.float64)
    den = np.zeros((height, width), np.float64)
    np.add.at(num, (yi, xi), displacements[inside])
    np.add.at(den, (yi, xi), 1.0)
    ksize = 2 * int(np.ceil(3 * sigma)) + 1
    num = cv2.GaussianBlur(num, (ksize, ksize), sigma, borderType=cv2.BORDER_CONSTANT)
    den = cv2.GaussianBlur(den, (ksize, ksize), sigma, borderType=cv2.BORDER_CONSTANT)
    # peak of one splatted unit after the blur; the prior is a fraction of it
    peak = 1.0 / (2 * np.pi * sigma ** 2)
    return (num / (den + prior_weight * peak)[..., None]).astype(np.float32)


def forward_warp(first_frame: np.ndarray, tracks: TrackSet, cfg: WarpConfig | None = None) -> np.ndarray:
    """uint8 [T, H, W, 3]: `first_frame` [H, W, 3] moved along `tracks` (T frames; tracks in another
    image size are rescaled to the frame's). Frame 0 is the first frame exactly."""
    import cv2

    cfg = cfg or WarpConfig()
    first_frame = np.asarray(first_frame, np.uint8)
    h, w = first_frame.shape[:2]
    if (tracks.width, tracks.height) != (w, h):
        tracks = tracks.scaled(w, h)
    pts = tracks.tracks.astype(np.float32)
    vis = tracks.visibility & tracks.visibility[:1]          # need both ends of the displacement
    sigma = float(np.clip(cfg.sigma_spacing * np.sqrt(h * w / max(1, tracks.num_tracks)),
                          cfg.min_sigma, max(cfg.min_sigma, cfg.max_sigma_frac * min(h, w))))
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = np.empty((tracks.num_frames, h, w, 3), np.uint8)
    out[0] = first_frame
    for t in range(1, tracks.num_frames):
        sel = vis[t]
        flow = dense_flow(pts[t, sel], pts[t, sel] - pts[0, sel], w, h, sigma, cfg.prior_weight)
        out[t] = cv2.remap(first_frame, grid_x - flow[..., 0], grid_y - flow[..., 1],
                           interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


BASELINES = {
    "repeat-first-frame": lambda clip: repeat_first_frame(clip.frames[0], len(clip.frames)),
    "forward-warp": lambda clip: forward_warp(clip.frames[0], clip.tracks),
}
"""name -> generate_fn(clip) -> uint8 [T,H,W,3], for any clip with `.frames` and `.tracks`."""
