"""Model folders: `config.json` + `model.safetensors` (+ `CARD.md`), loaded with safetensors only.

    weights/NAME/config.json        {"kind": "...", "config": {...}, ...extra metadata}
    weights/NAME/model.safetensors  the state dict (fp16 on disk where `half=True`; loaded as fp32)

Pickle is never used to load weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from motionstream.config import WEIGHTS_DIR


class WeightsNotFound(FileNotFoundError):
    """A model folder or weights file is missing: the message says where we looked and what to do."""


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
