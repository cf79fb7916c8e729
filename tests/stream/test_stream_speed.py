"""Speed features of the streaming engine: quality rungs (pinned and adaptive), the fused cache pass,
and the machine-normalised measurements (stream/perf.py, eval/stream_speed.py)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from stream_fixtures import FPS, HashTextEncoder, make_model_folders, moving_square, sample_image

from motionstream.stream import perf
from motionstream.stream.engine import AUTO_QUALITY, StreamConfig, StreamingGenerator, load_stream_model, openvino_dit

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models, one torch thread

LADDER = {"2-step": [1.0, 1 / 3], "1-step": [1.0]}


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from motionstream.models.codec import load_codec

    folders = make_model_folders(tmp_path_factory.mktemp("speed_models"))
    model, param, _ = load_stream_model(folders["student"])
    return model, param, load_codec(folders["vae"], folders["tiny"])


def make_gen(parts, **cfg) -> StreamingGenerator:
    model, param, codec = parts
    config = StreamConfig(**{"quality_ladder": dict(LADDER), **cfg})
    gen = StreamingGenerator(model, codec, HashTextEncoder(), config, param, fps=FPS)
    gen.start(sample_image(), "a red square")
    return gen


def passes_per_chunk(gen: StreamingGenerator) -> int:
    with perf.metered(gen.model, "forward_chunk") as meter:
        gen.generate_latents()
    return meter.calls


def test_a_pinned_rung_runs_its_steps(parts):
    assert passes_per_chunk(make_gen(parts)) == 4                       # full: 3 steps + the cache pass
    gen = make_gen(parts, quality="2-step")
    assert gen.quality == "2-step" and passes_per_chunk(gen) == 3
    with pytest.raises(ValueError, match="stream.quality"):
        StreamConfig(quality="no-such-rung")


def test_the_fused_cache_pass_writes_the_cache_on_the_last_step(parts):
    gen = make_gen(parts, fuse_cache_pass=True)
    assert passes_per_chunk(gen) == 3 and gen.cache.num_written == 1
    assert passes_per_chunk(gen) == 3 and gen.cache.num_written == 2
    gen.reset()
    frames = gen.next_chunk()
    assert len(frames) == gen.chunk_num_frames(0) and frames.std() > 0 and gen.cache.num_written == 1


def test_auto_steps_down_only_after_consecutive_slow_chunks(parts):
    gen = make_gen(parts, quality=AUTO_QUALITY, overlap_decode=False)
    assert gen.quality == "full"
    for _ in range(2):
        gen.next_chunk()
    video_s = gen.chunk_num_frames(1) / FPS
    gen.adapt(2 * video_s)                       # one slow chunk: could be noise
    gen.adapt(0.1 * video_s)                     # a fast one resets the count
    gen.adapt(2 * video_s)
    assert gen.quality == "full"
    gen.adapt(2 * video_s)                       # two in a row: one rung down
    assert gen.quality == "2-step" and passes_per_chunk(gen) == 3
    for _ in range(4):
        gen.adapt(2 * video_s)
    assert gen.quality == "1-step"               # the bottom rung stays
    pinned = make_gen(parts, quality="full")
    for _ in range(3):
        pinned.adapt(10 * video_s)
    assert pinned.quality == "full"              # a pinned rung never moves


def test_a_smaller_rung_generates_small_and_returns_frames_of_the_stream_size(parts):
    small = {"small": [1.0]}
    gen = make_gen(parts, quality_ladder=small, quality_scale={"small": 0.5}, quality="small")
    full_grid = make_gen(parts).cache.token_grid
    from stream_fixtures import VIDEO_H, VIDEO_W
    assert (VIDEO_W, VIDEO_H) == (64, 48) and full_grid == (3, 4)
    assert gen.work_size("small") == (32, 32) and gen.cache.token_grid == (2, 2)   # 24 px rounds up to 32

    gen.push(moving_square(40), start_frame=0)
    frames = gen.next_chunk()
    assert frames.shape == (gen.chunk_num_frames(0), VIDEO_H, VIDEO_W, 3)
    # auto reaching a rung of another size waits for the next start: the cache's grid is fixed per stream
    auto = make_gen(parts, quality_ladder=small, quality_scale={"small": 0.5}, quality=AUTO_QUALITY)
    auto.set_quality("small")
    assert auto.quality == "full" and auto.pending_quality == "small" and auto.cache.token_grid == full_grid
    auto.reset()
    assert auto.quality == "small" and auto.cache.token_grid == gen.cache.token_grid


def test_quality_auto_keeps_the_preset_rung_and_adapts():
    from motionstream.stream.engine import stream_config_for

    preset = {"stream": {"quality": "2-step", "quality_ladder": dict(LADDER)}}
    assert (stream_config_for(preset).quality, stream_config_for(preset).adaptive) == ("2-step", False)
    auto = stream_config_for(preset, quality=AUTO_QUALITY)
    assert (auto.quality, auto.adaptive) == ("2-step", True)
    pinned = stream_config_for(preset, quality="full")
    assert (pinned.quality, pinned.adaptive) == ("full", False)


def test_count_flops_is_exact_for_a_matmul_and_counts_cpu_attention():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert perf.count_flops(lambda: a @ b)[1] == 2 * 8 * 16 * 4
    q, k = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 7, 8)
    _, flops = perf.count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, k))
    assert flops == 2 * (2 * 2 * 5 * 8 * 7)                            # q k^T and p v


def test_chunk_flops_and_normalised_figures(parts):
    gen = make_gen(parts)
    gen.next_chunk()
    flops = perf.chunk_flops(gen)
    assert flops.dit > 0 and flops.decode > 0 and flops.frames == gen.chunk_num_frames(1)
    with perf.metered(gen.model, "forward_chunk", count=True) as one_pass:
        gen.generate_latents()
    assert one_pass.calls == 4 and one_pass.flops == flops.dit         # steady state: every chunk costs the same
    norm = perf.NormalisedSpeed(peak_gflops=10.0, flops=flops)
    fps = 5.0
    assert norm.efficiency(fps) == pytest.approx(0.5)
    assert norm.utilisation(fps) == pytest.approx(flops.total * fps / flops.frames / 1e9 / 10.0)


def test_matmul_peak_is_positive_and_keeps_the_thread_count():
    threads = torch.get_num_threads()
    assert perf.matmul_peak_gflops(sizes=(64,), repeats=1, threads=1) > 0
    assert torch.get_num_threads() == threads


# ------------------------------------------------------------------------------ int8 (stream.int8)
def streamed_latents(parts, prompt: str = "a red square", chunks: int = 2, **cfg) -> tuple[StreamingGenerator, torch.Tensor]:
    """The generator and its first `chunks` chunks of latents [1, C_lat, chunks * C, h, w] with a moving square."""
    gen = make_gen(parts, **cfg)
    gen.start(sample_image(), prompt)
    gen.push(moving_square(60), start_frame=0)
    return gen, torch.cat([gen.generate_latents() for _ in range(chunks)], 2)


def test_int8_streams_close_to_fp32_and_leaves_the_weights_alone(parts):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    fp32_gen, fp32 = streamed_latents(parts)
    int8_gen, int8 = streamed_latents(parts, int8=True)
    _, other_prompt = streamed_latents(parts, prompt="a blue sky")
    assert fp32_gen.model is parts[0] and isinstance(fp32_gen.model.blocks[0].ffn[0], torch.nn.Linear)
    assert isinstance(int8_gen.model.blocks[0].ffn[0], DynamicInt8Linear)
    assert type(parts[0].blocks[0].ffn[0]) is torch.nn.Linear           # the shared fp32 model is untouched
    assert int8.shape == fp32.shape and int8.dtype == torch.float32
    assert torch.isfinite(int8).all()
    quant_error = (int8 - fp32).abs().max().item()
    prompt_effect = (other_prompt - fp32).abs().max().item()
    assert 0 < quant_error < 0.02 * fp32.abs().max().item()             # quantised, but a small change of the latents,
    assert quant_error < 0.5 * prompt_effect                            # smaller than what another prompt changes
    frames = int8_gen.decode_now(int8[:, :, :3])
    assert frames.shape == (9, *sample_image().shape) and frames.dtype == np.uint8


def test_int8_follows_the_config_at_start(parts):
    gen = make_gen(parts)
    assert gen.model is parts[0]
    gen.config = StreamConfig(int8=True, quality_ladder=dict(LADDER))
    gen.start(sample_image(), "a red square")
    assert gen.model is not parts[0] and gen.sampler.model is gen.model
    assert gen.model is gen.model                                       # built once


def test_openvino_precision_is_validated_and_reaches_both_runners(parts):
    with pytest.raises(ValueError, match="stream.openvino_precision"):
        StreamConfig(openvino_precision="int4")
    _, eager = streamed_latents(parts)
    gen, f32 = streamed_latents(parts, openvino=True, openvino_precision="f32")
    assert gen.model.chunk_runner.inference_precision == "f32"
    torch.testing.assert_close(f32, eager, atol=1e-4, rtol=1e-4)
    gen.decode_now(f32[:, :, :3])
    gen.decode_now(f32[:, :, 3:])                                       # the second decode runs OpenVINO's decoder
    assert parts[2]._openvino_decoders["f32"].inference_precision == "f32"


@pytest.mark.parametrize("lever", ["int8", "openvino"])
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_lever_settings_are_validated(lever, value):
    with pytest.raises(ValueError, match=f"stream.{lever}"):
        StreamConfig(**{lever: value})


# ------------------------------------------------------------------------------ OpenVINO (stream.openvino)
def test_openvino_streams_close_to_torch_and_leaves_the_shared_model_alone(parts):
    torch_gen, eager = streamed_latents(parts)
    ov_gen, ov = streamed_latents(parts, openvino=True)
    _, other_prompt = streamed_latents(parts, prompt="a blue sky")
    model = parts[0]
    assert ov_gen.model is not model and ov_gen.model.blocks is model.blocks     # the same weights
    assert ov_gen.model.chunk_runner.compiled is not None and model.chunk_runner is None
    assert ov.shape == eager.shape and torch.isfinite(ov).all()
    error = (ov - eager).abs().max().item()
    assert error < 0.02 * eager.abs().max().item()
    assert error < 0.5 * (other_prompt - eager).abs().max().item()
    frames = [ov_gen.decode_now(ov[:, :, a:a + 3]) for a in (0, 3)]          # the second runs OpenVINO's decoder
    reference = [torch_gen.decode_now(eager[:, :, a:a + 3]) for a in (0, 3)]
    assert [f.shape for f in frames] == [r.shape for r in reference] == [(9, *sample_image().shape), (12, *sample_image().shape)]
    assert np.abs(frames[1].astype(int) - reference[1].astype(int)).mean() < 3      # uint8 levels


def test_warm_up_builds_the_openvino_runners_and_leaves_no_stream(parts):
    model, param, codec = copy.deepcopy(parts[0]), parts[1], copy.copy(parts[2])   # runners: once per model / codec
    codec._openvino_decoders = {}
    assert openvino_dit(model).chunk_runner.compiled is None
    gen = StreamingGenerator(model, codec, HashTextEncoder(), StreamConfig(openvino=True, quality_ladder=dict(LADDER)),
                             param, fps=FPS)
    try:
        gen.warm_up(*sample_image().shape[1::-1])
        assert gen.model.chunk_runner.compiled is not None and codec._openvino_decoders["auto"].compiled is not None
        with pytest.raises(RuntimeError, match="start"):
            gen.next_chunk()
    finally:
        gen.close()


def test_a_model_without_a_prior_keeps_only_the_rungs_that_start_from_noise(parts):
    """A rung whose first step is below u = 1 starts from the video prior: a model with no output skip
    (paper scale) streams without those rungs, an adaptive stream that would start on one (auto from such
    a preset rung) starts on full, and pinning one is a one-line error."""
    from motionstream.diffusion.sampling import TeacherParam

    model, _, codec = parts
    ladder = {"from-prior": [1 / 3], "2-step": [1.0, 1 / 3]}
    config = StreamConfig(quality_ladder=ladder, quality=AUTO_QUALITY)
    bare = StreamingGenerator(model, codec, HashTextEncoder(), config, TeacherParam(), fps=FPS)
    assert bare.config.rungs == ["full", "2-step"]
    with_prior = StreamingGenerator(model, codec, HashTextEncoder(), config, TeacherParam("video"), fps=FPS)
    assert with_prior.config.rungs == ["full", "from-prior", "2-step"]
    auto = StreamingGenerator(model, codec, HashTextEncoder(),
                              StreamConfig(quality_ladder=ladder, quality="from-prior", adaptive=True), TeacherParam(),
                              fps=FPS)
    assert (auto.config.quality, auto.config.adaptive, auto.config.rungs) == ("full", True, ["full", "2-step"])
    with pytest.raises(ValueError, match="starts from the model's video prior"):
        StreamingGenerator(model, codec, HashTextEncoder(), StreamConfig(quality_ladder=ladder, quality="from-prior"),
                           TeacherParam(), fps=FPS)
    bare.start(sample_image(), "a red square")
    with pytest.raises(ValueError, match="unknown quality rung"):
        bare.set_quality("from-prior")


def test_emulating_a_weaker_cpu_restarts_the_command_capped_and_pinned(tmp_path):
    """benchmarks' --max-isa avx2 --cores 1 (stream/perf.emulate_weaker_cpu): the same command restarts
    once, with the same arguments, on one CPU, with every library's instruction-set cap set; OpenVINO
    then offers no bf16 (on a CPU with bf16, the default graph's precision)."""
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent("""
        import json, os, sys
        from motionstream.stream.perf import emulate_weaker_cpu, emulation_note
        print("started", flush=True)
        emulate_weaker_cpu("avx2", 1)
        import openvino as ov
        import torch
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        print(json.dumps({"cores": len(os.sched_getaffinity(0)), "onednn": os.environ.get("ONEDNN_MAX_CPU_ISA"),
                          "openvino": os.environ.get("OV_CPU_MAX_ISA"), "note": emulation_note(),
                          "bf16": "BF16" in caps, "argv": sys.argv[1:],
                          "torch": torch.backends.cpu.get_cpu_capability()}))
    """))
    env = {k: v for k, v in os.environ.items() if k != perf.EMULATED_ENV}
    out = subprocess.run([sys.executable, str(probe), "--chunks", "3"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[:2] == ["started", "started"]            # restarted exactly once
    got = json.loads(lines[-1])
    assert got["cores"] == 1 and got["onednn"] == got["openvino"] == "AVX2" and not got["bf16"]
    assert got["torch"] in ("AVX2", "DEFAULT")             # torch's kernels capped too (DEFAULT: no AVX2 at all)
    assert got["argv"] == ["--chunks", "3"] and "max_isa=avx2 cores=1" in got["note"]
