"""Tracks benchmark: extract + overlay wall time for an 81-frame 832x480 clip (paper resolution).

    .venv/bin/python benchmarks/tracks.py [--video PATH] [--grid 50]

The clip is cut once from ../shared/media/bigbuckbunny.mp4 (first 81 frames at 16 fps, resized +
centre-cropped to 832x480, lossless) into cache/bench/bbb_81f_832x480.mp4, so the timed run decodes
a clip of exactly the benchmark's size. Prints the time of each stage and frames/s; also times the
other sources of tracks (camera over a depth map, Eq. 1 rasterization) at the same size.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from motionstream.config import REPO_ROOT

NUM_FRAMES, WIDTH, HEIGHT, FPS = 81, 832, 480, 16
SOURCE = REPO_ROOT.parent / "shared" / "media" / "bigbuckbunny.mp4"
CLIP = REPO_ROOT / "cache" / "bench" / f"bbb_{NUM_FRAMES}f_{WIDTH}x{HEIGHT}.mp4"
VAE_STRIDE = 8


def make_clip(source: Path) -> Path:
    from motionstream.video import read_video, write_video

    if not CLIP.is_file():
        frames, _ = read_video(source, fps=FPS, size=(WIDTH, HEIGHT), max_frames=NUM_FRAMES)
        write_video(CLIP, frames, FPS, crf=0)
    return CLIP


def timed(label: str, fn, frames: int = NUM_FRAMES):
    start = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - start
    print(f"{label:<34} {dt:7.2f} s  {frames / dt:7.1f} frames/s")
    return out, dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(SOURCE))
    parser.add_argument("--grid", type=int, default=50)
    args = parser.parse_args()

    import cv2

    from motionstream.tracks.camera import camera_path, camera_tracks
    from motionstream.tracks.draw import save_overlay
    from motionstream.tracks.embed import rasterize, with_ids
    from motionstream.tracks.tracker import track_frames
    from motionstream.video import read_video

    clip = make_clip(Path(args.video))
    out_dir = REPO_ROOT / "runs" / "bench_tracks"
    print(f"clip: {clip} ({NUM_FRAMES} frames, {WIDTH}x{HEIGHT}), grid {args.grid}x{args.grid}, "
          f"cv2 threads {cv2.getNumThreads()}")
    (frames, _), t_decode = timed("decode", lambda: read_video(clip))
    ts, t_track = timed("track (LK + forward-backward)", lambda: track_frames(frames, grid=args.grid, fps=FPS))
    _, t_overlay = timed("overlay (draw + H.264 encode)",
                         lambda: save_overlay(out_dir / "overlay.mp4", frames, ts, progress=False))
    total = t_decode + t_track + t_overlay
    print(f"{'extract + overlay total':<34} {total:7.2f} s  {NUM_FRAMES / total:7.1f} frames/s  "
          f"({ts.visibility[-1].mean():.0%} of tracks visible at the last frame)")

    depth = 1.0 + 4.0 * np.linspace(0, 1, HEIGHT)[:, None] * np.ones((1, WIDTH))  # a receding ground plane
    timed("camera tracks (orbit, z-buffer)", lambda: camera_tracks(depth, None, camera_path("orbit", NUM_FRAMES),
                                                                    grid=args.grid, fps=FPS))
    ids_ts = with_ids(ts)
    timed(f"rasterize Eq. 1 (stride {VAE_STRIDE}, d=64)", lambda: rasterize(ids_ts, VAE_STRIDE, 64))
    print(f"overlay written to {out_dir / 'overlay.mp4'}")


if __name__ == "__main__":
    main()
