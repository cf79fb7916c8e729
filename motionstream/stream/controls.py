"""Live motion input for the streaming engine: pushed tracks, pointer drags, pins, drawn paths.

Everything that moves the stream goes through `MotionControls`, which turns whatever has arrived
so far into the tracks of the frames of the next chunk (`chunk_tracks`). Times are seconds of the
stream clock: stream frame k is at k / fps (pausing the engine stops this clock; a UI that reads a
wall clock subtracts its paused time).

Sources (any number at once, each keeps its own stable track IDs):
    push_tracks(ts, start_frame)   a TrackSet whose frame 0 is stream frame `start_frame` (a track
                                   file, a tracker running on a driving video, a camera path)
    pointer_down / move / up       a live drag: a patch of points around the grab point follows
                                   pointer samples (t_seconds, x, y) that arrive at any time;
                                   several drags may be active at once (one `drag_id` each)
    add_pins(points)               points pinned in place ("keep this still") until clear_pins()
    add_path(keyframes)            a pre-drawn path (t_seconds, x, y) keyframes, as sources.keyframe_path

Resampling onto frames: a drag's position at frame time t is the linear interpolation of its
samples; after the newest sample (the pointer has not reported yet, or rests) it holds the last
position; before its first sample and after pointer_up it is *unspecified*. Unspecified and
occluded points are invisible in the chunk's TrackSet, so their Eq. 1 features are zero: exactly
the "no tracks" input the paper's stochastic mid-frame masking trains for (Sec. 3.1), so a
released drag lets the model continue the scene instead of snapping content back. The video prior
(the first frame warped along the tracks) would snap it back, having no track there: for the prior
alone, a released drag holds its content where it was dropped (ChunkTracks.prior_visible).

Anchors (the Wan-Move guide's source, see models/conditioning.build_guide): each track carries the
pixel position in the *first frame* whose latent it pastes along its path. Pushed TrackSets that
start at stream frame 0 anchor at their frame-0 positions. Tracks that appear mid-stream anchor
where they first appear, except that a drag grabbed where an earlier drag (or path) left content
inherits that track's anchor, so "grab it again and keep moving" pastes the same content.
Memory is bounded: samples and pushed frames older than the consumed frame are dropped.
Thread-safe: a UI thread may add input while the engine thread takes a chunk's tracks.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field

import numpy as np

from motionstream.tracks.embed import TracksConfig
from motionstream.tracks.sources import DRAG_PATCH_RADIUS, DRAG_SPACING, patch_points
from motionstream.tracks.trackset import TrackError, TrackSet

REGRAB_RADIUS_PX = DRAG_SPACING  # a new grab point this close to where a drag ended inherits its anchor


@dataclass
class ChunkTracks:
    """The motion of one chunk: tracks [T, N] on its video frames + where each track's content was at frame 0.

    tracks          TrackSet of the chunk's frames (frame 0 = stream frame `start_frame`), ids set
    anchors         float32 [N, 2] pixel (x, y) of each track's content in the first frame
    anchor_visible  bool [N]: False = no anchor (no guide for this track, its Eq. 1 ID still counts)
    prior_visible   bool [T, N] or None (= tracks.visibility): where the video prior warps along the
                    track; a released drag is invisible to the model but holds its content here
    """
    tracks: TrackSet
    anchors: np.ndarray
    anchor_visible: np.ndarray
    start_frame: int
    prior_visible: np.ndarray | None = None

    @property
    def prior_visibility(self) -> np.ndarray:
        """bool [T, N]: the tracks the video prior follows on each frame (anchored ones only)."""
        shown = self.tracks.visibility if self.prior_visible is None else self.prior_visible
        return shown & self.anchor_visible[None, :]

    @property
    def num_tracks(self) -> int:
        return self.tracks.num_tracks


@dataclass
class _Pushed:
    """A pushed TrackSet segment covering stream frames [start, start + T)."""
    ts: TrackSet
    start: int
    anchors: np.ndarray
    anchor_visible: np.ndarray

    @property
    def stop(self) -> int:
        return self.start + self.ts.num_frames


@dataclass
class _Drag:
    """A patch of points moved by pointer samples (t, x, y); released at `up_time` (None = still held)."""
    offsets: np.ndarray               # float32 [P, 2] patch offsets around the pointer
    ids: np.ndarray                   # int64 [P]
    anchors: np.ndarray               # float32 [P, 2]
    samples: list[tuple[float, float, float]] = field(default_factory=list)
    up_time: float | None = None
    role: str = "drag"
    # float64 [P]: stream time from which a later grab carries each point's content (inf = never); until
    # then a released point holds its content in the video prior where it was dropped
    handover: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.handover is None:
            self.handover = np.full(len(self.offsets), np.inf)


def _locked(method):
    """Run a MotionControls method under its lock (UI threads add input while the engine reads)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


