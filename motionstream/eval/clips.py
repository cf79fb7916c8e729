"""Evaluation clips: the [world] held-out set and segments of the real videos in ../shared/media.

Both give objects with the attributes the metrics use (the attribute names of
motionstream.data.synth.Clip): `frames` uint8 [T,H,W,3] (frame 0 = conditioning image), `tracks`
TrackSet, `caption` str, `effects` list[str], `moving_mask` bool [T,H,W] | None, `name` str.
Real clips have no moving mask and their tracks come from our tracker (grid on frame 0), so their
EPE floor is the tracker's own jitter on the real video.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from motionstream.config import REPO_ROOT
from motionstream.tracks.trackset import TrackSet


@dataclass
class EvalClip:
    """A ground-truth clip with tracks (the fields of data.synth.Clip that evaluation reads)."""

    name: str
    frames: np.ndarray
    tracks: TrackSet
    caption: str = ""
    effects: list[str] = field(default_factory=list)
    moving_mask: np.ndarray | None = None


def video_format(cfg: dict[str, Any]) -> tuple[int, int, float]:
    """(width, height, fps) of the model's native video, from the config's `video` section."""
    video = cfg["video"]
    return int(video["width"]), int(video["height"]), float(video["fps"])


def world_test_clips(n: int, cfg: dict[str, Any], eval_cfg) -> list[EvalClip]:
    """The first `n` clips of the [world] test split, rendered at the config's video format."""
    from motionstream.eval.benchmarks import require_module

    synth = require_module("motionstream.data.synth", "[world] renderer")
    splits = require_module("motionstream.data.splits", "[world] splits")
    width, height, fps = video_format(cfg)
    clips = []
    for seed in splits.split_seeds("test", n):
        c = synth.render_clip(int(seed), num_frames=eval_cfg.num_frames, width=width, height=height, fps=fps)
        clips.append(EvalClip(f"world-{int(seed)}", c.frames, c.tracks, c.caption, list(c.effects), c.moving_mask))
    return clips


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def media_paths(media_dir: Path) -> list[Path]:
    """The video files in `media_dir`, sorted (none when the folder is missing)."""
    return sorted(p for p in media_dir.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES) if media_dir.is_dir() else []


def media_segments(n: int, media_dir: Path, num_frames: int, fps: float, size: tuple[int, int]) -> list[tuple[str, np.ndarray]]:
    """Up to `n` non-overlapping [num_frames] segments, taken round-robin over the media videos so a
    small n still covers every video. Returns (name, frames uint8 [T,H,W,3])."""
    from motionstream.video import read_video

    per_video = []
    for p in media_paths(media_dir):
        frames, _ = read_video(p, fps=fps, size=size)
        starts = range(0, len(frames) - num_frames + 1, num_frames)
        per_video.append([(f"{p.stem}@{s}", frames[s:s + num_frames]) for s in starts])
    out: list[tuple[str, np.ndarray]] = []
    for depth in range(max((len(v) for v in per_video), default=0)):
        out += [v[depth] for v in per_video if depth < len(v)]
    return out[:n]


def media_clips(n: int, cfg: dict[str, Any], eval_cfg) -> list[EvalClip]:
    """Segments of the real videos with tracks from our tracker (eval_cfg.track_grid^2 grid)."""
    from motionstream.eval.benchmarks import NotAvailable, require_module

    tracker = require_module("motionstream.tracks.tracker", "point tracker")
    media_dir = (REPO_ROOT / eval_cfg.media_dir).resolve()
    if not media_dir.is_dir():
        raise NotAvailable(f"sample media folder {media_dir} not found")
    width, height, fps = video_format(cfg)
    clips = []
    for name, frames in media_segments(n, media_dir, eval_cfg.num_frames, fps, (width, height)):
        tracks = tracker.track_frames(frames, None, grid=eval_cfg.track_grid, fps=fps)
        clips.append(EvalClip(name, frames, tracks, caption="", effects=[], moving_mask=None))
    return clips
