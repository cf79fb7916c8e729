"""Frame-only scorers of the text-driven effects (data/effects.py): is a caption's effect visible?

Each scorer looks only at uint8 frames [T, H, W, 3], so it judges generated and ground-truth videos
alike. They sit with the effects they score: the renderer checks its own output with them
(tests/data/test_data_synth.py), and eval (metrics.text_adherence, the `adherence` benchmark) and the
trainers' track-following report score generated videos with the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import cv2
import numpy as np

from motionstream.data.effects import EFFECTS, hue_rgb
from motionstream.data.scenes import HUES
from motionstream.video import PIXEL_MAX, as_video



@dataclass
class AdherenceConfig:
    """Per-effect thresholds on the effect scores below (a score above its threshold = the effect is
    visible), and the scorers' windows. Thresholds were set on 80 [world] train-split clips (seeds
    0-79; flash: 150 clips) between the scores of clips with and without each effect; the
    `adherence` benchmark reports how well they separate the held-out test clips."""

    darker: float = 0.04         # drop of median luma (0..1) from the first to the last window
    brighter: float = 0.10       # rise of median luma (fog also brightens: kept above fog's rise)
    tint: float = 0.09           # shift of the mean colour's chroma (RGB minus its grey), any hue
    fog: float = 0.40            # relative drop of luma contrast (std)
    particles: float = 0.006     # rise of small-spot energy (white top-hat of luma)
    flash: float = 0.12          # peak of mean luma above the mean of the frames flash_gap before and after
    window_frac: float = 0.25    # "start" / "end" = the first / last quarter of the clip (medians)
    spot_size_px: int = 7        # top-hat structuring element: spots smaller than this count
    flash_gap: int = 3           # frames: a flash is brighter than the frames this far on both sides


def _luma(frames: np.ndarray) -> np.ndarray:
    """float64 [T, H, W] in 0..1 (BT.601)."""
    f = frames.astype(np.float64) / PIXEL_MAX
    return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114


def _start_end(series: np.ndarray, frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Medians over the first and last `frac` of a per-frame series [T, ...]: medians so a
    two-frame flash does not read as a trend."""
    q = max(1, int(round(len(series) * frac)))
    return np.median(series[:q], axis=0), np.median(series[-q:], axis=0)


def chroma_shift(frames: np.ndarray, cfg: AdherenceConfig | None = None) -> np.ndarray:
    """float64 [3]: shift of the mean colour's chroma (RGB minus its grey, 0..1 units) from the
    start window to the end window of a video [T,H,W,3]; a tint moves it toward the tint's hue."""
    cfg = cfg or AdherenceConfig()
    frames = as_video(frames)
    mean_rgb = frames.reshape(len(frames), -1, 3).astype(np.float64).mean(1) / PIXEL_MAX
    start, end = _start_end(mean_rgb - mean_rgb.mean(1, keepdims=True), cfg.window_frac)
    return end - start


def effect_score(frames: np.ndarray, effect: str, cfg: AdherenceConfig | None = None) -> float:
    """Signed strength of a global visual effect in a video [T,H,W,3]; > 0 means the effect named by
    the caption is happening (e.g. "darker": luma falls from start to end). Scorers look only at
    the frames, so they judge generated and ground-truth videos alike (start / end windows, top-hat
    spots; flash as a transient luma peak so that a brightening ramp does not read as a flash).
    The one implementation of the effect signatures: `effect_scores` below calls it."""
    cfg = cfg or AdherenceConfig()
    frames = as_video(frames)
    lum = _luma(frames)
    if effect in ("darker", "brighter"):
        start, end = _start_end(lum.mean(axis=(1, 2)), cfg.window_frac)
        return float(start - end) if effect == "darker" else float(end - start)
    if effect == "tint":
        return float(np.linalg.norm(chroma_shift(frames, cfg)))
    if effect == "fog":
        start, end = _start_end(lum.std(axis=(1, 2)), cfg.window_frac)
        return float(1.0 - end / max(start, 1e-6))
    if effect == "particles":
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (cfg.spot_size_px, cfg.spot_size_px))
        spots = np.array([cv2.morphologyEx(f.astype(np.float32), cv2.MORPH_TOPHAT, kernel).mean() for f in lum])
        start, end = _start_end(spots, cfg.window_frac)
        return float(end - start)
    if effect == "flash":
        # transient brightness: a luma ramp ("brighter") or a slow change is ~linear over 2 * gap
        # frames and cancels; a flash of a few frames does not
        series = lum.mean(axis=(1, 2))
        padded = np.pad(series, cfg.flash_gap, mode="edge")
        return float((series - 0.5 * (padded[:-2 * cfg.flash_gap] + padded[2 * cfg.flash_gap:])).max())
    raise ValueError(f"unknown effect {effect!r}; known: {list(EFFECTS)}")


def effect_present(frames: np.ndarray, effect: str, cfg: AdherenceConfig | None = None) -> bool:
    """Whether the effect's score clears its threshold in `cfg`."""
    cfg = cfg or AdherenceConfig()
    return effect_score(frames, effect, cfg) > getattr(cfg, effect)


def text_adherence(frames: np.ndarray, effects: Iterable[str], cfg: AdherenceConfig | None = None) -> dict[str, dict]:
    """{effect: {"score": float, "agrees": bool}} for the effects a caption asks for."""
    cfg = cfg or AdherenceConfig()
    out = {}
    for name in effects:
        score = effect_score(frames, name, cfg)
        out[name] = {"score": score, "agrees": bool(score > getattr(cfg, name))}
    return out


def adherence_rate(results: Iterable[dict[str, dict]]) -> float:
    """Fraction of (clip, effect) pairs that agree with their caption; nan when there are none."""
    flags = [r["agrees"] for res in results for r in res.values()]
    return float(np.mean(flags)) if flags else float("nan")


def effect_scores(frames: np.ndarray, tint_colour: str | None = None) -> dict[str, float]:
    """Signatures of every effect for uint8 frames [T, H, W, 3]; positive = the effect is there.

    The scorers are `effect_score` (the calibrated ones the adherence benchmark thresholds; see
    AdherenceConfig). Scores are raw differences in [0, 1] units so a caller compares them with a
    reference (the same scene without effects, or a threshold). `tint_colour` (a HUES name) scores
    the tint as the chroma shift projected on that hue (else: the shift's length, any hue).
    """
    scores = {name: effect_score(frames, name) for name in EFFECTS}
    if tint_colour is not None:
        direction = hue_rgb(dict(HUES)[tint_colour])
        direction = direction - direction.mean()
        scores["tint"] = float(chroma_shift(frames) @ direction / np.linalg.norm(direction))
    return scores
