"""`motionstream generate`: image + prompt + motion tracks -> video, with the offline teacher.

    motionstream generate --model teacher --image IMG --prompt "..." --tracks t.npz -o out.mp4 \
        [--steps 50 --wt 3 --wm 1.5 --frames N --seed 0 --draw-tracks]

Tracks may be any file motionstream.tracks.io reads (.npz, keyframe .json, ATI .json, Wan-Move
.npy). They are resampled to the model's frame rate and mapped onto the model's frame exactly as the
image is (resize to cover, centre-crop: video.resize_crop). The clip has 1 + 4n frames (the VAE
layout): --frames, else the tracks' length rounded down; tracks shorter than that hold their last
position. Inputs denser than the training maximum (1000-2500 tracks scaled to the latent grid: 231
on 32x18) are thinned to a fixed random subset (--all-tracks keeps all). The teacher samples with Euler on the shifted schedule and joint guidance (Eq. 2, 3
evaluations per step); the streaming student (`--model student`) is added by [stream].
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from motionstream.errors import UserError


def fit_tracks(ts, width: int, height: int):
    """Map a TrackSet onto a (width, height) frame the way video.resize_crop maps its image:
    scale to cover, then centre-crop (same rounding)."""
    s = max(width / ts.width, height / ts.height)
    nw, nh = max(width, round(ts.width * s)), max(height, round(ts.height * s))
    x0, y0 = (nw - width) // 2, (nh - height) // 2
    scale = np.array([nw / ts.width, nh / ts.height], np.float32)
    xy = (ts.tracks * scale - np.array([x0, y0], np.float32)).astype(np.float32)
    return replace(ts, tracks=xy, width=int(width), height=int(height))


def fit_length(ts, num_frames: int):
    """Exactly `num_frames` frames: truncate, or hold the last position and visibility."""
    if ts.num_frames >= num_frames:
        return ts.frames(0, num_frames)
    pad = num_frames - ts.num_frames
    return replace(ts, tracks=np.concatenate([ts.tracks, np.repeat(ts.tracks[-1:], pad, 0)]),
                   visibility=np.concatenate([ts.visibility, np.repeat(ts.visibility[-1:], pad, 0)]))


def clip_length(requested: int | None, track_frames: int, temporal_stride: int) -> int:
    """1 + 4n video frames: the requested count or the tracks' length, rounded down (at least 1)."""
    n = requested if requested is not None else track_frames
    if n < 1:
        raise UserError(f"--frames must be >= 1, got {n}")
    return 1 + temporal_stride * ((n - 1) // temporal_stride)


def thin_tracks(ts, max_tracks: int, seed: int = 0):
    """At most `max_tracks` tracks: a fixed random subset (the teacher was trained on 1000-2500 tracks
    scaled to its latent grid, so a dense 50x50 grid on a 32x18 grid is ~10x denser than anything it
    saw; thinning keeps the input in distribution). Fewer tracks pass through unchanged."""
    if ts.num_tracks <= max_tracks:
        return ts
    keep = np.sort(np.random.default_rng(seed).choice(ts.num_tracks, size=max_tracks, replace=False))
    return ts.subset(keep)


def generate_teacher(model, param, dcfg, codec, text_encoder, image: np.ndarray, prompt: str, tracks,
                     num_frames: int, steps: int, text_scale: float, motion_scale: float, seed: int = 0,
                     progress: bool = True, max_tracks: int | None = -1) -> np.ndarray:
    """uint8 [T, H, W, 3] video from one image (uint8 [H, W, 3] at the model size) and a TrackSet
    already in that frame's pixel coordinates at the model's fps with >= num_frames frames.

    max_tracks: thin denser inputs to this many tracks (thin_tracks); -1 = the training maximum
    (tracks.max_tracks scaled to the latent grid, embed.track_counts), None = never thin.
    """
    import torch

    from motionstream.diffusion.sampling import sample, video_prior_for
    from motionstream.models.codec import frames_to_tensor, tensor_to_frames
    from motionstream.models.conditioning import build_condition
    from motionstream.tracks.embed import track_counts

    num_latent = 1 + (num_frames - 1) // codec.temporal_stride
    if max_tracks == -1:
        cells = (image.shape[0] // codec.spatial_stride) * (image.shape[1] // codec.spatial_stride)
        max_tracks = track_counts(cells)[1]
    if max_tracks is not None:
        tracks = thin_tracks(tracks, max_tracks, seed)
    with torch.no_grad():
        first = codec.encode(frames_to_tensor(image))[:, :, 0]
        text = text_encoder.encode([prompt])
        null = text_encoder.encode([""])
        prior = video_prior_for(param, codec.encode, [image], [tracks], num_latent, model.cfg.temporal_factor)
        cond = build_condition(first, [tracks], num_latent, model.cfg, prior=prior)
        latents = sample(model, cond, text, null, param, steps=steps, shift=dcfg.shift, text_scale=text_scale,
                         motion_scale=motion_scale, generator=torch.Generator().manual_seed(seed), progress=progress)
        return tensor_to_frames(codec.decode(latents))[:num_frames]


def checked_inputs(args) -> tuple[dict, np.ndarray, object]:
    """(preset, image at the preset's video size, TrackSet): the output path, image, tracks and
    --frames checked before torch or any model is imported (a bad input fails in well under 2 s)."""
    from motionstream.config import ConfigError, load_config
    from motionstream.tracks.io import MAX_TRACK_FRAMES, load_tracks
    from motionstream.tracks.trackset import TrackError
    from motionstream.video import VideoError, check_output, read_image

    try:
        cfg = load_config(args.config)
    except ConfigError as err:
        raise UserError(str(err)) from err
    video = cfg.get("video", {})
    try:
        check_output(args.output, what="--output")
        image = read_image(args.image, size=(video.get("width", 256), video.get("height", 144)))
        ts = load_tracks(args.tracks)
    except (VideoError, TrackError) as err:
        raise UserError(str(err)) from err
    if args.frames is not None and not 1 <= args.frames <= MAX_TRACK_FRAMES:
        raise UserError(f"--frames must be within [1, {MAX_TRACK_FRAMES}] (MAX_TRACK_FRAMES), got {args.frames}")
    if (args.steps is not None and args.steps < 1) or any(v is not None and v < 0 for v in (args.wt, args.wm)):
        raise UserError("--steps must be >= 1 and --wt/--wm >= 0")
    return cfg, image, ts


def run_generate(args) -> int:
    if args.model == "student":   # stream/cli.dispatch_generate sends students to the streaming engine
        raise UserError("this `generate` handler serves teachers; run it through `motionstream generate`")
    cfg, image, ts = checked_inputs(args)
    import torch

    from motionstream.diffusion.sampling import load_teacher
    from motionstream.models.checkpoints import WeightsNotFound
    from motionstream.models.codec import load_codec
    from motionstream.models.text import load_text_encoder
    from motionstream.tracks.io import resample
    from motionstream.video import write_video

    if args.threads:
        torch.set_num_threads(args.threads)
    video = cfg.get("video", {})
    width, height, fps = video.get("width", 256), video.get("height", 144), float(video.get("fps", 16))
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
