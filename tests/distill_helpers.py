"""Tiny random models and conditions shared by the distillation tests (test_ode, test_dmd, test_rollout)."""

from __future__ import annotations

import torch

from motionstream.diffusion.sampling import TeacherParam
from motionstream.models.dit import DiTConfig, MotionCondition, WanDiT

LATENT_HW = (4, 6)            # 2x3 tokens per frame


def small_cfg(**kw) -> DiTConfig:
    base = dict(dim=32, num_layers=2, num_heads=2, ffn_dim=48, freq_dim=16, latent_channels=4, text_dim=8,
                image_mask_channels=4, track_dim=8, track_channels=4, use_guide=True)
    base.update(kw)
    return DiTConfig(**base)


def random_model(cfg: DiTConfig, seed: int = 0, scale: float = 0.2) -> WanDiT:
    """Every parameter random (Wan's init zeroes the output layer, which would hide bugs)."""
    torch.manual_seed(seed)
    model = WanDiT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, scale)
    return model


def random_cond(cfg: DiTConfig, batch: int, frames: int, seed: int = 1) -> MotionCondition:
    """A condition laid out like build_condition's (image in frame 0 only, guide from frame 1)."""
    g = torch.Generator().manual_seed(seed)
    h, w = LATENT_HW
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    latent = torch.zeros(batch, cfg.latent_channels, frames, h, w)
    latent[:, :, 0] = r(batch, cfg.latent_channels, h, w)
    mask = torch.zeros(batch, cfg.image_mask_channels, frames, h, w)
    mask[:, :, 0] = 1.0
    guide_mask = (torch.rand(batch, 1, frames, h, w, generator=g) > 0.5).float()
    guide_mask[:, :, 0] = 0
    return MotionCondition(image_latent=latent, image_mask=mask,
                           track_map=r(batch, cfg.track_dim, 1 + cfg.temporal_factor * (frames - 1), h, w),
                           guide=r(batch, cfg.latent_channels, frames, h, w) * guide_mask, guide_mask=guide_mask)


def random_text(cfg: DiTConfig, batch: int, length: int = 5, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[-1, length - 2:] = False
    return torch.randn(batch, length, cfg.text_dim, generator=g), mask


GUIDE_PARAM = TeacherParam(output_skip="guide", skip_min_t=0.25)
WARP_PARAM = TeacherParam(output_skip="warp", skip_min_t=0.25)       # the shipped teacher's prior
