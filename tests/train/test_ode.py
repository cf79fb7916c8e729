"""Distillation stage 1: teacher ODE pairs and the causal regression with random sink/window masks."""

import numpy as np
import pytest
import torch

from distill_helpers import (GUIDE_PARAM, LATENT_HW, WARP_PARAM, random_cond, random_model, random_text,  # noqa: F401
                             small_cfg)
from motionstream.diffusion.sampling import sample
from motionstream.models.dit import chunk_attention_mask
from motionstream.train.ode import (ODETrainConfig, noisy_inputs, ode_predictions, ode_regression_loss, ode_schedule,
                                    ode_step_inputs, teacher_trajectory)
from motionstream.train.rollout import StudentConfig, StudentSampler

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models, one torch thread


C = 2            # latent frames per chunk in these tests


def test_ode_schedule_passes_through_student_times():
    scfg = StudentConfig(denoising_steps=[1.0, 0.6, 0.25], shift=3.0)
    sched, marks = ode_schedule(scfg.denoising_steps, 12, scfg.shift)
    assert sched.shape == (13,) and marks == [0, 4, 8]
    assert torch.allclose(sched[marks], scfg.timesteps(), atol=1e-6)
    assert sched[-1] == 0 and bool((sched[1:] < sched[:-1]).all())


def test_teacher_trajectory_shapes_and_endpoint_equal_teacher_sampler():
    cfg = small_cfg()
    teacher = random_model(cfg, seed=3, scale=0.05).eval()
    b, f = 2, 2 * C
    cond, text = random_cond(cfg, b, f), random_text(cfg, b)
    null = (torch.zeros(1, 5, cfg.text_dim), torch.ones(1, 5, dtype=torch.bool))
    noise = torch.randn(b, cfg.latent_channels, f, *LATENT_HW, generator=torch.Generator().manual_seed(0))
    scfg = StudentConfig(chunk_frames=C, denoising_steps=[1.0, 2 / 3, 1 / 3], shift=3.0)
    sched, marks = ode_schedule(scfg.denoising_steps, 6, scfg.shift)
    states, x0 = teacher_trajectory(teacher, GUIDE_PARAM, cond, text, null, noise, sched, marks, 3.0, 1.5)
    assert states.shape == (b, 3, cfg.latent_channels, f, *LATENT_HW) and x0.shape == noise.shape
    assert torch.equal(states[:, 0], noise)
    # uniform u grid of 6 steps == the teacher's own joint-guided Euler sampler with 6 steps
    ref = sample(teacher, cond, text, null, GUIDE_PARAM, steps=6, shift=3.0, text_scale=3.0, motion_scale=1.5,
                 noise=noise)
    assert torch.allclose(x0, ref, atol=1e-5)
    assert (states[:, 1] - states[:, 0]).abs().mean() > 1e-3 and (x0 - states[:, 2]).abs().mean() > 1e-3


def test_random_sink_window_draws_give_valid_masks():
    ocfg = ODETrainConfig(batch_size=4, sink_choices=[0, 1], window_choices=[1, 2])
    n_chunks, tok = 4, 6
    seen = set()
    for step in range(40):
        picks, steps, (s, w) = ode_step_inputs(step, ocfg, 10, n_chunks, 3, slice(0, 4))
        assert len(picks) == 4 and all(0 <= p < 10 for p in picks)
        assert steps.shape == (4, n_chunks) and int(steps.min()) >= 0 and int(steps.max()) < 3
        assert s in ocfg.sink_choices and w in ocfg.window_choices
        seen.add((s, w))
        mask = chunk_attention_mask(n_chunks * C, C, s, w, tok, clean_context=True).mask
        q = 2 * n_chunks * C * tok
        assert mask.shape[0] == q and mask.shape[1] >= q
        rows = mask[::C * tok]                                        # one query row per chunk
        blocks = rows[:, :q:C * tok]                                  # chunk-level pattern
        copies = rows[:, q:].any(1)                                   # rolled sink (a re-rotated copy)

        def sees(row: int) -> set[int]:
            return {j for j in range(2 * n_chunks) if blocks[row, j]} | (set(range(s)) if copies[row] else set())

        for i in range(n_chunks):
            want = {j for j in range(i) if j < s or j >= i - w}
            assert sees(n_chunks + i) == want | {n_chunks + i}, (s, w, i)   # clean context + itself
            assert sees(i) == want | {i}
    assert seen == {(0, 1), (0, 2), (1, 1), (1, 2)}
    # resume / other world sizes: the draw depends on the step only, and ranks split one global batch
    a = ode_step_inputs(7, ocfg, 10, n_chunks, 3, slice(0, 4))
    b = ode_step_inputs(7, ocfg, 10, n_chunks, 3, slice(2, 4))
    assert a[0][2:] == b[0] and torch.equal(a[1][2:], b[1]) and a[2] == b[2]


