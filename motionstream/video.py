"""Video files and frame arrays (PyAV), the one place that reads and writes them.

Frames are always uint8 RGB arrays [T, H, W, 3] (or a single [H, W, 3] image).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np


class VideoError(ValueError):
    """A video or image file is missing, unreadable or empty."""


def _check_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video file not found: {path}")
    return path


def probe_fps(path: str | Path) -> float:
    import av

    with av.open(str(_check_path(path))) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate or Fraction(16)
        return float(rate)


def iter_frames(path: str | Path, fps: float | None = None, size: tuple[int, int] | None = None,
                max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield uint8 [H, W, 3] RGB frames, resampled to `fps` (nearest source frame in time) and
    resized + centre-cropped to `size` = (width, height) when given."""
    import av

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
    except av.error.InvalidDataError as err:  # pragma: no cover - depends on the file
        raise VideoError(f"cannot decode {path}: {err}") from err


def read_video(path: str | Path, fps: float | None = None, size: tuple[int, int] | None = None,
               max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """(frames uint8 [T, H, W, 3], fps of the returned frames)."""
    frames = list(iter_frames(path, fps, size, max_frames))
    if not frames:
        raise VideoError(f"no frames decoded from {path}")
    return np.stack(frames), float(fps if fps is not None else probe_fps(path))


def resize_crop(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to cover (width, height), then centre-crop to exactly that size."""
    import cv2

    w, h = size
    ih, iw = img.shape[:2]
    s = max(w / iw, h / ih)
    nw, nh = max(w, round(iw * s)), max(h, round(ih * s))
    img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    x0, y0 = (nw - w) // 2, (nh - h) // 2
    return np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w])


def read_image(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB image from any format OpenCV reads (or .npy)."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"image file not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise VideoError(f"cannot read image {path}")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return resize_crop(img, size) if size is not None else img


def write_image(path: str | Path, img: np.ndarray) -> Path:
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.asarray(img, np.uint8), cv2.COLOR_RGB2BGR)):
        raise VideoError(f"cannot write image {path}")
    return path


class VideoWriter:
    """Incremental H.264 mp4 writer (frames can arrive chunk by chunk while streaming)."""

    def __init__(self, path: str | Path, fps: float, crf: int = 18):
        import av

        self.path = Path(path)
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
