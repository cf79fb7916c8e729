"""Track-following check for use *during* training (and the core of the `transfer` benchmark).

A falling loss says nothing about track following (the first drop is learning to copy frame 0),
so trainers print, every N minutes, how a model does against the two no-model baselines on a few
held-out clips:

    evaluator = TrackFollowingEval(clips)               # once: baselines + tracker floor, cached
    report = evaluator(lambda clip: my_sample(clip))    # each time: generate, re-track, compare
    log(format_report(report))

A clip is anything with `frames` uint8 [T,H,W,3] (ground truth, frame 0 = conditioning image),
`tracks` (TrackSet) and optionally `moving_mask` bool [T,H,W] (e.g. motionstream.data.synth.Clip).
`generate_fn(clip)` returns uint8 [T,H,W,3] with the clip's T, H, W.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from motionstream.eval import metrics
from motionstream.eval.baselines import forward_warp, repeat_first_frame

GenerateFn = Callable[[Any], np.ndarray]


@dataclass
class ClipScores:
    """Metrics of one video against one clip's ground truth (nan where not defined)."""

    epe: float
    psnr: float
    region_psnr: float
    ssim: float = float("nan")

    def as_dict(self) -> dict[str, float]:
        return {"epe": self.epe, "psnr": self.psnr, "region_psnr": self.region_psnr, "ssim": self.ssim}


def score_video(clip: Any, video: np.ndarray, tracks, tracker: metrics.Tracker | None = None,
                with_ssim: bool = False) -> ClipScores:
    """Score `video` [T,H,W,3] against `clip` with the (possibly subsampled) input `tracks`."""
    video = np.asarray(video)
    if video.shape != clip.frames.shape or video.dtype != np.uint8:
        raise ValueError(f"generated video must be uint8 {clip.frames.shape}, got {video.dtype} {video.shape}")
    mask = getattr(clip, "moving_mask", None)
    return ClipScores(
        epe=metrics.epe(tracks, video, tracker),
        psnr=metrics.psnr(video, clip.frames),
        region_psnr=metrics.region_psnr(video, clip.frames, mask) if mask is not None else float("nan"),
        ssim=metrics.ssim(video, clip.frames) if with_ssim else float("nan"),
    )


def _mean(values: Sequence[float]) -> float:
    """Mean over clips, skipping nan (undefined, e.g. no moving region); the inf PSNR of a perfect
    reproduction counts as metrics.PSNR_CAP_DB so one perfect clip does not make the mean inf."""
    vals = [min(v, metrics.PSNR_CAP_DB) for v in values if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


@dataclass
class TrackFollowingEval:
    """Cached references for a fixed set of clips; call it with a generate_fn to score a model.

    max_points: EPE uses a fixed random subset of at most this many input tracks per clip (the
    tracker's cost grows with N; a few hundred points give a stable mean).
    """

    clips: Sequence[Any]
    max_points: int | None = 256
    tracker: metrics.Tracker | None = None
    with_ssim: bool = False
    baselines: dict[str, list[ClipScores]] = field(init=False)
    floors: list[float] = field(init=False)

    def __post_init__(self) -> None:
        if not self.clips:
            raise ValueError("TrackFollowingEval needs at least one clip")
        self.eval_tracks = [metrics.subsample_tracks(c.tracks, self.max_points) for c in self.clips]
        self.floors = [metrics.tracker_noise_floor(c.frames, tr, self.tracker)
                       for c, tr in zip(self.clips, self.eval_tracks)]
        refs = {
            "first_frame": lambda c: repeat_first_frame(c.frames[0], len(c.frames)),
            "forward_warp": lambda c: forward_warp(c.frames[0], c.tracks),
        }
        self.baselines = {name: [self._score(c, tr, fn(c)) for c, tr in zip(self.clips, self.eval_tracks)]
                          for name, fn in refs.items()}

    def _score(self, clip: Any, tracks, video: np.ndarray) -> ClipScores:
        return score_video(clip, video, tracks, self.tracker, self.with_ssim)

    def score(self, generate_fn: GenerateFn) -> tuple[list[ClipScores], float]:
        """(per-clip scores, generation seconds per clip) of a model."""
        scores, gen_s = [], 0.0
        for clip, tracks in zip(self.clips, self.eval_tracks):
            t0 = time.perf_counter()
            video = generate_fn(clip)
            gen_s += time.perf_counter() - t0
            scores.append(self._score(clip, tracks, video))
        return scores, gen_s / len(self.clips)

    def __call__(self, generate_fn: GenerateFn) -> dict[str, Any]:
        """The report dict (means over clips; `per_clip` holds the rows):

        epe, epe_first_frame_baseline, epe_forward_warp_baseline, epe_ratio (model / first-frame
        baseline: < 1 means the model moves content along the tracks), tracker_floor, psnr,
        psnr_first_frame_baseline, psnr_forward_warp_baseline, region_psnr,
        region_psnr_first_frame_baseline, region_psnr_forward_warp_baseline, (ssim*), gen_s_per_clip.
        """
        scores, gen_s = self.score(generate_fn)
        report: dict[str, Any] = {"num_clips": len(self.clips), "gen_s_per_clip": gen_s,
                                  "tracker_floor": _mean(self.floors)}
        keys = ("epe", "psnr", "region_psnr") + (("ssim",) if self.with_ssim else ())
        for key in keys:
            report[key] = _mean([getattr(s, key) for s in scores])
            for name, ref in self.baselines.items():
                report[f"{key}_{name}_baseline"] = _mean([getattr(s, key) for s in ref])
        base = report["epe_first_frame_baseline"]
        report["epe_ratio"] = report["epe"] / base if base > 0 else float("nan")
        report["per_clip"] = [{**s.as_dict(), "tracker_floor": f} for s, f in zip(scores, self.floors)]
        return report


def track_following_report(generate_fn: GenerateFn, clips: Sequence[Any], max_points: int | None = 256,
                           tracker: metrics.Tracker | None = None, with_ssim: bool = False) -> dict[str, Any]:
    """One-shot version of TrackFollowingEval (recomputes the baselines: keep an evaluator instead
    when calling repeatedly during training)."""
    return TrackFollowingEval(clips, max_points, tracker, with_ssim)(generate_fn)


def format_report(report: dict[str, Any]) -> str:
    """One log line: the numbers a trainer watches."""
    return (f"epe {report['epe']:.2f}px (frozen {report['epe_first_frame_baseline']:.2f}, "
            f"warp {report['epe_forward_warp_baseline']:.2f}, floor {report['tracker_floor']:.2f}, "
            f"ratio {report['epe_ratio']:.2f}) | psnr {report['psnr']:.2f}dB "
            f"(frozen {report['psnr_first_frame_baseline']:.2f}, warp {report['psnr_forward_warp_baseline']:.2f}) | "
            f"region psnr {report['region_psnr']:.2f}dB (frozen {report['region_psnr_first_frame_baseline']:.2f})")
