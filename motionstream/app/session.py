"""Studio sessions: one StreamingGenerator shared by every client, one stream generating at a time.

    StreamStack       the loaded model, codec, text encoder, stream config (stream.stack, shared)
    Session           one WebSocket client: its start request, control inbox, latest-wins outboxes
    StreamSlot        who generates now; the others wait in FIFO order and are told their position
    GenerationWorker  the thread that runs the engine for the active session

Threads: the asyncio loop (sockets, REST) only validates messages and appends them to
Session.commands; the worker thread owns the engine, applies commands between chunks, generates,
JPEG-encodes and hands frames back to the loop with call_soon_threadsafe. A slow client never
blocks the worker: its FrameQueue keeps the newest `max_queued_frames` frames and drops the rest.

Pointer timing (why samples are spread over the next chunk): the engine consumes a chunk's tracks
when the chunk starts, so input that arrives while chunk k generates can only shape chunk k+1. A
sample received w seconds after the last chunk boundary goes to stream time
(F + min(w / D, 1) * (n - 1)) / fps, F = first frame of the next chunk, n its length, D the measured
time between chunk starts: the user's motion is replayed at its own speed, one chunk late.

Pacing (latency): frames are sent at the stream's fps; the next chunk starts just in time, when
the frames still to play last less than `lead_safety` x the chunk's expected generation time
(EMA) + `lead_margin_s` (encode, socket, the browser's decode), and never more than `lead_chunks`
ahead. A drag shows after the wait for the next chunk boundary (half a chunk on average) plus that
lead, so the shorter chunks of tiny-cpu's studio.cache (c1s3w3: 4 frames, not 12) answer sooner.
benchmarks/studio.py measures the result.

Pause keeps what exists: a pause holds the session's frames (the chunk in flight, the frames queued
for playback) instead of dropping them, and resume plays them first, their due times shifted by the
pause's length; the worker's play clock moves by the same amount. A stop drops what is still queued,
and `stopped` counts the frames the client was actually sent (Session.frames_sent).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import cv2
import numpy as np
import torch

from motionstream.app import protocol
from motionstream.app.config import StudioConfig  # noqa: F401 (re-exported)
from motionstream.stream.apps import conditioning_subset, transfer_source
from motionstream.stream.engine import StreamingGenerator
from motionstream.tracks.camera import camera_path, camera_tracks, default_intrinsics
from motionstream.tracks.sources import grid_points
from motionstream.tracks.trackset import TrackError, TrackSet
from motionstream.video import VideoWriter

if TYPE_CHECKING:   # loading it imports torch: the server module stays light until a model loads
    from motionstream.stream.stack import StreamStack

log = logging.getLogger("motionstream.studio")

SLOT_POLL_S = 0.2                   # the idle worker re-checks for a session (and for stop()) this often
IDLE_POLL_S = 0.02                  # a paused or far-ahead worker re-checks its controls this often
INTERVAL_EMA = 0.2                  # weight of the newest chunk-start interval (pointer timing)
GEN_TIME_EMA = 0.3                  # weight of the newest chunk generation time (pacing)
MIN_INTERVAL_S = 1e-3               # a chunk-start interval is never taken as shorter than this


# ------------------------------------------------------------------------------- outboxes
@dataclass
class FrameItem:
    """One encoded frame waiting for its socket: sent at `due` (time.monotonic) or dropped when stale."""
    due: float
    frame: int
    chunk: int
    ack_seq: int | None
    flags: int
    gen_ms: float
    jpeg: bytes


class FrameQueue:
    """Latest-wins bounded queue: put() beyond `maxlen` drops the oldest frame (counted), except with
    keep=True (a pause holds every generated frame; the paused worker adds at most one chunk)."""

    def __init__(self, maxlen: int):
        self.items: deque[FrameItem] = deque()
        self.maxlen = maxlen
        self.dropped = 0

    def put(self, item: FrameItem, keep: bool = False) -> None:
        self.items.append(item)
        while not keep and len(self.items) > self.maxlen:
            self.items.popleft()
            self.dropped += 1

    def clear(self) -> None:
        self.dropped += len(self.items)
        self.items.clear()

    def __len__(self) -> int:
        return len(self.items)


class Recorder:
    """The session's mp4 (video.VideoWriter); written by the worker, closed by a download."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self.frames = 0
        self._writer = None
        self._lock = threading.Lock()
        self.closed = False

    def write(self, frames: np.ndarray) -> None:
        with self._lock:
            if self.closed:
                return
            if self._writer is None:
                self._writer = VideoWriter(self.path, self.fps)
            self._writer.write(frames)
            self.frames += len(frames)

    def close(self) -> Path | None:
        """Finish the file; its path, or None when nothing was recorded."""
        with self._lock:
            if not self.closed and self._writer is not None:
                self._writer.close()
            self.closed = True
            return self.path if self.frames else None


