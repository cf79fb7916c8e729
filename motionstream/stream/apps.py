"""The applications of paper Fig. 7 on top of one streaming loop: generate, transfer, camera, edit.

Each application turns its inputs into a *motion source* (something that pushes tracks into the
engine before every chunk) and calls `run_stream`, which writes frames to an mp4 as chunks come out
(decode of chunk i overlapping generation of chunk i+1), for any number of frames: the student's
cost per chunk is constant, so 2,000 frames take 2,000 / 33 times as long as 33.

    generate   image + prompt + track file (any format tracks.io reads): the file's tracks, then
               no tracks (unspecified) after its last frame
    transfer   image + driving video: an OnlineTracker follows a fixed random subset of a grid on the
               driving video chunk by chunk (live transfer); beyond the video's end it plays
               back and forth so the motion continues
    camera     image + depth map + a named camera path (orbit, dolly, pan, truck): camera_tracks
    edit       image + drags (x0,y0 -> x1,y1): the grabbed content moves along the drags over the
               clip while a static grid pins the rest; the last frame is the edited image

`--model teacher` (or a teacher folder) runs the offline bidirectional teacher instead: Euler with
joint guidance (Eq. 2) over segments of `teacher_frames`, each segment starting from the previous
segment's last frame (so it also reaches any length, at 1 + 4n frames per segment).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
from tqdm import tqdm

from motionstream.config import section
from motionstream.diffusion.flow import DiffusionConfig
from motionstream.diffusion.generate import generate_teacher
from motionstream.stream.controls import MotionControls
from motionstream.stream.engine import StreamingGenerator
from motionstream.tracks.draw import draw_tracks, track_colors
from motionstream.tracks.embed import TracksConfig, random_ids, track_counts, with_ids
from motionstream.tracks.sources import grid_points, keyframe_path, static_grid
from motionstream.tracks.tracker import OnlineTracker
from motionstream.tracks.trackset import TrackSet
from motionstream.video import VideoWriter

TEACHER_SEGMENT_FRAMES = 33       # 1 + 4 * 8: the teacher's training clip length (train_teacher.latent_frames = 9)
EDIT_PIN_SPACING_PX = 16.0        # static grid that keeps the non-dragged image still while editing
EDIT_PIN_CLEARANCE_PX = 32.0      # no pins this close to a drag's path (they would fight the drag)
EDIT_MOVE_FRACTION = 0.75         # drags reach their end at this fraction of the clip, then hold


class MotionSource(Protocol):
    """Pushes the tracks of stream frames [start, start + count) into a MotionControls (or does nothing)."""

    def __call__(self, controls: Any, start: int, count: int) -> None: ...


# ------------------------------------------------------------------------------- sources
@dataclass
class TrackFileSource:
    """A whole TrackSet (pixels of the stream's image, stream fps), pushed once at stream frame 0."""
    tracks: TrackSet
    pushed: bool = False

    def __call__(self, controls, start: int, count: int) -> None:
        if not self.pushed:
            controls.push_tracks(self.tracks, start_frame=0)
            self.pushed = True


class TrackerSource:
    """Live motion transfer: track fixed query points through a driving video, chunk by chunk.

    frames: uint8 [T, H, W, 3] driving frames at the stream's size and fps. Beyond T the video is
    played back and forth (frame T-2, T-3, ..., 0, 1, ...) so the tracker keeps producing motion."""

    def __init__(self, frames: np.ndarray, points: np.ndarray, fps: float, ids: np.ndarray):
        self.frames, self.fps, self.ids = frames, fps, ids
        self.tracker = OnlineTracker(frames[0], points)
        self.first = (self.tracker.xy.copy(), self.tracker.visible.copy())
        self.next = 0

    def frame_index(self, k: int) -> int:
        """Ping-pong index into the driving video for stream frame k."""
        n = len(self.frames)
        if n == 1:
            return 0
        period = 2 * (n - 1)
        k %= period
        return k if k < n else period - k

    def __call__(self, controls, start: int, count: int) -> None:
        h, w = self.frames.shape[1:3]
        xy = np.zeros((count, len(self.ids), 2), np.float32)
        vis = np.zeros((count, len(self.ids)), bool)
        for j, k in enumerate(range(start, start + count)):
            if k == 0:
                xy[j], vis[j] = self.first
            else:
                xy[j], vis[j] = self.tracker.step(self.frames[self.frame_index(k)])
        controls.push_tracks(TrackSet(xy, vis, w, h, self.fps, self.ids, ["transfer"] * len(self.ids)),
                             start_frame=start)


# --------------------------------------------------------------------------- the loop
def run_stream(gen: Any, image: np.ndarray, prompt: str, source: MotionSource | None, num_frames: int,
               out_path: str | Path, progress: bool = True,
               overlay: Callable[[np.ndarray, int], np.ndarray] | None = None) -> dict[str, Any]:
    """Stream `num_frames` frames from `gen` (a StreamingGenerator) into an mp4.

    Before each chunk the source pushes that chunk's tracks; the chunk is generated, its decode is
    handed to the worker and the previous chunk's frames are written meanwhile. overlay(frames,
    first_frame_index) may draw on the frames before they are written (the returned last frame is
    the model's, undrawn). Returns a summary (frames, chunks, seconds, fps, last frame)."""

    gen.start(image, prompt)
    written, chunks = 0, 0
    last = image
    t0 = time.perf_counter()
    pending = []
    with VideoWriter(out_path, gen.fps) as writer, tqdm(total=num_frames, unit="frame", desc="streaming",
                                                         disable=not progress) as bar:
        def drain(keep: int) -> None:
            nonlocal written, last
            while len(pending) > keep:
                frames = pending.pop(0).result()[:max(num_frames - written, 0)]
                if len(frames):
                    writer.write(frames if overlay is None else overlay(frames, written))
                    last = frames[-1]
                    written += len(frames)
                    bar.update(len(frames))

        generated = 0
        while generated < num_frames:
            count = gen.chunk_num_frames()
            if source is not None:
                source(gen.controls, gen.next_frame, count)
            pending.append(gen.next_chunk_async())
            generated += count
            chunks += 1
            drain(keep=1)
        drain(keep=0)
    gen.close()
    seconds = time.perf_counter() - t0
    return {"frames": written, "chunks": chunks, "seconds": seconds, "fps": written / max(seconds, 1e-9),
            "last_frame": last, "path": Path(out_path)}


def run_app(stack: Any, image: np.ndarray, prompt: str, source: MotionSource | None, num_frames: int,
            out_path: str | Path, steps: int | None = None, progress: bool = True,
            overlay: Callable[[np.ndarray, int], np.ndarray] | None = None) -> dict[str, Any]:
    """Write `num_frames` frames of `image` (uint8 [H, W, 3] at stack.size) moving with `source` to
    `out_path`, with a loaded stream.stack.StreamStack: streamed by a student (run_stream), sampled
    offline by a teacher (run_teacher, the source's tracks gathered first; `steps` Euler steps,
    None = the diffusion section's sample_steps). Returns run_stream's / run_teacher's result."""
    if not stack.is_teacher:
        gen = StreamingGenerator(stack.model, stack.codec, stack.text_encoder, stack.stream_cfg, stack.param,
                                 fps=stack.fps)
        return run_stream(gen, image, prompt, source, num_frames, out_path, progress=progress, overlay=overlay)

    tracks = None
    if source is not None:
        controls = MotionControls(stack.width, stack.height, stack.fps, seed=stack.stream_cfg.seed)
        source(controls, 0, num_frames)
        tracks = controls.chunk_tracks(0, num_frames).tracks
    # the diffusion settings the teacher was trained with (its folder's), else the preset's
    dcfg = section({"diffusion": stack.meta.get("diffusion") or stack.cfg.get("diffusion")}, "diffusion",
                   DiffusionConfig)
    return run_teacher(stack.model, stack.param, stack.codec, stack.text_encoder, image, prompt, tracks, num_frames,
                       out_path, dcfg, steps or dcfg.sample_steps, stack.fps, seed=stack.stream_cfg.seed,
                       progress=progress)


def run_teacher(model: Any, param: Any, codec: Any, text_encoder: Any, image: np.ndarray, prompt: str,
                tracks: TrackSet | None, num_frames: int, out_path: str | Path, dcfg: Any, steps: int,
                fps: float, segment_frames: int = TEACHER_SEGMENT_FRAMES, seed: int = 0, progress: bool = True
                ) -> dict[str, Any]:
    """The offline teacher (generate.generate_teacher) over consecutive segments of segment_frames
    frames, each starting from the previous segment's last frame (see module docstring).
    tracks: the whole clip's tracks in stream pixels and fps (None = no motion)."""

    tf = model.cfg.temporal_factor
    if (segment_frames - 1) % tf:
        raise ValueError(f"teacher segments must have 1 + {tf}n frames, got {segment_frames}")
    h, w = image.shape[:2]
    written = 0
    t0 = time.perf_counter()
    current = image
    with VideoWriter(out_path, fps) as writer, tqdm(total=num_frames, unit="frame", desc="teacher",
                                                     disable=not progress) as bar:
        while written < num_frames:
            # this segment covers stream frames [start, start + segment_frames); its frame 0 is `current`
            start = max(written - 1, 0)
            seg = _segment_tracks(tracks, start, segment_frames, w, h, fps)
            frames = generate_teacher(model, param, dcfg, codec, text_encoder, current, prompt, seg, segment_frames,
                                      steps, dcfg.text_scale, dcfg.motion_scale, seed=seed + start, progress=False)
            new = frames if written == 0 else frames[1:]          # frame 0 repeats the previous segment's last
            new = new[:num_frames - written]
            writer.write(new)
            written += len(new)
            bar.update(len(new))
            current = frames[-1]
    seconds = time.perf_counter() - t0
    return {"frames": written, "seconds": seconds, "fps": written / max(seconds, 1e-9), "last_frame": current,
            "path": Path(out_path)}


def _segment_tracks(tracks: TrackSet | None, start: int, count: int, width: int, height: int, fps: float) -> TrackSet:
    """Frames [start, start + count) of `tracks`, padded with invisible frames past its end."""
    if tracks is None:
        return TrackSet(np.zeros((count, 0, 2), np.float32), np.zeros((count, 0), bool), width, height, fps,
                        np.zeros(0, np.int64))
    xy = np.zeros((count, tracks.num_tracks, 2), np.float32)
    vis = np.zeros((count, tracks.num_tracks), bool)
    avail = max(min(tracks.num_frames - start, count), 0)
    xy[:avail] = tracks.tracks[start:start + avail]
    vis[:avail] = tracks.visibility[start:start + avail]
    if avail < count and avail > 0:
        xy[avail:] = xy[avail - 1]   # positions stay finite; invisible = unspecified
    return TrackSet(xy, vis, width, height, tracks.fps, tracks.ids, tracks.role)


# ------------------------------------------------------------------------ app helpers
def conditioning_subset(ts: TrackSet, latent_cells: int, seed: int = 0, tracks_cfg: Any = None,
                        keep_all: bool = False) -> TrackSet:
    """A fixed random subset with the paper's track count scaled to this latent grid (App. D, as the
    teacher was trained: tracks.embed.track_counts), with IDs in the trained range (keep_all: no thinning)."""

    tc = tracks_cfg or TracksConfig()
    _, hi = track_counts(latent_cells, tc.min_tracks, tc.max_tracks)
    rng = np.random.default_rng(seed)
    if ts.num_tracks > hi and not keep_all:
        ts = ts.subset(np.sort(rng.choice(ts.num_tracks, hi, replace=False)))
    return with_ids(ts, rng, tc.id_range)


def transfer_source(video_frames: np.ndarray, fps: float, latent_cells: int, grid: int, seed: int = 0,
                    tracks_cfg: Any = None) -> TrackerSource:
    """TrackerSource over a random subset (conditioning_subset) of a grid x grid grid on the first frame."""

    tc = tracks_cfg or TracksConfig()
    h, w = video_frames.shape[1:3]
    points = grid_points(0, 0, w, h, rows=grid, cols=grid)
    _, hi = track_counts(latent_cells, tc.min_tracks, tc.max_tracks)
    rng = np.random.default_rng(seed)
    if len(points) > hi:
        points = points[np.sort(rng.choice(len(points), hi, replace=False))]
    return TrackerSource(video_frames, points, fps, random_ids(len(points), rng, tc.id_range))


def track_overlay(ts: TrackSet, tail: int = 8) -> Callable[[np.ndarray, int], np.ndarray]:
    """run_stream overlay drawing `ts` (stream frames) on each written piece, trails continuing across pieces."""

    colors = track_colors(ts)

    def overlay(frames: np.ndarray, first: int) -> np.ndarray:
        lo = max(first - tail, 0)
        hi = min(first + len(frames), ts.num_frames)
        if hi <= first:
            return frames                                  # past the tracks' end: nothing to draw
        pad = np.zeros((first - lo, *frames.shape[1:]), np.uint8)   # the trail's past frames, dropped after
        drawn = draw_tracks(np.concatenate([pad, frames[:hi - first]]), ts.frames(lo, hi), tail, colors=colors)
        return np.concatenate([drawn[first - lo:], frames[hi - first:]])
    return overlay


def edit_tracks(drags: list[tuple[float, float, float, float]], num_frames: int, width: int, height: int,
                fps: float, radius: float, pins: bool = True) -> TrackSet:
    """Drag-editing motion: a patch around each drag start moves to its end by EDIT_MOVE_FRACTION of
    the clip and stays; with `pins`, a static grid away from the drags holds everything else."""

    t_end = (num_frames - 1) / fps * EDIT_MOVE_FRACTION
    sets = [keyframe_path([(0.0, x0, y0), (t_end, x1, y1)], num_frames, width, height, fps, patch_radius=radius)
            for x0, y0, x1, y1 in drags]
    if pins:
        pts = grid_points(0, 0, width, height, spacing=EDIT_PIN_SPACING_PX)
        far = np.ones(len(pts), bool)
        for x0, y0, x1, y1 in drags:
            far &= _distance_to_segment(pts, (x0, y0), (x1, y1)) > radius + EDIT_PIN_CLEARANCE_PX
        if far.any():
            sets.append(static_grid(pts[far], num_frames, width, height, fps))
    return TrackSet.concat(sets)


def _distance_to_segment(p: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    a_, b_ = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = b_ - a_
    s = np.clip(((p - a_) @ d) / max(float(d @ d), 1e-12), 0, 1)
    return np.linalg.norm(p - (a_ + s[:, None] * d), axis=1)
