"""Paper-scale codec: Wan 2.1 / 2.2's VAE (diffusers.AutoencoderKLWan) + optional TAEHV `taew2_1` tiny decoder.

Nothing is downloaded. The VAE loads from a local diffusers folder (`from_pretrained(path,
local_files_only=True)`) or from Wan's original file (`Wan2.1_VAE.pth`, `Wan2.2_VAE.pth`; read
with torch.load(weights_only=True), never unpickling code; a .safetensors file with the same keys
works too), whose keys are renamed to diffusers' (`wan_vae_original_to_diffusers`) and loaded
strictly into an AutoencoderKLWan built with the upstream config (WAN_VAE_CONFIGS, picked by the
latent width: 16 = Wan 2.1, 48 = Wan 2.2). The tiny decoder loads from a local safetensors file in
the taew2_1 layout.

Streaming: diffusers' `_decode` clears the causal conv cache on every call. `WanStreamDecoder` keeps
its own cache list (`feat_cache`) across `decode_chunk` calls and feeds latent frames one at a time
exactly as `_decode` does, so earlier latents are never decoded again and chunk-wise output equals
one call over the whole clip.

Latent normalisation uses the VAE config's `latents_mean` / `latents_std` (Wan's constants) when
present: normalised = (raw - mean) / std, the space the Wan DiT works in.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify
from safetensors.torch import load_file

from motionstream.models.checkpoints import WeightsNotFound
from motionstream.models.codec import VideoCodec
from motionstream.models.tiny_decoder import TinyDecoderConfig, TinyVideoAutoencoder

WAN_SPATIAL_STRIDE = 8
WAN_TEMPORAL_STRIDE = 4


# Upstream VAE configs in diffusers' terms (diffusers scripts/convert_wan_to_diffusers.py: AutoencoderKLWan's
# defaults are Wan 2.1's VAE; vae22_diffusers_config is Wan 2.2's, its mean / std from Wan2.2 vae2_2.py).
WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667]
WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744]
WAN_VAE_CONFIGS: dict[int, dict] = {          # latent channels -> AutoencoderKLWan kwargs
    16: {},                                   # Wan2.1_VAE.pth (also used by Wan 2.2 A14B)
    48: dict(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12, out_channels=12,
             patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16,
             latents_mean=WAN22_LATENTS_MEAN, latents_std=WAN22_LATENTS_STD),   # Wan2.2_VAE.pth (TI2V 5B)
}

# original Wan VAE names (wan/modules/vae.py, vae2_2.py) -> diffusers AutoencoderKLWan names, applied in order
_RESIDUAL = [(r"\.residual\.0\.gamma$", ".norm1.gamma"), (r"\.residual\.2\.", ".conv1."),
             (r"\.residual\.3\.gamma$", ".norm2.gamma"), (r"\.residual\.6\.", ".conv2."),
             (r"\.shortcut\.", ".conv_shortcut.")]
_BLOCKS = [
    (r"^conv1\.", "quant_conv."), (r"^conv2\.", "post_quant_conv."),
    (r"^(encoder|decoder)\.conv1\.", r"\1.conv_in."),
    (r"^(encoder|decoder)\.head\.0\.", r"\1.norm_out."), (r"^(encoder|decoder)\.head\.2\.", r"\1.conv_out."),
    (r"^(encoder|decoder)\.middle\.0\.", r"\1.mid_block.resnets.0."),
    (r"^(encoder|decoder)\.middle\.1\.", r"\1.mid_block.attentions.0."),
    (r"^(encoder|decoder)\.middle\.2\.", r"\1.mid_block.resnets.1."),
    # Wan 2.2: Down_ResidualBlock / Up_ResidualBlock hold their own `downsamples` / `upsamples`
    (r"^encoder\.downsamples\.(\d+)\.downsamples\.(\d+)\.(residual|shortcut)", r"encoder.down_blocks.\1.resnets.\2.\3"),
    (r"^encoder\.downsamples\.(\d+)\.downsamples\.\d+\.(resample|time_conv)", r"encoder.down_blocks.\1.downsampler.\2"),
    (r"^decoder\.upsamples\.(\d+)\.upsamples\.(\d+)\.(residual|shortcut)", r"decoder.up_blocks.\1.resnets.\2.\3"),
    (r"^decoder\.upsamples\.(\d+)\.upsamples\.\d+\.(resample|time_conv)", r"decoder.up_blocks.\1.upsampler.\2"),
    # Wan 2.1: the encoder's flat list keeps its indices in diffusers (decoder: see _flat_decoder_name)
    (r"^encoder\.downsamples\.(\d+)\.", r"encoder.down_blocks.\1."),
]


def _flat_decoder_name(key: str, num_res_blocks: int) -> str:
    """Wan 2.1's decoder.upsamples is one flat list: per level num_res_blocks + 1 residual blocks, then a
    Resample (not after the last level); diffusers groups them as up_blocks[level].resnets / upsamplers."""
    m = re.match(r"^decoder\.upsamples\.(\d+)\.(.*)$", key)
    if not m:
        return key
    per_level = num_res_blocks + 2
    level, j = divmod(int(m.group(1)), per_level)
    inner = f"resnets.{j}" if j <= num_res_blocks else "upsamplers.0"
    return f"decoder.up_blocks.{level}.{inner}.{m.group(2)}"


def wan_vae_original_to_diffusers(state: dict[str, torch.Tensor], num_res_blocks: int = 2) -> dict[str, torch.Tensor]:
    """Rename an original Wan 2.1 / 2.2 VAE state dict to AutoencoderKLWan's keys (num_res_blocks: the
    config's, 2 upstream)."""
    out = {}
    for key, value in state.items():
        new = key
        for pattern, repl in _BLOCKS:
            new, n = re.subn(pattern, repl, new)
            if n:
                break
        new = _flat_decoder_name(new, num_res_blocks)
        for pattern, repl in _RESIDUAL:
            new = re.sub(pattern, repl, new)
        out[new] = value
    return out


