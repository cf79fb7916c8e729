"""Wan 2.2 A14B's two experts behind one DiT interface, switched by noise level.

    experts = NoiseExperts(high, low, boundary=0.9)     # two WanDiT of one config
    v = experts(x, timesteps [B, F] in [0, 1], context, context_mask, cond)

Upstream (Wan-Video/Wan2.2 image2video.py `_prepare_model_for_timestep`; diffusers'
WanImageToVideoPipeline with boundary_ratio) runs the high-noise expert while the Wan timestep
t * 1000 >= boundary * 1000 and the low-noise expert below it. Our flow time t is Wan's timestep
/ 1000, so the switch is t >= boundary. One forward call uses one expert: all its timesteps must
fall on the same side of the boundary.

Streaming (forward_chunk) is not offered: the self-attention cache of a stream would hold the K/V
of whichever expert wrote it. The causal student is one DiT distilled from the teacher (the paper
distils into a single Wan 2.1 1.3B / Wan 2.2 5B student); the experts serve as the teacher.
"""

from __future__ import annotations

import torch
from torch import nn

from motionstream.models.dit import WanDiT


NO_STREAMING = ("Wan 2.2 A14B's two experts are a teacher: stream with one distilled DiT "
                "(a stream's KV cache would mix the two experts' keys)")


class NoiseExperts(nn.Module):
    """High-noise and low-noise WanDiT of one config; `forward` routes by timestep (module docstring)."""

    def __init__(self, high: WanDiT, low: WanDiT, boundary: float):
        super().__init__()
        if high.cfg != low.cfg:
            raise ValueError("the two experts must share one DiT config")
        self.high, self.low, self.boundary = high, low, float(boundary)
        self.cfg = high.cfg

    def expert(self, timesteps: torch.Tensor) -> WanDiT:
        """The expert for flow times `timesteps` [B, F]: high where t >= boundary, else low."""
        high = timesteps >= self.boundary
        if bool(high.all()):
            return self.high
        if not bool(high.any()):
            return self.low
        raise ValueError(f"timesteps on both sides of the expert boundary {self.boundary} in one call: "
                         "split the batch, the two experts cannot share a forward")

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """WanDiT.forward of the expert for these timesteps."""
        return self.expert(timesteps)(x, timesteps, *args, **kwargs)

    def tokens_per_frame(self, latent_hw: tuple[int, int]) -> int:
        return self.high.tokens_per_frame(latent_hw)

    def forward_chunk(self, *args, **kwargs):
        raise NotImplementedError(NO_STREAMING)

    def new_cache(self, *args, **kwargs):
        raise NotImplementedError(NO_STREAMING)
