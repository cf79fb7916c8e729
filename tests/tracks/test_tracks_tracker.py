import cv2
import numpy as np
import pytest

from motionstream.tracks import TrackError
from motionstream.tracks.sources import grid_points
from motionstream.tracks.tracker import OnlineTracker, track_frames, track_video
from motionstream.video import write_video

W, H, T = 128, 96, 17


def texture(h, w, seed):
    """Smooth random RGB texture (trackable everywhere, like a natural image)."""
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 2)
    return cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def affine_clip():
    """A texture under a known similarity motion (rotation, zoom, sub-pixel translation).
    Returns frames [T, H, W, 3] and 2x3 matrices mapping texture pixel centres to frame pixel centres."""
    big = texture(2 * H, 2 * W, 0)
    frames, mats = [], []
    for t in range(T):
        m = cv2.getRotationMatrix2D((W, H), 0.5 * t, 1 + 0.005 * t)
        m[:, 2] += [1.3 * t - W / 2, 0.6 * t - H / 2]
        frames.append(cv2.warpAffine(big, m, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT))
        mats.append(np.vstack([m, [0, 0, 1]]))
    return np.stack(frames), mats


def test_median_error_below_half_a_pixel_on_known_motion():
    frames, mats = affine_clip()
    ts = track_frames(frames, grid=16, fps=16)
    assert ts.tracks.shape == (T, 256, 2) and (ts.width, ts.height) == (W, H) and ts.role[0] == "transfer"
    errors = []
    for t in range(T):
        # frame-0 pixel -> frame-t pixel; OpenCV maps pixel centres, ours are at +0.5
        m = mats[t] @ np.linalg.inv(mats[0])
        gt = (np.c_[ts.tracks[0] - 0.5, np.ones(len(ts.tracks[0]))] @ m.T)[:, :2] + 0.5
        errors.append(np.linalg.norm(ts.tracks[t] - gt, axis=1)[ts.visibility[t]])
    errors = np.concatenate(errors)
    assert np.median(errors) < 0.5
    assert ts.visibility[-1].mean() > 0.6  # most points survive (some leave the frame)


def test_occluded_points_become_invisible():
    background = texture(H, W, 1)
    patch = texture(40, 40, 2)
    frames = []
    for t in range(T):  # an opaque square slides in from the left over the static background
        f = background.copy()
        x = -40 + 4 * t  # left edge: from fully outside to x = 24
        f[30:70, max(x, 0): max(x + 40, 0)] = patch[:, max(-x, 0):]
        frames.append(f)
    points = grid_points(0, 0, W, H, rows=12, cols=12)
    ts = track_frames(np.stack(frames), points)
    # every point the square passed over (x < 64, 30 <= y < 70) was occluded at some time: lost for good
    swept = (points[:, 0] < 64 - 2) & (points[:, 1] >= 30 + 2) & (points[:, 1] < 70 - 2)
    far = (points[:, 0] > 80) | (points[:, 1] < 20) | (points[:, 1] > 80)
    assert swept.sum() > 20 and far.sum() > 50
    assert not ts.visibility[-1, swept].any()
    assert ts.visibility[-1, far].mean() > 0.9
    # background points stay put while visible
    assert np.abs(ts.tracks[:, far] - ts.tracks[0, far])[ts.visibility[:, far]].max() < 0.5


def test_online_tracker_matches_offline_and_checks_input():
    frames, _ = affine_clip()
    points = grid_points(20, 20, 100, 70, rows=4, cols=5)
    offline = track_frames(frames[:6], points)
    online = OnlineTracker(frames[0], points)
    for t in range(1, 6):
        xy, vis = online.step(frames[t])
        assert xy.dtype == np.float32 and xy.shape == (20, 2) and vis.dtype == bool
        np.testing.assert_array_equal(xy, offline.tracks[t])
        np.testing.assert_array_equal(vis, offline.visibility[t])
    with pytest.raises(TrackError, match="differs"):
        online.step(frames[0][:50])
    with pytest.raises(TrackError, match="uint8"):
        track_frames(frames.astype(np.float32))
    with pytest.raises(TrackError, match=r"\[N, 2\]"):
        OnlineTracker(frames[0], np.zeros((3, 3)))
    # query points outside the first frame never condition
    outside = track_frames(frames[:3], np.array([[-5.0, 10.0], [10.0, 10.0]], np.float32))
    assert outside.visibility[:, 0].tolist() == [False] * 3 and outside.visibility[:, 1].all()


def test_track_video_decodes_resamples_and_tracks(tmp_path):
    frames, _ = affine_clip()
    write_video(tmp_path / "clip.mp4", frames, fps=32, crf=0)
    ts, decoded = track_video(tmp_path / "clip.mp4", grid=6, fps=16, size=(64, 48))
    assert decoded.shape == (9, 48, 64, 3) and ts.num_frames == 9 and ts.fps == 16
    assert (ts.width, ts.height, ts.num_tracks) == (64, 48, 36)
    # at half the size and half the frame rate the clip pans ~1.3 px per output frame
    dx = np.median(np.diff(ts.tracks[:, ts.visibility.all(0), 0], axis=0))
    assert 0.9 < dx < 1.7


def test_bigbuckbunny_tracks_are_coherent(media_dir):
    ts, frames = track_video(media_dir / "bigbuckbunny.mp4", grid=12, fps=16, size=(256, 144), max_frames=9)
    assert frames.shape == (9, 144, 256, 3) and ts.num_tracks == 144
    assert ts.visibility[-1].mean() > 0.6
    # the clip pans slowly: frame-to-frame steps of visible points are small and mostly alike
    steps = np.linalg.norm(np.diff(ts.tracks, axis=0), axis=2)[ts.visibility[1:]]
    assert np.median(steps) < 3


def test_brightness_normalisation_survives_a_flash():
    frames, mats = affine_clip()
    flash = T // 2
    frames = frames.copy()
    frames[flash] = (frames[flash].astype(np.float32) * 0.7 + 70).astype(np.uint8)  # brighter, flatter, unclipped
    plain = track_frames(frames, grid=16, normalize="none")
    normed = track_frames(frames, grid=16)  # default: "meanstd"
    # without normalisation the flash frame fails LK's brightness constancy: most points are lost for good
    assert plain.visibility[-1].mean() < 0.3
    assert normed.visibility[-1].mean() > 0.6
    m = mats[-1] @ np.linalg.inv(mats[0])
    gt = (np.c_[normed.tracks[0] - 0.5, np.ones(len(normed.tracks[0]))] @ m.T)[:, :2] + 0.5
    assert np.median(np.linalg.norm(normed.tracks[-1] - gt, axis=1)[normed.visibility[-1]]) < 0.5
    with pytest.raises(TrackError, match="normalize"):
        track_frames(frames[:2], grid=4, normalize="histogram")
