"""Rectified flow (paper Sec. 3.1, App. D): noising, the shifted timestep schedule, loss weights, Euler.

Conventions (shared by teacher, ODE regression, DMD and streaming):

    z0          clean (normalised) latents            [B, C, F, h, w]
    z1          Gaussian noise, same shape
    t           flow time in [0, 1], 1 = pure noise; per frame: [B, F]
    z_t         (1 - t) z0 + t z1                     (Eq. A1)
    v           z1 - z0, the velocity the model predicts
    x0 from v   z0 = z_t - t v;   noise from v: z1 = z_t + (1 - t) v

Timestep shift (Wan / SD3): t' = k t / (1 + (k - 1) t). k > 1 spends more of the training and
sampling budget at high noise, where layout and motion are decided. The paper uses k = 6 at 480p
(104x60 latent cells x 21 frames). tiny-cpu uses k = 3 (configs/tiny-cpu.yaml, `diffusion.shift`):
SD3's resolution rule (shift grows with sqrt of the token count) puts our 32x18x9 latents at
about 6 / sqrt(6240 / 576) ~= 1.8, but our model is conditioned much more strongly (first frame +
trajectory guide), so a larger share of the signal is already decided and what is left to learn
is exactly the high-noise motion layout; 3 sits between the two and is what the measured
pixel-proxy baseline used (TRAINING-NOTES.md).

Loss weight: Wan's bell-shaped weight over the shifted time, w(t') = exp(-2 (t' - 1/2)^2) shifted
to 0 at the ends and normalised to mean 1 under the training distribution of t', so the loss
scale does not depend on the weighting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm import tqdm


@dataclass
class DiffusionConfig:
    """Section `diffusion` of a preset."""

    shift: float = 3.0             # timestep shift k (paper: 6.0 at 480p)
    sample_steps: int = 50         # Euler steps of the teacher sampler
    loss_weighting: str = "bell"   # "bell" (Wan) | "uniform"
    text_scale: float = 3.0        # w_t of Eq. 2
    motion_scale: float = 1.5      # w_m of Eq. 2


# ----------------------------------------------------------------------- noising
def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = k t / (1 + (k - 1) t): maps [0, 1] onto [0, 1] monotonically, 0 -> 0 and 1 -> 1."""
    return shift * t / (1 + (shift - 1) * t)


def add_noise(z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_t = (1 - t) z0 + t z1. z0, noise: [B, C, F, h, w]; t: [B, F] (or [B] for one time per clip)."""
    tt = _frame_view(t, z0)
    return (1 - tt) * z0 + tt * noise


def velocity_target(z0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The rectified-flow target v = z1 - z0."""
    return noise - z0


def x0_from_velocity(z_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z0 = z_t - t v (exact for the true velocity)."""
    return z_t - _frame_view(t, z_t) * v


def noise_from_velocity(z_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z1 = z_t + (1 - t) v."""
    return z_t + (1 - _frame_view(t, z_t)) * v


def _frame_view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] or [B, F] times -> broadcastable against [B, C, F, h, w]."""
    if t.dim() == 1:
        t = t[:, None]
    return t.to(like.dtype)[:, None, :, None, None]


# ------------------------------------------------------------------- training t
def sample_training_timesteps(batch: int, shift: float, generator: torch.Generator | None = None,
                              device: torch.device | str = "cpu") -> torch.Tensor:
    """Shifted training times t' [B] (one per clip): u ~ U(0, 1), t' = shift(u)."""
    u = torch.rand(batch, generator=generator, device=device)
    return shift_timesteps(u, shift)


_BELL_FLOOR = math.exp(-2 * 0.5 ** 2)  # the bell's value at t' = 0 and t' = 1


def _bell(t: torch.Tensor) -> torch.Tensor:
    return torch.exp(-2 * (t - 0.5) ** 2) - _BELL_FLOOR


def loss_weight(t: torch.Tensor, shift: float, kind: str = "bell") -> torch.Tensor:
    """Per-sample weight w(t') for shifted times t' (any shape), mean 1 under the training draw of t'."""
    if kind == "uniform":
        return torch.ones_like(t)
    if kind != "bell":
        raise ValueError(f"unknown loss weighting {kind!r} (bell | uniform)")
    return _bell(t) / _bell_mean(shift)


def _bell_mean(shift: float, points: int = 4096) -> float:
    """E_u[bell(shift(u))] by the midpoint rule (smooth integrand: 4096 points is exact to ~1e-8)."""
    u = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    return float(_bell(shift_timesteps(u, shift)).mean())


# ---------------------------------------------------------------------- sampling
def sampling_schedule(steps: int, shift: float, num_frames: int | None = None,
                      clean_frames: torch.Tensor | None = None) -> torch.Tensor:
    """Euler time grid from noise to data on the shifted schedule.

    Returns [steps + 1] (from 1 down to 0) or, with `num_frames`, [steps + 1, F] per-frame times.
    `clean_frames` (bool [F]) pins those frames at t = 0 for the whole trajectory: they are given
    context (e.g. a clean chunk the student attends to) and an Euler step with dt = 0 leaves them
    exactly unchanged.
    """
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    t = shift_timesteps(u, shift).float()
    if num_frames is None:
        return t
    grid = t[:, None].repeat(1, num_frames)
    if clean_frames is not None:
        grid[:, clean_frames.bool()] = 0.0
    return grid


VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def euler_sample(velocity: VelocityFn, noise: torch.Tensor, schedule: torch.Tensor,
                 progress: bool = False) -> torch.Tensor:
    """Integrate dz/dt = v(z, t) from t = schedule[0] to schedule[-1] with Euler steps.

    velocity(z [B, C, F, h, w], t [B, F]) -> v, same shape as z (guidance goes inside it).
    noise: z at schedule[0] ([B, C, F, h, w]; frames pinned at t = 0 must hold their clean value).
    schedule: [S + 1] (all frames share a time) or [S + 1, F] (per-frame times; see
    `sampling_schedule`). Returns z at the last time (t = 0: the clean latents).
    """
    b, f = noise.shape[0], noise.shape[2]
    if schedule.dim() == 1:
        schedule = schedule[:, None].expand(-1, f)
    if schedule.shape[1] != f:
        raise ValueError(f"schedule has {schedule.shape[1]} frames, latents have {f}")
    schedule = schedule.to(noise.device)
    z = noise
    steps = range(schedule.shape[0] - 1)
    if progress:
        steps = tqdm(steps, desc="denoise", leave=False)
    for i in steps:
        t_now, t_next = schedule[i], schedule[i + 1]
        v = velocity(z, t_now[None].expand(b, -1))
        z = z + _frame_view((t_next - t_now)[None].expand(b, -1), z) * v
    return z
