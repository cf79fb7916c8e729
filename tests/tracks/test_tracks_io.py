import json

import numpy as np
import pytest
import torch

from motionstream.tracks import TrackError, TrackSet
from motionstream.tracks.io import (
    from_ati, from_cotracker, from_tapvid, from_wanmove, load_tracks, resample, save_tracks, to_ati, to_cotracker,
    to_tapvid, to_wanmove,
)


def random_ts(t=9, n=5, seed=0, **kw):
    rng = np.random.default_rng(seed)
    args = dict(tracks=rng.uniform(-5, 70, (t, n, 2)).astype(np.float32), visibility=rng.random((t, n)) > 0.3,
                width=64, height=48, fps=16)
    args.update(kw)
    return TrackSet(**args)


def test_npz_roundtrip_is_exact_with_ids_and_roles(tmp_path):
    ts = random_ts(ids=np.array([3, 1, 4, 1, 5]), role=["drag", "static", "path", "transfer", "camera"])
    back = load_tracks(save_tracks(tmp_path / "t.npz", ts))
    assert back == ts
    plain = random_ts(seed=1)
    assert load_tracks(save_tracks(tmp_path / "p.npz", plain)) == plain


def test_keyframe_json_roundtrip_and_compression(tmp_path):
    ts = random_ts(ids=np.arange(5), role=["path"] * 5)
    back = load_tracks(save_tracks(tmp_path / "t.json", ts))
    np.testing.assert_allclose(back.tracks, ts.tracks, atol=1e-3)
    assert np.array_equal(back.visibility, ts.visibility)
    assert (back.ids.tolist(), back.role, back.fps, back.width) == (ts.ids.tolist(), ts.role, ts.fps, ts.width)
    # a straight, steady track needs only its two end keyframes; a visibility change keeps frames around it
    t = np.arange(20, dtype=np.float32)
    line = np.stack([3 + 2 * t, 5 + 0.5 * t], 1)[:, None]
    vis = np.ones((20, 1), bool)
    vis[12:] = False
    data = json.loads(save_tracks(tmp_path / "l.json", TrackSet(tracks=line, visibility=vis, width=64, height=48,
                                                                fps=16)).read_text())
    frames = [k[0] for k in data["tracks"][0]["keyframes"]]
    assert frames[0] == 0 and frames[-1] == 19 and len(frames) <= 4
    back = load_tracks(tmp_path / "l.json")
    np.testing.assert_allclose(back.tracks, line, atol=1e-3)
    assert np.array_equal(back.visibility, vis)


def test_keyframe_json_interpolates_sparse_keyframes(tmp_path):
    doc = {"fps": 16, "width": 100, "height": 50, "num_frames": 12,
           "tracks": [{"keyframes": [[2, 10, 10, 1], [6, 30, 20, 1], [8, 30, 20, 0]], "role": "path"},
                      {"keyframes": [[0, 5, 5, 1]]}]}
    (tmp_path / "k.json").write_text(json.dumps(doc))
    ts = load_tracks(tmp_path / "k.json")
    assert ts.tracks.shape == (12, 2, 2) and ts.role == ["path", "path"]
    assert ts.tracks[0, 0].tolist() == [10, 10]            # held before the first keyframe
    assert ts.tracks[4, 0].tolist() == [20, 15]            # halfway between t=2 and t=6
    assert ts.tracks[11, 0].tolist() == [30, 20]           # held after the last keyframe
    # visibility of the nearest keyframe (tie at t=7 goes to the earlier one)
    assert ts.visibility[:, 0].tolist() == [True] * 8 + [False] * 4
    assert (ts.tracks[:, 1] == 5).all() and ts.visibility[:, 1].all()


@pytest.mark.parametrize("doc, message", [
    ({"fps": 16, "width": 10, "tracks": [{"keyframes": [[0, 1, 1, 1]]}]}, "missing"),
    ({"fps": 16, "width": 10, "height": 10, "tracks": []}, "non-empty"),
    ({"fps": 16, "width": 10, "height": 10, "tracks": [{"keyframes": [[0, 1]]}]}, "keyframes"),
    ({"fps": 0, "width": 10, "height": 10, "tracks": [{"keyframes": [[0, 1, 1, 1]]}]}, "fps"),
    ({"fps": 16, "width": 10, "height": 10, "tracks": [{"keyframes": [[0, 1, 1, 1]], "role": "bogus"}]}, "roles"),
])
def test_bad_keyframe_json_is_a_clear_error(tmp_path, doc, message):
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(TrackError, match=message):
        load_tracks(tmp_path / "bad.json")


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(TrackError, match="not found"):
        load_tracks(tmp_path / "missing.npz")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(TrackError, match="unknown track file type"):
        load_tracks(tmp_path / "x.txt")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(TrackError, match="not valid JSON"):
        load_tracks(tmp_path / "broken.json")
    np.savez(tmp_path / "nan.npz", tracks=np.full((2, 1, 2), np.nan, np.float32), visibility=np.ones((2, 1), bool),
             width=8, height=8, fps=16)
    with pytest.raises(TrackError, match="NaN"):
        load_tracks(tmp_path / "nan.npz")
    np.savez(tmp_path / "other.npz", foo=np.zeros(3))
    with pytest.raises(TrackError, match="expected tracks"):
        load_tracks(tmp_path / "other.npz")


