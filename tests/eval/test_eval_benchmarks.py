"""Benchmark registry, runner, report and CLI on cheap benchmarks (outputs go to tmp_path)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import MEDIA
from motionstream.cli import main
from motionstream.eval import benchmarks
from motionstream.eval.benchmarks import BenchmarkResult, Table, benchmark, run_benchmark
from motionstream.eval.report import HEADLINE_BEGIN, HEADLINE_END, update_readme_headline, write_report


def small_config(tmp_path) -> str:
    """The tiny-cpu preset at 64x32 pixels and 9 frames per clip, so real benchmarks run in seconds."""
    import yaml

    from motionstream.config import load_config

    cfg = load_config("tiny-cpu")
    cfg["video"].update(width=64, height=32)
    cfg.setdefault("eval", {})["num_frames"] = 9
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture
def fake_benchmarks(monkeypatch):
    """Register throw-away benchmarks; the registry is restored afterwards."""
    benchmarks.load_benchmarks()
    monkeypatch.setattr(benchmarks, "REGISTRY", dict(benchmarks.REGISTRY))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    @benchmark("fake-ok", "A cheap benchmark")
    def ok(ctx):
        """Squares of the clip count."""
        ctx.add_table(Table("squares", ["n", "n^2", "tiny"], [[n, float(n * n), 1e-6] for n in range(ctx.num_clips)]))
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        ctx.add_plot(fig, "line")
        ctx.summary["clips"] = ctx.num_clips
        ctx.raw["values"] = np.arange(3)
        ctx.note("a note")

    @benchmark("fake-weights", "Needs weights", needs_weights=("no-such-model",))
    def needs(ctx):
        raise AssertionError("must not run without its weights")

    @benchmark("fake-missing", "Needs a module")
    def missing(ctx):
        benchmarks.require_module("motionstream.no_such_module", "the frobnicator")

    @benchmark("fake-broken", "Crashes")
    def broken(ctx):
        raise RuntimeError("boom")

    return benchmarks.REGISTRY


def test_runner_writes_json_markdown_and_plots(fake_benchmarks, tmp_path):
    res = run_benchmark("fake-ok", quick=True, out_root=tmp_path)
    folder = tmp_path / "eval" / "fake-ok"
    assert res.status == "ok" and res.summary == {"clips": 2}    # --quick = 2 clips
    assert sorted(p.name for p in folder.iterdir()) == ["line.png", "result.json", "table.md"]
    stored = BenchmarkResult.from_json((folder / "result.json").read_text())
    assert stored.tables[0].rows == [[0, 0.0, 1e-6], [1, 1.0, 1e-6]] and stored.raw["values"] == [0, 1, 2]
    assert stored.machine["cores"] >= 1 and stored.commit and stored.quick
    table = (folder / "table.md").read_text()
    assert "| n | n^2 | tiny |" in table and "| 1 | 1.000 | 1.0e-06 |" in table and "- a note" in table
    # a full run uses the config's full_clips, and a stale file from the previous run is gone
    (folder / "stale.png").write_bytes(b"x")
    assert run_benchmark("fake-ok", out_root=tmp_path).summary["clips"] == benchmarks.EvalConfig().full_clips
    assert not (folder / "stale.png").exists()


def test_unavailable_and_failing_benchmarks_are_reported(fake_benchmarks, tmp_path):
    res = run_benchmark("fake-weights", out_root=tmp_path)
    assert res.status == "not available" and "weights/no-such-model" in res.reason
    res = run_benchmark("fake-missing", out_root=tmp_path)
    assert res.status == "not available" and "frobnicator" in res.reason
    with pytest.raises(RuntimeError, match="boom"):
        run_benchmark("fake-broken", out_root=tmp_path)
    res = run_benchmark("fake-broken", out_root=tmp_path, catch_errors=True)
    assert res.status == "failed" and "boom" in (tmp_path / "eval" / "fake-broken" / "error.log").read_text()
    with pytest.raises(KeyError, match="unknown benchmark"):
        run_benchmark("nope", out_root=tmp_path)


def test_report_collects_every_result(fake_benchmarks, tmp_path):
    run_benchmark("fake-ok", quick=True, out_root=tmp_path, clips=3)
    run_benchmark("fake-weights", quick=True, out_root=tmp_path)
    text = write_report(tmp_path).read_text()
    assert "AMD" in text or "CPU" in text
    assert "commit: `" in text and "quick" in text
    # the mode line says how many clips each benchmark ran: --clips overrides the quick mode's 2
    mode = next(line for line in text.splitlines() if line.startswith("- mode:"))
    assert "fake-ok 3" in mode and "fake-weights 2" in mode
    assert "![fake-ok: line](eval/fake-ok/line.png)" in text and "**squares**" in text
    assert "not available: missing weights/no-such-model" in text
    assert text.index("## A cheap benchmark") < text.index("## Needs weights")


def test_readme_headline_block_is_replaced(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{HEADLINE_BEGIN}\nold\n{HEADLINE_END}\noutro\n")
    res = BenchmarkResult("codec", "Codec", "ok", quick=False, summary={"tiny PSNR": 27.123}, commit="abc")
    assert update_readme_headline([res], readme)
    text = readme.read_text()
    assert "old" not in text and "- **codec**: tiny PSNR 27.12" in text and text.endswith(f"{HEADLINE_END}\noutro\n")
    assert not update_readme_headline([res], tmp_path / "missing.md")


def test_cli_runs_a_benchmark_and_rejects_unknown(fake_benchmarks, tmp_path, capsys):
    assert main(["eval", "fake-ok", "--quick", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "eval" / "fake-ok" / "result.json").read_text())["status"] == "ok"
    assert main(["eval", "fake-ok", "--clips", "3", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "eval" / "fake-ok" / "result.json").read_text())["summary"] == {"clips": 3}
    assert main(["eval", "fake-ok", "--clips", "0", "--out", str(tmp_path)]) == 2
    assert main(["eval", "report", "--out", str(tmp_path)]) == 0 and (tmp_path / "REPORT.md").is_file()
    assert main(["eval", "bogus", "--out", str(tmp_path)]) == 2
    assert "unknown benchmark 'bogus'" in capsys.readouterr().err
    assert main(["eval", "list"]) == 0 and "transfer" in capsys.readouterr().out


def test_every_shipped_benchmark_is_registered():
    names = set(benchmarks.load_benchmarks())
    assert {"transfer", "long", "guidance", "codec", "speed", "camera"} <= names


def test_camera_benchmark_checks_tracks_against_the_homography(tmp_path):
    pytest.importorskip("motionstream.tracks.camera")
    res = run_benchmark("camera", quick=True, out_root=tmp_path, config=small_config(tmp_path))
    assert res.status == "ok", res.reason
    assert res.summary["max track err (px)"] < 1e-3
    assert res.summary["parallax ratio"] == pytest.approx(2.0, rel=0.02)
    assert res.summary["warp PSNR (dB)"] > res.summary["frozen PSNR (dB)"] + 10
    assert {"frames.png", "psnr.png"} <= set(res.plots)


def test_codec_benchmark_with_random_small_codec(tmp_path, monkeypatch):
    """The codec benchmark against the real VideoCodec API, on untrained small models saved the way
    shipped weights are (figures are meaningless; shapes, files and bookkeeping are checked)."""
    import dataclasses

    pytest.importorskip("motionstream.models.codec")
    pytest.importorskip("motionstream.models.tiny_decoder")
    import torch

    from motionstream.eval import bench_codec
    from motionstream.models.checkpoints import save_model_dir
    from motionstream.models.tiny_decoder import TinyDecoderConfig, TinyVideoAutoencoder
    from motionstream.models.vae import CausalVAE, VAEConfig

    torch.manual_seed(0)
    # the default layouts, narrowed to 8 channels so the test stays fast
    vcfg, tcfg = VAEConfig(), TinyDecoderConfig()
    vcfg = dataclasses.replace(vcfg, encoder_widths=[8] * len(vcfg.encoder_widths),
                               decoder_widths=[8] * len(vcfg.decoder_widths))
    tcfg = dataclasses.replace(tcfg, decoder_widths=[8] * len(tcfg.decoder_widths), blocks_per_stage=1)
    vae_dir, tiny_dir = tmp_path / "vae", tmp_path / "tiny"
    save_model_dir(vae_dir, CausalVAE(vcfg).state_dict(), {"kind": "vae", "config": dataclasses.asdict(vcfg)})
    save_model_dir(tiny_dir, TinyVideoAutoencoder(tcfg).state_dict(), {"kind": "tiny", "config": dataclasses.asdict(tcfg)})
    registry = benchmarks.load_benchmarks()
    monkeypatch.setattr(bench_codec, "VAE_WEIGHTS", str(vae_dir))
    monkeypatch.setattr(bench_codec, "TINY_WEIGHTS", str(tiny_dir))
    monkeypatch.setitem(registry, "codec", dataclasses.replace(registry["codec"], needs_weights=(str(vae_dir), str(tiny_dir))))
    res = run_benchmark("codec", quick=True, out_root=tmp_path / "out", config=small_config(tmp_path))
    assert res.status == "ok", res.reason
    table = res.tables[0]
    assert [r[0].split(" ")[0] for r in table.rows] == ["full", "tiny"]
    assert table.rows[0][1] == pytest.approx(sum(p.numel() for p in CausalVAE(vcfg).decoder.parameters()) / 1e6)
    per_clip = res.raw["per_clip"]
    assert len(per_clip) >= 2 and all(r["frames"] == 9 and r["tiny_ms_per_frame"] > 0 for r in per_clip)
    assert {"frames.png", "psnr.png"} <= set(res.plots)


def test_transfer_benchmark_rows(tmp_path, monkeypatch):
    """Both baselines on both sources; a model without weights gets a "not available" row and a
    broken one a "failed" row without losing the others; the forward warp beats the frozen frame."""
    pytest.importorskip("motionstream.data.synth")
    pytest.importorskip("motionstream.tracks.tracker")
    from motionstream.eval import bench_transfer

    assert {"repeat-first-frame", "forward-warp", "teacher", "student"} <= set(bench_transfer.METHODS)

    def broken(ctx):
        def generate(clip):
            raise RuntimeError("model exploded")
        return generate

    methods = {k: bench_transfer.METHODS[k] for k in ("repeat-first-frame", "forward-warp")}
    methods["unshipped"] = bench_transfer.Method("unshipped", broken, ("no-such-model",))
    methods["broken"] = bench_transfer.Method("broken", broken)
    monkeypatch.setattr(bench_transfer, "METHODS", methods)   # the real models would be slow here
    monkeypatch.setattr(bench_transfer, "rung_methods", lambda ctx: [])    # (the student's quality rungs too)
    monkeypatch.setattr(bench_transfer, "studio_methods", lambda ctx: [])  # (and its studio row)
    res = run_benchmark("transfer", quick=True, out_root=tmp_path / "out", config=small_config(tmp_path))
    assert res.status == "ok", res.reason
    # the real clips live in ../shared/media beside the checkout; a bare clone has only the world
    sources = ["world test", "real media", "real fast motion"] if MEDIA.is_dir() else ["world test"]
    assert [t.title.split(" (")[0] for t in res.tables] == sources
    for source, table in zip(sources, res.tables):
        rows = {r[0]: r for r in table.rows}
        assert rows["unshipped"][1] == "not available" and rows["broken"][1] == "failed"
        assert "ground truth (tracker floor)" in rows
        got = res.raw["per_source"][source]
        for m in got.values():      # the per-clip worst rows: never better than the mean
            assert m["worst_psnr"] <= m["psnr"] and m["worst_epe"] >= m["epe"]
        assert set(got) == {"repeat-first-frame", "forward-warp"}
        assert got["forward-warp"]["psnr"] > got["repeat-first-frame"]["psnr"]
        assert got["forward-warp"]["epe_reliable"] < got["repeat-first-frame"]["epe_reliable"]
    assert "model exploded" in res.raw["skipped"]["broken"]
    assert "transfer.png" in res.plots and res.summary
    assert "sheet-world-test.png" in res.plots          # ground truth / warp contact sheet


def test_drag_benchmark_rows(tmp_path, monkeypatch):
    """The drag benchmark scores the baselines, segment paste and the oracles on studio-like inputs: the
    oracle (true motion) beats the frozen frame on the pixels that change, the ground truth scores inf,
    and a broken model gets a "failed" row without losing the others."""
    from motionstream.eval import bench_transfer

    def broken(ctx):
        def generate(clip):
            raise RuntimeError("model exploded")
        return generate

    methods = {k: bench_transfer.METHODS[k] for k in ("repeat-first-frame", "forward-warp")}
    methods["broken"] = bench_transfer.Method("broken", broken)
    monkeypatch.setattr(bench_transfer, "METHODS", methods)
    monkeypatch.setattr(bench_transfer, "rung_methods", lambda ctx: [])    # the real student would be slow here
    monkeypatch.setattr(bench_transfer, "studio_methods", lambda ctx: [])
    import motionstream.eval.bench_drag as bench_drag

    res = run_benchmark("drag", quick=True, out_root=tmp_path / "out", clips=2)
    assert res.status == "ok", res.reason
    got = res.raw["per_method"]
    oracle, behind, turned, both = bench_drag.ORACLES
    assert got[oracle]["changed_psnr"] > got["repeat-first-frame"]["changed_psnr"]
    # these clips' objects turn: knowing how keeps them in shape; knowing what they hide fills the wall
    assert got[turned]["object_psnr"] > got[oracle]["object_psnr"] + 1
    assert got[behind]["changed_psnr"] > got[oracle]["changed_psnr"] + 1
    assert got[both]["changed_psnr"] > max(got[behind]["changed_psnr"], got[turned]["changed_psnr"])
    assert got["forward-warp"]["object_epe"] < got["repeat-first-frame"]["object_epe"]
    # segment paste (no model) sits right after the warp; it moves objects whole, so the wall around them
    # does not stretch: above the warp over whole frames
    names = [r[0] for r in res.tables[0].rows]
    assert names.index(bench_drag.PASTE_METHOD) == names.index("forward-warp") + 1
    assert got[bench_drag.PASTE_METHOD]["frame_psnr"] > got["forward-warp"]["frame_psnr"] + 1
    rows = {r[0]: r for r in res.tables[0].rows}
    assert rows["broken"][1] == "failed" and "ground truth (tracker floor)" in rows
    assert "sheet.png" in res.plots and res.summary


def test_the_studios_cache_shape_gets_its_own_rows():
    """tiny-cpu gives the studio a cache shape of its own (studio.cache: c1s3w3): transfer and drag score the
    shipped student streamed that way in a row of its own, and `long` streams it too; a preset without a
    studio section adds nothing."""
    from types import SimpleNamespace

    from motionstream.config import load_config
    from motionstream.eval import bench_long, bench_transfer

    cfg = load_config("tiny-cpu")
    rows = bench_transfer.studio_methods(SimpleNamespace(cfg=cfg))
    assert [m.name for m in rows] == ["student studio c1s3w3"]
    assert bench_long.long_bench_config(cfg).configurations[-1] == "c1s3w3"
    plain = {k: v for k, v in cfg.items() if k != "studio"}
    assert bench_transfer.studio_methods(SimpleNamespace(cfg=plain)) == []
    assert "c1s3w3" not in bench_long.long_bench_config(plain).configurations
    both = {**cfg, "eval_long": {"configurations": ["c1s3w3", "c3s1w1"]}}     # already there: not twice
    assert bench_long.long_bench_config(both).configurations == ["c1s3w3", "c3s1w1"]