# ------------------------------------------------------------------------------- session
class Session:
    """One client. Created and closed on the event loop; the worker reads `request` / `commands`."""

    def __init__(self, sid: str, loop: asyncio.AbstractEventLoop, cfg: StudioConfig, root: Path, key: str = ""):
        """sid: the session's id (in its REST and recording URLs); key: the secret only this session's
        socket is told (hello), which every REST request about the session must carry (owns())."""
        self.id = sid
        self.key = key
        self.loop = loop
        self.cfg = cfg
        self.frames = FrameQueue(cfg.max_queued_frames)
        self.messages: deque[str] = deque(maxlen=cfg.max_queued_messages)
        self.wake = asyncio.Event()                         # the sender coroutine (loop thread)
        self.worker_wake = threading.Event()                # the worker, waiting between chunks
        self.commands: deque[tuple[float, dict]] = deque()  # (received time.monotonic(), message)
        self.request: dict | None = None                    # the start message in force
        self.status = "idle"                                # idle | queued | starting | streaming
        self.muted = False                                  # stopping: drop the frames still to come
        self.held_since: float | None = None                # paused (time.monotonic()): frames wait, none sent
        self.frames_sent = 0                                # frames of this stream put on the socket
        self.closed = False
        root.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f"session-{sid[:8]}-", dir=root))
        self.recorder: Recorder | None = None
        self.last_recording: Path | None = None
        self.recordings = 0

    def owns(self, key: str) -> bool:
        """True when `key` is this session's key (constant-time compare; an empty key never owns)."""
        return bool(self.key) and hmac.compare_digest(key.encode(), self.key.encode())

    # ---- called from any thread
    def send(self, text: str) -> None:
        self._call(self._enqueue_message, text)

    def send_frames(self, items: list[FrameItem]) -> None:
        self._call(self._enqueue_frames, items)

    def _call(self, fn: Callable, *args: Any) -> None:
        if self._on_loop():
            fn(*args)
            return
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:   # the loop is gone (server shutting down)
            pass

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def end_stream(self, url: str | None) -> None:
        """The stream ended (any thread): what is still queued is dropped, `stopped` counts the frames
        that went out, so it equals what the client received, and the session turns idle."""
        self._call(self._end_stream, url)

    # ---- loop thread only
    def hold(self, now: float) -> None:
        """Pause: keep every frame (queued and still to come) but send none."""
        if self.held_since is None:
            self.held_since = now

    def unhold(self, now: float) -> None:
        """Resume: the held frames play from now on, each as far after `now` as it was after the pause."""
        if self.held_since is None:
            return
        shift = now - self.held_since
        for item in self.frames.items:
            item.due += shift
        self.held_since = None
        self.wake.set()

    def _end_stream(self, url: str | None) -> None:
        self.muted = True
        self.held_since = None
        self.frames.clear()
        self._enqueue_message(protocol.server_message("stopped", frames=self.frames_sent, recording=url))
        self.status = "idle"            # here, on the loop: a start seen from now on finds nothing of the old stream

    def _enqueue_message(self, text: str) -> None:
        if not self.closed:
            self.messages.append(text)
            self.wake.set()

    def _enqueue_frames(self, items: list[FrameItem]) -> None:
        if self.closed or self.muted:
            return
        for item in items:
            self.frames.put(item, keep=self.held_since is not None)
        self.wake.set()

    def add_command(self, msg: dict) -> None:
        """Queue a validated control for the worker; raises ProtocolError when too many are waiting."""
        if len(self.commands) >= self.cfg.max_pending_commands:
            raise protocol.ProtocolError("too many controls waiting for the next chunk; slow down",
                                         msg.get("type"), msg.get("seq"))
        self.commands.append((time.monotonic(), msg))
        self.worker_wake.set()

    def close(self) -> None:
        self.closed = True
        self.worker_wake.set()
        if self.recorder is not None:
            self.recorder.close()
        self.frames.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


