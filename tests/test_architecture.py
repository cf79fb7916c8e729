"""The layer order of docs/ARCHITECTURE.md, checked with import-linter (contracts in .importlinter).

Every import counts, including those inside functions and in cli/: an upward import (stream ->
train, data -> eval) or a cycle between sibling modules fails here with import-linter's report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_TIMEOUT_S = 300


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the package under `root` with the contracts in root/.importlinter."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=LINT_TIMEOUT_S)


@pytest.fixture(scope="module")
def linter():
    """import-linter is pinned in requirements.txt (`make setup`); a venv without it skips, except in CI."""
    try:
        import importlinter  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("import-linter is not installed (make setup installs it)")
    return lint_imports


def test_layers_and_no_cycles_hold(linter):
    result = linter(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, upward", [
    ("stream/engine.py", "motionstream.train.rollout"),      # stream must not import train
    ("data/effects.py", "motionstream.eval.benchmarks"),     # data must not import eval
    ("models/folders.py", "motionstream.diffusion.flow"),    # models below diffusion
])
def test_an_upward_import_breaks_the_layers(linter, tmp_path, module, upward):
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "motionstream", copy / "motionstream", ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(REPO / ".importlinter", copy / ".importlinter")
    path = copy / "motionstream" / module
    path.write_text(path.read_text() + f"\n\ndef _upward():\n    import {upward}  # noqa: F401\n")
    result = linter(copy)
    assert result.returncode != 0 and "Layers" in result.stdout and "BROKEN" in result.stdout, result.stdout


def test_a_cycle_between_siblings_breaks_the_contract(linter, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "motionstream", copy / "motionstream", ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(REPO / ".importlinter", copy / ".importlinter")
    path = copy / "motionstream" / "tracks" / "trackset.py"     # tracks.io imports tracks.trackset
    path.write_text(path.read_text() + "\n\ndef _cycle():\n    import motionstream.tracks.io  # noqa: F401\n")
    result = linter(copy)
    assert result.returncode != 0 and "No import cycles" in result.stdout, result.stdout
