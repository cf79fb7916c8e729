"""Training the embedded causal VAE, and the `codec` commands.

    motionstream train vae --config configs/tiny-cpu.yaml [--run runs/vae --minutes M --steps N]
    motionstream train vae ... --init weights/vae-tiny-cpu --freeze-encoder   # decoder fine-tuning
    motionstream train tiny-decoder --config configs/tiny-cpu.yaml [--run runs/tiny-decoder ...]
    motionstream codec export-vae --run runs/vae -o weights/vae-tiny-cpu [--stats-clips 200 | --stats-from DIR]
    motionstream codec export-tiny-decoder --run runs/tiny-decoder -o weights/tiny-decoder-tiny-cpu
    motionstream codec roundtrip VIDEO -o out.mp4 [--tiny]

Data: [world] synthetic clips (`motionstream.data.synth.render_clip`) rendered at the model's native
size; training takes random crops in space and random windows in time (the model is fully
convolutional and causal, so any window start is a valid "frame 0"). Every run is resumable:
re-running the same command continues from `RUN/state.safetensors`, saved every
`checkpoint_every_steps` (a kill loses at most that many steps), with the same data order.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from motionstream.models.vae import VAEConfig

VAE_KIND = "causal-vae"


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


@dataclass
class VAETrainConfig(CodecTrainConfig):
    pca_clips: int = 32                 # train clips for the PCA initialisation of the linear path
    kl_weight: float = 1e-5


@dataclass
class VAESection:
    model: VAEConfig = field(default_factory=VAEConfig)
    train: VAETrainConfig = field(default_factory=VAETrainConfig)


# ------------------------------------------------------------------------------- data
ClipFn = Callable[[int, int, int, int], np.ndarray]   # (seed, num_frames, width, height) -> uint8 [T, H, W, 3]


def render_world_clip(seed: int, num_frames: int, width: int, height: int) -> np.ndarray:
    from motionstream.data.synth import render_clip

    return render_clip(seed, num_frames=num_frames, width=width, height=height).frames


def world_seeds(split: str, n: int) -> list[int]:
    from motionstream.data.splits import split_seeds

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

    def batch(self, n: int, frames: int, crop_h: int, crop_w: int):
        import torch

        out = []
        for _ in range(n):
            clip = self.clips[int(self.rng.integers(len(self.clips)))]
            t0 = int(self.rng.integers(clip.shape[0] - frames + 1))
            y0 = int(self.rng.integers(clip.shape[1] - crop_h + 1))
            x0 = int(self.rng.integers(clip.shape[2] - crop_w + 1))
            c = clip[t0:t0 + frames, y0:y0 + crop_h, x0:x0 + crop_w]
            if self.rng.random() < 0.5:
                c = c[:, :, ::-1]
            out.append(np.ascontiguousarray(c))
        from motionstream.models.codec import frames_to_tensor

        return torch.cat([frames_to_tensor(c) for c in out], 0)


# ------------------------------------------------------------------------------- helpers
def setup_logging(run_dir: Path, name: str) -> logging.Logger:
    run_dir.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger(f"motionstream.{name}.{run_dir}")
    log.setLevel(logging.INFO)
    if not log.handlers:
        h = logging.FileHandler(run_dir / "train.log")
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(h)
    return log


def eval_clips(clip_fn: ClipFn, split: str, n: int, frames: int, width: int, height: int):
    """Held-out clips as a list of float [1, 3, T, H, W] tensors in [-1, 1]."""
    from motionstream.models.codec import frames_to_tensor

    return [frames_to_tensor(clip_fn(s, frames, width, height)) for s in world_seeds(split, n)]


def evaluate_reconstruction(encode: Callable, decode: Callable, clips: list) -> dict[str, float]:
    """Mean PSNR / SSIM of decode(encode(clip)) over clips (no grad)."""
    import torch

    from motionstream.train.losses_codec import psnr, ssim

    ps, ss = [], []
    with torch.no_grad():
        for x in clips:
            y = decode(encode(x)).clamp(-1, 1)
            ps.append(float(psnr(y, x)))
            ss.append(float(ssim(y, x)))
    return {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss))}


def init_linear_from_pca(vae, clips: list[np.ndarray]) -> list[float]:
    """Set the VAE's linear path to the whitened PCA of stacked 8x8x4 patches of `clips` (uint8 [T, H, W, 3]).

    Encoder: z = diag(1/sqrt(lambda)) U^T (p - mu); decoder: p = U diag(sqrt(lambda)) z + mu, so the
    untrained VAE already is the best linear codec with unit-variance latents. Returns the eigenvalues.
    """
    import torch

    from motionstream.models.codec import frames_to_tensor

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
    lam, u = lam.flip(0)[:z].clamp_min(1e-8), u.flip(1)[:, :z]                 # top-z components
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
def train_vae(section: VAESection, run_dir: str | Path, minutes: float | None = None, steps: int | None = None,
              init: str | None = None, freeze_encoder: bool = False, clip_fn: ClipFn | None = None,
              video_size: tuple[int, int] = (256, 144), progress: bool = True,
              lpips_weights: str | None = None) -> dict[str, Any]:
    """Train (or continue training) the causal VAE in `run_dir`. Returns the last logged figures.

    `lpips_weights`: optional local LPIPS-alex safetensors file; adds lpips_weight * LPIPS."""
    import torch
    from tqdm import tqdm

    from motionstream.models.checkpoints import load_model_dir
    from motionstream.models.vae import CausalVAE
    from motionstream.train.common import (EMA, load_training_state, lr_at, optimizer_step, save_training_state,
                                           seed_everything, set_lr)
    from motionstream.train.losses_codec import (LPIPSLoss, PatchDiscriminator, discriminator_step,
                                                 generator_adversarial_loss, kl_divergence, reconstruction_loss)

    tc, run_dir = section.train, Path(run_dir)
    clip_fn = clip_fn or render_world_clip
    log = setup_logging(run_dir, "vae")
    lpips = LPIPSLoss(lpips_weights) if lpips_weights else None
    seed_everything(tc.seed)
    model_cfg = section.model
    init_meta: dict[str, Any] = {}
    init_state = None
    if init is not None:
        init_meta, init_state = load_model_dir(init)
        from motionstream.config import from_dict
        model_cfg = from_dict(VAEConfig, init_meta["config"], "init.config")
    vae = CausalVAE(model_cfg)
    if init_state is not None:
        vae.load_state_dict(init_state)
    if freeze_encoder:
        vae.encoder.requires_grad_(False)
    disc = PatchDiscriminator(tc.disc_widths)
    ema = EMA(vae, tc.ema_decay)
    linear = [p for n, p in vae.named_parameters() if ".linear." in n and p.requires_grad]
    rest = [p for n, p in vae.named_parameters() if ".linear." not in n and p.requires_grad]
    opt = torch.optim.AdamW([{"params": rest, "lr_scale": 1.0}, {"params": linear, "lr_scale": tc.linear_lr_scale}],
                            lr=tc.lr, betas=(0.9, 0.99), weight_decay=0.0)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=tc.disc_lr, betas=(0.5, 0.9))
    modules = {"vae": vae, "ema": ema, "disc": disc}
    optimizers = {"opt": opt, "opt_d": opt_d}
    ema_vae = CausalVAE(model_cfg)   # before the state: its init draws from the torch RNG the state restores
    resumed = load_training_state(run_dir, modules, optimizers)
    step, extra = resumed if resumed is not None else (0, {})
    elapsed0 = float(extra.get("elapsed_s", 0.0))
    cursor = int(extra.get("cursor", 0))
    log.info(f"{'resume' if resumed else 'start'} step={step} init={init} freeze_encoder={freeze_encoder} "
             f"params enc={sum(p.numel() for p in vae.encoder.parameters())} dec={sum(p.numel() for p in vae.decoder.parameters())}")

    rng = np.random.default_rng(tc.seed + step)
    width, height = video_size
    pool = ClipPool(clip_fn, world_seeds("train", tc.train_seeds), tc.clip_pool, tc.clip_frames, width, height, rng, cursor,
                    state=extra.get("pool"))
    val = eval_clips(clip_fn, "val", tc.eval_clips, tc.eval_frames, width, height)

    def evaluate() -> dict[str, float]:
        ema.copy_to(ema_vae)
        ema_vae.eval()
        return evaluate_reconstruction(lambda x: ema_vae.encode(x)[0], ema_vae.decode, val)

    if resumed is None and init is None and model_cfg.linear_path:
        pca_clips = [clip_fn(s, tc.clip_frames, width, height) for s in world_seeds("train", tc.pca_clips)]
        lam = init_linear_from_pca(vae, pca_clips)
        ema = EMA(vae, tc.ema_decay)
        modules["ema"] = ema
        fig = evaluate()
        log.info(f"PCA init of the linear path from {len(pca_clips)} train clips (eigenvalues {lam[0]:.3g}..{lam[-1]:.3g}): "
                 f"held-out val PSNR {fig['psnr']:.2f} dB SSIM {fig['ssim']:.4f}")

    t_start = time.time()
    last_eval = t_start
    budget_s = None if minutes is None else minutes * 60
    stop_step = None if steps is None else step + steps
    bar = tqdm(total=stop_step - step if stop_step else None, disable=not progress, desc="vae", unit="step")
    figures: dict[str, float] = {}
    vae.train()
    if freeze_encoder:
        vae.encoder.eval()

    def save() -> None:
        save_training_state(run_dir, step, modules, optimizers, {
            "cursor": pool.cursor, "pool": pool.state(), "elapsed_s": elapsed0 + time.time() - t_start,
            "model": dataclass_dict(model_cfg), "init": init, "freeze_encoder": freeze_encoder})

    while (stop_step is None or step < stop_step) and (budget_s is None or time.time() - t_start < budget_s):
        lr = lr_at(step, tc.lr, tc.warmup, tc.total_steps, tc.lr_schedule)
        set_lr(opt, lr)
        x = pool.batch(tc.batch_size, tc.num_frames, tc.crop_height, tc.crop_width)
        rec, mean, logvar = vae(x)
        loss, parts = reconstruction_loss(rec, x, tc.l1_weight, tc.l2_weight, tc.ssim_weight, tc.temporal_weight)
        if lpips is not None:
            lp = lpips(rec, x)
            loss = loss + tc.lpips_weight * lp
            parts["lpips"] = float(lp.detach())
        if not freeze_encoder:
            kl = kl_divergence(mean, logvar)
            loss = loss + tc.kl_weight * kl
            parts["kl"] = float(kl.detach())
        gan_on = step >= tc.gan_start_step and tc.gan_weight > 0
        if gan_on:
            g_loss = generator_adversarial_loss(disc, rec)
            loss = loss + tc.gan_weight * g_loss
            parts["g"] = float(g_loss.detach())
        optimizer_step(opt, loss, [p for p in vae.parameters() if p.requires_grad], tc.grad_clip)
        if gan_on:
            parts["d"] = discriminator_step(disc, opt_d, x, rec)
        ema.update(vae)
        step += 1
        if step % tc.clip_refresh_every == 0:
            pool.refresh()
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", l1=f"{parts['l1']:.4f}")
        if step % tc.checkpoint_every_steps == 0:
            save()
        if step % 10 == 0:
            log.info(f"step {step} lr {lr:.2e} loss {float(loss.detach()):.4f} " + " ".join(f"{k} {v:.4f}" for k, v in parts.items()))
        if time.time() - last_eval > tc.eval_every_minutes * 60:
            figures = evaluate()
            last_eval = time.time()
            log.info(f"eval step {step} held-out val PSNR {figures['psnr']:.2f} dB SSIM {figures['ssim']:.4f} "
                     f"(EMA, {len(val)} clips {tc.eval_frames}x{height}x{width})")
    bar.close()
    save()
    figures = evaluate()
    log.info(f"end step {step} held-out val PSNR {figures['psnr']:.2f} dB SSIM {figures['ssim']:.4f} "
             f"elapsed {elapsed0 + time.time() - t_start:.0f}s")
    return {"step": step, **figures}


def dataclass_dict(obj) -> dict[str, Any]:
    from motionstream.config import to_dict

    return to_dict(obj)


# ------------------------------------------------------------------------------- export
def load_run_ema_state(run_dir: str | Path) -> tuple[dict[str, Any], dict]:
    """(state.json extra, EMA state dict) of a training run folder."""
    from motionstream.train.common import read_training_state

    run_dir = Path(run_dir)
    state = read_training_state(run_dir)
    if state is None:
        from motionstream.errors import UserError
        raise UserError(f"no training state in {run_dir} (expected {run_dir / 'state.safetensors'})")
    meta, tensors = state
    ema = {k[len("ema."):]: v.float() for k, v in tensors.items() if k.startswith("ema.")}
    return {**meta.get("extra", {}), "step": meta["step"]}, ema


def latent_stats(vae, clips: list) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of the encoder's mean latents over clips [1, 3, T, H, W]."""
    import torch

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
    std = (s2 / n - mean ** 2).clamp_min(1e-12).sqrt()
    return [float(v) for v in mean], [float(v) for v in std]


