"""`motionstream eval speed` on tiny random models: teacher and student rows, decode in/out, files."""

from __future__ import annotations

import json

import pytest

from eval_model_fixtures import model_folders, run_without_weights, small_config, wire  # noqa: F401

from motionstream.eval import bench_speed
from motionstream.eval.benchmarks import run_benchmark


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models, one torch thread


def test_speed_not_available_names_the_missing_weights(tmp_path, monkeypatch, model_folders):
    res = run_without_weights(monkeypatch, tmp_path, bench_speed, "speed", TEACHER_WEIGHTS=str(model_folders["teacher"]),
                              STUDENT_WEIGHTS="no-such-student")
    assert res.status == "not available" and res.reason == "missing weights/no-such-student"


def test_timed_codec_counts_decode_time():
    class Slow:
        temporal_stride = 4

        def decode(self, x):
            import time

            time.sleep(0.01)
            return x

    codec = bench_speed.TimedCodec(Slow())
    assert codec.decode(1) == 1 and codec.decode(2) == 2
    assert codec.decode_s >= 0.02 and codec.encode_s == 0.0 and codec.temporal_stride == 4


def test_speed_benchmark_structure(tmp_path, monkeypatch, model_folders):
    pytest.importorskip("motionstream.data.synth")
    wire(monkeypatch, bench_speed, "speed", model_folders, TEACHER_WEIGHTS="teacher", STUDENT_WEIGHTS="student",
         VAE_WEIGHTS="vae", TINY_WEIGHTS="tiny")
    cfg = small_config(tmp_path, eval_speed={"quick_teacher_steps": 2, "warmup_steps": 1})
    res = run_benchmark("speed", quick=True, out_root=tmp_path / "out", config=cfg)
    assert res.status == "ok", res.reason
    (table,) = res.tables
    names = [r[0] for r in table.rows]
    assert len(names) == 3 and names[0].startswith("teacher (2 steps x 3 evals")
    assert "decode included" in names[1] and "decode overlapped" in names[2] and "c3s1w1" in names[1]
    teacher, seq, ovl = res.raw["rows"]
    assert teacher["frames"] == seq["frames"] == 9 and ovl["frames"] >= 9    # the same 9-frame clip
    assert teacher["nfe"] == 6 and teacher["latency_first_s"] == teacher["total_s"]
    # decode excluded is faster than decode included, for both models
    assert teacher["decode_s"] > 0 and teacher["fps_no_decode"] > teacher["fps"]
    assert seq["fps_no_decode"] > 0 and seq["decode_ms_per_frame"] is not None
    assert seq["latency_first_s"] > 0 and seq["latency_chunk_p50_s"] > 0
    assert res.summary["student/teacher fps"] == pytest.approx(seq["fps"] / teacher["fps"])
    assert any("2 steps" in n for n in res.notes)
    folder = tmp_path / "out" / "eval" / "speed"
    assert res.plots == ["speed.png"] and (folder / "speed.png").stat().st_size > 0
    assert json.loads((folder / "result.json").read_text())["status"] == "ok"
