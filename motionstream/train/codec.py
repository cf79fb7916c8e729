"""What the two codec stages share (VAE, tiny decoder): their training settings, the rolling pool of
rendered [world] clips they crop from, the reconstruction loss with its optional LPIPS / PatchGAN
terms, the EMA, held-out PSNR / SSIM, and the run folder's training-state extras.

Data: [world] synthetic clips (`motionstream.data.synth.render_clip`) rendered at the model's native
size; training takes random crops in space and random windows in time (the models are fully
convolutional and causal, so any window start is a valid "frame 0"). Every run is resumable:
re-running the same command continues from `RUN/state.safetensors`, saved every
`checkpoint_every_steps` (a kill loses at most that many steps), with the same data order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from motionstream.errors import UserError
from motionstream.config import VideoConfig
from motionstream.data.splits import split_seeds
from motionstream.data.synth import render_clip
from motionstream.models.codec import frames_to_tensor
from motionstream.train import losses_codec
from motionstream.train.common import EMA, WarmupSchedule, optimizer_step, read_training_state
from motionstream.train.loop import LoopSettings, Stage

CODEC_LOG_EVERY = 10                # steps between log lines
ADAM_BETAS = (0.9, 0.99)            # the codec networks
DISC_ADAM_BETAS = (0.5, 0.9)        # the PatchGAN discriminator (GAN practice: low beta1)
FLIP_PROBABILITY = 0.5              # horizontal flips of training crops
VIDEO_SIZE = VideoConfig().size     # (width, height) of the rendered clips when no preset says otherwise


@dataclass
class CodecTrainConfig:
    """Training settings shared by the VAE and the tiny decoder (sections vae.train, tiny_decoder.train)."""
    crop_width: int = 64
    crop_height: int = 64
    num_frames: int = 9                 # 1 + 4n frames per training sample
    batch_size: int = 4
    lr: float = 3e-4
    warmup: int = 100
    total_steps: int = 20000            # for the cosine schedule; runs usually stop on --minutes
    lr_schedule: str = "constant"
    linear_lr_scale: float = 0.1        # the PCA-initialised linear path moves slower than the residual nets
    grad_clip: float = 1.0
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    ssim_weight: float = 0.2
    temporal_weight: float = 0.0        # L1 on frame-to-frame differences (losses_codec.temporal_difference_l1)
    lpips_weight: float = 0.1           # used only when a run is given --lpips-weights PATH
    gan_weight: float = 0.05
    gan_start_step: int = 3000          # adversarial term only after the reconstruction warm-up
    disc_widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    disc_lr: float = 2e-4
    ema_decay: float = 0.999
    clip_frames: int = 17               # frames rendered per pooled clip
    clip_pool: int = 48                 # rendered clips kept in memory
    clip_refresh_every: int = 2         # steps between replacing one pooled clip
    train_seeds: int = 50000
    eval_clips: int = 8
    eval_frames: int = 17
    eval_every_minutes: float = 4.0
    checkpoint_every_steps: int = 25    # training-state saves: a kill -9 loses at most this many steps
    seed: int = 0


ClipFn = Callable[[int, int, int, int], np.ndarray]   # (seed, num_frames, width, height) -> uint8 [T, H, W, 3]


def render_world_clip(seed: int, num_frames: int, width: int, height: int) -> np.ndarray:
    return render_clip(seed, num_frames=num_frames, width=width, height=height).frames


def world_seeds(split: str, n: int) -> list[int]:
    return split_seeds(split, n)


class ClipPool:
    """A rolling pool of rendered clips; samples random space-time crops as float [-1, 1] tensors.

    `state()` (the cursor, which clip each slot holds, the RNG) goes into the training state; a pool
    built from it re-renders the same clips (clip_fn is a function of the seed) and draws the same
    crops next, so a resumed run sees the same data as an uninterrupted one."""

    def __init__(self, clip_fn: ClipFn, seeds: list[int], size: int, clip_frames: int, width: int, height: int,
                 rng: np.random.Generator, cursor: int = 0, state: dict[str, Any] | None = None):
        self.clip_fn, self.seeds, self.rng = clip_fn, seeds, rng
        self.clip_frames, self.width, self.height = clip_frames, width, height
        if state is not None:
            self.cursor, self.slots = int(state["cursor"]), [int(k) for k in state["slots"]]
            self.rng.bit_generator.state = state["rng"]
            self.clips = [self._render(k) for k in self.slots]
        else:
            self.cursor, self.slots, self.clips = cursor, [], []
            for _ in range(size):
                self.slots.append(self.cursor)
                self.clips.append(self._next())

    def _render(self, index: int) -> np.ndarray:
        return self.clip_fn(self.seeds[index % len(self.seeds)], self.clip_frames, self.width, self.height)

    def _next(self) -> np.ndarray:
        self.cursor += 1
        return self._render(self.cursor - 1)

    def refresh(self) -> None:
        slot = int(self.rng.integers(len(self.clips)))
        self.slots[slot] = self.cursor
        self.clips[slot] = self._next()

    def state(self) -> dict[str, Any]:
        """What a resumed run needs to continue this pool exactly (JSON-serialisable)."""
        return {"cursor": self.cursor, "slots": list(self.slots), "rng": self.rng.bit_generator.state}

    def batch(self, n: int, frames: int, crop_h: int, crop_w: int) -> torch.Tensor:
        """n random crops [n, 3, frames, crop_h, crop_w] in [-1, 1] (random clip, window, position, flip)."""
        out = []
        for _ in range(n):
            clip = self.clips[int(self.rng.integers(len(self.clips)))]
            t0 = int(self.rng.integers(clip.shape[0] - frames + 1))
            y0 = int(self.rng.integers(clip.shape[1] - crop_h + 1))
            x0 = int(self.rng.integers(clip.shape[2] - crop_w + 1))
            c = clip[t0:t0 + frames, y0:y0 + crop_h, x0:x0 + crop_w]
            if self.rng.random() < FLIP_PROBABILITY:
                c = c[:, :, ::-1]
            out.append(np.ascontiguousarray(c))
        return torch.cat([frames_to_tensor(c) for c in out], 0)


def eval_clips(clip_fn: ClipFn, split: str, n: int, frames: int, width: int, height: int):
    """Held-out clips as a list of float [1, 3, T, H, W] tensors in [-1, 1]."""
    return [frames_to_tensor(clip_fn(s, frames, width, height)) for s in split_clip_seeds(split, n)]


def evaluate_reconstruction(encode: Callable, decode: Callable, clips: list) -> dict[str, float]:
    """Mean PSNR / SSIM of decode(encode(clip)) over clips (no grad)."""
    ps, ss = [], []
    with torch.no_grad():
        for x in clips:
            y = decode(encode(x)).clamp(-1, 1)
            ps.append(float(losses_codec.psnr(y, x)))
            ss.append(float(losses_codec.ssim(y, x)))
    return {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss))}


def load_run_ema_state(run_dir: str | Path) -> tuple[dict[str, Any], dict]:
    """(state.json extra, EMA state dict) of a training run folder."""
    run_dir = Path(run_dir)
    state = read_training_state(run_dir)
    if state is None:
        raise UserError(f"no training state in {run_dir} (expected {run_dir / 'state.safetensors'})")
    meta, tensors = state
    ema = {k[len("ema."):]: v.float() for k, v in tensors.items() if k.startswith("ema.")}
    return {**meta.get("extra", {}), "step": meta["step"]}, ema


def split_clip_seeds(split: str, n: int) -> list[int]:
    """The world seeds of `split`."""
    # looked up at call time, so tests can stand in for the world's splits (monkeypatch world_seeds)
    return world_seeds(split, n)


def codec_settings(name: str, tc: CodecTrainConfig, run_dir: str | Path, minutes: float | None, steps: int | None,
                   progress: bool) -> LoopSettings:
    """The loop settings of a codec run: `steps` more steps and/or `minutes`, eval every
    `eval_every_minutes` and at the end."""
    return LoopSettings(name=name, run_dir=Path(run_dir), more_steps=steps, minutes=minutes,
                        checkpoint_every=tc.checkpoint_every_steps, log_every=CODEC_LOG_EVERY,
                        eval_every_minutes=tc.eval_every_minutes, eval_at_end=True, progress=progress)


class CodecStage(Stage):
    """A codec network trained on reconstruction (+ optional LPIPS and PatchGAN terms) of pooled crops.

    Subclasses build `self.model` (the trained network), `self.ema_model` (a network the EMA weights
    are copied into for evaluation) and implement `reconstruct` and `eval_codec`."""

    def __init__(self, tc: CodecTrainConfig, model: torch.nn.Module, ema_model: torch.nn.Module,
                 linear: list[torch.nn.Parameter], rest: list[torch.nn.Parameter], clip_fn: ClipFn | None,
                 video_size: tuple[int, int], lpips_weights: str | None, lpips=None):
        self.tc, self.model, self.ema_model = tc, model, ema_model
        self.clip_fn = clip_fn or render_world_clip
        self.video_size = video_size
        self.lpips = lpips
        self.disc = losses_codec.PatchDiscriminator(tc.disc_widths)
        self.ema = EMA(model, tc.ema_decay)
        self.opt = torch.optim.AdamW([{"params": rest, "lr_scale": 1.0},
                                      {"params": linear, "lr_scale": tc.linear_lr_scale}],
                                     lr=tc.lr, betas=ADAM_BETAS, weight_decay=0.0)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=tc.disc_lr, betas=DISC_ADAM_BETAS)
        self.optimizers = {"opt": self.opt, "opt_d": self.opt_d}
        self.schedulers = [WarmupSchedule(self.opt, tc.lr, tc.warmup, tc.total_steps, tc.lr_schedule)]

    def restore(self, step: int, extra: dict[str, Any], resumed: bool, log: logging.Logger) -> None:
        tc, (width, height) = self.tc, self.video_size
        rng = np.random.default_rng(tc.seed + step)
        self.pool = ClipPool(self.clip_fn, split_clip_seeds("train", tc.train_seeds), tc.clip_pool, tc.clip_frames, width,
                             height, rng, int(extra.get("cursor", 0)), state=extra.get("pool"))
        self.val = eval_clips(self.clip_fn, "val", tc.eval_clips, tc.eval_frames, width, height)

    def extra(self) -> dict[str, Any]:
        return {"cursor": self.pool.cursor, "pool": self.pool.state()}

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(reconstruction of x in [-1, 1], what `own_terms` needs besides it)."""
        raise NotImplementedError

    def own_terms(self, rec: torch.Tensor, aux: Any) -> dict[str, tuple[float, torch.Tensor]]:
        """The stage's own loss terms, name -> (weight, value). Built after the shared terms, as always:
        the order of the graph fixes the order in which backward sums gradients (bit-identical runs)."""
        return {}

    def train_step(self, step: int) -> dict[str, float]:
        tc = self.tc
        x = self.pool.batch(tc.batch_size, tc.num_frames, tc.crop_height, tc.crop_width)
        rec, aux = self.reconstruct(x)
        loss, parts = losses_codec.reconstruction_loss(rec, x, tc.l1_weight, tc.l2_weight, tc.ssim_weight,
                                                       tc.temporal_weight)
        terms = {} if self.lpips is None else {"lpips": (tc.lpips_weight, self.lpips(rec, x))}
        terms.update(self.own_terms(rec, aux))
        gan_on = step >= tc.gan_start_step and tc.gan_weight > 0
        if gan_on:
            terms["g"] = (tc.gan_weight, losses_codec.generator_adversarial_loss(self.disc, rec))
        for name, (weight, value) in terms.items():
            loss = loss + weight * value
            parts[name] = float(value.detach())
        optimizer_step(self.opt, loss, [p for p in self.model.parameters() if p.requires_grad], tc.grad_clip)
        if gan_on:
            parts["d"] = losses_codec.discriminator_step(self.disc, self.opt_d, x, rec)
        self.ema.update(self.model)
        if (step + 1) % tc.clip_refresh_every == 0:
            self.pool.refresh()
        return {"loss": float(loss.detach()), **parts}

    def eval_codec(self) -> tuple[Callable, Callable]:
        """(encode, decode) of the EMA weights, for `evaluate_reconstruction`."""
        raise NotImplementedError

    def evaluate(self, step: int, log: logging.Logger) -> dict[str, float]:
        """Held-out PSNR / SSIM of the EMA weights against the ground truth."""
        self.ema.copy_to(self.ema_model)
        self.ema_model.eval()
        return evaluate_reconstruction(*self.eval_codec(), self.val)

    def bar_postfix(self, figures: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{figures['loss']:.4f}", "l1": f"{figures['l1']:.4f}"}
