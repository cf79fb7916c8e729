"""Self-rollout with the inference KV cache: gradient truncation, detached cache, rolling, equivalence."""

import pytest
import torch

from distill_helpers import (GUIDE_PARAM, LATENT_HW, WARP_PARAM, random_cond, random_model, random_text,  # noqa: F401
                             small_cfg)
from motionstream.diffusion.sampling import condition_prior
from motionstream.train.rollout import (StudentConfig, StudentSampler, chunk_noise, parse_cache_name, self_rollout,
                                        stream_generate)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models, one torch thread


def setup(num_chunks: int, s: int = 1, w: int = 1, batch: int = 2, renoise: bool = True, param=GUIDE_PARAM):
    cfg = small_cfg()
    model = random_model(cfg)
    scfg = StudentConfig(chunk_frames=2, sink_chunks=s, window_chunks=w, renoise=renoise)
    frames = scfg.chunk_frames * num_chunks
    sampler = StudentSampler(model, scfg, param, random_cond(cfg, batch, frames), random_text(cfg, batch))
    g = torch.Generator().manual_seed(5)
    noise = [chunk_noise(g, scfg.num_steps, batch, cfg.latent_channels, scfg.chunk_frames, LATENT_HW)
             for _ in range(num_chunks)]
    return model, scfg, sampler, noise


def reference_stream(model, scfg, sampler, noise):
    """The streaming loop written out with plain forward_chunk calls (what an engine does)."""
    cond, (ctx, ctx_mask) = sampler.cond, sampler.text
    prior = condition_prior(cond, sampler.param.output_skip)
    t = scfg.timesteps()
    b = noise[0].shape[1]
    cache = model.new_cache(b, LATENT_HW, scfg.chunk_frames, scfg.sink_chunks, scfg.window_chunks)
    out = []

    def vel(z, tt, a, write):
        ts = torch.full((b, z.shape[2]), float(tt))
        raw = model.forward_chunk(z, ts, ctx, ctx_mask, cond.chunk(a, a + z.shape[2]), cache, write)
        return raw + (z - prior[:, :, a:a + z.shape[2]]) / max(float(tt), sampler.param.skip_min_t)

    with torch.no_grad():
        for i, n in enumerate(noise):
            a = i * scfg.chunk_frames
            z = n[0]
            for j in range(scfg.num_steps):
                x0 = z - t[j] * vel(z, t[j], a, False)
                if j + 1 < scfg.num_steps:
                    z = (1 - t[j + 1]) * x0 + t[j + 1] * n[j + 1]
            vel(x0, 0.0, a, True)
            out.append(x0)
    return torch.cat(out, 2)


def test_student_timesteps_are_shifted_and_descending():
    t = StudentConfig(denoising_steps=[1.0, 2 / 3, 1 / 3], shift=3.0).timesteps()
    assert torch.allclose(t, torch.tensor([1.0, 6 / 7, 0.6]), atol=1e-6)
    with pytest.raises(ValueError):
        StudentConfig(denoising_steps=[1.0, 1.0])
    assert parse_cache_name("c3s1w1") == (3, 1, 1) and StudentConfig(3, 0, 6).name == "c3s0w6"


@pytest.mark.parametrize("param", [GUIDE_PARAM, WARP_PARAM], ids=["guide", "warp"])
def test_rollout_beyond_horizon_equals_plain_streaming_loop(param):
    num_chunks = 6                                    # window rolls (S + W + 1 = 3 < 6)
    model, scfg, sampler, noise = setup(num_chunks, param=param)
    ref = reference_stream(model, scfg, sampler, noise)
    cache = sampler.new_cache(2, LATENT_HW)
    with torch.no_grad():
        got = self_rollout(sampler, cache, noise).latents
    assert got.shape == (2, 4, 12, *LATENT_HW)
    assert cache.num_written == num_chunks and cache.current_slot == 2
    assert ref.abs().max() > 0.5
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
    # stream_generate draws the same noise in the same order from a generator
    again = stream_generate(sampler, num_chunks, LATENT_HW, torch.Generator().manual_seed(5))
    assert torch.allclose(again, ref, atol=1e-5)


