import numpy as np
import pytest

from motionstream.tracks import TrackError
from motionstream.tracks.sources import drag_tracks, grid_points, keyframe_path, static_grid


def test_grid_points_rows_cols_and_spacing():
    pts = grid_points(0, 0, 100, 50, rows=2, cols=4)
    assert pts.dtype == np.float32 and pts.shape == (8, 2)
    assert pts[:4, 0].tolist() == [12.5, 37.5, 62.5, 87.5] and pts[:4, 1].tolist() == [12.5] * 4
    assert pts[4:, 1].tolist() == [37.5] * 4                        # row-major: y, then x
    sp = grid_points(10, 10, 30, 20, spacing=5)
    assert sorted(set(sp[:, 0].tolist())) == [10, 15, 20, 25, 30] and sorted(set(sp[:, 1].tolist())) == [10, 15, 20]
    odd = grid_points(0, 0, 12, 0, spacing=5)                       # 3 fit, centred: 1, 6, 11
    assert odd[:, 0].tolist() == [1, 6, 11]
    with pytest.raises(TrackError, match="not both"):
        grid_points(0, 0, 1, 1, rows=2, spacing=1)
    with pytest.raises(TrackError, match="rows and cols"):
        grid_points(0, 0, 1, 1)
    with pytest.raises(TrackError, match="x0 <= x1"):
        grid_points(5, 0, 1, 1, rows=2)


def test_static_grid_is_pinned_and_red():
    pts = grid_points(0, 0, 64, 32, rows=3, cols=3)
    ts = static_grid(pts, 10, 64, 32, 16)
    assert ts.num_frames == 10 and ts.role == ["static"] * 9 and ts.visibility.all()
    assert (ts.tracks == pts[None]).all()
    with pytest.raises(TrackError, match=r"\[N, 2\]"):
        static_grid(np.zeros((3,)), 10, 64, 32, 16)


def test_drag_patch_follows_pointer_relative_to_first_sample():
    # the pointer starts 1 px off the grab point, moves +40 px in x during 0.25..0.75 s, then stops
    samples = [(0.25, 51, 30), (0.75, 91, 30)]
    ts = drag_tracks(samples, grab_xy=(50, 30), num_frames=17, width=128, height=64, fps=16,
                     patch_radius=8, spacing=4)
    assert ts.role == ["drag"] * ts.num_tracks
    # patch: points 4 px apart within 8 px of the grab point, grab point included
    d = np.hypot(ts.tracks[0, :, 0] - 50, ts.tracks[0, :, 1] - 30)
    assert d.max() <= 8 and 0 in d.tolist() and ts.num_tracks == 13
    offset = ts.tracks - ts.tracks[0]
    assert np.allclose(offset[:5], 0)                          # rests until the first sample (frame 4 = 0.25 s)
    assert np.allclose(offset[8, :, 0], 20) and np.allclose(offset[8, :, 1], 0)   # halfway at 0.5 s
    assert np.allclose(offset[12:, :, 0], 40)                  # released at 0.75 s, stays
    assert ts.visibility.all()


def test_keyframe_path_interpolates_absolute_keyframes():
    ts = keyframe_path([(0.0, 10, 10), (1.0, 26, 42)], num_frames=17, width=64, height=64, fps=16)
    assert ts.num_tracks == 1 and ts.role == ["path"]
    np.testing.assert_allclose(ts.tracks[:, 0], np.stack([10 + np.arange(17), 10 + 2 * np.arange(17)], 1))
    patch = keyframe_path([(0.0, 10, 10), (0.5, 20, 10)], 9, 64, 64, 16, patch_radius=4, spacing=4)
    assert patch.num_tracks == 5 and np.allclose(patch.tracks[-1] - patch.tracks[0], [10, 0])
    with pytest.raises(TrackError, match="t_seconds"):
        keyframe_path([(0.0, 1)], 9, 64, 64, 16)
    with pytest.raises(TrackError, match="NaN"):
        keyframe_path([(0.0, 1, np.nan)], 9, 64, 64, 16)
