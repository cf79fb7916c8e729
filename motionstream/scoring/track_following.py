"""Track following against ground truth: the check trainers run *during* training, and the scorer
the `transfer` benchmark uses for every method.

A falling loss says nothing about track following (the first drop is learning to copy frame 0),
so trainers print, every N minutes, how a model does against the two no-model baselines on a few
held-out clips:

    evaluator = TrackFollowingEval(clips)               # once: tracker floor, reliable points
    report = evaluator(lambda clip: my_sample(clip))    # each time: generate, re-track, compare
    log(format_report(report))                          # baselines are computed on first call

A clip is anything with `frames` uint8 [T,H,W,3] (ground truth, frame 0 = conditioning image),
`tracks` (TrackSet), and optionally `moving_mask` bool [T,H,W] and `effects` list[str]
(motionstream.data.synth.Clip and motionstream.eval.clips.EvalClip both fit). `generate_fn(clip)`
returns uint8 [T,H,W,3] with the clip's T, H, W.

Two EPEs are reported. `epe` is the paper's: all input-visible points. `epe_reliable` only counts
the points the tracker follows to within `reliable_px` on the ground-truth video itself, so its
floor is below reliable_px; on [world] clips the plain EPE floor can be several pixels (the LK
tracker loses points in flashes, on repetitive textures and under confetti), which would swamp
the difference between a model and the frozen frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from motionstream.scoring import metrics
from motionstream.scoring.baselines import BASELINES

GenerateFn = Callable[[Any], np.ndarray]

# report key infix of each no-model baseline (baselines.BASELINES name -> e.g. epe_first_frame_baseline)
BASELINE_KEYS = {"repeat-first-frame": "first_frame", "forward-warp": "forward_warp"}


@dataclass
class ClipScores:
    """Metrics of one video against one clip's ground truth (nan where not defined)."""

    epe: float
    epe_reliable: float
    psnr: float
    region_psnr: float
    ssim: float = float("nan")
    lpips: float = float("nan")
    adherence: dict[str, dict] = field(default_factory=dict)   # metrics.text_adherence of the clip's effects

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ClipReference:
    """What is fixed per clip: the evaluated tracks, the tracker's floor and its reliable points."""

    tracks: Any                   # TrackSet, at most max_points tracks
    floor: float                  # EPE of the tracker on the ground truth (all valid points)
    reliable: np.ndarray          # bool [T, N], see metrics.reliable_points
    floor_reliable: float         # EPE of the tracker on the ground truth over the reliable points
    num_valid: int                # points x frames that count for the plain EPE


