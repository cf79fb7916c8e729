"""Small causal video VAE with Wan's layout: 8x spatial, 4x temporal, 16 latent channels.

Temporal layout (Wan 2.1): latent frame 0 encodes video frame 0 alone, latent frame k >= 1 encodes
video frames 4k-3..4k, so T = 1 + 4n video frames <-> 1 + n latent frames.

How the layout is obtained with plain causal convolutions:
- encoder: per-frame features at H/8 go through causal convs; before the 4x temporal pool, the
  features of frame 0 are repeated 3 times in front ([f0, f0, f0, f0, f1, ...]), so every group of 4
  is exactly {frame 0} or {frames 4k-3..4k}.
- decoder: each latent frame grows into 4 frames (TAEHV's TGrow); the first 3 outputs of the stream
  (the padding of frame 0) are dropped, leaving 1 + 4n frames.

Every temporal conv pads only the past (zeros at stream start), so encoding/decoding can stream:
`StreamState` carries the last frames each conv needs, and chunk-wise calls equal one full call.

Tensors: video float [B, 3, T, H, W] in [-1, 1]; latents float [B, C, 1 + (T-1)//4, H/8, W/8]
(raw, not normalised: `motionstream.models.codec.VideoCodec` applies the per-channel mean/std).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class VAEConfig:
    latent_channels: int = 16
    patch_size: int = 4                        # pixel-unshuffle before the encoder / shuffle after the decoder
    encoder_widths: list[int] = field(default_factory=lambda: [64, 128])    # at H/p, ..., H/8 (p = patch_size)
    decoder_widths: list[int] = field(default_factory=lambda: [192, 128])   # at H/8, ..., H/p
    encoder_blocks: int = 1                    # residual blocks per encoder level
    decoder_blocks: int = 2                    # residual blocks per decoder level
    latent_blocks: int = 1                     # residual blocks at the latent frame rate (enc and dec)
    temporal_kernel: int = 3                   # causal kernel size in time
    highres_temporal_kernel: int = 1           # at the finest level (enc level 0, last dec level): 1 = per frame, cheap
    temporal_stride: int = 4
    # linear path: latents = W (stacked 8x8x4 patches) + nonlinear residual; initialised from the data's
    # PCA (whitened), so training starts from the best linear codec instead of from noise
    linear_path: bool = True
    logvar_init: float = -10.0                 # initial log-variance: near-deterministic latents at start
    # per-channel statistics of the raw latent mean (filled in when the encoder is frozen)
    latent_mean: list[float] | None = None
    latent_std: list[float] | None = None

    @property
    def spatial_stride(self) -> int:
        return self.patch_size * 2 ** (len(self.encoder_widths) - 1)


# ------------------------------------------------------------------------------- streaming
class StreamState:
    """Per-stream memory of the causal layers (keyed by layer) plus how many frames were seen.

    A fresh StreamState means "start of stream": causal convs see zeros in the past and the
    frame-0 padding rules apply.
    """

    def __init__(self) -> None:
        self.cache: dict[int, torch.Tensor] = {}
        self.started: dict[int, bool] = {}

    def reset(self) -> None:
        self.cache.clear()
        self.started.clear()


class CausalConv3d(nn.Conv3d):
    """Conv3d with kernel (kt, k, k) that pads only the past in time (zeros at stream start).

    forward(x [B, Ci, T, H, W], state) -> [B, Co, T, H, W]; with a StreamState the last kt-1 input
    frames are kept so the next chunk continues exactly where this one stopped.
    """

    def __init__(self, n_in: int, n_out: int, kernel_t: int = 3, kernel_s: int = 3, bias: bool = True):
        super().__init__(n_in, n_out, (kernel_t, kernel_s, kernel_s), padding=(0, kernel_s // 2, kernel_s // 2), bias=bias)
        self.past = kernel_t - 1

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        if self.past == 0:
            return super().forward(x)
        key = id(self)
        prev = state.cache.get(key) if state is not None else None
        if prev is None:
            prev = x.new_zeros(x.shape[0], x.shape[1], self.past, *x.shape[3:])
        xp = torch.cat([prev, x], 2)
        if state is not None:
            state.cache[key] = xp[:, :, -self.past:].detach()
        return super().forward(xp)


class ResBlock(nn.Module):
    """x + conv(act(causal_conv(act(x)))): the first conv mixes time (causal), the second space only."""

    def __init__(self, n: int, kernel_t: int):
        super().__init__()
        self.conv_t = CausalConv3d(n, n, kernel_t, 3)
        self.conv_s = CausalConv3d(n, n, 1, 3)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        return x + self.conv_s(self.act(self.conv_t(self.act(x), state)))


def _frames_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D layer to every frame of [B, C, T, H, W]."""
    b, c, t, h, w = x.shape
    y = conv(x.transpose(1, 2).reshape(b * t, c, h, w))
    return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


