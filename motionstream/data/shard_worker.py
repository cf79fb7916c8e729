"""Rendering one shard folder: the part of shards.py that runs in worker processes.

Kept free of torch so that spawned workers start in a fraction of a second (see shards.py for the
folder layout).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from motionstream.config import from_dict
from motionstream.data.synth import WorldConfig, render_clip


def atomic_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def write_shard(job: tuple[str, list[int], int, int, int, float, dict[str, Any]]) -> str:
    """Render the clips of one shard and write its folder atomically (runs in a worker process)."""
    path, seeds, num_frames, width, height, fps, world = job
    cfg = from_dict(WorldConfig, world)
    clips = [render_clip(s, num_frames, width, height, fps, cfg) for s in seeds]
    final = Path(path)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "frames.npy", np.stack([c.frames for c in clips]))
    np.save(tmp / "tracks.npy", np.stack([c.tracks.tracks for c in clips]))
    np.save(tmp / "visibility.npy", np.stack([c.tracks.visibility for c in clips]))
    np.save(tmp / "moving_mask.npy", np.packbits(np.stack([c.moving_mask for c in clips]), axis=-1))
    meta = {"seeds": [c.seed for c in clips], "captions": [c.caption for c in clips],
            "effects": [c.effects for c in clips]}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(final, ignore_errors=True)  # a stale shard with other seeds
    os.replace(tmp, final)
    return final.name


def shard_seeds(path: Path) -> list[int] | None:
    """Seeds of a complete shard folder, or None if it is absent or unreadable."""
    try:
        return json.loads((path / "meta.json").read_text())["seeds"]
    except (OSError, ValueError, KeyError):
        return None


def init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; cv2's own threads would oversubscribe
