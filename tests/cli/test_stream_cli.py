"""The application sub-commands (generate --model student, transfer, camera, edit) end to end on tiny
random model folders: each writes a real mp4 that is read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stream_fixtures import FPS, VIDEO_H, VIDEO_W, HashTextEncoder, make_model_folders, moving_square, sample_image

from motionstream.cli import main
from motionstream.video import read_image, read_video, write_image, write_video

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models, one torch thread


SIZE = f"{VIDEO_W}x{VIDEO_H}"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream_cli")
    folders = make_model_folders(root / "models")
    image = root / "image.png"
    write_image(image, sample_image())
    return root, folders, image


@pytest.fixture(autouse=True)
def text_encoder(monkeypatch):
    """The CLI loads the preset's text encoder; record the call and hand back a fast one."""
    import motionstream.models.text as text
    import motionstream.stream.stack as stack

    calls = []

    def load(cfg, *a, **k):
        calls.append(cfg)
        return HashTextEncoder()

    for module in (text, stack):      # the teacher's command looks it up in text, the stream stack in stack
        monkeypatch.setattr(module, "load_text_encoder", load)
    return calls


def run(env, command: str, *extra: str, model: str = "student") -> int:
    root, folders, image = env
    args = [command, "--image", str(image), "--model", str(folders[model]), "--vae", str(folders["vae"]),
            "--tiny-decoder", str(folders["tiny"]), "--size", SIZE, "--prompt", "a bright square", "--no-progress",
            *extra]
    return main(args)


def frames_of(path: Path) -> np.ndarray:
    return read_video(path)[0]


def test_generate_student_from_a_track_file(env, text_encoder, tmp_path):
    from motionstream.tracks.io import save_tracks

    tracks = save_tracks(tmp_path / "square.npz", moving_square(25))
    out = tmp_path / "gen.mp4"
    assert run(env, "generate", "--tracks", str(tracks), "-o", str(out), "--frames", "30", "--draw-tracks") == 0
    video = frames_of(out)
    assert video.shape == (30, VIDEO_H, VIDEO_W, 3)          # beyond the file's 25 frames: unspecified motion
    assert len(text_encoder) == 1 and text_encoder[0]["name"] == "tiny-cpu"


def test_transfer_beyond_the_driving_video(env, tmp_path):
    drive = np.stack([np.roll(sample_image(), 2 * k, axis=1) for k in range(12)])
    video = write_video(tmp_path / "drive.mp4", drive, fps=FPS)
    out = tmp_path / "transfer.mp4"
    assert run(env, "transfer", "--video", str(video), "-o", str(out), "--frames", "45", "--grid", "10") == 0
    assert frames_of(out).shape == (45, VIDEO_H, VIDEO_W, 3)


@pytest.mark.slow
def test_generate_2000_frames(env, tmp_path):
    """--frames far beyond the training horizon (and the track file): 167 chunks through the CLI."""
    from motionstream.tracks.io import save_tracks

    tracks = save_tracks(tmp_path / "square.npz", moving_square(33))
    out = tmp_path / "long.mp4"
    assert run(env, "generate", "--tracks", str(tracks), "-o", str(out), "--frames", "2000", "--cache", "c3s1w1") == 0
    assert len(frames_of(out)) == 2000


def test_transfer_tracker_source_ping_pongs():
    from motionstream.stream.apps import transfer_source
    from motionstream.stream.controls import MotionControls

    drive = np.stack([np.roll(sample_image(), 2 * k, axis=1) for k in range(5)])
    src = transfer_source(drive, FPS, latent_cells=48, grid=10)
    assert [src.frame_index(k) for k in range(10)] == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1]
    controls = MotionControls(VIDEO_W, VIDEO_H, FPS)
    src(controls, 0, 9)
    ts = controls.chunk_tracks(0, 9).tracks
    assert 1 <= ts.num_tracks <= 19                           # the paper's count scaled to 8x6 latent cells
    moved = ts.tracks[4, :, 0] - ts.tracks[0, :, 0]
    vis = ts.visibility[4]
    assert np.median(moved[vis]) == pytest.approx(8.0, abs=1.0)   # 2 px/frame to the right over 4 frames
    assert np.median(ts.tracks[8, vis, 0] - ts.tracks[0, vis, 0]) == pytest.approx(0.0, abs=1.0)  # and back


