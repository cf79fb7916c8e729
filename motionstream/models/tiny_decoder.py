"""TAEHV-style tiny video autoencoder (the streaming decoder of the paper's App. A).

The layout follows madebyollin/taehv's `TAEHV` so that a `taew2_1` state dict (Wan 2.1 latents)
loads strictly into `TinyVideoAutoencoder(TinyDecoderConfig.taew2_1())`: `decoder.{i}` /
`encoder.{i}` are the same nn.Sequential indices with the same shapes. The embedded tiny-cpu decoder
is the same class with narrower widths (and optionally patch_size 2), and no encoder.

Blocks (all 2D convs applied per frame, with time handled by):
- MemBlock: conv(cat[x_t, x_{t-1}]) + skip(x_t), i.e. memory of the previous frame's input.
- TGrow: 1x1 conv to stride*C channels, unstacked into `stride` frames (temporal up-sampling).
- TPool: `stride` frames stacked on channels, 1x1 conv (temporal down-sampling, encoder only).

Tensors: latents [B, Z, F, h, w] (normalised: what the diffusion model uses; NCTHW like the rest of
the project); decoded video [B, 3, 1 + 4(F-1), 8h, 8w] in [0, 1] (TAEHV's range). With a
`TinyStreamState`, chunk-wise decoding carries each MemBlock's last input frame, so it equals a
single call over the whole clip; the first 3 frames of a stream (padding of frame 0) are dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class TinyDecoderConfig:
    latent_channels: int = 16
    image_channels: int = 3
    patch_size: int = 1                       # output pixel-shuffle factor
    decoder_widths: list[int] = field(default_factory=lambda: [256, 128, 64, 64])
    decoder_time_upscale: list[bool] = field(default_factory=lambda: [False, True, True])
    decoder_space_upscale: list[bool] = field(default_factory=lambda: [True, True, True])
    blocks_per_stage: int = 3                 # MemBlocks per decoder stage
    latent_clamp: float = 3.0                 # soft clamp tanh(z / c) * c on the input latents
    encoder_width: int = 0                    # 0: decoder only; 64: TAEHV encoder (taew2_1 files have one)
    linear_skip: bool = False                 # embedded only: a 1x1 latent -> 8x8x4-patch linear path (not in taew2_1)
    encoder_time_downscale: list[bool] = field(default_factory=lambda: [True, True, False])

    @classmethod
    def taew2_1(cls) -> "TinyDecoderConfig":
        """The public taew2_1 layout (Wan 2.1 latents, encoder + decoder)."""
        return cls(encoder_width=64)

    @property
    def time_upscale(self) -> int:
        return 2 ** sum(bool(t) for t in self.decoder_time_upscale)

    @property
    def space_upscale(self) -> int:
        return self.patch_size * 2 ** sum(bool(s) for s in self.decoder_space_upscale)


def conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp tanh(x / c) * c, so outlier latents cannot blow up the decoder."""

    def __init__(self, limit: float = 3.0):
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / self.limit) * self.limit


class MemBlock(nn.Module):
    """[N*T, Ci, H, W] x with memory [N*T, Ci, H, W] (previous frame's input) -> [N*T, Co, H, W]."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(conv(n_in * 2, n_out), nn.ReLU(inplace=True), conv(n_out, n_out),
                                  nn.ReLU(inplace=True), conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class TPool(nn.Module):
    """[N*T, C, H, W] -> [N*T/stride, C, H, W]: stack `stride` consecutive frames, 1x1 conv."""

    def __init__(self, n_f: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_f * stride, n_f, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        return self.conv(x.reshape(-1, self.stride * c, h, w))


class TGrow(nn.Module):
    """[N*T, C, H, W] -> [N*T*stride, C, H, W]: 1x1 conv to stride*C channels, one block per new frame."""

    def __init__(self, n_f: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_f, n_f * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        return self.conv(x).reshape(-1, c, h, w)


# decode_frames' signature: (latents, memory) -> (video, memory)
FramesFn = Callable[[torch.Tensor, list[torch.Tensor]], tuple[torch.Tensor, list[torch.Tensor]]]


class TinyStreamState:
    """Memory of a decoding stream: each MemBlock's last input frame (decoder order; empty at stream
    start, read as zeros), and whether the stream started."""

    def __init__(self) -> None:
        self.memory: list[torch.Tensor] = []
        self.started = False


def run_with_memory(layers: nn.Sequential, x: torch.Tensor,
                    memory: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Apply TAEHV blocks to x [N, T, C, H, W], all frames at once per block.

    Each MemBlock's memory is its input one frame earlier: memory[k] [N, 1, C_k, H_k, W_k] for the
    k-th MemBlock (the last frame of the previous chunk), zeros where `memory` is empty (stream
    start). A pure function of its inputs, so it exports (codec.py's OpenVINO decoder).
    Returns (x [N, T', C', H', W'], the memory after this chunk).
    """
    n, t = x.shape[:2]
    x = x.reshape(n * t, *x.shape[2:])
    new_memory: list[torch.Tensor] = []
    for layer in layers:
        if isinstance(layer, MemBlock):
            frames = x.reshape(n, -1, *x.shape[1:])
            prev = memory[len(new_memory)] if memory else torch.zeros_like(frames[:, :1])
            past = torch.cat([prev, frames[:, :-1]], 1).reshape(x.shape)
            new_memory.append(frames[:, -1:].detach())
            x = layer(x, past)
        else:
            x = layer(x)
    return x.reshape(n, -1, *x.shape[1:]), new_memory


