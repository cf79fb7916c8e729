"""Checkpoints of the motion DiT: our model folders, and Wan 2.1 / 2.2 T2V weights loaded into it.

    save_dit(path, model, meta=None)          -> model folder (config.json kind "wan_dit" + model.safetensors)
    load_dit(name_or_path, device="cpu")      -> WanDiT
    load_wan_weights(model, state_or_path)    -> model, initialised from a Wan T2V DiT (original or
                                                 diffusers keys, a file or a folder of shards)

A Wan T2V patch embedding reads the 16 (or 48) noisy latent channels; ours also reads the image,
track and guide channels. Those extra input channels get zero weights, so the loaded model starts
out computing exactly what Wan computes (the conditioning is ignored until training moves them).
The track head is not in Wan and keeps its fresh initialisation. Every other key must match by name
and shape: unknown or missing keys raise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from motionstream.config import from_dict, to_dict
from motionstream.models.checkpoints import (load_model_dir, load_safetensors_folder, save_model_dir,
                                             wan_diffusers_to_original, wan_layout)
from motionstream.models.dit import DiTConfig, WanDiT

KIND = "wan_dit"
NOT_IN_WAN = ("track_head.",)      # our parameters that Wan checkpoints do not have


def save_dit(path: str | Path, model: WanDiT, meta: dict[str, Any] | None = None, half: bool = True) -> Path:
    """Write a model folder; `meta` (training step, data seed, ...) is stored next to the config."""
    return save_model_dir(path, model.state_dict(), {"kind": KIND, "config": to_dict(model.cfg), **(meta or {})}, half)


def load_dit(name_or_path: str | Path, device: torch.device | str = "cpu") -> WanDiT:
    """A WanDiT from a model folder written by save_dit (fp32)."""
    meta, state = load_model_dir(name_or_path)
    if meta.get("kind") != KIND:
        raise ValueError(f"{name_or_path}: model folder of kind {meta.get('kind')!r}, expected {KIND!r}")
    model = WanDiT(from_dict(DiTConfig, meta["config"], "dit"))
    model.load_state_dict(state)
    return model.to(device)


def wan_state_to_dit(model: WanDiT, wan_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our full state dict with every Wan tensor in place and the patch embedding widened with zeros."""
    if wan_layout(wan_state) == "diffusers":
        wan_state = wan_diffusers_to_original(wan_state)
    ours = model.state_dict()
    unexpected = sorted(set(wan_state) - set(ours))
    missing = sorted(k for k in set(ours) - set(wan_state) if not k.startswith(NOT_IN_WAN))
    if unexpected or missing:
        raise KeyError(f"Wan checkpoint does not fit this DiT config: unexpected keys {unexpected[:8]}, "
                       f"missing keys {missing[:8]}")
    out = dict(ours)
    for key, value in wan_state.items():
        target = ours[key]
        if key == "patch_embedding.weight":
            if value.shape[0] != target.shape[0] or value.shape[2:] != target.shape[2:] or value.shape[1] > target.shape[1]:
                raise ValueError(f"patch_embedding.weight {tuple(value.shape)} cannot widen to {tuple(target.shape)}")
            if value.shape[1] != model.cfg.latent_channels:
                raise ValueError(f"Wan patch embedding reads {value.shape[1]} channels, dit.latent_channels is "
                                 f"{model.cfg.latent_channels} (only T2V weights are supported)")
            widened = torch.zeros_like(target)
            widened[:, :value.shape[1]] = value.to(target.dtype)
            out[key] = widened
        elif value.shape != target.shape:
            raise ValueError(f"{key}: Wan shape {tuple(value.shape)} != ours {tuple(target.shape)}")
        else:
            out[key] = value.to(target.dtype)
    return out


def load_wan_weights(model: WanDiT, state_or_path: dict[str, torch.Tensor] | str | Path) -> WanDiT:
    """Initialise `model` from a Wan T2V DiT (state dict, .safetensors file or folder of shards)."""
    state = state_or_path if isinstance(state_or_path, dict) else load_safetensors_folder(state_or_path)
    model.load_state_dict(wan_state_to_dit(model, state), strict=True)
    return model
