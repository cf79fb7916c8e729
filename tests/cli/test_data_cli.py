"""`motionstream data synth | stats | preview` end to end on tiny clips."""

from motionstream.cli import main
from motionstream.video import read_video


def test_synth_stats_preview(tmp_path, capsys):
    out = tmp_path / "shards"
    args = ["data", "synth", "--out", str(out), "--split", "val", "--n", "3", "--frames", "4", "--size", "64x36",
            "--workers", "1", "--clips-per-shard", "2"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "val-00000", "val-00001"]
    assert main(args) == 0  # resumed: nothing left to render
    capsys.readouterr()
    assert main(["data", "stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 val clips in 2 shards, 4 frames 64x36" in text and "visible" in text
    video = tmp_path / "grid.mp4"
    assert main(["data", "preview", str(out), "-o", str(video)]) == 0
    frames, fps = read_video(video)
    assert frames.shape == (4, 4 * 36, 4 * 64, 3) and fps == 16
    assert frames[:, 2 * 36:].max() < 40 and frames[:, :36].mean() > 10  # 3 clips tiled, the rest black


def test_bad_input_is_one_line_error(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--n", "2", "--size", "64by36"]) == 2
    assert "--size must look like 256x144" in capsys.readouterr().err
    assert main(["data", "stats", str(tmp_path / "nothing")]) == 2
    assert "no shard folder" in capsys.readouterr().err
    main(["data", "synth", "--out", str(tmp_path / "a"), "--n", "1", "--frames", "2", "--size", "32x24", "--workers", "1"])
    capsys.readouterr()
    assert main(["data", "synth", "--out", str(tmp_path / "a"), "--n", "1", "--frames", "3", "--size", "32x24",
                 "--workers", "1"]) == 2
    assert "different num_frames" in capsys.readouterr().err
