"""Seed ranges for the synthetic world: disjoint train / val / test, and the fixed held-out test set.

Each split owns a block of SPLIT_SIZE seeds starting at SPLIT_BASE[split]; split_seeds(split, n)
is the first n seeds of that block (from `start`), so growing a dataset only appends clips.
held_out_seeds() = split_seeds("test", TEST_CLIPS) are the held-out clips every benchmark uses.
"""

from __future__ import annotations

SPLITS = ("train", "val", "test")
SPLIT_SIZE = 1_000_000_000
SPLIT_BASE = {name: index * SPLIT_SIZE for index, name in enumerate(SPLITS)}
TEST_CLIPS = 64


def split_seeds(split: str, n: int, start: int = 0) -> list[int]:
    """Seeds start .. start + n - 1 of `split` (train / val / test); ranges never overlap."""
    if split not in SPLIT_BASE:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    if n < 0 or start < 0 or start + n > SPLIT_SIZE:
        raise ValueError(f"split {split!r} holds seeds 0..{SPLIT_SIZE - 1}; asked for {n} from {start}")
    base = SPLIT_BASE[split] + start
    return list(range(base, base + n))


def split_of(seed: int) -> str:
    """The split a seed belongs to (inverse of split_seeds)."""
    index = int(seed) // SPLIT_SIZE
    if not 0 <= index < len(SPLITS):
        raise ValueError(f"seed {seed} is outside every split")
    return SPLITS[index]


def held_out_seeds() -> list[int]:
    """The TEST_CLIPS held-out test seeds shared by every benchmark."""
    return split_seeds("test", TEST_CLIPS)
