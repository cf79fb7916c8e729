"""Offline teacher generation: image + prompt + motion tracks -> video, the whole clip at once.

Tracks (any TrackSet, e.g. from motionstream.tracks.io) are mapped onto the model's frame exactly as
the image is (resize to cover, centre-crop: video.resize_crop: `fit_tracks`). The clip has 1 + 4n
frames (the VAE layout, `clip_length`); tracks shorter than that hold their last position
(`fit_length`). Inputs denser than the training maximum (1000-2500 tracks scaled to the latent grid:
231 on 32x18) are thinned to a fixed random subset (`thin_tracks`). The teacher samples with Euler on
the shifted schedule and joint guidance (Eq. 2, 3 evaluations per step). The command is
motionstream.cli.generate.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from motionstream.diffusion.sampling import sample, video_prior_for
from motionstream.errors import UserError
from motionstream.models.codec import frames_to_tensor, tensor_to_frames
from motionstream.models.conditioning import build_condition
from motionstream.tracks.embed import track_counts


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