def test_cotracker_adapter_both_ways():
    ts = random_ts()
    tracks, vis = to_cotracker(ts)
    assert tracks.shape == (1, 9, 5, 2) and vis.shape == (1, 9, 5) and vis.dtype == torch.bool
    back = from_cotracker(tracks, vis, 64, 48, fps=16)
    assert np.array_equal(back.tracks, ts.tracks) and np.array_equal(back.visibility, ts.visibility)
    assert back.role == ["transfer"] * 5
    # probabilities (CoTracker3's visibility output) are visible above 0.5; batch index picks the clip
    probs = torch.stack([torch.zeros(9, 5), vis[0].float() * 0.9 + 0.05])
    two = from_cotracker(torch.cat([tracks, tracks]), probs, 64, 48, batch_index=1)
    assert np.array_equal(two.visibility, ts.visibility)


def test_tapvid_adapter_both_ways(tmp_path):
    ts = random_ts()
    data = to_tapvid(ts)
    assert data["points"].shape == (5, 9, 2) and data["occluded"].shape == (5, 9)
    # normalized coordinates: x / width, y / height
    np.testing.assert_allclose(data["points"][2, 3], ts.tracks[3, 2] / [64, 48], rtol=1e-6)
    back = from_tapvid({**data, "video": np.zeros((9, 48, 64, 3), np.uint8)}, fps=16)
    np.testing.assert_allclose(back.tracks, ts.tracks, atol=1e-4)
    assert np.array_equal(back.visibility, ts.visibility)
    with pytest.raises(TrackError, match="width and height"):
        from_tapvid(data, fps=16)
    # a TAP-Vid .npz loads through load_tracks too
    np.savez(tmp_path / "tapvid.npz", width=64, height=48, fps=24, **data)
    loaded = load_tracks(tmp_path / "tapvid.npz")
    assert loaded.fps == 24
    np.testing.assert_allclose(loaded.tracks, ts.tracks, atol=1e-4)


def test_wanmove_npy_pair_roundtrip(tmp_path):
    ts = random_ts()
    tracks, vis = to_wanmove(ts)
    assert tracks.shape == (9, 5, 2) and vis.shape == (9, 5)
    path = save_tracks(tmp_path / "clip_tracks.npy", ts)
    assert (tmp_path / "clip_visibility.npy").is_file()
    with pytest.raises(TrackError, match="image size"):
        load_tracks(path)
    back = load_tracks(path, width=64, height=48)
    assert back == TrackSet(tracks=ts.tracks, visibility=ts.visibility, width=64, height=48, fps=16)
    # Wan-Move also stores a leading batch axis
    batched = from_wanmove(tracks[None], vis[None], 64, 48)
    assert np.array_equal(batched.tracks, ts.tracks)


def test_ati_json_roundtrip(tmp_path):
    ts = random_ts()
    data = to_ati(ts)
    assert len(data) == 5 and len(data[0]) == 9 and set(data[0][0]) >= {"x", "y"}
    back = load_tracks(save_tracks(tmp_path / "t.ati.json", ts), width=64, height=48, source_fps=16)
    np.testing.assert_array_equal(back.tracks, ts.tracks)
    assert np.array_equal(back.visibility, ts.visibility)
    # plain ATI (no visibility key), tracks of unequal length: padded by holding, invisible
    short = from_ati([[{"x": 1, "y": 2}, {"x": 3, "y": 4}], [{"x": 5, "y": 6}]], 10, 10)
    assert short.tracks[:, 1].tolist() == [[5, 6], [5, 6]] and short.visibility[:, 1].tolist() == [True, False]
    with pytest.raises(TrackError, match="'x' and 'y'"):
        from_ati([[{"x": 1}]], 10, 10)


def test_resample_24_to_16_agrees_at_shared_times(tmp_path):
    # smooth motion at 24 fps over 2 s (49 frames); the 16 fps resample holds 33 frames
    t24 = np.arange(49) / 24
    xy = np.stack([10 + 20 * np.sin(t24), 5 + 7 * t24 ** 2], 1)[:, None].astype(np.float32)
    vis = np.ones((49, 1), bool)
    vis[30:] = False
    ts24 = TrackSet(tracks=xy, visibility=vis, width=64, height=48, fps=24)
    ts16 = load_tracks(save_tracks(tmp_path / "t24.npz", ts24), fps=16)
    assert ts16.fps == 16 and ts16.num_frames == 33
    # shared times k/8 s: 24 fps frame 3k == 16 fps frame 2k
    np.testing.assert_allclose(ts16.tracks[::2], ts24.tracks[::3], atol=1e-5)
    assert np.array_equal(ts16.visibility[::2], ts24.visibility[::3])
    # in between, positions are linear interpolations: 16 fps frame 1 = 24 fps frame 1.5
    np.testing.assert_allclose(ts16.tracks[1], (ts24.tracks[1] + ts24.tracks[2]) / 2, atol=1e-5)
    # and back up to 24 fps the shared times still agree
    np.testing.assert_allclose(resample(ts16, 24).tracks[::3], ts24.tracks[::3], atol=1e-5)
    with pytest.raises(TrackError, match="fps"):
        resample(ts24, 0)