def test_ddim_sampler_differs_from_renoise_and_is_deterministic_in_noise_zero():
    _, _, sampler, noise = setup(2, renoise=False)
    cache = sampler.new_cache(2, LATENT_HW)
    with torch.no_grad():
        a = self_rollout(sampler, cache, noise).latents
        # DDIM uses only the initial noise: changing the re-noise draws changes nothing
        other = [torch.cat([n[:1], torch.randn_like(n[1:])]) for n in noise]
        b = self_rollout(sampler, sampler.new_cache(2, LATENT_HW), other).latents
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("exit_step", [0, 2])
def test_gradient_truncation_only_exit_step_of_grad_chunks(exit_step):
    model, scfg, sampler, noise = setup(5)
    calls = []                                        # (chunk start, write, output carries a graph)
    orig = model.forward_chunk

    def spy(x, t, ctx, ctx_mask, cond_chunk, cache, write):
        out = orig(x, t, ctx, ctx_mask, cond_chunk, cache, write)
        calls.append((cache.num_written, write, out.requires_grad))
        return out

    model.forward_chunk = spy
    cache = sampler.new_cache(2, LATENT_HW)
    roll = self_rollout(sampler, cache, noise, exit_step=exit_step, grad_chunks=[3, 4])
    # per chunk: exit_step + 1 denoising calls, then one write call
    assert len(calls) == 5 * (exit_step + 2)
    with_grad = [(c, w) for c, w, g in calls if g]
    assert with_grad == [(3, False), (4, False)]      # exactly the exit step of the grad chunks
    per_chunk = [calls[i * (exit_step + 2):(i + 1) * (exit_step + 2)] for i in range(5)]
    for i, seq in enumerate(per_chunk):
        assert [w for _, w, _ in seq] == [False] * (exit_step + 1) + [True]
        assert seq[exit_step][2] == (i in (3, 4))      # the grad call is the exit step, not an earlier one
    assert [c.requires_grad for c in roll.chunks] == [False, False, False, True, True]
    # the cache holds detached K/V only, and no gradient crosses chunks through it
    assert not cache.keys.requires_grad and not cache.values.requires_grad and not cache.window_raw.requires_grad
    assert torch.autograd.grad(roll.chunks[4].sum(), roll.chunks[3], allow_unused=True)[0] is None
    roll.latents.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0


def test_exit_step_output_is_truncated_sampling():
    """Exit at step k == sampling with only the first k + 1 steps (what training rolls out)."""
    model, scfg, sampler, noise = setup(3)
    with torch.no_grad():
        early = self_rollout(sampler, sampler.new_cache(2, LATENT_HW), noise, exit_step=0).latents
        short = StudentSampler(model, StudentConfig(2, 1, 1, denoising_steps=[1.0]), GUIDE_PARAM,
                               sampler.cond, sampler.text)
        ref = self_rollout(short, short.new_cache(2, LATENT_HW), [n[:1] for n in noise]).latents
        full = self_rollout(sampler, sampler.new_cache(2, LATENT_HW), noise).latents
    assert torch.allclose(early, ref, atol=1e-6)
    assert (early - full).abs().max() > 1e-3


def test_schedule_below_t1_starts_from_the_noised_prior():
    """A rung that skips the first step (u = [1/3]) starts from the prior noised to its time: where the
    network adds nothing at t = 1 (x0 = the prior there), it samples exactly what [1, 1/3] samples."""
    model, _, sampler, noise = setup(3, param=WARP_PARAM)
    orig = model.forward_chunk

    def silent_at_noise(x, t, *rest):
        out = orig(x, t, *rest)
        return torch.zeros_like(out) if float(t.flatten()[0]) == 1.0 else out

    model.forward_chunk = silent_at_noise
    two = StudentSampler(model, StudentConfig(2, 1, 1, denoising_steps=[1.0, 1 / 3]), WARP_PARAM,
                         sampler.cond, sampler.text)
    one = StudentSampler(model, StudentConfig(2, 1, 1, denoising_steps=[1 / 3]), WARP_PARAM,
                         sampler.cond, sampler.text)
    with torch.no_grad():
        ref = self_rollout(two, two.new_cache(2, LATENT_HW), [n[:2] for n in noise]).latents
        got = self_rollout(one, one.new_cache(2, LATENT_HW), [n[1:2] for n in noise]).latents
    assert ref.abs().max() > 0.5
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()


def test_condition_too_short_is_an_error():
    _, _, sampler, noise = setup(2)
    with pytest.raises(ValueError, match="latent frames"):
        with torch.no_grad():
            self_rollout(sampler, sampler.new_cache(2, LATENT_HW), noise + noise)
