"""Model folders by kind: the one place that says which network a folder's `kind` holds.

A model folder (models/checkpoints.py) is `config.json` {"kind": KIND, "config": {...}, ...} +
`model.safetensors`. `load_folder(path, kind)` builds the network of FOLDER_KINDS[kind] from the
config, loads the weights and returns it in eval mode with the metadata. Every loader of a shipped
or trained model goes through it: the DiT of a Wan import (`wan_dit`), a teacher, a student, any
streaming DiT (`dit`), the VAE and the tiny decoder. What a layer above adds (the teacher's output
parameterisation, a student's sampler settings) it reads from the returned metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from motionstream.config import from_dict
from motionstream.models.checkpoints import load_model_dir
from motionstream.models.dit import DiTConfig, WanDiT
from motionstream.models.tiny_decoder import TinyDecoderConfig, TinyVideoAutoencoder
from motionstream.models.vae import CausalVAE, VAEConfig

WAN_DIT_KIND = "wan_dit"         # models/wan_checkpoints.save_dit
TEACHER_KIND = "teacher"         # train/teacher.py export
STUDENT_KIND = "student"         # diffusion/student.export_student
VAE_KIND = "causal-vae"          # train/vae.py export
TINY_DECODER_KIND = "tiny-decoder"   # train/tiny_decoder.py export


@dataclass(frozen=True)
class FolderKind:
    """What a folder of one kind holds: its network class and that network's config dataclass.

    accepts: the `kind` values a folder may carry to be loaded as this kind; None = any (the codec
    folders: older exports and test fixtures name their kind freely)."""

    config_cls: type
    model_cls: type
    accepts: tuple[str, ...] | None


FOLDER_KINDS: dict[str, FolderKind] = {
    WAN_DIT_KIND: FolderKind(DiTConfig, WanDiT, (WAN_DIT_KIND,)),
    TEACHER_KIND: FolderKind(DiTConfig, WanDiT, (TEACHER_KIND,)),
    STUDENT_KIND: FolderKind(DiTConfig, WanDiT, (STUDENT_KIND,)),
    "dit": FolderKind(DiTConfig, WanDiT, None),            # any DiT folder: the streaming engine takes both
    VAE_KIND: FolderKind(VAEConfig, CausalVAE, None),
    TINY_DECODER_KIND: FolderKind(TinyDecoderConfig, TinyVideoAutoencoder, None),
}


def load_folder(name_or_path: str | Path, kind: str,
                device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(network in eval mode on `device`, metadata) of the model folder `name_or_path` (a name in
    weights/ or a path) read as FOLDER_KINDS[kind]. Raises checkpoints.WeightsNotFound naming the
    folder looked for, ValueError when the folder holds another kind."""
    spec = FOLDER_KINDS[kind]
    meta, state = load_model_dir(name_or_path)
    if spec.accepts is not None and meta.get("kind") not in spec.accepts:
        raise ValueError(f"{name_or_path} holds a model of kind {meta.get('kind')!r}, not {kind!r}")
    model = spec.model_cls(from_dict(spec.config_cls, meta["config"], f"{name_or_path}/config.json"))
    model.load_state_dict(state)
    return model.to(device).eval(), meta
