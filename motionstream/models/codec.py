"""VideoCodec: the one interface the rest of MotionStream uses to go between frames and latents.

    codec = load_codec()                                  # weights/vae-tiny-cpu + weights/tiny-decoder-tiny-cpu
    z = codec.encode(frames_to_tensor(frames))            # [1, 16, 1 + (T-1)//4, H/8, W/8], normalised
    video = codec.decode(z)                               # [1, 3, T, H, W] in [-1, 1] (full decoder)
    dec = codec.stream_decoder(tiny=True)                 # streaming: state carried across calls
    for chunk in latent_chunks:                           # chunk [1, 16, F, h, w]
        frames = tensor_to_frames(dec.decode_chunk(chunk))  # 1 + 4(F-1) frames first, then 4F per call

Latents are normalised per channel with the mean/std stored next to the VAE weights, so the
diffusion model sees roughly unit-variance inputs. Works for the embedded causal VAE + tiny decoder
and for Wan 2.1's VAE (`motionstream.models.wan_vae`), both behind the same `Backend` calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
import torch.nn as nn

from motionstream.models.folders import TINY_DECODER_KIND, VAE_KIND, load_folder
from motionstream.models.frames import frames_to_tensor, tensor_to_frames  # noqa: F401 (re-exported)
from motionstream.models.openvino_runner import OpenVINORunner
from motionstream.models.tiny_decoder import TinyDecodeStep
from motionstream.models.vae import StreamState


class StreamDecoder(Protocol):
    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor: ...
    def reset(self) -> None: ...


class _EmbeddedStream:
    """The embedded VAE's causal conv caches (a StreamState), carried across the calls of one stream."""

    def __init__(self, codec: "VideoCodec"):
        self.codec = codec
        self.state = StreamState()

    def reset(self) -> None:
        self.state.reset()


class _EmbeddedStreamDecoder(_EmbeddedStream):
    """Full embedded decoder run chunk by chunk with its causal conv caches carried across calls."""

    @torch.no_grad()
    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        """normalised latents [B, Z, F, h, w] -> video [B, 3, 1 + 4(F-1) | 4F, H, W] in [-1, 1]."""
        return self.codec.vae.decode(self.codec.denormalize(latents), self.state).clamp(-1, 1)


