"""Real-video folder dataset on the sample media."""

import shutil

import numpy as np
import pytest

from motionstream.data.real import VideoFolderDataset, VideoFolderError, caption_for

W, H, T, GRID = 128, 72, 17, 10


def test_folder_clips_tracks_and_cache(media_dir, tmp_path, monkeypatch):
    folder = tmp_path / "videos"
    folder.mkdir()
    for p in sorted(media_dir.glob("*.mp4")):
        shutil.copy(p, folder / p.name)
    (folder / "carphone_pristine.txt").write_text("a man talks on a phone in a moving car\n")
    ds = VideoFolderDataset(folder, num_frames=T, width=W, height=H, grid=GRID)
    # bigbuckbunny: 5.3 s -> 85 frames at 16 fps -> 5 windows; carphone: 4 s -> 64 frames -> 3 windows
    assert len(ds) == 8
    clip = ds[0]
    assert clip.frames.shape == (T, H, W, 3) and clip.frames.dtype == np.uint8
    assert clip.tracks.tracks.shape == (T, GRID * GRID, 2) and clip.tracks.fps == 16.0
    assert clip.caption == "bigbuckbunny" and ds[len(ds) - 1].caption == "a man talks on a phone in a moving car"
    assert clip.moving_mask.shape == (T, H, W)
    # tracks start on the grid of the clip's own first frame
    np.testing.assert_allclose(ds[1].tracks.tracks[0, 0], [W / GRID / 2, H / GRID / 2], atol=1e-4)
    caches = sorted(folder.glob("*.npz"))
    assert [c.name.split(".")[0] for c in caches] == ["bigbuckbunny", "carphone_pristine"]

    # second open reads the cache: the tracker is never called
    import motionstream.data.real as real

    monkeypatch.setattr(real, "track_frames", lambda *a, **k: pytest.fail("tracker re-run despite cache"))
    again = VideoFolderDataset(folder, num_frames=T, width=W, height=H, grid=GRID)
    assert again[2].tracks == ds[2].tracks


def test_read_only_media_caches_elsewhere_and_errors_are_clear(media_dir, tmp_path):
    ds = VideoFolderDataset(media_dir, num_frames=33, width=W, height=H, grid=GRID, cache_dir=tmp_path)
    assert len(ds) == 3 and len(list(tmp_path.glob("*.npz"))) == 2
    with pytest.raises(VideoFolderError, match="no video files"):
        VideoFolderDataset(tmp_path, num_frames=T, width=W, height=H)
    with pytest.raises(VideoFolderError, match="has 5000 frames"):
        VideoFolderDataset(media_dir, num_frames=5000, width=W, height=H, grid=GRID, cache_dir=tmp_path)


def test_caption_from_name(tmp_path):
    assert caption_for(tmp_path / "big_buck-bunny.mp4") == "big buck bunny"
