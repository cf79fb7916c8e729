"""Distilling the tiny streaming decoder from the frozen shipped VAE.

    motionstream train tiny-decoder --config configs/tiny-cpu.yaml [--vae vae-tiny-cpu --run runs/tiny-decoder]
    motionstream codec export-tiny-decoder --run runs/tiny-decoder -o weights/tiny-decoder-tiny-cpu

Inputs are the frozen encoder's normalised mean latents of [world] crops (exactly what the diffusion
model produces and the codec feeds the tiny decoder); targets are the ground-truth frames, plus
optionally the full decoder's output (`teacher_weight`). The latent space is never touched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from motionstream.models.tiny_decoder import TinyDecoderConfig
from motionstream.train.vae import CodecTrainConfig

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


def train_tiny_decoder(section: TinyDecoderSection, run_dir: str | Path, vae: str | Path = "vae-tiny-cpu",
                       minutes: float | None = None, steps: int | None = None, init: str | None = None,
                       clip_fn=None, video_size: tuple[int, int] = (256, 144), progress: bool = True,
                       lpips_weights: str | None = None) -> dict[str, Any]:
    """Train (or continue) the tiny decoder in `run_dir` on latents of the frozen VAE `vae`."""
    import torch
    from tqdm import tqdm

    from motionstream.config import from_dict
    from motionstream.models.checkpoints import load_model_dir
    from motionstream.models.codec import load_codec
    from motionstream.models.tiny_decoder import TinyVideoAutoencoder
    from motionstream.train.common import (EMA, load_training_state, lr_at, optimizer_step, save_training_state,
                                           seed_everything, set_lr)
    from motionstream.train.losses_codec import (LPIPSLoss, PatchDiscriminator, discriminator_step,
                                                 generator_adversarial_loss, reconstruction_loss)
    from motionstream.train.vae import (ClipPool, eval_clips, evaluate_reconstruction, render_world_clip,
                                        setup_logging, world_seeds)

    tc, run_dir = section.train, Path(run_dir)
    clip_fn = clip_fn or render_world_clip
    log = setup_logging(run_dir, "tiny")
    lpips = LPIPSLoss(lpips_weights) if lpips_weights else None
    seed_everything(tc.seed)
    codec = load_codec(vae, None)
    codec.requires_grad_(False)
    model_cfg = section.model
    tiny = TinyVideoAutoencoder(model_cfg)
    if init is not None:
        meta, state = load_model_dir(init)
        model_cfg = from_dict(TinyDecoderConfig, meta["config"], "init.config")
        tiny = TinyVideoAutoencoder(model_cfg)
        tiny.load_state_dict(state)
    elif model_cfg.linear_skip and codec.vae.decoder.linear is not None:
        tiny.init_linear_from_vae(codec.vae.decoder.linear, codec.latent_mean.flatten(), codec.latent_std.flatten())
    disc = PatchDiscriminator(tc.disc_widths)
    ema = EMA(tiny, tc.ema_decay)
    linear = [p for n, p in tiny.named_parameters() if n.startswith("linear.")]
    rest = [p for n, p in tiny.named_parameters() if not n.startswith("linear.")]
    opt = torch.optim.AdamW([{"params": rest, "lr_scale": 1.0}, {"params": linear, "lr_scale": tc.linear_lr_scale}],
                            lr=tc.lr, betas=(0.9, 0.99), weight_decay=0.0)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=tc.disc_lr, betas=(0.5, 0.9))
    modules = {"tiny": tiny, "ema": ema, "disc": disc}
    optimizers = {"opt": opt, "opt_d": opt_d}
    ema_tiny = TinyVideoAutoencoder(model_cfg)   # before the state: its init draws from the restored torch RNG
    resumed = load_training_state(run_dir, modules, optimizers)
    step, extra = resumed if resumed is not None else (0, {})
    elapsed0 = float(extra.get("elapsed_s", 0.0))
    log.info(f"{'resume' if resumed else 'start'} step={step} vae={vae} params={sum(p.numel() for p in tiny.parameters())}")

    rng = np.random.default_rng(tc.seed + step)
    width, height = video_size
    pool = ClipPool(clip_fn, world_seeds("train", tc.train_seeds), tc.clip_pool, tc.clip_frames, width, height, rng,
                    int(extra.get("cursor", 0)), state=extra.get("pool"))
    val = eval_clips(clip_fn, "val", tc.eval_clips, tc.eval_frames, width, height)

    def evaluate() -> dict[str, float]:
        ema.copy_to(ema_tiny)
        ema_tiny.eval()
        return evaluate_reconstruction(codec.encode, lambda z: ema_tiny.decode_video(z) * 2 - 1, val)

    def save() -> None:
        from motionstream.config import to_dict
        save_training_state(run_dir, step, modules, optimizers, {
            "cursor": pool.cursor, "pool": pool.state(), "elapsed_s": elapsed0 + time.time() - t_start,
            "model": to_dict(model_cfg),
            "vae": str(vae)})

    t_start = last_eval = time.time()
    budget_s = None if minutes is None else minutes * 60
    stop_step = None if steps is None else step + steps
    bar = tqdm(total=stop_step - step if stop_step else None, disable=not progress, desc="tiny-decoder", unit="step")
    tiny.train()
    while (stop_step is None or step < stop_step) and (budget_s is None or time.time() - t_start < budget_s):
        lr = lr_at(step, tc.lr, tc.warmup, tc.total_steps, tc.lr_schedule)
        set_lr(opt, lr)
        x = pool.batch(tc.batch_size, tc.num_frames, tc.crop_height, tc.crop_width)
        with torch.no_grad():
            z = codec.encode(x)
            teacher = codec.decode(z) if tc.teacher_weight > 0 else None
        rec = tiny.decode_video(z) * 2 - 1
        loss, parts = reconstruction_loss(rec, x, tc.l1_weight, tc.l2_weight, tc.ssim_weight, tc.temporal_weight)
        if lpips is not None:
            lp = lpips(rec, x)
            loss = loss + tc.lpips_weight * lp
            parts["lpips"] = float(lp.detach())
        if teacher is not None:
            t_loss = (rec - teacher).abs().mean()
            loss = loss + tc.teacher_weight * t_loss
            parts["teacher_l1"] = float(t_loss.detach())
        gan_on = step >= tc.gan_start_step and tc.gan_weight > 0
        if gan_on:
            g_loss = generator_adversarial_loss(disc, rec)
            loss = loss + tc.gan_weight * g_loss
            parts["g"] = float(g_loss.detach())
        optimizer_step(opt, loss, tiny.parameters(), tc.grad_clip)
        if gan_on:
            parts["d"] = discriminator_step(disc, opt_d, x, rec)
        ema.update(tiny)
        step += 1
        if step % tc.clip_refresh_every == 0:
            pool.refresh()
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        if step % tc.checkpoint_every_steps == 0:
            save()
        if step % 10 == 0:
            log.info(f"step {step} lr {lr:.2e} loss {float(loss.detach()):.4f} " + " ".join(f"{k} {v:.4f}" for k, v in parts.items()))
        if time.time() - last_eval > tc.eval_every_minutes * 60:
            fig = evaluate()
            last_eval = time.time()
            log.info(f"eval step {step} held-out val PSNR {fig['psnr']:.2f} dB SSIM {fig['ssim']:.4f} (EMA, vs ground truth)")
    bar.close()
    save()
    fig = evaluate()
    log.info(f"end step {step} held-out val PSNR {fig['psnr']:.2f} dB SSIM {fig['ssim']:.4f} "
             f"elapsed {elapsed0 + time.time() - t_start:.0f}s")
    return {"step": step, **fig}


def export_tiny_decoder(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the EMA weights of a tiny-decoder run as a model folder."""
    from motionstream.config import from_dict, to_dict
    from motionstream.models.checkpoints import save_model_dir
    from motionstream.models.tiny_decoder import TinyVideoAutoencoder
    from motionstream.train.vae import load_run_ema_state

    extra, state = load_run_ema_state(run_dir)
    cfg = from_dict(TinyDecoderConfig, extra["model"], "run.model")
    model = TinyVideoAutoencoder(cfg)
    model.load_state_dict(state)
    meta = {"kind": TINY_KIND, "config": to_dict(cfg), "vae": extra.get("vae"), "train_step": extra["step"],
            "train_elapsed_s": extra.get("elapsed_s")}
    return save_model_dir(out_dir, model.state_dict(), meta)


def cmd_train_tiny_decoder(args) -> int:
    import torch

    from motionstream.errors import UserError
    from motionstream.config import VideoConfig
    from motionstream.models.checkpoints import WeightsNotFound
    from motionstream.train.common import load_run_config, run_section

    torch.set_num_threads(args.threads)
    cfg = load_run_config(args.config, args.set)
    sec = run_section(cfg, "tiny_decoder", TinyDecoderSection)
    video_size = run_section(cfg, "video", VideoConfig).size
    try:
        res = train_tiny_decoder(sec, args.run, args.vae, args.minutes, args.steps, args.init,
                                 video_size=video_size,
                                 lpips_weights=args.lpips_weights)
    except WeightsNotFound as err:
        raise UserError(str(err)) from err
    print(f"step {res['step']}: held-out PSNR {res['psnr']:.2f} dB, SSIM {res['ssim']:.4f} (log: {Path(args.run) / 'train.log'})")
    return 0


def cmd_export_tiny_decoder(args) -> int:
    print(f"wrote {export_tiny_decoder(args.run, args.output)}")
    return 0
