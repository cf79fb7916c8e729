"""Splits, shard writing/reading (resume, shuffling, workers, cached arrays)."""

import json

import numpy as np
import pytest
import torch

from motionstream.data.shards import (ShardDataset, ShardError, add_cached_array, collate_clips, list_shards,
                                      write_shards)
from motionstream.data.splits import SPLITS, TEST_CLIPS, held_out_seeds, split_of, split_seeds
from motionstream.data.synth import WorldConfig, render_clip

SMALL = dict(num_frames=3, width=32, height=24, fps=16.0)
CFG = WorldConfig(grid_size=4, max_layers=2)


def test_splits_are_disjoint_and_stable():
    sets = {s: set(split_seeds(s, 1000)) for s in SPLITS}
    assert all(len(v) == 1000 for v in sets.values())
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    assert split_seeds("train", 5, start=3) == split_seeds("train", 8)[3:]
    assert len(held_out_seeds()) == TEST_CLIPS == 64 and all(split_of(s) == "test" for s in held_out_seeds())
    assert split_of(split_seeds("val", 1)[0]) == "val"
    with pytest.raises(ValueError, match="unknown split"):
        split_seeds("dev", 3)


def test_write_read_roundtrip_and_resume(tmp_path):
    paths = write_shards(tmp_path, "val", 5, clips_per_shard=2, workers=1, cfg=CFG, progress=False, **SMALL)
    assert [p.name for p in paths] == ["val-00000", "val-00001", "val-00002"]
    ds = ShardDataset(tmp_path, shuffle=False)
    clips = list(ds)
    assert len(ds) == len(clips) == 5 and [c.seed for c in clips] == split_seeds("val", 5)
    ref = render_clip(clips[3].seed, cfg=CFG, **SMALL)
    assert np.array_equal(clips[3].frames, ref.frames) and clips[3].tracks == ref.tracks
    assert np.array_equal(clips[3].moving_mask, ref.moving_mask) and clips[3].caption == ref.caption

    # resume: finished shards are not rewritten; a grown n redoes only the partial last shard
    stamp = {p.name: (p / "frames.npy").stat().st_mtime_ns for p in paths}
    paths = write_shards(tmp_path, "val", 6, clips_per_shard=2, workers=1, cfg=CFG, progress=False, **SMALL)
    assert (paths[0] / "frames.npy").stat().st_mtime_ns == stamp["val-00000"]
    assert (paths[1] / "frames.npy").stat().st_mtime_ns == stamp["val-00001"]
    assert json.loads((paths[2] / "meta.json").read_text())["seeds"] == split_seeds("val", 6)[4:]
    with pytest.raises(ShardError, match="different"):
        write_shards(tmp_path, "val", 6, clips_per_shard=2, workers=1, cfg=CFG, progress=False,
                     **{**SMALL, "width": 40})


def test_incomplete_shard_is_skipped_by_reader_and_redone_by_writer(tmp_path):
    paths = write_shards(tmp_path, "train", 4, clips_per_shard=2, workers=1, cfg=CFG, progress=False, **SMALL)
    (paths[1] / "meta.json").unlink()  # as if killed before the rename
    assert len(ShardDataset(tmp_path)) == 2
    write_shards(tmp_path, "train", 4, clips_per_shard=2, workers=1, cfg=CFG, progress=False, **SMALL)
    assert len(ShardDataset(tmp_path)) == 4


def test_shuffle_is_repeatable_and_workers_split_the_shards(tmp_path):
    write_shards(tmp_path, "train", 8, clips_per_shard=2, workers=2, cfg=CFG, progress=False, **SMALL)
    a = [c.seed for c in ShardDataset(tmp_path, seed=1)]
    b = [c.seed for c in ShardDataset(tmp_path, seed=1)]
    assert a == b and sorted(a) == split_seeds("train", 8) and a != sorted(a)
    ds = ShardDataset(tmp_path, seed=1)
    ds.set_epoch(1)
    assert [c.seed for c in ds] != a
    loader = torch.utils.data.DataLoader(ShardDataset(tmp_path, seed=2), batch_size=2, num_workers=2,
                                         collate_fn=collate_clips)
    seen = [s for batch in loader for s in batch["seeds"]]
    assert sorted(seen) == split_seeds("train", 8)  # each clip once across both workers
    batch = next(iter(torch.utils.data.DataLoader(ShardDataset(tmp_path), batch_size=3, collate_fn=collate_clips)))
    assert batch["frames"].shape == (3, 3, 24, 32, 3) and batch["frames"].dtype == torch.uint8
    assert batch["tracks"].shape == (3, 3, 16, 2) and batch["moving_mask"].dtype == torch.bool


def test_cached_arrays_ride_along(tmp_path):
    paths = write_shards(tmp_path, "train", 3, clips_per_shard=2, workers=1, cfg=CFG, progress=False, **SMALL)
    for info in list_shards(tmp_path):
        add_cached_array(info.path, "latents", np.array(info.seeds, np.float32)[:, None] * np.ones((1, 4), np.float32))
    clips = list(ShardDataset(tmp_path, shuffle=False))
    assert all(c.extras["latents"][0] == c.seed for c in clips)
    assert collate_clips(clips)["latents"].shape == (3, 4)
    assert list(ShardDataset(tmp_path, extras=[]))[0].extras == {}
    with pytest.raises(ShardError, match="leading dim"):
        add_cached_array(paths[0], "text", np.zeros((5, 2)))
