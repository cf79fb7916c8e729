"""KV cache: bounded positions and flat memory over long streams, read-only denoising passes, training path."""

import resource

import torch

from test_dit_causal import LATENT_HW, random_cond, random_model, small_cfg


def small_stream(window_chunks: int):
    """(DiT config, random model, a c2s1wW cache, a 2-frame condition, text tokens [1, 3, text_dim])."""
    cfg = small_cfg()
    model = random_model(cfg)
    return cfg, model, model.new_cache(1, LATENT_HW, 2, 1, window_chunks), random_cond(cfg, 1, 2), \
        torch.randn(1, 3, cfg.text_dim)


def test_denoising_passes_never_change_the_cache():
    cfg, model, cache, cond, ctx = small_stream(1)
    x = torch.randn(1, cfg.latent_channels, 2, *LATENT_HW)
    with torch.no_grad():
        for _ in range(3):                              # fill sink and window, then roll once
            model.forward_chunk(x, torch.zeros(1, 2), ctx, None, cond, cache, True)
        n = cache.chunk_tokens
        filled = cache.current_slot * n
        before = (cache.keys[:, :, :, :filled].clone(), cache.values[:, :, :, :filled].clone(), cache.num_written)
        model.forward_chunk(torch.randn_like(x), torch.rand(1, 2), ctx, None, cond, cache, False)
    assert cache.num_written == before[2] == 3 and cache.current_slot == 2
    assert torch.equal(cache.keys[:, :, :, :filled], before[0]) and torch.equal(cache.values[:, :, :, :filled], before[1])


def test_long_stream_flat_memory_bounded_positions():
    """2,000 chunks of a very small config: same buffers, bounded slots, finite output, no RSS growth."""
    cfg = small_cfg(dim=16, num_heads=2, ffn_dim=16, num_layers=1, track_dim=4, track_channels=2,
                    latent_channels=2, text_dim=4, freq_dim=8)
    model = random_model(cfg)
    c, s, w = 1, 1, 1
    hw = (2, 2)                                          # one token per frame
    cache = model.new_cache(1, hw, c, s, w)
    ptrs = (cache.keys.data_ptr(), cache.values.data_ptr(), cache.window_raw.data_ptr())
    g = torch.Generator().manual_seed(0)
    cond = type(random_cond(cfg, 1, 1))(
        image_latent=torch.randn(1, 2, 2, *hw, generator=g), image_mask=torch.randn(1, 4, 2, *hw, generator=g),
        track_map=torch.randn(1, 4, 5, *hw, generator=g), guide=torch.randn(1, 2, 2, *hw, generator=g),
        guide_mask=torch.randn(1, 1, 2, *hw, generator=g))
    later = cond.chunk(1, 2)                             # a chunk that does not start at video frame 0
    ctx = torch.randn(1, 2, cfg.text_dim, generator=g)
    t = torch.zeros(1, 1)
    slots, rss = set(), []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                             # tiny ops: threading only adds overhead
    try:
        with torch.no_grad():
            for i in range(2000):
                x = torch.randn(1, cfg.latent_channels, 1, *hw, generator=g)
                if i % 50 == 0:                          # a denoising pass now and then (read-only)
                    model.forward_chunk(x, t + 0.5, ctx, None, later, cache, False)
                out = model.forward_chunk(x, t, ctx, None, later, cache, True)
                slots.add(cache.current_slot)
                if i in (200, 1999):
                    rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    finally:
        torch.set_num_threads(threads)
    assert cache.num_written == 2000 and slots == {1, 2}          # positions bounded by S + W
    assert (cache.keys.data_ptr(), cache.values.data_ptr(), cache.window_raw.data_ptr()) == ptrs
    assert torch.isfinite(out).all()
    assert rss[1] - rss[0] < 20_000                               # KiB: no growth with stream length


def test_training_path_matches_and_keeps_cache_detached():
    cfg = small_cfg()
    model = random_model(cfg)
    c = 2
    cond = random_cond(cfg, 1, 3 * c)
    ctx = torch.randn(1, 3, cfg.text_dim)
    xs = torch.randn(1, cfg.latent_channels, 3 * c, *LATENT_HW)
    ref_cache, train_cache = model.new_cache(1, LATENT_HW, c, 1, 1), model.new_cache(1, LATENT_HW, c, 1, 1)
    for i in range(3):
        sl = slice(i * c, (i + 1) * c)
        cc, x, t = cond.chunk(i * c, (i + 1) * c), xs[:, :, sl], torch.full((1, c), 0.3)
        with torch.no_grad():
            ref = model.forward_chunk(x, t, ctx, None, cc, ref_cache, False)
            model.forward_chunk(x, t * 0, ctx, None, cc, ref_cache, True)
        model.zero_grad()
        out = model.forward_chunk(x, t, ctx, None, cc, train_cache, False)
        out.square().mean().backward()
        torch.testing.assert_close(out.detach(), ref, atol=1e-5, rtol=1e-5)
        assert model.blocks[0].self_attn.q.weight.grad.abs().max() > 0
        assert model.blocks[0].cross_attn.k.weight.grad.abs().max() > 0   # text K/V not frozen while training
        with torch.no_grad():
            model.forward_chunk(x, t * 0, ctx, None, cc, train_cache, True)
    assert not train_cache.keys.requires_grad
    torch.testing.assert_close(train_cache.keys, ref_cache.keys)


def test_refresh_sink_moves_the_newest_window_chunk_into_the_sink():
    """The sink becomes the newest window chunk: its value copied, its raw key rotated at sink positions."""
    from motionstream.models.rope import apply_rope

    cfg, model, cache, cond, ctx = small_stream(2)
    n = cache.chunk_tokens
    with torch.no_grad():
        model.forward_chunk(torch.randn(1, cfg.latent_channels, 2, *LATENT_HW), torch.zeros(1, 2), ctx, None, cond,
                            cache, True)
        assert not cache.refresh_sink()                  # window empty: nothing to re-anchor
        for _ in range(2):
            model.forward_chunk(torch.randn(1, cfg.latent_channels, 2, *LATENT_HW), torch.zeros(1, 2), ctx, None,
                                cond, cache, True)
    newest_value = cache.values[:, :, :, 2 * n:3 * n].clone()
    newest_raw = cache.window_raw[:, :, :, n:2 * n].clone()
    assert cache.refresh_sink()
    assert torch.equal(cache.values[:, :, :, :n], newest_value)
    expected = apply_rope(newest_raw, cache.slot_cos[0], cache.slot_sin[0])
    assert torch.allclose(cache.keys[:, :, :, :n], expected)
    assert not torch.allclose(cache.keys[:, :, :, 2 * n:3 * n], expected)   # the same key at its window slot differs
