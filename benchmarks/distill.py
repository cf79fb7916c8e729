"""Distillation cost per unit of work on this machine (random weights, the preset's DiT size).

    .venv/bin/python benchmarks/distill.py [--config configs/tiny-cpu.yaml] [--threads 2] [--repeat 2]

Prints seconds per: ODE pair (joint guidance = 3 teacher evaluations per Euler step), ODE regression
step (global batch of train_ode), DMD critic-only step and DMD generator step (a rollout of the
longest length, train_dmd batch). Budget a run with: pairs * s/pair + steps * s/step. Numbers on a
shared, loaded machine are upper bounds; set OMP_WAIT_POLICY=PASSIVE there.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch


def main() -> None:
    from motionstream.config import load_config, section, video_config
    from motionstream.diffusion.flow import DiffusionConfig
    from motionstream.diffusion.sampling import TeacherParam
    from motionstream.models.conditioning import MotionCondition
    from motionstream.models.dit import DiTConfig, WanDiT, chunk_attention_mask
    from motionstream.train.dmd import DMDInputs, DMDTrainConfig, DMDTrainer, StepPlan, make_noise
    from motionstream.train.ode import ODETrainConfig, ode_regression_loss, ode_schedule, teacher_trajectory
    from motionstream.train.rollout import StudentConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/tiny-cpu.yaml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--latent-hw", type=int, nargs=2, default=None, help="latent h w (default: video size / 8)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    dit_cfg = section(cfg, "dit", DiTConfig)
    scfg, dcfg = section(cfg, "student", StudentConfig), section(cfg, "diffusion", DiffusionConfig)
    ocfg, mcfg = section(cfg, "train_ode", ODETrainConfig), section(cfg, "train_dmd", DMDTrainConfig)
    video = video_config(cfg)
    h, w = args.latent_hw or (video.height // 8, video.width // 8)
    param = TeacherParam(output_skip="guide")
    torch.manual_seed(0)
    teacher = WanDiT(dit_cfg).eval()

    def cond_for(b: int, f: int) -> MotionCondition:
        r = lambda *s: torch.randn(*s)  # noqa: E731
        return MotionCondition(r(b, dit_cfg.latent_channels, f, h, w),
                               torch.ones(b, dit_cfg.image_mask_channels, f, h, w),
                               r(b, dit_cfg.track_dim, 1 + dit_cfg.temporal_factor * (f - 1), h, w),
                               r(b, dit_cfg.latent_channels, f, h, w), torch.ones(b, 1, f, h, w))

    def text_for(b: int):
        return torch.randn(b, 32, dit_cfg.text_dim), torch.ones(b, 32, dtype=torch.bool)

    def timed(fn) -> float:
        fn()                                                    # warm-up
        t0 = time.perf_counter()
        for _ in range(args.repeat):
            fn()
        return (time.perf_counter() - t0) / args.repeat

    f = ocfg.latent_frames
    print(f"preset {cfg.get('name')}: DiT {sum(p.numel() for p in teacher.parameters()) / 1e6:.1f} M params, "
          f"latent {h}x{w}, {teacher.tokens_per_frame((h, w))} tokens/frame, {args.threads} threads")
    sched, marks = ode_schedule(scfg.denoising_steps, ocfg.teacher_steps, scfg.shift)
    cond, text = cond_for(1, f), text_for(1)
    noise = torch.randn(1, dit_cfg.latent_channels, f, h, w)
    s_pair = timed(lambda: teacher_trajectory(teacher, param, cond, text, text_for(1), noise, sched, marks,
                                              dcfg.text_scale, dcfg.motion_scale))
    print(f"ODE pair ({ocfg.teacher_steps} Euler steps x 3 evaluations, {f} latent frames): {s_pair:.2f} s")

    student = copy.deepcopy(teacher).train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-6)
    b = ocfg.batch_size
    x0 = torch.randn(b, dit_cfg.latent_channels, f, h, w)
    states = torch.randn(b, scfg.num_steps, dit_cfg.latent_channels, f, h, w)
    steps = torch.from_numpy(np.random.default_rng(0).integers(0, scfg.num_steps, (b, f // scfg.chunk_frames)))
    mask = chunk_attention_mask(f, scfg.chunk_frames, 1, 1, teacher.tokens_per_frame((h, w)), clean_context=True)
    cb, tb = cond_for(b, f), text_for(b)

    def ode_step() -> None:
        loss = ode_regression_loss(student, param, states, x0, scfg.timesteps(), steps, scfg.chunk_frames, tb, cb,
                                   mask, True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"ODE regression step (batch {b}, clean-context sequence of {2 * f} frames): {timed(ode_step):.2f} s")

    trainer = DMDTrainer(student, copy.deepcopy(teacher), teacher, param, scfg, dcfg, mcfg, (h, w), dcfg.text_scale,
                         dcfg.motion_scale)
    n = mcfg.max_rollout_chunks
    fr = n * scfg.chunk_frames
    bd = mcfg.batch_size
    for gen in (False, True):
        plan = StepPlan(n, 1, 1, scfg.num_steps - 1, fr - mcfg.teacher_frames, gen)
        noise, st, sn, ct, cn = make_noise(plan, [torch.Generator().manual_seed(i) for i in range(bd)], scfg.num_steps,
                                           dit_cfg.latent_channels, scfg.chunk_frames, (h, w), mcfg.teacher_frames,
                                           scfg.shift, mcfg)
        inputs = DMDInputs(cond_for(bd, fr), text_for(bd), text_for(bd), [], noise, st, sn, ct, cn)
        plan.window_start = 0                 # window 0: no track rebasing needed for random conditions
        sec = timed(lambda: trainer.step(0, plan, inputs))
        kind = "generator + critic" if gen else "critic only"
        print(f"DMD step, {kind} (batch {bd}, rollout {n} chunks x {scfg.num_steps} steps, "
              f"window {mcfg.teacher_frames}): {sec:.2f} s")


if __name__ == "__main__":
    main()
