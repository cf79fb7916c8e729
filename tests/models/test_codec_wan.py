"""Wan 2.1 VAE adapter: local loading, normalisation constants, chunk-wise decoding with a kept cache."""

from __future__ import annotations

import pytest
import torch

from motionstream.models.checkpoints import WeightsNotFound

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                           latents_mean=[0.1 * i for i in range(16)], latents_std=[1.0 + 0.1 * i for i in range(16)])
    path = tmp_path_factory.mktemp("wan") / "vae"
    vae.save_pretrained(str(path))
    return path


def test_missing_wan_folder_names_the_path(tmp_path):
    from motionstream.models.wan_vae import load_wan_codec

    with pytest.raises(WeightsNotFound, match=str(tmp_path / "nowhere")):
        load_wan_codec(tmp_path / "nowhere")


@torch.no_grad()
def test_wan_codec_normalises_with_config_constants(wan_dir):
    from motionstream.models.wan_vae import load_wan_codec

    codec = load_wan_codec(wan_dir)
    assert (codec.spatial_stride, codec.temporal_stride, codec.latent_channels) == (8, 4, 16)
    x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (1, 16, 2, 2, 2)
    raw = codec.wan.encode(x).latent_dist.mean
    mean = torch.tensor([0.1 * i for i in range(16)]).view(1, -1, 1, 1, 1)
    std = torch.tensor([1.0 + 0.1 * i for i in range(16)]).view(1, -1, 1, 1, 1)
    assert torch.allclose(z, (raw - mean) / std, atol=1e-5)


@torch.no_grad()
def test_wan_chunkwise_decoding_keeps_cache(wan_dir):
    from motionstream.models.wan_vae import load_wan_codec

    codec = load_wan_codec(wan_dir)
    z = torch.randn(1, 16, 5, 2, 2)
    whole = codec.decode(z)
    assert whole.shape == (1, 3, 17, 16, 16)
    dec = codec.stream_decoder(tiny=False)
    calls = {"n": 0}
    inner = codec.wan.decoder.forward

    def counting(x, *a, **k):
        calls["n"] += x.shape[2]
        return inner(x, *a, **k)

    codec.wan.decoder.forward = counting
    chunks = [dec.decode_chunk(z[:, :, a:b]) for a, b in [(0, 1), (1, 3), (3, 5)]]
    codec.wan.decoder.forward = inner
    assert [c.shape[2] for c in chunks] == [1, 8, 8]
    assert calls["n"] == 5                      # every latent frame decoded exactly once
    assert torch.allclose(torch.cat(chunks, 2), whole, atol=1e-5)
    dec.reset()
    assert torch.allclose(dec.decode_chunk(z[:, :, :2]), whole[:, :, :5], atol=1e-5)


# ------------------------------------------------------------------ original Wan VAE files (.pth)
# Small AutoencoderKLWan configs with the upstream structure (Wan 2.1: 4 levels, 2 residual blocks,
# temporal down in levels 1 and 2; Wan 2.2: residual down / up blocks, patch 2, 12 input channels).
WAN21_SMALL = dict(base_dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2)
WAN22_SMALL = dict(base_dim=4, decoder_base_dim=8, z_dim=8, dim_mult=[1, 2, 2], num_res_blocks=1,
                   temperal_downsample=[False, True], is_residual=True, in_channels=12, out_channels=12,
                   patch_size=2, scale_factor_spatial=16, latents_mean=[0.0] * 8, latents_std=[1.0] * 8)


def wan21_original_names(dim: int, dim_mult: list[int], num_res: int, temporal: list[bool]) -> list[str]:
    """Every parameter name of upstream WanVAE_ (Wan-Video/Wan2.1 wan/modules/vae.py), from its module tree."""
    conv = lambda p: [f"{p}.weight", f"{p}.bias"]  # noqa: E731

    def res(p: str, shortcut: bool) -> list[str]:   # ResidualBlock: residual = [RMS, SiLU, conv, RMS, SiLU, drop, conv]
        return ([f"{p}.residual.0.gamma", *conv(f"{p}.residual.2"), f"{p}.residual.3.gamma", *conv(f"{p}.residual.6")]
                + (conv(f"{p}.shortcut") if shortcut else []))

    def middle(p: str) -> list[str]:
        return (res(f"{p}.middle.0", False) + [f"{p}.middle.1.norm.gamma", *conv(f"{p}.middle.1.to_qkv"),
                                               *conv(f"{p}.middle.1.proj")] + res(f"{p}.middle.2", False))

    def resample(p: str, temporal_conv: bool) -> list[str]:
        return conv(f"{p}.resample.1") + (conv(f"{p}.time_conv") if temporal_conv else [])

    names = conv("conv1") + conv("conv2") + conv("encoder.conv1") + conv("decoder.conv1")
    dims, k = [dim * u for u in [1] + dim_mult], 0
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        for r in range(num_res):
            names += res(f"encoder.downsamples.{k}", r == 0 and a != b)
            k += 1
        if i < len(dim_mult) - 1:
            names += resample(f"encoder.downsamples.{k}", temporal[i])
            k += 1
    names += middle("encoder") + ["encoder.head.0.gamma", *conv("encoder.head.2")]
    dims, k = [dim * u for u in [dim_mult[-1]] + dim_mult[::-1]], 0
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        a = a // 2 if i > 0 else a                   # Decoder3d: levels after an upsample start at half width
        for r in range(num_res + 1):
            names += res(f"decoder.upsamples.{k}", r == 0 and a != b)
            k += 1
        if i < len(dim_mult) - 1:
            names += resample(f"decoder.upsamples.{k}", temporal[::-1][i])
            k += 1
    return names + middle("decoder") + ["decoder.head.0.gamma", *conv("decoder.head.2")]