class MotionControls:
    """Collects motion from every source and resamples it onto the frames of the next chunk."""

    def __init__(self, width: int, height: int, fps: float, seed: int = 0, id_range: int = TracksConfig.id_range):
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.id_range = id_range
        self._lock = threading.RLock()
        self._rng = np.random.default_rng(seed)
        self.reset()

    @_locked
    def reset(self) -> None:
        """Forget every source (a new stream)."""
        self._pushed: list[_Pushed] = []
        self._drags: dict[int, _Drag] = {}
        self._pins: list[tuple[np.ndarray, np.ndarray]] = []   # (points [P, 2], ids [P])
        self._next_drag = 0
        self.consumed_frames = 0   # frames before this were handed to the engine (samples there are history)

    # --------------------------------------------------------------- ids
    @_locked
    def new_ids(self, n: int) -> np.ndarray:
        """n random track IDs from [0, id_range) (the range the model was trained on), distinct from
        each other and from every ID a live source holds."""
        free = np.setdiff1d(np.arange(self.id_range, dtype=np.int64), self._live_ids())
        if n > len(free):
            raise TrackError(f"more than {self.id_range} live tracks: release drags or clear pins first")
        return self._rng.choice(free, size=n, replace=False).astype(np.int64)

    def _live_ids(self) -> np.ndarray:
        ids = [s.ts.ids for s in self._pushed] + [d.ids for d in self._drags.values()] + [i for _, i in self._pins]
        return np.concatenate(ids) if ids else np.zeros(0, np.int64)

    def time_of(self, frame: int) -> float:
        return frame / self.fps

    # ----------------------------------------------------------- sources
    @_locked
    def push_tracks(self, ts: TrackSet, start_frame: int | None = None) -> None:
        """Tracks for stream frames [start_frame, start_frame + T) (default: right after the consumed frames).

        ts must be in this stream's pixel size (use TrackSet.scaled) and frame rate (tracks.io.resample).
        Tracks keep ts.ids when given (so consecutive pushes of one source continue the same tracks);
        new random IDs otherwise."""
        if (ts.width, ts.height) != (self.width, self.height):
            raise TrackError(f"pushed tracks are for a {ts.width}x{ts.height} image, the stream is "
                             f"{self.width}x{self.height}; scale them with TrackSet.scaled")
        if abs(ts.fps - self.fps) > 1e-6:
            raise TrackError(f"pushed tracks are at {ts.fps} fps, the stream at {self.fps}; use tracks.io.resample")
        start = self.consumed_frames if start_frame is None else int(start_frame)
        if ts.ids is None:
            ts = TrackSet(ts.tracks, ts.visibility, ts.width, ts.height, ts.fps, self.new_ids(ts.num_tracks), ts.role)
        anchors, anchor_vis = self._anchor_of_ids(ts.ids)
        # new tracks anchor at their first visible position in this segment
        fresh = ~anchor_vis
        if fresh.any():
            first = np.argmax(ts.visibility, axis=0)            # first visible frame of each track
            seen = ts.visibility.any(axis=0)
            pos = ts.tracks[first, np.arange(ts.num_tracks)]
            anchors[fresh] = pos[fresh]
            anchor_vis[fresh] = seen[fresh]
        self._pushed.append(_Pushed(ts, start, anchors, anchor_vis))

    @_locked
    def pointer_down(self, t: float, x: float, y: float, radius: float = DRAG_PATCH_RADIUS,
                     spacing: float = DRAG_SPACING) -> int:
        """Grab at (x, y) at stream time t; returns the drag id for pointer_move / pointer_up."""
        offsets = patch_points((0.0, 0.0), radius, spacing)
        points = offsets + np.array([x, y], np.float32)
        anchors = points.copy()
        inherited, donors = self._inherit_anchors(points)
        ok = ~np.isnan(inherited[:, 0])
        anchors[ok] = inherited[ok]
        for key, taken in donors.items():
            # the points whose content the new grab carries stop holding it from t on (in the prior a
            # released point holds its content until then): otherwise the prior would show it twice
            donor = self._drags[key]
            donor.handover[taken] = np.minimum(donor.handover[taken], float(t))
        drag_id = self._next_drag
        self._next_drag += 1
        self._drags[drag_id] = _Drag(offsets.astype(np.float32), self.new_ids(len(offsets)), anchors.astype(np.float32),
                                     [(float(t), float(x), float(y))])
        return drag_id

    @_locked
    def pointer_move(self, drag_id: int, t: float, x: float, y: float) -> None:
        """A pointer sample of an active drag (samples may arrive late or out of order)."""
        drag = self._drag(drag_id)
        drag.samples.append((float(t), float(x), float(y)))

    @_locked
    def pointer_up(self, drag_id: int, t: float) -> None:
        """Release: from time t on, this drag's points are unspecified (zero track features)."""
        self._drag(drag_id).up_time = float(t)

    @_locked
    def release_all(self, t: float) -> None:
        for drag in self._drags.values():
            if drag.up_time is None:
                drag.up_time = float(t)

    @_locked
    def add_pins(self, points: np.ndarray) -> None:
        """Pin points [P, 2] in place from now on (static grid: 'keep this still')."""
        points = np.asarray(points, np.float32).reshape(-1, 2)
        self._pins.append((points, self.new_ids(len(points))))

    @_locked
    def clear_pins(self) -> None:
        self._pins.clear()

    @_locked
    def add_path(self, keyframes: list[tuple[float, float, float]], radius: float = 0.0,
                 spacing: float = DRAG_SPACING) -> int:
        """A pre-drawn path: the content at the first keyframe follows the (t, x, y) keyframes, then is released."""
        keyframes = sorted((float(t), float(x), float(y)) for t, x, y in keyframes)
        if not keyframes:
            raise TrackError("a path needs at least one keyframe (t_seconds, x, y)")
        drag_id = self.pointer_down(*keyframes[0], radius=radius, spacing=spacing)
        drag = self._drags[drag_id]
        drag.samples.extend(keyframes[1:])
        drag.up_time = keyframes[-1][0] + 0.5 / self.fps   # the last keyframe's frame still holds it
        drag.role = "path"
        return drag_id

    @property
    def active_drags(self) -> list[int]:
        with self._lock:
            return [k for k, d in self._drags.items() if d.up_time is None]

    # ---------------------------------------------------------- resample
    @_locked
    def chunk_tracks(self, start_frame: int, num_frames: int, consume: bool = True) -> ChunkTracks:
        """Tracks of stream frames [start_frame, start_frame + num_frames) from every source.

        Marks those frames consumed (older samples and segments are dropped), unless `consume` is False
        (a look ahead that changes nothing)."""
        stop = start_frame + num_frames
        times = np.arange(start_frame, stop) / self.fps
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray]] = []
        segments = [seg for seg in self._pushed if max(seg.start, start_frame) < min(seg.stop, stop)]
        if segments:
            # segments of one source share IDs: one column per ID, each segment fills its own frames
            ids, first = np.unique(np.concatenate([seg.ts.ids for seg in segments]), return_index=True)
            ids = ids[np.argsort(first)]                    # keep the order of first appearance
            column = {int(i): k for k, i in enumerate(ids)}
            xy = np.zeros((num_frames, len(ids), 2), np.float32)
            vis = np.zeros((num_frames, len(ids)), bool)
            anchors = np.zeros((len(ids), 2), np.float32)
            anchor_vis = np.zeros(len(ids), bool)
            roles = ["transfer"] * len(ids)
            for seg in segments:
                lo, hi = max(seg.start, start_frame), min(seg.stop, stop)
                cols = np.array([column[int(i)] for i in seg.ts.ids], np.int64)
                xy[lo - start_frame:hi - start_frame, cols] = seg.ts.tracks[lo - seg.start:hi - seg.start]
                vis[lo - start_frame:hi - start_frame, cols] = seg.ts.visibility[lo - seg.start:hi - seg.start]
                anchors[cols], anchor_vis[cols] = seg.anchors, seg.anchor_visible
                for k, r in zip(cols, seg.ts.role or ["transfer"] * seg.ts.num_tracks):
                    roles[k] = r
            parts.append((xy, vis, ids.astype(np.int64), anchors, anchor_vis, roles, vis))
        for drag in self._drags.values():
            pointer, held = self._pointer_at(drag, times)
            xy = (pointer[:, None] + drag.offsets[None]).astype(np.float32)
            vis = np.repeat(held[:, None], len(drag.offsets), 1)
            # the prior keeps a released drag's content where it was dropped (the pointer path holds
            # there) until a later grab carries it on (drag.handover)
            released = np.zeros_like(held) if drag.up_time is None else times >= drag.up_time
            grabbed = vis | (released[:, None] & (times[:, None] < drag.handover[None, :]))
            parts.append((xy, vis, drag.ids, drag.anchors, np.ones(len(drag.ids), bool), [drag.role] * len(drag.ids),
                          grabbed))
        for points, ids in self._pins:
            xy = np.repeat(points[None], num_frames, 0)
            pinned = np.ones(xy.shape[:2], bool)
            parts.append((xy, pinned, ids, points, np.ones(len(ids), bool), ["static"] * len(ids), pinned))
        if consume:
            self._consume(stop)
        if not parts:
            empty = TrackSet(np.zeros((num_frames, 0, 2), np.float32), np.zeros((num_frames, 0), bool), self.width,
                             self.height, self.fps, np.zeros(0, np.int64), [])
            return ChunkTracks(empty, np.zeros((0, 2), np.float32), np.zeros(0, bool), start_frame)
        xy, vis, ids, anchors, anchor_vis, roles, prior_vis = zip(*parts)
        ts = TrackSet(np.concatenate(xy, 1), np.concatenate(vis, 1), self.width, self.height, self.fps,
                      np.concatenate(ids), sum(roles, []))
        return ChunkTracks(ts, np.concatenate(anchors).astype(np.float32), np.concatenate(anchor_vis), start_frame,
                           prior_visible=np.concatenate(prior_vis, 1))

    @_locked
    def reanchor(self, frame_xy: dict[int, np.ndarray] | None = None) -> None:
        """Dynamic sink refresh: from now on every live track's anchor is its latest position
        (the engine swaps the guide's source latent for a recent frame at the same time)."""
        for drag in self._drags.values():
            if drag.samples:
                t, x, y = max(drag.samples)
                drag.anchors = (drag.offsets + np.array([x, y], np.float32)).astype(np.float32)
        for seg in self._pushed:
            last = min(max(self.consumed_frames - 1 - seg.start, 0), seg.ts.num_frames - 1)
            seg.anchors = seg.ts.tracks[last].copy()
            seg.anchor_visible = seg.ts.visibility[last].copy()

    # ------------------------------------------------------------ helpers
    def _drag(self, drag_id: int) -> _Drag:
        if drag_id not in self._drags:
            raise TrackError(f"unknown drag id {drag_id} (active: {self.active_drags})")
        return self._drags[drag_id]

    def _pointer_at(self, drag: _Drag, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pointer xy [T, 2], held bool [T]) at frame times: interpolated, held after the newest sample."""
        samples = np.asarray(sorted(drag.samples), np.float64)
        # np.interp holds the end values outside the samples: before the grab (masked below) and after
        # the newest sample (the pointer rests where it last reported)
        path = np.stack([np.interp(times, samples[:, 0], samples[:, 1]),
                         np.interp(times, samples[:, 0], samples[:, 2])], 1)
        held = times >= samples[0, 0] - 0.5 / self.fps
        if drag.up_time is not None:
            held &= times < drag.up_time
        return path, held

    def _anchor_of_ids(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Anchors already known for these ids (earlier pushes of the same source)."""
        anchors = np.zeros((len(ids), 2), np.float32)
        known = np.zeros(len(ids), bool)
        for seg in self._pushed:
            common, mine, theirs = np.intersect1d(ids, seg.ts.ids, return_indices=True)
            anchors[mine] = seg.anchors[theirs]
            known[mine] = seg.anchor_visible[theirs]
        return anchors, known

    def _inherit_anchors(self, points: np.ndarray) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """For each new drag point, the anchor of the nearest earlier drag point within REGRAB_RADIUS_PX
        of where it was released (NaN where none), among the points whose content no later grab has
        taken; and, per donor drag, the indices of its points taken."""
        out = np.full(points.shape, np.nan, np.float32)
        ends, anchors, owners, index = [], [], [], []
        for key, drag in self._drags.items():
            free = np.isinf(drag.handover)
            if drag.samples and free.any():
                t, x, y = max(drag.samples)
                ends.append((drag.offsets + np.array([x, y], np.float32))[free])
                anchors.append(drag.anchors[free])
                owners.append(np.full(int(free.sum()), key))
                index.append(np.flatnonzero(free))
        if not ends:
            return out, {}
        ends_a, anchors_a = np.concatenate(ends), np.concatenate(anchors)
        owners_a, index_a = np.concatenate(owners), np.concatenate(index)
        dist = np.linalg.norm(points[:, None] - ends_a[None], axis=2)
        nearest = dist.argmin(1)
        close = dist[np.arange(len(points)), nearest] <= REGRAB_RADIUS_PX
        out[close] = anchors_a[nearest[close]]
        taken = nearest[close]
        return out, {int(k): index_a[taken[owners_a[taken] == k]] for k in np.unique(owners_a[taken])}

    def _consume(self, stop: int) -> None:
        """Frames before `stop` are done: drop what can no longer matter (keeps memory flat)."""
        self.consumed_frames = max(self.consumed_frames, stop)
        self._pushed = [s for s in self._pushed if s.stop > stop]
        now = stop / self.fps
        for key in [k for k, d in self._drags.items() if d.up_time is not None and d.up_time <= now]:
            # a released drag holds its content in the prior and donates anchors to a re-grab: only its
            # final sample still matters; once every point is carried on by later grabs it is done
            drag = self._drags[key]
            drag.samples = [max(drag.samples)]
            if (drag.handover <= now).all():
                del self._drags[key]
        for drag in self._drags.values():
            if drag.up_time is None and len(drag.samples) > 2:
                # keep the newest sample at or before `now` and everything after it
                samples = sorted(drag.samples)
                older = [s for s in samples if s[0] <= now]
                drag.samples = older[-1:] + [s for s in samples if s[0] > now]
        # released drags: the oldest are forgotten (their content returns to the first frame in the prior)
        # once more than MAX_HELD_POINTS points are held
        released = sorted((d.up_time, k) for k, d in self._drags.items() if d.up_time is not None and d.up_time <= now)
        held = sum(len(self._drags[k].offsets) for _, k in released)
        for _, key in released:
            if held <= MAX_HELD_POINTS:
                break
            held -= len(self._drags[key].offsets)
            del self._drags[key]


MAX_HELD_POINTS = 2500    # released drag points held in the prior (bounds memory and warp cost; tiny-cpu's max_tracks)
