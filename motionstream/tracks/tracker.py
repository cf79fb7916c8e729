"""Point tracking with OpenCV pyramidal Lucas-Kanade and a forward-backward check.

Query points (default: a grid x grid grid on frame 0) are tracked frame to frame. After each
forward step (t -> t+1) the new points are tracked back (t+1 -> t); a point stays visible while LK
reports success, it lands within `fb_threshold` px of where it started, and the LK window still
matches (mean absolute grey-level residual below `max_residual`). The residual test catches what
the forward-backward test misses: a background point next to an occluder's edge is dragged along
by the edge consistently in both directions, but its window no longer matches. Loss is sticky: LK
cannot re-identify a point after an occlusion, so once lost a point stays invisible (its position
keeps following the LK estimate so that it stays finite and plausible).

Before LK, a grey frame whose brightness or contrast jumps against the previous one is by default
brought back to the previous frame's mean and std (`LKParams.normalize`, BrightnessNormalizer):
LK assumes constant brightness, and flashes otherwise move points or fail the residual test on
clips whose geometry is easy. Frames without such a jump pass unchanged.

One implementation serves both uses: `OnlineTracker` steps frame by frame (live motion transfer),
`track_frames` / `track_video` run it over a whole clip (offline extraction, EPE evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from motionstream.tracks.sources import grid_points
from motionstream.tracks.trackset import TrackError, TrackSet
from motionstream.video import read_video


@dataclass(frozen=True)
class LKParams:
    """Lucas-Kanade settings (cv2.calcOpticalFlowPyrLK)."""

    window: int = 15            # px, the LK integration window (odd)
    pyramid_levels: int = 3     # coarse-to-fine levels above full resolution: follows motion up to ~2^3 * window/2 px per frame
    max_iterations: int = 30
    epsilon: float = 0.01       # px, stop iterating when the update is smaller
    fb_threshold: float = 1.0   # px, forward-backward error above which a point is lost
    max_residual: float = 6.0   # grey levels (0-255), mean |window difference| above which a point is lost
    normalize: str = "meanstd"  # "meanstd": undo grey mean/std jumps between frames; "clahe"; "none"


NORMALIZE_CHOICES = ("meanstd", "clahe", "none")
CLAHE_CLIP_LIMIT = 2.0          # OpenCV's contrast limit per tile
CLAHE_TILES = 8                 # tiles per image side
MIN_GREY_STD = 1.0              # grey levels: a flat frame is shifted, not stretched (no division by ~0)
MEANSTD_MEAN_TOL = 2.0          # grey levels of mean change between frames left to LK (moving objects: < 1)
MEANSTD_STD_TOL = 0.05          # relative std change between frames left to LK (moving objects: < 0.03)


def _gray(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 2:
        return np.ascontiguousarray(frame, np.uint8)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise TrackError(f"frames must be uint8 [H, W, 3] RGB, got {frame.dtype} {frame.shape}")
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


class BrightnessNormalizer:
    """Photometric normalisation of consecutive grey frames uint8 [H, W] before LK (module docstring).

    "meanstd": when a frame's grey mean or std jumps against the previous LK frame (by more than
    MEANSTD_MEAN_TOL grey levels or MEANSTD_STD_TOL relative), the frame is mapped to the previous
    frame's mean and std: (frame - mean) / std * prev_std + prev_mean. Smaller changes (objects
    moving, slow fades) are left alone, because re-quantising a frame to uint8 costs LK accuracy.
    "clahe": OpenCV CLAHE on every frame. "none": identity.
    __call__(gray, prev) -> the frame LK should see; prev: the previous frame as LK saw it (None
    for the first frame)."""

    def __init__(self, mode: str):
        if mode not in NORMALIZE_CHOICES:
            raise TrackError(f"normalize must be one of {NORMALIZE_CHOICES}, got {mode!r}")
        self.mode = mode
        self._clahe = None

    def __call__(self, gray: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
        if self.mode == "clahe":
            if self._clahe is None:
                self._clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=(CLAHE_TILES, CLAHE_TILES))
            return self._clahe.apply(gray)
        if self.mode == "none" or prev is None:
            return gray
        mean, std = (float(v[0, 0]) for v in cv2.meanStdDev(gray))
        ref_mean, ref_std = (float(v[0, 0]) for v in cv2.meanStdDev(prev))
        std, ref_std = max(std, MIN_GREY_STD), max(ref_std, MIN_GREY_STD)
        if abs(mean - ref_mean) <= MEANSTD_MEAN_TOL and abs(std / ref_std - 1) <= MEANSTD_STD_TOL:
            return gray
        out = (gray.astype(np.float32) - mean) * (ref_std / std) + ref_mean
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class OnlineTracker:
    """Track fixed query points frame by frame.

    first_frame: uint8 [H, W, 3] RGB; points: float [N, 2] pixel (x, y) in it (None: grid x grid grid).
    step(frame) -> (xy float32 [N, 2], visible bool [N]) for each following frame."""

    def __init__(self, first_frame: np.ndarray, points: np.ndarray | None = None, grid: int = 50,
                 params: LKParams = LKParams()):
        self._cv2 = cv2
        self.params = params
        self._normalize = BrightnessNormalizer(params.normalize)
        gray = self._normalize(_gray(first_frame), None)
        self.height, self.width = gray.shape
        if points is None:
            points = grid_points(0, 0, self.width, self.height, rows=grid, cols=grid)
        points = np.asarray(points, np.float32)
        if points.ndim != 2 or points.shape[1] != 2 or not np.isfinite(points).all():
            raise TrackError(f"query points must be finite [N, 2], got shape {points.shape}")
        self.xy = points.copy()
        inside = (points[:, 0] >= 0) & (points[:, 0] < self.width) & (points[:, 1] >= 0) & (points[:, 1] < self.height)
        self.visible = inside  # query points outside the first frame never become visible
        self._prev = gray
        self._lk = dict(winSize=(params.window, params.window), maxLevel=params.pyramid_levels,
                        criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, params.max_iterations, params.epsilon))

    def step(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gray = _gray(frame)
        if gray.shape != (self.height, self.width):
            raise TrackError(f"frame size {gray.shape[::-1]} differs from the first frame's {(self.width, self.height)}")
        gray = self._normalize(gray, self._prev)
        # (OpenCV's Python binding cannot take prebuilt pyramids, so each LK call builds its own)
        if len(self.xy):
            prev = self.xy.reshape(-1, 1, 2)
            fwd, st_f, residual = self._cv2.calcOpticalFlowPyrLK(self._prev, gray, prev, None, **self._lk)
            back, st_b, _ = self._cv2.calcOpticalFlowPyrLK(gray, self._prev, fwd, None, **self._lk)
            fwd, back = fwd.reshape(-1, 2), back.reshape(-1, 2)
            fb_error = np.linalg.norm(back - self.xy, axis=1)
            ok = (st_f.ravel() == 1) & (st_b.ravel() == 1) & np.isfinite(fwd).all(1)
            inside = (fwd[:, 0] >= 0) & (fwd[:, 0] < self.width) & (fwd[:, 1] >= 0) & (fwd[:, 1] < self.height)
            matches = residual.ravel() < self.params.max_residual
            self.visible = self.visible & ok & inside & matches & (fb_error < self.params.fb_threshold)
            # failed LK steps hold the last position; successful ones follow LK even for lost points
            self.xy = np.where(ok[:, None], fwd, self.xy).astype(np.float32)
        self._prev = gray
        return self.xy.copy(), self.visible.copy()


def track_frames(frames: np.ndarray, points: np.ndarray | None = None, grid: int = 50, fps: float = 16.0,
                 fb_threshold: float = LKParams.fb_threshold, normalize: str = LKParams.normalize,
                 progress: bool = False) -> TrackSet:
    """Track query points through frames uint8 [T, H, W, 3] RGB.

    points: float [N, 2] pixel (x, y) on frame 0, or None for a grid x grid grid over frame 0.
    Returns TrackSet [T, N] (role "transfer") in the frames' pixel coordinates; frame 0 holds the
    query points themselves. normalize: photometric normalisation before LK (see LKParams)."""

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise TrackError(f"frames must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {frames.shape}")
    tracker = OnlineTracker(frames[0], points, grid, LKParams(fb_threshold=fb_threshold, normalize=normalize))
    tracks = np.zeros((len(frames), len(tracker.xy), 2), np.float32)
    visibility = np.zeros((len(frames), len(tracker.xy)), bool)
    tracks[0], visibility[0] = tracker.xy, tracker.visible
    for t in tqdm(range(1, len(frames)), desc="tracking", unit="frame", disable=not progress, leave=False):
        tracks[t], visibility[t] = tracker.step(frames[t])
    height, width = frames.shape[1:3]
    return TrackSet(tracks=tracks, visibility=visibility, width=width, height=height, fps=fps,
                    role=["transfer"] * tracks.shape[1])


def track_video(path: str | Path, grid: int = 50, fps: float = 16.0, size: tuple[int, int] | None = None,
                max_frames: int | None = None, progress: bool = False) -> tuple[TrackSet, np.ndarray]:
    """Decode a video (resampled to `fps`, resized + centre-cropped to size=(width, height) when
    given, at most max_frames) and track a grid x grid grid from its first frame.
    Returns (TrackSet, frames uint8 [T, H, W, 3])."""

    frames, fps = read_video(path, fps=fps, size=size, max_frames=max_frames)
    return track_frames(frames, grid=grid, fps=fps, progress=progress), frames
