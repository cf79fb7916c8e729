"""`motionstream train teacher` under torchrun (2 CPU processes, gloo, FSDP2) equals one process on the
same global batch."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from motionstream.train.distributed import DistContext
from teacher_fixtures import build_tiny_cache, tiny_config, tiny_vae_folder

REPO = Path(__file__).resolve().parents[2]


def test_local_slices_cover_the_global_batch():
    parts = [DistContext(rank=r, world_size=4).local_slice(8) for r in range(4)]
    assert [list(range(8))[p] for p in parts] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ValueError, match="evenly"):
        DistContext(rank=0, world_size=3).local_slice(8)
    single = DistContext()
    assert not single.enabled and single.is_main and single.mean(2.5) == 2.5


@pytest.mark.slow
def test_two_gloo_processes_match_single_process(tmp_path):
    vae = tiny_vae_folder(tmp_path)
    cache = build_tiny_cache(tmp_path, vae)
    cfg = tiny_config(tmp_path, cache, vae)
    args = ["train", "teacher", "--config", str(cfg), "--cache", str(cache), "--no-eval", "--no-build-cache",
            "--no-progress", "--threads", "1", "--device", "cpu", "--steps", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "motionstream", *args, "--run", str(tmp_path / "one")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29517", "-m", "motionstream", *args, "--run-dir", str(tmp_path / "two")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_file(str(tmp_path / "one" / "state.safetensors")), load_file(str(tmp_path / "two" / "state.safetensors"))
    assert set(a) == set(b)
    for k in a:
        if k.startswith(("model.", "ema.", "opt.")):
            assert a[k].shape == b[k].shape, k
            assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())
    assert '"step": 2' in (tmp_path / "two" / "state.json").read_text()


def test_a_torchrun_worker_leaves_without_interpreter_finalization(monkeypatch, capsys):
    """After its run, a torchrun worker prints its line and ends with os._exit(0): finalization can abort
    a gloo rank (see cli.train.leave_worker). A plain process returns 0 as usual."""
    import argparse

    from motionstream.cli import train as train_cli

    class Exited(Exception):
        pass

    def fake_exit(code):
        raise Exited(code)

    @dataclass
    class Args:
        run: str

    monkeypatch.setattr(train_cli.os, "_exit", fake_exit)
    flushed = []
    monkeypatch.setattr(train_cli.logging, "shutdown", lambda: flushed.append(True))   # pytest's handlers stay open
    args = argparse.Namespace(run="runs/x")
    done = SimpleNamespace(step=3)
    monkeypatch.delenv("RANK", raising=False)
    assert train_cli.run_typed(lambda a: done, Args, args, "step {step} in {run}") == 0
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(Exited) as exited:
        train_cli.run_typed(lambda a: done, Args, args, "step {step} in {run}")
    assert exited.value.args == (0,) and flushed == [True]      # the run's log files are flushed first
    assert capsys.readouterr().out.splitlines() == ["step 3 in runs/x", "step 3 in runs/x"]