class StreamSlot:
    """One generating session at a time, the others in FIFO order (position 1 = next)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.active: Session | None = None
        self.waiting: list[Session] = []
        # fields of every "starting" state message (the server's: whether its warm-up still runs)
        self.starting_fields: Callable[[], dict[str, Any]] = dict

    def starting_message(self) -> str:
        """The `state` message of a session that just got the slot."""
        return protocol.server_message("state", status="starting", position=0, **self.starting_fields())

    def request(self, s: Session) -> int:
        """0 = s generates now; k > 0 = k-th in the queue."""
        with self.cond:
            if self.active is None:
                self.active = s
                self.cond.notify_all()
                return 0
            if s is self.active:
                return 0
            if s not in self.waiting:
                self.waiting.append(s)
            return self.waiting.index(s) + 1

    def release(self, s: Session) -> None:
        """s leaves (stopped, failed or closed): the next waiting session is promoted at once."""
        with self.cond:
            if s is self.active:
                self.active = self.waiting.pop(0) if self.waiting else None
                promoted = self.active
            else:
                promoted = None
                if s in self.waiting:
                    self.waiting.remove(s)
            waiting = list(self.waiting)
            self.cond.notify_all()
        if promoted is not None:
            promoted.status = "starting"
            promoted.send(self.starting_message())
        for k, w in enumerate(waiting):
            w.send(protocol.server_message("queued", position=k + 1, ahead=k + 1))

    def is_active(self, s: Session) -> bool:
        return self.active is s

    def wait_active(self, timeout: float) -> Session | None:
        with self.cond:
            if self.active is None:
                self.cond.wait(timeout)
            return self.active

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()


# ------------------------------------------------------------------------------- motion sources
class LoopedTracks:
    """A TrackSet replayed forwards then backwards (ping-pong) from stream frame 0, one chunk at a time
    (the camera move keeps going for as long as the stream does; same IDs, so one track per point)."""

    def __init__(self, tracks: Any):
        self.tracks = tracks

    def __call__(self, controls: Any, start: int, count: int) -> None:
        n = self.tracks.num_frames
        period = max(2 * (n - 1), 1)
        idx = np.array([(k % period) if (k % period) < n else period - (k % period) for k in range(start, start + count)])
        ts = self.tracks
        controls.push_tracks(TrackSet(ts.tracks[idx], ts.visibility[idx], ts.width, ts.height, ts.fps, ts.ids,
                                      ts.role), start_frame=start)


def camera_source(stack: StreamStack, cfg: StudioConfig, path: str, strength: float, depth: np.ndarray | None = None):
    """Camera control without a depth network: a fronto-parallel plane unless a depth map is given."""

    if depth is None:
        depth = np.ones((stack.height, stack.width), np.float64)
    poses = camera_path(path, cfg.camera_frames, strength=strength, scene_depth=float(np.median(depth)))
    ts = camera_tracks(depth, default_intrinsics(stack.width, stack.height, fov_deg=cfg.camera_fov), poses,
                       grid=cfg.camera_grid, fps=stack.fps)
    return LoopedTracks(conditioning_subset(ts, stack.latent_cells, stack.stream_cfg.seed, stack.tracks_cfg))


def pacing_lead(cfg: StudioConfig, chunk_seconds: float, gen_seconds: float) -> float:
    """Seconds of video still to play at which the worker starts the next chunk (module docstring,
    pacing): its expected generation time x lead_safety + lead_margin_s, never more than lead_chunks
    chunks, which bounds the latency it adds. A chunk that takes nearly its own duration to generate
    then arrives with little to spare (jitter shows as a stalled frame), and one that takes longer
    falls behind until the adaptive ladder steps down."""
    return min(cfg.lead_chunks * chunk_seconds, cfg.lead_safety * gen_seconds + cfg.lead_margin_s)


# ------------------------------------------------------------------------------- the worker
class GenerationWorker(threading.Thread):
    """Runs the engine for whichever session holds the slot (see module docstring)."""

    def __init__(self, stack: StreamStack, slot: StreamSlot, cfg: StudioConfig, media: Any,
                 on_jpeg: Callable[[bytes], None] | None = None):
        super().__init__(name="motionstream-studio-worker", daemon=True)

        self.stack, self.slot, self.cfg, self.media = stack, slot, cfg, media
        self.on_jpeg = on_jpeg
        self.gen = StreamingGenerator(stack.model, stack.codec, stack.text_encoder, stack.stream_cfg, stack.param,
                                      fps=stack.fps)
        self.stopping = False
        self.chunks = 0
        self.frames = 0
        self.errors = 0
        # set once the warm-up stream is done: until then a first start waits for it (seconds with
        # stream.openvino, the conversions), and the page says so
        self.ready = threading.Event()

    @property
    def warming_up(self) -> bool:
        return not self.ready.is_set()

    def stop(self) -> None:
        self.stopping = True
        self.slot.wake()

    def run(self) -> None:
        try:
            if self.cfg.threads:
                torch.set_num_threads(self.cfg.threads)
            self.gen.warm_up(self.stack.width, self.stack.height)
        except Exception:              # the first stream meets the same error and reports it to its page
            log.exception("warm-up stream failed")
        finally:
            self.ready.set()
        while not self.stopping:
            s = self.slot.wait_active(timeout=SLOT_POLL_S)
            if s is None:
                continue
            try:
                self.serve(s)
            except Exception as err:   # a bad stream must never take the server (or the others) down
                self.errors += 1
                log.exception("stream of session %s failed", s.id)
                s.send(protocol.error_message(f"stream failed: {type(err).__name__}: {err}", "start"))
            finally:
                self.finish(s)
        self.gen.close()

    # ---- one stream
    def serve(self, s: Session) -> None:
        req = s.request or {}
        gen, fps = self.gen, self.stack.fps
        image = self.media.image(req["image"])
        gen.start(image, req.get("prompt", ""))
        source = self.make_source(req)
        s.status = "streaming"
        s.send(protocol.server_message("started", prompt=req.get("prompt", ""), mode=req.get("mode", "drag"),
                                       width=self.stack.width, height=self.stack.height, fps=fps,
                                       **self.quality_fields()))
        self.sent_quality = self.quality()
        self.drags: dict[int, int] = {}
        self.ack: int | None = None
        self.boundary = time.monotonic()
        self.interval = gen.chunk_num_frames(1) / fps      # measured time between chunk starts (EMA)
        self.play_clock = time.monotonic()                    # when the last queued frame plays
        self.paused_at: float | None = None                   # when the pause in force was received
        gen_seconds = self.interval                           # expected chunk generation time (EMA)
        while not self.stopping and not s.closed and self.slot.is_active(s):
            if self.apply(s):
                return                                         # stop
            lead = pacing_lead(self.cfg, gen.chunk_num_frames() / fps, gen_seconds)
            if gen.paused or self.play_clock - time.monotonic() > lead:
                s.worker_wake.wait(IDLE_POLL_S)                # paused, or far enough ahead of playback
                s.worker_wake.clear()
                if gen.paused:
                    self.boundary = time.monotonic()
                continue
            now = time.monotonic()
            self.interval += INTERVAL_EMA * (max(now - self.boundary, MIN_INTERVAL_S) - self.interval)
            self.boundary = now
            if source is not None:
                source(gen.controls, gen.next_frame, gen.chunk_num_frames())
            gen_s = self.generate_and_send(s)
            gen_seconds += GEN_TIME_EMA * (gen_s - gen_seconds)
            self.send_quality_change(s)

    def generate_and_send(self, s: Session) -> float:
        """Generate one chunk, record it, queue its JPEGs at the stream's fps; its generation seconds."""
        gen, fps = self.gen, self.stack.fps
        first, chunk = gen.next_frame, gen.chunk_index
        t0 = time.perf_counter()
        frames = gen.next_chunk()
        gen_s = time.perf_counter() - t0
        self.chunks += 1
        self.frames += len(frames)
        jpegs = [encode_jpeg(f, self.cfg.jpeg_quality) for f in frames]
        flags = 0
        if s.recorder is not None and not s.recorder.closed:
            s.recorder.write(frames)
            flags |= protocol.FLAG_RECORDING
        self.play_clock = max(self.play_clock, time.monotonic())
        items = []
        for k, jpeg in enumerate(jpegs):
            items.append(FrameItem(self.play_clock, first + k, chunk, self.ack,
                                   flags | (protocol.FLAG_CHUNK_START if k == 0 else 0), 1000 * gen_s, jpeg))
            self.play_clock += 1.0 / fps
        s.send_frames(items)
        if self.on_jpeg is not None:
            for jpeg in jpegs:
                self.on_jpeg(jpeg)
        return gen_s

    # ---- quality rung (an engine with an adaptive ladder exposes `quality`, a rung name)
    def quality(self) -> str | None:
        return getattr(self.gen, "quality", None)

    def quality_fields(self) -> dict[str, str]:
        """{"quality": rung} for status messages, or {} when the engine has no ladder."""
        q = self.quality()
        return {} if q is None else {"quality": q}

    def send_quality_change(self, s: Session) -> None:
        """A `state` message when the engine stepped to another rung since the last one the page was told."""
        q = self.quality()
        if q != self.sent_quality:
            self.sent_quality = q
            s.send(protocol.server_message("state", status="streaming", frame=self.gen.next_frame,
                                           chunk=self.gen.chunk_index, quality=q))

    def finish(self, s: Session) -> None:
        """The stream ended (stop, close, failure): recording closed, slot passed on, then the session
        told "stopped" and made idle, both on the loop (Session.end_stream). In that order: a start the
        client sends once it is idle must find the slot free (one that found this session still holding
        it was answered "starting", then lost the slot to this release: a stream that never started),
        and must find its queue and frames no longer the old stream's (the loop clears them first)."""
        self.gen.wait()
        self.gen.paused = False
        url = self.close_recording(s)
        s.request = None
        s.commands.clear()
        self.slot.release(s)
        if s.closed:
            s.status = "idle"
        else:
            s.end_stream(url)

    def close_recording(self, s: Session) -> str | None:
        if s.recorder is None:
            return None
        path = s.recorder.close()
        s.recorder = None
        if path is not None:
            s.last_recording = path
        return recording_url(s) if s.last_recording is not None else None

    def make_source(self, req: dict):
        mode = req.get("mode", "drag")
        if mode == "transfer":
            frames = self.media.video(req["video"])
            return transfer_source(frames, self.stack.fps, self.stack.latent_cells, self.cfg.transfer_grid,
                                   self.stack.stream_cfg.seed, self.stack.tracks_cfg)
        if mode == "camera":
            return camera_source(self.stack, self.cfg, req.get("camera_path", "orbit"),
                                 req.get("camera_strength", 1.0))
        return None

    # ---- controls
    def stream_time(self, received: float) -> float:
        """Stream seconds of a control received at `received` (time.monotonic), see module docstring."""
        gen = self.gen
        n = gen.chunk_num_frames()
        frac = min(max((received - self.boundary) / self.interval, 0.0), 1.0)
        return (gen.next_frame + frac * (n - 1)) / self.stack.fps

    def apply(self, s: Session) -> bool:
        """Apply every waiting control; True when the stream must stop."""

        while s.commands:
            received, msg = s.commands.popleft()
            kind = msg["type"]
            try:
                if kind == "stop":
                    return True
                self.apply_one(s, msg, received)
            except (TrackError, ValueError, KeyError) as err:
                s.send(protocol.error_message(str(err), kind, msg.get("seq")))
            if "seq" in msg:
                self.ack = msg["seq"] if self.ack is None else max(self.ack, msg["seq"])
        return False

    def apply_one(self, s: Session, msg: dict, received: float) -> None:
        gen, kind = self.gen, msg["type"]
        controls = gen.controls
        if kind == "pause":
            gen.pause()
            if self.paused_at is None:
                self.paused_at = received
            s.send(protocol.server_message("state", status="paused", frame=gen.next_frame, chunk=gen.chunk_index,
                                           **self.quality_fields()))
        elif kind == "resume":
            gen.resume()
            if self.paused_at is not None:            # the held frames play later by the pause's length
                self.play_clock += received - self.paused_at
                self.paused_at = None
            self.boundary = time.monotonic()
            s.send(protocol.server_message("state", status="streaming", frame=gen.next_frame, chunk=gen.chunk_index,
                                           **self.quality_fields()))
        elif kind == "pointer_down":
            radius, spacing = msg["size"] / 2, msg["spacing"]
            count = math.pi * radius ** 2 / spacing ** 2
            if count > self.cfg.max_drag_points:
                raise ValueError(f"a drag patch of size {msg['size']:g} at spacing {spacing:g} has ~{count:.0f} "
                                 f"points (max {self.cfg.max_drag_points}): make it smaller or sparser")
            if msg["id"] in self.drags:
                raise ValueError(f"drag {msg['id']} is already down")
            if len(controls.active_drags) >= self.cfg.max_drag_points:
                raise ValueError("too many drags held at once")
            self.drags[msg["id"]] = controls.pointer_down(self.stream_time(received), msg["x"], msg["y"],
                                                          radius=radius, spacing=spacing)
            gen.presegment()             # the patch's GrabCut runs now, not in its first moving chunk
        elif kind == "pointer_move":
            controls.pointer_move(self._drag(msg["id"]), self.stream_time(received), msg["x"], msg["y"])
        elif kind == "pointer_up":
            controls.pointer_up(self._drag(msg["id"]), self.stream_time(received))
            del self.drags[msg["id"]]
        elif kind == "pin":
            w, h = self.stack.width, self.stack.height
            x0, x1 = sorted((min(max(msg["x0"], 0.0), w - 1.0), min(max(msg["x1"], 0.0), w - 1.0)))
            y0, y1 = sorted((min(max(msg["y0"], 0.0), h - 1.0), min(max(msg["y1"], 0.0), h - 1.0)))
            count = (int((x1 - x0) / msg["spacing"]) + 1) * (int((y1 - y0) / msg["spacing"]) + 1)
            if count > self.cfg.max_pin_points:
                raise ValueError(f"a pinned grid of ~{count} points is more than {self.cfg.max_pin_points}: "
                                 "use a larger spacing or a smaller rectangle")
            controls.add_pins(grid_points(x0, y0, x1, y1, spacing=msg["spacing"]))
        elif kind == "clear_pins":
            controls.clear_pins()
        elif kind == "path":
            radius, spacing = msg["size"] / 2, msg["spacing"]
            if math.pi * radius ** 2 / spacing ** 2 > self.cfg.max_drag_points:
                raise ValueError(f"a path patch of size {msg['size']:g} at spacing {spacing:g} is too dense")
            t0 = gen.next_frame / self.stack.fps
            controls.add_path([(t0 + ms / 1000.0, x, y) for ms, x, y in msg["points"]], radius=radius,
                              spacing=spacing)
        elif kind == "record":
            if msg["on"] and (s.recorder is None or s.recorder.closed):
                s.recordings += 1
                s.recorder = Recorder(s.dir / f"recording-{s.recordings}.mp4", self.stack.fps)
                s.send(protocol.server_message("recording", on=True, url=None))
            elif not msg["on"]:
                url = self.close_recording(s)
                s.send(protocol.server_message("recording", on=False, url=url))

    def _drag(self, client_id: int) -> int:
        if client_id not in self.drags:
            raise ValueError(f"no drag {client_id} is down (send pointer_down first)")
        return self.drags[client_id]


def recording_url(s: Session) -> str:
    """The session's download URL; it carries the session key, so only its owner is ever sent it."""
    return f"/api/sessions/{s.id}/recording.mp4?key={s.key}"


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """uint8 RGB [H, W, 3] -> JPEG bytes (cv2.imencode)."""

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
