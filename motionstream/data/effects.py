"""Text-driven global effects: what a caption can say that tracks cannot.

Each effect is a pure function of time applied to the composited frame (float32 [H, W, 3] in
[0, 1]); it never moves content, so tracks stay exact. Each has a measurable signature computed
from frames alone (data/effect_scores.py: `effect_scores`, `effect_score`), so text adherence of
generated videos can be scored later:

    name        caption phrase                 signature (score > 0 means present)
    darker      "it gets darker"               luma(end) - luma(start) < 0       -> score = drop
    brighter    "it gets brighter"             luma rises                        -> score = rise
    tint        "a blue tint spreads"          chroma moves toward the named hue -> projection
    fog         "fog rolls in"                 contrast falls                    -> 1 - std(end)/std(start)
    particles   "snow falls" / "... confetti"  small bright spots everywhere     -> rise of top-hat spot energy
    flash       "a flash of light goes off"    a short luma peak                 -> peak above its neighbours

Ramped effects (darker, brighter, tint, fog) ease in over `duration` seconds from `start` and
then hold, so a 33-frame clip shows the change and a 2000-frame clip stays valid.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from motionstream.data.scenes import HUES

if TYPE_CHECKING:  # pragma: no cover
    from motionstream.data.synth import WorldConfig

EFFECTS = ("darker", "brighter", "tint", "fog", "particles", "flash")
CONFLICTS = {frozenset(("darker", "brighter")), frozenset(("fog", "flash")), frozenset(("darker", "flash"))}
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
FOG_COLOUR = np.array([0.85, 0.86, 0.88], np.float32)
SNOW_COLOUR = np.array([1.0, 1.0, 1.0], np.float32)
DOT_CORE_GAIN = 1.6   # particles: alpha = min(1, gain * gaussian / peak), opaque to ~1 sigma


def hue_rgb(hue_deg: float, sat: float = 1.0, val: float = 1.0) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue_deg / 360.0, sat, val), np.float32)


@dataclass
class Particles:
    """Falling dots: position(t) = (x0 + drift sin(w t + ph), y0 + fall t), wrapped into the frame
    with a margin so they leave at the bottom and come back at the top."""

    x0: np.ndarray       # [P] px
    y0: np.ndarray       # [P] px
    fall: np.ndarray     # [P] px/s
    drift: np.ndarray    # [P] px
    omega: np.ndarray    # [P] rad/s
    phase: np.ndarray    # [P]
    colours: np.ndarray  # [P, 3]
    radius: float        # px (gaussian sigma of a dot)

    def positions(self, t: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        margin = 4 * self.radius
        x = (self.x0 + self.drift * np.sin(self.omega * t + self.phase) + margin) % (width + 2 * margin) - margin
        y = (self.y0 + self.fall * t + margin) % (height + 2 * margin) - margin
        return x, y

    def draw(self, frame: np.ndarray, t: float, opacity: float) -> None:
        """Splat every dot bilinearly, blur to a soft disc, blend its colour in place."""

        h, w = frame.shape[:2]
        x, y = self.positions(t, w, h)
        x, y = x - 0.5, y - 0.5  # continuous px -> index coords of pixel centres
        x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
        fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
        weight = np.zeros((h, w), np.float32)
        colour = np.zeros((h, w, 3), np.float32)
        for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            xi, yi = x0 + dx, y0 + dy
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            np.add.at(weight, (yi[ok], xi[ok]), wgt[ok])
            np.add.at(colour, (yi[ok], xi[ok]), wgt[ok, None] * self.colours[ok])
        # a unit splat blurred by sigma r peaks at 1 / (2 pi r^2): rescale so a dot is opaque out to
        # about one sigma (a crisp flake rather than a faint haze)
        gain = DOT_CORE_GAIN * 2 * math.pi * self.radius ** 2
        weight = cv2.GaussianBlur(weight, (0, 0), self.radius)
        colour = cv2.GaussianBlur(colour, (0, 0), self.radius)
        alpha = np.clip(weight * gain, 0, 1) * opacity
        scale = alpha / np.maximum(weight, 1e-6)
        keep = 1 - alpha
        frame *= cv2.merge([keep, keep, keep])  # 3-channel copies: see synth.composite
        frame += colour * cv2.merge([scale, scale, scale])


@dataclass
class Effect:
    """One global effect. `strength` in (0, 1]; ramp(t) eases 0 -> 1 over [start, start + duration]."""

    name: str
    phrase: str
    start: float
    duration: float
    strength: float
    colour: np.ndarray = field(default_factory=lambda: np.ones(3, np.float32))
    particles: Particles | None = None

    def ramp(self, t: float) -> float:
        x = min(1.0, max(0.0, (t - self.start) / self.duration))
        return x * x * (3 - 2 * x)  # smoothstep

    def apply(self, frame: np.ndarray, t: float) -> None:
        """Modify frame float32 [H, W, 3] in [0, 1] in place."""

        k = self.strength * self.ramp(t)
        if self.name == "darker":
            frame *= 1 - k
        elif self.name == "brighter":
            frame += (1 - frame) * k
        elif self.name == "tint":
            # toward luma * tint colour (normalised to the same luma): keeps brightness, moves hue
            to_tint = np.outer(self.colour / max(float(self.colour @ LUMA), 1e-3), LUMA).astype(np.float32)
            target = np.minimum(cv2.transform(frame, to_tint), 1.0)
            frame *= 1 - k
            frame += target * k
        elif self.name == "fog":
            frame *= 1 - k
            cv2.add(frame, tuple(float(c) * k for c in self.colour) + (0.0,), dst=frame)
        elif self.name == "flash":
            # a gaussian pulse in time centred on `start`, width `duration`
            pulse = self.strength * math.exp(-0.5 * ((t - self.start) / self.duration) ** 2)
            frame += (1 - frame) * pulse
        elif self.name == "particles":
            assert self.particles is not None
            self.particles.draw(frame, t, min(1.0, 0.25 + self.ramp(t)))
        else:  # pragma: no cover - guarded by sample_effects
            raise ValueError(f"unknown effect {self.name!r}")


def _tint_colour(rng: np.random.Generator) -> tuple[str, np.ndarray]:
    name, hue = HUES[int(rng.integers(len(HUES)))]
    return name, hue_rgb(hue, sat=1.0, val=1.0)


def make_effect(name: str, rng: np.random.Generator, cfg: "WorldConfig", width: int, height: int,
                px: float) -> Effect:
    """Effect `name` with random parameters (start, speed, colour) drawn from `rng`."""
    start = rng.uniform(*cfg.effect_start_s)
    duration = rng.uniform(*cfg.effect_duration_s)
    strength = rng.uniform(*cfg.effect_strength)
    if name == "darker":
        return Effect(name, "it gets darker", start, duration, strength)
    if name == "brighter":
        return Effect(name, "it gets brighter", start, duration, strength)
    if name == "tint":
        cname, rgb = _tint_colour(rng)
        return Effect(name, f"a {cname} tint spreads over the scene", start, duration, strength, colour=rgb)
    if name == "fog":
        return Effect(name, "fog rolls in", start, duration, strength, colour=FOG_COLOUR.copy())
    if name == "flash":
        # a short pulse inside the first clip: centre at `start`, width a few frames
        return Effect(name, "a flash of light goes off", start + duration / 2, cfg.flash_width_s,
                      rng.uniform(*cfg.flash_strength))
    if name == "particles":
        count = int(rng.integers(cfg.min_particles, cfg.max_particles + 1))
        snow = rng.random() < 0.5
        if snow:
            colours = np.repeat(SNOW_COLOUR[None], count, 0)
            phrase = "snow falls"
        else:
            colours = np.stack([hue_rgb(h) for h in rng.uniform(0, 360, count)])
            phrase = "colourful confetti falls"
        fall = rng.uniform(*cfg.particle_fall_px) * px * cfg.reference_fps * np.ones(count) * rng.uniform(0.7, 1.3, count)
        parts = Particles(x0=rng.uniform(0, width, count), y0=rng.uniform(0, height, count), fall=fall,
                          drift=rng.uniform(0, 4 * px, count), omega=rng.uniform(1, 4, count),
                          phase=rng.uniform(0, 2 * math.pi, count), colours=colours.astype(np.float32),
                          radius=cfg.particle_radius_px * px)
        return Effect(name, phrase, start, duration, 1.0, particles=parts)
    raise ValueError(f"unknown effect {name!r}; known: {EFFECTS}")


def sample_effects(rng: np.random.Generator, cfg: "WorldConfig", width: int, height: int, px: float) -> list[Effect]:
    """0, 1 or 2 compatible effects (probabilities from cfg)."""
    names: list[str] = []
    allowed = [e for e in cfg.effects if e in EFFECTS]
    unknown = sorted(set(cfg.effects) - set(EFFECTS))
    if unknown:
        raise ValueError(f"unknown effects {unknown}; known: {list(EFFECTS)}")
    if allowed and rng.random() < cfg.effect_prob:
        names.append(allowed[int(rng.integers(len(allowed)))])
        if rng.random() < cfg.second_effect_prob:
            rest = [e for e in allowed if e != names[0] and frozenset((e, names[0])) not in CONFLICTS]
            if rest:
                names.append(rest[int(rng.integers(len(rest)))])
    return [make_effect(n, rng, cfg, width, height, px) for n in names]
