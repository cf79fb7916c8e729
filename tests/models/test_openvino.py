"""The OpenVINO lever: ChunkBlocks (forward_chunk's blocks as a pure function), OpenVINORunner, and the
tiny decoder's exported step (codec.stream_decoder(openvino=True))."""

from __future__ import annotations

import copy
import ctypes
import faulthandler
import gc

import pytest
import torch

from test_codec import make_codec, SMALL
from test_dit_causal import LATENT_HW, random_cond, random_model, small_cfg

from motionstream.models.dit import ChunkBlocks
from motionstream.models.openvino_runner import OpenVINORunner, _SignalStack
from motionstream.models.vae import CausalVAE

CHUNK_FRAMES = 2


class CountingRunner:
    """A chunk_runner that calls `inner` and counts its calls (the hook must really be taken)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, *inputs):
        self.calls += 1
        return self.inner(*inputs)


@torch.no_grad()
def stream(model, chunks: int = 4, masked: bool = True) -> tuple[torch.Tensor, object]:
    """Velocities of `chunks` chunks (a denoising pass, then the write pass) through a c2s1w1 cache that
    fills its sink, its window, then rolls; a text mask with padding. Returns (velocities, cache)."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(3)
    cache = model.new_cache(1, LATENT_HW, CHUNK_FRAMES, 1, 1)
    cond = random_cond(cfg, 1, CHUNK_FRAMES)
    text = torch.randn(1, 5, cfg.text_dim, generator=g)
    mask = torch.tensor([[True, True, True, False, False]]) if masked else None
    out = []
    for _ in range(chunks):
        x = torch.randn(1, cfg.latent_channels, CHUNK_FRAMES, *LATENT_HW, generator=g)
        out.append(model.forward_chunk(x, torch.full((1, CHUNK_FRAMES), 0.7), text, mask, cond, cache, False))
        out.append(model.forward_chunk(x, torch.zeros(1, CHUNK_FRAMES), text, mask, cond, cache, True))
    return torch.cat(out, 2), cache


def with_runner(model, runner):
    copied = copy.copy(model)
    copied.chunk_runner = runner
    return copied


def test_chunk_blocks_stream_like_the_eager_blocks_and_write_the_same_cache():
    model = random_model(small_cfg())
    ref, ref_cache = stream(model)
    runner = CountingRunner(ChunkBlocks(model))
    got, cache = stream(with_runner(model, runner))
    assert runner.calls == 8
    assert cache.num_written == ref_cache.num_written == 4              # sink, window, then two rolls
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    for name in ("keys", "values", "window_raw"):
        torch.testing.assert_close(getattr(cache, name), getattr(ref_cache, name), atol=1e-5, rtol=1e-5)


def test_the_text_mask_reaches_the_chunk_blocks():
    model = random_model(small_cfg())
    masked, _ = stream(with_runner(model, ChunkBlocks(model)), chunks=1)
    unmasked, _ = stream(with_runner(model, ChunkBlocks(model)), chunks=1, masked=False)
    assert (masked - unmasked).abs().max() > 1e-3


def test_openvino_runs_the_chunk_blocks_to_float_tolerance_at_every_cache_fill():
    model = random_model(small_cfg())
    ref, ref_cache = stream(model)
    runner = OpenVINORunner(ChunkBlocks(model), precision="f32")
    got, cache = stream(with_runner(model, runner))
    assert runner.inference_precision == "f32"
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cache.keys, ref_cache.keys, atol=1e-4, rtol=1e-4)


def test_grad_keeps_the_eager_blocks():
    model = random_model(small_cfg())
    runner = CountingRunner(ChunkBlocks(model))
    cache = model.new_cache(1, LATENT_HW, CHUNK_FRAMES, 1, 1)
    cfg = model.cfg
    x = torch.randn(1, cfg.latent_channels, CHUNK_FRAMES, *LATENT_HW, requires_grad=True)
    out = with_runner(model, runner).forward_chunk(x, torch.zeros(1, CHUNK_FRAMES), torch.randn(1, 3, cfg.text_dim),
                                                   None, random_cond(cfg, 1, CHUNK_FRAMES), cache, False)
    out.sum().backward()
    assert runner.calls == 0 and x.grad is not None


def test_openvino_precision_is_validated():
    with pytest.raises(ValueError, match="precision"):
        OpenVINORunner(torch.nn.Identity(), precision="int4")


@torch.no_grad()
def test_openvino_tiny_decoder_streams_like_torch_chunk_after_chunk():
    torch.manual_seed(0)
    codec = make_codec(CausalVAE(SMALL).eval())
    z = torch.randn(1, 16, 6, 4, 6)
    bounds = [(0, 1), (1, 3), (3, 4), (4, 6)]                           # chunk sizes change: dynamic shapes
    torch_dec, ov_dec = codec.stream_decoder(tiny=True), codec.stream_decoder(tiny=True, openvino=True)
    ref = [torch_dec.decode_chunk(z[:, :, a:b]) for a, b in bounds]
    got = [ov_dec.decode_chunk(z[:, :, a:b]) for a, b in bounds]
    assert [c.shape for c in got] == [c.shape for c in ref]
    torch.testing.assert_close(got[0], ref[0])                          # the first chunk runs in torch
    runner = codec._openvino_decoders["auto"]
    assert runner is not None and runner.inference_precision in ("bf16", "f32")
    tolerance = 0.05 if runner.inference_precision == "bf16" else 1e-4  # outputs in [-1, 1]
    for g, r in zip(got[1:], ref[1:]):
        assert (g - r).abs().max() < tolerance
    assert codec.stream_decoder(tiny=True, openvino=True).decode_chunk(z[:, :, :1]).shape == ref[0].shape
    assert codec._openvino_decoders == {"auto": runner}                 # converted once per codec


def signal_stack() -> tuple[int, int, int]:
    """The calling thread's alternate signal stack (address, flags, size)."""
    stack = _SignalStack()
    ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack))
    return stack.ss_sp or 0, stack.ss_flags, stack.ss_size


def test_compiled_models_leave_the_threads_signal_stack_alone():
    """OpenVINO's compile installs a signal stack of its own; freed out of order, its models used to leave
    the thread on a freed one, and the next signal killed the process (the whole suite crashed)."""
    faulthandler.enable()                               # the thread's own alternate stack (pytest has one too)
    before = signal_stack()
    runners = [OpenVINORunner(torch.nn.Linear(8, 8), "f32") for _ in range(2)]
    for runner in runners:
        runner(torch.randn(2, 8))
        assert signal_stack() == before
    del runners[0]
    gc.collect()
    assert signal_stack() == before
