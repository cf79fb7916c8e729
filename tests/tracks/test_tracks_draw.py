import numpy as np
import pytest

from motionstream.tracks import TrackError, TrackSet
from motionstream.tracks.draw import ROLE_COLORS, draw_tracks, save_overlay, track_colors
from motionstream.video import read_video


def three_roles():
    # a drag moving right, a static point, a path moving down; all visible except the path at t=3
    t = np.arange(4, dtype=np.float32)
    tracks = np.stack([np.stack([10 + 5 * t, np.full(4, 10)], 1), np.stack([np.full(4, 40), np.full(4, 30)], 1),
                       np.stack([np.full(4, 50), 5 + 4 * t], 1)], 1).astype(np.float32)
    vis = np.ones((4, 3), bool)
    vis[3, 2] = False
    return TrackSet(tracks=tracks, visibility=vis, width=64, height=48, fps=16, role=["drag", "static", "path"])


def test_dots_and_tails_use_role_colours():
    ts = three_roles()
    frames = np.zeros((4, 48, 64, 3), np.uint8)
    out = draw_tracks(frames, ts, tail=3, radius=1)
    assert out.shape == frames.shape and out.dtype == np.uint8 and not frames.any()  # input untouched
    assert out[3, 10, 25].tolist() == list(ROLE_COLORS["drag"])          # dot at the drag's last position
    assert out[3, 30, 40].tolist() == list(ROLE_COLORS["static"])
    assert out[2, 13, 50].tolist() == list(ROLE_COLORS["path"])          # path dot at t=2 (y = 13)
    assert not out[3, 15:20, 49:52].any()                                # invisible at t=3: no dot, no new tail
    # the drag's tail: pixels between x=10 and x=25 on its row are green-ish (older segments darker)
    row = out[3, 10, 12:24]
    assert (row[:, 1] > 100).all() and (row[:, 0] == 0).all() and (row[:, 2] == 0).all()
    assert not draw_tracks(frames, ts, tail=0, radius=1)[3, 10, 12:20].any()  # no tail: only dots


def test_draw_on_a_repeated_image_and_rescaled_tracks():
    ts = three_roles()
    image = np.full((96, 128, 3), 255, np.uint8)  # twice the tracks' size: positions scale up
    out = draw_tracks(image, ts, tail=0, radius=1)
    assert out.shape == (4, 96, 128, 3)
    assert out[0, 60, 80].tolist() == list(ROLE_COLORS["static"])
    with pytest.raises(TrackError, match="frames but the tracks"):
        draw_tracks(np.zeros((2, 48, 64, 3), np.uint8), ts)
    with pytest.raises(TrackError, match="uint8"):
        draw_tracks(np.zeros((4, 48, 64, 3), np.float32), ts)


def test_other_roles_get_hue_by_position():
    tracks = np.array([[[2, 2], [62, 2], [2, 46]]], np.float32)
    ts = TrackSet(tracks=tracks, visibility=np.ones((1, 3), bool), width=64, height=48, fps=16)
    colors = track_colors(ts)
    assert len({tuple(c) for c in colors.tolist()}) == 3  # left/right differ in hue, top/bottom in brightness


def test_save_overlay_png_and_mp4(tmp_path):
    ts = three_roles()
    frames = np.full((4, 48, 64, 3), 128, np.uint8)
    save_overlay(tmp_path / "o.mp4", frames, ts, progress=False)
    video, fps = read_video(tmp_path / "o.mp4")
    assert video.shape == (4, 48, 64, 3) and fps == pytest.approx(16)
    png = save_overlay(tmp_path / "o.png", frames[0], ts, frame_index=2)
    assert png.is_file()
