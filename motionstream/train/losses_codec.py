"""Losses for training the codec: reconstruction (L1/L2), SSIM, KL, PatchGAN.

All video tensors are float [B, 3, T, H, W] in [-1, 1]; image-level losses run per frame.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from motionstream.scoring.metrics import _LPIPSAlex

SSIM_WINDOW = 11          # Gaussian window of the standard SSIM (Wang et al. 2004)
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def frames_of(video: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W]."""
    b, c, t, h, w = video.shape
    return video.transpose(1, 2).reshape(b * t, c, h, w)


def _gaussian_window(channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(SSIM_WINDOW, device=device, dtype=dtype) - SSIM_WINDOW // 2
    g = torch.exp(-coords ** 2 / (2 * SSIM_SIGMA ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over frames of two videos in [-1, 1] (computed on the [0, 1] scale, valid region)."""
    x, y = (frames_of(a) + 1) / 2, (frames_of(b) + 1) / 2
    c = x.shape[1]
    win = _gaussian_window(c, x.device, x.dtype)
    mu_x, mu_y = F.conv2d(x, win, groups=c), F.conv2d(y, win, groups=c)
    sxx = F.conv2d(x * x, win, groups=c) - mu_x ** 2
    syy = F.conv2d(y * y, win, groups=c) - mu_y ** 2
    sxy = F.conv2d(x * y, win, groups=c) - mu_x * mu_y
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.mean()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of videos in [-1, 1], on the [0, 1] scale after clamping (mean over the batch)."""
    x, y = (a.clamp(-1, 1) + 1) / 2, (b.clamp(-1, 1) + 1) / 2
    mse = ((x - y) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(1.0 / mse)).mean()


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) averaged over latent elements."""
    return 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).mean()


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix) on single frames: [N, 3, H, W] in [-1, 1] -> logits [N, 1, H/8, W/8]."""

    def __init__(self, widths: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        n_in = 3
        for n in widths:
            layers += [nn.Conv2d(n_in, n, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            n_in = n
        layers.append(nn.Conv2d(n_in, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def generator_adversarial_loss(disc: nn.Module, rec: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss of decoded videos rec [B, 3, T, H, W] in [-1, 1]. The discriminator is
    frozen first (requires_grad False) so the generator's backward pass leaves it without gradients."""
    disc.requires_grad_(False)
    return hinge_g_loss(disc(frames_of(rec)))


def discriminator_step(disc: nn.Module, opt_d: torch.optim.Optimizer, real: torch.Tensor,
                       fake: torch.Tensor) -> float:
    """One hinge update of the discriminator on real vs (detached) fake videos [B, 3, T, H, W];
    unfreezes it first. Returns the discriminator loss."""
    disc.requires_grad_(True)
    d_loss = hinge_d_loss(disc(frames_of(real)), disc(frames_of(fake.detach())))
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    return float(d_loss.detach())


def temporal_difference_l1(rec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |(rec[t+1] - rec[t]) - (target[t+1] - target[t])| over frames of videos [B, 3, T, H, W].

    Zero for an error that is the same in every frame, largest for one drawn afresh every frame (flicker,
    texture re-drawn per frame). That kind costs a point tracker most: on the reference rows of
    benchmarks/latent_ceiling.py per-frame noise at 30 dB adds 0.09x the frozen frame's EPE, a blur at 34 dB 0.01x.
    """
    return (torch.diff(rec, dim=2) - torch.diff(target, dim=2)).abs().mean()


def reconstruction_loss(rec: torch.Tensor, target: torch.Tensor, l1_weight: float, l2_weight: float,
                        ssim_weight: float, temporal_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted L1 + L2 + (1 - SSIM) + temporal_difference_l1; returns (loss, logged parts)."""
    l1 = (rec - target).abs().mean()
    l2 = ((rec - target) ** 2).mean()
    s = ssim(rec, target) if ssim_weight > 0 else rec.new_zeros(())
    loss = l1_weight * l1 + l2_weight * l2 + ssim_weight * (1 - s)
    parts = {"l1": float(l1.detach()), "l2": float(l2.detach()), "ssim": float(s.detach())}
    if temporal_weight > 0:
        dt = temporal_difference_l1(rec, target)
        loss = loss + temporal_weight * dt
        parts["dt"] = float(dt.detach())
    return loss, parts


class LPIPSLoss:
    """Differentiable LPIPS (AlexNet) on videos in [-1, 1], from a local weights file only.

    Reuses the backbone loader of `motionstream.scoring.metrics` (same file layout: torchvision AlexNet
    `features.*` + LPIPS `lin{i}.model.1.weight`); only the distance is recomputed here with gradients.
    """

    def __init__(self, path: str):
        if not Path(path).is_file():
            raise FileNotFoundError(f"LPIPS weights not found: {path}")
        self.net = _LPIPSAlex(Path(path))
        self.shift = torch.tensor(self.net.SHIFT).view(1, 3, 1, 1)
        self.scale = torch.tensor(self.net.SCALE).view(1, 3, 1, 1)

    def __call__(self, rec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fa = self.net.features((frames_of(rec) - self.shift) / self.scale)
        fb = self.net.features((frames_of(target) - self.shift) / self.scale)
        total = rec.new_zeros(())
        for x, y, lin in zip(fa, fb, self.net.lins):
            x = x / (x.norm(dim=1, keepdim=True) + 1e-10)
            y = y / (y.norm(dim=1, keepdim=True) + 1e-10)
            total = total + F.conv2d((x - y) ** 2, lin).mean()
        return total
