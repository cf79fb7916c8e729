"""What a benchmark needs and may not have: the exception that turns a missing piece into a
"not available" row, and the import that raises it. A leaf of eval/ (clips and benchmarks use it)."""

from __future__ import annotations

import importlib


class NotAvailable(Exception):
    """Something the benchmark needs (weights, a module still being built) is missing."""


def require_module(module: str, what: str):
    """Import `module` or raise NotAvailable naming it (for parts other engineers are still building)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise NotAvailable(f"{what} not built yet ({module}: {err})") from err
