"""Track head (paper Sec. 3.1): the video-rate Eq. 1 track map -> per-latent-frame features.

    in   track_map [B, track_dim, T, h, w]   float, T = 1 + 4n (whole clip / first chunk) or 4n (later
                                             chunks), h, w = latent grid (video size / VAE stride)
    out  features  [B, track_channels, F, h, w] with F = ceil(T / 4)

Temporal layout follows the causal VAE: latent frame 0 = video frame 0, latent frame k = video
frames 4k-3..4k. A map whose length is 1 mod 4 starts at video frame 0, so that frame is
replicated in front (as the VAE's causal padding does) to make a full group of 4. Each group of 4
frames is compressed by a stride-4 temporal conv, then a 1x1x1 conv: output frame k depends only on
the video frames of latent frame k, so the head is causal and a chunk can be processed alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TrackHead(nn.Module):
    def __init__(self, track_dim: int, track_channels: int, temporal_factor: int):
        super().__init__()
        self.temporal_factor = temporal_factor
        self.compress = nn.Conv3d(track_dim, track_channels, kernel_size=(temporal_factor, 1, 1),
                                  stride=(temporal_factor, 1, 1))
        self.proj = nn.Conv3d(track_channels, track_channels, kernel_size=1)

    @staticmethod
    def video_frames(latent_start: int, latent_stop: int, temporal_factor: int) -> tuple[int, int]:
        """Video frame range [a, b) covered by latent frames [latent_start, latent_stop)."""
        def first(k: int) -> int:
            return 0 if k == 0 else temporal_factor * k - (temporal_factor - 1)
        return first(latent_start), first(latent_stop)

    def forward(self, track_map: torch.Tensor) -> torch.Tensor:
        pad = (-track_map.shape[2]) % self.temporal_factor
        if pad:
            # only a map that starts at video frame 0 has a length that is not a multiple of 4
            track_map = torch.cat([track_map[:, :, :1].expand(-1, -1, pad, -1, -1), track_map], dim=2)
        return self.proj(F.silu(self.compress(track_map)))
