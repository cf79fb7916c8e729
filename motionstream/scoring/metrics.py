"""Evaluation metrics on uint8 videos: PSNR, SSIM, LPIPS (local weights only), track EPE, text adherence.

All video arguments are uint8 RGB arrays [T, H, W, 3] (a single [H, W, 3] frame works where it
makes sense), values 0..255. Tracks are TrackSets (pixel (x, y) of the conditioning image).

EPE follows the paper (Sec. 4.2): the L2 distance between the *input* tracks and the tracks a
point tracker re-extracts from the generated video, starting from the same query points (the
input tracks' frame-0 positions), averaged over the points that are visible and inside the image
in the input. The tracker itself is imperfect, so `tracker_noise_floor` (the EPE of the tracker on
the ground-truth video) is reported beside every EPE: no model can be measured below it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file
from skimage.metrics import structural_similarity

from motionstream.data.effect_scores import (  # noqa: F401 (re-exported: the adherence scorers)
    EFFECTS, AdherenceConfig, adherence_rate, chroma_shift, effect_present, effect_score, text_adherence)
from motionstream.tracks.tracker import track_frames
from motionstream.tracks.trackset import TrackSet
from motionstream.video import PIXEL_MAX, as_video

PSNR_CAP_DB = 100.0  # stands in for the inf PSNR of identical videos when averaging over clips

# A point tracker: (frames uint8 [T,H,W,3], query points float32 [N,2] at frame 0, fps) -> TrackSet
# with N tracks in the frames' pixel coordinates. Default: motionstream.tracks.tracker.track_frames.
Tracker = Callable[[np.ndarray, np.ndarray, float], TrackSet]


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_video(a), as_video(b)
    if a.shape != b.shape:
        raise ValueError(f"videos differ in shape: {a.shape} vs {b.shape}")
    return a, b


# --------------------------------------------------------------------------- fidelity
def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of two uint8 videos [T,H,W,3] over all pixels (one MSE for the whole video, so a
    perfectly reproduced frame 0 does not make the mean infinite). `mask` bool [T,H,W] restricts
    it to those pixels (nan when the mask is empty). Identical inputs give inf."""
    a, b = _check_pair(a, b)
    diff = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    if mask is not None:
        mask = np.asarray(mask, bool).reshape(a.shape[:3])
        if not mask.any():
            return float("nan")
        mse = float(diff[mask].mean())
    else:
        mse = float(diff.mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(PIXEL_MAX ** 2 / mse)


def region_psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """PSNR inside a region, e.g. the moving objects' masks of a [world] clip (bool [T,H,W]).
    Frame-level fidelity is dominated by the static background (~90% of pixels); this is not."""
    return psnr(a, b, mask=region)


def frame_psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 [T]: per-frame PSNR in dB (inf for identical frames), for metrics over time."""
    a, b = _check_pair(a, b)
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return np.where(mse == 0, np.inf, 10.0 * np.log10(PIXEL_MAX ** 2 / np.maximum(mse, 1e-300)))


def frame_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """float64 [T]: per-frame SSIM (skimage: 7x7 uniform window, colour channels averaged). With
    `mask` bool [T,H,W] the SSIM map is averaged over the masked pixels only (nan for empty frames)."""

    a, b = _check_pair(a, b)
    if mask is None:
        return np.array([structural_similarity(x, y, channel_axis=-1, data_range=PIXEL_MAX) for x, y in zip(a, b)])
    mask = np.asarray(mask, bool).reshape(a.shape[:3])
    out = []
    for x, y, m in zip(a, b, mask):
        _, smap = structural_similarity(x, y, channel_axis=-1, data_range=PIXEL_MAX, full=True)
        out.append(float(smap.mean(-1)[m].mean()) if m.any() else float("nan"))
    return np.array(out)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean per-frame SSIM of two uint8 videos [T,H,W,3], in [-1, 1] (1 = identical); `mask` as in
    frame_ssim (frames with an empty mask are skipped)."""
    vals = frame_ssim(a, b, mask)
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")


# ---------------------------------------------------------------------------- LPIPS
class _LPIPSAlex:
    """LPIPS (Zhang et al. 2018) with the AlexNet backbone, built from one local safetensors file.

    Expected keys: torchvision AlexNet's `features.{0,3,6,8,10}.{weight,bias}` and the LPIPS
    linear heads `lin{0..4}.model.1.weight` (the layout of the `lpips` package's alex.pth), merged
    into one file. Inputs are scaled to [-1, 1], shifted/scaled like the `lpips` package.
    """

    CONV_LAYERS = (0, 3, 6, 8, 10)       # indices in torchvision's alexnet.features
    POOL_BEFORE = (3, 6)                 # a 3x3/2 max-pool precedes these convs
    STRIDES = {0: 4}
    PADDINGS = {0: 2, 3: 2, 6: 1, 8: 1, 10: 1}
    SHIFT = (-0.030, -0.088, -0.188)     # LPIPS ScalingLayer constants
    SCALE = (0.458, 0.448, 0.450)

    def __init__(self, path: Path):
        self.torch = torch
        state = {k: v.float() for k, v in load_file(str(path)).items()}
        try:
            self.convs = [(state[f"features.{i}.weight"], state[f"features.{i}.bias"]) for i in self.CONV_LAYERS]
            self.lins = [state[f"lin{i}.model.1.weight"] for i in range(len(self.CONV_LAYERS))]
        except KeyError as err:
            raise ValueError(f"{path}: not an LPIPS-alex weights file (missing key {err})") from err

    def features(self, x):
        F = self.torch.nn.functional
        feats = []
        for layer, (w, b) in zip(self.CONV_LAYERS, self.convs):
            if layer in self.POOL_BEFORE:
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(F.conv2d(x, w, b, stride=self.STRIDES.get(layer, 1), padding=self.PADDINGS[layer]))
            feats.append(x)
        return feats

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        torch = self.torch
        shift = torch.tensor(self.SHIFT).view(1, 3, 1, 1)
        scale = torch.tensor(self.SCALE).view(1, 3, 1, 1)

        def prep(v):
            t = torch.from_numpy(v).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            return (t - shift) / scale

        with torch.no_grad():
            fa, fb = self.features(prep(a)), self.features(prep(b))
            total = 0.0
            for x, y, lin in zip(fa, fb, self.lins):
                x = x / (x.norm(dim=1, keepdim=True) + 1e-10)
                y = y / (y.norm(dim=1, keepdim=True) + 1e-10)
                # the LPIPS head is a 1x1 conv (channel weights), then a spatial mean
                total = total + torch.nn.functional.conv2d((x - y) ** 2, lin).mean(dim=(1, 2, 3))
        return total.numpy()


_LPIPS_CACHE: dict[str, _LPIPSAlex] = {}


def lpips(a: np.ndarray, b: np.ndarray, weights: str | Path | None = None) -> float | None:
    """Mean per-frame LPIPS (lower = more similar) when `weights` names a local LPIPS-alex
    safetensors file; None (with a message on stderr) otherwise. Never downloads anything."""

    if weights is None:
        print("lpips: skipped (no local LPIPS weights given; set eval.lpips_weights in the config)", file=sys.stderr)
        return None
    path = Path(weights)
    if not path.is_file():
        print(f"lpips: skipped (weights file not found: {path})", file=sys.stderr)
        return None
    a, b = _check_pair(a, b)
    key = str(path.resolve())
    if key not in _LPIPS_CACHE:
        _LPIPS_CACHE[key] = _LPIPSAlex(path)
    return float(_LPIPS_CACHE[key](a, b).mean())


# ------------------------------------------------------------------------------ EPE
def default_tracker(frames: np.ndarray, points: np.ndarray, fps: float) -> TrackSet:
    """The project's point tracker (motionstream.tracks.tracker.track_frames) from query points."""

    return track_frames(frames, points=points, fps=fps)


def track_errors(input_tracks: TrackSet, frames: np.ndarray,
                 tracker: Tracker | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(err float64 [T, N], valid bool [T, N]): per-point L2 distance in input-track pixels between
    the input tracks and the tracks re-extracted from `frames` [T,H,W,3] starting at the input's
    frame-0 positions. `valid` = visible and in-frame in the input, frames 1.. only (frame 0 is
    the query itself, its error is zero by construction). Frames of another size than the tracks'
    image are handled by scaling the query points in and the result back."""
    frames = as_video(frames)
    if frames.shape[0] != input_tracks.num_frames:
        raise ValueError(f"video has {frames.shape[0]} frames but the tracks have {input_tracks.num_frames}")
    h, w = frames.shape[1:3]
    in_px = input_tracks.scaled(w, h) if (w, h) != (input_tracks.width, input_tracks.height) else input_tracks
    out = (tracker or default_tracker)(frames, in_px.tracks[0].copy(), input_tracks.fps)
    if out.tracks.shape != in_px.tracks.shape:
        raise ValueError(f"tracker returned tracks {out.tracks.shape}, expected {in_px.tracks.shape}")
    back = np.array([input_tracks.width / w, input_tracks.height / h])
    err = np.linalg.norm((out.tracks.astype(np.float64) - in_px.tracks) * back, axis=-1)
    valid = input_tracks.conditioning_mask().copy()
    valid[0] = False
    return err, valid


def masked_mean(err: np.ndarray, mask: np.ndarray) -> float:
    """Mean of err[mask]; nan when the mask is empty."""
    return float(err[mask].mean()) if mask.any() else float("nan")


def epe(input_tracks: TrackSet, generated_frames: np.ndarray, tracker: Tracker | None = None,
        points_mask: np.ndarray | None = None) -> float:
    """End-point error in pixels of the input tracks' image (paper Sec. 4.2); nan when no point is
    visible after frame 0. See `track_errors` for the protocol. `points_mask` bool [T, N] further
    restricts the points (e.g. to `reliable_points`)."""
    err, valid = track_errors(input_tracks, generated_frames, tracker)
    return masked_mean(err, valid if points_mask is None else valid & points_mask)


def reliable_points(gt_frames: np.ndarray, gt_tracks: TrackSet, tracker: Tracker | None = None,
                    max_err_px: float = 1.0) -> np.ndarray:
    """bool [T, N]: where the tracker, run on the ground-truth video, stays within `max_err_px` of
    the true tracks (and the point is valid for EPE). EPE over these points has a floor below
    max_err_px, so it measures the generated video rather than the tracker's failures (flashes,
    repetitive textures, occluders). Only meaningful when the tracks are exact ([world] clips)."""
    err, valid = track_errors(gt_tracks, gt_frames, tracker)
    return valid & (err < max_err_px)


def tracker_noise_floor(gt_frames: np.ndarray, gt_tracks: TrackSet, tracker: Tracker | None = None) -> float:
    """EPE of the tracker on the ground-truth video itself: the lowest EPE any model can show."""
    return epe(gt_tracks, gt_frames, tracker)


def subsample_tracks(tracks: TrackSet, max_points: int | None, seed: int = 0) -> TrackSet:
    """At most `max_points` tracks, a fixed random subset (so repeated evaluations are comparable)."""
    if max_points is None or tracks.num_tracks <= max_points:
        return tracks
    idx = np.sort(np.random.default_rng(seed).choice(tracks.num_tracks, max_points, replace=False))
    return tracks.subset(idx)
