"""The studio's socket protocol: JSON controls up, stamped JPEG frames down (docs/PROTOCOL.md).

Pure functions and constants, no server: other clients (a script, a game engine, OBS glue) can
import this module to speak to `motionstream studio`.

Up (client -> server), one JSON object per text message:

    {"type": "pointer_move", "id": 3, "x": 120.5, "y": 64.0, "seq": 57, "frame": 131, "chunk": 10}

`type` picks the schema in CLIENT_MESSAGES; every message may carry the stamps `seq` (the client's
counter, echoed in the frames generated after the message was applied: latency), `frame` and
`chunk` (what the client was showing when it acted). Coordinates are pixels of the stream's image
(the size `hello` announces), top-left origin, like motionstream.tracks.TrackSet.

Down (server -> client): JSON text messages (`hello`, `queued`, `started`, `state`, `stopped`,
`error`, `pong`, `recording`) and binary frames: FRAME_HEADER (little-endian, FRAME_HEADER.size
bytes) followed by one JPEG image:

    magic b"MSF1" | uint32 frame | uint32 chunk | uint32 ack_seq | uint32 flags | float64 sent_ms | float32 gen_ms

frame: stream frame index (0 = the image), chunk: chunk index, ack_seq: the highest `seq` applied
before this chunk was generated (0xFFFFFFFF = none yet), flags: FLAG_* bits, sent_ms: server wall
clock (ms since the epoch) when the frame was put on the socket, gen_ms: time the chunk took.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
FRAME_MAGIC = b"MSF1"
FRAME_HEADER = struct.Struct("<4sIIIIdf")
NO_SEQ = 0xFFFFFFFF                    # ack_seq before any stamped control was applied
FLAG_RECORDING = 1                     # the frame went into the session's recording
FLAG_CHUNK_START = 2                   # first frame of its chunk

MODES = ("drag", "transfer", "camera")
CAMERA_PATHS = ("orbit", "dolly", "pan", "truck")   # = motionstream.tracks.camera.CAMERA_PATHS (tested)

MAX_COORD = 1.0e5                      # |x|, |y| beyond this are garbage, not pixels
MAX_ID = 2 ** 31 - 1
MAX_SEQ = 2 ** 32 - 2
MAX_PROMPT_CHARS = 500
MAX_ID_CHARS = 64
MAX_PATH_POINTS = 2048                 # keyframes of one pre-drawn path
MAX_PATH_MS = 10 * 60 * 1000.0         # a path plays for at most 10 minutes
MIN_GRID_SPACING, MAX_GRID_SPACING = 2.0, 256.0
MIN_GRID_SIZE, MAX_GRID_SIZE = 1.0, 4096.0


class ProtocolError(ValueError):
    """A client message that cannot be applied; `ref` is its type when known."""

    def __init__(self, message: str, ref: str | None = None, seq: int | None = None):
        super().__init__(message)
        self.ref, self.seq = ref, seq


# ----------------------------------------------------------------------------- field kinds
@dataclass(frozen=True)
class Num:
    """A finite number in [lo, hi]."""
    lo: float = -MAX_COORD
    hi: float = MAX_COORD
    required: bool = True
    integer: bool = False


@dataclass(frozen=True)
class Text:
    max_chars: int = MAX_ID_CHARS
    required: bool = True
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Flag:
    required: bool = True


@dataclass(frozen=True)
class Keyframes:
    """[[ms, x, y], ...]: ms >= 0 from the path's start, non-decreasing."""
    max_points: int = MAX_PATH_POINTS
    required: bool = True


COORD = Num()
SPACING = Num(MIN_GRID_SPACING, MAX_GRID_SPACING)
SIZE = Num(MIN_GRID_SIZE, MAX_GRID_SIZE)
DRAG_ID = Num(0, MAX_ID, integer=True)

CLIENT_MESSAGES: dict[str, dict[str, Any]] = {
    # start (or queue for) a stream; Enter on the page
    "start": {"image": Text(), "prompt": Text(MAX_PROMPT_CHARS, required=False),
              "mode": Text(choices=MODES, required=False), "video": Text(required=False),
              "camera_path": Text(choices=CAMERA_PATHS, required=False),
              "camera_strength": Num(-3.0, 3.0, required=False)},
    "stop": {},                                       # end the stream (or leave the queue); Enter
    "pause": {}, "resume": {},                        # Space
    "pointer_down": {"id": DRAG_ID, "x": COORD, "y": COORD, "size": SIZE, "spacing": SPACING},   # grab (green)
    "pointer_move": {"id": DRAG_ID, "x": COORD, "y": COORD},
    "pointer_up": {"id": DRAG_ID},
    "pin": {"x0": COORD, "y0": COORD, "x1": COORD, "y1": COORD, "spacing": SPACING},             # static grid (red)
    "clear_pins": {},
    "path": {"points": Keyframes(), "size": SIZE, "spacing": SPACING},                          # pre-drawn (blue)
    "record": {"on": Flag()},
    "ping": {"client_time": Num(-1e15, 1e15)},
}
STAMPS = {"seq": Num(0, MAX_SEQ, required=False, integer=True),
          "frame": Num(0, 2 ** 53, required=False, integer=True),
          "chunk": Num(0, 2 ** 53, required=False, integer=True)}