def export_vae(run_dir: str | Path, out_dir: str | Path, stats_clips: int = 200, stats_from: str | None = None,
               clip_fn: ClipFn | None = None, video_size: tuple[int, int] = (256, 144), stats_frames: int = 17) -> Path:
    """Write the EMA weights of a VAE run as a model folder with per-channel latent statistics.

    With `stats_from` (an already shipped folder) the latent statistics are copied and the encoder
    weights are checked to be identical, so re-shipping a fine-tuned decoder never changes the latent space.
    """
    import torch

    from motionstream.errors import UserError
    from motionstream.config import from_dict
    from motionstream.models.checkpoints import load_model_dir, save_model_dir
    from motionstream.models.vae import CausalVAE

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
    meta = {"kind": VAE_KIND, "config": dataclass_dict(cfg), "train_step": extra["step"],
            "train_elapsed_s": extra.get("elapsed_s"), "stats_clips": None if stats_from else stats_clips,
            "stats_from": stats_from}
    return save_model_dir(out_dir, vae.state_dict(), meta)


# ------------------------------------------------------------------------------- CLI
def cmd_train_vae(args) -> int:
    import torch

    from motionstream.config import VideoConfig
    from motionstream.train.common import load_run_config, run_section

    torch.set_num_threads(args.threads)
    cfg = load_run_config(args.config, args.set)
    sec = run_section(cfg, "vae", VAESection)
    video_size = run_section(cfg, "video", VideoConfig).size
    if args.freeze_encoder and not args.init:
        from motionstream.errors import UserError
        raise UserError("--freeze-encoder needs --init WEIGHTS (the shipped VAE whose encoder stays fixed)")
    if args.gan_start is not None:
        sec.train.gan_start_step = args.gan_start
    if args.lpips_weights and not Path(args.lpips_weights).is_file():
        from motionstream.errors import UserError
        raise UserError(f"--lpips-weights: no file at {args.lpips_weights} (an LPIPS-alex .safetensors, see scoring.metrics)")
    res = train_vae(sec, args.run, args.minutes, args.steps, args.init, args.freeze_encoder, video_size=video_size,
                    lpips_weights=args.lpips_weights)
    print(f"step {res['step']}: held-out PSNR {res['psnr']:.2f} dB, SSIM {res['ssim']:.4f} (log: {Path(args.run) / 'train.log'})")
    return 0


