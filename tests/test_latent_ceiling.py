"""benchmarks/latent_ceiling.py: the flicker figure and the reference degradations it prints."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from motionstream.scoring import metrics

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "latent_ceiling.py"


@pytest.fixture(scope="module")
def ceiling():
    spec = importlib.util.spec_from_file_location("latent_ceiling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flicker_is_zero_for_a_steady_error_and_sqrt2_for_per_frame_noise(ceiling):
    rng = np.random.default_rng(0)
    target = rng.integers(40, 200, (9, 16, 16, 3)).astype(np.uint8)
    steady = np.clip(target.astype(int) + rng.integers(-20, 20, (1, 16, 16, 3)), 0, 255).astype(np.uint8)
    noisy = np.clip(target.astype(int) + rng.integers(-20, 20, target.shape), 0, 255).astype(np.uint8)
    assert ceiling.flicker(steady, target) == 0.0
    assert ceiling.flicker(noisy, target) == pytest.approx(np.sqrt(2), abs=0.05)


def test_reference_degradations_keep_shape_and_sit_near_a_decoders_psnr(ceiling):
    rng = np.random.default_rng(1)
    x = np.arange(64)[None, None, :, None] / 3 + np.arange(5)[:, None, None, None]     # a stripe pattern moving right
    frames = (128 + 60 * np.sin(x) + rng.integers(0, 3, (5, 48, 64, 3))).astype(np.uint8)
    for name, degrade in ceiling.reference_degradations().items():
        out = degrade(frames)
        assert out.shape == frames.shape and out.dtype == np.uint8, name
        assert 25 < metrics.psnr(out, frames) < 45, name
