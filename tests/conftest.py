"""Shared fixtures. Tests run on small inputs on 2 CPU cores; keep each one fast."""

from __future__ import annotations

import os
from pathlib import Path

import motionstream  # noqa: F401  (sets OMP_WAIT_POLICY before torch starts its thread pool)
import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO.parent / "shared" / "media"


@pytest.fixture
def media_dir() -> Path:
    if not MEDIA.is_dir():
        pytest.skip(f"sample media not found at {MEDIA}")
    return MEDIA
