"""End to end on a tiny preset: `train ode` (pairs + regression) -> `train dmd` (kill + resume) -> export
-> the student folder streams with the engine's sampler."""

import json
from pathlib import Path

import numpy as np

import pytest
import torch
import yaml
from safetensors.torch import load_file

from teacher_fixtures import build_tiny_cache, tiny_config, tiny_vae_folder


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models, one torch thread


def distill_config(tmp_path: Path, **teacher_overrides) -> tuple[Path, Path, Path]:
    """(config, teacher folder, cache) of a tiny preset: 1-frame chunks, 2 student steps, 3-frame clips."""
    from motionstream.config import load_config, section
    from motionstream.diffusion.flow import DiffusionConfig
    from motionstream.models.dit import DiTConfig, WanDiT
    from motionstream.train.teacher import TeacherTrainConfig, export_teacher, teacher_param

    vae = tiny_vae_folder(tmp_path)
    cache = build_tiny_cache(tmp_path, vae, seeds=(0, 1))
    path = tiny_config(tmp_path, cache, vae, **teacher_overrides)
    cfg = yaml.safe_load(path.read_text())
    cfg["student"] = {"chunk_frames": 1, "sink_chunks": 1, "window_chunks": 1, "denoising_steps": [1.0, 0.5],
                      "shift": 3.0}
    cfg["train_ode"] = {"num_pairs": 2, "latent_frames": 3, "teacher_steps": 4, "pairs_dir": str(tmp_path / "pairs"),
                        "batch_size": 2, "lr": 1e-3, "warmup_steps": 1, "sink_choices": [0, 1], "window_choices": [1],
                        "export_every": 1, "log_every": 1, "threads": 1}
    cfg["train_dmd"] = {"batch_size": 2, "teacher_frames": 3, "min_rollout_chunks": 3, "max_rollout_chunks": 5,
                        "ratio": 2, "generator_lr": 1e-3, "critic_lr": 1e-3, "warmup_steps": 1, "log_every": 1,
                        "export_every": 2, "sample_every": 0, "threads": 1}
    path.write_text(yaml.safe_dump(cfg))
    loaded = load_config(path)
    torch.manual_seed(0)
    dit_cfg = section(loaded, "dit", DiTConfig)
    teacher = export_teacher(tmp_path / "teacher", WanDiT(dit_cfg).state_dict(), dit_cfg,
                             teacher_param(section(loaded, "train_teacher", TeacherTrainConfig)),
                             section(loaded, "diffusion", DiffusionConfig), {"step": 0})
    return path, teacher, cache


def cli(*args: str) -> None:
    """One `motionstream train ...` command, in this process (a fresh process per command would only
    add interpreter start-up; the training state on disk is all a resumed run shares with the first)."""
    from motionstream.cli import main

    assert main(["train", *args, "--no-progress", "--device", "cpu", "--threads", "1"]) == 0


def test_distill_clis_take_set_overrides(tmp_path, capsys):
    from motionstream.cli import main

    cfg, teacher, cache = distill_config(tmp_path)
    common = ["--config", str(cfg), "--teacher", str(teacher), "--cache", str(cache), "--run", str(tmp_path / "ode")]
    cli("ode", *common, "--pairs-only", "--set", "train_ode.num_pairs=1")            # the preset says 2
    assert len(list((tmp_path / "pairs" / "pairs").glob("*.npz"))) == 1
    for stage in ("ode", "dmd"):
        assert main(["train", stage, *common, "--set", f"train_{stage}.no_such_key=1"]) == 2
        assert f"train_{stage} has no key 'no_such_key'" in capsys.readouterr().err


@pytest.mark.slow
def test_ode_then_dmd_resume_export_and_stream(tmp_path):
    cfg, teacher, cache = distill_config(tmp_path)
    common = ["--config", str(cfg), "--teacher", str(teacher), "--cache", str(cache)]
    cli("ode", *common, "--run", str(tmp_path / "ode"), "--steps", "2")
    pairs = sorted((tmp_path / "pairs" / "pairs").glob("*.npz"))
    assert len(pairs) == 2
    assert json.loads((tmp_path / "ode" / "state.json").read_text())["step"] == 2
    student = tmp_path / "ode" / "student"
    assert json.loads((student / "config.json").read_text())["kind"] == "student"

    dmd = common + ["--student", str(student), "--no-samples"]
    cli("dmd", *dmd, "--run", str(tmp_path / "straight"), "--steps", "4")
    cli("dmd", *dmd, "--run", str(tmp_path / "killed"), "--steps", "3")        # stopped after step 3 ...
    cli("dmd", *dmd, "--run", str(tmp_path / "killed"), "--steps", "4")        # ... and resumed
    a = load_file(str(tmp_path / "straight" / "state.safetensors"))
    b = load_file(str(tmp_path / "killed" / "state.safetensors"))
    assert set(a) == set(b)
    for k in a:
        if k.startswith(("generator.", "critic.", "ema.")):
            assert torch.allclose(a[k], b[k], atol=1e-6), k
    lines = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert any("dmd_loss" in r for r in lines) and all("critic_loss" in r for r in lines)
    gen0 = load_file(str(student / "model.safetensors"))
    assert any(not torch.equal(gen0[k.split(".", 1)[1]].float(), a[k].float()) for k in a if k.startswith("generator."))

    out = tmp_path / "student-export"
    from motionstream.cli import main

    assert main(["train", "dmd", "--config", str(cfg), "--run", str(tmp_path / "straight"), "--export", str(out)]) == 0
    from motionstream.models.checkpoints import load_model_dir
    from motionstream.train.rollout import StudentSampler, load_student, stream_generate

    model, scfg, param, meta = load_student(out)
    assert scfg.name == "c1s1w1" and scfg.num_steps == 2 and meta["stage"] == "dmd" and meta["step"] == 4
    _, ema = load_model_dir(out)
    assert all(torch.allclose(ema[k], a[f"ema.{k}"].half().float()) for k in ema)      # the EMA ships
    # the exported student streams 8 chunks (past the 3-frame horizon) with the engine's sampler
    from motionstream.train.cache import TeacherCache
    from motionstream.models.conditioning import build_condition

    clip = TeacherCache(cache)[0]
    from motionstream.train.dmd import long_tracks

    ts = long_tracks(clip.seed, 1 + 4 * 7, 64, 32, 16).subset(slice(0, 200))
    cond = build_condition(clip.latents[None, :, 0], [ts], 8, model.cfg)
    sampler = StudentSampler(model, scfg, param, cond, (clip.text_tokens[None], clip.text_mask[None]))
    lat = stream_generate(sampler, 8, tuple(clip.latents.shape[2:]), torch.Generator().manual_seed(0))
    assert lat.shape == (1, 16, 8, *clip.latents.shape[2:]) and torch.isfinite(lat).all()


