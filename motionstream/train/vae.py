"""Training the embedded causal VAE (`motionstream train vae`) and shipping it (`codec export-vae`).

    motionstream train vae --config configs/tiny-cpu.yaml [--run runs/vae --minutes M --steps N]
    motionstream train vae ... --init weights/vae-tiny-cpu --freeze-encoder   # decoder fine-tuning
    motionstream codec export-vae --run runs/vae -o weights/vae-tiny-cpu [--stats-clips 200 | --stats-from DIR]

The data, loss, EMA and loop are the codec stages' (train/codec.py, train/loop.py); this stage adds
the KL term, the PCA initialisation of the linear path and the latent statistics of the export.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from motionstream.errors import UserError
from motionstream.config import from_dict, to_dict
from motionstream.models.checkpoints import load_model_dir, save_model_dir
from motionstream.models.codec import frames_to_tensor
from motionstream.models.vae import CausalVAE, VAEConfig
from motionstream.train import losses_codec
from motionstream.train.codec import (VIDEO_SIZE, ClipFn, CodecStage, CodecTrainConfig, codec_settings, eval_clips,
                                      load_run_ema_state, render_world_clip, split_clip_seeds)
from motionstream.train.common import EMA, seed_everything
from motionstream.train.loop import run_stage

VAE_KIND = "causal-vae"
PCA_MIN_EIGENVALUE = 1e-8           # floor of the patch covariance's eigenvalues (whitening divides by them)
STATS_MIN_VARIANCE = 1e-12          # floor of a latent channel's variance in the export's statistics
STATS_FRAMES = 17                   # frames of each clip the latent statistics are measured on


@dataclass
class VAETrainConfig(CodecTrainConfig):
    pca_clips: int = 32                 # train clips for the PCA initialisation of the linear path
    kl_weight: float = 1e-5


@dataclass
class VAESection:
    model: VAEConfig = field(default_factory=VAEConfig)
    train: VAETrainConfig = field(default_factory=VAETrainConfig)


def init_linear_from_pca(vae, clips: list[np.ndarray]) -> list[float]:
    """Set the VAE's linear path to the whitened PCA of stacked 8x8x4 patches of `clips` (uint8 [T, H, W, 3]).

    Encoder: z = diag(1/sqrt(lambda)) U^T (p - mu); decoder: p = U diag(sqrt(lambda)) z + mu, so the
    untrained VAE already is the best linear codec with unit-variance latents. Returns the eigenvalues.
    """
    enc, dec = vae.encoder, vae.decoder
    rows = []
    with torch.no_grad():
        for frames in clips:
            p = enc.linear.stack(enc.patches(frames_to_tensor(frames)))        # [1, D, G, h, w]
            rows.append(p.flatten(2).transpose(1, 2).reshape(-1, p.shape[1]).double())
    x = torch.cat(rows)
    mu = x.mean(0)
    cov = (x - mu).T @ (x - mu) / len(x)
    lam, u = torch.linalg.eigh(cov)
    z = enc.linear.conv.out_channels
    lam, u = lam.flip(0)[:z].clamp_min(PCA_MIN_EIGENVALUE), u.flip(1)[:, :z]                 # top-z components
    w_enc = u.T / lam.sqrt()[:, None]                                          # [Z, D]
    # decoder channel o = k * n + c (frame k of the group, patch channel c) <- stacked index c * stride + k
    stride, n = dec.linear.stride, dec.linear.conv.out_channels // dec.linear.stride
    o = torch.arange(n * stride)
    perm = (o % n) * stride + o // n
    w_dec = (u * lam.sqrt()[None, :])[perm]                                    # [D, Z]
    with torch.no_grad():
        enc.linear.conv.weight.copy_(w_enc.float()[:, :, None, None, None])
        enc.linear.conv.bias.copy_((-w_enc @ mu).float())
        dec.linear.conv.weight.copy_(w_dec.float()[:, :, None, None, None])
        dec.linear.conv.bias.copy_(mu[perm].float())
    return [float(v) for v in lam]


# ------------------------------------------------------------------------------- training
class VAEStage(CodecStage):
    """The causal VAE (optionally from shipped weights, optionally with a frozen encoder)."""

    def __init__(self, section: VAESection, init: str | None, freeze_encoder: bool, clip_fn: ClipFn | None,
                 video_size: tuple[int, int], lpips_weights: str | None):
        tc = section.train
        lpips = losses_codec.LPIPSLoss(lpips_weights) if lpips_weights else None
        seed_everything(tc.seed)
        self.model_cfg, self.init, self.freeze_encoder = section.model, init, freeze_encoder
        init_state = None
        if init is not None:
            init_meta, init_state = load_model_dir(init)
            self.model_cfg = from_dict(VAEConfig, init_meta["config"], "init.config")
        vae = CausalVAE(self.model_cfg)
        if init_state is not None:
            vae.load_state_dict(init_state)
        if freeze_encoder:
            vae.encoder.requires_grad_(False)
        named = [(n, p) for n, p in vae.named_parameters() if p.requires_grad]
        linear = [p for n, p in named if ".linear." in n]
        rest = [p for n, p in named if ".linear." not in n]
        # the disc, EMA and optimizers come before the EMA copy: the same torch RNG draws as always
        super().__init__(tc, vae, None, linear, rest, clip_fn, video_size, lpips_weights, lpips)
        self.ema_model = CausalVAE(self.model_cfg)   # before the state: its init draws from the restored RNG
        self.modules = {"vae": vae, "ema": self.ema, "disc": self.disc}

    def restore(self, step: int, extra: dict[str, Any], resumed: bool, log: logging.Logger) -> None:
        super().restore(step, extra, resumed, log)
        enc, dec = (sum(p.numel() for p in m.parameters()) for m in (self.model.encoder, self.model.decoder))
        log.info(f"vae: init={self.init} freeze_encoder={self.freeze_encoder} params enc={enc} dec={dec}")
        if not resumed and self.init is None and self.model_cfg.linear_path:
            self.init_pca(log)
        self.model.train()
        if self.freeze_encoder:
            self.model.encoder.eval()

    def init_pca(self, log: logging.Logger) -> None:
        """A fresh run starts its linear path at the PCA of train patches (and its EMA there)."""
        tc, (width, height) = self.tc, self.video_size
        clips = [self.clip_fn(s, tc.clip_frames, width, height) for s in split_clip_seeds("train", tc.pca_clips)]
        lam = init_linear_from_pca(self.model, clips)
        self.ema = self.modules["ema"] = EMA(self.model, tc.ema_decay)
        fig = self.evaluate(0, log)
        log.info(f"PCA init of the linear path from {len(clips)} train clips (eigenvalues {lam[0]:.3g}..{lam[-1]:.3g}): "
                 f"held-out val PSNR {fig['psnr']:.2f} dB SSIM {fig['ssim']:.4f}")

    def extra(self) -> dict[str, Any]:
        return {**super().extra(), "model": to_dict(self.model_cfg), "init": self.init,
                "freeze_encoder": self.freeze_encoder}

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        rec, mean, logvar = self.model(x)
        return rec, (mean, logvar)

    def own_terms(self, rec: torch.Tensor, aux) -> dict[str, tuple[float, torch.Tensor]]:
        if self.freeze_encoder:          # the latent space is fixed: no KL
            return {}
        return {"kl": (self.tc.kl_weight, losses_codec.kl_divergence(*aux))}

    def eval_codec(self):
        return (lambda x: self.ema_model.encode(x)[0]), self.ema_model.decode


def train_vae(section: VAESection, run_dir: str | Path, minutes: float | None = None, steps: int | None = None,
              init: str | None = None, freeze_encoder: bool = False, clip_fn: ClipFn | None = None,
              video_size: tuple[int, int] = VIDEO_SIZE, progress: bool = True,
              lpips_weights: str | None = None) -> dict[str, Any]:
    """Train (or continue training) the causal VAE in `run_dir` for `steps` more steps and/or `minutes`.
    Returns the step and the held-out PSNR / SSIM of the EMA weights at the end.

    `lpips_weights`: optional local LPIPS-alex safetensors file; adds lpips_weight * LPIPS."""
    stage = VAEStage(section, init, freeze_encoder, clip_fn, video_size, lpips_weights)
    res = run_stage(stage, codec_settings("vae", section.train, run_dir, minutes, steps, progress))
    return {"step": res.step, **res.last_eval}


# ------------------------------------------------------------------------------- export
def latent_stats(vae, clips: list) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of the encoder's mean latents over clips [1, 3, T, H, W]."""
    s1 = s2 = None
    n = 0
    with torch.no_grad():
        for x in clips:
            mu = vae.encode(x)[0].double()
            c = mu.shape[1]
            flat = mu.transpose(0, 1).reshape(c, -1)
            s1 = flat.sum(1) if s1 is None else s1 + flat.sum(1)
            s2 = (flat ** 2).sum(1) if s2 is None else s2 + (flat ** 2).sum(1)
            n += flat.shape[1]
    mean = s1 / n
    std = (s2 / n - mean ** 2).clamp_min(STATS_MIN_VARIANCE).sqrt()
    return [float(v) for v in mean], [float(v) for v in std]


