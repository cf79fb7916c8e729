"""Shared fixtures. Tests run on small inputs on 2 CPU cores; keep each one fast.

Layout: tests/<package>/ holds the tests of motionstream/<package>/ (tracks, data, models, diffusion, stream,
app, train, eval, scoring, cli); tests/ itself holds the whole-repo tests, this file and the helper modules
(distill_helpers, eval_model_fixtures, stream_fixtures, teacher_fixtures), importable from every folder
through `pythonpath = ["tests"]` in pyproject.toml. There are no __init__.py files, so pytest imports each
test file by its basename: basenames must be unique across the tree (hence the package prefixes)."""

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


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for a module of tiny-model tests: they gain nothing from 2 threads,
    and on the shared, loaded 2 cores OpenMP's spin-waits made them 10-30x slower (measured: 8.4 s
    vs 0.28 s for one 6-chunk rollout). Opt in per module with
    `pytestmark = pytest.mark.usefixtures("one_thread")`; the thread count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
