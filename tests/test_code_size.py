"""Function size: no function in motionstream/ or benchmarks/ is longer than MAX_FUNCTION_LINES.

Length = from the `def` line to the function's last line (docstring and nested functions included,
decorators not). OVERSIZED lists the functions being split right now (issue 20); an entry that is
no longer over the limit fails too, so the list only shrinks and is empty once the split lands.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECKED_DIRS = ("motionstream", "benchmarks")
MAX_FUNCTION_LINES = 80

# "path::qualified.name": functions other branches are splitting (issue 20); remove each as it lands
OVERSIZED = {
    "benchmarks/stream.py::main",                        # one streaming-speed benchmark
    "motionstream/train/teacher.py::train_teacher",      # train/loop.py: one training-loop skeleton
    "motionstream/train/vae.py::train_vae",
    "motionstream/train/ode.py::train_ode",
    "motionstream/train/tiny_decoder.py::train_tiny_decoder",
    "motionstream/train/dmd.py::train_dmd",
    "motionstream/train/gt.py::train_gt",
}


def function_lengths(source: str) -> dict[str, int]:
    """{qualified name (Class.method, outer.inner): lines from `def` to the last line} of a module."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lengths[name] = child.end_lineno - child.lineno + 1
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return lengths


def all_function_lengths() -> dict[str, int]:
    """{"path::qualified.name": lines} for every function under CHECKED_DIRS."""
    out = {}
    for folder in CHECKED_DIRS:
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            out.update({f"{rel}::{name}": n for name, n in function_lengths(path.read_text()).items()})
    return out


def test_function_lengths_are_measured_from_def_to_last_line():
    source = ("class A:\n"
              "    def m(self):\n"
              "        def inner():\n"
              "            return 1\n"
              "        return inner()\n"
              "\n"
              "@decorator\n"
              "def f():\n"
              "    pass\n")
    assert function_lengths(source) == {"A.m": 4, "A.m.inner": 2, "f": 2}


def test_no_function_is_longer_than_the_limit():
    lengths = all_function_lengths()
    too_long = {name: n for name, n in lengths.items() if n > MAX_FUNCTION_LINES and name not in OVERSIZED}
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines (split them): {too_long}"
    stale = sorted(name for name in OVERSIZED if lengths.get(name, 0) <= MAX_FUNCTION_LINES)
    assert not stale, f"no longer over {MAX_FUNCTION_LINES} lines or gone: remove from OVERSIZED: {stale}"