@pytest.mark.slow
def test_ode_and_dmd_under_torchrun_fsdp_equal_one_process(tmp_path):
    """2 gloo processes == 1 process: ODE pairs (split over the ranks) + a regression step, then DMD (FSDP2:
    the generator as one unit with forward_chunk registered) over a critic step and a generator step."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    cfg, teacher, cache = distill_config(tmp_path)
    common = ["--config", str(cfg), "--teacher", str(teacher), "--cache", str(cache)]
    flags = ["--threads", "1", "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    repo = Path(__file__).resolve().parents[2]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541"]

    def run(cmd: list[str]) -> None:
        out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stderr[-3000:]

    cli("ode", *common, "--run", str(tmp_path / "ode"), "--steps", "1")
    run([*torchrun, "-m", "motionstream", "train", "ode", *common, *flags, "--pairs", str(tmp_path / "pairs2"),
         "--run-dir", str(tmp_path / "ode2"), "--steps", "1"])
    for name in ("000000.npz", "000001.npz"):
        p1, p2 = (np.load(tmp_path / d / "pairs" / name) for d in ("pairs", "pairs2"))
        assert np.array_equal(p1["states"], p2["states"]) and np.array_equal(p1["x0"], p2["x0"])
    a, b = (load_file(str(tmp_path / d / "state.safetensors")) for d in ("ode", "ode2"))
    for k in (k for k in a if k.startswith("model.")):
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k

    args = ["train", "dmd", *common, *flags, "--student", str(tmp_path / "ode" / "student"), "--no-samples",
            "--steps", "2"]                                      # ratio 2: step 1 updates the generator
    run([sys.executable, "-m", "motionstream", *args, "--run-dir", str(tmp_path / "one")])
    run([*torchrun, "-m", "motionstream", *args, "--run-dir", str(tmp_path / "two")])
    a, b = (load_file(str(tmp_path / d / "state.safetensors")) for d in ("one", "two"))
    assert set(a) == set(b)
    keys = [k for k in a if k.startswith(("generator.", "critic.", "ema.", "gen_opt.", "critic_opt."))]
    assert any(k.startswith("gen_opt.") for k in keys)                             # the generator did step
    for k in keys:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())


def test_video_prior_teacher_distills(tmp_path):
    """A teacher with the "video" prior: the ODE pairs store each pair's prior (the image warped along
    the pair's tracks, encoded), pair_batch hands it back, and a DMD step runs with it."""
    from motionstream.train.ode import ODEPairs, pair_batch
    from motionstream.train.rollout import load_dit_folder

    cfg, teacher, cache = distill_config(tmp_path, output_skip="video", skip_form="mmse")
    assert load_dit_folder(teacher)[1].output_skip == "video"
    common = ["--config", str(cfg), "--teacher", str(teacher), "--cache", str(cache)]
    cli("ode", *common, "--run", str(tmp_path / "ode"), "--steps", "1", "--text-scale", "0", "--motion-scale", "0")
    pairs = ODEPairs(tmp_path / "pairs")
    assert json.loads((tmp_path / "pairs" / "meta.json").read_text())["text_scale"] == 0
    item = pairs.load(pairs.indices[0])
    assert item["prior"] is not None and item["prior"].shape == item["x0"].shape
    torch.testing.assert_close(item["prior"][:, 0], item["first_latent"], atol=2e-3, rtol=0)
    _, _, _, cond = pair_batch(pairs, [0, 1], load_dit_folder(teacher)[0].cfg)
    assert cond.prior is not None and cond.prior.shape[0] == 2
    cli("dmd", *common, "--student", str(tmp_path / "ode" / "student"), "--no-samples", "--run",
        str(tmp_path / "dmd"), "--steps", "1")
    assert json.loads((tmp_path / "dmd" / "state.json").read_text())["step"] == 1
