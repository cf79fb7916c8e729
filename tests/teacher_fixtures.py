"""Tiny teacher setup shared by tests/train/test_teacher*.py and tests/train/test_distributed.py: a random tiny
VAE model folder, a tiny preset and a 4-clip cache of real [world] clips at 64x32 (9 frames)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import yaml

WIDTH, HEIGHT, FRAMES = 64, 32, 9
TEXT_DIM = 384  # MiniLM width, so the generate test can use the real encoder


class HashTextEncoder:
    """Deterministic stand-in for the text encoder in cache tests (same interface: encode(list) -> (tokens, mask))."""

    max_length, dim = 4, TEXT_DIM

    def encode(self, prompts):
        toks = torch.zeros(len(prompts), self.max_length, self.dim)
        mask = torch.zeros(len(prompts), self.max_length, dtype=torch.bool)
        for i, p in enumerate(prompts):
            seed = int(hashlib.sha1(p.encode()).hexdigest()[:8], 16)
            toks[i] = torch.randn(self.max_length, self.dim, generator=torch.Generator().manual_seed(seed))
            mask[i, : 1 + len(p.split()) % self.max_length] = True
        return toks, mask


def tiny_config(root: Path, cache: Path, vae: Path, **train_overrides) -> Path:
    train = dict(seed=3, batch_size=4, phase1_batch_size=4, phase1_latent_frames=2, phase1_steps=2, latent_frames=3,
                 lr=1e-3, warmup_steps=1, cache_dir=str(cache), cache_clips=4, min_cache_clips=2, vae=str(vae),
                 val_clips=2, eval_minutes=0.0, eval_sample_steps=2, checkpoint_every=1, log_every=1, threads=1)
    train.update(train_overrides)
    cfg = {
        "video": {"width": WIDTH, "height": HEIGHT, "fps": 16},
        "tracks": {"embed_dim": 64, "grid_size": 50, "min_tracks": 1000, "max_tracks": 2500, "mask_prob": 0.2},
        "dit": {"dim": 32, "num_layers": 2, "num_heads": 2, "ffn_dim": 64, "freq_dim": 32, "text_dim": TEXT_DIM},
        "text": {"kind": "minilm", "path": None, "max_length": 8, "dim": TEXT_DIM},
        "diffusion": {"shift": 3.0, "sample_steps": 3},
        "train_teacher": train,
    }
    path = root / "tiny-teacher.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny_vae_folder(root: Path) -> Path:
    from motionstream.config import to_dict
    from motionstream.models.checkpoints import save_model_dir
    from motionstream.models.vae import CausalVAE, VAEConfig

    torch.manual_seed(0)
    cfg = VAEConfig(encoder_widths=[8, 8], decoder_widths=[8, 8], decoder_blocks=1)  # stride 4 * 2 = 8, tiny
    return save_model_dir(root / "vae", CausalVAE(cfg).state_dict(), {"kind": "vae", "config": to_dict(cfg)}, half=False)


def build_tiny_cache(root: Path, vae: Path, seeds=(0, 1, 2, 3)) -> Path:
    from motionstream.data.synth import render_clip
    from motionstream.models.codec import load_codec
    from motionstream.train.cache import build_cache, cache_meta

    cache = root / "cache"
    codec = load_codec(vae, tiny_decoder=None)
    enc = HashTextEncoder()
    meta = cache_meta(str(vae), "tiny-teacher", WIDTH, HEIGHT, FRAMES, 16.0, "HashTextEncoder")
    build_cache(cache, list(seeds), lambda s: render_clip(s, FRAMES, WIDTH, HEIGHT), codec, enc, meta, progress=False)
    return cache
