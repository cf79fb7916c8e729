"""The studio (motionstream/app): protocol, uploads, slot, and a real server on loopback driven by
WebSocket clients (one stream + seven queued, fuzzed controls, pause, recording).

The server runs in a subprocess (`python tests/app/test_studio.py --serve ...`) on a tiny random model
saved like shipped weights (tests/stream_fixtures.py): real DiT, VAE and tiny decoder, a hash text
encoder instead of MiniLM (the text encoder is not under test; loading MiniLM takes ~25 s here)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))   # stream_fixtures when this file runs as the --serve script (pytest: pythonpath)

from motionstream.app import protocol  # noqa: E402

STUDIO_W, STUDIO_H = 128, 96          # 16x12 latents, 8x6 tokens per latent frame: ~0.3 s a chunk on one core
SERVER_START_S = 120


# ------------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_main(argv: list[str]) -> None:
    """Entry point of the test server subprocess: --serve PORT ROOT."""
    import torch

    from stream_fixtures import HashTextEncoder, make_model_folders

    from motionstream.app.server import Studio, serve
    from motionstream.app.session import StudioConfig
    from motionstream.config import load_config, section
    from motionstream.stream.stack import load_stream_stack

    torch.set_num_threads(1)
    port, root = int(argv[0]), Path(argv[1])
    folders = make_model_folders(root / "models")
    linear_codec(folders)
    cache = section(load_config("tiny-cpu"), "studio", StudioConfig).cache     # the shipped studio's shape
    stack = load_stream_stack(str(folders["student"]), vae=str(folders["vae"]), tiny_decoder=str(folders["tiny"]),
                              size=(STUDIO_W, STUDIO_H), text_encoder=HashTextEncoder(), cache=cache or None)
    serve(Studio(stack, StudioConfig(record_dir=str(root / "rec"), grid_size=32.0)), "127.0.0.1", port)


def linear_codec(folders: dict) -> None:
    """Replace the random VAE / tiny decoder folders by untrained ones whose linear paths are the PCA
    codec of a few photos (train/vae.init_linear_from_pca, TinyVideoAutoencoder.init_linear_from_vae:
    where training starts). The DiT stays random, so its output is close to its output-skip prior,
    the image with the tracked content pasted along the tracks: frames show the image, and a drag
    visibly moves content, which a fully random codec (dark noise) would not."""
    import skimage.data
    import torch

    from motionstream.config import to_dict
    from motionstream.models.checkpoints import save_model_dir
    from motionstream.models.tiny_decoder import TinyDecoderConfig, TinyVideoAutoencoder
    from motionstream.models.vae import CausalVAE, VAEConfig
    from motionstream.train.vae import init_linear_from_pca
    from motionstream.video import resize_crop
    from stream_fixtures import TINY, VAE

    torch.manual_seed(0)
    vae = CausalVAE(VAEConfig(**VAE))
    photos = [resize_crop(getattr(skimage.data, n)(), (STUDIO_W + 16, STUDIO_H + 16)) for n in ("astronaut", "coffee", "rocket")]
    clips = [np.stack([p[k:k + STUDIO_H, 2 * k:2 * k + STUDIO_W] for k in range(9)]) for p in photos]
    init_linear_from_pca(vae, clips)
    tiny_cfg = TinyDecoderConfig(**{**TINY, "linear_skip": True})
    tiny = TinyVideoAutoencoder(tiny_cfg)
    tiny.init_linear_from_vae(vae.decoder.linear, vae.cfg.latent_mean or [0.0] * vae.cfg.latent_channels,
                              vae.cfg.latent_std or [1.0] * vae.cfg.latent_channels)
    save_model_dir(folders["vae"], vae.state_dict(), {"kind": "vae", "config": to_dict(vae.cfg)})
    save_model_dir(folders["tiny"], tiny.state_dict(), {"kind": "tiny-decoder", "config": to_dict(tiny_cfg)})


class ServerProcess:
    """A studio server in a subprocess: this file's test server (tiny random model) by default, or
    `command(port)` -> argv (e.g. the real `motionstream studio` on the shipped weights)."""

    def __init__(self, root: Path, command=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.log = open(root / "server.log", "w")
        argv = command(self.port) if command else [sys.executable, __file__, "--serve", str(self.port), str(root)]
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)
        import httpx

        deadline = time.time() + SERVER_START_S
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"studio server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("studio server did not start in time")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def health(self) -> dict:
        import httpx

        return httpx.get(self.url + "/api/health", timeout=5).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("studio_server"))
    yield srv
    srv.stop()


def sample_id(server, name: str = "astronaut") -> str:
    import httpx

    return httpx.post(f"{server.url}/api/samples/{name}", timeout=30).json()["image"]


class Client:
    """A minimal protocol client (websockets) that sorts JSON messages from frames."""

    def __init__(self, ws):
        self.ws = ws
        self.messages: list[dict] = []
        self.frames: list[tuple[dict, bytes]] = []
        self.seq = 0

    @classmethod
    async def connect(cls, url: str) -> "Client":
        import websockets

        c = cls(await websockets.connect(url, max_size=2 ** 22))
        c.hello = await c.expect("hello")
        return c

    async def send(self, **msg) -> None:
        self.seq += 1
        await self.ws.send(json.dumps({**msg, "seq": self.seq}))

    async def pump(self, seconds: float) -> None:
        """Receive for `seconds` (or until the socket closes)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                m = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                return
            self._keep(m)

    async def expect(self, kind: str, timeout: float = 30.0, **match) -> dict:
        """The first message of `kind` (whose fields equal `match`), waiting up to `timeout` s; it is consumed."""
        def fits(m):
            return isinstance(m, dict) and m["type"] == kind and all(m.get(k) == v for k, v in match.items())

        for m in self.messages:
            if fits(m):
                self.messages.remove(m)
                return m
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            m = self._keep(await asyncio.wait_for(self.ws.recv(), left))
            if fits(m):
                self.messages.remove(m)
                return m
        raise TimeoutError(f"no {kind!r} within {timeout} s; got {[m['type'] for m in self.messages]}")

    async def frames_until(self, count: int, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while len(self.frames) < count:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(self.frames)} frames, wanted {count}")
            self._keep(await asyncio.wait_for(self.ws.recv(), left))

    def _keep(self, m):
        if isinstance(m, bytes):
            self.frames.append(protocol.unpack_frame(m))
            return None
        msg = json.loads(m)
        self.messages.append(msg)
        return msg

    def errors(self) -> list[dict]:
        return [m for m in self.messages if m["type"] == "error"]


