"""Real videos as training/eval clips: a folder of mp4 files -> Clips with tracker tracks.

    ds = VideoFolderDataset("../shared/media", num_frames=33, width=256, height=144)
    clip = ds[0]      # Clip: frames uint8 [T, H, W, 3], tracks (grid x grid from the tracker), caption

Each video is resampled to `fps`, resized to cover (width, height) and centre-cropped
(motionstream.video.read_video), then cut into consecutive non-overlapping windows of num_frames
frames; each window is one clip, tracked from a grid on its own first frame with
motionstream.tracks.tracker.track_frames. Tracks are cached as one .npz per video beside it
(`NAME.tracks-256x144-16fps-33f-g50.npz`), or under `cache_dir` when given or when the video's
folder is read-only, and rebuilt when the video file changes (size / mtime).
Captions come from a `NAME.txt` sidecar, else from the file name ("big_buck-bunny" ->
"big buck bunny"). Real clips have no exact motion mask: `moving_mask` is estimated from the
tracks (cells of points moving unlike the median, i.e. the camera) and `effects` is empty.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from motionstream.config import REPO_ROOT
from motionstream.data.synth import Clip
from motionstream.errors import VideoFolderError  # noqa: F401 (re-exported)
from motionstream.tracks.tracker import track_frames
from motionstream.tracks.trackset import TrackSet
from motionstream.video import read_video

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
DEFAULT_CACHE = REPO_ROOT / "cache" / "real"
MOVING_THRESHOLD_PX = 0.5  # estimated mask: per-frame motion unlike the median that counts as moving


@dataclass
class _Video:
    path: Path
    cache: Path
    caption: str
    tracks: np.ndarray       # float32 [K, T, N, 2] for the K windows
    visibility: np.ndarray   # bool [K, T, N]


def caption_for(path: Path) -> str:
    """Text of the `.txt` sidecar, else the file stem with _ and - turned into spaces."""
    side = path.with_suffix(".txt")
    if side.is_file():
        text = " ".join(side.read_text().split())
        if text:
            return text
    return " ".join(path.stem.replace("_", " ").replace("-", " ").split())


def estimate_moving_mask(tracks: TrackSet, grid: int) -> np.ndarray:
    """bool [T, H, W]: cells (W/grid x H/grid px) around visible points whose frame-to-frame motion
    differs from the median motion of all visible points (the camera) by > MOVING_THRESHOLD_PX."""
    t, n = tracks.visibility.shape
    h, w = tracks.height, tracks.width
    mask = np.zeros((t, h, w), bool)
    cw, ch = max(1, int(np.ceil(w / grid))), max(1, int(np.ceil(h / grid)))
    for i in range(t):
        j = i + 1 if i + 1 < t else i - 1  # motion to the next frame (last frame: from the previous)
        if j < 0:
            break
        ok = tracks.visibility[i] & tracks.visibility[j]
        if not ok.any():
            continue
        d = tracks.tracks[j] - tracks.tracks[i]
        med = np.median(d[ok], axis=0)
        moving = ok & (np.linalg.norm(d - med, axis=1) > MOVING_THRESHOLD_PX)
        for x, y in tracks.tracks[i, moving]:
            x0, y0 = int(x) - cw // 2, int(y) - ch // 2
            mask[i, max(0, y0):max(0, y0 + ch), max(0, x0):max(0, x0 + cw)] = True
    return mask


class VideoFolderDataset:
    """Map-style dataset (len / getitem, usable by torch DataLoader) of real-video Clips.

    folder      directory of video files (mp4, mov, mkv, webm, avi), non-recursive, sorted by name
    num_frames  frames per clip; videos shorter than that are skipped
    cache_dir   where the track caches go (default: beside each video, or cache/real/ when the
                video's folder is not writable)
    """

    def __init__(self, folder: str | Path, num_frames: int, width: int, height: int, fps: float = 16,
                 grid: int = 50, cache_dir: str | Path | None = None, progress: bool = False):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise VideoFolderError(f"video folder not found: {self.folder}")
        self.num_frames, self.width, self.height, self.fps, self.grid = num_frames, width, height, float(fps), grid
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not paths:
            raise VideoFolderError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) in {self.folder}")
        self._frames_cache: tuple[int, np.ndarray] | None = None  # (video index, decoded frames) of the last video read
        self.videos = [v for v in (self._index(p, progress) for p in paths) if v is not None]
        self.items = [(vi, k) for vi, v in enumerate(self.videos) for k in range(len(v.tracks))]
        if not self.items:
            raise VideoFolderError(f"no video in {self.folder} has {num_frames} frames at {fps:g} fps")

    # ------------------------------------------------------------------------------ caching
    def _cache_path(self, path: Path) -> Path:
        name = f"{path.stem}.tracks-{self.width}x{self.height}-{self.fps:g}fps-{self.num_frames}f-g{self.grid}.npz"
        if self.cache_dir is not None:
            return self.cache_dir / name
        if os.access(path.parent, os.W_OK):
            return path.parent / name
        return DEFAULT_CACHE / name

    def _source_stamp(self, path: Path) -> str:
        st = path.stat()
        return json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns})

    def _frames(self, path: Path) -> np.ndarray:
        frames, _ = read_video(path, fps=self.fps, size=(self.width, self.height))
        return frames

    def _index(self, path: Path, progress: bool) -> _Video | None:
        """Load (or compute and store) the tracks of every window of one video."""

        cache = self._cache_path(path)
        stamp = self._source_stamp(path)
        if cache.is_file():
            with np.load(cache) as data:
                if str(data["source"]) == stamp:
                    return _Video(path, cache, caption_for(path), data["tracks"], data["visibility"])
        frames = self._frames(path)
        windows = len(frames) // self.num_frames
        if windows == 0:
            return None
        tracks, vis = [], []
        for k in range(windows):
            ts = track_frames(frames[k * self.num_frames:(k + 1) * self.num_frames], grid=self.grid,
                              fps=self.fps, progress=progress)
            tracks.append(ts.tracks)
            vis.append(ts.visibility)
        tracks_arr, vis_arr = np.stack(tracks).astype(np.float32), np.stack(vis)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, tracks=tracks_arr, visibility=vis_arr, source=np.array(stamp))
        os.replace(tmp, cache)
        return _Video(path, cache, caption_for(path), tracks_arr, vis_arr)

    # ------------------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Clip:
        vi, k = self.items[index]
        video = self.videos[vi]
        if self._frames_cache is None or self._frames_cache[0] != vi:
            self._frames_cache = (vi, self._frames(video.path))
        frames = self._frames_cache[1][k * self.num_frames:(k + 1) * self.num_frames]
        ts = TrackSet(tracks=np.array(video.tracks[k]), visibility=np.array(video.visibility[k]),
                      width=self.width, height=self.height, fps=self.fps, role=["transfer"] * video.tracks.shape[2])
        return Clip(frames=np.ascontiguousarray(frames), tracks=ts, caption=video.caption, effects=[],
                    moving_mask=estimate_moving_mask(ts, self.grid), seed=int(index))
