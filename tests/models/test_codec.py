"""Embedded codec: shapes, causality, streaming equivalence, TAEHV layout, weights folders, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from motionstream.models.checkpoints import WeightsNotFound
from motionstream.models.codec import VideoCodec, frames_to_tensor, load_codec, tensor_to_frames
from motionstream.models.tiny_decoder import TinyDecoderConfig, TinyVideoAutoencoder
from motionstream.models.vae import CausalVAE, StreamState, VAEConfig

SMALL = VAEConfig(encoder_widths=[8, 16], decoder_widths=[16, 8])
TINY = TinyDecoderConfig(decoder_widths=[16, 8, 8, 8], patch_size=2, decoder_space_upscale=[True, True, False],
                         blocks_per_stage=1)
ATOL = 1e-5


@pytest.fixture
def vae() -> CausalVAE:
    torch.manual_seed(0)
    return CausalVAE(SMALL).eval()


def video(t: int = 9, h: int = 32, w: int = 48, seed: int = 1) -> torch.Tensor:
    return torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_vae_shapes_follow_wan_layout(vae):
    x = video(9, 32, 48)
    mean, logvar = vae.encode(x)
    assert mean.shape == logvar.shape == (1, 16, 3, 4, 6)
    assert vae.decode(mean).shape == x.shape
    assert vae.encode(video(1))[0].shape == (1, 16, 1, 4, 6)
    with pytest.raises(ValueError, match="1 \\+ 4n"):
        vae.encode(video(8))
    with pytest.raises(ValueError, match="multiples of 8"):
        vae.encode(video(9, 30, 48))


@torch.no_grad()
def test_encoder_is_causal_and_first_frame_alone(vae):
    x = video(9)
    full = vae.encode(x)[0]
    # latent frame 0 depends on video frame 0 only
    assert torch.allclose(vae.encode(x[:, :, :1])[0], full[:, :, :1], atol=ATOL)
    # changing frames 5..8 (latent frame 2) leaves latent frames 0-1 unchanged, and changes frame 2
    y = x.clone()
    y[:, :, 5:] = -y[:, :, 5:]
    other = vae.encode(y)[0]
    assert torch.allclose(other[:, :, :2], full[:, :, :2], atol=ATOL)
    assert not torch.allclose(other[:, :, 2], full[:, :, 2], atol=1e-3)


@torch.no_grad()
def test_streaming_encode_equals_full(vae):
    x = video(13)
    full = vae.encode(x)[0]
    state = StreamState()
    parts = [vae.encode(x[:, :, :1], state)[0], vae.encode(x[:, :, 1:9], state)[0], vae.encode(x[:, :, 9:], state)[0]]
    assert torch.allclose(torch.cat(parts, 2), full, atol=ATOL)


@torch.no_grad()
def test_decoder_is_causal(vae):
    z = torch.randn(1, 16, 3, 4, 6)
    full = vae.decode(z)
    z2 = z.clone()
    z2[:, :, 2] += 1
    out2 = vae.decode(z2)
    assert torch.allclose(out2[:, :, :5], full[:, :, :5], atol=ATOL)
    assert not torch.allclose(out2[:, :, 5:], full[:, :, 5:], atol=1e-3)


def make_codec(vae: CausalVAE) -> VideoCodec:
    torch.manual_seed(1)
    tiny = TinyVideoAutoencoder(TINY).eval()
    return VideoCodec(vae, torch.randn(16).tolist(), (torch.rand(16) + 0.5).tolist(), tiny)


@pytest.mark.parametrize("tiny", [False, True])
@torch.no_grad()
def test_stream_decoder_chunks_equal_whole_clip(vae, tiny):
    codec = make_codec(vae)
    z = torch.randn(1, 16, 6, 4, 6)
    dec = codec.stream_decoder(tiny=tiny)
    whole = dec.decode_chunk(z)
    assert whole.shape == (1, 3, 21, 32, 48)
    assert whole.min() >= -1 and whole.max() <= 1
    dec.reset()
    chunks = [dec.decode_chunk(z[:, :, a:b]) for a, b in [(0, 1), (1, 3), (3, 4), (4, 6)]]
    assert [c.shape[2] for c in chunks] == [1, 8, 4, 8]
    assert torch.allclose(torch.cat(chunks, 2), whole, atol=ATOL)
    # a fresh stream starts from scratch again (reset really clears the memory)
    dec.reset()
    assert torch.allclose(dec.decode_chunk(z[:, :, :3]), whole[:, :, :9], atol=ATOL)
    if not tiny:
        assert torch.allclose(codec.decode(z), whole, atol=ATOL)


@torch.no_grad()
def test_codec_normalises_latents(vae):
    codec = make_codec(vae)
    x = video(5)
    raw = vae.encode(x)[0]
    z = codec.encode(x)
    assert torch.allclose(z * codec.latent_std + codec.latent_mean, raw, atol=ATOL)
    assert (codec.spatial_stride, codec.temporal_stride, codec.latent_channels) == (8, 4, 16)


@torch.no_grad()
def test_linear_stream_encoder_is_the_encoder_without_its_nonlinear_residual(vae):
    """codec.stream_encoder(linear=True): chunk by chunk, the encoder's linear path alone, normalised. It is
    the full encode once the residual head is silenced, and not before."""
    codec = make_codec(vae)
    x = video(13)
    linear = codec.stream_encoder(linear=True)
    chunks = torch.cat([linear.encode_chunk(x[:, :, a:b]) for a, b in [(0, 5), (5, 9), (9, 13)]], 2)
    torch.nn.init.normal_(vae.encoder.head.weight, std=0.1)
    assert not torch.allclose(chunks, codec.encode(x), atol=1e-2)         # the residual adds to the mean
    torch.nn.init.zeros_(vae.encoder.head.weight)
    torch.nn.init.zeros_(vae.encoder.head.bias)
    torch.testing.assert_close(chunks, codec.encode(x), rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="1 \\+ 4n"):
        codec.stream_encoder(linear=True).encode_chunk(x[:, :, :4])
    no_linear = VideoCodec(CausalVAE(replace(SMALL, linear_path=False)))
    with pytest.raises(ValueError, match="no linear path"):
        no_linear.stream_encoder(linear=True)


def test_frames_tensor_roundtrip():
    frames = np.random.default_rng(0).integers(0, 256, (3, 8, 16, 3), dtype=np.uint8)
    x = frames_to_tensor(frames)
    assert x.shape == (1, 3, 3, 8, 16) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(tensor_to_frames(x), frames)
    with pytest.raises(ValueError, match="uint8"):
        frames_to_tensor(frames.astype(np.float32))


# ---------------------------------------------------------------------------- TAEHV layout
def taew2_1_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of madebyollin/taehv's TAEHV(checkpoint 'taew2_1') state dict, written out from
    its module list (not from our class): encoder 0..17, decoder 0..22."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(prefix, n_in, n_out, k=3, bias=True):
        shapes[f"{prefix}.weight"] = (n_out, n_in, k, k)
        if bias:
            shapes[f"{prefix}.bias"] = (n_out,)

    def memblock(prefix, n):
        conv(f"{prefix}.conv.0", 2 * n, n)
        conv(f"{prefix}.conv.2", n, n)
        conv(f"{prefix}.conv.4", n, n)

    conv("encoder.0", 3, 64)
    for s, base in enumerate([2, 7, 12]):
        conv(f"encoder.{base}.conv", 64 * (2 if s < 2 else 1), 64, k=1, bias=False)       # TPool
        conv(f"encoder.{base + 1}", 64, 64, bias=False)                                   # stride-2 conv
        for j in range(3):
            memblock(f"encoder.{base + 2 + j}", 64)
    conv("encoder.17", 64, 16)
    nf = [256, 128, 64, 64]
    conv("decoder.1", 16, 256)
    for s, base in enumerate([3, 9, 15]):
        for j in range(3):
            memblock(f"decoder.{base + j}", nf[s])
        conv(f"decoder.{base + 4}.conv", nf[s], nf[s] * (1 if s == 0 else 2), k=1, bias=False)  # TGrow
        conv(f"decoder.{base + 5}", nf[s], nf[s + 1], bias=False)
    conv("decoder.22", 64, 3)
    return shapes


def test_taew2_1_state_dict_loads_strictly(tmp_path):
    from safetensors.torch import save_file

    from motionstream.models.wan_vae import load_taehv_state

    gen = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(*shape, generator=gen) * 0.05 for k, shape in taew2_1_layout().items()}
    path = tmp_path / "taew2_1.safetensors"
    save_file(sd, str(path))
    model = TinyVideoAutoencoder(TinyDecoderConfig.taew2_1())
    model.load_state_dict(load_taehv_state(path, model), strict=True)
    assert torch.equal(model.decoder[22].weight, sd["decoder.22.weight"])
    # older files carry a stride-2 TGrow in the first stage: the last time step's channels are kept
    sd["decoder.7.conv.weight"] = torch.randn(512, 256, 1, 1, generator=gen)
    save_file(sd, str(path))
    model.load_state_dict(load_taehv_state(path, model), strict=True)
    assert torch.equal(model.decoder[7].conv.weight, sd["decoder.7.conv.weight"][256:])
    out = model.eval().decode_video(torch.randn(1, 16, 2, 4, 4))
    assert out.shape == (1, 3, 5, 32, 32)
    with pytest.raises(WeightsNotFound, match="nowhere.safetensors"):
        load_taehv_state(tmp_path / "nowhere.safetensors", model)


# ---------------------------------------------------------------------------- weights folders
def test_load_codec_missing_weights_names_path(tmp_path):
    missing = tmp_path / "no-such-vae"
    with pytest.raises(WeightsNotFound, match=str(missing)):
        load_codec(missing, None)


def test_export_and_load_codec_roundtrip(tmp_path, vae):
    from motionstream.config import to_dict
    from motionstream.models.checkpoints import save_model_dir
    from motionstream.models.codec import load_tiny_decoder

    cfg = to_dict(SMALL)
    cfg["latent_mean"], cfg["latent_std"] = [0.5] * 16, [2.0] * 16
    save_model_dir(tmp_path / "vae", vae.state_dict(), {"kind": "causal-vae", "config": cfg})
    tiny = TinyVideoAutoencoder(TINY)
    save_model_dir(tmp_path / "tiny", tiny.state_dict(), {"kind": "tiny-decoder", "config": to_dict(TINY)})
    codec = load_codec(tmp_path / "vae", tmp_path / "tiny")
    x = video(5)
    z = codec.encode(x)
    with torch.no_grad():
        raw = codec.vae.encode(x)[0]
    assert torch.allclose(z, (raw - 0.5) / 2.0, atol=ATOL)
    assert codec.stream_decoder(tiny=True).decode_chunk(z).shape == x.shape
    assert isinstance(load_tiny_decoder(tmp_path / "tiny"), TinyVideoAutoencoder)


# ---------------------------------------------------------------------------- training resume
TRAIN_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, torch
    torch.set_num_threads(1)
    import motionstream.train.codec as tc
    import motionstream.train.vae as tv
    from motionstream.models.vae import VAEConfig
    def clip(seed, n, w, h):
        r = np.random.default_rng(seed)
        return r.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    tc.world_seeds = lambda split, n: list(range(n)) if split == "train" else [10**6 + i for i in range(n)]
    sec = tv.VAESection(model=VAEConfig(encoder_widths=[8, 8], decoder_widths=[8, 8]))
    t = sec.train
    t.crop_width = t.crop_height = 16; t.num_frames = 5; t.batch_size = 1; t.clip_pool = 2; t.clip_frames = 5
    t.eval_clips = 1; t.eval_frames = 5; t.checkpoint_every_steps = 1; t.gan_start_step = 2
    res = tv.train_vae(sec, sys.argv[1], steps=int(sys.argv[2]), clip_fn=clip, video_size=(16, 16), progress=False)
    print("STEP", res["step"])
""")


