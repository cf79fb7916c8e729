"""Paper-scale codec: Wan 2.1's VAE (diffusers.AutoencoderKLWan) + optional TAEHV `taew2_1` tiny decoder.

Nothing is downloaded: the VAE loads from a local diffusers folder (`from_pretrained(path,
local_files_only=True)`), the tiny decoder from a local safetensors file in the taew2_1 layout.

Streaming: diffusers' `_decode` clears the causal conv cache on every call. `WanStreamDecoder` keeps
its own cache list (`feat_cache`) across `decode_chunk` calls and feeds latent frames one at a time
exactly as `_decode` does, so earlier latents are never decoded again and chunk-wise output equals
one call over the whole clip.

Latent normalisation uses the VAE config's `latents_mean` / `latents_std` (Wan's constants) when
present: normalised = (raw - mean) / std, the space the Wan DiT works in.
"""

from __future__ import annotations

from pathlib import Path

import torch

from motionstream.models.checkpoints import WeightsNotFound
from motionstream.models.codec import VideoCodec
from motionstream.models.tiny_decoder import TinyDecoderConfig, TinyVideoAutoencoder

WAN_SPATIAL_STRIDE = 8
WAN_TEMPORAL_STRIDE = 4


def load_wan_autoencoder(path: str | Path):
    """diffusers AutoencoderKLWan from a local folder (config.json + weights); WeightsNotFound if absent."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise WeightsNotFound(
            f"no Wan VAE folder at {path} (needs a diffusers config.json + diffusion_pytorch_model.safetensors, "
            "e.g. the `vae/` folder of Wan-AI/Wan2.1-T2V-1.3B-Diffusers downloaded beforehand)")
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(str(path), local_files_only=True)
    return vae.eval()


def load_taehv_state(path: str | Path, model: TinyVideoAutoencoder) -> dict[str, torch.Tensor]:
    """A taew2_1-layout state dict from a safetensors file, with TAEHV's TGrow patch applied:
    when the file's TGrow has more output channels than the model (temporal up-sampling disabled
    there), keep the last time step's channels."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFound(f"no TAEHV weights at {path} (a taew2_1 .safetensors file; pickle files are not loaded)")
    from safetensors.torch import load_file

    sd = {k: v.float() for k, v in load_file(str(path)).items()}
    own = model.state_dict()
    for i, layer in enumerate(model.decoder):
        key = f"decoder.{i}.conv.weight"
        if type(layer).__name__ == "TGrow" and key in sd and sd[key].shape[0] > own[key].shape[0]:
            sd[key] = sd[key][-own[key].shape[0]:]
    return sd


class WanStreamDecoder:
    """Chunk-wise Wan decoding with the causal conv cache carried across calls."""

    def __init__(self, codec: "WanVideoCodec"):
        self.codec = codec
        self.reset()

    def reset(self) -> None:
        self.feat_cache = [None] * self.codec.wan._cached_conv_counts["decoder"]
        self.started = False

    @torch.no_grad()
    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        """normalised latents [B, 16, F, h, w] -> video [B, 3, 1 + 4(F-1) | 4F, 8h, 8w] in [-1, 1]."""
        wan = self.codec.wan
        x = wan.post_quant_conv(self.codec.denormalize(latents))
        outs = []
        for i in range(x.shape[2]):
            conv_idx = [0]
            first = not self.started
            self.started = True
            outs.append(wan.decoder(x[:, :, i:i + 1], feat_cache=self.feat_cache, feat_idx=conv_idx, first_chunk=first))
        out = torch.cat(outs, 2)
        if wan.config.patch_size is not None:
            from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

            out = unpatchify(out, patch_size=wan.config.patch_size)
        return out.clamp(-1, 1)


class _TaehvStreamDecoder:
    def __init__(self, tiny: TinyVideoAutoencoder):
        self.tiny = tiny
        self.reset()

    def reset(self) -> None:
        self.state = self.tiny.new_state()

    @torch.no_grad()
    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        return self.tiny.decode_video(latents, self.state) * 2 - 1


class WanVideoCodec(VideoCodec):
    """VideoCodec over diffusers' AutoencoderKLWan (+ optional taew2_1 tiny decoder)."""

    def __init__(self, wan, tiny_decoder: TinyVideoAutoencoder | None = None):
        cfg = wan.config
        channels = int(cfg.z_dim)
        super().__init__(None, getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None), tiny_decoder,
                         spatial_stride=int(getattr(cfg, "scale_factor_spatial", None) or WAN_SPATIAL_STRIDE),
                         temporal_stride=int(getattr(cfg, "scale_factor_temporal", None) or WAN_TEMPORAL_STRIDE),
                         latent_channels=channels)
        self.wan = wan

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] in [-1, 1] -> normalised latent means [B, 16, 1 + (T-1)//4, H/8, W/8]."""
        return self.normalize(self.wan.encode(video).latent_dist.mean)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """normalised latents -> video [B, 3, 1 + 4(F-1), H, W] in [-1, 1]."""
        return self.wan.decode(self.denormalize(latents)).sample.clamp(-1, 1)

    def stream_encoder(self):
        raise NotImplementedError("streaming encode of the Wan VAE is not implemented: weights with the 'video' "
                                  "prior (output_skip) stream with the embedded VAE only")

    def stream_decoder(self, tiny: bool = True):
        if tiny:
            if self.tiny_decoder is None:
                raise ValueError("no tiny decoder loaded: pass taehv=PATH to load_wan_codec, or use stream_decoder(tiny=False)")
            return _TaehvStreamDecoder(self.tiny_decoder)
        return WanStreamDecoder(self)


def load_wan_codec(vae_path: str | Path, taehv: str | Path | None = None) -> WanVideoCodec:
    """Wan 2.1 codec from a local diffusers VAE folder and an optional taew2_1 .safetensors file."""
    wan = load_wan_autoencoder(vae_path)
    tiny = None
    if taehv is not None:
        tiny = TinyVideoAutoencoder(TinyDecoderConfig.taew2_1())
        tiny.load_state_dict(load_taehv_state(taehv, tiny), strict=True)
        tiny.eval()
    return WanVideoCodec(wan, tiny)