async def streaming_client(server, image: str, prompt: str) -> Client:
    """A client whose stream has started."""
    c = await Client.connect(server.ws_url)
    await c.send(type="start", image=image, prompt=prompt)
    await c.expect("started")
    return c


def decode(jpeg: bytes) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def run(coro):
    return asyncio.run(coro)


# ------------------------------------------------------------------------------- protocol (no server)
def test_protocol_accepts_valid_messages_and_names_what_is_wrong():
    ok = protocol.parse_client_message(json.dumps({"type": "pointer_move", "id": 3, "x": 10.5, "y": 2, "seq": 7,
                                                   "frame": 40, "chunk": 3, "extra": "dropped"}), 4096)
    assert ok == {"type": "pointer_move", "id": 3, "x": 10.5, "y": 2.0, "seq": 7, "frame": 40, "chunk": 3}
    path = protocol.parse_client_message(json.dumps({"type": "path", "points": [[0, 1, 2], [50, 3, 4]], "size": 8,
                                                     "spacing": 4}), 4096)
    assert path["points"] == [(0.0, 1.0, 2.0), (50.0, 3.0, 4.0)]
    bad = {
        b"\x00\x01": "binary",
        "x" * 5000: "too long",
        "{nope": "not JSON",
        "[1, 2]": "JSON object",
        '{"type": "explode"}': "unknown message type",
        '{"type": "pointer_down", "id": 1, "x": 1, "y": 2, "size": 8}': "needs 'spacing'",
        '{"type": "pointer_move", "id": 1, "x": NaN, "y": 2}': "finite",
        '{"type": "pointer_move", "id": 1, "x": 1e300, "y": 2}': "finite number",
        '{"type": "pointer_move", "id": true, "x": 1, "y": 2}': "must be a number",
        '{"type": "pointer_move", "id": 1.5, "x": 1, "y": 2}': "integer",
        '{"type": "record", "on": 1}': "true or false",
        '{"type": "start", "image": "a", "mode": "teleport"}': "must be one of",
        '{"type": "path", "points": [[5, 1, 1], [2, 1, 1]], "size": 8, "spacing": 4}': "must not decrease",
        '{"type": "path", "points": [], "size": 8, "spacing": 4}': "list of 1..",
        '{"type": "pin", "x0": 0, "y0": 0, "x1": 9, "y1": 9, "spacing": 0.01}': "spacing",
        "[" * 100000: "too long",
    }
    for raw, reason in bad.items():
        with pytest.raises(protocol.ProtocolError, match=reason):
            protocol.parse_client_message(raw, 4096)
    deep = "[" * 3000 + "]" * 3000
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_client_message(deep, 10 ** 6)


