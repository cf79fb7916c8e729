"""TrackSet: the one in-memory format for 2D motion tracks.

Every source of motion (grids, drags, drawn paths, camera paths, the point tracker, files from
other projects) produces a TrackSet, and everything downstream (rasterization, drawing, metrics)
consumes one.

    tracks      float32 [T, N, 2]  pixel (x, y) in the conditioning image, top-left origin,
                                   pixel centres at integer + 0.5 is NOT assumed: (0, 0) is the
                                   top-left corner of the top-left pixel.
    visibility  bool    [T, N]     True where the point is visible (occluded/unknown = False).
    width, height   int > 0        size of the conditioning image in pixels.
    fps             float > 0      frame rate of the T frames.
    ids         int64   [N] | None stable per-track identifiers (e.g. the sinusoidal embedding seed).
    role        list[str] | None   per-track role, one of ROLES.

Points outside the image are legal: they simply do not condition the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from motionstream.errors import TrackError  # noqa: F401 (re-exported)

ROLES = ("drag", "static", "path", "transfer", "camera")


@dataclass
class TrackSet:
    tracks: np.ndarray
    visibility: np.ndarray
    width: int
    height: int
    fps: float
    ids: np.ndarray | None = None
    role: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise TrackError naming the first problem found."""
        t, v = self.tracks, self.visibility
        if not isinstance(t, np.ndarray) or t.ndim != 3 or t.shape[-1] != 2:
            raise TrackError(f"tracks must be an array of shape [T, N, 2], got {getattr(t, 'shape', type(t))}")
        if t.dtype != np.float32:
            raise TrackError(f"tracks must be float32, got {t.dtype}")
        if not np.isfinite(t).all():
            bad = np.argwhere(~np.isfinite(t))[0]
            raise TrackError(f"tracks contain NaN/inf (first at frame {bad[0]}, track {bad[1]})")
        if not isinstance(v, np.ndarray) or v.ndim != 2:
            raise TrackError(f"visibility must be an array of shape [T, N], got {getattr(v, 'shape', type(v))}")
        if v.dtype != np.bool_:
            raise TrackError(f"visibility must be bool, got {v.dtype}")
        if v.shape != t.shape[:2]:
            raise TrackError(f"T or N mismatch: tracks {t.shape[:2]} vs visibility {v.shape}")
        if t.shape[0] < 1:
            raise TrackError("a TrackSet needs at least one frame (T >= 1)")
        for name in ("width", "height"):
            val = getattr(self, name)
            if not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val <= 0:
                raise TrackError(f"{name} must be a positive integer, got {val!r}")
        if not isinstance(self.fps, (int, float, np.floating)) or not np.isfinite(self.fps) or self.fps <= 0:
            raise TrackError(f"fps must be a positive number, got {self.fps!r}")
        self.width, self.height, self.fps = int(self.width), int(self.height), float(self.fps)
        n = t.shape[1]
        if self.ids is not None:
            ids = np.asarray(self.ids)
            if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
                raise TrackError(f"ids must be an integer array of shape [{n}], got {ids.dtype} {ids.shape}")
            self.ids = ids.astype(np.int64)
        if self.role is not None:
            role = list(self.role)
            if len(role) != n:
                raise TrackError(f"role must have one entry per track ({n}), got {len(role)}")
            unknown = sorted(set(role) - set(ROLES))
            if unknown:
                raise TrackError(f"unknown roles {unknown}; allowed: {list(ROLES)}")
            self.role = role

    # ------------------------------------------------------------- properties
    @property
    def num_frames(self) -> int:
        return int(self.tracks.shape[0])

    @property
    def num_tracks(self) -> int:
        return int(self.tracks.shape[1])

    @property
    def duration(self) -> float:
        """Seconds covered, from frame 0 to the last frame."""
        return (self.num_frames - 1) / self.fps

    def in_frame(self) -> np.ndarray:
        """bool [T, N]: the point lies inside the image (0 <= x < width, 0 <= y < height)."""
        x, y = self.tracks[..., 0], self.tracks[..., 1]
        return (x >= 0) & (x < self.width) & (y >= 0) & (y < self.height)

    def conditioning_mask(self) -> np.ndarray:
        """bool [T, N]: visible and inside the image, i.e. the points that condition the model."""
        return self.visibility & self.in_frame()

    # -------------------------------------------------------------- editing
    def subset(self, index: np.ndarray | slice | list[int]) -> "TrackSet":
        """The tracks selected by `index` along N (ids and roles follow)."""
        idx = np.arange(self.num_tracks)[index]
        return replace(
            self,
            tracks=self.tracks[:, idx].copy(),
            visibility=self.visibility[:, idx].copy(),
            ids=None if self.ids is None else self.ids[idx].copy(),
            role=None if self.role is None else [self.role[i] for i in idx],
        )

    def frames(self, start: int, stop: int) -> "TrackSet":
        """Frames [start, stop) along T."""
        return replace(self, tracks=self.tracks[start:stop].copy(), visibility=self.visibility[start:stop].copy())

    def scaled(self, width: int, height: int) -> "TrackSet":
        """The same tracks in the pixel coordinates of an image resized to (width, height)."""
        s = np.array([width / self.width, height / self.height], np.float32)
        return replace(self, tracks=(self.tracks * s).astype(np.float32), width=int(width), height=int(height))

    @staticmethod
    def concat(sets: list["TrackSet"]) -> "TrackSet":
        """Join track sets with the same T, size and fps along N."""
        if not sets:
            raise TrackError("concat needs at least one TrackSet")
        a = sets[0]
        for b in sets[1:]:
            if (b.num_frames, b.width, b.height, b.fps) != (a.num_frames, a.width, a.height, a.fps):
                raise TrackError("concat: TrackSets differ in frames, size or fps")
        has_ids = all(s.ids is not None for s in sets)
        has_role = any(s.role is not None for s in sets)
        return TrackSet(
            tracks=np.concatenate([s.tracks for s in sets], 1),
            visibility=np.concatenate([s.visibility for s in sets], 1),
            width=a.width, height=a.height, fps=a.fps,
            ids=np.concatenate([s.ids for s in sets]) if has_ids else None,
            role=sum((s.role or ["transfer"] * s.num_tracks for s in sets), []) if has_role else None,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrackSet):
            return NotImplemented
        same_ids = (self.ids is None and other.ids is None) or (
            self.ids is not None and other.ids is not None and np.array_equal(self.ids, other.ids))
        return (np.array_equal(self.tracks, other.tracks) and np.array_equal(self.visibility, other.visibility)
                and (self.width, self.height, self.fps) == (other.width, other.height, other.fps)
                and same_ids and self.role == other.role)
