"""DiT checkpoints: our model folders, and Wan T2V weights in both key layouts, checked against diffusers' Wan."""

import pytest
import torch

from motionstream.models.checkpoints import save_model_dir, wan_diffusers_to_original
from motionstream.models.dit import DiTConfig, MotionCondition, WanDiT
from motionstream.models.wan_checkpoints import load_dit, load_wan_weights, save_dit

HEADS, HEAD_DIM, TEXT_DIM, FFN, FREQ = 2, 12, 20, 40, 16

# original Wan 2.1 key names (wan/modules/model.py), written out by hand so the test does not reuse the
# code's own rename table: diffusers name -> original name
ORIGINAL_NAME = {
    "scale_shift_table": "head.modulation", "proj_out.weight": "head.head.weight", "proj_out.bias": "head.head.bias",
    "condition_embedder.time_embedder.linear_1.weight": "time_embedding.0.weight",
    "condition_embedder.time_embedder.linear_1.bias": "time_embedding.0.bias",
    "condition_embedder.time_embedder.linear_2.weight": "time_embedding.2.weight",
    "condition_embedder.time_embedder.linear_2.bias": "time_embedding.2.bias",
    "condition_embedder.time_proj.weight": "time_projection.1.weight",
    "condition_embedder.time_proj.bias": "time_projection.1.bias",
    "condition_embedder.text_embedder.linear_1.weight": "text_embedding.0.weight",
    "condition_embedder.text_embedder.linear_1.bias": "text_embedding.0.bias",
    "condition_embedder.text_embedder.linear_2.weight": "text_embedding.2.weight",
    "condition_embedder.text_embedder.linear_2.bias": "text_embedding.2.bias",
    "patch_embedding.weight": "patch_embedding.weight", "patch_embedding.bias": "patch_embedding.bias",
}
BLOCK_NAME = {
    "scale_shift_table": "modulation", "norm2.weight": "norm3.weight", "norm2.bias": "norm3.bias",
    "ffn.net.0.proj.weight": "ffn.0.weight", "ffn.net.0.proj.bias": "ffn.0.bias",
    "ffn.net.2.weight": "ffn.2.weight", "ffn.net.2.bias": "ffn.2.bias",
    **{f"attn{a}.{d}.{p}": f"{o}.{w}.{p}" for a, o in ((1, "self_attn"), (2, "cross_attn"))
       for d, w in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "o")) for p in ("weight", "bias")},
    **{f"attn{a}.norm_{x}.weight": f"{o}.norm_{x}.weight" for a, o in ((1, "self_attn"), (2, "cross_attn")) for x in "qk"},
}


def original_name(key: str) -> str:
    if key.startswith("blocks."):
        _, i, rest = key.split(".", 2)
        return f"blocks.{i}.{BLOCK_NAME[rest]}"
    return ORIGINAL_NAME[key]


@pytest.fixture(scope="module")
def reference():
    """A tiny random diffusers WanTransformer3DModel (the real Wan implementation) with 2 layers."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    ref = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=HEAD_DIM,
                                in_channels=16, out_channels=16, text_dim=TEXT_DIM, freq_dim=FREQ, ffn_dim=FFN,
                                num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
                                rope_max_seq_len=64).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.2)
    return ref


def our_cfg() -> DiTConfig:
    return DiTConfig(dim=HEADS * HEAD_DIM, num_layers=2, num_heads=HEADS, ffn_dim=FFN, freq_dim=FREQ,
                     latent_channels=16, text_dim=TEXT_DIM, track_dim=8, track_channels=4, use_guide=True)


def inputs(cfg: DiTConfig, seed=3):
    g = torch.Generator().manual_seed(seed)
    b, f, h, w = 2, 3, 6, 8
    x = torch.randn(b, 16, f, h, w, generator=g)
    cond = MotionCondition(torch.randn(b, 16, f, h, w, generator=g), torch.randn(b, 4, f, h, w, generator=g),
                           torch.randn(b, cfg.track_dim, 1 + 4 * (f - 1), h, w, generator=g),
                           torch.randn(b, 16, f, h, w, generator=g), torch.randn(b, 1, f, h, w, generator=g))
    return x, torch.tensor([0.25, 0.8]), torch.randn(b, 7, TEXT_DIM, generator=g), cond


@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_wan_weights_load_and_match_reference_forward(reference, layout):
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    if layout == "original":
        state = {original_name(k): v for k, v in state.items()}
    cfg = our_cfg()
    model = load_wan_weights(WanDiT(cfg).eval(), state)
    x, t, ctx, cond = inputs(cfg)
    with torch.no_grad():
        ref = reference(x, t * 1000, ctx, return_dict=False)[0]
        ours = model(x, t[:, None].expand(-1, x.shape[2]), ctx, None, cond)
        # the conditioning channels start at zero weight: dropping the motion changes nothing
        ours_null = model(x, t[:, None].expand(-1, x.shape[2]), ctx, None, cond.drop_motion())
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(ours_null, ours, atol=1e-6, rtol=0)
    w = model.patch_embedding.weight
    assert w.shape[1] == cfg.in_channels and w[:, 16:].abs().max() == 0


def test_rename_table_matches_hand_written_names(reference):
    sd = reference.state_dict()
    assert wan_diffusers_to_original(sd).keys() == {original_name(k) for k in sd}


def test_wan_loading_is_strict(reference):
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    with pytest.raises(KeyError, match="unknown diffusers"):
        load_wan_weights(WanDiT(our_cfg()), {**state, "vace_blocks.0.proj_out.weight": torch.zeros(1)})
    missing = {k: v for k, v in state.items() if k != "blocks.1.ffn.net.2.bias"}
    with pytest.raises(KeyError, match="missing"):
        load_wan_weights(WanDiT(our_cfg()), missing)
    with pytest.raises(KeyError, match="unexpected"):   # 2-layer checkpoint into a 1-layer config
        load_wan_weights(WanDiT(DiTConfig(**{**our_cfg().__dict__, "num_layers": 1})), state)


def test_wan_weights_from_sharded_folder(reference, tmp_path):
    from safetensors.torch import save_file

    sd = {original_name(k): v.contiguous() for k, v in reference.state_dict().items()}
    keys = sorted(sd)
    save_file({k: sd[k] for k in keys[:10]}, str(tmp_path / "a.safetensors"))
    save_file({k: sd[k] for k in keys[10:]}, str(tmp_path / "b.safetensors"))
    model = load_wan_weights(WanDiT(our_cfg()), tmp_path)
    torch.testing.assert_close(model.state_dict()["blocks.1.self_attn.q.weight"], sd["blocks.1.self_attn.q.weight"])


def test_model_folder_round_trip(tmp_path):
    cfg = our_cfg()
    torch.manual_seed(1)
    model = WanDiT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    save_dit(tmp_path / "m", model, {"steps": 3})
    loaded = load_dit(tmp_path / "m").eval()
    assert loaded.cfg == cfg
    x, t, ctx, cond = inputs(cfg)
    tt = t[:, None].expand(-1, 3)
    with torch.no_grad():
        # fp16 on disk: close, not bit-equal
        torch.testing.assert_close(loaded(x, tt, ctx, None, cond), model(x, tt, ctx, None, cond), atol=0.05, rtol=0.02)
    save_model_dir(tmp_path / "other", {"w": torch.zeros(1)}, {"kind": "vae"})
    with pytest.raises(ValueError, match="kind"):
        load_dit(tmp_path / "other")
