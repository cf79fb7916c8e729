"""`motionstream studio`: the interactive web studio (paper App. C, Fig. 8, Fig. A5).

    motionstream studio [--model student|teacher|PATH] [--port 7860] [--host 127.0.0.1 [--token T]]

FastAPI + uvicorn, one process, one generating stream at a time (app/session.py):

    GET  /                              the page (app/static: plain HTML/JS/CSS, no build step)
    WS   /ws                            one socket per client: JSON controls up, stamped JPEG frames down
                                        (docs/PROTOCOL.md, app/protocol.py)
    GET  /api/health                    model label, size, fps, clients, queue, counters
    GET  /api/samples                   sample photos (skimage.data); POST /api/samples/{name} selects one
    POST /api/images                    upload an image (raw body; limits on bytes, pixels, formats)
    GET  /api/images/{id}.jpg           the image as the model sees it (resized + centre-cropped)
    POST /api/videos                    upload a driving video for motion transfer (raw body)
    POST /api/sessions/{sid}/start|stop start / stop a socket's stream over REST (same fields as the socket)
    GET  /api/sessions/{sid}/recording.mp4   finish and download the session's recording
    GET  /api/stream.mjpeg              the generating stream as MJPEG (OBS-style viewers)

Binds 127.0.0.1 by default; any other host needs a token (MOTIONSTREAM_TOKEN, --token-file or
--token), which every /api and /ws request must carry (?token=, header X-MotionStream-Token or
Authorization: Bearer); it is never printed in full. Requests whose Host header is not a loopback
name, the bind address or an --allow-host name are refused (DNS rebinding). Each socket's session
has an unguessable id and a key that only its own socket is told: the REST session endpoints and the
recording download need both (?key= or X-MotionStream-Session-Key), and /api/health names no session.
Uploads are size-checked from their headers before cv2.imdecode touches them; malformed socket
messages get an `error` reply; error texts carry no server paths (protocol.redact_paths).
"""


import asyncio
import hmac
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
import skimage.data
import uvicorn
from fastapi import APIRouter, FastAPI, HTTPException, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from motionstream.app import protocol
from motionstream.app.config import LOOPBACK_HOSTS, TOKEN_ENV  # noqa: F401 (TOKEN_ENV: re-exported)
from motionstream.app.session import (GenerationWorker, Session, StreamSlot, StudioConfig, encode_jpeg,
                                      recording_url)
from motionstream.video import (MAX_IMAGE_PIXELS, ImageFormatError, ImageTooLarge, VideoError,
                                decode_image as decode, probe_video, read_video, resize_crop)

if TYPE_CHECKING:   # loading it imports torch: this module stays light until a model loads
    from motionstream.stream.stack import StreamStack

log = logging.getLogger("motionstream.studio")

STATIC_DIR = Path(__file__).resolve().parent / "static"
SESSION_KEY_HEADER = "x-motionstream-session-key"
SESSION_ID_BYTES = 16                           # 128-bit session ids and ...
SESSION_KEY_BYTES = 32                          # ... 256-bit session keys (secrets.token_urlsafe)
SAMPLE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")   # shipped inside skimage
VIDEO_FORMATS = ("mp4/mov", "webm/mkv", "avi")
TOKEN_HEADER = "x-motionstream-token"
BEARER_PREFIX = "bearer "                       # Authorization: Bearer TOKEN (compared lower-case)
UPLOAD_READ_BYTES = 1 << 16
ERROR_DETAIL_CHARS = 160                        # of a decoder's error text, quoted in an upload error
MJPEG_POLL_S = 1.0                              # an MJPEG response checks for a gone viewer this often
RATE_WINDOW_S = 1.0                             # max_messages_per_second counts messages in windows this long
WS_MAX_SIZE_FACTOR = 4                          # uvicorn's socket frame limit, x max_message_bytes
WS_PING_S = 20.0                                # socket keep-alive ping interval and timeout


