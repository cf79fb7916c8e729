"""Wan image-to-video checkpoints (Wan 2.1 I2V, Wan 2.2 I2V A14B, VideoX-Fun InP / Control) in both key
layouts, checked against diffusers' WanTransformer3DModel with random weights; upstream text padding;
the two A14B experts; a paper-size key / shape census on the meta device."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from test_dit_checkpoints import original_name as t2v_original_name

from motionstream.models.dit import DiTConfig, MotionCondition, WanDiT
from motionstream.models.experts import NoiseExperts
from motionstream.models.wan_checkpoints import (WAN_CHECKPOINTS, WanCheckpoint, load_wan_dit, load_wan_weights,
                                                 wan_state_to_dit)

HEADS, HEAD_DIM, TEXT_DIM, FFN, FREQ, IMAGE_DIM, LAT = 2, 12, 20, 40, 16, 12, 16
DIM = HEADS * HEAD_DIM
TEXT_LEN = 512            # diffusers' WanAttnProcessor hard-codes 512 text tokens after the image tokens
IMAGE_TOKENS = 5
# diffusers name -> original Wan name of the image branch, written out by hand (wan/modules/model.py
# MLPProj and WanI2VCrossAttention); the test checks it against diffusers' own converter below
IMAGE_NAMES = {"condition_embedder.image_embedder.norm1": "img_emb.proj.0",
               "condition_embedder.image_embedder.ff.net.0.proj": "img_emb.proj.1",
               "condition_embedder.image_embedder.ff.net.2": "img_emb.proj.3",
               "condition_embedder.image_embedder.norm2": "img_emb.proj.4",
               "attn2.add_k_proj": "cross_attn.k_img", "attn2.add_v_proj": "cross_attn.v_img",
               "attn2.norm_added_k": "cross_attn.norm_k_img"}

# (diffusers in_channels, image branch, our image mask / control channels): the layouts of the issue
LAYOUTS = {
    "wan2.1-i2v": (36, True, 4, 0),          # Wan 2.1 I2V 14B 480p / 720p
    "wan2.2-i2v-a14b": (36, False, 4, 0),    # each expert of Wan 2.2 I2V A14B (no CLIP branch)
    "fun-inp": (36, True, 4, 0),             # VideoX-Fun Wan2.1-Fun InP (mask + masked video latents)
    "fun-control": (48, True, 0, 16),        # VideoX-Fun Wan2.1-Fun Control (control + image latents)
}


def original_name(key: str) -> str:
    for diff, orig in IMAGE_NAMES.items():
        if diff in key:
            return key.replace(diff, orig)
    return t2v_original_name(key)


def reference_model(in_channels: int, image: bool, seed: int = 0):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    ref = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=HEAD_DIM,
                                in_channels=in_channels, out_channels=LAT, text_dim=TEXT_DIM, freq_dim=FREQ,
                                ffn_dim=FFN, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                eps=1e-6, image_dim=IMAGE_DIM if image else None,
                                added_kv_proj_dim=DIM if image else None, rope_max_seq_len=64).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.2)
    return ref


def our_cfg(image: bool, mask: int, control: int, pad: int = TEXT_LEN) -> DiTConfig:
    return DiTConfig(dim=DIM, num_layers=2, num_heads=HEADS, ffn_dim=FFN, freq_dim=FREQ, latent_channels=LAT,
                     text_dim=TEXT_DIM, track_dim=8, track_channels=4, use_guide=True, image_mask_channels=mask,
                     control_channels=control, image_dim=IMAGE_DIM if image else 0, pad_text_to=pad)


def inputs(cfg: DiTConfig, seed: int = 3):
    """x, t [B], text tokens [B, 7, D] + mask (the last item's last 3 tokens padded), condition."""
    g = torch.Generator().manual_seed(seed)
    b, f, h, w = 2, 3, 4, 6
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x = r(b, LAT, f, h, w)
    mask = torch.ones(b, 7, dtype=torch.bool)
    mask[1, 4:] = False
    text = r(b, 7, TEXT_DIM) * mask[..., None]
    cond = MotionCondition(r(b, LAT, f, h, w), r(b, cfg.image_mask_channels, f, h, w),
                           r(b, cfg.track_dim, 1 + 4 * (f - 1), h, w), r(b, LAT, f, h, w), r(b, 1, f, h, w),
                           image_embeds=r(b, IMAGE_TOKENS, IMAGE_DIM) if cfg.image_dim else None)
    return x, torch.tensor([0.3, 0.85]), text, mask, cond


def reference_forward(ref, cfg: DiTConfig, x, t, text, cond) -> torch.Tensor:
    """diffusers' forward on upstream inputs: [x | mask | control zeros | image latent], 512 zero-padded text."""
    zeros = x.new_zeros(x.shape[0], cfg.control_channels, *x.shape[2:])
    hidden = torch.cat([x, cond.image_mask, zeros, cond.image_latent], 1)
    padded = torch.nn.functional.pad(text, (0, 0, 0, TEXT_LEN - text.shape[1]))
    return ref(hidden, t * 1000, padded, encoder_hidden_states_image=cond.image_embeds, return_dict=False)[0]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("keys", ["diffusers", "original"])
def test_image_conditioned_weights_match_diffusers(layout, keys):
    in_ch, image, mask_ch, control = LAYOUTS[layout]
    ref = reference_model(in_ch, image)
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    if keys == "original":
        state = {original_name(k): v for k, v in state.items()}
    cfg = our_cfg(image, mask_ch, control)
    assert cfg.image_conditioned_channels == in_ch
    model = load_wan_weights(WanDiT(cfg).eval(), state)
    x, t, text, mask, cond = inputs(cfg)
    tt = t[:, None].expand(-1, x.shape[2])
    with torch.no_grad():
        expected = reference_forward(ref, cfg, x, t, text, cond)
        ours = model(x, tt, text, mask, cond)
        no_motion = model(x, tt, text, mask, cond.drop_motion())
    assert expected.abs().max() > 0.1
    err = (ours - expected).abs().max().item()
    assert err < 2e-4, err
    torch.testing.assert_close(no_motion, ours, atol=1e-6, rtol=0)    # motion channels start at zero weight
    w = model.patch_embedding.weight
    assert w[:, in_ch:].abs().max() == 0 and w[:, :in_ch].abs().min() > 0


def test_original_image_names_agree_with_diffusers_converter():
    """The hand-written original names above are what diffusers' own original->diffusers converter reads."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    sd = reference_model(36, True).state_dict()
    original = {original_name(k): v for k, v in sd.items()}
    converted = convert_wan_transformer_to_diffusers(dict(original))
    assert set(converted) == set(sd)
    assert all(converted[k] is sd[k] for k in sd)


def test_pad_text_to_reproduces_upstream_and_masking_does_not():
    """pad_text_to=512 equals diffusers (all 512 zero-padded tokens attended); 0 masks the padding."""
    ref = reference_model(36, True)
    cfg = our_cfg(True, 4, 0)
    state = ref.state_dict()
    padded = load_wan_weights(WanDiT(cfg).eval(), state)
    masked = load_wan_weights(WanDiT(replace(cfg, pad_text_to=0)).eval(), state)
    x, t, text, mask, cond = inputs(cfg)
    tt = t[:, None].expand(-1, x.shape[2])
    with torch.no_grad():
        expected = reference_forward(ref, cfg, x, t, text, cond)
        assert (padded(x, tt, text, mask, cond) - expected).abs().max() < 2e-4
        assert (masked(x, tt, text, mask, cond) - expected).abs().max() > 1e-2
        with pytest.raises(ValueError, match="pad_text_to"):
            padded(x, tt, torch.zeros(2, TEXT_LEN + 1, TEXT_DIM), None, cond)


def test_image_branch_needs_image_tokens_and_uses_them():
    cfg = our_cfg(True, 4, 0)
    model = load_wan_weights(WanDiT(cfg).eval(), reference_model(36, True).state_dict())
    x, t, text, mask, cond = inputs(cfg)
    tt = t[:, None].expand(-1, x.shape[2])
    with torch.no_grad():
        with pytest.raises(ValueError, match="image_embeds"):
            model(x, tt, text, mask, replace(cond, image_embeds=None))
        other = model(x, tt, text, mask, replace(cond, image_embeds=torch.zeros_like(cond.image_embeds)))
        assert (other - model(x, tt, text, mask, cond)).abs().max() > 1e-2


def test_loading_refuses_mismatched_layouts():
    ref36 = reference_model(36, True).state_dict()
    with pytest.raises(KeyError, match="image_dim"):           # I2V weights into a DiT without the image branch
        load_wan_weights(WanDiT(our_cfg(False, 4, 0)), ref36)
    with pytest.raises(ValueError, match="36"):                # Fun Control weights (48 ch) into an I2V layout
        load_wan_weights(WanDiT(our_cfg(True, 4, 0)), reference_model(48, True).state_dict())
    v11 = {original_name(k): v for k, v in ref36.items()}
    v11["ref_conv.weight"] = torch.zeros(DIM, LAT, 2, 2)       # VideoX-Fun V1.1 reference-image conv
    with pytest.raises(KeyError, match="V1.1"):
        load_wan_weights(WanDiT(our_cfg(True, 4, 0)), v11)


# --------------------------------------------------------------------------- Wan 2.2 A14B experts
def test_experts_switch_at_the_upstream_boundary():
    cfg = our_cfg(False, 4, 0)
    high = load_wan_weights(WanDiT(cfg).eval(), reference_model(36, False, seed=1).state_dict())
    low = load_wan_weights(WanDiT(cfg).eval(), reference_model(36, False, seed=2).state_dict())
    experts = NoiseExperts(high, low, WAN_CHECKPOINTS["wan2.2-i2v-a14b"].boundary)
    assert experts.boundary == 0.9
    x, _, text, mask, cond = inputs(cfg)
    with torch.no_grad():
        for t, chosen in ((0.95, high), (0.9, high), (0.899, low), (0.1, low)):    # upstream: t >= boundary
            tt = torch.full((2, x.shape[2]), t)
            torch.testing.assert_close(experts(x, tt, text, mask, cond), chosen(x, tt, text, mask, cond),
                                       atol=0, rtol=0)
        with pytest.raises(ValueError, match="both sides"):
            experts(x, torch.tensor([[0.95] * 3, [0.5] * 3]), text, mask, cond)
    with pytest.raises(NotImplementedError):
        experts.new_cache(1, (4, 6), 1, 1, 1)


@pytest.mark.parametrize("keys, folders", [("original", ("high_noise_model", "low_noise_model")),
                                           ("diffusers", ("transformer", "transformer_2"))])
def test_load_wan_dit_reads_both_expert_folders(tmp_path, monkeypatch, keys, folders):
    from safetensors.torch import save_file

    small = WanCheckpoint(dim=DIM, num_layers=2, num_heads=HEADS, ffn_dim=FFN, in_dim=36,
                          experts=WAN_CHECKPOINTS["wan2.2-i2v-a14b"].experts, boundary=0.9)
    monkeypatch.setitem(WAN_CHECKPOINTS, "small-a14b", small)
    refs = []
    for seed, folder in zip((1, 2), folders):
        sd = reference_model(36, False, seed).state_dict()
        refs.append(sd)
        if keys == "original":
            sd = {original_name(k): v for k, v in sd.items()}
        (tmp_path / folder).mkdir()
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / folder / "model.safetensors"))
    experts = load_wan_dit("small-a14b", tmp_path, base=our_cfg(False, 4, 0))
    assert isinstance(experts, NoiseExperts) and experts.boundary == 0.9
    for expert, ref in zip((experts.high, experts.low), refs):
        torch.testing.assert_close(expert.state_dict()["blocks.1.self_attn.q.weight"],
                                   ref["blocks.1.attn1.to_q.weight"])
    with pytest.raises(FileNotFoundError, match="high_noise_model"):
        load_wan_dit("small-a14b", tmp_path / folders[0], base=our_cfg(False, 4, 0))


@pytest.mark.parametrize("keys", ["diffusers", "original"])
def test_load_wan_dit_builds_the_checkpoint_and_reproduces_it(tmp_path, monkeypatch, keys):
    """load_wan_dit (meta build, one allocation, strict load) on a small I2V entry: the model computes
    what diffusers computes, and the track head (not in Wan) is initialised, not left empty."""
    from safetensors.torch import save_file

    monkeypatch.setitem(WAN_CHECKPOINTS, "small-i2v", WanCheckpoint(dim=DIM, num_layers=2, num_heads=HEADS,
                                                                    ffn_dim=FFN, in_dim=36, image_dim=IMAGE_DIM))
    ref = reference_model(36, True)
    sd = ref.state_dict()
    if keys == "original":
        sd = {original_name(k): v for k, v in sd.items()}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    model = load_wan_dit("small-i2v", tmp_path, base=our_cfg(False, 0, 0)).eval()
    assert model.cfg.image_dim == IMAGE_DIM and model.cfg.image_mask_channels == 4
    assert not any(p.is_meta for p in model.parameters())
    track = torch.cat([p.flatten() for p in model.track_head.parameters()])
    assert torch.isfinite(track).all() and track.abs().max() > 0
    x, t, text, mask, cond = inputs(model.cfg)
    with torch.no_grad():
        out = model(x, t[:, None].expand(-1, x.shape[2]), text, mask, cond)
        assert (out - reference_forward(ref, model.cfg, x, t, text, cond)).abs().max() < 2e-4
    half = load_wan_dit("small-i2v", tmp_path, dtype=torch.bfloat16, base=our_cfg(False, 0, 0))
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


# ------------------------------------------------------------------------- paper sizes, meta device
def upstream_keys(dim: int, ffn_dim: int, num_layers: int, in_dim: int, out_dim: int, image: bool,
                  text_dim: int = 4096, freq_dim: int = 256, clip_dim: int = 1280) -> dict[str, tuple[int, ...]]:
    """Every key and shape of an upstream WanModel (Wan-Video/Wan2.1 wan/modules/model.py __init__ with
    cross_attn_norm=True, qk_norm=True, patch (1, 2, 2); model_type 'i2v' adds img_emb and the
    k_img / v_img / norm_k_img of WanI2VCrossAttention), written out from the module tree."""
    lin = lambda name, o, i: {f"{name}.weight": (o, i), f"{name}.bias": (o,)}  # noqa: E731
    keys = {"patch_embedding.weight": (dim, in_dim, 1, 2, 2), "patch_embedding.bias": (dim,),
            **lin("text_embedding.0", dim, text_dim), **lin("text_embedding.2", dim, dim),
            **lin("time_embedding.0", dim, freq_dim), **lin("time_embedding.2", dim, dim),
            **lin("time_projection.1", 6 * dim, dim),
            **lin("head.head", out_dim * 4, dim), "head.modulation": (1, 2, dim)}
    for i in range(num_layers):
        b = f"blocks.{i}"
        for attn in ("self_attn", "cross_attn"):
            for p in "qkvo":
                keys.update(lin(f"{b}.{attn}.{p}", dim, dim))
            keys.update({f"{b}.{attn}.norm_q.weight": (dim,), f"{b}.{attn}.norm_k.weight": (dim,)})
        keys.update({f"{b}.norm3.weight": (dim,), f"{b}.norm3.bias": (dim,), f"{b}.modulation": (1, 6, dim),
                     **lin(f"{b}.ffn.0", ffn_dim, dim), **lin(f"{b}.ffn.2", dim, ffn_dim)})
        if image:
            keys.update({**lin(f"{b}.cross_attn.k_img", dim, dim), **lin(f"{b}.cross_attn.v_img", dim, dim),
                         f"{b}.cross_attn.norm_k_img.weight": (dim,)})
    if image:
        keys.update({"img_emb.proj.0.weight": (clip_dim,), "img_emb.proj.0.bias": (clip_dim,),
                     **lin("img_emb.proj.1", clip_dim, clip_dim), **lin("img_emb.proj.3", dim, clip_dim),
                     "img_emb.proj.4.weight": (dim,), "img_emb.proj.4.bias": (dim,)})
    return keys


# upstream config numbers: Wan2.1 wan/configs (t2v_1_3B, t2v_14B, i2v_14B), Wan2.2 (i2v_A14B, ti2v_5B),
# VideoX-Fun / DiffSynth configs of the Fun checkpoints: (dim, ffn_dim, layers, heads, in_dim, out_dim, image)
UPSTREAM = {
    "wan2.1-t2v-1.3b": (1536, 8960, 30, 12, 16, 16, False),
    "wan2.1-t2v-14b": (5120, 13824, 40, 40, 16, 16, False),
    "wan2.1-i2v-14b-480p": (5120, 13824, 40, 40, 36, 16, True),
    "wan2.1-i2v-14b-720p": (5120, 13824, 40, 40, 36, 16, True),
    "wan2.2-i2v-a14b": (5120, 13824, 40, 40, 36, 16, False),
    "wan2.2-ti2v-5b": (3072, 14336, 30, 24, 48, 48, False),
    "wan2.1-fun-1.3b-inp": (1536, 8960, 30, 12, 36, 16, True),
    "wan2.1-fun-14b-inp": (5120, 13824, 40, 40, 36, 16, True),
    "wan2.1-fun-1.3b-control": (1536, 8960, 30, 12, 48, 16, True),
    "wan2.1-fun-14b-control": (5120, 13824, 40, 40, 48, 16, True),
}


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_paper_size_checkpoints_load_key_for_key_on_meta(name):
    dim, ffn, layers, heads, in_dim, out_dim, image = UPSTREAM[name]
    assert set(UPSTREAM) == set(WAN_CHECKPOINTS)
    cfg = WAN_CHECKPOINTS[name].dit_config()
    assert (cfg.dim, cfg.ffn_dim, cfg.num_layers, cfg.num_heads) == (dim, ffn, layers, heads)
    with torch.device("meta"):
        model = WanDiT(cfg)
        state = {k: torch.empty(s) for k, s in upstream_keys(dim, ffn, layers, in_dim, out_dim, image).items()}
    ours = wan_state_to_dit(model, state)                      # raises on any missing / unexpected key
    own = model.state_dict()
    for key, shape in upstream_keys(dim, ffn, layers, in_dim, out_dim, image).items():
        want = shape if key != "patch_embedding.weight" else (dim, cfg.in_channels, 1, 2, 2)
        assert tuple(own[key].shape) == want and tuple(ours[key].shape) == want, key
    assert cfg.in_channels > in_dim                            # motion channels come after Wan's own
    if name == "wan2.1-i2v-14b-480p":                          # the 208 keys the issue found missing
        assert len(upstream_keys(dim, ffn, layers, in_dim, out_dim, True)) - \
            len(upstream_keys(dim, ffn, layers, in_dim, out_dim, False)) == 208
    missing = dict(state)
    missing.pop(next(k for k in state if "img" in k or k.endswith("ffn.2.bias")))
    with pytest.raises(KeyError, match="missing"):
        wan_state_to_dit(model, missing)


DIFFUSERS_CONFIGS = {       # diffusers scripts/convert_wan_to_diffusers.py get_transformer_config
    "wan2.1-i2v-14b-480p": dict(image_dim=1280, added_kv_proj_dim=5120, in_channels=36, num_attention_heads=40,
                                num_layers=40, ffn_dim=13824),
    "wan2.2-i2v-a14b": dict(in_channels=36, num_attention_heads=40, num_layers=40, ffn_dim=13824),
    "wan2.2-ti2v-5b": dict(in_channels=48, out_channels=48, num_attention_heads=24, num_layers=30, ffn_dim=14336),
}


@pytest.mark.parametrize("name", sorted(DIFFUSERS_CONFIGS))
def test_paper_size_diffusers_layout_on_meta(name):
    from diffusers import WanTransformer3DModel

    kw = dict(attention_head_dim=128, cross_attn_norm=True, eps=1e-6, freq_dim=256, out_channels=16,
              patch_size=[1, 2, 2], qk_norm="rms_norm_across_heads", text_dim=4096)
    with torch.device("meta"):
        ref = WanTransformer3DModel(**{**kw, **DIFFUSERS_CONFIGS[name]})
        model = WanDiT(WAN_CHECKPOINTS[name].dit_config())
    ours = wan_state_to_dit(model, ref.state_dict())
    assert set(ours) == set(model.state_dict())
    # the upstream census above, renamed by diffusers' own converter, is exactly diffusers' model
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    dim, ffn, layers, _, in_dim, out_dim, image = UPSTREAM[name]
    upstream = {k: torch.empty(s, device="meta") for k, s in
                upstream_keys(dim, ffn, layers, in_dim, out_dim, image).items()}
    converted = {k: tuple(v.shape) for k, v in convert_wan_transformer_to_diffusers(upstream).items()}
    assert converted == {k: tuple(v.shape) for k, v in ref.state_dict().items()}


def test_sampler_switches_experts_by_noise_level():
    """diffusion.sampling.sample over NoiseExperts: every call with t >= 0.9 runs the high-noise expert,
    every other one the low-noise expert, and both run in one sampling."""
    from motionstream.diffusion.sampling import TeacherParam, sample

    cfg = our_cfg(False, 4, 0)
    high = load_wan_weights(WanDiT(cfg).eval(), reference_model(36, False, seed=1).state_dict())
    low = load_wan_weights(WanDiT(cfg).eval(), reference_model(36, False, seed=2).state_dict())
    experts = NoiseExperts(high, low, 0.9)
    calls = []
    for name, m in (("high", high), ("low", low)):
        m.register_forward_pre_hook(lambda mod, args, name=name: calls.append((name, float(args[1].max()))))
    _, _, text, mask, cond = inputs(cfg)
    sample(experts, cond, (text, mask), (torch.zeros(1, 7, TEXT_DIM), mask[:1]), TeacherParam(), steps=6,
           shift=3.0, generator=torch.Generator().manual_seed(0))
    assert {n for n, _ in calls} == {"high", "low"}
    assert all((t >= 0.9) == (n == "high") for n, t in calls), calls


def test_readme_names_every_supported_checkpoint():
    """The README's paper-scale table gives a load command for each WAN_CHECKPOINTS entry, and only those."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## Paper scale"):]
    section = section[:section.index("\n## ", 1)]
    named = set(re.findall(r'"(wan2\.[12]-[a-z0-9.-]+)"', section))
    assert named == set(WAN_CHECKPOINTS)
