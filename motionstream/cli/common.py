"""What every command shares: argument parsers and checks that fail before any model loads, and the
decorator that turns a library error into the one-line UserError `main` prints.

Like every module in cli/, this one imports the library inside the functions that use it, so that
`motionstream --help` and a bad argument answer without loading torch."""

from __future__ import annotations

import functools

from motionstream.errors import TrackError, UserError, VideoError
from motionstream.limits import MAX_IMAGE_PIXELS

MAX_GRID = 500          # points per side of a query grid: 250,000 tracks


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'832x480' -> (832, 480); None stays None."""
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"size must look like WIDTHxHEIGHT (e.g. 832x480), got {text!r}") from None
    if w <= 0 or h <= 0:
        raise UserError(f"size must be positive, got {text!r}")
    if w * h > MAX_IMAGE_PIXELS:
        raise UserError(f"size {text} is more than the limit of {MAX_IMAGE_PIXELS} pixels (MAX_IMAGE_PIXELS)")
    return w, h


def check_grid(grid: int) -> int:
    """--grid within [1, MAX_GRID] (grid x grid tracks are allocated per frame)."""
    if not 1 <= grid <= MAX_GRID:
        raise UserError(f"--grid must be within [1, {MAX_GRID}] (MAX_GRID), got {grid}")
    return grid


def user_errors(fn):
    """Decorator: the TrackError / VideoError of a CLI handler become one-line UserErrors
    (shared by the `tracks` and the streaming sub-commands)."""
    @functools.wraps(fn)
    def wrapper(args):
        try:
            return fn(args)
        except (TrackError, VideoError) as err:
            raise UserError(str(err)) from err
    return wrapper
