"""Losses of the student against the world's ground truth (train/gt.py).

    changed_cell_weights(frames, stride, temporal_stride, weight) -> [F, h, w] per-cell loss weight
    weighted_mse(x, target, weights) -> scalar

The frozen frame and the forward warp both fail in the pixels that change (the moved objects and
the background they reveal), and those cover ~10 % of a clip, so an unweighted loss is dominated by
what both already get right. The weight is 1 + `weight` x the changed fraction of each latent cell.
"""

from __future__ import annotations

import numpy as np
import torch

from motionstream.data.drags import changed_mask
from motionstream.train.cache import latent_moving_mask


def changed_cell_weights(frames: np.ndarray, stride: int, temporal_stride: int, weight: float) -> torch.Tensor:
    """float32 [F, h, w]: 1 + weight x (fraction of each latent cell's pixels that differ from frame 0,
    max over the latent frame's video frames). frames uint8 [T, H, W, 3]."""
    frac = latent_moving_mask(changed_mask(frames), stride, temporal_stride)
    return torch.from_numpy(1.0 + weight * frac)


def weighted_mse(x: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over [B, C, F, h, w] of weights [B, 1, F, h, w] x (x - target)^2, normalised by the
    weights' mean so that the loss scale does not depend on how much of the clip changes."""
    w = weights.expand_as(x)
    return (w * (x - target) ** 2).sum() / w.sum()
