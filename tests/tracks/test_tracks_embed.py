import numpy as np
import pytest
import torch

from motionstream.config import load_config, section
from motionstream.tracks import TrackError, TrackSet
from motionstream.tracks.embed import (
    TracksConfig, apply_frame_mask, latent_frame_index, latent_grid, mid_frame_mask, num_latent_frames, rasterize,
    sample_track_subset, track_counts, track_id_embedding, with_ids,
)


def test_sinusoidal_embedding_values():
    emb = track_id_embedding(np.array([0, 1, 7, 9999]), dim=8)
    assert emb.dtype == np.float32 and emb.shape == (4, 8)
    assert emb[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]              # sin(0) | cos(0)
    freqs = 10000.0 ** (-np.arange(4) * 2 / 8)                        # 1, 0.1, 0.01, 0.001
    np.testing.assert_allclose(emb[2], np.concatenate([np.sin(7 * freqs), np.cos(7 * freqs)]), rtol=1e-6)
    big = track_id_embedding(np.arange(10000), 64)
    assert np.abs(big).max() <= 1
    # distinct IDs give distinct embeddings (no two tracks look alike to the model)
    gram = big[:500] @ big[:500].T
    assert (gram - np.diag(np.diag(gram))).max() < gram.diagonal().min() - 1
    with pytest.raises(TrackError, match="even"):
        track_id_embedding(np.arange(3), 7)
    with pytest.raises(TrackError, match="integer"):
        track_id_embedding(np.array([0.5]), 8)


def test_rasterize_hand_checked_case_and_collision_sum():
    # 2 frames, 20 x 12 image, stride 8 -> 2 x 3 cells (ceil)
    tracks = np.array([[[3.0, 2.0], [17.0, 9.0], [5.9, 7.9], [-1.0, 4.0]],
                       [[9.0, 2.0], [19.9, 11.9], [12.0, 4.0], [8.0, 8.0]]], np.float32)
    vis = np.array([[True, True, True, True], [True, True, True, False]])
    ts = TrackSet(tracks=tracks, visibility=vis, width=20, height=12, fps=16, ids=np.array([5, 11, 42, 3]))
    c = rasterize(ts, stride=8, dim=4)
    phi = track_id_embedding(np.array([5, 11, 42, 3]), 4)
    assert c.shape == (2, 2, 3, 4) and c.dtype == np.float32
    expected = np.zeros((2, 2, 3, 4), np.float32)
    expected[0, 0, 0] = phi[0] + phi[2]          # tracks 0 and 2 collide in cell (0, 0): summed
    expected[0, 1, 2] = phi[1]                   # (17, 9) -> row 1, col 2
    # track 3 is outside the image at t=0 and invisible at t=1: contributes nothing
    expected[1, 0, 1] = phi[0] + phi[2]          # (9, 2) and (12, 4) -> cell (0, 1)
    expected[1, 1, 2] = phi[1]                   # (19.9, 11.9): last partial cell
    np.testing.assert_allclose(c, expected, atol=1e-6)
    # explicit ids override ts.ids; torch shares the memory
    other = rasterize(ts, 8, 4, ids=np.array([1, 2, 3, 4]))
    np.testing.assert_allclose(other[0, 1, 2], track_id_embedding(np.array([2]), 4)[0])
    assert torch.from_numpy(c).shape == (2, 2, 3, 4)


def test_rasterize_without_ids_is_deterministic_unless_given_an_rng():
    rng = np.random.default_rng(0)
    ts = TrackSet(tracks=rng.uniform(0, 32, (3, 50, 2)).astype(np.float32), visibility=np.ones((3, 50), bool),
                  width=32, height=32, fps=16)
    a, b = rasterize(ts, 8, 16), rasterize(ts, 8, 16)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, rasterize(ts, 8, 16, rng=np.random.default_rng(1)))
    ids = with_ids(ts, np.random.default_rng(3)).ids
    assert len(set(ids.tolist())) == 50 and ids.min() >= 0 and ids.max() < TracksConfig.id_range
    # every visible in-frame point lands somewhere: the sum over cells is the sum of embeddings
    np.testing.assert_allclose(a.sum((1, 2)), np.repeat(track_id_embedding(with_ids(ts).ids, 16).sum(0)[None], 3, 0),
                               atol=1e-4)