class StreamEncoder(_EmbeddedStream):
    """The embedded encoder run chunk by chunk (causal conv caches carried across calls): the first
    chunk has 1 + 4n frames, later ones 4n, and the latents equal those of encoding the whole video.
    linear: its linear path alone (CausalVAE.encode_linear), a cheap stand-in for the whole encoder."""

    def __init__(self, codec: "VideoCodec", linear: bool = False):
        super().__init__(codec)
        self.linear = linear

    @torch.no_grad()
    def encode_chunk(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] in [-1, 1] -> normalised latent means [B, Z, 1 + (T-1)//4 | T//4, h, w]."""
        vae = self.codec.vae
        return self.codec.normalize(vae.encode_linear(video, self.state) if self.linear else
                                    vae.encode(video, self.state)[0])


class _TinyStreamDecoder:
    """The TAEHV-style tiny decoder chunk by chunk (MemBlock memories carried across calls).
    runner: an OpenVINORunner of TinyDecodeStep(tiny) that decodes once the stream started (the first
    chunk, whose memory is still empty, runs in torch)."""

    def __init__(self, tiny: nn.Module, runner: OpenVINORunner | None = None):
        self.tiny = tiny
        self.state = tiny.new_state()
        self.decode_frames = None if runner is None else \
            lambda latents, memory: self._split(runner(latents, *memory))

    @staticmethod
    def _split(outputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return outputs[0], list(outputs[1:])

    def reset(self) -> None:
        self.state = self.tiny.new_state()

    @torch.no_grad()
    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        """normalised latents [B, Z, F, h, w] -> video [B, 3, 1 + 4(F-1) | 4F, H, W] in [-1, 1]."""
        return self.tiny.decode_video(latents, self.state, self.decode_frames) * 2 - 1


class VideoCodec(nn.Module):
    """Embedded causal VAE (+ optional tiny decoder) with normalised latents.

    Attributes: spatial_stride (8), temporal_stride (4), latent_channels (16).
    Backends other than the embedded VAE (Wan) subclass this and override encode/decode/stream_decoder.
    """

    def __init__(self, vae: nn.Module | None, latent_mean: torch.Tensor | list[float] | None = None,
                 latent_std: torch.Tensor | list[float] | None = None, tiny_decoder: nn.Module | None = None,
                 spatial_stride: int | None = None, temporal_stride: int | None = None,
                 latent_channels: int | None = None):
        super().__init__()
        self.vae = vae
        self.tiny_decoder = tiny_decoder
        self._openvino_decoders: dict[str, OpenVINORunner] = {}    # by precision, built by stream_decoder(openvino=True)
        if vae is not None:
            spatial_stride = spatial_stride or vae.cfg.spatial_stride
            temporal_stride = temporal_stride or vae.cfg.temporal_stride
            latent_channels = latent_channels or vae.cfg.latent_channels
        self.spatial_stride, self.temporal_stride, self.latent_channels = spatial_stride, temporal_stride, latent_channels
        mean = torch.zeros(latent_channels) if latent_mean is None else torch.as_tensor(latent_mean, dtype=torch.float32)
        std = torch.ones(latent_channels) if latent_std is None else torch.as_tensor(latent_std, dtype=torch.float32)
        self.register_buffer("latent_mean", mean.view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("latent_std", std.view(1, -1, 1, 1, 1), persistent=False)

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.latent_mean) / self.latent_std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.latent_std + self.latent_mean

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] in [-1, 1], T = 1 + 4n -> normalised latent means [B, 16, 1 + n, H/8, W/8]."""
        return self.normalize(self.vae.encode(video)[0])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """normalised latents [B, 16, F, h, w] -> video [B, 3, 1 + 4(F-1), 8h, 8w] in [-1, 1] (full decoder)."""
        return self.vae.decode(self.denormalize(latents)).clamp(-1, 1)

    def stream_encoder(self, linear: bool = False) -> StreamEncoder:
        """A fresh streaming encoder (the embedded VAE's, or with `linear` its linear path alone; other
        backends override or raise)."""
        if self.vae is None:
            raise ValueError("this codec has no embedded VAE to encode with")
        if linear and self.vae.encoder.linear is None:
            raise ValueError("this VAE has no linear path to encode with (vae.linear_path: false)")
        return StreamEncoder(self, linear)

    def stream_decoder(self, tiny: bool = True, openvino: bool = False, precision: str = "auto") -> StreamDecoder:
        """A fresh streaming decoder (tiny TAEHV-style one, or the full causal decoder). openvino: the
        tiny decoder run by OpenVINO at `precision` (models/openvino_runner.py), converted once per codec."""
        if tiny:
            if self.tiny_decoder is None:
                raise ValueError("this codec was loaded without a tiny decoder; use stream_decoder(tiny=False) "
                                 "or load_codec(tiny_decoder=...)")
            if not openvino:
                return _TinyStreamDecoder(self.tiny_decoder)
            if precision not in self._openvino_decoders:
                self._openvino_decoders[precision] = OpenVINORunner(TinyDecodeStep(self.tiny_decoder), precision)
            return _TinyStreamDecoder(self.tiny_decoder, self._openvino_decoders[precision])
        if openvino:
            raise ValueError("the OpenVINO decoder is the tiny one: use stream_decoder(tiny=True, openvino=True)")
        return _EmbeddedStreamDecoder(self)


def load_codec(vae: str | Path = "vae-tiny-cpu", tiny_decoder: str | Path | None = "tiny-decoder-tiny-cpu") -> VideoCodec:
    """VideoCodec from shipped model folders (names in weights/ or paths); raises WeightsNotFound if missing.

    `tiny_decoder=None` loads the full VAE only.
    """
    model, _ = load_folder(vae, VAE_KIND)
    cfg = model.cfg
    tiny = load_tiny_decoder(tiny_decoder) if tiny_decoder is not None else None
    return VideoCodec(model, cfg.latent_mean, cfg.latent_std, tiny)


def load_tiny_decoder(name_or_path: str | Path) -> nn.Module:
    """The tiny streaming decoder (models/tiny_decoder.TinyVideoAutoencoder) of a model folder, eval mode."""
    return load_folder(name_or_path, TINY_DECODER_KIND)[0]
