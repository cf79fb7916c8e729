"""`motionstream demo`: the most useful end-to-end thing available until the studio exists.

Tracks a 50x50 grid through the first ~5 s of the sample clip (../shared/media/bigbuckbunny.mp4)
and writes the tracks drawn over the video to out/demo_tracks.mp4 (+ the tracks to out/demo_tracks.npz).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from motionstream.config import REPO_ROOT

SAMPLE_VIDEO = REPO_ROOT.parent / "shared" / "media" / "bigbuckbunny.mp4"
OUT_DIR = REPO_ROOT / "out"
DEMO_FRAMES = 81      # 5 s at 16 fps, the paper's clip length
DEMO_SIZE = "832x480"  # the paper's Wan 2.1 resolution


def cmd_demo(args: argparse.Namespace) -> int:
    import time

    from motionstream.cli import UserError
    from motionstream.tracks.cli import parse_size
    from motionstream.tracks.draw import save_overlay
    from motionstream.tracks.io import save_tracks
    from motionstream.tracks.tracker import track_video

    video = Path(args.video)
    if not video.is_file():
        raise UserError(f"sample video not found: {video} (pass another one with --video)")
    out = Path(args.output)
    start = time.perf_counter()
    ts, frames = track_video(video, grid=args.grid, fps=16, size=parse_size(args.size), max_frames=DEMO_FRAMES,
                             progress=True)
    save_tracks(out.with_suffix(".npz"), ts)
    save_overlay(out, frames, ts, tail=8)
    print(f"tracked {ts.num_tracks} points over {ts.num_frames} frames ({ts.width}x{ts.height}) "
          f"in {time.perf_counter() - start:.1f} s")
    print(out)
    return 0


def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
    p = commands.add_parser("demo", help="run the end-to-end demo (for now: track a sample clip, write an overlay)",
                            description="Track a 50x50 grid through the sample clip with Lucas-Kanade and write "
                            "the tracks drawn over the video to out/demo_tracks.mp4.")
    p.add_argument("--video", default=str(SAMPLE_VIDEO), help=f"input video (default {SAMPLE_VIDEO})")
    p.add_argument("-o", "--output", default=str(OUT_DIR / "demo_tracks.mp4"), help="overlay video to write")
    p.add_argument("--size", default=DEMO_SIZE, help=f"WIDTHxHEIGHT to resize + crop to (default {DEMO_SIZE})")
    p.add_argument("--grid", type=int, default=50, help="points per side of the grid (default 50)")
    p.set_defaults(func=cmd_demo)
