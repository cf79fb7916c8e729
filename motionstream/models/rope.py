"""3D rotary position embedding split over (t, h, w), laid out as in Wan.

A head of size d is rotated in d/2 adjacent pairs (x[2i], x[2i+1]). The pairs are split over the
three axes like Wan: time gets d - 4*(d//6) dims, height and width get 2*(d//6) each, in that
order. Each axis uses frequencies 1 / theta^(2i / dim_axis).

Unlike a lookup table of fixed length (Self-Forcing indexes such a table by absolute frame and
crashes past its end), angles are computed from the positions themselves, so any position works;
the causal student keeps positions bounded anyway (see kv_cache.py).

    rope_tables(frame_positions [F], h, w, head_dim, theta) -> (cos, sin) float32 [F*h*w, d/2]
    apply_rope(x [B, H, L, d], cos, sin [L, d/2]) -> [B, H, L, d]
"""

from __future__ import annotations

import torch


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Real dimensions given to (t, h, w): (d - 4*(d//6), 2*(d//6), 2*(d//6))."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for RoPE, got {head_dim}")
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def _axis_angles(positions: torch.Tensor, axis_dim: int, theta: float) -> torch.Tensor:
    """float64 [N, axis_dim/2] angles pos * theta^(-2i/axis_dim)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, axis_dim, 2, dtype=torch.float64, device=positions.device) / axis_dim)
    return positions.to(torch.float64)[:, None] * inv_freq[None, :]


def rope_tables(frame_positions: torch.Tensor, height: int, width: int, head_dim: int,
                theta: float = 10000.0, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [F*h*w, head_dim/2] for tokens ordered (frame, row, column).

    frame_positions: [F] time index of each frame (any real value; need not start at 0).
    Angles are computed in float64 (as Wan does) and cast to `dtype` at the end.
    """
    dt, dh, dw = axis_dims(head_dim)
    dev = frame_positions.device
    at = _axis_angles(frame_positions, dt, theta)                                   # [F, dt/2]
    ah = _axis_angles(torch.arange(height, device=dev), dh, theta)                  # [h, dh/2]
    aw = _axis_angles(torch.arange(width, device=dev), dw, theta)                   # [w, dw/2]
    f = frame_positions.shape[0]
    angles = torch.cat([
        at[:, None, None, :].expand(f, height, width, -1),
        ah[None, :, None, :].expand(f, height, width, -1),
        aw[None, None, :, :].expand(f, height, width, -1),
    ], dim=-1).reshape(f * height * width, head_dim // 2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of the last dim of x [..., L, d] by angles whose cos/sin are [L, d/2].

    Computed in float32 (cos/sin are float32) and cast back, so bf16 activations keep exact angles."""
    pairs = x.float().unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2).type_as(x)