class UploadError(ValueError):
    """A rejected upload: `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------- uploads
def decode_image(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """uint8 RGB [H, W, 3] from uploaded bytes (video.decode_image: the header's size is checked before
    decoding, the same check as the CLI's), its errors as UploadErrors with their HTTP status."""

    try:
        return decode(data, MAX_IMAGE_PIXELS if max_pixels is None else max_pixels)
    except ImageTooLarge as err:
        raise UploadError(str(err), 413) from None
    except ImageFormatError as err:
        raise UploadError(str(err), 415) from None
    except VideoError as err:
        raise UploadError(str(err)) from None


def sniff_video(data: bytes) -> str:
    if data[4:8] == b"ftyp":
        return "mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    raise UploadError(f"not a video in an accepted format ({', '.join(VIDEO_FORMATS)})", 415)


def decode_video(data: bytes, size: tuple[int, int], fps: float, max_frames: int, tmp_dir: Path) -> np.ndarray:
    """uint8 [T, H, W, 3] at the stream's size and fps (video.read_video); the file is probed first
    (video.probe_video: a video stream, a decodable first frame, frames under MAX_IMAGE_PIXELS)."""

    fmt = sniff_video(data)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix=f".{fmt}", dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            probe_video(name)
            frames, _ = read_video(name, fps=fps, size=size, max_frames=max_frames)
        except VideoError as err:
            message = str(err).replace(name, "the upload")     # the temp file's path is the server's business
            raise UploadError(f"cannot use this video: {message[:ERROR_DETAIL_CHARS]}", 413 if isinstance(err, ImageTooLarge)
                              else 400) from None
        return frames
    finally:
        os.unlink(name)


async def read_body(request: Any, limit: int) -> bytes:
    """The raw request body, refusing more than `limit` bytes without reading past it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadError(f"upload is {int(declared)} bytes; the limit is {limit}", 413)
    parts, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise UploadError(f"upload is more than the limit of {limit} bytes", 413)
        parts.append(chunk)
    if not total:
        raise UploadError("empty upload: send the file as the request body")
    return b"".join(parts)


class MediaStore:
    """Images and driving videos at the stream's size, by random id, oldest evicted (bounded memory)."""

    def __init__(self, max_images: int, max_videos: int):
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._videos: OrderedDict[str, np.ndarray] = OrderedDict()
        self.max_images, self.max_videos = max_images, max_videos
        self._lock = threading.Lock()

    def add_image(self, img: np.ndarray) -> str:
        return self._add(self._images, img, self.max_images)

    def add_video(self, frames: np.ndarray) -> str:
        return self._add(self._videos, frames, self.max_videos)

    def image(self, key: str) -> np.ndarray:
        return self._get(self._images, key, "image")

    def video(self, key: str) -> np.ndarray:
        return self._get(self._videos, key, "video")

    def has_image(self, key: str) -> bool:
        return key in self._images

    def has_video(self, key: str) -> bool:
        return key in self._videos

    def _add(self, table: OrderedDict, value: np.ndarray, limit: int) -> str:
        key = secrets.token_hex(8)
        with self._lock:
            table[key] = value
            while len(table) > limit:
                table.popitem(last=False)
        return key

    def _get(self, table: OrderedDict, key: str, what: str) -> np.ndarray:
        with self._lock:
            if key not in table:
                raise KeyError(f"unknown {what} id {key[:20]!r} (upload it again)")
            table.move_to_end(key)
            return table[key]


def sample_image(name: str) -> np.ndarray:
    """A photo shipped inside scikit-image (no download), uint8 RGB."""

    if name not in SAMPLE_IMAGES:
        raise UploadError(f"unknown sample {name[:40]!r}; samples: {list(SAMPLE_IMAGES)}", 404)
    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, 2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


# ------------------------------------------------------------------------------- the app
class MjpegViewer:
    """One MJPEG client: the newest JPEG (latest wins) and an event set when it changes."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.jpeg = b""


class MjpegHub:
    """The newest JPEG of the generating stream for each MJPEG viewer (latest wins, one frame each)."""

    def __init__(self) -> None:
        self.viewers: set[MjpegViewer] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    def publish_threadsafe(self, jpeg: bytes) -> None:
        if self.loop is not None and self.viewers:
            try:
                self.loop.call_soon_threadsafe(self._publish, jpeg)
            except RuntimeError:
                pass

    def _publish(self, jpeg: bytes) -> None:
        for viewer in list(self.viewers):
            viewer.jpeg = jpeg
            viewer.event.set()


class Studio:
    """Server state: the model stack, the worker, the slot, the sessions, uploaded media."""

    def __init__(self, stack: "StreamStack", cfg: StudioConfig | None = None, token: str | None = None,
                 allowed_hosts: tuple[str, ...] = ()):
        """allowed_hosts: host names the Host header may carry besides LOOPBACK_HOSTS (--allow-host,
        and the bind address when it is not a wildcard)."""
        self.stack = stack
        self.cfg = cfg or StudioConfig()
        self.token = token
        self.allowed_hosts = frozenset(h.lower() for h in LOOPBACK_HOSTS + tuple(allowed_hosts))
        self.slot = StreamSlot()
        self.media = MediaStore(self.cfg.max_images, self.cfg.max_videos)
        self.hub = MjpegHub()
        self.sessions: dict[str, Session] = {}
        self.root = Path(self.cfg.record_dir)
        self.worker = GenerationWorker(stack, self.slot, self.cfg, self.media, self.hub.publish_threadsafe)
        self.slot.starting_fields = lambda: {"warming_up": self.worker.warming_up}

    # ---- auth
    def authorized(self, conn: Any) -> bool:
        if self.token is None:
            return True
        given = conn.query_params.get("token") or conn.headers.get(TOKEN_HEADER) or ""
        auth = conn.headers.get("authorization", "")
        if not given and auth.lower().startswith(BEARER_PREFIX):
            given = auth[len(BEARER_PREFIX):]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def hello(self, s: Session) -> str:
        st = self.stack
        return protocol.server_message(
            "hello", session=s.id, session_key=s.key, protocol=protocol.PROTOCOL_VERSION, model=st.describe(), width=st.width,
            height=st.height, fps=st.fps, chunk_frames=self.worker.gen.chunk_num_frames(1), first_chunk_frames=self.worker.gen.chunk_num_frames(0),
            grid_spacing=self.cfg.grid_spacing, grid_size=self.cfg.grid_size, modes=list(protocol.MODES),
            camera_paths=list(protocol.CAMERA_PATHS))

    def health(self) -> dict[str, Any]:
        st = self.stack
        return {"status": "ok", "protocol": protocol.PROTOCOL_VERSION, "model": st.describe(), "width": st.width,
                "height": st.height, "fps": st.fps, "clients": len(self.sessions),
                "generating": self.slot.active is not None, "queued": len(self.slot.waiting),
                "chunks": self.worker.chunks, "frames": self.worker.frames, "stream_errors": self.worker.errors,
                "worker_alive": self.worker.is_alive(), "warming_up": self.worker.warming_up}

    # ---- controls (socket and REST)
    def handle(self, s: Session, msg: dict) -> None:
        """Apply one validated client message on the loop; raises ProtocolError for the sender."""
        kind, seq = msg["type"], msg.get("seq")
        err = protocol.ProtocolError
        if kind == "ping":
            s.send(protocol.server_message("pong", client_time=msg["client_time"], server_time=time.time() * 1000))
        elif kind == "start":
            if s.status != "idle":
                raise err(f"already {s.status}: stop first", kind, seq)
            if not self.media.has_image(msg["image"]):
                raise err(f"unknown image id {msg['image'][:20]!r}: upload or pick an image first", kind, seq)
            mode = msg.get("mode", "drag")
            if mode == "transfer" and not self.media.has_video(msg.get("video") or ""):
                raise err("motion transfer needs an uploaded driving video ('video' id)", kind, seq)
            s.request = msg
            s.muted = False
            s.held_since = None
            s.frames.clear()
            s.frames_sent = 0
            s.commands.clear()           # controls sent while the last stream was ending belong to it
            position = self.slot.request(s)
            s.status = "starting" if position == 0 else "queued"
            if position:
                s.send(protocol.server_message("queued", position=position, ahead=position))
            else:
                s.send(self.slot.starting_message())
        elif kind == "stop":
            if s.status == "queued":
                self.slot.release(s)
                s.status, s.request = "idle", None
                s.send(protocol.server_message("stopped", frames=s.frames_sent, recording=None))
            elif s.status in ("starting", "streaming"):
                s.muted = True
                s.frames.clear()
                s.add_command(msg)
            else:
                raise err("not streaming", kind, seq)
        elif s.status == "idle":
            if kind in ("pointer_move", "pointer_up"):
                return                       # the tail of a drag that outlived its stream
            raise err(f"{kind}: no stream: press Enter (send 'start') first", kind, seq)
        elif kind.startswith("pointer") and s.status == "queued":
            if kind == "pointer_down":
                raise err("queued: drags apply once your stream runs", kind, seq)
        else:
            if kind == "pause":
                s.hold(time.monotonic())         # keep what was generated: it plays on resume
            elif kind == "resume":
                s.unhold(time.monotonic())
            s.add_command(msg)

    async def on_socket(self, ws: Any) -> None:
        if not self.authorized(ws) or not origin_ok(ws.headers):
            await ws.close(code=1008)
            return
        await ws.accept()
        if len(self.sessions) >= self.cfg.max_clients:
            await ws.send_text(protocol.error_message(f"server full ({self.cfg.max_clients} clients)"))
            await ws.close(code=1013)
            return
        s = Session(secrets.token_urlsafe(SESSION_ID_BYTES), asyncio.get_running_loop(), self.cfg, self.root,
                    key=secrets.token_urlsafe(SESSION_KEY_BYTES))
        self.sessions[s.id] = s
        s.send(self.hello(s))
        sender = asyncio.create_task(self.send_loop(ws, s))
        try:
            await self.receive_loop(ws, s)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self.close_session(s)
            sender.cancel()

    def close_session(self, s: Session) -> None:
        """A closed tab frees its slot at once (the worker drops the stream after its current chunk)."""
        self.sessions.pop(s.id, None)
        s.close()
        self.slot.release(s)

    async def receive_loop(self, ws: Any, s: Session) -> None:
        window, count, warned = time.monotonic(), 0, False
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            now = time.monotonic()
            if now - window >= RATE_WINDOW_S:
                window, count, warned = now, 0, False
            count += 1
            if count > self.cfg.max_messages_per_second:
                if not warned:
                    s.send(protocol.error_message(f"more than {self.cfg.max_messages_per_second} messages a second: "
                                                  "dropping until the next second"))
                    warned = True
                continue
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            try:
                self.handle(s, protocol.parse_client_message(raw, self.cfg.max_message_bytes))
            except protocol.ProtocolError as err:
                s.send(protocol.error_message(str(err), err.ref, err.seq))

    async def send_loop(self, ws: Any, s: Session) -> None:
        """JSON first, then frames at their due time; late frames with newer ones behind them are dropped."""
        try:
            while True:
                await s.wake.wait()
                s.wake.clear()
                while s.messages or (s.frames and s.held_since is None):
                    while s.messages:
                        await ws.send_text(s.messages.popleft())
                    if not s.frames or s.held_since is not None:
                        break
                    item = s.frames.items[0]
                    wait = item.due - time.monotonic()
                    if wait > 0:
                        try:
                            await asyncio.wait_for(s.wake.wait(), wait)
                            s.wake.clear()
                        except asyncio.TimeoutError:
                            pass
                        continue
                    s.frames.items.popleft()
                    if -wait > self.cfg.max_frame_lateness_s and s.frames:
                        s.frames.dropped += 1
                        continue
                    s.frames_sent += 1
                    await ws.send_bytes(protocol.pack_frame(item.jpeg, item.frame, item.chunk, item.ack_seq, item.flags,
                                                            time.time() * 1000, item.gen_ms))
        except asyncio.CancelledError:
            raise
        except Exception:   # the socket is gone; the receive loop closes the session
            return


def host_name(header: str) -> str:
    """The host name of a Host header value, without the port ("[::1]:7860" -> "::1")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostGuard:
    """ASGI middleware: HTTP requests and socket handshakes whose Host header names a host outside
    `allowed` are refused (400 / close 1008) before any route runs. A page on another site that
    re-points its DNS name at 127.0.0.1 (DNS rebinding) sends its own name as the Host, so it cannot
    drive a studio on the user's machine."""

    def __init__(self, app: Any, allowed: frozenset[str]):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if host_name(host) not in self.allowed:
                await self.refuse(scope, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def refuse(scope: dict, send: Any) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = b"host not allowed: start the studio with --allow-host NAME to serve this name"
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def origin_ok(headers: Any) -> bool:
    """Browsers send Origin: only pages served by this server may open a socket (no cross-site use)."""
    origin = headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == headers.get("host", "")


def create_app(studio: Studio):
    """The FastAPI app of a Studio (the worker starts and stops with the app): the page, then one
    router per concern (media_router, session_router, stream_router)."""

    @asynccontextmanager
    async def lifespan(app):
        studio.hub.loop = asyncio.get_running_loop()
        if not studio.worker.is_alive():
            studio.worker.start()
        yield
        studio.worker.stop()
        for s in list(studio.sessions.values()):
            studio.close_session(s)

    app = FastAPI(title="MotionStream studio", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio
    app.add_middleware(HostGuard, allowed=studio.allowed_hosts)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, err: UploadError):
        return JSONResponse({"error": protocol.redact_paths(str(err))}, status_code=err.status)

    @app.get("/")
    async def index():
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    for router in (media_router(studio), session_router(studio), stream_router(studio)):
        app.include_router(router)
    return app


def guard(studio: Studio, request: Any) -> None:
    """401 unless the request carries the studio's token (when it has one)."""

    if not studio.authorized(request):
        raise HTTPException(401, "missing or wrong token")


def media_router(studio: Studio):
    """/api/health, sample photos, image and driving-video uploads."""

    router = APIRouter()

    @router.get("/api/health")
    async def health(request: Request):
        guard(studio, request)
        return studio.health()

    @router.get("/api/samples")
    async def samples(request: Request):
        guard(studio, request)
        return {"samples": list(SAMPLE_IMAGES)}

    def image_reply(img: np.ndarray) -> dict[str, Any]:
        fitted = resize_crop(img, (studio.stack.width, studio.stack.height))
        key = studio.media.add_image(fitted)
        return {"image": key, "width": fitted.shape[1], "height": fitted.shape[0], "url": f"/api/images/{key}.jpg"}

    @router.post("/api/samples/{name}")
    async def pick_sample(name: str, request: Request):
        guard(studio, request)
        return image_reply(await run_in_threadpool(sample_image, name))

    @router.post("/api/images")
    async def upload_image(request: Request):
        guard(studio, request)
        data = await read_body(request, studio.cfg.max_upload_bytes)
        img = await run_in_threadpool(decode_image, data)
        return image_reply(img)

    @router.get("/api/images/{key}.jpg")
    async def get_image(key: str, request: Request):
        guard(studio, request)
        try:
            img = studio.media.image(key)
        except KeyError as err:
            raise HTTPException(404, str(err.args[0])) from None
        return Response(encode_jpeg(img, studio.cfg.jpeg_quality), media_type="image/jpeg")

    @router.post("/api/videos")
    async def upload_video(request: Request):
        guard(studio, request)
        data = await read_body(request, studio.cfg.max_video_bytes)
        st = studio.stack
        frames = await run_in_threadpool(decode_video, data, (st.width, st.height), st.fps, studio.cfg.max_video_frames,
                                         studio.root / "uploads")
        return {"video": studio.media.add_video(frames), "frames": len(frames)}

    return router


def session_router(studio: Studio):
    """A session's REST twins of its socket controls (start / stop) and its recording download."""

    router = APIRouter()

    def session_of(sid: str, request: Request) -> Session:
        """The session `sid`, for its owner only: the request must carry the key its socket was told.
        Anyone else gets the same 404 as for a session that does not exist (nothing to probe)."""
        guard(studio, request)
        s = studio.sessions.get(sid)
        key = request.query_params.get("key") or request.headers.get(SESSION_KEY_HEADER) or ""
        if s is None or not s.owns(key):
            raise HTTPException(404, "no such session (it closed?), or not yours: send its key (?key=)")
        return s

    async def json_body(request: Request) -> dict:
        raw = await read_body(request, studio.cfg.max_message_bytes)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise HTTPException(400, "body must be JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "body must be a JSON object")
        return body

    async def rest_control(sid: str, request: Request, kind: str):
        s = session_of(sid, request)
        body = await json_body(request) if kind == "start" else {}
        try:
            msg = protocol.parse_client_message(json.dumps({**body, "type": kind}), studio.cfg.max_message_bytes)
            studio.handle(s, msg)
        except protocol.ProtocolError as err:
            raise HTTPException(400, str(err)) from None
        return {"session": s.id, "status": s.status}

    @router.post("/api/sessions/{sid}/start")
    async def rest_start(sid: str, request: Request):
        return await rest_control(sid, request, "start")

    @router.post("/api/sessions/{sid}/stop")
    async def rest_stop(sid: str, request: Request):
        return await rest_control(sid, request, "stop")

    @router.get("/api/sessions/{sid}/recording.mp4")
    async def recording(sid: str, request: Request):
        s = session_of(sid, request)
        if s.recorder is not None and not s.recorder.closed:
            path = await run_in_threadpool(s.recorder.close)
            if path is not None:
                s.last_recording = path
            s.send(protocol.server_message("recording", on=False, url=recording_url(s) if s.last_recording else None))
        if s.last_recording is None or not s.last_recording.is_file():
            raise HTTPException(404, "nothing recorded yet: press Record while streaming")
        return FileResponse(s.last_recording, media_type="video/mp4", filename="motionstream-recording.mp4")

    return router


def stream_router(studio: Studio):
    """The control socket (/ws) and the MJPEG view of the generating stream."""

    router = APIRouter()

    @router.get("/api/stream.mjpeg")
    async def mjpeg(request: Request):
        guard(studio, request)
        if len(studio.hub.viewers) >= studio.cfg.max_mjpeg_viewers:
            raise HTTPException(503, f"at most {studio.cfg.max_mjpeg_viewers} MJPEG viewers")
        viewer = MjpegViewer()
        studio.hub.viewers.add(viewer)

        async def body():
            try:
                while not await request.is_disconnected():
                    try:
                        await asyncio.wait_for(viewer.event.wait(), MJPEG_POLL_S)
                    except asyncio.TimeoutError:
                        continue
                    viewer.event.clear()
                    jpeg = viewer.jpeg
                    yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode()
                           + b"\r\n\r\n" + jpeg + b"\r\n")
            finally:
                studio.hub.viewers.discard(viewer)

        return StreamingResponse(body(), media_type="multipart/x-mixed-replace; boundary=frame")

    @router.websocket("/ws")
    async def socket(ws: WebSocket):
        await studio.on_socket(ws)

    return router


def serve(studio: Studio, host: str, port: int, log_level: str = "warning") -> None:
    """Run the studio until interrupted (uvicorn)."""

    uvicorn.run(create_app(studio), host=host, port=port, log_level=log_level,
                ws_max_size=WS_MAX_SIZE_FACTOR * studio.cfg.max_message_bytes, ws_ping_interval=WS_PING_S,
                ws_ping_timeout=WS_PING_S)
