"""Video files, images and frame arrays (PyAV, OpenCV), the one place that reads and writes them.

Frames are always uint8 RGB arrays [T, H, W, 3] (or a single [H, W, 3] image). This module is also
the one validation layer for images, videos and output paths: images are size-checked from their
header (`image_header`, MAX_IMAGE_PIXELS, shared with the studio's uploads) before anything is
decoded, videos are probed (`probe_video`: a video stream, a decodable first frame) and output
paths are checked (`check_output`) before the work that would write them.
"""

from __future__ import annotations

import os
import struct
from fractions import Fraction
from pathlib import Path
from typing import Iterator, NamedTuple

import av
import cv2
import numpy as np

from motionstream.errors import ImageFormatError, ImageTooLarge, VideoError  # noqa: F401 (re-exported)
from motionstream.limits import MAX_IMAGE_PIXELS  # noqa: F401 (re-exported)

PIXEL_MAX = 255.0                          # uint8 frames: the largest value (PSNR peak, 0..1 scaling)
IMAGE_FORMATS = ("png", "jpeg", "webp", "bmp")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # images we write
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")   # containers that take the H.264 stream VideoWriter writes
JPEG_SOF_SKIP = (0xC4, 0xC8, 0xCC)          # markers in the SOF range that are not frame headers


def as_video(x: np.ndarray) -> np.ndarray:
    """uint8 frames [T, H, W, 3] (a single [H, W, 3] frame gains T = 1); ValueError for anything else."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {x.dtype}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3], got {x.shape}")
    return x


def _check_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video file not found: {path}")
    return path


# ----------------------------------------------------------------------------------- outputs
def check_writable(path: str | Path, what: str = "output") -> Path:
    """Refuse an output path that cannot be written (an existing folder, a parent that is a file, a
    folder without write permission) before any work is done for it."""
    path = Path(path)
    if path.is_dir():
        raise VideoError(f"{what} {path} is an existing folder; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise VideoError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise VideoError(f"{what} {path}: no permission to write there")
    return path


def check_output(path: str | Path, suffixes: tuple[str, ...] = VIDEO_SUFFIXES, what: str = "output") -> Path:
    """An output path with one of `suffixes` (VIDEO_SUFFIXES, IMAGE_SUFFIXES or both) that can be written."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise VideoError(f"{what} {path}: unsupported file type {path.suffix or '(none)'!r}; use {', '.join(suffixes)}")
    return check_writable(path, what)


# ------------------------------------------------------------------------------------ videos
class VideoInfo(NamedTuple):
    fps: float
    width: int
    height: int


def probe_video(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> VideoInfo:
    """Frame rate and size of a video file whose first frame decodes; VideoError for anything else
    (no file, not a video, audio only, truncated, frames over `max_pixels`)."""

    path = _check_path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream (audio only?)")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > max_pixels:
                raise ImageTooLarge(f"{path}: frames are {width}x{height}; the limit is {max_pixels} pixels "
                                 "(MAX_IMAGE_PIXELS)")
            if next(container.decode(stream), None) is None:
                raise VideoError(f"{path}: no frames decoded")
            rate = stream.average_rate or stream.base_rate or Fraction(16)
            return VideoInfo(float(rate), width, height)
    except av.error.FFmpegError as err:
        raise VideoError(f"cannot decode {path}: {err.strerror or type(err).__name__}") from None


def probe_fps(path: str | Path) -> float:
    return probe_video(path).fps


def iter_frames(path: str | Path, fps: float | None = None, size: tuple[int, int] | None = None,
                max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield uint8 [H, W, 3] RGB frames, resampled to `fps` (nearest source frame in time) and
    resized + centre-cropped to `size` = (width, height) when given."""

    path = _check_path(path)
    src_fps = probe_fps(path)
    count = 0
    next_t = 0.0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                t = i / src_fps
                if fps is not None:
                    # take this source frame for every output time it is nearest to
                    if t + 0.5 / src_fps <= next_t:
                        continue
                img = frame.to_ndarray(format="rgb24")
                if size is not None:
                    img = resize_crop(img, size)
                reps = 1
                if fps is not None:
                    reps = 0
                    while next_t < t + 0.5 / src_fps:
                        reps += 1
                        next_t += 1.0 / fps
                for _ in range(reps):
                    yield img
                    count += 1
                    if max_frames is not None and count >= max_frames:
                        return
    except av.error.FFmpegError as err:   # a file that breaks after a good first frame
        raise VideoError(f"cannot decode {path}: {err.strerror or type(err).__name__}") from None


def read_video(path: str | Path, fps: float | None = None, size: tuple[int, int] | None = None,
               max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """(frames uint8 [T, H, W, 3], fps of the returned frames)."""
    frames = list(iter_frames(path, fps, size, max_frames))
    if not frames:
        raise VideoError(f"no frames decoded from {path}")
    return np.stack(frames), float(fps if fps is not None else probe_fps(path))


def resize_crop(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to cover (width, height), then centre-crop to exactly that size."""

    w, h = size
    ih, iw = img.shape[:2]
    s = max(w / iw, h / ih)
    nw, nh = max(w, round(iw * s)), max(h, round(ih * s))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    x0, y0 = (nw - w) // 2, (nh - h) // 2
    return np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w])


