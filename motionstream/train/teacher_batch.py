"""One training batch of the teacher and its loss (see train/teacher.py for the recipe).

Every draw of a sample is keyed by (seed, step, global sample index) (`train.common.item_rng`), so the
same global batch gives the same result on 1 or N processes and after a resume.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from motionstream.diffusion.flow import DiffusionConfig, add_noise, loss_weight, shift_timesteps, velocity_target
from motionstream.diffusion.sampling import TeacherParam, predict_velocity, video_prior_for
from motionstream.models.conditioning import build_condition
from motionstream.models.track_head import TrackHead
from motionstream.tracks.embed import mid_frame_mask, sample_track_subset
from motionstream.train.common import item_rng
from motionstream.train.teacher_eval import teacher_param


def latent_frames_at(step: int, tcfg) -> tuple[int, int]:
    """(latent frames, global batch) of training step `step`."""
    if step < tcfg.phase1_steps:
        return tcfg.phase1_latent_frames, tcfg.phase1_batch_size
    return tcfg.latent_frames, tcfg.batch_size


def pad_text(tokens: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack [L_i, D] token sets into [B, L, D] + bool mask [B, L] (padding masked out)."""
    length = max(t.shape[0] for t in tokens)
    out = tokens[0].new_zeros(len(tokens), length, tokens[0].shape[1])
    mask = torch.zeros(len(tokens), length, dtype=torch.bool)
    for i, (t, m) in enumerate(zip(tokens, masks)):
        out[i, :t.shape[0]] = t
        mask[i, :t.shape[0]] = m
    return out, mask


def apply_motion_masks(cond, keep_motion: torch.Tensor, frame_keep: torch.Tensor | None):
    """Zero the motion condition of dropped samples (keep_motion [B] float) and, in stage 2, of masked
    mid latent frames (frame_keep [B, F] float; the track map's video frames follow the VAE layout)."""
    b = keep_motion.shape[0]
    lat_keep = keep_motion.view(b, 1, 1, 1, 1).expand(b, 1, cond.num_frames, 1, 1).clone()
    if frame_keep is not None:
        lat_keep = lat_keep * frame_keep.view(b, 1, -1, 1, 1)
    # latent frame k covers video frames [a_k, b_k) of the track map (VAE layout: 1, then 4 each)
    spans = [TrackHead.video_frames(k, k + 1, cond.temporal_factor) for k in range(cond.num_frames)]
    vid_keep = lat_keep.repeat_interleave(torch.tensor([b - a for a, b in spans]), dim=2)
    # a dropped sample's video prior is the frozen first frame, as for the null condition (drop_motion)
    prior = cond.prior
    if prior is not None:
        prior = lat_keep * prior + (1 - lat_keep) * cond.image_latent[:, :, :1]
    return replace(cond, track_map=cond.track_map * vid_keep,
                   guide=None if cond.guide is None else cond.guide * lat_keep,
                   guide_mask=None if cond.guide_mask is None else cond.guide_mask * lat_keep, prior=prior)


@dataclass
class Batch:
    z0: torch.Tensor            # [B, C, F, h, w]
    noise: torch.Tensor         # [B, C, F, h, w]
    t: torch.Tensor             # [B] shifted flow time
    text: torch.Tensor          # [B, L, D]
    text_mask: torch.Tensor     # [B, L]
    cond: Any                   # MotionCondition
    moving: torch.Tensor        # [B, F, h, w]


def make_batch(clips: list, indices: list[int], step: int, tcfg, dcfg: DiffusionConfig,
               dit_cfg, tracks_cfg, null_text: tuple[torch.Tensor, torch.Tensor], encode=None) -> Batch:
    """Assemble the samples `indices` (global positions in the step's batch) of `clips` (CachedClip).

    encode: VideoCodec.encode, needed when tcfg.output_skip is "video" (the prior is encoded per sample,
    since it depends on the sample's random track subset)."""
    num_f = clips[0].latents.shape[1]
    h, w = clips[0].latents.shape[2:]
    z0, noise, t, toks, tmasks, tracks, keep_m, frame_keep, moving = [], [], [], [], [], [], [], [], []
    for clip, index in zip(clips, indices):
        rng, gen = item_rng(tcfg.seed, step, index)
        z0.append(clip.latents)
        noise.append(torch.randn(clip.latents.shape, generator=gen))
        t.append(shift_timesteps(torch.rand(1, generator=gen), dcfg.shift))
        sub = sample_track_subset(clip.tracks, rng, min_tracks=tracks_cfg.min_tracks, max_tracks=tracks_cfg.max_tracks,
                                  cells=h * w, id_range=tracks_cfg.id_range)
        tracks.append(sub)  # carries fresh random track IDs (sinusoidal embedding seeds)
        drop_text = rng.random() < tcfg.text_drop
        drop_motion = rng.random() < tcfg.motion_drop
        toks.append(null_text[0] if drop_text else clip.text_tokens)
        tmasks.append(null_text[1] if drop_text else clip.text_mask)
        keep_m.append(0.0 if drop_motion else 1.0)
        if tcfg.stage >= 2:
            masked = mid_frame_mask(num_f, rng, p=tracks_cfg.mask_prob)
            frame_keep.append(torch.from_numpy(~np.asarray(masked)).float())
        moving.append(clip.moving)
    z0 = torch.stack(z0)
    prior = video_prior_for(teacher_param(tcfg), encode, [c.first_frame for c in clips], tracks, num_f,
                            dit_cfg.temporal_factor)
    cond = build_condition(z0[:, :, 0], tracks, num_f, dit_cfg, prior=prior)
    cond = apply_motion_masks(cond, torch.tensor(keep_m), torch.stack(frame_keep) if frame_keep else None)
    text, text_mask = pad_text(toks, tmasks)
    return Batch(z0=z0, noise=torch.stack(noise), t=torch.cat(t), text=text, text_mask=text_mask, cond=cond,
                 moving=torch.stack(moving))


def teacher_loss(model: torch.nn.Module, batch: Batch, param: TeacherParam, dcfg: DiffusionConfig,
                 moving_weight: float) -> torch.Tensor:
    """Weighted rectified-flow loss (Eq. A2) of one batch (mean over its samples)."""
    f = batch.z0.shape[2]
    t_frames = batch.t[:, None].expand(-1, f)
    z_t = add_noise(batch.z0, batch.noise, t_frames)
    pred = predict_velocity(model, z_t, t_frames, (batch.text, batch.text_mask), batch.cond, param)
    err = (pred - velocity_target(batch.z0, batch.noise)).pow(2).mean(1)        # [B, F, h, w]
    cell_w = 1 + moving_weight * batch.moving
    per_sample = (err * cell_w).sum((1, 2, 3)) / cell_w.sum((1, 2, 3))
    return (per_sample * loss_weight(batch.t, dcfg.shift, dcfg.loss_weighting)).mean()
