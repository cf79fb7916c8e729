"""Caps on what a user may hand us, shared by the readers of every layer: a leaf with no imports,
so that checking a track file against the image cap loads neither OpenCV nor PyAV."""

MAX_IMAGE_PIXELS = 40_000_000              # decoded images and video frames: 120 MB as RGB (CLI and studio)
