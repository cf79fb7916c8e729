"""Tiny random teacher / student / VAE / tiny-decoder folders wired into the model benchmarks
(`long`, `guidance`, `speed`): the benchmark modules' weight names point at them, the registry's
needs_weights follows, and the text encoder is a cheap deterministic stand-in. Figures are
meaningless; the tests check structure."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from stream_fixtures import FPS, VIDEO_H, VIDEO_W, HashTextEncoder, make_model_folders


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    return make_model_folders(tmp_path_factory.mktemp("eval_models"))


def small_config(tmp_path: Path, **sections) -> str:
    """tiny-cpu at the fixtures' 64x48, 9-frame clips, a 9-frame (3 latent frames) training horizon,
    plus extra `sections` (e.g. eval_long={...})."""
    from motionstream.config import load_config

    cfg = load_config("tiny-cpu")
    cfg["video"].update(width=VIDEO_W, height=VIDEO_H, fps=FPS)
    cfg["eval"]["num_frames"] = 9
    cfg["train_dmd"]["teacher_frames"] = 3
    cfg.update(sections)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def wire(monkeypatch, module, bench_name: str, folders, **names: str) -> None:
    """Point `module`'s weight-name constants (e.g. STUDENT_WEIGHTS="student") at the fixture folders,
    make the registry entry need those folders, and swap in HashTextEncoder."""
    from motionstream.eval import bench_long, benchmarks

    for const, key in names.items():
        monkeypatch.setattr(module, const, str(folders[key]))
    registry = benchmarks.load_benchmarks()
    needs = tuple(str(folders[k]) for k in names.values())
    monkeypatch.setitem(registry, bench_name, dataclasses.replace(registry[bench_name], needs_weights=needs))
    monkeypatch.setattr(bench_long, "text_encoder_for", lambda ctx: HashTextEncoder())


def without_weights(monkeypatch, module, bench_name: str, **names: str) -> None:
    """Point `module`'s weight constants at folders that do not exist (names: CONST="folder-name")."""
    from motionstream.eval import benchmarks

    for const, folder in names.items():
        monkeypatch.setattr(module, const, folder)
    registry = benchmarks.load_benchmarks()
    monkeypatch.setitem(registry, bench_name, dataclasses.replace(registry[bench_name], needs_weights=tuple(names.values())))


def run_without_weights(monkeypatch, tmp_path: Path, module, bench_name: str, **names: str):
    """without_weights, then run the benchmark (quick) into tmp_path: its BenchmarkResult."""
    from motionstream.eval.benchmarks import run_benchmark

    without_weights(monkeypatch, module, bench_name, **names)
    return run_benchmark(bench_name, quick=True, out_root=tmp_path)
