"""Motion tracks: the TrackSet format, file adapters, motion sources, the tracker, the conditioning signal.

The public API is importable from here (`from motionstream.tracks import load_tracks, track_video`).
Everything but the TrackSet core loads lazily on first use, so `import motionstream.tracks` stays
cheap (numpy only: no cv2, no torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from motionstream.tracks.trackset import ROLES, TrackError, TrackSet

# public name -> submodule that defines it
_LAZY = {
    # io: files in every supported format, frame-rate resampling
    "load_tracks": "io", "save_tracks": "io", "track_format": "io", "resample": "io",
    # sources: motion from grids, drags, keyframed paths
    "grid_points": "sources", "static_grid": "sources", "drag_tracks": "sources", "keyframe_path": "sources",
    "patch_points": "sources",
    # tracker: Lucas-Kanade point tracking of videos
    "track_frames": "tracker", "track_video": "tracker", "OnlineTracker": "tracker", "LKParams": "tracker",
    # camera: tracks of a camera move over a depth map
    "camera_tracks": "camera", "camera_path": "camera", "load_depth": "camera",
    # draw: overlays
    "draw_tracks": "draw", "save_overlay": "draw",
    # embed: the conditioning signal (Eq. 1)
    "TracksConfig": "embed", "rasterize": "embed", "track_id_embedding": "embed",
}

__all__ = ["ROLES", "TrackError", "TrackSet", *_LAZY]

if TYPE_CHECKING:  # static analysers see the real definitions
    from motionstream.tracks.camera import camera_path, camera_tracks, load_depth
    from motionstream.tracks.draw import draw_tracks, save_overlay
    from motionstream.tracks.embed import TracksConfig, rasterize, track_id_embedding
    from motionstream.tracks.io import load_tracks, resample, save_tracks, track_format
    from motionstream.tracks.sources import drag_tracks, grid_points, keyframe_path, patch_points, static_grid
    from motionstream.tracks.tracker import LKParams, OnlineTracker, track_frames, track_video


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value          # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
