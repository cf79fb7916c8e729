"""Checkpoints of the motion DiT: our model folders, and the Wan 2.1 / 2.2 DiTs it starts from.

    save_dit(path, model, meta=None)          -> model folder (config.json kind "wan_dit" + model.safetensors)
    load_dit(name_or_path, device="cpu")      -> WanDiT
    WAN_CHECKPOINTS[name]                     -> WanCheckpoint: the upstream sizes of one Wan checkpoint
    load_wan_dit(name, path, **dit_overrides) -> WanDiT (or NoiseExperts for Wan 2.2 A14B) built for
                                                 that checkpoint and initialised from its weights
    load_wan_weights(model, state_or_path)    -> model, initialised from a Wan DiT (original or
                                                 diffusers keys, a file or a folder of shards)

Supported (original and diffusers key layouts; VideoX-Fun uses the original one): Wan 2.1 T2V
1.3B / 14B, Wan 2.1 I2V 14B 480p / 720p (CLIP image branch), Wan 2.2 I2V A14B (two experts), Wan
2.2 TI2V 5B, VideoX-Fun Wan2.1-Fun 1.3B / 14B InP and Control (CLIP image branch).

The checkpoint's own input channels come first in our patch embedding: the noisy latent (T2V,
TI2V), then the image mask and image latent (I2V, Fun InP: 16 + 4 + 16 = 36) or the control and
image latents (Fun Control: 16 + 16 + 16 = 48). Our motion channels (track features, guide) come
after them with zero weights, so the loaded model starts out computing exactly what Wan computes
(the motion conditioning is ignored until training moves them). The track head is not in Wan and
keeps its fresh initialisation. Every other key must match by name and shape: unknown or missing
keys raise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from motionstream.config import load_config, section, to_dict
from motionstream.models.checkpoints import (WeightsNotFound, load_safetensors_folder, save_model_dir,
                                             wan_diffusers_to_original, wan_layout)
from motionstream.models.dit import DiTConfig, WanDiT
from motionstream.models.experts import NoiseExperts
from motionstream.models.folders import WAN_DIT_KIND, load_folder

KIND = WAN_DIT_KIND
NOT_IN_WAN = ("track_head.",)      # our parameters that Wan checkpoints do not have
NOT_SUPPORTED = ("ref_conv.", "control_adapter.")   # VideoX-Fun V1.1 extras (extra tokens / camera adapter)


def save_dit(path: str | Path, model: WanDiT, meta: dict[str, Any] | None = None, half: bool = True) -> Path:
    """Write a model folder; `meta` (training step, data seed, ...) is stored next to the config."""
    return save_model_dir(path, model.state_dict(), {"kind": KIND, "config": to_dict(model.cfg), **(meta or {})}, half)


def load_dit(name_or_path: str | Path, device: torch.device | str = "cpu") -> WanDiT:
    """A WanDiT from a model folder written by save_dit (fp32)."""
    model, _ = load_folder(name_or_path, KIND, device)
    return model.train()      # as a fresh module: the caller fine-tunes it or calls eval()


def wan_state_to_dit(model: WanDiT, wan_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our full state dict with every Wan tensor in place and the patch embedding widened with zeros."""
    if wan_layout(wan_state) == "diffusers":
        wan_state = wan_diffusers_to_original(wan_state)
    ours = model.state_dict()
    unexpected = sorted(set(wan_state) - set(ours))
    missing = sorted(k for k in set(ours) - set(wan_state) if not k.startswith(NOT_IN_WAN))
    if unexpected or missing:
        hint = ""
        if any(k.startswith(NOT_SUPPORTED) for k in unexpected):
            hint = (" (VideoX-Fun V1.1 reference-image / camera adapters, ref_conv and control_adapter, are not "
                    "supported: use the V1.0 Fun checkpoints)")
        elif any("img" in k for k in unexpected + missing):
            hint = " (the CLIP image branch is set by dit.image_dim: 1280 for checkpoints with img_emb, else 0)"
        raise KeyError(f"Wan checkpoint does not fit this DiT config: unexpected keys {unexpected[:8]}, "
                       f"missing keys {missing[:8]}{hint}")
    out = dict(ours)
    for key, value in wan_state.items():
        target = ours[key]
        if key == "patch_embedding.weight":
            if value.shape[0] != target.shape[0] or value.shape[2:] != target.shape[2:] or value.shape[1] > target.shape[1]:
                raise ValueError(f"patch_embedding.weight {tuple(value.shape)} cannot widen to {tuple(target.shape)}")
            own = (model.cfg.latent_channels, model.cfg.image_conditioned_channels)
            if value.shape[1] not in own:
                raise ValueError(f"Wan patch embedding reads {value.shape[1]} channels; this DiT config takes "
                                 f"{own[0]} (T2V / TI2V) or {own[1]} (noisy latent + image mask "
                                 f"{model.cfg.image_mask_channels} + control {model.cfg.control_channels} + image "
                                 "latent): set dit.image_mask_channels / control_channels for the checkpoint")
            widened = torch.zeros_like(target)
            widened[:, :value.shape[1]] = value.to(target.dtype)
            out[key] = widened
        elif value.shape != target.shape:
            raise ValueError(f"{key}: Wan shape {tuple(value.shape)} != ours {tuple(target.shape)}")
        else:
            out[key] = value.to(target.dtype)
    return out


def load_wan_weights(model: WanDiT, state_or_path: dict[str, torch.Tensor] | str | Path) -> WanDiT:
    """Initialise `model` from a Wan DiT (state dict, .safetensors file or folder of shards)."""
    state = state_or_path if isinstance(state_or_path, dict) else load_safetensors_folder(state_or_path)
    model.load_state_dict(wan_state_to_dit(model, state), strict=True)
    return model