def test_track_subset_counts_scale_with_latent_cells():
    assert track_counts(None) == (1000, 2500)
    assert track_counts(104 * 60) == (1000, 2500)
    rows, cols = latent_grid(256, 144, 8)
    assert (rows, cols) == (18, 32)
    assert track_counts(rows * cols) == (round(1000 * 576 / 6240), round(2500 * 576 / 6240))  # (92, 231)
    assert track_counts(1) == (1, 1)
    rng = np.random.default_rng(0)
    ts = TrackSet(tracks=rng.uniform(0, 64, (5, 400, 2)).astype(np.float32), visibility=np.ones((5, 400), bool),
                  width=256, height=144, fps=16, role=["transfer"] * 400)
    counts = set()
    for _ in range(30):
        sub = sample_track_subset(ts, rng, cells=rows * cols)
        assert 92 <= sub.num_tracks <= 231 and sub.ids is not None and len(set(sub.ids.tolist())) == sub.num_tracks
        counts.add(sub.num_tracks)
        # rows of the subset are rows of the original
        assert np.isin(sub.tracks[0, :, 0], ts.tracks[0, :, 0]).all()
    assert len(counts) > 10
    assert sample_track_subset(ts, rng).num_tracks == 400  # asks for >= 1000: takes all there are
    kept = TrackSet(tracks=ts.tracks, visibility=ts.visibility, width=256, height=144, fps=16, ids=np.arange(400) * 3)
    assert (sample_track_subset(kept, rng, cells=rows * cols).ids % 3 == 0).all()


def test_mid_frame_mask_never_masks_frame_zero():
    rng = np.random.default_rng(0)
    masks = np.stack([mid_frame_mask(21, rng, p=0.2) for _ in range(2000)])
    assert masks.dtype == bool and masks.shape == (2000, 21)
    assert not masks[:, 0].any()
    assert abs(masks[:, 1:].mean() - 0.2) < 0.01
    assert not mid_frame_mask(21, rng, p=0.0).any() and mid_frame_mask(21, rng, p=1.0)[1:].all()
    with pytest.raises(TrackError, match="probability"):
        mid_frame_mask(5, rng, p=1.5)


def test_vae_temporal_layout_and_apply_frame_mask():
    assert num_latent_frames(81) == 21 and num_latent_frames(1) == 1 and num_latent_frames(5) == 2
    assert latent_frame_index(10).tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    cond = np.arange(1, 10, dtype=np.float32)[:, None, None, None] * np.ones((9, 2, 3, 4), np.float32)
    mask = np.array([False, True, False])  # zero latent frame 1 = video frames 1..4
    out = apply_frame_mask(cond, mask)
    assert out[:, 0, 0, 0].tolist() == [1, 0, 0, 0, 0, 6, 7, 8, 9]
    assert cond[1, 0, 0, 0] == 2  # input untouched
    t = apply_frame_mask(torch.from_numpy(cond), np.array([False, False, True]))
    assert isinstance(t, torch.Tensor) and t[:, 0, 0, 0].tolist() == [1, 2, 3, 4, 5, 0, 0, 0, 0]
    with pytest.raises(TrackError, match="latent frames"):
        apply_frame_mask(cond, np.array([False, True]))


def test_tracks_config_section_matches_the_preset():
    cfg = section(load_config("tiny-cpu"), "tracks", TracksConfig)
    assert cfg.embed_dim == 64 and cfg.grid_size == 50 and (cfg.min_tracks, cfg.max_tracks) == (1000, 2500)
    assert cfg.mask_prob == 0.2
