"""Baselines that use no learned model (the Table 1 baselines, and the training-time references).

    repeat_first_frame(first_frame, T)  the frozen first frame: what a model that ignores the
                                        tracks produces; EPE and PSNR ratios are taken against it.
    forward_warp(first_frame, tracks)   the first frame moved along the tracks: what a model that
                                        only copies content along the tracks produces.

The forward warp lives in tracks/warp.py (the DiT's video prior uses it too).
"""

from __future__ import annotations

import numpy as np

from motionstream.tracks.warp import WarpConfig, dense_flow, forward_warp  # noqa: F401 (re-exported)


def repeat_first_frame(first_frame: np.ndarray, num_frames: int) -> np.ndarray:
    """uint8 [num_frames, H, W, 3]: the first frame [H, W, 3] repeated."""
    first_frame = np.asarray(first_frame, np.uint8)
    if first_frame.ndim != 3 or first_frame.shape[-1] != 3:
        raise ValueError(f"first_frame must be [H, W, 3], got {first_frame.shape}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return np.repeat(first_frame[None], num_frames, axis=0)


BASELINES = {
    "repeat-first-frame": lambda clip: repeat_first_frame(clip.frames[0], len(clip.frames)),
    "forward-warp": lambda clip: forward_warp(clip.frames[0], clip.tracks),
}
"""name -> generate_fn(clip) -> uint8 [T,H,W,3], for any clip with `.frames` and `.tracks`."""