class TinyDecodeStep(nn.Module):
    """TinyVideoAutoencoder.decode_frames with the flat signature export needs:
    forward(latents [B, Z, F, h, w], *memory) -> (video [B, 4F, 3, H, W], *memory)."""

    def __init__(self, tiny: "TinyVideoAutoencoder"):
        super().__init__()
        self.tiny = tiny

    def forward(self, latents: torch.Tensor, *memory: torch.Tensor) -> tuple[torch.Tensor, ...]:
        video, memory = self.tiny.decode_frames(latents, list(memory))
        return (video, *memory)


class TinyVideoAutoencoder(nn.Module):
    """TAEHV layout: `decoder` (always) and `encoder` (when cfg.encoder_width > 0)."""

    def __init__(self, cfg: TinyDecoderConfig):
        super().__init__()
        self.cfg = cfg
        nf, z, p = cfg.decoder_widths, cfg.latent_channels, cfg.patch_size
        layers: list[nn.Module] = [Clamp(cfg.latent_clamp), conv(z, nf[0]), nn.ReLU(inplace=True)]
        for s in range(3):
            layers += [MemBlock(nf[s], nf[s]) for _ in range(cfg.blocks_per_stage)]
            layers += [nn.Upsample(scale_factor=2 if cfg.decoder_space_upscale[s] else 1),
                       TGrow(nf[s], 2 if cfg.decoder_time_upscale[s] else 1), conv(nf[s], nf[s + 1], bias=False)]
        layers += [nn.ReLU(inplace=True), conv(nf[3], cfg.image_channels * p ** 2)]
        self.decoder = nn.Sequential(*layers)
        if cfg.linear_skip:
            # every latent pixel -> its 8x8 patch in each of the time_upscale frames it covers
            self.linear = nn.Conv2d(z, cfg.image_channels * cfg.space_upscale ** 2 * cfg.time_upscale, 1)
        if cfg.encoder_width > 0:
            ne = cfg.encoder_width
            enc: list[nn.Module] = [conv(cfg.image_channels * p ** 2, ne), nn.ReLU(inplace=True)]
            for s in range(3):
                enc += [TPool(ne, 2 if cfg.encoder_time_downscale[s] else 1), conv(ne, ne, stride=2, bias=False)]
                enc += [MemBlock(ne, ne) for _ in range(cfg.blocks_per_stage)]
            enc.append(conv(ne, z))
            self.encoder = nn.Sequential(*enc)

    def linear_frames(self, latents: torch.Tensor) -> torch.Tensor:
        """The linear skip alone: latents [B, Z, F, h, w] -> [B, time_upscale*F, 3, H, W] (NTCHW)."""
        n, z, f, h, w = latents.shape
        y = self.linear(latents.transpose(1, 2).reshape(n * f, z, h, w))           # [NF, k*C + c, h, w]
        y = y.reshape(n * f * self.cfg.time_upscale, -1, h, w)
        y = F.pixel_shuffle(y, self.cfg.space_upscale)
        return y.reshape(n, f * self.cfg.time_upscale, *y.shape[1:])

    def init_linear_from_vae(self, vae_linear: nn.Module, latent_mean, latent_std) -> None:
        """Copy the VAE decoder's linear path (raw latents -> [-1, 1]) into the skip (normalised
        latents -> [0, 1]), and zero the last conv so the untrained tiny decoder equals that path."""
        w = vae_linear.conv.weight.detach()[:, :, 0, 0, 0]                          # [k*C + c, Z]
        mean = torch.as_tensor(latent_mean, dtype=w.dtype)
        std = torch.as_tensor(latent_std, dtype=w.dtype)
        with torch.no_grad():
            self.linear.weight.copy_((0.5 * w * std[None, :])[:, :, None, None])
            self.linear.bias.copy_(0.5 * (w @ mean + vae_linear.conv.bias.detach()) + 0.5)
            self.decoder[-1].weight.zero_()
            self.decoder[-1].bias.zero_()

    def new_state(self) -> TinyStreamState:
        return TinyStreamState()

    def decode_frames(self, latents: torch.Tensor,
                      memory: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """latents [B, Z, F, h, w] + MemBlock memory (run_with_memory) -> (video [B, 4F, 3, H, W] (NTCHW),
        unclamped, before the stream-start trim; the new memory). Pure: what decode_video exports."""
        x, memory = run_with_memory(self.decoder, latents.transpose(1, 2), memory)
        if self.cfg.patch_size > 1:
            n, t = x.shape[:2]
            y = F.pixel_shuffle(x.reshape(n * t, *x.shape[2:]), self.cfg.patch_size)
            x = y.reshape(n, t, *y.shape[1:])
        if self.cfg.linear_skip:
            x = x + self.linear_frames(latents)
        return x, memory

    def decode_video(self, latents: torch.Tensor, state: TinyStreamState | None = None,
                     decode_frames: FramesFn | None = None) -> torch.Tensor:
        """latents [B, Z, F, h, w] -> video [B, 3, 1 + 4(F-1) (stream start) or 4F, H, W] in [0, 1].

        Unclamped during training (`self.training`), clamped to [0, 1] otherwise. `decode_frames`: a stand-in
        for self.decode_frames with its signature (an exported copy, codec.py), used once the stream started.
        """
        first = state is None or not state.started
        run = self.decode_frames if first or decode_frames is None else decode_frames
        x, memory = run(latents, state.memory if state is not None else [])
        if state is not None:
            state.memory, state.started = memory, True
        if first:
            x = x[:, self.cfg.time_upscale - 1:]
        x = x.transpose(1, 2)
        return x if self.training else x.clamp(0, 1)
