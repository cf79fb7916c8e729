"""Synthetic world speed: clips per second for 33-frame 256x144 clips.

    .venv/bin/python benchmarks/world.py [--clips 24] [--frames 33] [--size 256x144] [--workers 2]

Prints, from one run:
  - single process: clips/s and the split of time between scene building, frame rendering
    (composite + effects + motion mask) and exact tracks (50x50 grid), wall and CPU time;
  - write_shards with --workers processes (what `motionstream data synth` does): clips/s
    including writing the .npy shards;
  - the 1-minute load average before and after, because the machine's 2 cores are shared with
    other jobs and every figure here is only meaningful next to it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from motionstream.data.splits import split_seeds  # noqa: E402
from motionstream.data.synth import WorldConfig, build_world, render_frames, scene_tracks  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--size", default="256x144")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    # imported here, not at the top: spawned shard workers re-import this script, and shards.py
    # pulls in torch, which the workers do not need
    from motionstream.data.shards import write_shards
    width, height = (int(v) for v in args.size.split("x"))
    cfg = WorldConfig()
    seeds = split_seeds("val", args.clips)
    load0 = os.getloadavg()[0]
    fps = 16.0
    times = np.arange(args.frames) / fps

    build_world(seeds[0], width, height, cfg)  # warm the photo cache (first use decodes the PNGs)
    parts = {"scene": 0.0, "frames": 0.0, "tracks": 0.0}
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for seed in seeds:
        t0 = time.perf_counter()
        scene, effects, _ = build_world(seed, width, height, cfg)
        t1 = time.perf_counter()
        for _ in render_frames(scene, effects, times, cfg, 1 / fps):
            pass
        t2 = time.perf_counter()
        scene_tracks(scene, times, cfg.grid_size, cfg.occlusion_alpha)
        t3 = time.perf_counter()
        parts["scene"] += t1 - t0
        parts["frames"] += t2 - t1
        parts["tracks"] += t3 - t2
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    n = len(seeds)
    print(f"world: {n} clips x {args.frames} frames at {width}x{height}, load avg (1 min) before {load0:.1f}")
    print(f"  1 process : {n / wall:6.2f} clips/s wall ({1000 * wall / n:.0f} ms/clip), "
          f"{n / cpu:6.2f} clips/s per CPU-second (CPU {1000 * cpu / n:.0f} ms/clip)")
    print("              per clip: " + ", ".join(f"{k} {1000 * v / n:.0f} ms" for k, v in parts.items()))

    out = Path(tempfile.mkdtemp(prefix="world-bench-", dir=Path(__file__).resolve().parent.parent / "runs"
                                if (Path(__file__).resolve().parent.parent / "runs").is_dir() else None))
    try:
        t0 = time.perf_counter()
        write_shards(out, "val", n, num_frames=args.frames, width=width, height=height,
                     clips_per_shard=max(1, n // (2 * args.workers)), workers=args.workers, cfg=cfg, progress=False)
        dt = time.perf_counter() - t0
        print(f"  write_shards, {args.workers} workers: {n / dt:6.2f} clips/s wall incl. process start and .npy writes")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"  load avg (1 min) after {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores shared with other jobs")


if __name__ == "__main__":
    main()
