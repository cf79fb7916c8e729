"""`motionstream eval guidance` on a tiny random teacher: one row per (w_t, w_m) cell, plots, files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval_model_fixtures import model_folders, run_without_weights, small_config, wire  # noqa: F401

from motionstream.eval import bench_guidance
from motionstream.eval.benchmarks import run_benchmark


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models, one torch thread


def test_guidance_not_available_without_teacher(tmp_path, monkeypatch):
    res = run_without_weights(monkeypatch, tmp_path, bench_guidance, "guidance", TEACHER_WEIGHTS="no-such-teacher")
    assert res.status == "not available" and res.reason == "missing weights/no-such-teacher"
    assert "not available" in (tmp_path / "eval" / "guidance" / "table.md").read_text()


def test_pick_clips_prefers_effects():
    class C:
        def __init__(self, name, effects):
            self.name, self.effects = name, effects

    clips = [C("a", []), C("b", ["darker"]), C("c", []), C("d", ["fog"])]
    assert [c.name for c in bench_guidance.pick_clips(clips, 3)] == ["b", "d", "a"]


def test_guidance_grid_structure(tmp_path, monkeypatch, model_folders):
    pytest.importorskip("motionstream.data.synth")
    wire(monkeypatch, bench_guidance, "guidance", model_folders, TEACHER_WEIGHTS="teacher", VAE_WEIGHTS="vae")
    wts, wms = [0.0, 3.0], [0.0, 1.5]
    cfg = small_config(tmp_path, eval_guidance={"quick_text_scales": wts, "quick_motion_scales": wms,
                                                "quick_steps": 2, "clip_pool_factor": 2})
    res = run_benchmark("guidance", quick=True, out_root=tmp_path / "out", config=cfg)
    assert res.status == "ok", res.reason
    (table,) = res.tables
    assert [(r[0], r[1]) for r in table.rows[:-1]] == [(t, m) for t in wts for m in wms]
    assert table.rows[-1][0] == "ground truth"
    assert res.raw["steps"] == 2 and len(res.raw["clips"]) == 2
    for cell in res.raw["cells"]:
        assert cell["fps"] > 0 and np.isfinite(cell["psnr"]) and np.isfinite(cell["epe"])
        assert len(cell["per_clip"]) == 2
    # the weights reach the sampler: each cell generates a different video from the same noise
    assert len({c["psnr"] for c in res.raw["cells"]}) == len(wts) * len(wms)
    assert np.array(res.raw["grids"]["psnr"]).shape == (len(wts), len(wms))
    folder = tmp_path / "out" / "eval" / "guidance"
    assert {"grid.png", "frames.png"} == set(res.plots)
    assert all((folder / p).stat().st_size > 0 for p in res.plots)
    stored = json.loads((folder / "result.json").read_text())
    assert stored["status"] == "ok" and "unguided PSNR/reliable EPE" in stored["summary"]
    assert "| w_t | w_m |" in (folder / "table.md").read_text()
