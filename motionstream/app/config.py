"""The studio's settings: section `studio` of a preset, and who may reach the server.

A leaf of the app package (no torch, no FastAPI), so that `motionstream studio --help` can show the
defaults without loading the model stack.
"""

from __future__ import annotations

from dataclasses import dataclass

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")          # bind addresses that name no host a client would use
TOKEN_ENV = "MOTIONSTREAM_TOKEN"
TOKEN_SHOWN_CHARS = 4                           # the printed URL shows this much of the token


@dataclass
class StudioConfig:
    """Section `studio` of a preset (all limits of one server)."""

    host: str = "127.0.0.1"
    port: int = 7860
    jpeg_quality: int = 85
    threads: int = 0                       # torch threads (0 = torch's choice)
    max_clients: int = 32                  # open sockets; more are refused
    max_message_bytes: int = 65536         # one JSON control message
    max_messages_per_second: int = 400     # per client; beyond: dropped with one error a second
    max_pending_commands: int = 4096       # controls waiting for the next chunk boundary
    max_queued_frames: int = 24            # per client latest-wins frame queue (2 chunks)
    max_queued_messages: int = 64          # per client JSON outbox (oldest dropped)
    cache: str = ""                        # cache shape cXsYwZ the studio streams with ("" = the model's); a
                                           # shorter chunk starts sooner after a drag (the preset's section)
    lead_chunks: float = 1.0               # generate at most this many chunks ahead of playback ...
    lead_safety: float = 1.5               # ... and start a chunk only when the frames still to play last
                                           # less than this x its expected generation time (latency) ...
    lead_margin_s: float = 0.05            # ... plus this (JPEG encode, socket and browser decode, jitter)
    max_frame_lateness_s: float = 0.5      # a frame this late with newer ones behind it is dropped
    max_upload_bytes: int = 16 * 2 ** 20   # images (their pixels: video.MAX_IMAGE_PIXELS, the CLI's cap)
    max_video_bytes: int = 64 * 2 ** 20    # motion-transfer videos
    max_video_frames: int = 161            # driving frames kept (it ping-pongs beyond)
    max_images: int = 32                   # uploaded images kept in memory (oldest evicted)
    max_videos: int = 4
    max_pin_points: int = 2500             # one pinned grid
    max_drag_points: int = 1024            # one dragged / path patch
    grid_spacing: float = 8.0              # page defaults: points every VAE cell ...
    grid_size: float = 48.0                # ... in a patch this wide
    transfer_grid: int = 50                # tracker grid per side (a subset conditions the model)
    camera_frames: int = 81                # one pass of a camera move; it ping-pongs beyond
    camera_grid: int = 50
    camera_fov: float = 60.0
    max_mjpeg_viewers: int = 4
    record_dir: str = "runs/studio"        # per-session recordings (deleted when the session closes)