def _fixed_batch(cfg, b=2, n_chunks=3, k=3):
    g = torch.Generator().manual_seed(11)
    f = n_chunks * C
    x0 = torch.randn(b, cfg.latent_channels, f, *LATENT_HW, generator=g)
    noise = torch.randn(b, cfg.latent_channels, f, *LATENT_HW, generator=g)
    t = StudentConfig(C, denoising_steps=[1.0, 2 / 3, 1 / 3]).timesteps()
    states = torch.stack([(1 - tj) * x0 + tj * noise for tj in t], 1)        # a straight "trajectory"
    steps = torch.from_numpy(np.random.default_rng(0).integers(0, k, size=(b, n_chunks)))
    return x0, states, t, steps


def test_noisy_inputs_pick_the_drawn_state_per_chunk():
    cfg = small_cfg()
    x0, states, t, steps = _fixed_batch(cfg)
    z, tt = noisy_inputs(states, x0, t, steps, C, clean_context=True)
    f = x0.shape[2]
    assert z.shape[2] == 2 * f and torch.equal(z[:, :, :f], x0) and bool((tt[:, :f] == 0).all())
    for bi in range(2):
        for i in range(3):
            j = int(steps[bi, i])
            assert torch.equal(z[bi, :, f + i * C:f + (i + 1) * C], states[bi, j, :, i * C:(i + 1) * C])
            assert bool((tt[bi, f + i * C:f + (i + 1) * C] == t[j]).all())


@pytest.mark.parametrize("param", [GUIDE_PARAM, WARP_PARAM], ids=["guide", "warp"])
def test_masked_regression_prediction_equals_streaming_with_clean_cache(param):
    """What ODE regression trains (teacher forcing, clean_context) is what the cache shows at inference."""
    cfg = small_cfg()
    model = random_model(cfg).eval()
    x0, states, t, steps = _fixed_batch(cfg, n_chunks=4)
    cond, text = random_cond(cfg, 2, x0.shape[2]), random_text(cfg, 2)
    s, w = 1, 1
    mask = chunk_attention_mask(x0.shape[2], C, s, w, model.tokens_per_frame(LATENT_HW), clean_context=True)
    with torch.no_grad():
        pred = ode_predictions(model, param, states, x0, t, steps, C, text, cond, mask, True)
        sampler = StudentSampler(model, StudentConfig(C, s, w), param, cond, text)
        cache = sampler.new_cache(2, LATENT_HW)
        for i in range(4):
            a = i * C
            for bi in range(2):
                j = int(steps[bi, i])
                z = states[:, j, :, a:a + C]
                x0_stream = z - t[j] * sampler.velocity(z, float(t[j]), a, cache, write=False)
                assert torch.allclose(x0_stream[bi], pred[bi, :, a:a + C], atol=1e-4), (i, bi)
            sampler.write(x0[:, :, a:a + C], a, cache)


def test_regression_loss_decreases_on_a_fixed_batch():
    cfg = small_cfg()
    model = random_model(cfg, scale=0.1)
    x0, states, t, steps = _fixed_batch(cfg)
    cond, text = random_cond(cfg, 2, x0.shape[2]), random_text(cfg, 2)
    mask = chunk_attention_mask(x0.shape[2], C, 1, 1, model.tokens_per_frame(LATENT_HW), clean_context=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = ode_regression_loss(model, GUIDE_PARAM, states, x0, t, steps, C, text, cond, mask, True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
