"""`motionstream demo` (`make demo`): the studio on the shipped weights.

Starts `motionstream studio` on weights/student-tiny-cpu (the distilled causal student). When the
student has not shipped yet it says so, names what it looked for, and falls back to
weights/teacher-tiny-cpu streamed causally (not distilled: the page says so). When no streaming
model exists at all it says how to start the studio on another model folder and falls back to
the tracking demo: a 50x50 grid tracked through ~5 s of the sample clip
(../shared/media/bigbuckbunny.mp4), drawn over the video to out/demo_tracks.mp4. `--tracks-only`,
`--video` or `-o` ask for the tracking demo directly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from motionstream.config import REPO_ROOT

SAMPLE_VIDEO = REPO_ROOT.parent / "shared" / "media" / "bigbuckbunny.mp4"
OUT_DIR = REPO_ROOT / "out"
DEMO_FRAMES = 81      # 5 s at 16 fps, the paper's clip length
DEMO_SIZE = "832x480"  # the paper's Wan 2.1 resolution
DEMO_MODELS = ("student", "teacher")   # tried in this order


def cmd_demo(args: argparse.Namespace) -> int:
    from motionstream.cli.studio import check_host, resolve_token, run_studio

    # the tracking demo's own options (a video, an output) ask for the tracking demo
    tracks_only = args.tracks_only or args.video is not None or args.output is not None
    args.video = args.video or str(SAMPLE_VIDEO)
    args.output = args.output or str(OUT_DIR / "demo_tracks.mp4")
    if not tracks_only:
        check_host(args.host, resolve_token(args))
        if args.model != "student":          # an explicit model: just the studio
            return run_studio(args)
        problems = []
        for model in DEMO_MODELS:
            reason = streaming_model_missing(model, args.config)
            if reason is None:
                if problems:
                    print("motionstream demo: " + "; ".join(problems), file=sys.stderr)
                    print(f"motionstream demo: falling back to --model {model}", file=sys.stderr)
                args.model = model
                return run_studio(args)
            problems.append(reason)
        print("motionstream demo: no shipped streaming weights yet: " + "; ".join(problems), file=sys.stderr)
        print("motionstream demo: start the studio on any model folder with `motionstream studio --model PATH "
              "--vae PATH --tiny-decoder PATH`; meanwhile, the tracking demo:", file=sys.stderr)
    return tracking_demo(args)


def streaming_model_missing(model: str, config: str) -> str | None:
    """None when `model` and the codec it streams with are on disk, else why not (one line)."""
    from motionstream.config import load_config, section
    from motionstream.models.checkpoints import WeightsNotFound, resolve_model_dir
    from motionstream.stream.engine import STUDENT_WEIGHTS, TEACHER_WEIGHTS, StreamConfig

    sc = section(load_config(config), "stream", StreamConfig)
    names = [{"student": sc.student or STUDENT_WEIGHTS, "teacher": TEACHER_WEIGHTS}[model], sc.vae]
    if sc.decoder == "tiny":
        names.append(sc.tiny_decoder)
    for name in names:
        try:
            resolve_model_dir(name)
        except WeightsNotFound:
            return f"{model}: weights/{name} not found"
    return None


def tracking_demo(args: argparse.Namespace) -> int:
    """Track a grid through the sample clip and write the tracks drawn over the video."""
    import time

    from motionstream.errors import UserError
    from motionstream.cli.common import parse_size
    from motionstream.tracks.draw import save_overlay
    from motionstream.tracks.io import save_tracks
    from motionstream.tracks.tracker import track_video

    video = Path(args.video)
    if not video.is_file():
        raise UserError(f"sample video not found: {video} (pass another one with --video)")
    out = Path(args.output)
    start = time.perf_counter()
    ts, frames = track_video(video, grid=args.grid, fps=16, size=parse_size(args.size or DEMO_SIZE), max_frames=DEMO_FRAMES,
                             progress=True)
    save_tracks(out.with_suffix(".npz"), ts)
    save_overlay(out, frames, ts, tail=8)
    print(f"tracked {ts.num_tracks} points over {ts.num_frames} frames ({ts.width}x{ts.height}) "
          f"in {time.perf_counter() - start:.1f} s")
    print(out)
    return 0


def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
    from motionstream.cli.studio import add_studio_arguments

    p = commands.add_parser("demo", help="start the studio on the shipped weights (make demo)",
                            description="Start the interactive studio on weights/student-tiny-cpu (falling back "
                            "to the teacher, then to a tracking demo of the sample clip, with a message saying why).")
    add_studio_arguments(p)
    p.set_defaults(model="student")
    p.add_argument("--tracks-only", action="store_true", help="run the tracking demo instead of the studio")
    p.add_argument("--video", default=None, help=f"tracking demo (implies it): input video (default {SAMPLE_VIDEO})")
    p.add_argument("-o", "--output", default=None,
                   help=f"tracking demo (implies it): overlay video (default {OUT_DIR / 'demo_tracks.mp4'}); "
                   f"--size sets its WIDTHxHEIGHT (default {DEMO_SIZE})")
    p.add_argument("--grid", type=int, default=50, help="tracking demo: points per side of the grid (default 50)")
    p.set_defaults(func=cmd_demo)