# ------------------------------------------------------------------------------------ images
def image_header(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from an image file's header alone (nothing is decoded);
    ImageFormatError for anything but IMAGE_FORMATS."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return "png", w, h
    if data.startswith(b"\xff\xd8"):
        return ("jpeg",) + _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8 ":
            w, h = struct.unpack("<HH", data[26:30])
            return "webp", w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L":
            b = int.from_bytes(data[21:25], "little")
            return "webp", (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return "webp", int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return "bmp", abs(w), abs(h)
    raise ImageFormatError(f"not an image in an accepted format ({', '.join(IMAGE_FORMATS)})")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Width, height from the first SOF marker of a JPEG."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in JPEG_SOF_SKIP:
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    raise VideoError("JPEG without a frame header")


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS, as_rgb: bool = True) -> np.ndarray:
    """uint8 RGB [H, W, 3] from an image file's bytes: the header's size is checked against
    `max_pixels` first (ImageTooLarge), then OpenCV decodes. Used by read_image, depth maps and the
    studio. as_rgb=False: the stored channels and bit depth as they are (16-bit depth maps)."""

    fmt, w, h = image_header(data)
    if w < 1 or h < 1:
        raise VideoError(f"{fmt} image with an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ImageTooLarge(f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels} (MAX_IMAGE_PIXELS)")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR if as_rgb else cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None or (as_rgb and img.ndim != 3):
        raise VideoError(f"cannot decode this {fmt} image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if as_rgb else img


def read_image(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB image from a PNG, JPEG, WebP or BMP file (decode_image: size-checked first)."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"image file not found: {path}")
    try:
        img = decode_image(path.read_bytes())
    except VideoError as err:
        raise type(err)(f"{path}: {err}") from None
    return resize_crop(img, size) if size is not None else img


def write_image(path: str | Path, img: np.ndarray) -> Path:
    path = check_output(path, IMAGE_SUFFIXES)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.asarray(img, np.uint8), cv2.COLOR_RGB2BGR)):
        raise VideoError(f"cannot write image {path}")
    return path


class VideoWriter:
    """Incremental H.264 mp4 writer (frames can arrive chunk by chunk while streaming)."""

    def __init__(self, path: str | Path, fps: float, crf: int = 18):
        self.path = check_output(path, VIDEO_SUFFIXES)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.crf = crf
        self._av = av
        self._container = av.open(str(self.path), mode="w")
        self._stream = None

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 frames [T, H, W, 3] (or one [H, W, 3])."""
        frames = np.asarray(frames, np.uint8)
        if frames.ndim == 3:
            frames = frames[None]
        if self._stream is None:
            h, w = frames.shape[1:3]
            self._stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            self._stream.width, self._stream.height = w - w % 2, h - h % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self.crf), "preset": "veryfast"}
        w, h = self._stream.width, self._stream.height
        for f in frames:
            frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h, :w]), format="rgb24")
            for packet in self._stream.encode(frame):
                self._container.mux(packet)

    def close(self) -> None:
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(path: str | Path, frames: np.ndarray, fps: float, crf: int = 18) -> Path:
    """Write uint8 frames [T, H, W, 3] to an H.264 mp4 (odd sizes are cropped to even)."""
    if len(frames) == 0:
        raise VideoError("no frames to write")
    with VideoWriter(path, fps, crf) as w:
        w.write(frames)
    return Path(path)
