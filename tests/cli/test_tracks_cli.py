import cv2
import numpy as np
import pytest

from motionstream.cli import main
from motionstream.tracks.io import load_tracks, save_tracks
from motionstream.tracks.sources import drag_tracks
from motionstream.video import read_video, write_image, write_video


@pytest.fixture
def clip(tmp_path):
    """A 12-frame 64x48 clip of a smooth texture panning right by 1 px per frame."""
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.random((48, 96, 3)).astype(np.float32), (0, 0), 2)
    tex = cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    frames = np.stack([tex[:, 20 - t: 84 - t] for t in range(12)])
    return write_video(tmp_path / "clip.mp4", frames, fps=16, crf=0)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_extract_show_convert(tmp_path, capsys, clip):
    code, out, _ = run(capsys, "tracks", "extract", clip, "-o", tmp_path / "t.npz", "--grid", 5,
                       "--overlay", tmp_path / "o.png")
    assert code == 0 and "25 tracks x 12 frames" in out
    ts = load_tracks(tmp_path / "t.npz")
    dx = (ts.tracks[-1] - ts.tracks[0])[ts.visibility[-1], 0]
    assert ts.visibility[-1].mean() > 0.5 and np.median(dx) == pytest.approx(11, abs=0.5)
    assert (tmp_path / "o.png").is_file()

    code, out, _ = run(capsys, "tracks", "show", tmp_path / "t.npz", "--video", clip, "-o", tmp_path / "s.mp4")
    assert code == 0 and read_video(tmp_path / "s.mp4")[0].shape == (12, 48, 64, 3)
    write_image(tmp_path / "img.png", np.zeros((48, 64, 3), np.uint8))
    code, _, _ = run(capsys, "tracks", "show", tmp_path / "t.npz", "--image", tmp_path / "img.png",
                     "-o", tmp_path / "s.png")
    assert code == 0 and cv2.imread(str(tmp_path / "s.png")).any()  # trajectories drawn on black

    code, _, _ = run(capsys, "tracks", "convert", tmp_path / "t.npz", tmp_path / "t.json", "--fps", 8)
    assert code == 0 and load_tracks(tmp_path / "t.json").num_frames == 6
    code, _, _ = run(capsys, "tracks", "convert", tmp_path / "t.npz", tmp_path / "w_tracks.npy")
    assert code == 0
    code, _, err = run(capsys, "tracks", "convert", tmp_path / "w_tracks.npy", tmp_path / "w.npz")
    assert code == 2 and "--size" in err and "Traceback" not in err
    code, _, _ = run(capsys, "tracks", "convert", tmp_path / "w_tracks.npy", tmp_path / "w.npz", "--size", "64x48")
    assert code == 0 and np.array_equal(load_tracks(tmp_path / "w.npz").tracks, ts.tracks)


def test_camera_command(tmp_path, capsys):
    write_image(tmp_path / "img.png", np.full((48, 64, 3), 90, np.uint8))
    depth = np.zeros((48, 64), np.uint8)
    depth[16:32, 24:40] = 255  # a near box (bright = near in disparity mode)
    cv2.imwrite(str(tmp_path / "depth.png"), depth)
    code, out, _ = run(capsys, "tracks", "camera", "--image", tmp_path / "img.png", "--depth", tmp_path / "depth.png",
                       "--path", "truck", "--frames", 9, "--grid", 10, "-o", tmp_path / "cam.npz",
                       "--overlay", tmp_path / "cam.mp4")
    assert code == 0 and (tmp_path / "cam.mp4").is_file()
    ts = load_tracks(tmp_path / "cam.npz")
    assert ts.num_frames == 9 and ts.num_tracks == 100 and ts.role[0] == "camera"
    # parallax: the near box moves further than the far background
    motion = np.abs(ts.tracks[-1, :, 0] - ts.tracks[0, :, 0])
    box = (ts.tracks[0, :, 0] > 24) & (ts.tracks[0, :, 0] < 40) & (ts.tracks[0, :, 1] > 16) & (ts.tracks[0, :, 1] < 32)
    assert motion[box].min() > 2 * motion[~box].max()
    np.save(tmp_path / "poses.npy", np.repeat(np.eye(4)[None], 3, 0))
    code, _, _ = run(capsys, "tracks", "camera", "--image", tmp_path / "img.png", "--depth", tmp_path / "depth.png",
                     "--poses", tmp_path / "poses.npy", "-o", tmp_path / "still.npz")
    assert code == 0 and load_tracks(tmp_path / "still.npz").num_frames == 3
    code, _, err = run(capsys, "tracks", "camera", "--image", tmp_path / "img.png", "--depth", tmp_path / "depth.png",
                       "-o", tmp_path / "x.npz")
    assert code == 2 and "--path" in err


@pytest.mark.parametrize("argv, message", [
    (["tracks", "extract", "{tmp}/missing.mp4", "-o", "{tmp}/t.npz"], "video not found"),
    (["tracks", "extract", "{clip}", "-o", "{tmp}/t.npz", "--size", "big"], "WIDTHxHEIGHT"),
    (["tracks", "extract", "{clip}", "-o", "{tmp}/t.npz", "--grid", "0"], "--grid"),
    (["tracks", "extract", "{clip}", "-o", "{tmp}/t.txt"], "unknown track file type"),
    (["tracks", "show", "{tmp}/drag.npz", "-o", "{tmp}/o.mp4"], "exactly one of --video or --image"),
    (["tracks", "show", "{tmp}/nope.npz", "--image", "{tmp}/i.png", "-o", "{tmp}/o.mp4"], "track file not found"),
    (["tracks", "show", "{tmp}/drag.npz", "--image", "{tmp}/i.png", "-o", "{tmp}/o.mp4"], "image not found"),
    (["demo", "--video", "{tmp}/nope.mp4"], "sample video not found"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, clip, argv, message):
    save_tracks(tmp_path / "drag.npz", drag_tracks([(0, 5, 5), (0.5, 20, 5)], (5, 5), 9, 64, 48, 16))
    argv = [a.format(tmp=tmp_path, clip=clip) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_demo_writes_an_overlay(tmp_path, capsys, clip):
    code, out, _ = run(capsys, "demo", "--video", clip, "--size", "64x48", "--grid", 6, "-o", tmp_path / "demo.mp4")
    assert code == 0 and str(tmp_path / "demo.mp4") in out
    frames, fps = read_video(tmp_path / "demo.mp4")
    assert frames.shape == (12, 48, 64, 3) and fps == pytest.approx(16)
    assert load_tracks(tmp_path / "demo.npz").num_tracks == 36
