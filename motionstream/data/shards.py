"""Clips on disk: shard folders of plain .npy arrays, written resumably and streamed to training.

    DIR/manifest.json                  split, seeds, size, fps, world config, shard names
    DIR/train-00000/meta.json          seeds, captions, effects of the B clips in this shard
    DIR/train-00000/frames.npy         uint8   [B, T, H, W, 3]
    DIR/train-00000/tracks.npy         float32 [B, T, N, 2]
    DIR/train-00000/visibility.npy     bool    [B, T, N]
    DIR/train-00000/moving_mask.npy    uint8   [B, T, H, ceil(W/8)]  (np.packbits along W)
    DIR/train-00000/<name>.npy         any cached array with leading dim B (latents, track
                                       features, text embeddings...), see add_cached_array

Why folders of .npy, not compressed npz: synthetic frames compress only ~1.4x with zlib while
compressing costs 4x the render time, and .npy files can be memory-mapped so a reader touches only
the clips it yields. A shard folder appears under its final name only when complete (written as
NAME.tmp, then renamed), so re-running write_shards skips finished shards and redoes a shard
whose seeds changed (e.g. the last, partial one when n grows).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from tqdm import tqdm

from motionstream.config import to_dict
from motionstream.data.shard_worker import atomic_json, init_worker, shard_seeds, write_shard
from motionstream.data.splits import split_seeds
from motionstream.data.synth import DEFAULT_VIDEO, Clip, WorldConfig
from motionstream.errors import ShardError  # noqa: F401 (re-exported)
from motionstream.tracks.trackset import TrackSet

FORMAT = "motionstream-shards"
FORMAT_VERSION = 1
CORE_ARRAYS = ("frames", "tracks", "visibility", "moving_mask")
# manifest fields that must match for write_shards to add to an existing folder
SHAPE_KEYS = ("split", "start", "num_frames", "width", "height", "fps", "clips_per_shard", "world")


# ----------------------------------------------------------------------------------- writing
def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}"


def write_shards(out_dir: str | Path, split: str, n: int, num_frames: int = 33, width: int = DEFAULT_VIDEO.width,
                 height: int = DEFAULT_VIDEO.height, clips_per_shard: int = 16, workers: int = 2,
                 fps: float = DEFAULT_VIDEO.fps,
                 cfg: WorldConfig | None = None, start: int = 0, progress: bool = True) -> list[Path]:
    """Render clips split_seeds(split, n, start) into shard folders under out_dir; returns their paths.

    Resumable: complete shards with the expected seeds are kept. Raises ShardError if out_dir holds
    shards of a different split, size, length, fps or world config."""

    if n < 1 or clips_per_shard < 1 or workers < 1:
        raise ShardError(f"need n, clips_per_shard, workers >= 1 (got {n}, {clips_per_shard}, {workers})")
    cfg = cfg or WorldConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = split_seeds(split, n, start)
    manifest = {"format": FORMAT, "version": FORMAT_VERSION, "split": split, "start": start, "n": n,
                "num_frames": num_frames, "width": width, "height": height, "fps": float(fps),
                "clips_per_shard": clips_per_shard, "world": to_dict(cfg)}
    old = out / "manifest.json"
    if old.exists():
        prev = json.loads(old.read_text())
        diff = [k for k in SHAPE_KEYS if prev.get(k) != manifest[k]]
        if diff:
            raise ShardError(f"{out} already holds shards with different {', '.join(diff)}; use another --out folder")
    groups = [seeds[i:i + clips_per_shard] for i in range(0, n, clips_per_shard)]
    names = [shard_name(split, i) for i in range(len(groups))]
    manifest["shards"] = names
    atomic_json(old, manifest)
    world = to_dict(cfg)
    jobs = [(str(out / name), group, num_frames, width, height, float(fps), world)
            for name, group in zip(names, groups) if shard_seeds(out / name) != group]
    done = len(groups) - len(jobs)
    bar = tqdm(total=n, initial=sum(len(g) for nm, g in zip(names, groups) if shard_seeds(out / nm) == g),
               desc=f"rendering {split}", unit="clip", disable=not progress)
    if done:
        bar.write(f"{done} of {len(groups)} shards already complete in {out}")
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            write_shard(job)
            bar.update(len(job[1]))
    else:
        sizes = {job[0]: len(job[1]) for job in jobs}
        ctx = multiprocessing.get_context("spawn")  # never fork a parent that may hold threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker) as pool:
            for name in pool.map(write_shard, jobs):
                bar.update(sizes[str(out / name)])
    bar.close()
    return [out / name for name in names]


def add_cached_array(shard_dir: str | Path, name: str, array: np.ndarray) -> Path:
    """Store a cached per-clip array (leading dim = clips in the shard) beside a shard's clips, e.g.
    latents from the codec or text embeddings, atomically. ShardDataset(extras=[name]) yields it."""
    shard = Path(shard_dir)
    if name in CORE_ARRAYS or not name.isidentifier():
        raise ShardError(f"cached array name {name!r} must be an identifier and not one of {CORE_ARRAYS}")
    seeds = shard_seeds(shard)
    if seeds is None:
        raise ShardError(f"{shard} is not a complete shard folder")
    if len(array) != len(seeds):
        raise ShardError(f"{name}: leading dim {len(array)} != {len(seeds)} clips in {shard.name}")
    tmp = shard / f".{name}.tmp.npy"
    np.save(tmp, np.asarray(array))
    os.replace(tmp, shard / f"{name}.npy")
    return shard / f"{name}.npy"


# ----------------------------------------------------------------------------------- reading
def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise ShardError(f"no shard folder at {data_dir} (missing {path.name}); make one with `motionstream data synth`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ShardError(f"{path} is not a {FORMAT} manifest")
    return manifest


@dataclass
class ShardInfo:
    path: Path
    seeds: list[int]
    captions: list[str]
    effects: list[list[str]]


def list_shards(data_dir: str | Path) -> list[ShardInfo]:
    """The complete shards of a folder (incomplete / missing ones are skipped)."""
    manifest = read_manifest(data_dir)
    out = []
    for name in manifest["shards"]:
        path = Path(data_dir) / name
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        out.append(ShardInfo(path, meta["seeds"], meta["captions"], meta["effects"]))
    return out


class ShardDataset(IterableDataset):
    """Stream Clips from a shard folder: a torch IterableDataset (also a plain iterable).

    shuffle   shard order and clip order within a shard are permuted by (seed, epoch)
    seed      makes the order repeatable; set_epoch(e) changes it per epoch
    extras    names of cached arrays to attach as clip.extras[name] (None: all that exist in
              every shard; [] : none)
    loop      iterate forever (the epoch advances inside the iterator, so it also works in workers)

    With DataLoader workers, each worker reads a disjoint subset of shards (shard i goes to worker
    i mod num_workers), so every clip is yielded once per epoch overall.
    """

    def __init__(self, data_dir: str | Path, shuffle: bool = True, seed: int = 0,
                 extras: list[str] | None = None, loop: bool = False):
        self.data_dir = Path(data_dir)
        self.manifest = read_manifest(data_dir)
        self.shards = list_shards(data_dir)
        if not self.shards:
            raise ShardError(f"{data_dir} has no complete shards yet")
        self.shuffle, self.seed, self.loop, self.epoch = shuffle, seed, loop, 0
        if extras is None:
            found = [set(p.stem for p in s.path.glob("*.npy")) - set(CORE_ARRAYS) for s in self.shards]
            extras = sorted(set.intersection(*found))
        self.extras = list(extras)

    def __len__(self) -> int:
        return sum(len(s.seeds) for s in self.shards)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def load_shard(self, shard: ShardInfo) -> dict[str, np.ndarray]:
        names = list(CORE_ARRAYS) + self.extras
        missing = [n for n in names if not (shard.path / f"{n}.npy").is_file()]
        if missing:
            raise ShardError(f"{shard.path} lacks {missing}")
        return {n: np.load(shard.path / f"{n}.npy", mmap_mode="r") for n in names}

    def clip(self, shard: ShardInfo, arrays: dict[str, np.ndarray], i: int) -> Clip:
        m = self.manifest
        ts = TrackSet(tracks=np.array(arrays["tracks"][i]), visibility=np.array(arrays["visibility"][i]),
                      width=m["width"], height=m["height"], fps=m["fps"])
        mask = np.unpackbits(np.asarray(arrays["moving_mask"][i]), axis=-1, count=m["width"]).astype(bool)
        return Clip(frames=np.array(arrays["frames"][i]), tracks=ts, caption=shard.captions[i],
                    effects=list(shard.effects[i]), moving_mask=mask, seed=int(shard.seeds[i]),
                    extras={n: np.array(arrays[n][i]) for n in self.extras})

    def _epoch_order(self, epoch: int, worker: int, workers: int) -> Iterator[tuple[ShardInfo, int]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.shards)) if self.shuffle else np.arange(len(self.shards))
        clip_orders = [rng.permutation(len(s.seeds)) if self.shuffle else np.arange(len(s.seeds)) for s in self.shards]
        for k in order[worker::workers]:
            for i in clip_orders[k]:
                yield self.shards[k], int(i)

    def __iter__(self) -> Iterator[Clip]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch
        while True:
            loaded: tuple[Path, dict[str, np.ndarray]] | None = None
            for shard, i in self._epoch_order(epoch, worker, workers):
                if loaded is None or loaded[0] != shard.path:
                    loaded = (shard.path, self.load_shard(shard))
                yield self.clip(shard, loaded[1], i)
            if not self.loop:
                return
            epoch += 1


def collate_clips(clips: list[Clip]) -> dict[str, Any]:
    """DataLoader collate_fn: a batch dict of tensors (uint8 frames stay uint8; the model decides
    the value range) plus lists of captions, effects and seeds.

        frames uint8 [B, T, H, W, 3]; tracks float32 [B, T, N, 2]; visibility bool [B, T, N];
        moving_mask bool [B, T, H, W]; extras: each cached array stacked along B.
    """
    batch: dict[str, Any] = {
        "frames": torch.from_numpy(np.stack([c.frames for c in clips])),
        "tracks": torch.from_numpy(np.stack([c.tracks.tracks for c in clips])),
        "visibility": torch.from_numpy(np.stack([c.tracks.visibility for c in clips])),
        "moving_mask": torch.from_numpy(np.stack([c.moving_mask for c in clips])),
        "captions": [c.caption for c in clips],
        "effects": [c.effects for c in clips],
        "seeds": [c.seed for c in clips],
    }
    for name in clips[0].extras:
        batch[name] = torch.from_numpy(np.stack([c.extras[name] for c in clips]))
    return batch
