"""`motionstream --help` answers without torch: cli/ imports the library inside its handlers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "fastapi", "transformers")   # what a help text must not wait for (torch: ~2 s)


def loaded_after(code: str) -> list[str]:
    """The HEAVY modules in sys.modules after running `code` in a fresh interpreter."""
    probe = code + f"\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_building_the_whole_parser_imports_no_heavy_module():
    assert loaded_after("import motionstream.cli\nmotionstream.cli.build_parser()") == []


@pytest.mark.parametrize("command", ["tracks", "data", "eval", "generate", "transfer", "studio", "demo"])
def test_a_command_parser_imports_no_torch(command):
    assert "torch" not in loaded_after(f"import motionstream.cli\nmotionstream.cli.build_parser({command!r})")


def test_the_probe_sees_torch_when_it_is_imported():
    """The check above can fail: a library module that loads torch shows up."""
    assert "torch" in loaded_after("import motionstream.stream.engine")
