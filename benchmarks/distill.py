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
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from motionstream.config import load_config, section, video_config
from motionstream.diffusion.flow import DiffusionConfig
from motionstream.diffusion.sampling import TeacherParam
from motionstream.models.conditioning import MotionCondition
from motionstream.models.dit import DiTConfig, WanDiT, chunk_attention_mask
from motionstream.train.dmd import DMDInputs, DMDTrainConfig, DMDTrainer, StepPlan, make_noise
from motionstream.train.ode import ODETrainConfig, ode_regression_loss, ode_schedule, teacher_trajectory
from motionstream.train.rollout import StudentConfig

VAE_STRIDE = 8           # pixels per latent cell (the default --latent-hw is the video size / this)
TEXT_TOKENS = 32         # random text embeddings per prompt


@dataclass
class Stages:
    """The preset's sections that the measured stages read."""

    dit: DiTConfig
    student: StudentConfig
    diffusion: DiffusionConfig
    ode: ODETrainConfig
    dmd: DMDTrainConfig


@dataclass
class RandomInputs:
    """Random conditions and text embeddings of the DiT's shapes at latent size hw = (h, w)."""

    dit: DiTConfig
    hw: tuple[int, int]

    def cond(self, b: int, f: int) -> MotionCondition:
        """A batch of b conditions over f latent frames (image, mask, tracks, guide, guide mask)."""
        d, (h, w) = self.dit, self.hw
        r = lambda *s: torch.randn(*s)  # noqa: E731
        return MotionCondition(r(b, d.latent_channels, f, h, w), torch.ones(b, d.image_mask_channels, f, h, w),
                               r(b, d.track_dim, 1 + d.temporal_factor * (f - 1), h, w),
                               r(b, d.latent_channels, f, h, w), torch.ones(b, 1, f, h, w))

    def text(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [b, TEXT_TOKENS, text_dim], all-true mask [b, TEXT_TOKENS])."""
        return torch.randn(b, TEXT_TOKENS, self.dit.text_dim), torch.ones(b, TEXT_TOKENS, dtype=torch.bool)


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Seconds per call of fn, the mean of `repeat` calls after one warm-up call."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def bench_ode(teacher: WanDiT, param: TeacherParam, st: Stages, rand: RandomInputs, repeat: int) -> WanDiT:
    """Print the seconds per ODE pair and per ODE regression step; returns the student (a copy of the
    teacher, trained by those steps)."""
    scfg, ocfg, dit_cfg, hw = st.student, st.ode, st.dit, rand.hw
    f = ocfg.latent_frames
    sched, marks = ode_schedule(scfg.denoising_steps, ocfg.teacher_steps, scfg.shift)
    cond, text = rand.cond(1, f), rand.text(1)
    noise = torch.randn(1, dit_cfg.latent_channels, f, *hw)
    s_pair = timed(lambda: teacher_trajectory(teacher, param, cond, text, rand.text(1), noise, sched, marks,
                                              st.diffusion.text_scale, st.diffusion.motion_scale), repeat)
    print(f"ODE pair ({ocfg.teacher_steps} Euler steps x 3 evaluations, {f} latent frames): {s_pair:.2f} s")

    student = copy.deepcopy(teacher).train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-6)
    b = ocfg.batch_size
    x0 = torch.randn(b, dit_cfg.latent_channels, f, *hw)
    states = torch.randn(b, scfg.num_steps, dit_cfg.latent_channels, f, *hw)
    steps = torch.from_numpy(np.random.default_rng(0).integers(0, scfg.num_steps, (b, f // scfg.chunk_frames)))
    mask = chunk_attention_mask(f, scfg.chunk_frames, 1, 1, teacher.tokens_per_frame(hw), clean_context=True)
    cb, tb = rand.cond(b, f), rand.text(b)

    def ode_step() -> None:
        loss = ode_regression_loss(student, param, states, x0, scfg.timesteps(), steps, scfg.chunk_frames, tb, cb,
                                   mask, True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"ODE regression step (batch {b}, clean-context sequence of {2 * f} frames): {timed(ode_step, repeat):.2f} s")
    return student


def bench_dmd(student: WanDiT, teacher: WanDiT, param: TeacherParam, st: Stages, rand: RandomInputs,
              repeat: int) -> None:
    """Print the seconds per DMD critic-only step and per generator + critic step."""
    scfg, dcfg, mcfg = st.student, st.diffusion, st.dmd
    trainer = DMDTrainer(student, copy.deepcopy(teacher), teacher, param, scfg, dcfg, mcfg, rand.hw, dcfg.text_scale,
                         dcfg.motion_scale)
    n = mcfg.max_rollout_chunks
    fr = n * scfg.chunk_frames
    bd = mcfg.batch_size
    for gen in (False, True):
        plan = StepPlan(n, 1, 1, scfg.num_steps - 1, fr - mcfg.teacher_frames, gen)
        noise, sts, sn, ct, cn = make_noise(plan, [torch.Generator().manual_seed(i) for i in range(bd)],
                                            scfg.num_steps, st.dit.latent_channels, scfg.chunk_frames, rand.hw,
                                            mcfg.teacher_frames, scfg.shift, mcfg)
        inputs = DMDInputs(rand.cond(bd, fr), rand.text(bd), rand.text(bd), [], noise, sts, sn, ct, cn)
        plan.window_start = 0                 # window 0: no track rebasing needed for random conditions
        sec = timed(lambda: trainer.step(0, plan, inputs), repeat)
        kind = "generator + critic" if gen else "critic only"
        print(f"DMD step, {kind} (batch {bd}, rollout {n} chunks x {scfg.num_steps} steps, "
              f"window {mcfg.teacher_frames}): {sec:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/tiny-cpu.yaml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--latent-hw", type=int, nargs=2, default=None, help="latent h w (default: video size / 8)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    st = Stages(section(cfg, "dit", DiTConfig), section(cfg, "student", StudentConfig),
                section(cfg, "diffusion", DiffusionConfig), section(cfg, "train_ode", ODETrainConfig),
                section(cfg, "train_dmd", DMDTrainConfig))
    video = video_config(cfg)
    h, w = args.latent_hw or (video.height // VAE_STRIDE, video.width // VAE_STRIDE)
    param = TeacherParam(output_skip="guide")
    torch.manual_seed(0)
    teacher = WanDiT(st.dit).eval()
    rand = RandomInputs(st.dit, (h, w))
    print(f"preset {cfg.get('name')}: DiT {sum(p.numel() for p in teacher.parameters()) / 1e6:.1f} M params, "
          f"latent {h}x{w}, {teacher.tokens_per_frame((h, w))} tokens/frame, {args.threads} threads")
    student = bench_ode(teacher, param, st, rand, args.repeat)
    bench_dmd(student, teacher, param, st, rand, args.repeat)


if __name__ == "__main__":
    main()
