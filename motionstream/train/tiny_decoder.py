"""Distilling the tiny streaming decoder from the frozen shipped VAE (`motionstream train tiny-decoder`).

    motionstream train tiny-decoder --config configs/tiny-cpu.yaml [--vae vae-tiny-cpu --run runs/tiny-decoder]
    motionstream codec export-tiny-decoder --run runs/tiny-decoder -o weights/tiny-decoder-tiny-cpu

Inputs are the frozen encoder's normalised mean latents of [world] crops (exactly what the diffusion
model produces and the codec feeds the tiny decoder); targets are the ground-truth frames, plus
optionally the full decoder's output (`teacher_weight`). The latent space is never touched. Data,
loss, EMA and loop are the codec stages' (train/codec.py, train/loop.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from motionstream.config import from_dict, to_dict
from motionstream.models.checkpoints import load_model_dir, save_model_dir
from motionstream.models.codec import load_codec
from motionstream.models.tiny_decoder import TinyDecoderConfig, TinyVideoAutoencoder
from motionstream.train import losses_codec
from motionstream.train.codec import (VIDEO_SIZE, ClipFn, CodecStage, CodecTrainConfig, codec_settings,
                                      load_run_ema_state)
from motionstream.train.common import seed_everything
from motionstream.train.loop import run_stage

TINY_KIND = "tiny-decoder"


@dataclass
class TinyTrainConfig(CodecTrainConfig):
    lr: float = 1e-3
    warmup: int = 50
    linear_lr_scale: float = 0.1         # the linear skip starts as the VAE's linear path: move it slowly
    teacher_weight: float = 0.0          # > 0: also match the full decoder's output (costs its forward)
    gan_weight: float = 0.0
    seed: int = 1


@dataclass
class TinyDecoderSection:
    model: TinyDecoderConfig = field(default_factory=TinyDecoderConfig)
    train: TinyTrainConfig = field(default_factory=TinyTrainConfig)


def to_signed(video01: torch.Tensor) -> torch.Tensor:
    """The tiny decoder's [0, 1] output on the codec's [-1, 1] scale."""
    return video01 * 2 - 1


class TinyDecoderStage(CodecStage):
    """The tiny decoder on latents of the frozen VAE `vae` (optionally from shipped tiny-decoder weights)."""

    def __init__(self, section: TinyDecoderSection, vae: str | Path, init: str | None, clip_fn: ClipFn | None,
                 video_size: tuple[int, int], lpips_weights: str | None):
        tc = section.train
        lpips = losses_codec.LPIPSLoss(lpips_weights) if lpips_weights else None
        seed_everything(tc.seed)
        self.vae_name = vae
        self.codec = load_codec(vae, None)
        self.codec.requires_grad_(False)
        self.model_cfg = section.model
        tiny = TinyVideoAutoencoder(self.model_cfg)
        if init is not None:
            meta, state = load_model_dir(init)
            self.model_cfg = from_dict(TinyDecoderConfig, meta["config"], "init.config")
            tiny = TinyVideoAutoencoder(self.model_cfg)
            tiny.load_state_dict(state)
        elif self.model_cfg.linear_skip and self.codec.vae.decoder.linear is not None:
            tiny.init_linear_from_vae(self.codec.vae.decoder.linear, self.codec.latent_mean.flatten(),
                                      self.codec.latent_std.flatten())
        linear = [p for n, p in tiny.named_parameters() if n.startswith("linear.")]
        rest = [p for n, p in tiny.named_parameters() if not n.startswith("linear.")]
        super().__init__(tc, tiny, None, linear, rest, clip_fn, video_size, lpips_weights, lpips)
        self.ema_model = TinyVideoAutoencoder(self.model_cfg)   # before the state: draws from the restored RNG
        self.modules = {"tiny": tiny, "ema": self.ema, "disc": self.disc}

    def restore(self, step: int, extra: dict[str, Any], resumed: bool, log: logging.Logger) -> None:
        super().restore(step, extra, resumed, log)
        log.info(f"tiny-decoder: vae={self.vae_name} params={sum(p.numel() for p in self.model.parameters())}")
        self.model.train()

    def extra(self) -> dict[str, Any]:
        return {**super().extra(), "model": to_dict(self.model_cfg), "vae": str(self.vae_name)}

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(reconstruction, the full decoder's output when `teacher_weight` > 0)."""
        with torch.no_grad():
            z = self.codec.encode(x)
            teacher = self.codec.decode(z) if self.tc.teacher_weight > 0 else None
        return to_signed(self.model.decode_video(z)), teacher

    def own_terms(self, rec: torch.Tensor, teacher) -> dict[str, tuple[float, torch.Tensor]]:
        if teacher is None:
            return {}
        return {"teacher_l1": (self.tc.teacher_weight, (rec - teacher).abs().mean())}

    def eval_codec(self):
        return self.codec.encode, lambda z: to_signed(self.ema_model.decode_video(z))


def train_tiny_decoder(section: TinyDecoderSection, run_dir: str | Path, vae: str | Path = "vae-tiny-cpu",
                       minutes: float | None = None, steps: int | None = None, init: str | None = None,
                       clip_fn: ClipFn | None = None, video_size: tuple[int, int] = VIDEO_SIZE, progress: bool = True,
                       lpips_weights: str | None = None) -> dict[str, Any]:
    """Train (or continue) the tiny decoder in `run_dir` on latents of the frozen VAE `vae`.
    Returns the step and the held-out PSNR / SSIM of the EMA weights at the end."""
    stage = TinyDecoderStage(section, vae, init, clip_fn, video_size, lpips_weights)
    res = run_stage(stage, codec_settings("tiny-decoder", section.train, run_dir, minutes, steps, progress))
    return {"step": res.step, **res.last_eval}


def export_tiny_decoder(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the EMA weights of a tiny-decoder run as a model folder."""
    extra, state = load_run_ema_state(run_dir)
    cfg = from_dict(TinyDecoderConfig, extra["model"], "run.model")
    model = TinyVideoAutoencoder(cfg)
    model.load_state_dict(state)
    meta = {"kind": TINY_KIND, "config": to_dict(cfg), "vae": extra.get("vae"), "train_step": extra["step"],
            "train_elapsed_s": extra.get("elapsed_s")}
    return save_model_dir(out_dir, model.state_dict(), meta)
