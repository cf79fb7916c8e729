import math

import pytest
import torch

from motionstream.diffusion.flow import (add_noise, euler_sample, loss_weight, noise_from_velocity,
                                         sample_training_timesteps, sampling_schedule, shift_timesteps,
                                         velocity_target, x0_from_velocity)


def test_shift_formula_endpoints_and_monotone():
    t = torch.linspace(0, 1, 101)
    s = shift_timesteps(t, 3.0)
    assert s[0] == 0 and s[-1] == pytest.approx(1.0)
    assert (s[1:] > s[:-1]).all()
    assert shift_timesteps(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)  # 1.5 / 2
    assert torch.allclose(shift_timesteps(t, 1.0), t)


def test_noising_and_velocity_identities():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(2, 4, 3, 5, 6, generator=g), torch.randn(2, 4, 3, 5, 6, generator=g)
    t = torch.tensor([[0.0, 0.3, 1.0], [0.5, 0.9, 0.1]])  # per-frame times
    zt = add_noise(z0, z1, t)
    assert torch.allclose(zt[:, :, 0][0], z0[0, :, 0]) and torch.allclose(zt[0, :, 2], z1[0, :, 2])
    v = velocity_target(z0, z1)
    assert torch.allclose(x0_from_velocity(zt, v, t), z0, atol=1e-6)
    assert torch.allclose(noise_from_velocity(zt, v, t), z1, atol=1e-6)


def test_training_timesteps_follow_the_shifted_distribution():
    t = sample_training_timesteps(20000, 3.0, torch.Generator().manual_seed(1))
    # P(t' < 0.75) = P(u < 0.5) = 0.5 for k = 3
    assert (t < 0.75).float().mean().item() == pytest.approx(0.5, abs=0.02)


def test_bell_weight_mean_one_and_peaks_mid():
    t = sample_training_timesteps(200000, 3.0, torch.Generator().manual_seed(2))
    w = loss_weight(t, 3.0)
    assert w.mean().item() == pytest.approx(1.0, abs=0.01)
    ends = loss_weight(torch.tensor([0.0, 0.5, 1.0]), 3.0)
    assert ends[0].abs() < 1e-6 and ends[2].abs() < 1e-6 and ends[1] > 1
    assert torch.equal(loss_weight(t[:5], 3.0, "uniform"), torch.ones(5))
    with pytest.raises(ValueError):
        loss_weight(t, 3.0, "nope")


def test_euler_is_exact_for_straight_paths():
    """For a point mass at x0 the true velocity field is (z - x0) / t: Euler lands exactly on x0."""
    x0 = torch.randn(1, 2, 3, 4, 4)
    noise = torch.randn_like(x0)
    fn = lambda z, t: (z - x0) / t[:, None, :, None, None].clamp_min(1e-12)
    out = euler_sample(fn, noise, sampling_schedule(7, 3.0))
    assert torch.allclose(out, x0, atol=1e-5)


def test_euler_per_frame_schedule_pins_clean_frames():
    x0 = torch.randn(2, 2, 4, 3, 3)
    clean = torch.tensor([True, False, False, True])
    sched = sampling_schedule(5, 3.0, num_frames=4, clean_frames=clean)
    assert sched.shape == (6, 4) and (sched[:, 0] == 0).all() and sched[0, 1] == 1
    start = torch.randn_like(x0)
    start[:, :, clean] = x0[:, :, clean]
    seen = []

    def fn(z, t):
        seen.append(t.clone())
        return (z - x0) / t[:, None, :, None, None].clamp_min(1e-12)

    out = euler_sample(fn, start, sched)
    assert torch.equal(out[:, :, clean], x0[:, :, clean])  # dt = 0: untouched bit for bit
    assert torch.allclose(out, x0, atol=1e-5)
    assert len(seen) == 5 and seen[0].shape == (2, 4) and (seen[0][:, 0] == 0).all()
    assert sampling_schedule(50, 3.0).shape == (51,)
    assert math.isclose(sampling_schedule(50, 3.0)[1].item(), shift_timesteps(torch.tensor(0.98), 3.0).item(), rel_tol=1e-6)
