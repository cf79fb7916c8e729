"""`motionstream generate | transfer | camera | edit`: the applications, each writing an mp4.

    motionstream generate --image IMG --prompt TEXT --tracks FILE -o out.mp4 [--frames N]
    motionstream transfer --image IMG --video DRIVING.mp4 -o out.mp4 [--frames N]
    motionstream camera   --image IMG --depth DEPTH --path orbit|dolly|pan|truck -o out.mp4
    motionstream edit     --image IMG --drag x0,y0:x1,y1 [--drag ...] -o clip.mp4 [--edited out.png]

Common options: --model student (default: weights/student-tiny-cpu, the causal student streamed
with the rolling cache) | teacher (weights/teacher-tiny-cpu, offline, joint guidance) | PATH (any
model folder; its config.json `kind` says which), --config (preset), --frames, --cache cXsYwZ,
--decoder tiny|full, --seed. `generate` is registered here unless another module (the teacher's
cli/generate.py) already registered it; `run_generate(args)` serves `--model student` for it.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np

from motionstream.cli.common import check_grid, user_errors
from motionstream.errors import UserError

SINK_REFRESH_HELP = ("re-anchor the attention sink every N chunks for scene changes (default 0 = off; on [world] "
                     "scenes it loses more PSNR over a long stream than the fixed sink: see README)")
QUALITY_HELP = ("quality rung: full (the student's own steps), a rung of the preset's stream.quality_ladder "
                "(e.g. 1-step), or auto (the preset's rung, stepping down while the machine falls behind real "
                "time); default: the preset's stream.quality")

SUBCOMMANDS = ("generate", "transfer", "camera", "edit")


# ----------------------------------------------------------------------------- shared setup
def read_inputs(args: argparse.Namespace, image_outputs: tuple[str, ...] = ()) -> np.ndarray:
    """The checks every sub-command makes before any model loads: the output path(s), --frames, the
    image (size-checked from its header, then decoded). Returns the image, uint8 RGB at its own size.
    image_outputs: attribute names of extra outputs that are images (edit's --edited)."""
    from motionstream.tracks.io import MAX_TRACK_FRAMES
    from motionstream.video import IMAGE_SUFFIXES, check_output, read_image

    check_output(args.output, what="--output")
    for name in image_outputs:
        if getattr(args, name, None):
            check_output(getattr(args, name), IMAGE_SUFFIXES, what=f"--{name}")
    if args.frames is not None and not 1 <= args.frames <= MAX_TRACK_FRAMES:
        raise UserError(f"--frames must be within [1, {MAX_TRACK_FRAMES}] (MAX_TRACK_FRAMES), got {args.frames}")
    return read_image(args.image)


def parse_drags(specs: list[str]) -> list[tuple[float, float, float, float]]:
    """--drag ['x0,y0:x1,y1', ...] -> [(x0, y0, x1, y1), ...] in pixels; UserError naming the bad spec."""
    drags = []
    for spec in specs:
        try:
            a, b = spec.split(":")
            x0, y0 = (float(v) for v in a.split(","))
            x1, y1 = (float(v) for v in b.split(","))
        except ValueError:
            raise UserError(f"a drag must look like x0,y0:x1,y1 (pixels), got {spec!r}") from None
        drags.append((x0, y0, x1, y1))
    return drags


def load_stack(args: argparse.Namespace):
    """The stream.stack.StreamStack the arguments name, loaded once; every loading failure is a
    one-line UserError. args: this module's parser, or cli/generate.py's (options it lacks take their
    defaults). Call it after read_inputs, so that bad inputs fail before any model loads."""
    import torch

    from motionstream.config import ConfigError
    from motionstream.models.checkpoints import WeightsNotFound
    from motionstream.stream.stack import StreamModelNotFound, load_stream_stack
    from motionstream.cli.common import parse_size

    for name in ("size", "cache", "decoder", "sink_refresh", "tiny_decoder", "vae", "seed", "steps", "quality"):
        if not hasattr(args, name):
            setattr(args, name, None)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return load_stream_stack(args.model, args.config, parse_size(args.size), vae=args.vae,
                                 tiny_decoder=args.tiny_decoder, decoder=args.decoder, seed=args.seed,
                                 sink_refresh_chunks=args.sink_refresh, cache=args.cache, quality=args.quality,
                                 offline_teacher=True)
    except StreamModelNotFound as err:
        hint = (" The distilled student has not shipped yet: pass --model teacher or --model PATH to a "
                "model folder." if args.model == "student" else "")
        raise UserError(f"{err}{hint}") from None
    except (WeightsNotFound, ConfigError, ValueError) as err:
        raise UserError(str(err)) from None


def frames_wanted(args: argparse.Namespace, fallback: int) -> int:
    """--frames, else the sub-command's own length (the track file's, the driving video's, ...)."""
    return args.frames if args.frames is not None else fallback


def run_and_report(st, args: argparse.Namespace, image: np.ndarray, source, num_frames: int, what: str,
                   overlay=None) -> dict:
    """stream.apps.run_app on the image fitted to the stack's size (cover + centre crop), then one
    summary line. Returns run_app's result."""
    from motionstream.stream.apps import run_app
    from motionstream.video import resize_crop

    result = run_app(st, resize_crop(image, st.size), args.prompt, source, num_frames, args.output, steps=args.steps,
                     progress=not args.no_progress, overlay=overlay)
    mode = "teacher (offline)" if st.is_teacher else f"student {st.stream_cfg.name}"
    print(f"{what}: wrote {result['frames']} frames to {result['path']} in {result['seconds']:.1f}s "
          f"({result['fps']:.1f} fps, {mode})")
    return result


# ------------------------------------------------------------------------------- handlers
@user_errors
def run_generate(args: argparse.Namespace) -> int:
    """image + prompt + track file -> video."""
    from motionstream.tracks.io import load_tracks, resample

    image = read_inputs(args)
    ih, iw = image.shape[:2]
    ts = load_tracks(args.tracks, width=iw, height=ih)     # checked before the model loads ...
    from motionstream.diffusion.generate import fit_tracks     # (these load torch: after the checks)
    from motionstream.stream.apps import TrackFileSource, conditioning_subset, track_overlay

    st = load_stack(args)
    if ts.fps != st.fps:
        ts = resample(ts, st.fps)                           # ... resampled to its frame rate after
    if (ts.width, ts.height) != (iw, ih):
        ts = ts.scaled(iw, ih)   # tracks made for another size of the same image
    ts = conditioning_subset(fit_tracks(ts, *st.size), st.latent_cells, st.stream_cfg.seed, st.tracks_cfg,
                             keep_all=getattr(args, "all_tracks", False))
    n = frames_wanted(args, ts.num_frames)
    overlay = track_overlay(ts) if getattr(args, "draw_tracks", False) else None
    run_and_report(st, args, image, TrackFileSource(ts), n, "generate", overlay)
    return 0


@user_errors
def run_transfer(args: argparse.Namespace) -> int:
    """image + driving video -> tracker -> video (the image = the video's first frame: reconstruction)."""
    from motionstream.video import probe_video, read_video

    image = read_inputs(args)
    probe_video(args.video)
    check_grid(args.grid)
    if args.max_video_frames is not None and args.max_video_frames < 1:
        raise UserError(f"--max-video-frames must be >= 1, got {args.max_video_frames}")
    from motionstream.stream.apps import transfer_source     # loads torch: after the checks

    st = load_stack(args)
    frames, _ = read_video(args.video, fps=st.fps, size=st.size, max_frames=args.max_video_frames)
    n = frames_wanted(args, len(frames))
    source = transfer_source(frames, st.fps, st.latent_cells, args.grid, st.stream_cfg.seed, st.tracks_cfg)
    run_and_report(st, args, image, source, n, "transfer")
    return 0


@user_errors
def run_camera(args: argparse.Namespace) -> int:
    """image + depth + camera path -> video."""
    from motionstream.tracks.camera import camera_path, camera_tracks, default_intrinsics, load_depth

    image = read_inputs(args)
    depth = load_depth(args.depth, mode=args.depth_mode)
    check_grid(args.grid)
    from motionstream.stream.apps import TrackFileSource, conditioning_subset     # loads torch: after the checks

    st = load_stack(args)
    n = frames_wanted(args, args.path_frames)
    # the depth map is fitted to the image exactly like the image (cover + centre crop)
    from motionstream.video import resize_crop

    depth = resize_crop(depth.astype(np.float32), st.size).astype(np.float64)
    scene = float(np.median(depth))
    poses = camera_path(args.path, n, strength=args.strength, scene_depth=scene)
    ts = camera_tracks(depth, default_intrinsics(*st.size, fov_deg=args.fov), poses, grid=args.grid, fps=st.fps)
    ts = conditioning_subset(ts, st.latent_cells, st.stream_cfg.seed, st.tracks_cfg)
    run_and_report(st, args, image, TrackFileSource(ts), n, "camera")
    return 0


@user_errors
def run_edit(args: argparse.Namespace) -> int:
    """image + drags -> the edited image (the clip's last frame) + the clip."""
    from motionstream.video import write_image

    args.edited = args.edited or str(Path(args.output).with_suffix(".png"))
    image = read_inputs(args, image_outputs=("edited",))
    drags = parse_drags(args.drag)
    from motionstream.diffusion.generate import fit_tracks     # (these load torch: after the checks)
    from motionstream.stream.apps import TrackFileSource, edit_tracks

    st = load_stack(args)
    ih, iw = image.shape[:2]
    n = frames_wanted(args, args.edit_frames)
    from motionstream.tracks.trackset import TrackSet

    # drags are given in the original image's pixels: map them like the image
    ends = np.array([[x0, y0, x1, y1] for x0, y0, x1, y1 in drags], np.float32).reshape(-1, 2, 2)
    probe = TrackSet(ends.transpose(1, 0, 2).copy(), np.ones((2, len(drags)), bool), iw, ih, st.fps)
    fitted = fit_tracks(probe, *st.size).tracks
    drags = [(*fitted[0, k], *fitted[1, k]) for k in range(len(drags))]
    ts = edit_tracks(drags, n, st.size[0], st.size[1], st.fps, args.radius, pins=not args.no_pins)
    result = run_and_report(st, args, image, TrackFileSource(ts), n, "edit")
    edited = Path(args.edited)
    write_image(edited, result["last_frame"])
    print(f"edit: edited image (last frame) -> {edited}")
    return 0


# ---------------------------------------------------------------------------- arguments
def is_student_model(name: str) -> bool:
    """True for `student` and for model folders whose config.json kind is not "teacher"."""
    import json

    if name == "student":
        return True
    if name == "teacher":
        return False
    from motionstream.models.checkpoints import WeightsNotFound, resolve_model_dir   # imports torch: not for the names

    try:
        meta = json.loads((resolve_model_dir(name) / "config.json").read_text())
    except (WeightsNotFound, OSError, ValueError):
        return False      # let the teacher command report the missing / broken folder
    return meta.get("kind") != "teacher"


def dispatch_generate(teacher_func, args: argparse.Namespace) -> int:
    """`generate`: the streaming student for student folders, the teacher's own handler otherwise."""
    return run_generate(args) if is_student_model(args.model) else teacher_func(args)


def _add_stream_options(p: argparse.ArgumentParser) -> None:
    """The streaming options of _common that another module's `generate` parser lacks."""
    known = set(p._option_string_actions)
    options = [
        ("--size", dict(help="video size WIDTHxHEIGHT (default: the preset's video size)")),
        ("--cache", dict(help="student: cache shape cXsYwZ (default c3s1w1)")),
        ("--decoder", dict(choices=("tiny", "full"), help="student: streaming decoder (default tiny)")),
        ("--sink-refresh", dict(type=int, default=None, metavar="N",
                                help="student: " + SINK_REFRESH_HELP)),
        ("--tiny-decoder", dict(help="student: tiny decoder model folder (default weights/tiny-decoder-tiny-cpu)")),
        ("--quality", dict(help="student: " + QUALITY_HELP)),
    ]
    for flag, kwargs in options:
        if flag not in known:
            p.add_argument(flag, **kwargs)


def _common(p: argparse.ArgumentParser, frames_help: str) -> None:
    p.add_argument("--image", required=True, help="conditioning image (resized + centre-cropped to --size)")
    p.add_argument("--prompt", default="", help="text prompt (default: empty)")
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    p.add_argument("--frames", type=int, default=None, help=frames_help)
    p.add_argument("--model", default="student",
                   help="student (default, weights/student-tiny-cpu) | teacher (weights/teacher-tiny-cpu) | "
                   "PATH to a model folder")
    p.add_argument("--config", default="tiny-cpu", help="preset name or YAML path (default tiny-cpu)")
    p.add_argument("--size", help="video size WIDTHxHEIGHT (default: the preset's video size)")
    p.add_argument("--cache", help="cache shape cXsYwZ (default: the model's / preset's, c3s1w1)")
    p.add_argument("--decoder", choices=("tiny", "full"), help="streaming decoder (default tiny)")
    p.add_argument("--sink-refresh", type=int, default=None, metavar="N",
                   help=SINK_REFRESH_HELP)
    p.add_argument("--quality", help=QUALITY_HELP)
    p.add_argument("--steps", type=int, help="teacher only: Euler steps (default: the preset's sample_steps)")
    p.add_argument("--seed", type=int, help="noise seed (default: the preset's stream.seed)")
    p.add_argument("--vae", help="VAE model folder (default weights/vae-tiny-cpu)")
    p.add_argument("--tiny-decoder", help="tiny decoder model folder (default weights/tiny-decoder-tiny-cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
    from motionstream.tracks.camera import CAMERA_PATHS, DEFAULT_FOV_DEG

    generate = commands.choices.get("generate")
    if generate is None:
        p = commands.add_parser("generate", help="image + prompt + track file -> video",
                                description="Generate a video that follows the tracks of a file (.npz, .json, "
                                "ATI .ati.json, Wan-Move NAME_tracks.npy). Tracks are in the image's pixels.")
        _common(p, "frames to write (default: the track file's length; beyond it the motion is unspecified)")
        p.add_argument("--tracks", required=True, help="track file")
        p.add_argument("--draw-tracks", action="store_true", help="overlay the input tracks on the output")
        p.add_argument("--all-tracks", action="store_true", help="condition on every track (default: a random "
                       "subset sized like training)")
        p.set_defaults(func=run_generate)
    else:
        # cli/generate.py (the teacher's command) owns `generate`; students go to the streaming engine
        _add_stream_options(generate)
        generate.set_defaults(func=functools.partial(dispatch_generate, generate.get_default("func")))

    p = commands.add_parser("transfer", help="image + driving video -> video with the video's motion",
                            description="Motion transfer: a point tracker follows a grid on the driving video "
                            "chunk by chunk and the tracks drive the image. With the video's first frame as the "
                            "image this reconstructs the video.")
    _common(p, "frames to write (default: the driving video's length; beyond it the video plays back and forth)")
    p.add_argument("--video", required=True, help="driving video")
    p.add_argument("--grid", type=int, default=50, help="tracker query grid per side (default 50; a random "
                   "subset sized for the latent grid conditions the model)")
    p.add_argument("--max-video-frames", type=int, default=None, help="read at most this many driving frames")
    p.set_defaults(func=run_transfer)

    p = commands.add_parser("camera", help="image + depth + camera path -> video",
                            description="Camera control: a grid lifted to 3D with the depth map is projected "
                            "along a named camera move.")
    _common(p, "frames to write (default 81)")
    p.add_argument("--depth", required=True, help="depth map: .npy z-depth or a grayscale image (see --depth-mode)")
    p.add_argument("--path", choices=CAMERA_PATHS, default="orbit", help="camera move (default orbit)")
    p.add_argument("--strength", type=float, default=1.0, help="scale of the move; negative reverses it")
    p.add_argument("--depth-mode", choices=("disparity", "depth"), default="disparity",
                   help="grayscale depth images: bright = near (disparity, default) or bright = far")
    p.add_argument("--fov", type=float, default=DEFAULT_FOV_DEG, help="horizontal field of view in degrees")
    p.add_argument("--grid", type=int, default=50, help="points per side before subsetting (default 50)")
    p.set_defaults(func=run_camera, path_frames=81)

    p = commands.add_parser("edit", help="drag-based image editing: image + drags -> edited image (+ clip)",
                            description="Drag editing: the content under each drag start moves to its end "
                            "while a static grid keeps the rest still; the clip's last frame is the edit.")
    _common(p, "frames of the clip (default 33)")
    p.add_argument("--drag", action="append", required=True, metavar="X0,Y0:X1,Y1",
                   help="move the content at (X0, Y0) to (X1, Y1), original image pixels; repeatable")
    p.add_argument("--radius", type=float, default=24.0, help="radius of the dragged patch in video pixels")
    p.add_argument("--no-pins", action="store_true", help="do not pin the rest of the image")
    p.add_argument("--edited", help="edited image path (default: the output with .png)")
    p.set_defaults(func=run_edit, edit_frames=33)
