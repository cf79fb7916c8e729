"""The motion DiT: RoPE layout, track head causality, conditioning, masks, per-frame timesteps."""

import numpy as np
import pytest
import torch

from test_dit_causal import LATENT_HW, random_cond, random_model, small_cfg

from motionstream.config import load_config, section
from motionstream.models.conditioning import build_guide
from motionstream.models.dit import DiTConfig, MotionCondition, build_condition, chunk_attention_mask
from motionstream.models.rope import apply_rope, axis_dims, rope_tables
from motionstream.models.track_head import TrackHead
from motionstream.tracks import TrackSet


def test_presets_build_and_have_wan_sizes():
    sizes = {}
    for name in ("tiny-cpu", "wan2.1-1.3b", "wan2.2-5b"):
        cfg = section(load_config(name), "dit", DiTConfig)
        sizes[name] = (cfg.dim, cfg.num_layers, cfg.num_heads, cfg.ffn_dim, cfg.latent_channels)
    assert sizes["wan2.1-1.3b"] == (1536, 30, 12, 8960, 16)
    assert sizes["wan2.2-5b"] == (3072, 30, 24, 14336, 48)
    assert sizes["tiny-cpu"][0] // sizes["tiny-cpu"][2] == 64


def test_rope_split_and_relative_positions():
    assert axis_dims(128) == (44, 42, 42) and axis_dims(64) == (24, 20, 20)
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 6, 64), torch.randn(1, 1, 6, 64)
    # q and k at the same tokens, all frames shifted by 37: attention logits are unchanged (relative)
    c0, s0 = rope_tables(torch.arange(6.0), 1, 1, 64)
    c1, s1 = rope_tables(torch.arange(6.0) + 37, 1, 1, 64)
    l0 = apply_rope(q, c0, s0) @ apply_rope(k, c0, s0).transpose(-1, -2)
    l1 = apply_rope(q, c1, s1) @ apply_rope(k, c1, s1).transpose(-1, -2)
    torch.testing.assert_close(l0, l1, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(l0, q @ k.transpose(-1, -2), atol=1e-2)
    # only the first 24 dims (12 pairs) rotate with time; h and w dims rotate with the row / column
    c, s = rope_tables(torch.tensor([5.0]), 2, 3, 64)
    assert torch.all(c[0, :12] != 1) and torch.all(c[0, 12:] == 1)          # row 0, col 0
    assert torch.all(c[5, 12:22] != 1) and torch.all(c[5, 22:] != 1)         # row 1, col 2


def test_track_head_is_causal_per_latent_frame():
    torch.manual_seed(0)
    head = TrackHead(8, 4, 4)
    m = torch.randn(1, 8, 13, 3, 3)                                           # 13 video frames -> 4 latent
    out = head(m)
    assert out.shape == (1, 4, 4, 3, 3)
    for k, (a, b) in enumerate([(0, 1), (1, 5), (5, 9), (9, 13)]):
        assert TrackHead.video_frames(k, k + 1, 4) == (a, b)
        m2 = m.clone()
        m2[:, :, a:b] += 1.0
        changed = (head(m2) - out).abs().amax(dim=(0, 1, 3, 4)) > 1e-6
        assert changed.tolist() == [i == k for i in range(4)]
    # a chunk processed alone gives the same features as the whole clip
    torch.testing.assert_close(head(m[:, :, 5:13]), out[:, :, 2:4])


def test_condition_chunk_and_drop_motion():
    cfg = small_cfg()
    cond = random_cond(cfg, 1, 6)
    ch = cond.chunk(3, 6)
    assert ch.num_frames == 3 and ch.track_map.shape[2] == 12
    torch.testing.assert_close(ch.track_map, cond.track_map[:, :, 9:21])
    null = cond.drop_motion()
    assert null.track_map.abs().max() == 0 and null.guide.abs().max() == 0 and null.guide_mask.abs().max() == 0
    assert torch.equal(null.image_latent, cond.image_latent)
    both = MotionCondition.cat([cond, null])
    assert both.image_latent.shape[0] == 2


def test_per_frame_timesteps_and_causal_mask():
    cfg = small_cfg()
    model = random_model(cfg)
    f = 4
    cond = random_cond(cfg, 1, f)
    x = torch.randn(1, cfg.latent_channels, f, *LATENT_HW)
    ctx = torch.randn(1, 3, cfg.text_dim)
    t = torch.full((1, f), 0.5)
    mask = chunk_attention_mask(f, 1, 0, None, model.tokens_per_frame(LATENT_HW))
    with torch.no_grad():
        base = model(x, t, ctx, None, cond, mask)
        t2 = t.clone()
        t2[0, 2] = 0.9                      # only frame 2 noisier: frames 0, 1 see nothing of it
        diff = (model(x, t2, ctx, None, cond, mask) - base).abs().amax(dim=(0, 1, 3, 4))
        assert diff[:2].max() == 0 and diff[2:].min() > 1e-4
        bidir = model(x, t2, ctx, None, cond)
        # an all-True boolean mask is the bidirectional model
        full = torch.ones(f * 6, f * 6, dtype=torch.bool)
        torch.testing.assert_close(model(x, t2, ctx, None, cond, full), bidir, atol=1e-5, rtol=1e-5)
        assert (bidir - model(x, t2, ctx, None, cond, mask)).abs()[:, :, 0].max() > 1e-4
        # a masked-out text token does not matter
        ctx2 = ctx.clone()
        ctx2[:, 2] += 5
        cm = torch.tensor([[True, True, False]])
        torch.testing.assert_close(model(x, t, ctx2, cm, cond), model(x, t, ctx, cm, cond))


def test_chunk_mask_structure():
    # c1s1w1 over 5 chunks, one token per frame: chunk 3 sees sink 0 through a shifted copy, window 2, itself
    m = chunk_attention_mask(5, 1, 1, 1, 1)
    assert m.sink_shifts == [1, 2] and m.mask.shape == (5, 7)
    assert m.mask[:, :5].int().tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0],
                                            [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]
    assert m.mask[:, 5:].int().tolist() == [[0, 0], [0, 0], [0, 0], [1, 0], [0, 1]]
    d = chunk_attention_mask(2, 1, 0, 1, 1, clean_context=True)     # [clean 0, clean 1 | noisy 0, noisy 1]
    assert d.mask.int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]]
    assert d.frame_positions.tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="chunks"):
        chunk_attention_mask(7, 3, 1, 1, 4)