def wan22_original_name(key: str) -> str:
    """diffusers -> upstream name for Wan 2.2's VAE (wan/modules/vae2_2.py: Down_ResidualBlock /
    Up_ResidualBlock keep their residual blocks and Resample in one `downsamples` / `upsamples` list)."""
    import re

    for diff, orig in (("norm1.gamma", "residual.0.gamma"), ("conv1.", "residual.2."),
                       ("norm2.gamma", "residual.3.gamma"),
                       ("conv2.", "residual.6."), ("conv_shortcut.", "shortcut.")):
        if ".resnets." in key and f".{diff}" in key:
            key = key.replace(f".{diff}", f".{orig}")
    key = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.middle.0.", key)
    key = re.sub(r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.middle.1.", key)
    key = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.middle.2.", key)
    key = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.downsamples.\1.downsamples.\2.", key)
    key = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.", r"decoder.upsamples.\1.upsamples.\2.", key)
    # the Resample follows the level's residual blocks: index num_res (encoder) / num_res + 1 (decoder)
    n = WAN22_SMALL["num_res_blocks"]
    key = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsampler\.", rf"encoder.downsamples.\1.downsamples.{n}.", key)
    key = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsampler\.", rf"decoder.upsamples.\1.upsamples.{n + 1}.", key)
    for diff, orig in (("quant_conv.", "conv1."), ("post_quant_conv.", "conv2.")):
        if key.startswith(diff):
            key = orig + key[len(diff):]
    for part, orig in (("conv_in.", "conv1."), ("norm_out.", "head.0."), ("conv_out.", "head.2.")):
        key = re.sub(rf"^(encoder|decoder)\.{part}", rf"\1.{orig}", key)
    return key


def assert_same_vae(ours, ref, video: torch.Tensor) -> float:
    """Every parameter equal; encode + decode of `video` equal; returns the max abs output difference."""
    ref_state = ref.state_dict()
    assert ours.state_dict().keys() == ref_state.keys()
    assert all(torch.equal(v, ref_state[k]) for k, v in ours.state_dict().items())
    with torch.no_grad():
        a = ours.decode(ours.encode(video).latent_dist.mean).sample
        b = ref.decode(ref.encode(video).latent_dist.mean).sample
    assert b.abs().max() > 0.01
    return (a - b).abs().max().item()


def random_vae(**config):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan(**config).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.normal_(0, 0.3)
    return vae


def test_original_wan21_vae_file_loads_as_diffusers(tmp_path):
    """Upstream names (checked against diffusers' own converter) in a .pth load key for key."""
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    from motionstream.models.wan_vae import load_wan_autoencoder

    ref = random_vae(**WAN21_SMALL)
    names = wan21_original_names(4, [1, 2, 4, 4], 2, [False, True, True])
    to_diffusers = convert_wan_vae_to_diffusers({n: n for n in names})     # diffusers name -> original name
    assert set(to_diffusers) == set(ref.state_dict()) and len(names) == len(to_diffusers)
    original = {orig: ref.state_dict()[diff].clone() for diff, orig in to_diffusers.items()}
    torch.save(original, tmp_path / "Wan2.1_VAE.pth")
    ours = load_wan_autoencoder(tmp_path / "Wan2.1_VAE.pth", config=WAN21_SMALL)
    err = assert_same_vae(ours, ref, torch.rand(1, 3, 5, 16, 16) * 2 - 1)
    assert err == 0.0


def test_original_wan22_vae_file_loads_as_diffusers(tmp_path):
    from motionstream.models.wan_vae import load_wan_autoencoder

    ref = random_vae(**WAN22_SMALL)
    original = {wan22_original_name(k): v.clone() for k, v in ref.state_dict().items()}
    assert any(".downsamples.0.downsamples.1.resample." in k for k in original)   # the nested upstream layout
    torch.save(original, tmp_path / "Wan2.2_VAE.pth")
    ours = load_wan_autoencoder(tmp_path / "Wan2.2_VAE.pth", config=WAN22_SMALL)
    assert assert_same_vae(ours, ref, torch.rand(1, 3, 5, 32, 32) * 2 - 1) == 0.0


def test_original_vae_file_picks_the_upstream_config_and_refuses_pickles(tmp_path):
    """Without a config, the latent width picks Wan 2.1's or Wan 2.2's upstream config (meta tensors:
    no allocation); a .pth with anything but tensors is refused by torch.load(weights_only=True)."""
    from diffusers import AutoencoderKLWan

    from motionstream.models.wan_vae import WAN_VAE_CONFIGS, wan_vae_original_to_diffusers

    for z, config in WAN_VAE_CONFIGS.items():
        with torch.device("meta"):
            vae = AutoencoderKLWan(**config)
        assert vae.config.z_dim == z
        assert vae.state_dict()["post_quant_conv.weight"].shape[0] == z
    with torch.device("meta"):
        full = AutoencoderKLWan()
    names = wan21_original_names(96, [1, 2, 4, 4], 2, [False, True, True])     # Wan2.1_VAE.pth at full size
    assert set(wan_vae_original_to_diffusers({n: n for n in names})) == set(full.state_dict())

    import argparse

    torch.save({"conv2.weight": argparse.Namespace(cmd="rm -rf /")}, tmp_path / "evil.pth")   # any non-tensor global
    from motionstream.models.wan_vae import load_wan_autoencoder

    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_wan_autoencoder(tmp_path / "evil.pth")
