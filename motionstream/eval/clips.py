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

import cv2
import numpy as np

from motionstream.config import REPO_ROOT, video_config
from motionstream.eval.availability import NotAvailable, require_module
from motionstream.tracks.trackset import TrackSet
from motionstream.video import read_video


@dataclass
class EvalClip:
    """A ground-truth clip with tracks (the fields of data.synth.Clip that evaluation reads)."""

    name: str
    frames: np.ndarray
    tracks: TrackSet
    caption: str = ""
    effects: list[str] = field(default_factory=list)
    moving_mask: np.ndarray | None = None


def world_test_clips(n: int, cfg: dict[str, Any], eval_cfg) -> list[EvalClip]:
    """The first `n` clips of the [world] test split, rendered at the config's video format."""

    synth = require_module("motionstream.data.synth", "[world] renderer")
    splits = require_module("motionstream.data.splits", "[world] splits")
    vcfg = video_config(cfg)
    width, height, fps = vcfg.width, vcfg.height, vcfg.fps
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

    per_video = []
    for p in media_paths(media_dir):
        frames, _ = read_video(p, fps=fps, size=size)
        starts = range(0, len(frames) - num_frames + 1, num_frames)
        per_video.append([(f"{p.stem}@{s}", frames[s:s + num_frames]) for s in starts])
    out: list[tuple[str, np.ndarray]] = []
    for depth in range(max((len(v) for v in per_video), default=0)):
        out += [v[depth] for v in per_video if depth < len(v)]
    return out[:n]


def tracked_media(segmenter, n: int, cfg: dict[str, Any], eval_cfg) -> list[EvalClip]:
    """`segmenter(n, media_dir, num_frames, fps, (width, height))` -> [(name, frames, ...)] as EvalClips
    with tracks from our tracker (eval_cfg.track_grid^2 grid on frame 0)."""

    tracker = require_module("motionstream.tracks.tracker", "point tracker")
    media_dir = (REPO_ROOT / eval_cfg.media_dir).resolve()
    if not media_dir.is_dir():
        raise NotAvailable(f"sample media folder {media_dir} not found")
    vcfg = video_config(cfg)
    width, height, fps = vcfg.width, vcfg.height, vcfg.fps
    clips = []
    for name, frames, *_ in segmenter(n, media_dir, eval_cfg.num_frames, fps, (width, height)):
        tracks = tracker.track_frames(frames, None, grid=eval_cfg.track_grid, fps=fps)
        clips.append(EvalClip(name, frames, tracks, caption="", effects=[], moving_mask=None))
    return clips


def media_clips(n: int, cfg: dict[str, Any], eval_cfg) -> list[EvalClip]:
    """Segments of the real videos (media_segments) with tracks from our tracker."""
    return tracked_media(media_segments, n, cfg, eval_cfg)


FAST_SPEEDS = (1, 2)          # playback speeds of the hard real set (2 = every other frame: twice the motion)
FAST_STRIDE = 4               # frames between candidate segment starts
FAST_MIN_GAP = 12             # kept segments of one video and speed start at least this far apart
MOTION_SIZE = (128, 72)       # frames are downscaled to this for the motion score


def motion_score(frames: np.ndarray) -> float:
    """Mean optical-flow magnitude (px per frame at the frames' size) of consecutive frames, from
    OpenCV's DIS flow on grey frames resized to MOTION_SIZE (DIS keeps large displacements that
    Farneback underestimates: 7.5 vs 3.2 px for 8 px/frame on a fine texture)."""

    scale = frames.shape[2] / MOTION_SIZE[0]
    grey = [cv2.cvtColor(cv2.resize(f, MOTION_SIZE, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY) for f in frames]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    mags = [np.linalg.norm(dis.calc(a, b, None), axis=-1).mean() for a, b in zip(grey[:-1], grey[1:])]
    return float(np.mean(mags) * scale)


def fast_segments(n: int, media_dir: Path, num_frames: int, fps: float, size: tuple[int, int]
                  ) -> list[tuple[str, np.ndarray, float]]:
    """The `n` fastest-moving [num_frames] segments of the media videos, played at each of FAST_SPEEDS
    (candidates every FAST_STRIDE frames, kept ones FAST_MIN_GAP apart per video and speed), at least
    one per video when n allows. Returns (name, frames uint8 [T,H,W,3], motion score px/frame),
    fastest first."""

    per_video = []
    for p in media_paths(media_dir):
        frames, _ = read_video(p, fps=fps, size=size)
        found = []
        for speed in FAST_SPEEDS:
            played = frames[::speed]
            for s in range(0, len(played) - num_frames + 1, FAST_STRIDE):
                seg = played[s:s + num_frames]
                found.append((f"{p.stem}@{s}x{speed}", seg, motion_score(seg), speed, s))
        found.sort(key=lambda c: -c[2])
        kept: list[tuple] = []
        for cand in found:
            if all(k[3] != cand[3] or abs(k[4] - cand[4]) >= FAST_MIN_GAP for k in kept):
                kept.append(cand)
        per_video.append([k[:3] for k in kept])
    firsts = [v[0] for v in per_video if v][:n]
    rest = sorted((c for v in per_video for c in v[1:]), key=lambda c: -c[2])
    return sorted(firsts + rest[:max(0, n - len(firsts))], key=lambda c: -c[2])


def fast_media_clips(n: int, cfg: dict[str, Any], eval_cfg) -> list[EvalClip]:
    """The hard real set: fast_segments with tracks from our tracker."""
    return tracked_media(fast_segments, n, cfg, eval_cfg)
