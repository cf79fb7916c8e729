import numpy as np
import pytest

from motionstream.video import VideoError, read_video, write_video


def test_write_read_roundtrip_and_fps_resample(tmp_path):
    t = np.arange(24)
    frames = np.zeros((24, 32, 48, 3), np.uint8)
    frames[..., 0] = (t * 10)[:, None, None]  # frame index encoded in red
    write_video(tmp_path / "a.mp4", frames, fps=24, crf=0)
    back, fps = read_video(tmp_path / "a.mp4")
    assert back.shape == frames.shape and fps == pytest.approx(24)
    assert np.abs(back[..., 0].astype(int).mean((1, 2)) - t * 10).max() < 3
    down, fps16 = read_video(tmp_path / "a.mp4", fps=16)
    assert fps16 == 16 and len(down) == 16
    # output frame k is at time k/16: the nearest source frame is round(k * 24 / 16)
    src = np.round(np.arange(16) * 1.5 + 1e-6).astype(int).clip(max=23)
    assert np.abs(down[..., 0].astype(int).mean((1, 2)) - src * 10).max() < 3


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        read_video(tmp_path / "nope.mp4")
