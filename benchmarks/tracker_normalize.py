"""Tracker noise floor with and without per-frame brightness normalisation.

    .venv/bin/python benchmarks/tracker_normalize.py [--clips 8] [--split test]

For each [world] clip (motionstream.data.synth.render_clip over data.splits.split_seeds) the project
tracker runs on the ground-truth video; prints, per `LKParams.normalize` mode, the mean tracker
noise floor (EPE in px, motionstream.scoring.metrics.tracker_noise_floor), the share of valid points
the tracker keeps within 1 px (metrics.reliable_points) and the wall time, all measured in one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

RELIABLE_PX = 1.0   # metrics.reliable_points default max_err_px


def main() -> None:
    from motionstream.data.splits import split_seeds
    from motionstream.data.synth import render_clip
    from motionstream.scoring.metrics import track_errors, tracker_noise_floor
    from motionstream.tracks.tracker import NORMALIZE_CHOICES, track_frames

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--split", default="test")
    ap.add_argument("--modes", nargs="+", default=list(NORMALIZE_CHOICES))
    args = ap.parse_args()

    clips = [render_clip(seed) for seed in split_seeds(args.split, args.clips)]
    print(f"{len(clips)} {args.split} clips, {clips[0].frames.shape[0]} frames "
          f"{clips[0].frames.shape[2]}x{clips[0].frames.shape[1]}; effects: {[c.effects for c in clips]}")
    for mode in args.modes:
        def tracker(frames, points, fps, mode=mode):
            return track_frames(frames, points=points, fps=fps, normalize=mode)

        t0 = time.perf_counter()
        floors, kept, valid_total = [], 0, 0
        for clip in clips:
            floors.append(tracker_noise_floor(clip.frames, clip.tracks, tracker))
            err, valid = track_errors(clip.tracks, clip.frames, tracker)
            kept += int((valid & (err < RELIABLE_PX)).sum())      # = metrics.reliable_points, same run
            valid_total += int(valid.sum())
        seconds = time.perf_counter() - t0
        print(f"normalize={mode:8s} floor mean {np.nanmean(floors):.2f} px  median {np.nanmedian(floors):.2f} px  "
              f"reliable share {kept / max(valid_total, 1):.3f}  per clip {' '.join(f'{f:.2f}' for f in floors)}  "
              f"({seconds:.1f} s)")


if __name__ == "__main__":
    main()
