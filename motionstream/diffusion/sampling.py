"""Teacher prediction and sampling: the one place that turns a WanDiT into a velocity field.

    predict_velocity(model, z_t, t, text, cond, param) -> v        [B, C, F, h, w]
    sample(model, cond, text, null_text, ...) -> clean latents      [B, C, F, h, w] (normalised)

Output parameterisation around the guide (`TeacherParam.output_skip = "guide"`, on in tiny-cpu):
the network output F is a correction to the velocity that would carry z_t straight onto a prior
clip built from the conditions,

    prior  = guide where the guide covers a cell, else the first-frame latent (frame 0: the first
             frame itself), i.e. "paste the first frame along the tracks, freeze the rest"
    v_hat  = F + (z_t - prior) / max(t, skip_min_t)

For t >= skip_min_t and F = 0 this is the exact velocity of a clip equal to the prior, so an
untrained model already produces the guide paste and training only learns the corrections (fill
disocclusions, fix texture, move uncovered cells); below skip_min_t the skip is damped so the
target F stays bounded (the prior's error e enters F's target as e / max(t, skip_min_t)). With the
motion condition dropped the guide is zero, so the prior is the frozen first frame. Every user of
the teacher (training, sampling, generate, distillation's real score) must go through
predict_velocity, so the parameterisation travels with the weights (it is stored in config.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from motionstream.diffusion.flow import euler_sample, sampling_schedule
from motionstream.diffusion.guidance import guided_prediction

if TYPE_CHECKING:
    from motionstream.models.conditioning import MotionCondition


@dataclass
class TeacherParam:
    """How the network output maps to a velocity (stored with the weights)."""

    output_skip: str = "none"      # "none" (v = network output) | "guide" (see module doc)
    skip_min_t: float = 0.25       # damping of the skip at low noise


def condition_prior(cond: "MotionCondition") -> torch.Tensor:
    """The clip the conditions imply before any learning: [B, C, F, h, w] (see module doc)."""
    first = cond.image_latent[:, :, :1]                                   # [B, C, 1, h, w]
    if cond.guide is None or cond.guide_mask is None:
        return first.expand_as(cond.image_latent)
    return cond.guide_mask * cond.guide + (1 - cond.guide_mask) * first


def skip_term(z_t: torch.Tensor, t: torch.Tensor, cond: "MotionCondition", param: TeacherParam) -> torch.Tensor | None:
    """The part of v_hat that does not come from the network (None for output_skip = "none")."""
    if param.output_skip == "none":
        return None
    if param.output_skip != "guide":
        raise ValueError(f"unknown output_skip {param.output_skip!r} (none | guide)")
    tt = t.to(z_t.dtype).clamp_min(param.skip_min_t)[:, None, :, None, None]
    return (z_t - condition_prior(cond)) / tt


def predict_velocity(model: torch.nn.Module, z_t: torch.Tensor, t: torch.Tensor,
                     text: tuple[torch.Tensor, torch.Tensor | None], cond: "MotionCondition",
                     param: TeacherParam, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """v_hat(z_t, t, c_t, c_m). z_t [B, C, F, h, w]; t [B, F] in [0, 1]; text = (tokens [B, L, D], mask [B, L])."""
    out = model(z_t, t, text[0], text[1], cond, attn_mask)
    skip = skip_term(z_t, t, cond, param)
    return out if skip is None else out + skip


def null_text_like(null_text: tuple[torch.Tensor, torch.Tensor | None], batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The empty-prompt embedding ([1, L, D] or [L, D]) repeated over a batch."""
    tok, mask = null_text
    if tok.dim() == 2:
        tok, mask = tok[None], (None if mask is None else mask[None])
    return tok.expand(batch, -1, -1), (None if mask is None else mask.expand(batch, -1))


@torch.no_grad()
def sample(model: torch.nn.Module, cond: "MotionCondition", text: tuple[torch.Tensor, torch.Tensor | None],
           null_text: tuple[torch.Tensor, torch.Tensor | None], param: TeacherParam, steps: int = 50,
           shift: float = 3.0, text_scale: float = 3.0, motion_scale: float = 1.5,
           generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
           progress: bool = False) -> torch.Tensor:
    """Euler on the shifted schedule with joint guidance (Eq. 2): clean normalised latents [B, C, F, h, w].

    cond: MotionCondition for the whole clip; text: (tokens [B, L, D], mask [B, L]); null_text: the
    empty-prompt embedding. Evaluations per step: 3 (both weights > 0), 2 (one), 1 (none).
    """
    b, c, f, h, w = cond.image_latent.shape
    if noise is None:
        noise = torch.randn(b, c, f, h, w, generator=generator, dtype=cond.image_latent.dtype).to(cond.image_latent.device)
    null = null_text_like(null_text, b)
    null = (null[0].to(text[0]), None if null[1] is None else null[1].to(noise.device))
    no_motion = cond.drop_motion()

    def velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        def predict(use_text: bool, use_motion: bool) -> torch.Tensor:
            return predict_velocity(model, z, t, text if use_text else null, cond if use_motion else no_motion, param)
        return guided_prediction(predict, text_scale, motion_scale)

    return euler_sample(velocity, noise, sampling_schedule(steps, shift), progress=progress)


def load_teacher(name_or_path: str = "teacher-tiny-cpu"):
    """(WanDiT in eval mode, TeacherParam, DiffusionConfig, metadata) from a teacher model folder
    (a name in weights/ or a path). Raises checkpoints.WeightsNotFound naming the path when missing."""
    from motionstream.config import from_dict
    from motionstream.diffusion.flow import DiffusionConfig
    from motionstream.models.checkpoints import load_model_dir
    from motionstream.models.dit import DiTConfig, WanDiT

    meta, state = load_model_dir(name_or_path)
    if meta.get("kind") != "teacher":
        raise ValueError(f"{name_or_path} holds a {meta.get('kind')!r} model, not a teacher")
    model = WanDiT(from_dict(DiTConfig, meta["config"], f"{name_or_path}/config.json"))
    model.load_state_dict(state)
    model.eval()
    param = from_dict(TeacherParam, meta.get("teacher"), f"{name_or_path}/config.json:teacher")
    dcfg = from_dict(DiffusionConfig, meta.get("diffusion"), f"{name_or_path}/config.json:diffusion")
    return model, param, dcfg, meta