def export_vae(run_dir: str | Path, out_dir: str | Path, stats_clips: int = 200, stats_from: str | None = None,
               clip_fn: ClipFn | None = None, video_size: tuple[int, int] = VIDEO_SIZE,
               stats_frames: int = STATS_FRAMES) -> Path:
    """Write the EMA weights of a VAE run as a model folder with per-channel latent statistics.

    With `stats_from` (an already shipped folder) the latent statistics are copied and the encoder
    weights are checked to be identical, so re-shipping a fine-tuned decoder never changes the latent space.
    """
    extra, state = load_run_ema_state(run_dir)
    cfg = from_dict(VAEConfig, extra["model"], "run.model")
    # round to what ships (fp16) before measuring, so the stats describe the shipped encoder exactly
    state = {k: v.half().float() for k, v in state.items()}
    vae = CausalVAE(cfg)
    vae.load_state_dict(state)
    vae.eval()
    if stats_from is not None:
        old_meta, old_state = load_model_dir(stats_from)
        for k, v in old_state.items():
            if k.startswith("encoder.") and not torch.equal(v, state[k]):
                raise UserError(f"encoder weight {k} differs from {stats_from}: the latent space would change")
        cfg.latent_mean, cfg.latent_std = old_meta["config"]["latent_mean"], old_meta["config"]["latent_std"]
    else:
        clips = eval_clips(clip_fn or render_world_clip, "train", stats_clips, stats_frames, *video_size)
        cfg.latent_mean, cfg.latent_std = latent_stats(vae, clips)
    meta = {"kind": VAE_KIND, "config": to_dict(cfg), "train_step": extra["step"],
            "train_elapsed_s": extra.get("elapsed_s"), "stats_clips": None if stats_from else stats_clips,
            "stats_from": stats_from}
    return save_model_dir(out_dir, vae.state_dict(), meta)
