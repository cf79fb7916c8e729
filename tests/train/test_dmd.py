"""Distillation stage 2: DMD gradient, critic:generator schedule, Self-Forcing plan, resume."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from distill_helpers import GUIDE_PARAM, LATENT_HW, random_model, small_cfg  # noqa: F401
from motionstream.diffusion.dmd import critic_loss, dmd_gradient, dmd_loss, is_generator_step
from motionstream.diffusion.flow import DiffusionConfig
from motionstream.models.conditioning import build_condition
from motionstream.tracks.trackset import TrackSet
from motionstream.train.common import load_training_state, save_training_state
from motionstream.train.dmd import (DMDInputs, DMDTrainConfig, DMDTrainer, grad_chunks, long_tracks, make_noise,
                                    plan_step, window_condition)
from motionstream.train.rollout import StudentConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models, one torch thread


C = 2                       # latent frames per chunk in these tests
STRIDE = 8                  # video pixels per latent cell


# ------------------------------------------------------------------ DMD gradient
def test_dmd_gradient_zero_when_real_equals_fake():
    g = torch.Generator().manual_seed(0)
    x, real = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    assert torch.equal(dmd_gradient(x, real, real.clone()), torch.zeros_like(x))


def test_dmd_gradient_sign_and_normalisation():
    x = torch.zeros(2, 1, 2, 2)
    real = torch.ones(2, 1, 2, 2)
    real[1] *= 4.0                                          # sample 1 is 4x further from the teacher
    fake = -real
    grad = dmd_gradient(x, real, fake)
    # (fake - real) / mean|x - real| = -2 for both samples: the normaliser removes the scale
    assert torch.allclose(grad, torch.full_like(x, -2.0))
    # descending moves x toward the teacher's prediction (x grows toward real > 0)
    x = x.clone().requires_grad_(True)
    loss = dmd_loss(x, grad)
    loss.backward()
    assert torch.allclose(x.grad, grad / x.numel())
    assert bool(((x - 0.1 * x.grad) > 0).all())
    # scale invariance
    assert torch.allclose(dmd_gradient(3 * x.detach(), 3 * real, 3 * fake), grad)


def test_dmd_on_a_toy_converges_to_the_real_prediction():
    """x a free 'generator'; the critic knows x exactly (fake = x); DMD steps pull x onto the target.

    The normalised gradient has a constant size, so the step size decays (as a learning-rate schedule would)."""
    target = torch.tensor([[1.5, -2.0, 0.5, 3.0]])
    x = torch.zeros(1, 4, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.5 * x.numel())
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    for _ in range(60):
        loss = dmd_loss(x, dmd_gradient(x, target, x.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    assert torch.allclose(x.detach(), target, atol=1e-2), x


def test_critic_loss_is_flow_matching_on_detached_samples():
    x = torch.randn(2, 3, requires_grad=True)
    noise = torch.randn(2, 3)
    v = (noise - x).detach().requires_grad_(True)
    loss = critic_loss(v, x, noise)
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is None                                   # the critic never pushes on the generator


def test_critic_generator_schedule_is_5_to_1():
    gen = [s for s in range(20) if is_generator_step(s, 5)]
    assert gen == [4, 9, 14, 19]
    assert [s for s in range(4) if is_generator_step(s, 1)] == [0, 1, 2, 3]


# -------------------------------------------------------------------------- plan
def test_plan_rolls_past_the_horizon_and_window_stays_inside():
    cfg = DMDTrainConfig(teacher_frames=2 * C, min_rollout_chunks=2, max_rollout_chunks=5, sink_choices=[0, 1],
                         window_choices=[1, 3])
    plans = [plan_step(s, cfg, 3, C) for s in range(60)]
    assert {p.num_chunks for p in plans} == {2, 3, 4, 5}
    assert {p.exit_step for p in plans} == {0, 1, 2}
    for p in plans:
        assert 0 <= p.window_start <= p.num_chunks * C - cfg.teacher_frames
        chunks = grad_chunks(p, C, cfg.teacher_frames)
        if p.generator_step:
            covered = set(range(chunks[0] * C, (chunks[-1] + 1) * C))
            assert set(range(p.window_start, p.window_start + cfg.teacher_frames)) <= covered
            assert len(chunks) <= cfg.teacher_frames // C + 1
        else:
            assert chunks == []
    assert any(p.window_start + cfg.teacher_frames > 3 * C for p in plans)    # windows beyond the horizon
    assert plan_step(7, cfg, 3, C) == plans[7]                                # a function of the step only


def test_long_tracks_extend_the_rendered_clip():
    from motionstream.data.synth import render_clip

    clip = render_clip(3, num_frames=5, width=64, height=36, fps=16)
    ext = long_tracks(3, 13, 64, 36, 16)
    assert ext.num_frames == 13 and ext.num_tracks == clip.tracks.num_tracks
    assert np.array_equal(ext.tracks[:5], clip.tracks.tracks)
    assert np.array_equal(ext.visibility[:5], clip.tracks.visibility)


# ----------------------------------------------------------------- tiny trainer
def random_tracks(seed: int, num_video: int, n: int = 12) -> TrackSet:
    h, w = LATENT_HW
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, [w * STRIDE, h * STRIDE], size=(n, 2))
    vel = rng.normal(0, 0.8, size=(n, 2))
    tr = (start[None] + np.arange(num_video)[:, None, None] * vel[None]).astype(np.float32)
    return TrackSet(tr, np.ones((num_video, n), bool), w * STRIDE, h * STRIDE, 16.0, ids=rng.integers(0, 1000, n))


def make_inputs(cfg_dit, scfg, tcfg: DMDTrainConfig, step: int, plan, batch: int = 2) -> DMDInputs:
    frames = plan.num_chunks * scfg.chunk_frames
    num_video = 1 + cfg_dit.temporal_factor * (frames - 1)
    g = torch.Generator().manual_seed(1000 + step)
    first = torch.randn(batch, cfg_dit.latent_channels, *LATENT_HW, generator=g)
    tracks = [random_tracks(100 * step + i, num_video) for i in range(batch)]
    cond = build_condition(first, tracks, frames, cfg_dit)
    text = (torch.randn(batch, 5, cfg_dit.text_dim, generator=g), torch.ones(batch, 5, dtype=torch.bool))
    null = (torch.zeros(batch, 5, cfg_dit.text_dim), torch.ones(batch, 5, dtype=torch.bool))
    gens = [torch.Generator().manual_seed(7 * step + i) for i in range(batch)]
    noise, st, sn, ct, cn = make_noise(plan, gens, scfg.num_steps, cfg_dit.latent_channels, scfg.chunk_frames,
                                       LATENT_HW, tcfg.teacher_frames, scfg.shift, tcfg)
    return DMDInputs(cond, text, null, tracks, noise, st, sn, ct, cn)


def make_trainer(ratio: int = 5) -> DMDTrainer:
    cfg = small_cfg()
    teacher = random_model(cfg, seed=1, scale=0.05)
    student = random_model(cfg, seed=2, scale=0.05)
    scfg = StudentConfig(chunk_frames=C, sink_chunks=1, window_chunks=1)
    tcfg = DMDTrainConfig(teacher_frames=2 * C, min_rollout_chunks=2, max_rollout_chunks=4, ratio=ratio,
                          generator_lr=1e-3, critic_lr=1e-3, warmup_steps=0, sink_choices=[0, 1],
                          window_choices=[1, 2], ema_decay=0.9)
    return DMDTrainer(student, copy.deepcopy(teacher), teacher, GUIDE_PARAM, scfg, DiffusionConfig(), tcfg, LATENT_HW,
                      3.0, 1.5)


def run_step(trainer: DMDTrainer, step: int) -> dict:
    plan = plan_step(step, trainer.cfg, trainer.scfg.num_steps, C)
    return trainer.step(step, plan, make_inputs(trainer.generator.cfg, trainer.scfg, trainer.cfg, step, plan))


def flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_trainer_updates_critic_every_step_and_generator_every_fifth():
    trainer = make_trainer(ratio=5)
    teacher0 = flat(trainer.teacher)
    gen_changed, critic_changed = [], []
    for step in range(10):
        g0, c0 = flat(trainer.generator), flat(trainer.critic)
        rec = run_step(trainer, step)
        gen_changed.append(not torch.equal(g0, flat(trainer.generator)))
        critic_changed.append(not torch.equal(c0, flat(trainer.critic)))
        assert np.isfinite(rec["critic_loss"]) and ("dmd_loss" in rec) == is_generator_step(step, 5)
    assert gen_changed == [s in (4, 9) for s in range(10)]
    assert all(critic_changed)
    assert trainer.ema.num_updates == 2
    assert torch.equal(teacher0, flat(trainer.teacher))                  # the teacher is frozen


def test_window_condition_rebases_on_the_generated_frame():
    trainer = make_trainer()
    cfg_dit, scfg = trainer.generator.cfg, trainer.scfg
    plan = plan_step(0, trainer.cfg, scfg.num_steps, C)
    plan = type(plan)(num_chunks=4, sink_chunks=1, window_chunks=1, exit_step=2, window_start=3, generator_step=False)
    inputs = make_inputs(cfg_dit, scfg, trainer.cfg, 0, plan)
    with torch.no_grad():
        roll = trainer.rollout(plan, inputs)
    fw = trainer.cfg.teacher_frames
    window = roll.latents[:, :, 3:3 + fw]
    cond = window_condition(inputs, window, 3, cfg_dit)
    assert cond.num_frames == fw and torch.equal(cond.image_latent[:, :, 0], window[:, :, 0])
    assert cond.track_map.shape[2] == 1 + cfg_dit.temporal_factor * (fw - 1)
    # the rebased map's frame 0 is the original video frame 4 * 3 = 12
    ref = build_condition(window[:, :, 0], [ts.frames(12, 12 + 1 + 4 * (fw - 1)) for ts in inputs.tracks], fw, cfg_dit)
    assert torch.equal(cond.track_map, ref.track_map) and cond.track_map.abs().sum() > 0
    assert window_condition(inputs, roll.latents[:, :, :fw], 0, cfg_dit).image_latent.equal(
        inputs.cond.chunk(0, fw).image_latent)


def test_resume_after_kill_gives_identical_next_step(tmp_path: Path):
    a = make_trainer()
    for step in range(4):
        run_step(a, step)
    save_training_state(tmp_path, 4, a.modules(), a.optimizers())
    rec_a = run_step(a, 4)                                          # a generator step (4 % 5 == 4)
    assert "dmd_loss" in rec_a

    b = make_trainer()                                              # a fresh process: same init, then the state
    torch.manual_seed(12345)                                        # global RNG state must not matter
    step, _ = load_training_state(tmp_path, b.modules(), b.optimizers())
    assert step == 4 and b.ema.num_updates == 0
    rec_b = run_step(b, step)
    assert rec_a == rec_b
    for name in ("generator", "critic"):
        assert torch.equal(flat(getattr(a, name)), flat(getattr(b, name))), name
    assert all(torch.equal(a.ema.shadow[k], b.ema.shadow[k]) for k in a.ema.shadow)
