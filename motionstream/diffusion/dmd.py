"""Distribution Matching Distillation (DMD, paper Eq. 3 / 4), kept apart from the training loops.

Given a generated clip x [B, C, F, h, w] (with a graph back to the generator), a noise level t and
noise z1, both score networks see the same z_t = (1 - t) sg(x) + t z1 and predict a clean clip:

    real_x0 = x0 of the frozen teacher under joint guidance (Eq. 4 = Eq. 2 on its velocities)
    fake_x0 = x0 of the trainable critic, no guidance

The KL gradient (Eq. 3) points from the real to the fake prediction; as in DMD (Yin et al. 2024)
it is normalised per sample by the mean distance of x to the real prediction, which makes the
step size independent of the noise level and of how far the generator is from the teacher:

    grad = (fake_x0 - real_x0) / mean_{C,F,h,w} |x - real_x0|
    loss = 0.5 * mean (x - sg(x - grad))^2          so  d loss / d x = grad / numel(x)

Descending the loss moves x toward the teacher's prediction and away from the critic's. With
real = fake the gradient is exactly zero. The critic learns the generator's distribution by plain
rectified-flow regression on detached generator samples (`critic_loss`). Updates: the critic every
step, the generator every `ratio`-th step (critic:generator = ratio:1, paper: 5:1).
"""

from __future__ import annotations

import torch

from motionstream.diffusion.flow import shift_timesteps

NORM_EPS = 1e-6   # floor of the per-sample normaliser (x == real_x0 exactly would divide by zero)


def dmd_gradient(x: torch.Tensor, real_x0: torch.Tensor, fake_x0: torch.Tensor) -> torch.Tensor:
    """The normalised DMD gradient w.r.t. x (no graph), same shape as x [B, ...]."""
    with torch.no_grad():
        x, real_x0, fake_x0 = x.detach().float(), real_x0.detach().float(), fake_x0.detach().float()
        dims = tuple(range(1, x.dim()))
        norm = (x - real_x0).abs().mean(dim=dims, keepdim=True).clamp_min(NORM_EPS)
        return torch.nan_to_num((fake_x0 - real_x0) / norm)


def dmd_loss(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5 * mean (x - sg(x - grad))^2: a scalar whose gradient w.r.t. x is grad / x.numel()."""
    target = (x - grad.to(x.dtype)).detach()
    return 0.5 * (x - target).pow(2).mean()


def sample_dmd_timesteps(batch: int, shift: float, min_t: float, max_t: float,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise levels for the score networks [B]: u ~ U(min_t, max_t), then the timestep shift."""
    u = min_t + (max_t - min_t) * torch.rand(batch, generator=generator)
    return shift_timesteps(u, shift)


def critic_loss(v_pred: torch.Tensor, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Rectified-flow loss of the critic on generator samples: mean |v_pred - (noise - sg(x))|^2."""
    return (v_pred - (noise - x.detach())).pow(2).mean()


def is_generator_step(step: int, ratio: int) -> bool:
    """Critic:generator = ratio:1. The critic updates every step; the generator on steps
    ratio-1, 2*ratio-1, ... (after the critic has seen `ratio` updates on the current generator)."""
    if ratio < 1:
        raise ValueError(f"critic:generator ratio must be >= 1, got {ratio}")
    return (step + 1) % ratio == 0