def test_bad_inputs_raise():
    cfg = small_cfg()
    model = random_model(cfg)
    cond = random_cond(cfg, 1, 2)
    x = torch.randn(1, cfg.latent_channels, 2, *LATENT_HW)
    with pytest.raises(ValueError, match="timesteps"):
        model(x, torch.zeros(1, 3), torch.zeros(1, 2, cfg.text_dim), None, cond)
    with pytest.raises(ValueError, match="context"):
        model(x, torch.zeros(1, 2), torch.zeros(1, 2, cfg.text_dim + 1), None, cond)
    with pytest.raises(ValueError, match="patch"):
        DiTConfig(patch_size=[2, 2, 2])


def _tracks(width=32, height=16, frames=9) -> TrackSet:
    # track 0 moves right 4 px per video frame from (2, 2); track 1 is invisible at frame 0
    t = np.zeros((frames, 2, 2), np.float32)
    t[:, 0, 0] = 2 + 4 * np.arange(frames)
    t[:, 0, 1] = 2
    t[:, 1] = [9, 9]
    vis = np.ones((frames, 2), bool)
    vis[0, 1] = False
    return TrackSet(tracks=t, visibility=vis, width=width, height=height, fps=16, ids=np.array([3, 11]))


def test_guide_copies_first_frame_feature_along_the_track():
    lat = torch.randn(2, 4, 8)                    # [C, h, w]: 32x16 video at stride 4
    guide, cover = build_guide(lat, _tracks(), 3, stride=4, temporal_factor=4)
    assert guide.shape == (2, 3, 4, 8) and cover.shape == (1, 3, 4, 8)
    assert cover[0, 0].sum() == 0                 # latent frame 0 is the image itself
    # latent frame 1 = video frame 4: x = 18 -> cell column 4; latent frame 2 = video frame 8: x = 34 -> outside
    assert cover[0, 1].nonzero().tolist() == [[0, 4]] and cover[0, 2].sum() == 0
    torch.testing.assert_close(guide[:, 1, 0, 4], lat[:, 0, 0])


def test_build_condition_shapes_and_track_map():
    cfg = small_cfg(track_dim=64)
    first = torch.randn(1, cfg.latent_channels, 4, 8)
    cond = build_condition(first, [_tracks()], 3, cfg)
    assert cond.track_map.shape == (1, 64, 9, 4, 8)
    assert cond.image_mask[:, :, 0].min() == 1 and cond.image_mask[:, :, 1:].max() == 0
    torch.testing.assert_close(cond.image_latent[:, :, 0], first)
    assert cond.track_map[0, :, 0].abs().sum(0).nonzero().tolist() == [[0, 0]]   # only track 0 visible at frame 0
    assert cond.guide.shape == (1, cfg.latent_channels, 3, 4, 8) and cond.guide_mask[0, 0, 1, 0, 4] == 1
    with pytest.raises(ValueError, match="frames"):
        build_condition(first, [_tracks(frames=5)], 3, cfg)
    with pytest.raises(ValueError, match="grid"):
        build_condition(torch.randn(1, cfg.latent_channels, 5, 8), [_tracks()], 3, cfg)


def test_bf16_model_runs_full_and_streaming_close_to_fp32():
    cfg = small_cfg()
    model = random_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    half = random_model(cfg)
    half.load_state_dict(model.state_dict())
    half = half.to(torch.bfloat16)
    cond = random_cond(cfg, 1, 2)                 # fp32 inputs: the model casts what it needs
    x, t, ctx = torch.randn(1, cfg.latent_channels, 2, *LATENT_HW), torch.rand(1, 2), torch.randn(1, 3, cfg.text_dim)
    with torch.no_grad():
        ref = model(x, t, ctx, None, cond)
        out = half(x.bfloat16(), t, ctx.bfloat16(), None, cond)
        cache = half.new_cache(1, LATENT_HW, 2, 1, 1)
        streamed = half.forward_chunk(x.bfloat16(), t, ctx.bfloat16(), None, cond, cache, True)
    assert out.dtype == torch.bfloat16 and cache.keys.dtype == torch.bfloat16
    err = (out.float() - ref).abs().max() / ref.abs().max()
    assert err < 0.05, err
    assert (streamed.float() - ref).abs().max() / ref.abs().max() < 0.05


def test_gradient_checkpointing_gives_the_same_gradients():
    cfg = small_cfg()
    model = random_model(cfg).train()
    cond = random_cond(cfg, 1, 2)
    x, t, ctx = torch.randn(1, cfg.latent_channels, 2, *LATENT_HW), torch.rand(1, 2), torch.randn(1, 3, cfg.text_dim)
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = ckpt
        model(x, t, ctx, None, cond).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[0], grads[1])
