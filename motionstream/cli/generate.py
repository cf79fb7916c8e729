"""`motionstream generate`: image + prompt + motion tracks -> video, with the offline teacher.

    motionstream generate --model teacher --image IMG --prompt "..." --tracks t.npz -o out.mp4 \
        [--steps 50 --wt 3 --wm 1.5 --frames N --seed 0 --draw-tracks]

Tracks may be any file motionstream.tracks.io reads (.npz, keyframe .json, ATI .json, Wan-Move
.npy). They are resampled to the model's frame rate and mapped onto the model's frame exactly as the
image is (resize to cover, centre-crop: video.resize_crop). The clip has 1 + 4n frames (the VAE
layout): --frames, else the tracks' length rounded down; tracks shorter than that hold their last
position. Inputs denser than the training maximum (1000-2500 tracks scaled to the latent grid: 231
on 32x18) are thinned to a fixed random subset (--all-tracks keeps all). The teacher samples with Euler on the shifted schedule and joint guidance (Eq. 2, 3
evaluations per step); the streaming student (`--model student`) is served by
motionstream.cli.stream.
"""

from __future__ import annotations

import argparse

import numpy as np

from motionstream.errors import UserError


def checked_inputs(args) -> tuple[dict, np.ndarray, object]:
    """(preset, image at the preset's video size, TrackSet): the output path, image, tracks and
    --frames checked before torch or any model is imported (a bad input fails in well under 2 s)."""
    from motionstream.config import ConfigError, load_config, video_config
    from motionstream.tracks.io import MAX_TRACK_FRAMES, load_tracks
    from motionstream.tracks.trackset import TrackError
    from motionstream.video import VideoError, check_output, read_image

    try:
        cfg = load_config(args.config)
        video = video_config(cfg)
    except ConfigError as err:
        raise UserError(str(err)) from err
    try:
        check_output(args.output, what="--output")
        image = read_image(args.image, size=video.size)
        ts = load_tracks(args.tracks)
    except (VideoError, TrackError) as err:
        raise UserError(str(err)) from err
    if args.frames is not None and not 1 <= args.frames <= MAX_TRACK_FRAMES:
        raise UserError(f"--frames must be within [1, {MAX_TRACK_FRAMES}] (MAX_TRACK_FRAMES), got {args.frames}")
    if (args.steps is not None and args.steps < 1) or any(v is not None and v < 0 for v in (args.wt, args.wm)):
        raise UserError("--steps must be >= 1 and --wt/--wm >= 0")
    return cfg, image, ts


def run_generate(args) -> int:
    if args.model == "student":   # cli/stream.dispatch_generate sends students to the streaming engine
        raise UserError("this `generate` handler serves teachers; run it through `motionstream generate`")
    cfg, image, ts = checked_inputs(args)
    import torch

    from motionstream.diffusion.generate import clip_length, fit_length, fit_tracks, generate_teacher
    from motionstream.config import video_config
    from motionstream.diffusion.sampling import load_teacher
    from motionstream.models.checkpoints import WeightsNotFound
    from motionstream.models.codec import load_codec
    from motionstream.models.text import load_text_encoder
    from motionstream.tracks.io import resample
    from motionstream.video import write_video

    if args.threads:
        torch.set_num_threads(args.threads)
    video = video_config(cfg)
    width, height, fps = video.width, video.height, video.fps
    try:
        model, param, dcfg, _ = load_teacher("teacher-tiny-cpu" if args.model == "teacher" else args.model)
        codec = load_codec(args.vae, tiny_decoder=None)
    except WeightsNotFound as err:
        raise UserError(str(err)) from err
    ts = fit_tracks(resample(ts, fps) if abs(ts.fps - fps) > 1e-6 else ts, width, height)
    num_frames = clip_length(args.frames, ts.num_frames, codec.temporal_stride)
    ts = fit_length(ts, num_frames)
    text_encoder = load_text_encoder(cfg)
    steps = args.steps if args.steps is not None else dcfg.sample_steps
    wt = args.wt if args.wt is not None else dcfg.text_scale
    wm = args.wm if args.wm is not None else dcfg.motion_scale
    from motionstream.tracks.embed import TracksConfig, track_counts
    from motionstream.config import section

    tr = section(cfg, "tracks", TracksConfig)
    cells = (height // codec.spatial_stride) * (width // codec.spatial_stride)
    limit = None if args.all_tracks else track_counts(cells, tr.min_tracks, tr.max_tracks)[1]
    frames = generate_teacher(model, param, dcfg, codec, text_encoder, image, args.prompt, ts, num_frames,
                              steps, wt, wm, seed=args.seed, progress=not args.no_progress, max_tracks=limit)
    if args.draw_tracks:
        from motionstream.tracks.draw import draw_tracks

        frames = draw_tracks(frames, ts)
    out = write_video(args.output, frames, fps=fps)
    print(f"wrote {out} ({len(frames)} frames, {width}x{height}, {steps} steps, w_t={wt}, w_m={wm})")
    return 0


def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
    p = commands.add_parser("generate", help="image + prompt + tracks -> video (streaming student, or --model teacher)",
                            description="Generate a video from one image, a prompt and a track file. "
                            "Tracks are resampled to the model fps and mapped onto the model frame like the image.")
    p.add_argument("--model", default="student",
                   help="student (default, weights/student-tiny-cpu, streamed) | teacher (weights/teacher-tiny-cpu, "
                   "offline) | PATH to a model folder")
    p.add_argument("--image", required=True)
    p.add_argument("--prompt", default="")
    p.add_argument("--tracks", required=True, help="track file (.npz, .json keyframes, ATI .json, Wan-Move .npy)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--config", default="tiny-cpu", help="preset name or YAML path (video size, text encoder)")
    p.add_argument("--vae", default="vae-tiny-cpu", help="VAE model folder")
    p.add_argument("--steps", type=int, default=None, help="Euler steps (default: the model's, 50)")
    p.add_argument("--wt", type=float, default=None, help="text guidance w_t (default 3.0)")
    p.add_argument("--wm", type=float, default=None, help="motion guidance w_m (default 1.5)")
    p.add_argument("--frames", type=int, default=None, help="video frames (rounded down to 1 + 4n)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--draw-tracks", action="store_true", help="overlay the input tracks on the output")
    p.add_argument("--all-tracks", action="store_true",
                   help="condition on every track (default: thin dense inputs to the training maximum)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_generate)