class Downsample(nn.Module):
    """Per-frame stride-2 conv: [B, Ci, T, H, W] -> [B, Co, T, H/2, W/2]."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Conv2d(n_in, n_out, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _frames_conv(self.conv, x)


class Upsample(nn.Module):
    """Per-frame nearest 2x + conv: [B, Ci, T, H, W] -> [B, Co, T, 2H, 2W]."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Conv2d(n_in, n_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = F.interpolate(x.transpose(1, 2).reshape(b * t, c, h, w), scale_factor=2, mode="nearest")
        y = self.conv(y)
        return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


class TemporalPool(nn.Module):
    """Groups of `stride` frames -> one frame (1x1 conv over the stacked channels).

    At stream start, frame 0 is repeated stride-1 times in front so it forms a group alone.
    [B, Ci, 1 + stride*n, H, W] (first chunk) or [B, Ci, stride*n, H, W] (later) -> [B, Co, (1+)n, H, W].
    """

    def __init__(self, n_in: int, n_out: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv3d(n_in * stride, n_out, 1)

    def stack(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """[B, C, T, H, W] -> [B, C*stride, groups, H, W]; stacked channel = c * stride + k (k = frame in group)."""
        first = state is None or not state.started.get(id(self), False)
        if state is not None:
            state.started[id(self)] = True
        if first:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.stride - 1, -1, -1), x], 2)
        b, c, t, h, w = x.shape
        if t % self.stride:
            raise ValueError(f"encoder needs 1 + {self.stride}n frames for the first chunk and "
                             f"{self.stride}n frames later; got a chunk that leaves {t % self.stride} over")
        return x.reshape(b, c, t // self.stride, self.stride, h, w).transpose(2, 3).reshape(b, c * self.stride, t // self.stride, h, w)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        return self.conv(self.stack(x, state))


class TemporalGrow(nn.Module):
    """One frame -> `stride` frames (1x1 conv to stride*C channels, then unstack).

    At stream start the first stride-1 outputs (frame 0's padding) are dropped.
    [B, Ci, F, H, W] -> [B, Co, stride*F (- (stride-1) on the first chunk), H, W]; conv output
    channel k * Co + c becomes channel c of frame k of the group.
    """

    def __init__(self, n_in: int, n_out: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv3d(n_in, n_out * stride, 1)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        first = state is None or not state.started.get(id(self), False)
        if state is not None:
            state.started[id(self)] = True
        y = self.conv(x)
        b, cs, f, h, w = y.shape
        y = y.reshape(b, self.stride, cs // self.stride, f, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, cs // self.stride, f * self.stride, h, w)
        return y[:, :, self.stride - 1:] if first else y


# ------------------------------------------------------------------------------- encoder / decoder
class Encoder(nn.Module):
    """video [B, 3, T, H, W] in [-1, 1] -> (mean, logvar) each [B, Z, 1 + (T-1)//4, H/8, W/8]."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        w = cfg.encoder_widths
        self.patch_size = cfg.patch_size
        self.stem = CausalConv3d(3 * cfg.patch_size ** 2, w[0], 1, 3)
        self.levels = nn.ModuleList()
        for i, n in enumerate(w):
            kt = cfg.highres_temporal_kernel if i == 0 else cfg.temporal_kernel
            blocks = nn.ModuleList([ResBlock(n, kt) for _ in range(cfg.encoder_blocks)])
            down = Downsample(n, w[i + 1]) if i + 1 < len(w) else None
            self.levels.append(nn.ModuleDict({"blocks": blocks, **({"down": down} if down is not None else {})}))
        self.pool = TemporalPool(w[-1], w[-1], cfg.temporal_stride)
        self.latent_blocks = nn.ModuleList([ResBlock(w[-1], cfg.temporal_kernel) for _ in range(cfg.latent_blocks)])
        self.head = CausalConv3d(w[-1], 2 * cfg.latent_channels, 1, 3)
        self.act = nn.SiLU()
        self.spatial_stride = cfg.spatial_stride
        self.linear = TemporalPool(3 * cfg.spatial_stride ** 2, cfg.latent_channels, cfg.temporal_stride) if cfg.linear_path else None
        with torch.no_grad():   # the residual starts at 0 (mean) and at logvar_init (log-variance)
            if cfg.linear_path:
                self.head.weight.zero_()
                self.head.bias.zero_()
            self.head.bias[cfg.latent_channels:] = cfg.logvar_init

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] -> per-frame 8x8 patches [B, 3*64, T, H/8, W/8] (channel = c*64 + dy*8 + dx)."""
        b, c, t, h, w = x.shape
        y = F.pixel_unshuffle(x.transpose(1, 2).reshape(b * t, c, h, w), self.spatial_stride)
        return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)

    def linear_mean(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """The linear path alone: video [B, 3, T, H, W] -> raw latents [B, Z, 1 + (T-1)//4, H/8, W/8], a
        1x1 projection of each latent cell's 8x8x4 pixel patch (no nonlinear residual: about 1/400 of the
        encoder's FLOPs). Raises ValueError for an encoder built without it (cfg.linear_path false)."""
        if self.linear is None:
            raise ValueError("this VAE encoder has no linear path (vae.linear_path: false)")
        return self.linear(self.patches(x), state)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lin = self.linear_mean(x, state) if self.linear is not None else None
        b, c, t, h, w = x.shape
        if self.patch_size > 1:
            x = F.pixel_unshuffle(x.transpose(1, 2).reshape(b * t, c, h, w), self.patch_size)
            x = x.reshape(b, t, *x.shape[1:]).transpose(1, 2)
        x = self.stem(x)
        for level in self.levels:
            for blk in level["blocks"]:
                x = blk(x, state)
            if "down" in level:
                x = level["down"](x)
        x = self.pool(x, state)
        for blk in self.latent_blocks:
            x = blk(x, state)
        mean, logvar = self.head(self.act(x)).chunk(2, dim=1)
        return (mean if lin is None else mean + lin), logvar


class Decoder(nn.Module):
    """latents [B, Z, F, h, w] (raw) -> video [B, 3, 1 + 4(F-1), 8h, 8w] (unclamped, ~[-1, 1])."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        w = cfg.decoder_widths
        self.patch_size = cfg.patch_size
        self.stem = CausalConv3d(cfg.latent_channels, w[0], 1, 3)
        self.latent_blocks = nn.ModuleList([ResBlock(w[0], cfg.temporal_kernel) for _ in range(cfg.latent_blocks)])
        self.grow = TemporalGrow(w[0], w[0], cfg.temporal_stride)
        self.levels = nn.ModuleList()
        for i, n in enumerate(w):
            kt = cfg.highres_temporal_kernel if i == len(w) - 1 else cfg.temporal_kernel
            blocks = nn.ModuleList([ResBlock(n, kt) for _ in range(cfg.decoder_blocks)])
            up = Upsample(n, w[i + 1]) if i + 1 < len(w) else None
            self.levels.append(nn.ModuleDict({"blocks": blocks, **({"up": up} if up is not None else {})}))
        self.head = CausalConv3d(w[-1], 3 * cfg.patch_size ** 2, 1, 3)
        self.act = nn.SiLU()
        self.spatial_stride = cfg.spatial_stride
        self.linear = TemporalGrow(cfg.latent_channels, 3 * cfg.spatial_stride ** 2, cfg.temporal_stride) if cfg.linear_path else None
        if cfg.linear_path:     # the nonlinear residual starts at 0
            with torch.no_grad():
                self.head.weight.zero_()
                self.head.bias.zero_()

    def linear_frames(self, z: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """The linear path alone: latents [B, Z, F, h, w] -> video [B, 3, T, 8h, 8w]."""
        y = self.linear(z, state)
        b, c, t, h, w = y.shape
        y = F.pixel_shuffle(y.transpose(1, 2).reshape(b * t, c, h, w), self.spatial_stride)
        return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)

    def forward(self, z: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        lin = self.linear_frames(z, state) if self.linear is not None else None
        x = self.stem(z)
        for blk in self.latent_blocks:
            x = blk(x, state)
        x = self.grow(x, state)
        for level in self.levels:
            for blk in level["blocks"]:
                x = blk(x, state)
            if "up" in level:
                x = level["up"](x)
        x = self.head(self.act(x))
        if self.patch_size > 1:
            b, c, t, h, w = x.shape
            x = F.pixel_shuffle(x.transpose(1, 2).reshape(b * t, c, h, w), self.patch_size)
            x = x.reshape(b, t, *x.shape[1:]).transpose(1, 2)
        return x if lin is None else x + lin


class CausalVAE(nn.Module):
    """The embedded causal video VAE (raw latents; see VideoCodec for the normalised interface)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    @property
    def spatial_stride(self) -> int:
        return self.cfg.spatial_stride

    def check_video(self, x: torch.Tensor, first_chunk: bool = True) -> None:
        s, ts = self.spatial_stride, self.cfg.temporal_stride
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"video must be [B, 3, T, H, W], got {tuple(x.shape)}")
        if x.shape[-1] % s or x.shape[-2] % s:
            raise ValueError(f"video height and width must be multiples of {s}, got {x.shape[-2]}x{x.shape[-1]}")
        if first_chunk and (x.shape[2] - 1) % ts:
            raise ValueError(f"video must have 1 + {ts}n frames, got {x.shape[2]}")

    def encode(self, x: torch.Tensor, state: StreamState | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """video [B, 3, T, H, W] in [-1, 1] -> (mean, logvar) [B, Z, 1 + (T-1)//4, H/8, W/8]."""
        self.check_video(x, first_chunk=state is None)
        return self.encoder(x, state)

    def encode_linear(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """video [B, 3, T, H, W] in [-1, 1] -> the encoder's linear path alone (Encoder.linear_mean), raw."""
        self.check_video(x, first_chunk=state is None)
        return self.encoder.linear_mean(x, state)

    def decode(self, z: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """raw latents [B, Z, F, h, w] -> video [B, 3, 1 + 4(F-1) (first chunk) or 4F, 8h, 8w]."""
        return self.decoder(z, state)

    def forward(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, mean, logvar); samples z = mean + std * eps when `sample`."""
        mean, logvar = self.encode(x)
        logvar = logvar.clamp(-30.0, 20.0)   # exp() stays finite
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) if sample else mean
        return self.decode(z), mean, logvar