def cmd_export_vae(args) -> int:
    import torch

    torch.set_num_threads(args.threads)
    out = export_vae(args.run, args.output, args.stats_clips, args.stats_from)
    print(f"wrote {out}")
    return 0


def cmd_roundtrip(args) -> int:
    import torch

    from motionstream.errors import UserError
    from motionstream.models.checkpoints import WeightsNotFound
    from motionstream.models.codec import frames_to_tensor, load_codec, tensor_to_frames
    from motionstream.train.losses_codec import psnr, ssim
    from motionstream.video import VideoError, check_output, probe_video, read_video, write_video

    torch.set_num_threads(args.threads)
    try:   # the input and the output path are checked before the codec loads
        check_output(args.output, what="--output")
        probe_video(args.video)
    except VideoError as err:
        raise UserError(str(err)) from err
    try:
        codec = load_codec(args.vae, args.tiny_decoder if args.tiny else None)
    except WeightsNotFound as err:
        raise UserError(str(err)) from err
    try:
        frames, fps = read_video(args.video, fps=args.fps, size=(args.width, args.height), max_frames=args.max_frames)
    except VideoError as err:
        raise UserError(str(err)) from err
    t = 1 + (len(frames) - 1) // codec.temporal_stride * codec.temporal_stride
    x = frames_to_tensor(frames[:t])
    with torch.no_grad():
        z = codec.encode(x)
        if args.tiny:
            dec = codec.stream_decoder(tiny=True)
            y = dec.decode_chunk(z)
        else:
            y = codec.decode(z)
    p, s = float(psnr(y, x)), float(ssim(y, x))
    side = np.concatenate([frames[:t], tensor_to_frames(y)], axis=2)
    write_video(args.output, side, fps)
    print(f"{args.video}: {t} frames {args.width}x{args.height}, {'tiny' if args.tiny else 'full'} decoder: "
          f"PSNR {p:.2f} dB, SSIM {s:.4f}; wrote {args.output} (original | reconstruction)")
    return 0


