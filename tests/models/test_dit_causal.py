"""Causal student: streaming with the sink + rolling KV cache == one masked full-sequence forward."""

import pytest
import torch
from distill_helpers import LATENT_HW, small_cfg
from distill_helpers import random_model as random_weights

from motionstream.models.dit import DiTConfig, MotionCondition, WanDiT, chunk_attention_mask

CAUSAL_DIMS = dict(dim=48, ffn_dim=64, freq_dim=32)   # wider than distill_helpers' default model
WEIGHT_SCALE = 0.3


def random_model(cfg: DiTConfig, seed: int = 0) -> WanDiT:
    """distill_helpers.random_model at WEIGHT_SCALE, in eval mode."""
    return random_weights(cfg, seed, WEIGHT_SCALE).eval()


def random_cond(cfg: DiTConfig, batch: int, frames: int, seed: int = 1) -> MotionCondition:
    g = torch.Generator().manual_seed(seed)
    h, w = LATENT_HW
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return MotionCondition(
        image_latent=r(batch, cfg.latent_channels, frames, h, w), image_mask=r(batch, cfg.image_mask_channels, frames, h, w),
        track_map=r(batch, cfg.track_dim, 1 + cfg.temporal_factor * (frames - 1), h, w),
        guide=r(batch, cfg.latent_channels, frames, h, w), guide_mask=r(batch, 1, frames, h, w))


def stream_vs_full(c: int, s: int, w: int, num_chunks: int, seed: int = 0) -> tuple[float, float]:
    """Max abs difference (noisy outputs, clean outputs) between streaming and the doubled masked forward."""
    cfg = small_cfg(**CAUSAL_DIMS)
    model = random_model(cfg, seed)
    b, frames = 2, c * num_chunks
    g = torch.Generator().manual_seed(seed + 7)
    clean = torch.randn(b, cfg.latent_channels, frames, *LATENT_HW, generator=g)
    noisy = torch.randn(b, cfg.latent_channels, frames, *LATENT_HW, generator=g)
    t_noisy = torch.rand(b, frames, generator=g)
    t_clean = torch.zeros(b, frames)
    context = torch.randn(b, 5, cfg.text_dim, generator=g)
    context_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    cond = random_cond(cfg, b, frames)

    cache = model.new_cache(b, LATENT_HW, c, s, w)
    outs_noisy, outs_clean = [], []
    with torch.no_grad():
        for i in range(num_chunks):
            sl = slice(i * c, (i + 1) * c)
            cc = cond.chunk(i * c, (i + 1) * c)
            # two denoising passes (must not change the cache), then the write pass on the clean chunk
            outs_noisy.append(model.forward_chunk(noisy[:, :, sl], t_noisy[:, sl], context, context_mask, cc, cache, False))
            again = model.forward_chunk(noisy[:, :, sl], t_noisy[:, sl], context, context_mask, cc, cache, False)
            assert torch.equal(again, outs_noisy[-1])
            outs_clean.append(model.forward_chunk(clean[:, :, sl], t_clean[:, sl], context, context_mask, cc, cache, True))
            assert cache.current_slot <= s + w
        mask = chunk_attention_mask(frames, c, s, w, model.tokens_per_frame(LATENT_HW), clean_context=True)
        full = model(torch.cat([clean, noisy], 2), torch.cat([t_clean, t_noisy], 1), context, context_mask, cond, mask)
    ref_clean, ref_noisy = full[:, :, :frames], full[:, :, frames:]
    scale = ref_noisy.abs().max().item()
    assert scale > 1.0                       # a random model gives non-trivial outputs
    return ((torch.cat(outs_noisy, 2) - ref_noisy).abs().max().item() / scale,
            (torch.cat(outs_clean, 2) - ref_clean).abs().max().item() / scale)


@pytest.mark.parametrize("c, s, w, num_chunks", [(3, 1, 1, 5), (3, 0, 6, 8), (1, 1, 1, 5), (2, 2, 1, 6)])
def test_streaming_equals_masked_full_sequence(c, s, w, num_chunks):
    assert num_chunks > s + w + 1            # the window really rolls
    d_noisy, d_clean = stream_vs_full(c, s, w, num_chunks)
    assert d_noisy < 1e-4 and d_clean < 1e-4, (d_noisy, d_clean)


def test_plain_chunk_mask_equals_streaming_write_passes():
    """clean_context=False: every chunk's single pass writes the cache (per-chunk noise levels stay in context)."""
    c, s, w, n = 2, 1, 2, 6
    cfg = small_cfg(**CAUSAL_DIMS)
    model = random_model(cfg, seed=3)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, cfg.latent_channels, c * n, *LATENT_HW, generator=g)
    t = torch.rand(1, c * n, generator=g)
    context = torch.randn(1, 4, cfg.text_dim, generator=g)
    cond = random_cond(cfg, 1, c * n)
    cache = model.new_cache(1, LATENT_HW, c, s, w)
    with torch.no_grad():
        streamed = torch.cat([model.forward_chunk(x[:, :, i * c:(i + 1) * c], t[:, i * c:(i + 1) * c], context, None,
                                                  cond.chunk(i * c, (i + 1) * c), cache, True) for i in range(n)], 2)
        full = model(x, t, context, None, cond, chunk_attention_mask(c * n, c, s, w, model.tokens_per_frame(LATENT_HW)))
    torch.testing.assert_close(streamed, full, atol=1e-4 * full.abs().max().item(), rtol=0)
