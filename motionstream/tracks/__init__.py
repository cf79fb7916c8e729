"""Motion tracks: the TrackSet format, file adapters, motion sources, the tracker, the conditioning signal."""

from motionstream.tracks.trackset import ROLES, TrackError, TrackSet

__all__ = ["ROLES", "TrackError", "TrackSet"]
