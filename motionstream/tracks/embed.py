"""The motion conditioning signal c_m (paper Sec. 3.1, Eq. 1) and its training-time helpers.

Every track n gets a sinusoidal embedding phi_n (d = 64) of a random integer ID, and is written
into the latent grid at its (downsampled) position in every video frame where it conditions:

    c_m[t, floor(y_t^n / s), floor(x_t^n / s)] += v[t, n] * phi_n          (Eq. 1)

c_m is float32 [T, ceil(H / s), ceil(W / s), d] at the *video* frame rate; the track head (owned by
the DiT) compresses time 4x with the VAE's layout. Collision rule: when several tracks land in one
cell in one frame their embeddings are **summed** (as in Wan-Move's reference rasterizer); a cell
holding one track is exactly phi_n, an empty cell is 0. Invisible points and points outside the
image contribute nothing.

Temporal layout of the VAE (temporal stride 4): latent frame 0 = video frame 0, latent frame k >= 1
= video frames 4k-3 .. 4k, so T = 4F - 3 video frames make F latent frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from motionstream.tracks.trackset import TrackError, TrackSet

PAPER_LATENT_CELLS = 104 * 60  # 832 x 480 at VAE stride 8: the grid the paper's 1000-2500 track counts are for
VAE_TEMPORAL_STRIDE = 4        # video frames per latent frame after the first (Wan VAE layout)
EMBED_BASE = 10000.0           # sinusoidal period base, as in transformer position encodings


@dataclass
class TracksConfig:
    """The `tracks` section of a config preset (see configs/tiny-cpu.yaml)."""

    embed_dim: int = 64        # d of the sinusoidal ID embedding phi_n
    grid_size: int = 50        # tracks come from a grid_size x grid_size grid on frame 0
    min_tracks: int = 1000     # random subset per training clip, scaled by latent cells / PAPER_LATENT_CELLS
    max_tracks: int = 2500
    mask_prob: float = 0.2     # stochastic mid-frame masking (second fine-tuning phase)
    id_range: int = 10000      # track IDs are distinct integers drawn from [0, id_range)


def track_id_embedding(ids: np.ndarray, dim: int = 64) -> np.ndarray:
    """Sinusoidal embedding of integer track IDs: int [N] -> float32 [N, dim] in [-1, 1].

    phi(id)[j] = sin(id * w_j), phi(id)[dim/2 + j] = cos(id * w_j), w_j = EMBED_BASE^(-2j / dim)."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise TrackError(f"ids must be an integer array [N], got {ids.dtype} {ids.shape}")
    if dim < 2 or dim % 2:
        raise TrackError(f"embedding dim must be even and >= 2, got {dim}")
    freqs = EMBED_BASE ** (-np.arange(dim // 2) * 2.0 / dim)
    angles = ids.astype(np.float64)[:, None] * freqs  # float64: large IDs keep their precision
    return np.concatenate([np.sin(angles), np.cos(angles)], 1).astype(np.float32)


def random_ids(num: int, rng: np.random.Generator, id_range: int = TracksConfig.id_range) -> np.ndarray:
    """int64 [num] distinct random track IDs from [0, id_range)."""
    if num > id_range:
        raise TrackError(f"cannot draw {num} distinct IDs from [0, {id_range})")
    return rng.choice(id_range, size=num, replace=False).astype(np.int64)


def with_ids(ts: TrackSet, rng: np.random.Generator | None = None, id_range: int = TracksConfig.id_range) -> TrackSet:
    """`ts` itself when it has IDs, else a copy with distinct random IDs drawn from `rng`
    (default: a fixed seed, so the same TrackSet always gets the same IDs, e.g. across streamed chunks)."""
    if ts.ids is not None:
        return ts
    rng = np.random.default_rng(0) if rng is None else rng
    return TrackSet(tracks=ts.tracks, visibility=ts.visibility, width=ts.width, height=ts.height, fps=ts.fps,
                    ids=random_ids(ts.num_tracks, rng, id_range), role=ts.role)


def latent_grid(width: int, height: int, stride: int) -> tuple[int, int]:
    """(rows, cols) = (ceil(H / s), ceil(W / s)) of the latent grid."""
    return -(-height // stride), -(-width // stride)


def rasterize(ts: TrackSet, stride: int, dim: int = 64, ids: np.ndarray | None = None,
              rng: np.random.Generator | None = None) -> np.ndarray:
    """Eq. 1: float32 [T, ceil(H / s), ceil(W / s), dim] with colliding embeddings summed.

    ids: int [N] track IDs; default ts.ids, else random distinct IDs from `rng` (see with_ids).
    The result is a plain numpy array: torch.from_numpy(c_m) shares its memory."""
    if stride < 1:
        raise TrackError(f"stride must be >= 1, got {stride}")
    if ids is None:
        ids = with_ids(ts, rng).ids
    ids = np.asarray(ids)
    if ids.shape != (ts.num_tracks,):
        raise TrackError(f"ids must have shape [{ts.num_tracks}], got {ids.shape}")
    rows, cols = latent_grid(ts.width, ts.height, stride)
    out = np.zeros((ts.num_frames * rows * cols, dim), np.float32)
    t, n = np.nonzero(ts.conditioning_mask())
    xy = ts.tracks[t, n]
    cell = (t * rows + (xy[:, 1] // stride).astype(np.int64)) * cols + (xy[:, 0] // stride).astype(np.int64)
    # unbuffered add: repeated cells accumulate (the collision rule), unlike out[cell] += ...
    np.add.at(out, cell, track_id_embedding(ids, dim)[n])
    return out.reshape(ts.num_frames, rows, cols, dim)


def track_counts(cells: int | None, min_tracks: int = TracksConfig.min_tracks, max_tracks: int = TracksConfig.max_tracks,
                 paper_cells: int = PAPER_LATENT_CELLS) -> tuple[int, int]:
    """The paper's 1000-2500 tracks per clip scaled to a latent grid of `cells` cells (None: unscaled), >= 1."""
    scale = 1.0 if cells is None else cells / paper_cells
    lo = max(1, round(min_tracks * scale))
    return lo, max(lo, round(max_tracks * scale))


def sample_track_subset(ts: TrackSet, rng: np.random.Generator, min_tracks: int = TracksConfig.min_tracks,
                        max_tracks: int = TracksConfig.max_tracks, cells: int | None = None,
                        paper_cells: int = PAPER_LATENT_CELLS, id_range: int = TracksConfig.id_range) -> TrackSet:
    """A random subset of the tracks for one training sample (paper App. D).

    The count is uniform in track_counts(cells, ...) (all tracks when fewer exist); `cells` is the
    number of latent cells of the training resolution (rows * cols of latent_grid). The subset keeps
    ts.ids when present, else gets fresh random IDs from `rng`."""
    lo, hi = track_counts(cells, min_tracks, max_tracks, paper_cells)
    count = min(int(rng.integers(lo, hi + 1)), ts.num_tracks)
    sub = ts.subset(np.sort(rng.choice(ts.num_tracks, size=count, replace=False)))
    return with_ids(sub, rng, id_range)


def num_latent_frames(num_frames: int, temporal_stride: int = VAE_TEMPORAL_STRIDE) -> int:
    """F = 1 + ceil((T - 1) / stride) latent frames for T video frames."""
    return 1 + -(-(num_frames - 1) // temporal_stride)


def latent_frame_index(num_frames: int, temporal_stride: int = VAE_TEMPORAL_STRIDE) -> np.ndarray:
    """int [T]: the latent frame of each video frame (0 -> 0, 1..4 -> 1, 5..8 -> 2, ...)."""
    return -(-np.arange(num_frames) // temporal_stride)


def mid_frame_mask(num_latent_frames: int, rng: np.random.Generator, p: float = TracksConfig.mask_prob) -> np.ndarray:
    """bool [F]: True = zero this latent frame's track features (stochastic mid-frame masking).

    Each latent frame after the first is masked independently with probability p; frame 0 (the
    conditioning image's frame) never is, so the model always sees where the tracks start."""
    if not 0 <= p <= 1:
        raise TrackError(f"mask probability must be in [0, 1], got {p}")
    mask = np.zeros(num_latent_frames, bool)
    mask[1:] = rng.random(num_latent_frames - 1) < p
    return mask


def apply_frame_mask(cond: Any, mask: np.ndarray, temporal_stride: int = VAE_TEMPORAL_STRIDE) -> Any:
    """Zero the video frames of masked latent frames in a video-rate map [T, ...] (numpy array or
    torch tensor, e.g. rasterize's output); returns a masked copy."""
    frame_mask = np.asarray(mask, bool)
    num_frames = cond.shape[0]
    if frame_mask.shape != (num_latent_frames(num_frames, temporal_stride),):
        raise TrackError(f"mask has {frame_mask.shape} latent frames; {num_frames} video frames need "
                         f"{num_latent_frames(num_frames, temporal_stride)}")
    zero = frame_mask[latent_frame_index(num_frames, temporal_stride)]
    if hasattr(cond, "clone"):  # torch tensor

        out = cond.clone()
        out[torch.from_numpy(zero).to(out.device)] = 0
        return out
    out = np.array(cond, copy=True)
    out[zero] = 0
    return out
