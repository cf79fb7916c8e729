"""`motionstream tracks ...` sub-commands: extract, show, convert, camera."""

from __future__ import annotations

import argparse
from pathlib import Path

from motionstream.cli.common import check_grid, parse_size, user_errors

DEFAULT_GRID = 50
DEFAULT_FPS = 16.0
DEFAULT_CAMERA_FRAMES = 81


def check_track_output(path: str, what: str = "--output") -> None:
    """A track file name we can write (its format from the suffix, a writable place), before the work."""
    from motionstream.tracks.io import track_format
    from motionstream.video import check_writable

    track_format(path)
    check_writable(path, what)


def check_overlay_output(path: str | None, what: str = "--overlay") -> None:
    """An overlay (or `show`) output: a video or a still image that can be written, before the work."""
    from motionstream.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, check_output

    if path:
        check_output(path, VIDEO_SUFFIXES + IMAGE_SUFFIXES, what)


def _require_file(path: str, what: str) -> Path:
    from motionstream.errors import UserError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    return p


@user_errors
def cmd_extract(args: argparse.Namespace) -> int:
    from motionstream.errors import UserError
    from motionstream.tracks.draw import save_overlay
    from motionstream.tracks.io import check_fps, save_tracks
    from motionstream.tracks.tracker import track_video
    from motionstream.video import probe_video

    check_track_output(args.output)  # fail before the work, not after
    check_overlay_output(args.overlay)
    check_grid(args.grid)
    check_fps(args.fps, "--fps")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames must be >= 1, got {args.max_frames}")
    video = _require_file(args.video, "video")
    probe_video(video)
    ts, frames = track_video(video, grid=args.grid, fps=args.fps, size=parse_size(args.size),
                             max_frames=args.max_frames, progress=True)
    save_tracks(args.output, ts)
    print(f"{args.output}: {ts.num_tracks} tracks x {ts.num_frames} frames at {ts.fps:g} fps, "
          f"{ts.width}x{ts.height}, {ts.visibility[-1].mean():.0%} visible at the end")
    if args.overlay:
        save_overlay(args.overlay, frames, ts, tail=args.tail)
        print(f"overlay: {args.overlay}")
    return 0


@user_errors
def cmd_show(args: argparse.Namespace) -> int:
    from motionstream.errors import UserError
    from motionstream.tracks.draw import save_overlay
    from motionstream.tracks.io import load_tracks
    from motionstream.video import probe_video, read_image, read_video

    check_overlay_output(args.output, "--output")
    width, height = parse_size(args.size) or (None, None)
    ts = load_tracks(_require_file(args.tracks, "track file"), width=width, height=height)
    if (args.video is None) == (args.image is None):
        raise UserError("give exactly one of --video or --image")
    if args.video is not None:
        probe_video(_require_file(args.video, "video"))
        frames, _ = read_video(_require_file(args.video, "video"), fps=ts.fps, size=(ts.width, ts.height),
                               max_frames=ts.num_frames)
        if len(frames) < ts.num_frames:
            ts = ts.frames(0, len(frames))
    else:
        frames = read_image(_require_file(args.image, "image"), size=(ts.width, ts.height))
    is_image = Path(args.output).suffix.lower() in (".png", ".jpg", ".jpeg")
    # a still shows whole trajectories by default, a video short trails
    tail = args.tail if args.tail is not None else (ts.num_frames if is_image else 8)
    save_overlay(args.output, frames, ts, tail=tail, frame_index=args.frame)
    print(args.output)
    return 0


@user_errors
def cmd_convert(args: argparse.Namespace) -> int:
    from motionstream.tracks.io import load_tracks, save_tracks

    check_track_output(args.output)
    width, height = parse_size(args.size) or (None, None)
    ts = load_tracks(_require_file(args.input, "track file"), fps=args.fps, width=width, height=height,
                     source_fps=args.source_fps)
    save_tracks(args.output, ts)
    print(f"{args.output}: {ts.num_tracks} tracks x {ts.num_frames} frames at {ts.fps:g} fps, {ts.width}x{ts.height}")
    return 0


@user_errors
def cmd_camera(args: argparse.Namespace) -> int:
    import numpy as np

    from motionstream.errors import UserError
    from motionstream.tracks.camera import camera_path, camera_tracks, default_intrinsics, load_depth
    from motionstream.tracks.draw import save_overlay
    from motionstream.tracks.io import MAX_TRACK_FRAMES, check_fps, read_npy, save_tracks
    from motionstream.video import read_image

    check_track_output(args.output)
    check_overlay_output(args.overlay)
    check_grid(args.grid)
    check_fps(args.fps, "--fps")
    if not 1 <= args.frames <= MAX_TRACK_FRAMES:
        raise UserError(f"--frames must be within [1, {MAX_TRACK_FRAMES}] (MAX_TRACK_FRAMES), got {args.frames}")
    image = read_image(_require_file(args.image, "image"), size=parse_size(args.size))
    height, width = image.shape[:2]
    depth = load_depth(_require_file(args.depth, "depth file"), mode=args.depth_mode, near=args.near,
                       far=args.far, size=(width, height))
    if args.poses is not None:
        poses = read_npy(_require_file(args.poses, "poses file"))
    else:
        if args.path is None:
            raise UserError("give --path (orbit, dolly, pan, truck) or --poses")
        poses = camera_path(args.path, args.frames, strength=args.strength, scene_depth=float(np.median(depth)))
    K = default_intrinsics(width, height, args.fov)
    ts = camera_tracks(depth, K, poses, grid=args.grid, fps=args.fps)
    save_tracks(args.output, ts)
    print(f"{args.output}: {ts.num_tracks} tracks x {ts.num_frames} frames, "
          f"{ts.visibility[-1].mean():.0%} visible at the end")
    if args.overlay:
        save_overlay(args.overlay, image, ts, tail=8)
        print(f"overlay: {args.overlay}")
    return 0


