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
