"""Model folders: `config.json` + `model.safetensors` (+ `CARD.md`), loaded with safetensors only.

    weights/NAME/config.json        {"kind": "...", "config": {...}, ...extra metadata}
    weights/NAME/model.safetensors  the state dict (fp16 on disk where `half=True`; loaded as fp32)

Pickle is never used to load weights.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from motionstream.config import WEIGHTS_DIR
from motionstream.errors import WeightsNotFound  # noqa: F401 (re-exported)


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """`weights/NAME` for a bare name, else the path itself; raises WeightsNotFound if absent."""
    path = Path(name_or_path)
    candidates = [path] if path.exists() or os.sep in str(name_or_path) else [WEIGHTS_DIR / str(name_or_path), path]
    for p in candidates:
        if (p / "model.safetensors").is_file() and (p / "config.json").is_file():
            return p
    raise WeightsNotFound(
        f"no model folder at {' or '.join(str(c) for c in candidates)} (needs config.json + model.safetensors). "
        "Shipped weights live in weights/; train your own with `motionstream train ...`."
    )


def save_model_dir(path: str | Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any],
                   half: bool = True) -> Path:
    """Write a model folder atomically (temp files, then rename), so a crash never leaves half a checkpoint."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu().contiguous()
        tensors[k] = v.half() if half and v.is_floating_point() else v
    tmp_w, tmp_c = path / "model.safetensors.tmp", path / "config.json.tmp"
    save_file(tensors, str(tmp_w), metadata={"format": "pt"})
    tmp_c.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_w, path / "model.safetensors")
    os.replace(tmp_c, path / "config.json")
    return path


def load_model_dir(name_or_path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata from config.json, fp32 state dict) of a model folder."""
    path = resolve_model_dir(name_or_path)
    meta = json.loads((path / "config.json").read_text())
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(path / "model.safetensors")).items()}
    return meta, state


# ------------------------------------------------------------------ Wan key maps
# Wan 2.1 / 2.2 DiT checkpoints come in two key layouts: the original (Wan-Video/Wan2.1
# wan/modules/model.py, which our DiT uses by name; VideoX-Fun's Wan2.1-Fun checkpoints use it too)
# and diffusers' WanTransformer3DModel (names as in diffusers' convert_wan_to_diffusers.py). Each rule
# maps a diffusers key prefix (regex, anchored) to the original one; `N` is the block index.
WAN_DIFFUSERS_TO_ORIGINAL: list[tuple[str, str]] = [
    (r"condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"condition_embedder\.time_proj\.", "time_projection.1."),
    (r"condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"blocks\.(\d+)\.attn1\.to_q\.", r"blocks.\1.self_attn.q."),
    (r"blocks\.(\d+)\.attn1\.to_k\.", r"blocks.\1.self_attn.k."),
    (r"blocks\.(\d+)\.attn1\.to_v\.", r"blocks.\1.self_attn.v."),
    (r"blocks\.(\d+)\.attn1\.to_out\.0\.", r"blocks.\1.self_attn.o."),
    (r"blocks\.(\d+)\.attn1\.norm_q\.", r"blocks.\1.self_attn.norm_q."),
    (r"blocks\.(\d+)\.attn1\.norm_k\.", r"blocks.\1.self_attn.norm_k."),
    (r"blocks\.(\d+)\.attn2\.to_q\.", r"blocks.\1.cross_attn.q."),
    (r"blocks\.(\d+)\.attn2\.to_k\.", r"blocks.\1.cross_attn.k."),
    (r"blocks\.(\d+)\.attn2\.to_v\.", r"blocks.\1.cross_attn.v."),
    (r"blocks\.(\d+)\.attn2\.to_out\.0\.", r"blocks.\1.cross_attn.o."),
    (r"blocks\.(\d+)\.attn2\.norm_q\.", r"blocks.\1.cross_attn.norm_q."),
    (r"blocks\.(\d+)\.attn2\.norm_k\.", r"blocks.\1.cross_attn.norm_k."),
    (r"blocks\.(\d+)\.norm2\.", r"blocks.\1.norm3."),          # diffusers' norm2 is the cross-attention norm
    (r"blocks\.(\d+)\.ffn\.net\.0\.proj\.", r"blocks.\1.ffn.0."),
    (r"blocks\.(\d+)\.ffn\.net\.2\.", r"blocks.\1.ffn.2."),
    (r"blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation"),
    (r"blocks\.(\d+)\.attn2\.add_k_proj\.", r"blocks.\1.cross_attn.k_img."),       # image branch (I2V)
    (r"blocks\.(\d+)\.attn2\.add_v_proj\.", r"blocks.\1.cross_attn.v_img."),
    (r"blocks\.(\d+)\.attn2\.norm_added_k\.", r"blocks.\1.cross_attn.norm_k_img."),
    (r"condition_embedder\.image_embedder\.norm1\.", "img_emb.proj.0."),
    (r"condition_embedder\.image_embedder\.ff\.net\.0\.proj\.", "img_emb.proj.1."),
    (r"condition_embedder\.image_embedder\.ff\.net\.2\.", "img_emb.proj.3."),
    (r"condition_embedder\.image_embedder\.norm2\.", "img_emb.proj.4."),
    (r"scale_shift_table$", "head.modulation"),
    (r"proj_out\.", "head.head."),
    (r"patch_embedding\.", "patch_embedding."),
]


def wan_layout(state_dict: dict[str, torch.Tensor]) -> str:
    """'diffusers' or 'original' (raises ValueError for anything else)."""
    keys = set(state_dict)
    if "condition_embedder.time_proj.weight" in keys:
        return "diffusers"
    if "time_projection.1.weight" in keys:
        return "original"
    raise ValueError("not a Wan DiT state dict: neither condition_embedder.time_proj.weight (diffusers) "
                     "nor time_projection.1.weight (original) found")


def wan_diffusers_to_original(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers WanTransformer3DModel state dict to the original Wan keys (strict: unknown keys raise)."""

    out = {}
    for key, value in state_dict.items():
        for pattern, repl in WAN_DIFFUSERS_TO_ORIGINAL:
            new, n = re.subn("^" + pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise KeyError(f"unknown diffusers Wan key {key!r} (not a WanTransformer3DModel of Wan 2.1 / 2.2 T2V, "
                           "I2V or TI2V)")
    return out


def load_safetensors_folder(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file or of every .safetensors file in a folder (sharded checkpoints)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors"))
    if not files:
        raise WeightsNotFound(f"no .safetensors weights at {path} (a Wan DiT file or a folder of shards)")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state