def read_original_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of an original Wan VAE file: .safetensors, or a .pth read with torch.load(weights_only=True)."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors (an original Wan VAE file)")
    return state


def load_wan_autoencoder(path: str | Path, config: dict | None = None):
    """diffusers AutoencoderKLWan from a local diffusers folder (config.json + weights) or an original Wan VAE
    file (Wan2.1_VAE.pth / Wan2.2_VAE.pth; `config`: AutoencoderKLWan kwargs, default WAN_VAE_CONFIGS by
    latent width). WeightsNotFound if absent."""

    path = Path(path)
    if path.is_file():
        state = read_original_state(path)
        if config is None:
            z = int(state["conv2.weight"].shape[0]) if "conv2.weight" in state else None
            if z not in WAN_VAE_CONFIGS:
                raise ValueError(f"{path}: not an original Wan VAE (latent width {z}; known {sorted(WAN_VAE_CONFIGS)})")
            config = WAN_VAE_CONFIGS[z]
        vae = AutoencoderKLWan(**config)
        renamed = wan_vae_original_to_diffusers(state, vae.config.num_res_blocks)
        vae.load_state_dict({k: v.float() for k, v in renamed.items()}, strict=True)
        return vae.eval()
    if not (path / "config.json").is_file():
        raise WeightsNotFound(
            f"no Wan VAE at {path}: needs a diffusers folder (config.json + diffusion_pytorch_model.safetensors, "
            "e.g. the `vae/` folder of Wan-AI/Wan2.1-T2V-1.3B-Diffusers) or an original file such as "
            "Wan2.1_VAE.pth / Wan2.2_VAE.pth, downloaded beforehand")
    vae = AutoencoderKLWan.from_pretrained(str(path), local_files_only=True)
    return vae.eval()


def load_taehv_state(path: str | Path, model: TinyVideoAutoencoder) -> dict[str, torch.Tensor]:
    """A taew2_1-layout state dict from a safetensors file, with TAEHV's TGrow patch applied:
    when the file's TGrow has more output channels than the model (temporal up-sampling disabled
    there), keep the last time step's channels."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFound(f"no TAEHV weights at {path} (a taew2_1 .safetensors file; pickle files are not loaded)")

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

    def stream_encoder(self, linear: bool = False):
        raise NotImplementedError("streaming encode of the Wan VAE is not implemented: weights with the 'video' "
                                  "prior (output_skip) stream with the embedded VAE only")

    def stream_decoder(self, tiny: bool = True, openvino: bool = False, precision: str = "auto"):
        if openvino:
            raise ValueError("stream.openvino runs the embedded tiny decoder only; set it false for Wan's VAE")
        if tiny:
            if self.tiny_decoder is None:
                raise ValueError("no tiny decoder loaded: pass taehv=PATH to load_wan_codec, or use stream_decoder(tiny=False)")
            return _TaehvStreamDecoder(self.tiny_decoder)
        return WanStreamDecoder(self)


def load_wan_codec(vae_path: str | Path, taehv: str | Path | None = None) -> WanVideoCodec:
    """Wan codec from a local diffusers VAE folder or original VAE file, and an optional taew2_1 .safetensors file."""
    wan = load_wan_autoencoder(vae_path)
    tiny = None
    if taehv is not None:
        tiny = TinyVideoAutoencoder(TinyDecoderConfig.taew2_1())
        tiny.load_state_dict(load_taehv_state(taehv, tiny), strict=True)
        tiny.eval()
    return WanVideoCodec(wan, tiny)
