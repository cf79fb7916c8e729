"""Tiny random model folders for the stream tests: a real WanDiT, a real causal VAE and a real tiny
decoder (random weights, small widths), saved with checkpoints.save_model_dir exactly like shipped ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from motionstream.config import to_dict
from motionstream.tracks.trackset import TrackSet


class HashTextEncoder:
    """Deterministic prompt -> (token states float [B, length, dim], mask bool [B, length]): a cheap
    stand-in with the text encoder's interface (shared by the stream, studio and eval tests)."""

    def __init__(self, length: int = 8, dim: int = 384):
        self.length, self.dim = length, dim

    def encode(self, prompts):
        toks = [torch.Generator().manual_seed(sum(map(ord, p))) for p in prompts]
        tokens = torch.stack([torch.randn(self.length, self.dim, generator=g) for g in toks])
        return tokens, torch.ones(len(prompts), self.length, dtype=torch.bool)


# 64x48 video -> 8x6 latents -> 4x3 tokens per latent frame: a chunk of 3 latent frames is 36 tokens
VIDEO_W, VIDEO_H, FPS = 64, 48, 16.0
DIT = dict(dim=64, num_layers=2, num_heads=2, ffn_dim=128, freq_dim=64)
VAE = dict(patch_size=4, encoder_widths=[16, 16], decoder_widths=[16, 16], decoder_blocks=1)
TINY = dict(decoder_widths=[32, 16, 16, 16], blocks_per_stage=1)


def make_model_folders(root: Path, seed: int = 0) -> dict[str, Path]:
    """Write student/, vae/, tiny/ model folders under root; returns their paths."""
    from motionstream.diffusion.sampling import TeacherParam
    from motionstream.models.checkpoints import save_model_dir
    from motionstream.models.dit import DiTConfig, WanDiT
    from motionstream.models.tiny_decoder import TinyDecoderConfig, TinyVideoAutoencoder
    from motionstream.models.vae import CausalVAE, VAEConfig
    from motionstream.train.rollout import StudentConfig, export_student

    torch.manual_seed(seed)
    dit_cfg = DiTConfig(**DIT)
    dit = WanDiT(dit_cfg)
    # Wan's init zeroes the output layer; give it weights so the stream actually depends on the model
    torch.nn.init.normal_(dit.head.head.weight, std=0.02)
    vae_cfg = VAEConfig(**VAE)
    tiny_cfg = TinyDecoderConfig(**TINY)
    out = {"student": root / "student", "teacher": root / "teacher", "vae": root / "vae", "tiny": root / "tiny"}
    export_student(out["student"], dit.state_dict(), dit_cfg, TeacherParam("guide"), StudentConfig())
    save_model_dir(out["teacher"], dit.state_dict(), {"kind": "teacher", "config": to_dict(dit_cfg),
                                                      "teacher": to_dict(TeacherParam("guide"))})
    save_model_dir(out["vae"], CausalVAE(vae_cfg).state_dict(), {"kind": "vae", "config": to_dict(vae_cfg)})
    save_model_dir(out["tiny"], TinyVideoAutoencoder(tiny_cfg).state_dict(),
                   {"kind": "tiny-decoder", "config": to_dict(tiny_cfg)})
    return out


def sample_image(seed: int = 0) -> np.ndarray:
    """A smooth uint8 test image [VIDEO_H, VIDEO_W, 3] (gradients + a bright square)."""
    y, x = np.mgrid[0:VIDEO_H, 0:VIDEO_W]
    img = np.stack([x * 255 / VIDEO_W, y * 255 / VIDEO_H, np.full_like(x, 96.0)], -1)
    img[16:32, 20:36] = 240
    return img.astype(np.uint8)


def moving_square(num_frames: int, start: int = 0) -> TrackSet:
    """A 3x3 grid of tracks on the bright square of sample_image moving right 1 px per frame."""
    gx, gy = np.meshgrid([22.0, 28.0, 34.0], [18.0, 24.0, 30.0])
    base = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    t = np.arange(start, start + num_frames, dtype=np.float32)[:, None, None]
    xy = (base[None] + np.concatenate([t, 0 * t], 2)).astype(np.float32)
    return TrackSet(xy, np.ones(xy.shape[:2], bool), VIDEO_W, VIDEO_H, FPS, ids=np.arange(9) * 37 + 5)
