"""uint8 video frames <-> the float tensors every network here reads and writes.

Frames: uint8 RGB [T, H, W, 3], 0..255. Tensors: float32 [1, 3, T, H, W] in [-1, 1]. A leaf of
models/ (the codec and the motion conditioning both convert).
"""

from __future__ import annotations

import numpy as np
import torch


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] (or [H, W, 3]) -> float [1, 3, T, H, W] in [-1, 1]."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float()
    return (x / 127.5 - 1.0)[None]


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """float [1, 3, T, H, W] (or [3, T, H, W]) in [-1, 1] -> uint8 [T, H, W, 3] (clamped, rounded)."""
    if video.ndim == 5:
        if video.shape[0] != 1:
            raise ValueError(f"tensor_to_frames takes one video, got batch {video.shape[0]}")
        video = video[0]
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()