def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
    from motionstream.config import add_config_arguments

    def common(p: argparse.ArgumentParser, run: str) -> None:
        add_config_arguments(p, default="tiny-cpu")
        p.add_argument("--run", default=run, help=f"run folder (default: {run}); rerun to resume")
        p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes")
        p.add_argument("--steps", type=int, default=None, help="stop after this many more steps")
        p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")

    p = train.add_parser("vae", help="train the embedded causal video VAE",
                         description="Train the causal VAE (8x spatial, 4x temporal, 16 channels) on [world] clips.")
    common(p, "runs/vae")
    p.add_argument("--init", default=None, help="start from a shipped VAE folder (name in weights/ or path)")
    p.add_argument("--freeze-encoder", action="store_true", help="train only the decoder (latent space stays fixed)")
    p.add_argument("--gan-start", type=int, default=None, help="step at which the PatchGAN term turns on")
    p.add_argument("--lpips-weights", default=None, help="optional local LPIPS-alex .safetensors; adds an LPIPS term")
    p.set_defaults(func=cmd_train_vae)

    p = train.add_parser("tiny-decoder", help="distill the tiny streaming decoder from the frozen VAE",
                         description="Train the TAEHV-style tiny decoder on latents of the frozen shipped VAE.")
    common(p, "runs/tiny-decoder")
    p.add_argument("--vae", default="vae-tiny-cpu", help="frozen VAE folder (name in weights/ or path)")
    p.add_argument("--init", default=None, help="start from a shipped tiny decoder folder")
    p.add_argument("--lpips-weights", default=None, help="optional local LPIPS-alex .safetensors; adds an LPIPS term")
    # handler: cli/train.py (train/tiny_decoder.py imports this module, so it cannot import that one)

    codec = commands.add_parser("codec", help="video codec tools (roundtrip, export weights)",
                                description="Encode/decode videos with the codec and export trained weights.")
    sub = codec.add_subparsers(dest="codec_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("roundtrip", help="encode + decode a video, write original|reconstruction, print PSNR/SSIM")
    p.add_argument("video")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--tiny", action="store_true", help="decode with the tiny streaming decoder")
    p.add_argument("--vae", default="vae-tiny-cpu")
    p.add_argument("--tiny-decoder", default="tiny-decoder-tiny-cpu")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=144)
    p.add_argument("--fps", type=float, default=16.0)
    p.add_argument("--max-frames", type=int, default=33)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_roundtrip)

    p = sub.add_parser("export-vae", help="ship a VAE run's EMA weights + latent statistics as a model folder")
    p.add_argument("--run", default="runs/vae")
    p.add_argument("-o", "--output", default="weights/vae-tiny-cpu")
    p.add_argument("--stats-clips", type=int, default=200, help="train clips for the per-channel latent mean/std")
    p.add_argument("--stats-from", default=None, help="copy latent stats from this shipped folder (decoder fine-tuning)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_export_vae)

    p = sub.add_parser("export-tiny-decoder", help="ship a tiny-decoder run's EMA weights as a model folder")
    p.add_argument("--run", default="runs/tiny-decoder")
    p.add_argument("-o", "--output", default="weights/tiny-decoder-tiny-cpu")
    # handler: cli/train.py, as for `train tiny-decoder`
