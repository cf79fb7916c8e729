"""The CLIP image branch end to end: the encoder read as Wan reads it, the tokens carried through the KV
cache (context only, never the rolling self-attention cache) and through the streaming engine."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from stream_fixtures import DIT, FPS, HashTextEncoder, make_model_folders, sample_image
from test_dit_causal import LATENT_HW, random_cond, random_model, small_cfg

from motionstream.models.dit import DiTConfig, chunk_attention_mask

pytestmark = pytest.mark.usefixtures("one_thread")
CLIP = dict(hidden_size=8, intermediate_size=16, num_hidden_layers=3, num_attention_heads=2, image_size=16,
            patch_size=8, projection_dim=8)
CLIP_TOKENS = 1 + (CLIP["image_size"] // CLIP["patch_size"]) ** 2


@pytest.fixture(scope="module")
def clip_model():
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    return CLIPVisionModel(CLIPVisionConfig(**CLIP))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, clip_model):
    """A CLIPVisionModel folder with the keys as diffusers' Wan I2V image_encoder/ folders have them
    (written by transformers 4: `vision_model.` prefix)."""
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("clip") / "image_encoder"
    clip_model.save_pretrained(str(path))
    legacy = {k if k.startswith("vision_model.") else f"vision_model.{k}": v.contiguous()
              for k, v in clip_model.state_dict().items()}
    save_file(legacy, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


@torch.no_grad()
def test_clip_encoder_returns_the_residual_stream_before_the_last_block(clip_dir, clip_model):
    from motionstream.models.image_encoder import CLIP_MEAN, CLIP_STD, CLIPImageEncoder

    enc = CLIPImageEncoder(clip_dir)
    loaded = enc.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in clip_model.state_dict().items())
    image = torch.rand(2, 3, 24, 40) * 2 - 1
    tokens = enc.encode(image)
    assert tokens.shape == (2, CLIP_TOKENS, CLIP["hidden_size"])
    # independently: bicubic to 16x16, CLIP normalisation, embeddings + pre-LN + the first L-1 layers
    vm = getattr(enc.model, "vision_model", enc.model)       # transformers 5 flattened CLIPVisionModel
    x = torch.nn.functional.interpolate(image, size=(16, 16), mode="bicubic", align_corners=False)
    x = ((x + 1) / 2 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    h = vm.pre_layrnorm(vm.embeddings(x))
    for layer in vm.encoder.layers[:-1]:
        h = layer(h, None)
        h = h[0] if isinstance(h, tuple) else h
    torch.testing.assert_close(tokens, h, atol=1e-5, rtol=1e-5)
    assert (tokens - enc.model(pixel_values=x).last_hidden_state).abs().max() > 1e-3


def test_missing_clip_folder_names_the_path(tmp_path):
    from motionstream.models.checkpoints import WeightsNotFound
    from motionstream.models.image_encoder import CLIPImageEncoder

    with pytest.raises(WeightsNotFound, match="nowhere"):
        CLIPImageEncoder(tmp_path / "nowhere")


@torch.no_grad()
def test_streaming_with_image_tokens_equals_masked_full_sequence():
    """Image tokens are cross-attention context: the cache path equals the masked full sequence, the
    self-attention buffers keep their size, and the image changes the output."""
    c, s, w, n = 2, 1, 1, 5
    cfg = small_cfg(image_dim=6)
    model = random_model(cfg, seed=4)
    g = torch.Generator().manual_seed(9)
    b, frames = 2, c * n
    clean = torch.randn(b, cfg.latent_channels, frames, *LATENT_HW, generator=g)
    noisy = torch.randn(b, cfg.latent_channels, frames, *LATENT_HW, generator=g)
    t_noisy, t_clean = torch.rand(b, frames, generator=g), torch.zeros(b, frames)
    context = torch.randn(b, 5, cfg.text_dim, generator=g)
    cond = replace(random_cond(cfg, b, frames), image_embeds=torch.randn(b, 7, 6, generator=g))
    cache = model.new_cache(b, LATENT_HW, c, s, w)
    buffers = (cache.keys.shape, cache.values.shape, cache.window_raw.shape)
    noisy_out = []
    for i in range(n):
        sl, cc = slice(i * c, (i + 1) * c), cond.chunk(i * c, (i + 1) * c)
        assert cc.image_embeds is cond.image_embeds
        noisy_out.append(model.forward_chunk(noisy[:, :, sl], t_noisy[:, sl], context, None, cc, cache, False))
        model.forward_chunk(clean[:, :, sl], t_clean[:, sl], context, None, cc, cache, True)
        assert len(cache.cross_kv[0]) == 4            # text k, v + image k_img, v_img per layer
    assert (cache.keys.shape, cache.values.shape, cache.window_raw.shape) == buffers
    assert cache.keys.shape[3] == (s + w + 1) * cache.chunk_tokens
    mask = chunk_attention_mask(frames, c, s, w, model.tokens_per_frame(LATENT_HW), clean_context=True)
    full = model(torch.cat([clean, noisy], 2), torch.cat([t_clean, t_noisy], 1), context, None, cond, mask)
    ref = full[:, :, frames:]
    assert (torch.cat(noisy_out, 2) - ref).abs().max() < 1e-4 * ref.abs().max()
    other = replace(cond, image_embeds=torch.zeros_like(cond.image_embeds))
    changed = model(torch.cat([clean, noisy], 2), torch.cat([t_clean, t_noisy], 1), context, None, other, mask)
    assert (changed - full).abs().max() > 1e-2


@pytest.fixture(scope="module")
def codec(tmp_path_factory):
    from motionstream.models.codec import load_codec

    folders = make_model_folders(tmp_path_factory.mktemp("image_stream_models"))
    return load_codec(folders["vae"], folders["tiny"])


@torch.no_grad()
def test_engine_carries_the_clip_tokens(codec, clip_dir):
    from motionstream.models.image_encoder import CLIPImageEncoder
    from motionstream.stream.engine import StreamConfig, StreamingGenerator

    cfg = DiTConfig(**DIT, image_dim=CLIP["hidden_size"])
    model = random_model(cfg, seed=2)
    with pytest.raises(ValueError, match="image_encoder"):
        StreamingGenerator(model, codec, HashTextEncoder(), StreamConfig(), fps=FPS)
    encoder = CLIPImageEncoder(clip_dir)

    def run(zero_image_tokens: bool) -> torch.Tensor:
        gen = StreamingGenerator(model, codec, HashTextEncoder(), StreamConfig(overlap_decode=False), fps=FPS,
                                 image_encoder=encoder)
        gen.start(sample_image(), "a bright square")
        assert gen.image_embeds.shape == (1, CLIP_TOKENS, CLIP["hidden_size"])
        if zero_image_tokens:
            gen.image_embeds = torch.zeros_like(gen.image_embeds)
        out = torch.cat([gen.generate_latents() for _ in range(2)], 2)
        assert gen.cache.context_ref[1] is gen.image_embeds   # the cross-attention K/V were built from them
        return out

    base = run(False)
    assert torch.isfinite(base).all()
    assert torch.equal(base, run(False))
    assert (base - run(True)).abs().max() > 1e-4


@torch.no_grad()
def test_sampler_gives_every_guidance_branch_the_image_tokens():
    """sample(): the text-dropped and motion-dropped branches of Eq. 2 keep the CLIP tokens (as upstream
    Wan I2V keeps clip_fea in its unconditional branch)."""
    from motionstream.diffusion.sampling import TeacherParam, sample

    cfg = small_cfg(image_dim=6)
    model = random_model(cfg, seed=5)
    seen = []
    model.img_emb.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    g = torch.Generator().manual_seed(2)
    cond = replace(random_cond(cfg, 1, 3), image_embeds=torch.randn(1, 7, 6, generator=g))
    text = (torch.randn(1, 5, cfg.text_dim, generator=g), None)
    null = (torch.zeros(1, 5, cfg.text_dim), None)
    out = sample(model, cond, text, null, TeacherParam(), steps=2, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 2 * 3 and all(torch.equal(s, cond.image_embeds) for s in seen)
    other = sample(model, replace(cond, image_embeds=torch.zeros_like(cond.image_embeds)), text, null,
                   TeacherParam(), steps=2, generator=torch.Generator().manual_seed(0))
    assert (other - out).abs().max() > 1e-3