def test_frame_header_roundtrip_and_camera_paths_match_the_tracks_module():
    from motionstream.tracks.camera import CAMERA_PATHS

    data = protocol.pack_frame(b"\xff\xd8jpeg", 130, 11, None, protocol.FLAG_RECORDING, 1.5e12, 321.0)
    head, jpeg = protocol.unpack_frame(data)
    assert jpeg == b"\xff\xd8jpeg" and protocol.FRAME_HEADER.size == 32
    assert head["frame"] == 130 and head["chunk"] == 11 and head["ack_seq"] is None and head["flags"] == 1
    assert protocol.unpack_frame(protocol.pack_frame(b"", 0, 0, 5, 0, 0, 0))[0]["ack_seq"] == 5
    with pytest.raises(protocol.ProtocolError):
        protocol.unpack_frame(b"XXXX" + data[4:])
    assert tuple(protocol.CAMERA_PATHS) == tuple(CAMERA_PATHS)
    js = (REPO / "motionstream/app/static/app.js").read_text()
    assert f"FRAME_HEADER_BYTES = {protocol.FRAME_HEADER.size}" in js and f'FRAME_MAGIC = "{protocol.FRAME_MAGIC.decode()}"' in js


# ------------------------------------------------------------------------------- uploads (no server)
def _encode(fmt: str, img: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(f".{fmt}", img)
    assert ok
    return buf.tobytes()


def test_image_headers_are_read_before_decoding():
    from motionstream.app.server import UploadError, decode_image
    from motionstream.video import image_header as sniff_image

    img = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    for fmt, name in [("png", "png"), ("jpg", "jpeg"), ("webp", "webp"), ("bmp", "bmp")]:
        data = _encode(fmt, img)
        assert sniff_image(data) == (name, 53, 37)
        assert decode_image(data, 10 ** 6).shape == (37, 53, 3)
    # a pixel bomb: a valid PNG header claiming 60000 x 60000 is refused before cv2 sees it
    png = bytearray(_encode("png", img))
    png[16:24] = (60000).to_bytes(4, "big") * 2
    with pytest.raises(UploadError, match="pixels") as err:
        decode_image(bytes(png), 40_000_000)
    assert err.value.status == 413
    with pytest.raises(UploadError) as err:
        decode_image(b"GIF89a" + b"\x00" * 100, 10 ** 6)
    assert err.value.status == 415
    with pytest.raises(UploadError, match="cannot decode"):
        decode_image(_encode("png", img)[:60], 10 ** 6)          # valid header, truncated data


def test_latest_wins_queue_and_slot_order(tmp_path):
    from motionstream.app.session import FrameItem, FrameQueue, Session, StreamSlot, StudioConfig

    q = FrameQueue(3)
    for k in range(10):
        q.put(FrameItem(0.0, k, 0, None, 0, 0.0, b""))
    assert [i.frame for i in q.items] == [7, 8, 9] and q.dropped == 7
    for k in range(10, 13):                             # held by a pause: nothing is dropped ...
        q.put(FrameItem(0.0, k, 0, None, 0, 0.0, b""), keep=True)
    assert [i.frame for i in q.items] == [7, 8, 9, 10, 11, 12] and q.dropped == 7
    q.put(FrameItem(0.0, 13, 0, None, 0, 0.0, b""))     # ... until frames come unheld again
    assert [i.frame for i in q.items] == [11, 12, 13] and q.dropped == 11

    loop = asyncio.new_event_loop()
    try:
        sessions = [Session(f"s{k}", loop, StudioConfig(), tmp_path) for k in range(4)]
        slot = StreamSlot()
        assert [slot.request(s) for s in sessions] == [0, 1, 2, 3]
        slot.release(sessions[2])                       # a queued tab closes: the ones behind move up
        assert slot.waiting == [sessions[1], sessions[3]]
        slot.starting_fields = lambda: {"warming_up": True}      # (the server's: its warm-up still runs)
        slot.release(sessions[0])                       # the streaming tab closes: the next one runs at once
        assert slot.active is sessions[1] and slot.waiting == [sessions[3]]
        loop.run_until_complete(asyncio.sleep(0))
        assert json.loads(sessions[3].messages[-1]) == {"type": "queued", "position": 1, "ahead": 1}
        promoted = json.loads(sessions[1].messages[-1])
        assert promoted["status"] == "starting" and promoted["warming_up"] is True
        for s in sessions:
            s.close()
        assert not any(s.dir.exists() for s in sessions)
    finally:
        loop.close()


def test_cli_refuses_an_open_host_without_token_and_names_missing_weights(tmp_path, capsys):
    from motionstream.cli import main

    assert main(["studio", "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err
    assert main(["studio", "--model", str(tmp_path / "nothing-here")]) == 2
    err = capsys.readouterr().err
    assert "nothing-here" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------- a real server
def test_stream_pause_record_and_download(server, tmp_path):
    import httpx

    from motionstream.video import read_video

    image = sample_id(server)

    async def go():
        c = await Client.connect(server.ws_url)
        assert c.hello["width"] == STUDIO_W and "student" in c.hello["model"]["label"]
        await c.send(type="start", image=image, prompt="an astronaut")
        await c.send(type="record", on=True)
        await c.expect("started")
        await c.frames_until(25)
        heads = [h for h, _ in c.frames]
        assert [h["frame"] for h in heads] == list(range(len(heads)))       # in order, none dropped on loopback
        first = c.hello["first_chunk_frames"]
        assert heads[0]["chunk"] == 0 and heads[first - 1]["chunk"] == 0 and heads[first]["chunk"] == 1
        assert heads[-1]["flags"] & protocol.FLAG_RECORDING
        assert heads[-1]["ack_seq"] == 2                                     # both controls applied
        assert decode(c.frames[-1][1]).shape == (STUDIO_H, STUDIO_W, 3)
        # pause: after the in-flight frames are dropped, nothing new arrives
        await c.send(type="pause")
        await c.expect("state", status="paused")
        await c.pump(0.3)
        n = len(c.frames)
        await c.pump(1.5)
        assert len(c.frames) == n
        await c.send(type="resume")
        await c.frames_until(n + 5)
        await c.send(type="stop")
        stopped = await c.expect("stopped")
        assert stopped["recording"].endswith(f"recording.mp4?key={c.hello['session_key']}")
        r = httpx.get(server.url + stopped["recording"], timeout=30)
        assert r.status_code == 200
        out = tmp_path / "rec.mp4"
        out.write_bytes(r.content)
        frames, _ = read_video(out)
        assert frames.shape[1:] == (STUDIO_H, STUDIO_W, 3) and len(frames) >= n + 5
        await c.ws.close()

    run(go())


def test_pause_keeps_the_frames_generated_before_it(server):
    """Space right after a drag: the frames generated before the pause (the chunk in flight, the
    frames queued for playback) arrive on resume, none skipped, and the drag shows."""
    image = sample_id(server)

    async def go():
        c = await streaming_client(server, image, "pause test")
        await c.frames_until(12)
        await c.send(type="pointer_down", id=1, x=40.0, y=48.0, size=16.0, spacing=8.0)
        for k in range(1, 6):
            await c.send(type="pointer_move", id=1, x=40.0 + 4 * k, y=48.0)
        await c.send(type="pointer_up", id=1)
        drag_seq = c.seq
        await c.send(type="pause")
        await c.expect("state", status="paused")
        n = len(c.frames)
        await c.pump(1.0)
        assert len(c.frames) == n                                           # paused: nothing plays
        await c.send(type="resume")
        end = time.monotonic() + 30
        while not any(h["ack_seq"] is not None and h["ack_seq"] >= drag_seq for h, _ in c.frames):
            assert time.monotonic() < end, "the drag never reached a frame"
            await c.pump(0.2)
        heads = [h for h, _ in c.frames]
        assert [h["frame"] for h in heads] == list(range(len(heads)))       # nothing generated was skipped
        await c.send(type="stop")
        await c.expect("stopped")
        await c.ws.close()

    run(go())


def test_stopped_counts_the_frames_the_client_received(server):
    """A stop drops the frames still queued for playback: `stopped` reports what the client got."""
    image = sample_id(server)

    async def go():
        c = await streaming_client(server, image, "stop test")
        await c.frames_until(15)
        await c.send(type="stop")
        stopped = await c.expect("stopped")
        await c.pump(0.5)                                                   # nothing trails the stop
        assert stopped["frames"] == len(c.frames)
        await c.ws.close()

    run(go())


def test_status_messages_carry_the_engines_quality_rung_when_it_has_one():
    """An engine with an adaptive ladder exposes `quality`: `started` / `state` carry it and a change of
    rung is announced once; an engine without one adds nothing."""
    from types import SimpleNamespace

    from motionstream.app.session import GenerationWorker

    worker = GenerationWorker.__new__(GenerationWorker)         # no engine: only the quality plumbing
    worker.gen = SimpleNamespace(next_frame=9, chunk_index=1)
    assert worker.quality_fields() == {}
    worker.gen.quality = "full"
    assert worker.quality_fields() == {"quality": "full"}
    sent: list[str] = []
    session = SimpleNamespace(send=sent.append)
    worker.sent_quality = "full"
    worker.send_quality_change(session)
    assert sent == []
    worker.gen.quality = "2-steps"
    worker.send_quality_change(session)
    worker.send_quality_change(session)
    assert [json.loads(m) for m in sent] == [{"type": "state", "status": "streaming", "frame": 9, "chunk": 1,
                                             "quality": "2-steps"}]


def test_the_worker_reports_warming_up_until_its_warm_up_stream_ends_even_a_failed_one():
    """GenerationWorker.run warms the engine up before serving (the OpenVINO conversions take seconds):
    until that ends, warming_up is true (the page shows "starting (warming up)"); a warm-up that fails
    still ends it, so the first stream starts and meets the error itself."""
    import threading
    from types import SimpleNamespace

    from motionstream.app.session import GenerationWorker

    release = threading.Event()

    def failing_warm_up(width: int, height: int) -> None:
        release.wait(30)
        raise RuntimeError("conversion failed")

    worker = GenerationWorker.__new__(GenerationWorker)         # no engine: only run()'s warm-up plumbing
    threading.Thread.__init__(worker, daemon=True)
    worker.ready = threading.Event()
    worker.cfg, worker.stack = SimpleNamespace(threads=0), SimpleNamespace(width=64, height=36)
    worker.gen = SimpleNamespace(warm_up=failing_warm_up, close=lambda: None)
    worker.slot = SimpleNamespace(wait_active=lambda timeout: time.sleep(0.01), wake=lambda: None)
    worker.stopping = False
    worker.start()
    try:
        assert worker.warming_up
        release.set()
        assert worker.ready.wait(30) and not worker.warming_up
    finally:
        worker.stop()
        worker.join(30)
    assert not worker.is_alive()


def test_a_finished_stream_frees_the_slot_before_its_client_may_start_again(tmp_path):
    """GenerationWorker.finish releases the slot, then the loop sends "stopped" and makes the session
    idle: a start sent from then on gets the slot (one that found the slot still held was answered
    "starting", then lost the slot to the release and never started), and a start clears controls
    that arrived while the old stream ended (a queued stop would end the new stream at once)."""
    from types import SimpleNamespace

    from motionstream.app.server import Studio
    from motionstream.app.session import GenerationWorker, Session, StreamSlot, StudioConfig

    loop = asyncio.new_event_loop()
    try:
        s = Session("s0", loop, StudioConfig(), tmp_path)
        slot = StreamSlot()
        s.request, s.status = {"image": "x"}, "streaming"
        assert slot.request(s) == 0
        worker = GenerationWorker.__new__(GenerationWorker)     # no engine: only finish()'s bookkeeping
        worker.slot, worker.gen = slot, SimpleNamespace(wait=lambda: None, paused=False)
        worker.finish(s)
        assert slot.active is None and s.status == "streaming"  # freed; the loop has not told the client yet
        s.add_command({"type": "stop"})                          # the client's stop, crossing the end
        loop.run_until_complete(asyncio.sleep(0))
        assert s.status == "idle" and json.loads(s.messages[-1])["type"] == "stopped"
        studio = Studio.__new__(Studio)                          # only the start handler's bookkeeping
        studio.slot, studio.media = slot, SimpleNamespace(has_image=lambda image: True)
        studio.handle(s, {"type": "start", "image": "x"})
        assert slot.active is s and s.status == "starting" and not s.commands
        s.close()
    finally:
        loop.close()


def test_pacing_lead_covers_generation_and_transport_within_the_cap():
    """The worker starts the next chunk when the video still to play drops below lead_safety x the
    expected generation time + lead_margin_s (so the chunk arrives before playback runs dry), but
    never more than lead_chunks chunks ahead (that lead is latency a drag waits through)."""
    from motionstream.app.session import StudioConfig, pacing_lead

    cfg = StudioConfig(lead_chunks=1.0, lead_safety=1.5, lead_margin_s=0.05)
    assert pacing_lead(cfg, chunk_seconds=0.25, gen_seconds=0.04) == pytest.approx(0.11)
    assert pacing_lead(cfg, chunk_seconds=0.25, gen_seconds=0.2) == pytest.approx(0.25)     # capped
    assert pacing_lead(StudioConfig(lead_margin_s=0.0), 0.75, 0.1) == pytest.approx(0.15)


def test_uploads_over_http(server):
    import httpx

    img = np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    r = httpx.post(server.url + "/api/images", content=_encode("png", img), timeout=30)
    assert r.status_code == 200 and (r.json()["width"], r.json()["height"]) == (STUDIO_W, STUDIO_H)
    got = httpx.get(server.url + r.json()["url"], timeout=30)
    assert got.headers["content-type"] == "image/jpeg" and decode(got.content).shape == (STUDIO_H, STUDIO_W, 3)
    assert httpx.post(server.url + "/api/images", content=b"\x00" * (17 * 2 ** 20), timeout=30).status_code == 413
    assert httpx.post(server.url + "/api/images", content=b"hello world", timeout=30).status_code == 415
    assert httpx.post(server.url + "/api/videos", content=_encode("png", img), timeout=30).status_code == 415
    assert httpx.post(server.url + "/api/samples/../../etc", timeout=30).status_code in (404, 405)


def test_eight_clients_one_streams_seven_queue_memory_flat(server):
    image = sample_id(server)

    async def go():
        clients = [await Client.connect(server.ws_url) for _ in range(8)]
        for c in clients:
            await c.send(type="start", image=image, prompt="load")
            await asyncio.sleep(0.05)
        await clients[0].expect("started")
        positions = [(await c.expect("queued"))["position"] for c in clients[1:]]
        assert positions == list(range(1, 8))
        rss = []
        for _ in range(6):
            await asyncio.gather(*(c.pump(0.5) for c in clients))
            rss.append(server.rss_mb())
        assert len(clients[0].frames) > 20 and not any(c.frames for c in clients[1:])
        h = server.health()
        assert h["clients"] >= 8 and h["queued"] == 7
        # memory flat while streaming to one and holding seven (frames are not buffered for anyone)
        assert max(rss[2:]) - rss[1] < 40, rss
        # the streaming tab closes: the first in line streams, the others move up
        await clients[0].ws.close()
        await clients[1].expect("started", timeout=30)
        for k, c in enumerate(clients[2:], start=1):
            assert (await c.expect("queued"))["position"] == k
        await clients[1].frames_until(5)
        for c in clients[1:]:
            await c.ws.close()

    run(go())
    h = server.health()
    assert h["worker_alive"] and h["stream_errors"] == 0


def fuzz_messages(rng: random.Random, n: int, exclude: tuple[str, ...] = ()):
    """Hostile or malformed control messages: garbage, wrong types, extremes, valid-looking nonsense."""
    values = [None, True, -1, 0, 1, 2 ** 31, 2 ** 64, -1e308, 1e308, 0.5, "", "x" * 300, [], {}, [[1, 2, 3]] * 3,
              {"a": [1]}, "NaN"]
    kinds = [k for k in protocol.CLIENT_MESSAGES if k not in exclude] + ["", "hello", "__proto__", "start " * 3]
    fields = ["id", "x", "y", "size", "spacing", "x0", "y0", "x1", "y1", "points", "on", "image", "mode", "prompt",
              "video", "camera_path", "camera_strength", "seq", "frame", "chunk", "client_time"]
    for _ in range(n):
        roll = rng.random()
        if roll < 0.1:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
        elif roll < 0.2:
            yield "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 40)))
        elif roll < 0.25:
            yield "[" * rng.randint(1, 5000)
        else:
            msg = {"type": rng.choice(kinds)}
            for f in rng.sample(fields, rng.randint(0, 6)):
                msg[f] = rng.choice(values) if rng.random() < 0.6 else rng.uniform(-500, 500)
            if rng.random() < 0.3:
                msg.update(id=rng.randint(0, 5), x=rng.uniform(-50, 200), y=rng.uniform(-50, 200),
                           size=rng.uniform(1, 200), spacing=rng.uniform(2, 40))
            yield json.dumps(msg)


def test_fuzzed_controls_never_take_the_server_down(server):
    image = sample_id(server)

    async def go():
        streamer = await streaming_client(server, image, "fuzz")
        fuzzer = await Client.connect(server.ws_url)
        sent = 0
        for raw in fuzz_messages(random.Random(0), 400):
            await fuzzer.ws.send(raw)
            sent += 1
        # the streamer also sends hostile controls into its own stream (applied by the worker); not the
        # valid ones that rightly stop or pause it
        for raw in fuzz_messages(random.Random(1), 150, exclude=("stop", "pause")):
            await streamer.ws.send(raw)
        before = len(streamer.frames)
        await asyncio.gather(fuzzer.pump(2.0), streamer.pump(3.0))
        # replies beyond the bounded JSON outbox (max_queued_messages) are dropped, not buffered
        assert len(fuzzer.errors()) >= 64
        await fuzzer.send(type="ping", client_time=123.0)
        await fuzzer.expect("pong", client_time=123.0)
        assert all(set(e) == {"type", "message", "ref", "seq"} for e in fuzzer.errors())
        assert len(streamer.frames) > before + 12                 # still streaming
        await streamer.send(type="stop")
        await streamer.expect("stopped")
        await fuzzer.ws.close()
        await streamer.ws.close()

    run(go())
    h = server.health()
    assert h["status"] == "ok" and h["worker_alive"] and h["stream_errors"] == 0 and not h["warming_up"]


def test_transfer_and_camera_modes_stream_and_mjpeg_shows_them(server, tmp_path):
    import httpx

    from motionstream.video import write_video

    image = sample_id(server, "coffee")
    clip = np.stack([np.roll(np.full((STUDIO_H, STUDIO_W, 3), 40, np.uint8) + (np.arange(STUDIO_W) % 32 < 16)[None, :, None]
                             .astype(np.uint8) * 180, 3 * k, axis=1) for k in range(10)])
    mp4 = write_video(tmp_path / "drive.mp4", clip, fps=16)
    r = httpx.post(server.url + "/api/videos", content=mp4.read_bytes(), timeout=60)
    assert r.status_code == 200 and r.json()["frames"] == 10
    video = r.json()["video"]

    async def go():
        c = await Client.connect(server.ws_url)
        await c.send(type="start", image=image, mode="transfer")               # no video: refused, nothing starts
        assert "driving video" in (await c.expect("error"))["message"]
        for start in ({"mode": "transfer", "video": video}, {"mode": "camera", "camera_path": "orbit"}):
            await c.send(type="start", image=image, prompt="modes", **start)
            assert (await c.expect("started"))["mode"] == start["mode"]
            await c.frames_until(len(c.frames) + 21)
            if start["mode"] == "camera":
                # the MJPEG endpoint shows the generating stream to a plain HTTP viewer
                async with httpx.AsyncClient() as http:
                    async with http.stream("GET", server.url + "/api/stream.mjpeg", timeout=30) as resp:
                        assert resp.headers["content-type"].startswith("multipart/x-mixed-replace")
                        got = b""
                        async for part in resp.aiter_bytes():
                            got += part
                            if got.count(b"--frame") >= 3:
                                break
                jpeg = got.split(b"\r\n\r\n", 1)[1]
                assert decode(jpeg[:jpeg.index(b"\r\n--frame")]).shape == (STUDIO_H, STUDIO_W, 3)
            await c.send(type="stop")
            await c.expect("stopped")
        assert not c.errors()
        await c.ws.close()

    run(go())
    assert server.health()["stream_errors"] == 0


def test_token_and_origin_checks():
    from types import SimpleNamespace

    from motionstream.app.server import Studio, origin_ok

    studio = Studio.__new__(Studio)
    studio.token = "s3cret"

    def conn(query=None, headers=None):
        return SimpleNamespace(query_params=query or {}, headers=headers or {})

    assert studio.authorized(conn({"token": "s3cret"}))
    assert studio.authorized(conn(headers={"x-motionstream-token": "s3cret"}))
    assert studio.authorized(conn(headers={"authorization": "Bearer s3cret"}))
    assert not studio.authorized(conn({"token": "s3cre"})) and not studio.authorized(conn())
    studio.token = None
    assert studio.authorized(conn())
    assert origin_ok({"host": "127.0.0.1:7860"})                                     # not a browser
    assert origin_ok({"host": "127.0.0.1:7860", "origin": "http://127.0.0.1:7860"})
    assert not origin_ok({"host": "127.0.0.1:7860", "origin": "https://evil.example"})


# ------------------------------------------------------------------------------- security
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="     # RFC 6455's sample handshake key


def ws_handshake_status(port: int, host: str) -> str:
    """The status line a raw WebSocket handshake on /ws gets with `host` as its Host (and Origin)."""
    request = (f"GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request.encode())
        return sock.recv(4096).split(b"\r\n", 1)[0].decode()


def test_host_header_must_be_allowed(server):
    """DNS rebinding: a page at evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    import httpx

    evil, local = f"evil.example:{server.port}", f"localhost:{server.port}"
    assert httpx.get(server.url + "/api/health", headers={"Host": evil}, timeout=30).status_code == 400
    assert httpx.get(server.url + "/", headers={"Host": evil}, timeout=30).status_code == 400
    assert httpx.get(server.url + "/api/health", headers={"Host": local}, timeout=30).status_code == 200
    assert " 101 " not in ws_handshake_status(server.port, evil)
    assert " 101 " in ws_handshake_status(server.port, f"127.0.0.1:{server.port}")


def test_host_names_and_allow_list():
    from types import SimpleNamespace

    from motionstream.app.server import host_name
    from motionstream.cli.studio import allowed_hosts

    assert [host_name(h) for h in ("127.0.0.1:7860", "[::1]:7860", "::1", "LocalHost", "a.example:80")] == \
        ["127.0.0.1", "::1", "::1", "localhost", "a.example"]
    args = SimpleNamespace(allow_host=["studio.lan"], host="0.0.0.0")
    assert allowed_hosts(args) == ("studio.lan",)                  # a wildcard bind names no host
    assert allowed_hosts(SimpleNamespace(allow_host=[], host="192.168.1.5")) == ("192.168.1.5",)


def test_sessions_belong_to_the_socket_that_made_them(server):
    """A second client that learns the first one's session id can neither download, stop nor start
    anything in it; /api/health does not name it."""
    import httpx

    image = sample_id(server)

    async def go():
        a = await Client.connect(server.ws_url)
        b = await Client.connect(server.ws_url)
        sid, key = a.hello["session"], a.hello["session_key"]
        assert len(sid) >= 22 and len(key) >= 43 and sid != b.hello["session"]   # 128-bit id, 256-bit key
        await a.send(type="start", image=image, prompt="mine")
        await a.send(type="record", on=True)
        await a.expect("started")
        await a.frames_until(12)
        health = server.health()
        assert health["generating"] is True and sid not in json.dumps(health) and key not in json.dumps(health)
        base = f"{server.url}/api/sessions/{sid}"
        for creds in ({}, {"key": b.hello["session_key"]}, {"key": key[:-1]}):
            assert httpx.get(base + "/recording.mp4", params=creds, timeout=30).status_code == 404
            assert httpx.post(base + "/stop", params=creds, timeout=30).status_code == 404
            assert httpx.post(base + "/start", params=creds, json={"image": image}, timeout=30).status_code == 404
        n = len(a.frames)
        await a.frames_until(n + 6)                      # still streaming, still recording
        assert a.frames[-1][0]["flags"] & protocol.FLAG_RECORDING
        r = httpx.post(base + "/stop", headers={"X-MotionStream-Session-Key": key}, timeout=30)
        assert r.status_code == 200
        stopped = await a.expect("stopped")
        assert f"key={key}" in stopped["recording"]
        got = httpx.get(server.url + stopped["recording"], timeout=30)
        assert got.status_code == 200 and got.content[4:8] == b"ftyp"
        assert b.errors() == []
        await a.ws.close()
        await b.ws.close()

    run(go())


def test_token_from_environment_or_file_never_printed_in_full(monkeypatch, tmp_path, capsys):
    from types import SimpleNamespace

    import motionstream.app.server as server
    import motionstream.cli.studio as srv
    from motionstream.cli import main

    secret = "s3cret-token-0123456789"
    started = []
    stack = SimpleNamespace(label="student x c3s1w1", folder=tmp_path)
    monkeypatch.setattr(srv, "studio_from_args", lambda args: SimpleNamespace(stack=stack, token=srv.resolve_token(args)))
    monkeypatch.setattr(server, "serve", lambda studio, host, port: started.append(studio.token))
    monkeypatch.setenv(srv.TOKEN_ENV, secret)
    assert main(["studio", "--host", "0.0.0.0"]) == 0             # off loopback: the env token counts
    out = capsys.readouterr().out
    assert started == [secret] and secret not in out and srv.shown_token(secret) in out
    monkeypatch.delenv(srv.TOKEN_ENV)
    (tmp_path / "token").write_text(secret + "\n")
    assert main(["studio", "--host", "0.0.0.0", "--token-file", str(tmp_path / "token")]) == 0
    assert started[-1] == secret and secret not in capsys.readouterr().out
    assert main(["studio", "--token-file", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_the_studio_streams_with_the_presets_cache_unless_told_otherwise(monkeypatch):
    """tiny-cpu's studio.cache (c1s3w3: 4-frame chunks, a drag shows sooner) is the studio's default;
    --cache overrides it; a preset without one leaves the model's own."""
    import argparse

    import motionstream.app.server as server
    import motionstream.cli.studio as srv
    import motionstream.stream.stack as stack_module
    from motionstream.app.config import StudioConfig

    loaded = []
    monkeypatch.setattr(stack_module, "load_stream_stack", lambda *a, **kw: loaded.append(kw["cache"]))
    monkeypatch.setattr(server, "Studio", lambda stack, cfg, **kw: cfg)
    p = argparse.ArgumentParser()
    srv.add_studio_arguments(p)
    cfg = srv.studio_from_args(p.parse_args([]))
    assert loaded == ["c1s3w3"] and cfg.cache == "c1s3w3"
    srv.studio_from_args(p.parse_args(["--cache", "c3s1w1"]))
    assert loaded[-1] == "c3s1w1"
    srv.studio_from_args(p.parse_args(["--config", "wan2.1-1.3b"]))     # no studio.cache: the model's shape
    assert loaded[-1] is None and StudioConfig().cache == ""


def test_error_texts_carry_no_server_paths(tmp_path):
    from motionstream.app.server import UploadError, decode_video

    uploads = tmp_path / "private-uploads"
    with pytest.raises(UploadError) as err:
        decode_video(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200, (64, 48), 16.0, 9, uploads)
    assert str(uploads) not in str(err.value) and "private-uploads" not in str(err.value)
    message = json.loads(protocol.error_message(f"stream failed: OSError: cannot open {tmp_path}/weights/x.bin"))
    assert str(tmp_path) not in message["message"] and "x.bin" in message["message"]


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "--serve":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    serve_main(sys.argv[2:])
