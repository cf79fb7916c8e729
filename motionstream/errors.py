"""The errors a user can cause and fix: a leaf module every layer may import.

`motionstream.cli.main` prints a UserError as one line (no traceback); the command handlers turn the
other errors here into UserError with the context the user needs (which file, which option).
Each library module re-exports the errors it raises, so `from motionstream.video import VideoError`
keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input: printed as one line, no traceback."""


class ConfigError(ValueError):
    """A config file or section is missing or malformed."""


class WeightsNotFound(FileNotFoundError):
    """A model folder or weights file is missing: the message says where we looked and what to do."""


class TrackError(ValueError):
    """A TrackSet (or a file being read into one) is malformed."""


class VideoError(ValueError):
    """A video or image file is missing, unreadable or empty, or an output path cannot be written."""


class ImageFormatError(VideoError):
    """The bytes are not an image in one of IMAGE_FORMATS."""


class ImageTooLarge(VideoError):
    """The image header announces more than the allowed pixels."""


class ShardError(ValueError):
    """A shard folder is missing, incomplete or does not match what was asked for."""


class VideoFolderError(ValueError):
    """The folder has no usable videos (missing, too short, unreadable)."""
