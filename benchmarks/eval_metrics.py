"""Cost of the evaluation metrics and of the training-time track-following check.

    .venv/bin/python benchmarks/eval_metrics.py [--clips 8 --frames 33 --points 256]

On [world] test clips at the model's native 256x144: seconds per clip for the tracker
re-extraction behind EPE, SSIM, PSNR, the forward-warp baseline and the effect scorers; then the
one-off set-up of TrackFollowingEval (tracker floor + reliable points) and one call with a
generate_fn that costs nothing (so the figure is the evaluation overhead a trainer pays per
check, baselines included on the first call and cached after). The machine's load average is
printed: the 2 cores are shared, so absolute times vary with the other jobs.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def timed(fn, *args, **kw) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out


def main() -> None:
    from motionstream.config import load_config, video_config
    from motionstream.data.splits import split_seeds
    from motionstream.data.synth import render_clip
    from motionstream.scoring import metrics
    from motionstream.scoring.baselines import forward_warp
    from motionstream.scoring.track_following import TrackFollowingEval

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--points", type=int, default=256, help="EPE points per clip (max_points)")
    args = ap.parse_args()

    vcfg = video_config(load_config("tiny-cpu"))
    width, height, fps = vcfg.width, vcfg.height, vcfg.fps
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    t_render, clips = timed(lambda: [render_clip(s, args.frames, width, height, fps)
                                     for s in split_seeds("test", args.clips)])
    print(f"{args.clips} world clips of {args.frames} frames at {width}x{height}: rendered in {t_render:.1f} s")

    per = {"tracker (EPE, one video)": [], "SSIM": [], "PSNR": [], "forward warp": [], "effect scorers (all 6)": []}
    for clip in clips:
        tracks = metrics.subsample_tracks(clip.tracks, args.points)
        per["tracker (EPE, one video)"].append(timed(metrics.epe, tracks, clip.frames)[0])
        per["SSIM"].append(timed(metrics.ssim, clip.frames, clip.frames[::-1].copy())[0])
        per["PSNR"].append(timed(metrics.psnr, clip.frames, clip.frames[::-1].copy())[0])
        per["forward warp"].append(timed(forward_warp, clip.frames[0], clip.tracks)[0])
        per["effect scorers (all 6)"].append(
            timed(lambda f: [metrics.effect_score(f, e) for e in metrics.EFFECTS], clip.frames)[0])
    print(f"\nper clip (median of {args.clips}, {args.points} EPE points):")
    for name, vals in per.items():
        print(f"  {name:26s} {1e3 * float(np.median(vals)):8.1f} ms")

    t_setup, ev = timed(TrackFollowingEval, clips, args.points)
    frames = {id(c): c.frames for c in clips}
    t_first, _ = timed(ev, lambda c: frames[id(c)])
    t_next, report = timed(ev, lambda c: frames[id(c)])
    print(f"\nTrackFollowingEval on {args.clips} clips: set-up {t_setup:.1f} s, first call {t_first:.1f} s "
          f"(+ baselines), later calls {t_next:.1f} s ({t_next / args.clips:.2f} s per clip, generation excluded)")
    print(f"  ground truth as the model: epe {report['epe']:.2f} px (floor {report['tracker_floor']:.2f}), "
          f"reliable-point epe {report['epe_reliable']:.2f} px, reliable share {report['reliable_fraction']:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