def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
    from motionstream.tracks.camera import CAMERA_PATHS, DEFAULT_FOV_DEG, DEPTH_FAR, DEPTH_NEAR

    tracks = commands.add_parser("tracks", help="extract, show, convert and synthesise motion tracks",
                                 description="Everything about motion tracks (TrackSet files: .npz canonical, "
                                 ".json keyframes, .ati.json ATI-style, NAME_tracks.npy Wan-Move).")
    sub = tracks.add_subparsers(dest="tracks_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("extract", help="track a grid of points through a video (Lucas-Kanade)",
                       description="Decode VIDEO, resample it to --fps, track a GRIDxGRID grid from its first "
                       "frame with pyramidal Lucas-Kanade + forward-backward check, save a TrackSet.")
    p.add_argument("video", help="input video file")
    p.add_argument("-o", "--output", required=True, help="output track file (.npz, .json, ...)")
    p.add_argument("--grid", type=int, default=DEFAULT_GRID, help="points per side of the query grid (default 50)")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help="frame rate to resample to (default 16)")
    p.add_argument("--size", help="resize + centre-crop to WIDTHxHEIGHT first (e.g. 832x480)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--overlay", help="also write the tracks drawn over the video (.mp4 or .png)")
    p.add_argument("--tail", type=int, default=8, help="trail length in frames for --overlay (default 8)")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("show", help="draw tracks over a video or an image",
                       description="Draw a track file over --video (resampled to the tracks' fps and size) or "
                       "over --image (repeated); write an .mp4, or a .png of one frame.")
    p.add_argument("tracks", help="track file")
    p.add_argument("--video", help="video to draw on")
    p.add_argument("--image", help="image to draw on (repeated for every frame)")
    p.add_argument("-o", "--output", required=True, help="out.mp4, or out.png for a single frame")
    p.add_argument("--frame", type=int, default=-1, help="frame drawn into a .png (default: the last)")
    p.add_argument("--tail", type=int, help="trail length in frames (default: 8 for video, all for .png)")
    p.add_argument("--size", help="image size WIDTHxHEIGHT for track formats that do not store one")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("convert", help="convert between track file formats",
                       description="Read IN, write OUT; formats follow the file names: .npz, .json (keyframes), "
                       ".ati.json (ATI), NAME_tracks.npy (+ NAME_visibility.npy, Wan-Move).")
    p.add_argument("input", help="input track file")
    p.add_argument("output", help="output track file")
    p.add_argument("--fps", type=float, help="resample to this frame rate")
    p.add_argument("--size", help="image size WIDTHxHEIGHT for formats that do not store one (ATI, Wan-Move)")
    p.add_argument("--source-fps", type=float, help="frame rate of formats that do not store one (default 16)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("camera", help="tracks of a camera move over a depth map",
                       description="Lift a GRIDxGRID grid of --image to 3D with --depth, move the camera along "
                       "--path (or explicit --poses), project into every frame with z-buffer occlusion.")
    p.add_argument("--image", required=True, help="conditioning image (sets the track coordinates' size)")
    p.add_argument("--depth", required=True, help="depth map: .npy z-depth, or a grayscale image (see --depth-mode)")
    p.add_argument("--path", choices=CAMERA_PATHS, help="named camera move")
    p.add_argument("--poses", help=".npy [T, 4, 4] world-to-camera poses (world = first camera), instead of --path")
    p.add_argument("-o", "--output", required=True, help="output track file")
    p.add_argument("--strength", type=float, default=1.0, help="scale of the move; negative reverses it (default 1)")
    p.add_argument("--frames", type=int, default=DEFAULT_CAMERA_FRAMES, help="frames for --path (default 81)")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help="frame rate (default 16)")
    p.add_argument("--grid", type=int, default=DEFAULT_GRID, help="points per side (default 50)")
    p.add_argument("--fov", type=float, default=DEFAULT_FOV_DEG, help="horizontal field of view in degrees (default 60)")
    p.add_argument("--depth-mode", choices=("disparity", "depth"), default="disparity",
                   help="how a depth *image* reads: disparity = bright is near (default), depth = bright is far")
    p.add_argument("--near", type=float, default=DEPTH_NEAR, help="depth of the nearest value of a depth image")
    p.add_argument("--far", type=float, default=DEPTH_FAR, help="depth of the farthest value of a depth image")
    p.add_argument("--size", help="resize + centre-crop the image to WIDTHxHEIGHT first")
    p.add_argument("--overlay", help="also draw the tracks over the image (.mp4 or .png)")
    p.set_defaults(func=cmd_camera)