@pytest.mark.slow
def test_vae_training_resumes_after_kill(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, str(script), str(run), "100000"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (run / "state.json").is_file():
            import json
            if json.loads((run / "state.json").read_text())["step"] >= 3:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    import json
    killed_at = json.loads((run / "state.json").read_text())["step"]
    assert killed_at >= 3
    out = subprocess.run([sys.executable, str(script), str(run), "2"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    step = int(out.stdout.split("STEP")[-1])
    assert killed_at + 2 <= step <= killed_at + 3          # continued, lost at most the step in flight
    log = (run / "train.log").read_text()
    assert f"resume step={step - 2}" in log


@pytest.mark.slow
def test_tiny_decoder_training_and_export(tmp_path, vae):
    from motionstream.config import to_dict
    from motionstream.models.checkpoints import save_model_dir
    from motionstream.train import tiny_decoder as tt

    cfg = to_dict(SMALL)
    cfg["latent_mean"], cfg["latent_std"] = [0.0] * 16, [1.0] * 16
    save_model_dir(tmp_path / "vae", vae.state_dict(), {"kind": "causal-vae", "config": cfg})
    sec = tt.TinyDecoderSection(model=TINY)
    t = sec.train
    t.crop_width = t.crop_height = 16
    t.num_frames = t.clip_frames = t.eval_frames = 5
    t.batch_size, t.clip_pool, t.eval_clips, t.checkpoint_every_steps, t.warmup = 1, 2, 1, 1, 1
    t.teacher_weight = 0.5

    def clip(seed, n, w, h):
        return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)

    import motionstream.train.codec as tc
    orig = tc.world_seeds
    tc.world_seeds = lambda split, n: list(range(n))
    try:
        res = tt.train_tiny_decoder(sec, tmp_path / "run", tmp_path / "vae", steps=2, clip_fn=clip,
                                    video_size=(16, 16), progress=False)
    finally:
        tc.world_seeds = orig
    assert res["step"] == 2 and np.isfinite(res["psnr"])
    out = tt.export_tiny_decoder(tmp_path / "run", tmp_path / "tiny")
    codec = load_codec(tmp_path / "vae", out)
    assert codec.stream_decoder(tiny=True).decode_chunk(torch.zeros(1, 16, 2, 2, 2)).shape == (1, 3, 5, 16, 16)


def low_rank_clip(seed: int, t: int = 9, h: int = 32, w: int = 48, rank: int = 5) -> np.ndarray:
    """A static clip whose 8x8 RGB patches all lie in a `rank`-dimensional affine subspace."""
    r = np.random.default_rng(0)                       # same patterns for every clip
    patterns = r.normal(0, 1, (rank, 8, 8, 3))
    coef = np.random.default_rng(seed).uniform(-1, 1, (h // 8, w // 8, rank))
    img = 128 + 20 * np.einsum("yxr,rabc->yaxbc", coef, patterns).reshape(h, w, 3)
    return np.repeat(np.clip(img, 0, 255).round().astype(np.uint8)[None], t, 0)


def test_pca_initialisation_makes_the_best_linear_codec():
    from motionstream.train.losses_codec import psnr
    from motionstream.train.vae import init_linear_from_pca

    torch.manual_seed(0)
    vae = CausalVAE(SMALL).eval()
    lam = init_linear_from_pca(vae, [low_rank_clip(s) for s in range(6)])
    assert lam[0] > lam[4] > 100 * lam[5]               # 5 real components, the rest is rounding noise
    x = frames_to_tensor(low_rank_clip(99))
    with torch.no_grad():
        z = vae.encode(x)[0]
        y = vae.decode(z)
        assert float(psnr(y, x)) > 45
        assert float(psnr(vae.decode(vae.encode(x[:, :, :1])[0]), x[:, :, :1])) > 45   # frame 0 alone
        assert torch.allclose(z[:, :5].std(), torch.tensor(1.0), atol=0.5)           # whitened


def test_tiny_linear_skip_starts_as_the_vae_linear_path(vae):
    cfg = TinyDecoderConfig(**{**TINY.__dict__, "linear_skip": True})
    tiny = TinyVideoAutoencoder(cfg).eval()
    mean, std = torch.randn(16), torch.rand(16) + 0.5
    tiny.init_linear_from_vae(vae.decoder.linear, mean, std)
    z = torch.randn(1, 16, 3, 4, 6)
    with torch.no_grad():
        want = (vae.decoder.linear_frames(z * std.view(1, -1, 1, 1, 1) + mean.view(1, -1, 1, 1, 1)) + 1) / 2
        got = tiny.decode_video(z)
    assert got.shape == want.shape == (1, 3, 9, 32, 48)
    assert torch.allclose(got, want.clamp(0, 1), atol=1e-5)


def test_codec_roundtrip_command(tmp_path, vae, capsys):
    from motionstream.cli import main
    from motionstream.config import to_dict
    from motionstream.models.checkpoints import save_model_dir
    from motionstream.video import read_video, write_video

    cfg = to_dict(SMALL)
    cfg["latent_mean"], cfg["latent_std"] = [0.0] * 16, [1.0] * 16
    save_model_dir(tmp_path / "vae", vae.state_dict(), {"kind": "causal-vae", "config": cfg})
    save_model_dir(tmp_path / "tiny", TinyVideoAutoencoder(TINY).state_dict(), {"kind": "tiny-decoder", "config": to_dict(TINY)})
    src = tmp_path / "in.mp4"
    write_video(src, np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8), 16)
    out = tmp_path / "out.mp4"
    args = [str(src), "-o", str(out), "--vae", str(tmp_path / "vae"), "--tiny-decoder", str(tmp_path / "tiny"),
            "--width", "32", "--height", "32", "--threads", "1"]
    assert main(["codec", "roundtrip", *args, "--tiny"]) == 0
    assert "PSNR" in capsys.readouterr().out
    frames, _ = read_video(out)
    assert frames.shape == (5, 32, 64, 3)                         # 1 + 4n frames, original | reconstruction
    assert main(["codec", "roundtrip", *args, "--vae", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_lpips_loss_from_local_alex_weights(tmp_path):
    from safetensors.torch import save_file

    from motionstream.train.losses_codec import LPIPSLoss

    gen = torch.Generator().manual_seed(0)
    convs = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}
    sd = {}
    for i, (layer, (co, ci, k)) in enumerate(convs.items()):
        sd[f"features.{layer}.weight"] = torch.randn(co, ci, k, k, generator=gen) * (2 / (ci * k * k)) ** 0.5
        sd[f"features.{layer}.bias"] = torch.zeros(co)
        sd[f"lin{i}.model.1.weight"] = torch.rand(1, co, 1, 1, generator=gen)
    save_file(sd, str(tmp_path / "alex.safetensors"))
    loss = LPIPSLoss(str(tmp_path / "alex.safetensors"))
    a = video(1, 64, 64, seed=1)
    b = video(1, 64, 64, seed=2).requires_grad_(True)
    assert float(loss(a, a)) == 0.0
    d = loss(b, a)
    d.backward()
    assert float(d.detach()) > 0 and b.grad.abs().sum() > 0
    with pytest.raises(FileNotFoundError, match="nope"):
        LPIPSLoss(str(tmp_path / "nope.safetensors"))


def test_temporal_difference_loss_ignores_steady_errors_and_counts_flicker():
    from motionstream.train.losses_codec import reconstruction_loss, temporal_difference_l1

    target = torch.rand(1, 3, 5, 8, 8) * 2 - 1
    offset = 0.1 * torch.randn(1, 3, 1, 8, 8)
    steady = target + offset                                   # the same error in every frame
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0]).view(1, 1, 5, 1, 1)
    flicker = target + offset * signs                          # same size, sign flips per frame
    assert temporal_difference_l1(steady, target) < 1e-6
    assert temporal_difference_l1(flicker, target) == pytest.approx(2 * offset.abs().mean().item(), rel=1e-5)
    base, parts = reconstruction_loss(flicker, target, 1.0, 1.0, 0.0)
    with_dt, parts_dt = reconstruction_loss(flicker, target, 1.0, 1.0, 0.0, temporal_weight=0.5)
    assert "dt" not in parts and parts_dt["dt"] > 0
    assert with_dt.item() == pytest.approx(base.item() + 0.5 * parts_dt["dt"], rel=1e-5)


def test_train_vae_reads_set_overrides(monkeypatch, tmp_path, capsys):
    import motionstream.train.vae as tv
    from motionstream.cli import main

    seen = []
    monkeypatch.setattr(tv, "train_vae", lambda sec, *a, **k: seen.append(sec) or {"step": 0, "psnr": 0.0, "ssim": 0.0})
    assert main(["train", "vae", "--run", str(tmp_path / "run"), "--set", "vae.train.temporal_weight=0.5"]) == 0
    assert seen[0].train.temporal_weight == 0.5
    assert main(["train", "vae", "--run", str(tmp_path / "run"), "--set", "vae.train.temporal_wieght=0.5"]) != 0
    assert "no key 'temporal_wieght'" in capsys.readouterr().err and len(seen) == 1
