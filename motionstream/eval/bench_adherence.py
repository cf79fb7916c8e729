"""`adherence`: how well the text-adherence scorers read the [world] effects off the frames.

Text adherence of a generated video is judged by frame-only scorers (metrics.effect_score): one
per effect a caption can name. Before trusting them on generated videos, this benchmark runs them
on the held-out ground truth: for each effect, the share of clips *with* the effect that the
scorer detects (the ceiling a model can reach), the share of clips *without* it that it flags
(false alarms), and the frozen first frame (which shows no effect, so it should score ~0).
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from motionstream.eval.benchmarks import BenchmarkContext, Table, benchmark
from motionstream.scoring import metrics


@dataclass
class AdherenceBenchConfig:
    full_clips: int = 64          # the whole held-out set (motionstream.data.splits.TEST_CLIPS)


CFG = AdherenceBenchConfig()


@benchmark("adherence", "Text-adherence scorers on the ground truth")
def run_adherence(ctx: BenchmarkContext) -> None:
    """Detection rate of each effect scorer on held-out [world] clips with / without the effect."""

    matplotlib.use("Agg")

    cfg = metrics.AdherenceConfig()
    full = not ctx.quick and ctx.clips_override is None
    clips = ctx.world_clips(CFG.full_clips if full else None)
    scores, frozen = [], []
    for clip in ctx.progress(clips, "scoring"):
        still = np.repeat(clip.frames[:1], len(clip.frames), 0)
        scores.append({e: metrics.effect_score(clip.frames, e, cfg) for e in metrics.EFFECTS})
        frozen.append({e: metrics.effect_score(still, e, cfg) for e in metrics.EFFECTS})
    rows, hits, alarms, counts = [], [], [], []
    for e in metrics.EFFECTS:
        thr = getattr(cfg, e)
        has = np.array([e in c.effects for c in clips])
        s = np.array([sc[e] for sc in scores])
        f = np.array([sc[e] for sc in frozen])
        tp = float((s[has] > thr).mean()) if has.any() else float("nan")
        fp = float((s[~has] > thr).mean()) if (~has).any() else float("nan")
        rows.append([e, int(has.sum()), tp, float((f[has] > thr).mean()) if has.any() else float("nan"), fp, thr])
        hits += list(s[has] > thr)
        alarms += list(s[~has] > thr)
        counts.append((e, s, has, thr))
    ctx.add_table(Table(f"Effect scorers on {len(clips)} held-out [world] clips",
                        ["effect", "clips with it", "detected (ground truth)", "detected (frozen frame)",
                         "false alarms (clips without it)", "threshold"], rows,
                        note="Thresholds: metrics.AdherenceConfig (set on train-split clips). A generated video "
                             "cannot be expected to beat the ground-truth detection rate."))
    ctx.summary.update({"ground-truth detection": float(np.mean(hits)) if hits else float("nan"),
                        "false alarms": float(np.mean(alarms)) if alarms else float("nan")})
    ctx.raw["scores"] = [{"clip": c.name, "effects": c.effects, "scores": sc} for c, sc in zip(clips, scores)]

    fig, axes = plt.subplots(1, len(counts), figsize=(2.6 * len(counts), 3))
    for ax, (e, s, has, thr) in zip(axes, counts):
        rng = np.random.default_rng(0)
        ax.scatter(rng.uniform(-0.2, 0.2, (~has).sum()), s[~has], s=8, c="grey", label="without")
        ax.scatter(1 + rng.uniform(-0.2, 0.2, has.sum()), s[has], s=12, c="tab:red", label="with")
        ax.axhline(thr, color="k", linestyle="--", linewidth=1)
        ax.set_xticks([0, 1], ["without", "with"])
        ax.set_title(e)
    axes[0].set_ylabel("effect score")
    fig.suptitle("Effect scores of held-out clips with / without each effect (dashed: threshold)", y=1.03)
    ctx.add_plot(fig, "scores")