def _number(value: Any, spec: Num, name: str, ref: str) -> float | int:
    # bool is an int in Python; JSON true is not a number here
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{ref}.{name} must be a number, got {type(value).__name__}", ref)
    if not math.isfinite(value) or not spec.lo <= value <= spec.hi:
        raise ProtocolError(f"{ref}.{name} must be a finite number in [{spec.lo:g}, {spec.hi:g}], got {value!r}", ref)
    if spec.integer:
        if float(value) != int(value):
            raise ProtocolError(f"{ref}.{name} must be an integer, got {value!r}", ref)
        return int(value)
    return float(value)


def _keyframes(value: Any, spec: Keyframes, name: str, ref: str) -> list[tuple[float, float, float]]:
    if not isinstance(value, list) or not 1 <= len(value) <= spec.max_points:
        raise ProtocolError(f"{ref}.{name} must be a list of 1..{spec.max_points} [ms, x, y] points", ref)
    out, last = [], 0.0
    ms_spec = Num(0.0, MAX_PATH_MS)
    for p in value:
        if not isinstance(p, list) or len(p) != 3:
            raise ProtocolError(f"{ref}.{name}: every point must be [ms, x, y]", ref)
        ms = _number(p[0], ms_spec, f"{name}[].ms", ref)
        if ms < last:
            raise ProtocolError(f"{ref}.{name}: times must not decrease", ref)
        last = ms
        out.append((ms, _number(p[1], COORD, f"{name}[].x", ref), _number(p[2], COORD, f"{name}[].y", ref)))
    return out


def _field(value: Any, spec: Any, name: str, ref: str) -> Any:
    if isinstance(spec, Num):
        return _number(value, spec, name, ref)
    if isinstance(spec, Text):
        if not isinstance(value, str) or len(value) > spec.max_chars:
            raise ProtocolError(f"{ref}.{name} must be a string of at most {spec.max_chars} characters", ref)
        if spec.choices is not None and value not in spec.choices:
            raise ProtocolError(f"{ref}.{name} must be one of {list(spec.choices)}, got {value[:40]!r}", ref)
        return value
    if isinstance(spec, Flag):
        if not isinstance(value, bool):
            raise ProtocolError(f"{ref}.{name} must be true or false", ref)
        return value
    return _keyframes(value, spec, name, ref)


def parse_client_message(raw: str | bytes, max_bytes: int) -> dict[str, Any]:
    """One text message from a client -> a validated dict (unknown keys dropped, stamps kept).

    Raises ProtocolError with a one-line reason for anything else: binary data, more than
    `max_bytes`, bad JSON, not an object, unknown type, missing / mistyped / out-of-range fields."""
    if isinstance(raw, (bytes, bytearray)):
        raise ProtocolError("binary messages are not accepted: send JSON text")
    if len(raw) > max_bytes:
        raise ProtocolError(f"message too long ({len(raw)} characters > {max_bytes})")
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise ProtocolError(f"not JSON: {str(err)[:80]}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a message must be a JSON object with a 'type'")
    kind = msg.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_MESSAGES:
        shown = kind[:40] if isinstance(kind, str) else type(kind).__name__
        raise ProtocolError(f"unknown message type {shown!r}; known: {sorted(CLIENT_MESSAGES)}")
    out: dict[str, Any] = {"type": kind}
    seq = msg.get("seq")
    for name, spec in {**CLIENT_MESSAGES[kind], **STAMPS}.items():
        if name not in msg or msg[name] is None:
            if spec.required:
                raise ProtocolError(f"{kind} needs '{name}'", kind, seq if isinstance(seq, int) else None)
            continue
        try:
            out[name] = _field(msg[name], spec, name, kind)
        except ProtocolError as err:
            err.seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
            raise
    return out


# -------------------------------------------------------------------------------- frames
def pack_frame(jpeg: bytes, frame: int, chunk: int, ack_seq: int | None, flags: int, sent_ms: float,
               gen_ms: float) -> bytes:
    """A binary frame message: FRAME_HEADER + JPEG bytes."""
    ack = NO_SEQ if ack_seq is None else int(ack_seq)
    return FRAME_HEADER.pack(FRAME_MAGIC, int(frame), int(chunk), ack, int(flags), float(sent_ms),
                             float(gen_ms)) + jpeg


def unpack_frame(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header fields, JPEG bytes) of a binary frame message (for Python clients and tests)."""
    if len(data) < FRAME_HEADER.size:
        raise ProtocolError(f"frame message shorter than its {FRAME_HEADER.size}-byte header")
    magic, frame, chunk, ack, flags, sent_ms, gen_ms = FRAME_HEADER.unpack_from(data)
    if magic != FRAME_MAGIC:
        raise ProtocolError(f"bad frame magic {magic!r}")
    head = {"frame": frame, "chunk": chunk, "ack_seq": None if ack == NO_SEQ else ack, "flags": flags,
            "sent_ms": sent_ms, "gen_ms": gen_ms}
    return head, bytes(data[FRAME_HEADER.size:])


def server_message(kind: str, **fields: Any) -> str:
    """A JSON text message from the server."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))


ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"]+/)+([^\s/'\"]*)")


def redact_paths(text: str) -> str:
    """`text` with every absolute file path cut to its last part: clients never see server paths
    (temp files, model folders, the recording folder) in an error."""
    return ABSOLUTE_PATH.sub(lambda m: m.group(1) or "<path>", text)


def error_message(message: str, ref: str | None = None, seq: int | None = None) -> str:
    return server_message("error", message=redact_paths(str(message))[:300], ref=ref, seq=seq)