def mean_over_clips(values: Sequence[float]) -> float:
    """Mean over clips, skipping nan (undefined, e.g. no moving region); the inf PSNR of a perfect
    reproduction counts as metrics.PSNR_CAP_DB so one perfect clip does not make the mean inf."""
    vals = [min(float(v), metrics.PSNR_CAP_DB) for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


@dataclass
class TrackFollowingEval:
    """Cached references for a fixed set of clips; call it with a generate_fn to score a model.

    max_points: EPE uses a fixed random subset of at most this many input tracks per clip (the
    tracker's cost grows with N; a few hundred points give a stable mean).
    with_ssim / lpips_weights: also compute SSIM / LPIPS (slower; the benchmark turns them on).
    """

    clips: Sequence[Any]
    max_points: int | None = 256
    tracker: metrics.Tracker | None = None
    with_ssim: bool = False
    lpips_weights: str | None = None
    reliable_px: float = 1.0
    refs: list[ClipReference] = field(init=False)
    _baselines: dict[str, list[ClipScores]] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not self.clips:
            raise ValueError("TrackFollowingEval needs at least one clip")
        self.refs = []
        for clip in self.clips:
            tracks = metrics.subsample_tracks(clip.tracks, self.max_points)
            err, valid = metrics.track_errors(tracks, clip.frames, self.tracker)
            reliable = valid & (err < self.reliable_px)
            self.refs.append(ClipReference(tracks, metrics.masked_mean(err, valid), reliable,
                                           metrics.masked_mean(err, reliable), int(valid.sum())))

    # ----------------------------------------------------------------------------- scoring
    def score_video(self, index: int, video: np.ndarray) -> ClipScores:
        """Score `video` [T,H,W,3] against clip `index`."""
        clip, ref = self.clips[index], self.refs[index]
        video = np.asarray(video)
        if video.shape != clip.frames.shape or video.dtype != np.uint8:
            raise ValueError(f"generated video must be uint8 {clip.frames.shape}, got {video.dtype} {video.shape}")
        err, valid = metrics.track_errors(ref.tracks, video, self.tracker)
        mask = getattr(clip, "moving_mask", None)
        lp = metrics.lpips(video, clip.frames, self.lpips_weights) if self.lpips_weights else None
        return ClipScores(
            epe=metrics.masked_mean(err, valid),
            epe_reliable=metrics.masked_mean(err, ref.reliable),
            psnr=metrics.psnr(video, clip.frames),
            region_psnr=metrics.region_psnr(video, clip.frames, mask) if mask is not None else float("nan"),
            ssim=metrics.ssim(video, clip.frames) if self.with_ssim else float("nan"),
            lpips=float("nan") if lp is None else lp,
            adherence=metrics.text_adherence(video, getattr(clip, "effects", None) or []),
        )

    def score(self, generate_fn: GenerateFn, progress: Callable | None = None) -> tuple[list[ClipScores], float]:
        """(per-clip scores, generated frames per second of generate_fn)."""
        scores, gen_s, frames = [], 0.0, 0
        indices = range(len(self.clips))
        for i in (progress(indices) if progress else indices):
            t0 = time.perf_counter()
            video = generate_fn(self.clips[i])
            gen_s += time.perf_counter() - t0
            frames += len(video)
            scores.append(self.score_video(i, video))
        return scores, (frames / gen_s if gen_s > 0 else float("inf"))

    @staticmethod
    def summarize(scores: Sequence[ClipScores]) -> dict[str, float]:
        """Means over clips of every metric, plus text adherence (fraction of effects visible)."""
        out = {k: mean_over_clips([getattr(s, k) for s in scores])
               for k in ("epe", "epe_reliable", "psnr", "region_psnr", "ssim", "lpips")}
        out["text_adherence"] = metrics.adherence_rate(s.adherence for s in scores)
        return out

    def ground_truth(self) -> dict[str, float]:
        """The ground truth scored like a method: EPE = the tracker floor, text adherence = the
        scorers' ceiling, reliable_fraction = share of valid points the tracker keeps on it."""
        return {
            "epe": mean_over_clips([r.floor for r in self.refs]),
            "epe_reliable": mean_over_clips([r.floor_reliable for r in self.refs]),
            "reliable_fraction": float(np.mean([r.reliable.sum() / max(1, r.num_valid) for r in self.refs])),
            "text_adherence": metrics.adherence_rate(
                metrics.text_adherence(c.frames, getattr(c, "effects", None) or []) for c in self.clips),
        }

    @property
    def baselines(self) -> dict[str, list[ClipScores]]:
        """Scores of the no-model baselines (computed on first use, then cached)."""
        if self._baselines is None:
            self._baselines = {BASELINE_KEYS[name]: self.score(fn)[0] for name, fn in BASELINES.items()}
        return self._baselines

    # ------------------------------------------------------------------------------ report
    def __call__(self, generate_fn: GenerateFn) -> dict[str, Any]:
        """The report dict (means over clips; `per_clip` holds the rows):

        epe, epe_reliable, their *_first_frame_baseline and *_forward_warp_baseline,
        epe_ratio and epe_reliable_ratio (model / frozen first frame: < 1 means the model moves
        content along the tracks; 1 means it ignores them), tracker_floor, tracker_floor_reliable,
        reliable_fraction, psnr, region_psnr (+ both baselines), text_adherence, fps.
        """
        scores, fps = self.score(generate_fn)
        report: dict[str, Any] = {"num_clips": len(self.clips), "fps": fps}
        truth = self.ground_truth()
        report.update(tracker_floor=truth["epe"], tracker_floor_reliable=truth["epe_reliable"],
                      reliable_fraction=truth["reliable_fraction"])
        model = self.summarize(scores)
        refs = {name: self.summarize(s) for name, s in self.baselines.items()}
        for key in ("epe", "epe_reliable", "psnr", "region_psnr", "text_adherence") + (("ssim",) if self.with_ssim else ()):
            report[key] = model[key]
            for name, summary in refs.items():
                report[f"{key}_{name}_baseline"] = summary[key]
        for key in ("epe", "epe_reliable"):
            base = report[f"{key}_first_frame_baseline"]
            report[f"{key}_ratio"] = report[key] / base if base > 0 else float("nan")
        report["per_clip"] = [s.as_dict() for s in scores]
        return report


def track_following_report(generate_fn: GenerateFn, clips: Sequence[Any], max_points: int | None = 256,
                           tracker: metrics.Tracker | None = None, with_ssim: bool = False) -> dict[str, Any]:
    """One-shot version of TrackFollowingEval (recomputes floors and baselines: keep an evaluator
    instead when calling repeatedly during training)."""
    return TrackFollowingEval(clips, max_points, tracker, with_ssim)(generate_fn)


def format_report(report: dict[str, Any]) -> str:
    """One log line: the numbers a trainer watches."""
    return (f"epe {report['epe']:.2f}px (frozen {report['epe_first_frame_baseline']:.2f}, "
            f"warp {report['epe_forward_warp_baseline']:.2f}, floor {report['tracker_floor']:.2f}, "
            f"ratio {report['epe_ratio']:.2f}) | reliable-pt epe {report['epe_reliable']:.2f} "
            f"(frozen {report['epe_reliable_first_frame_baseline']:.2f}, ratio {report['epe_reliable_ratio']:.2f}) | "
            f"psnr {report['psnr']:.2f}dB (frozen {report['psnr_first_frame_baseline']:.2f}, "
            f"warp {report['psnr_forward_warp_baseline']:.2f}) | region psnr {report['region_psnr']:.2f}dB "
            f"(frozen {report['region_psnr_first_frame_baseline']:.2f})")