def test_camera_path_over_depth(env, tmp_path):
    depth = tmp_path / "depth.npy"
    np.save(depth, np.linspace(1.0, 3.0, VIDEO_H * VIDEO_W).reshape(VIDEO_H, VIDEO_W))
    out = tmp_path / "camera.mp4"
    assert run(env, "camera", "--depth", str(depth), "--path", "dolly", "-o", str(out), "--frames", "21",
               "--grid", "12") == 0
    assert frames_of(out).shape == (21, VIDEO_H, VIDEO_W, 3)


def test_edit_writes_image_and_clip(env, tmp_path):
    out = tmp_path / "edit.mp4"
    assert run(env, "edit", "--drag", "28,24:44,24", "--drag", "10,10:12,20", "-o", str(out),
               "--frames", "21", "--radius", "8") == 0
    clip = frames_of(out)
    edited = read_image(out.with_suffix(".png"))
    assert clip.shape == (21, VIDEO_H, VIDEO_W, 3) and edited.shape == (VIDEO_H, VIDEO_W, 3)
    assert np.abs(edited.astype(int) - clip[-1].astype(int)).mean() < 8   # the png is the clip's last frame


def test_track_overlay_piecewise_equals_whole_clip():
    from motionstream.stream.apps import track_overlay
    from motionstream.tracks.draw import draw_tracks, track_colors

    ts = moving_square(30)
    frames = np.repeat(sample_image()[None], 33, 0)
    overlay = track_overlay(ts)
    pieces = [overlay(frames[a:b], a) for a, b in [(0, 9), (9, 21), (21, 33)]]
    whole = draw_tracks(frames[:30], ts, 8, colors=track_colors(ts))
    np.testing.assert_array_equal(np.concatenate(pieces)[:30], whole)
    np.testing.assert_array_equal(np.concatenate(pieces)[30:], frames[30:])   # past the tracks: untouched
    assert not np.array_equal(whole, frames[:30])


def test_edit_tracks_pin_the_rest():
    from motionstream.stream.apps import EDIT_MOVE_FRACTION, edit_tracks

    ts = edit_tracks([(20.0, 20.0, 40.0, 20.0)], 21, VIDEO_W, VIDEO_H, FPS, radius=4.0)
    roles = np.array(ts.role)
    path = roles == "path"
    end = int(np.ceil(20 * EDIT_MOVE_FRACTION))
    np.testing.assert_allclose(ts.tracks[end:, path].mean(1), [[40.0, 20.0]] * (21 - end), atol=1e-4)
    pins = roles == "static"
    assert pins.sum() > 0 and (ts.tracks[-1, pins] == ts.tracks[0, pins]).all()


def test_teacher_segments_reach_any_length(env, tmp_path):
    out = tmp_path / "teacher.mp4"
    assert run(env, "camera", "--depth", str(_flat_depth(tmp_path)), "--path", "pan", "-o", str(out),
               "--frames", "40", "--steps", "1", "--grid", "8", model="teacher") == 0
    assert frames_of(out).shape == (40, VIDEO_H, VIDEO_W, 3)   # 33 + 7 frames: two chained segments


def _flat_depth(tmp_path: Path) -> Path:
    path = tmp_path / "flat.npy"
    np.save(path, np.full((VIDEO_H, VIDEO_W), 2.0))
    return path


def test_user_errors_are_one_line(env, tmp_path, capsys):
    out = str(tmp_path / "x.mp4")
    assert run(env, "edit", "--drag", "1,2-3,4", "-o", out) == 2
    assert "x0,y0:x1,y1" in capsys.readouterr().err
    root, folders, image = env
    code = main(["transfer", "--image", str(image), "--video", str(tmp_path / "missing.mp4"), "-o", out,
                 "--model", str(folders["student"]), "--vae", str(folders["vae"]), "--tiny-decoder",
                 str(folders["tiny"]), "--size", SIZE])
    assert code == 2 and "missing.mp4" in capsys.readouterr().err
    assert run(env, "edit", "--drag", "1,2:3,4", "-o", out, "--size", "60x48") == 2
    assert "multiple of" in capsys.readouterr().err


def test_missing_student_names_the_folder(env, tmp_path, capsys, monkeypatch):
    import motionstream.models.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "WEIGHTS_DIR", tmp_path / "no-weights")   # a checkout without shipped weights
    root, folders, image = env
    depth = root / "depth.npy"
    np.save(depth, np.ones((8, 8)))      # valid inputs: the inputs are checked before the model loads
    code = main(["camera", "--image", str(image), "--depth", str(depth), "-o", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "student-tiny-cpu" in err and "Traceback" not in err
