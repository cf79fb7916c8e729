"""`motionstream eval long` on tiny random models: rows per configuration, tenths, time axis, files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval_model_fixtures import model_folders, run_without_weights, small_config, wire  # noqa: F401

from motionstream.eval import bench_long
from motionstream.eval.benchmarks import run_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models, one torch thread


CONFIGS = ["c3s1w1", "c3s0w1", "c1s1w1", "c3s0w6", "c3s1w1-r2"]


def test_long_not_available_without_student(tmp_path, monkeypatch):
    res = run_without_weights(monkeypatch, tmp_path, bench_long, "long", STUDENT_WEIGHTS="no-such-student")
    assert res.status == "not available" and res.reason == "missing weights/no-such-student"
    assert "not available: missing weights/no-such-student" in (tmp_path / "eval" / "long" / "table.md").read_text()


def test_window_edges_cover_the_stream():
    edges = bench_long.window_edges(331, 10)
    assert edges[0] == 0 and edges[-1] == 331 and len(edges) == 11 and (np.diff(edges) >= 33).all()
    with pytest.raises(ValueError):
        bench_long.window_edges(15, 10)


def test_scene_wins_counts_scenes_where_the_base_is_better():
    def clip(psnrs, epes):
        return [{"psnr": p, "epe_reliable": e} for p, e in zip(psnrs, epes)]

    per_config = {"a": [clip([20, 19], [1, 1]), clip([10, 9], [2, 2]), clip([15, 15], [1, np.nan])],
                  "b": [clip([19, 17], [2, 2]), clip([11, 11], [1, 1]), clip([14, 15], [3, 3])]}
    # a vs b: PSNR higher in scenes 1 and 3; EPE lower in 1 and 3 (nan ignored); drop smaller in scene 1 only
    assert bench_long.scene_wins(per_config, "a") == [["b", "2/3", "2/3", "1/3"]]


def test_relative_drift_is_last_over_first_with_a_scene_bootstrap():
    def clip(first, last):
        return [{"epe_reliable": first}, {"epe_reliable": 0.0}, {"epe_reliable": last}]

    same = [clip(2.0, 2.2), clip(4.0, 4.4), clip(1.0, 1.1)]                    # every scene +10 %
    change, lo, hi = bench_long.relative_drift(same, "epe_reliable")
    assert change == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    # one scene with a bad last tenth: the mean moves, and the interval spans "no change" to "that scene"
    mixed = [clip(2.0, 2.0), clip(2.0, 2.0), clip(2.0, 2.0), clip(2.0, 8.0)]
    change, lo, hi = bench_long.relative_drift(mixed, "epe_reliable")
    assert change == pytest.approx(0.75) and lo == pytest.approx(0.0) and 1.5 <= hi <= 2.25      # 2 or 3 of 4 picks
    # a scene without points in a tenth (nan) is skipped there, as in the per-tenth means
    change, _, _ = bench_long.relative_drift([clip(2.0, float("nan")), clip(4.0, 6.0)], "epe_reliable")
    assert change == pytest.approx(6.0 / 3.0 - 1)


def test_long_benchmark_structure(tmp_path, monkeypatch, model_folders):
    pytest.importorskip("motionstream.data.synth")
    wire(monkeypatch, bench_long, "long", model_folders, STUDENT_WEIGHTS="student", VAE_WEIGHTS="vae",
         TINY_WEIGHTS="tiny")
    cfg = small_config(tmp_path, eval_long={"configurations": CONFIGS, "quick_horizon_multiple": 4,
                                            "num_windows": 4},
                       studio={"cache": ""})          # only CONFIGS (tiny-cpu's studio shape would add a row)
    res = run_benchmark("long", quick=True, out_root=tmp_path / "out", config=cfg)
    assert res.status == "ok", res.reason
    assert res.raw["horizon_frames"] == 9 and res.raw["num_frames"] == 36      # 4 x (1 + 4 * (3 - 1)): 4 chunks of c3
    assert len(res.raw["clips"]) == 2                                          # --quick: 2 scenes
    drift, wins, rel, psnr_t, epe_t = res.tables
    assert [r[0] for r in rel.rows] == CONFIGS
    for row, d in zip(rel.rows, drift.rows):
        assert row[1] == pytest.approx(100 * (d[4] / d[3] - 1)) and row[3] == pytest.approx(100 * (d[9] / d[8] - 1))
    assert [r[0] for r in wins.rows] == CONFIGS[1:] and all(v.endswith("/2") for r in wins.rows for v in r[1:])
    ref = bench_long.REFERENCE_ROW
    assert [r[0] for r in drift.rows] == CONFIGS + [ref, "ground truth (tracker floor)"]
    assert [r[0] for r in psnr_t.rows] == CONFIGS + [ref] and len(psnr_t.columns) == 1 + 4
    assert [r[0] for r in epe_t.rows] == CONFIGS + [ref, "tracker floor"]
    ref_row = drift.rows[-2]
    assert ref_row[1] is None and ref_row[6] == pytest.approx(0.0)           # no fps; drifts by 0 beyond itself
    for row in drift.rows[:-2]:
        assert row[1] > 0 and np.isfinite(row[2])                             # fps, mean PSNR
        assert row[5] == pytest.approx(row[4] - row[3])                       # drift = last - first tenth
        assert row[6] == pytest.approx(row[5] - ref_row[5])                   # ... beyond the scenes' own change
        assert row[2] != pytest.approx(ref_row[2])                            # the reference is not a model row
    times = np.array(res.raw["window_times_s"])
    assert len(times) == 4 and (np.diff(times) > 0).all()
    assert res.raw["window_edges"] == [0, 9, 18, 27, 36]
    for name in CONFIGS:
        clips = res.raw["per_clip"][name]
        assert len(clips) == 2 and all(len(c) == 4 for c in clips)
        assert [w["start"] for w in clips[0]] == [0, 9, 18, 27]
        assert all(w["points"] > 0 for w in clips[0])
    assert len(res.raw["reference"]) == 2 and len(res.raw["reference"][0]) == 4
    # each row streamed with its own cache: by the 4th chunk the caches hold different chunks, and the
    # refreshed sink (re-anchored after chunks 2 and 4) differs from the fixed one
    last = {name: res.raw["per_clip"][name][0][-1]["psnr"] for name in CONFIGS}
    assert len(set(last.values())) == len(CONFIGS)
    folder = tmp_path / "out" / "eval" / "long"
    assert (folder / "drift.png").stat().st_size > 0 and res.plots == ["drift.png"]
    stored = json.loads((folder / "result.json").read_text())
    assert stored["status"] == "ok" and "c3s1w1 ΔPSNR (dB)" in stored["summary"]
    assert "| c1s1w1 |" in (folder / "table.md").read_text()


def test_row_names_set_cache_and_sink_refresh():
    from motionstream.stream.engine import StreamConfig

    base = StreamConfig(sink_refresh_chunks=3)
    plain, refreshed = bench_long.stream_config(base, "c3s0w6"), bench_long.stream_config(base, "c1s1w1-r4")
    assert (plain.chunk_frames, plain.sink_chunks, plain.window_chunks, plain.sink_refresh_chunks) == (3, 0, 6, 0)
    assert (refreshed.chunk_frames, refreshed.sink_chunks, refreshed.window_chunks,
            refreshed.sink_refresh_chunks) == (1, 1, 1, 4)
    for bad in ("c3s1w1-r", "c3s1w1-r0", "c3s1w1-rx", "c3s1-r2"):
        with pytest.raises(ValueError):
            bench_long.stream_config(base, bad)