# ------------------------------------------------------------------ the checkpoints the paper starts from
CLIP_VIT_H_DIM = 1280                # width of the CLIP ViT-H/14 tokens Wan I2V's img_emb reads
WAN22_I2V_BOUNDARY = 0.900           # Wan 2.2 i2v_A14B.boundary (diffusers: boundary_ratio 0.9)


@dataclass(frozen=True)
class WanCheckpoint:
    """Sizes of one upstream Wan DiT (Wan-Video wan/configs, diffusers' convert_wan_to_diffusers.py,
    VideoX-Fun's transformer configs) and how its files are laid out.

    in_dim: the patch embedding's input channels; image_dim: CLIP width of the image branch (0 =
    none); control_channels: VideoX-Fun Control's control-video latents; preset: our YAML preset
    that supplies the motion settings (track head, text encoder); experts: (high-noise, low-noise)
    subfolders in the original and in the diffusers layout, with the switch `boundary`.
    """
    dim: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    in_dim: int
    latent_channels: int = 16
    image_dim: int = 0
    control_channels: int = 0
    preset: str = "wan2.1-1.3b"
    experts: tuple[tuple[str, str], tuple[str, str]] | None = None
    boundary: float | None = None

    def dit_config(self, base: DiTConfig | None = None, **overrides: Any) -> DiTConfig:
        """Our DiTConfig for this checkpoint: its sizes on top of `base` (default: the preset's dit section)."""
        base = base or section(load_config(self.preset), "dit", DiTConfig)
        own = dict(dim=self.dim, num_layers=self.num_layers, num_heads=self.num_heads, ffn_dim=self.ffn_dim,
                   latent_channels=self.latent_channels, image_dim=self.image_dim,
                   control_channels=self.control_channels)
        if self.in_dim != self.latent_channels:       # image-conditioned: x | mask | control | image latent
            own["image_mask_channels"] = self.in_dim - 2 * self.latent_channels - self.control_channels
        return replace(base, **{**own, **overrides})


_14B = dict(dim=5120, num_layers=40, num_heads=40, ffn_dim=13824)
_1_3B = dict(dim=1536, num_layers=30, num_heads=12, ffn_dim=8960)
WAN_CHECKPOINTS: dict[str, WanCheckpoint] = {
    "wan2.1-t2v-1.3b": WanCheckpoint(**_1_3B, in_dim=16),
    "wan2.1-t2v-14b": WanCheckpoint(**_14B, in_dim=16),
    "wan2.1-i2v-14b-480p": WanCheckpoint(**_14B, in_dim=36, image_dim=CLIP_VIT_H_DIM),
    "wan2.1-i2v-14b-720p": WanCheckpoint(**_14B, in_dim=36, image_dim=CLIP_VIT_H_DIM),
    "wan2.2-i2v-a14b": WanCheckpoint(**_14B, in_dim=36, experts=(("high_noise_model", "low_noise_model"),
                                                                 ("transformer", "transformer_2")),
                                     boundary=WAN22_I2V_BOUNDARY),
    "wan2.2-ti2v-5b": WanCheckpoint(dim=3072, num_layers=30, num_heads=24, ffn_dim=14336, in_dim=48,
                                    latent_channels=48, preset="wan2.2-5b"),
    "wan2.1-fun-1.3b-inp": WanCheckpoint(**_1_3B, in_dim=36, image_dim=CLIP_VIT_H_DIM),
    "wan2.1-fun-14b-inp": WanCheckpoint(**_14B, in_dim=36, image_dim=CLIP_VIT_H_DIM),
    "wan2.1-fun-1.3b-control": WanCheckpoint(**_1_3B, in_dim=48, image_dim=CLIP_VIT_H_DIM, control_channels=16),
    "wan2.1-fun-14b-control": WanCheckpoint(**_14B, in_dim=48, image_dim=CLIP_VIT_H_DIM, control_channels=16),
}


def load_wan_dit(name: str, path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                 base: DiTConfig | None = None, **dit_overrides: Any) -> WanDiT | NoiseExperts:
    """Our DiT for the Wan checkpoint `name` (a WAN_CHECKPOINTS key), initialised from `path`.

    path: the DiT's .safetensors file or folder of shards (the `transformer/` folder of a diffusers
    pipeline); for Wan 2.2 A14B the folder holding both experts (high_noise_model/ + low_noise_model/,
    or diffusers' transformer/ + transformer_2/). dit_overrides: DiTConfig fields (e.g. pad_text_to=512).
    """
    if name not in WAN_CHECKPOINTS:
        raise KeyError(f"unknown Wan checkpoint {name!r}; known: {sorted(WAN_CHECKPOINTS)}")
    ckpt = WAN_CHECKPOINTS[name]
    cfg = ckpt.dit_config(base, **dit_overrides)

    def build(weights: Path) -> WanDiT:
        # built without memory on the meta device, then allocated once on `device` in `dtype`: every
        # parameter but the track head's is then overwritten by the checkpoint (strictly checked)
        with torch.device("meta"):
            model = WanDiT(cfg)
        model = model.to_empty(device=device)
        if dtype is not None:
            model = model.to(dtype)
        for m in model.track_head.modules():            # not in Wan: its fresh initialisation
            if m is not model.track_head and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        return load_wan_weights(model, weights)

    path = Path(path)
    if ckpt.experts is None:
        return build(path)
    for high, low in ckpt.experts:
        if (path / high).is_dir() and (path / low).is_dir():
            return NoiseExperts(build(path / high), build(path / low), ckpt.boundary)
    layouts = " or ".join(f"{h}/ + {lo}/" for h, lo in ckpt.experts)
    raise WeightsNotFound(f"{name}: no expert folders under {path} (expected {layouts})")
