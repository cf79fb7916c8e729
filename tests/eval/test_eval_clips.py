"""The hard real set: the fastest-moving segments of a folder of videos (eval/clips.py)."""

from __future__ import annotations

import numpy as np

from motionstream.eval.clips import fast_segments, motion_score
from motionstream.video import write_video


def moving_video(n: int, speed: float) -> np.ndarray:
    """uint8 [n, 64, 96, 3]: a textured pattern sliding right by `speed` px per frame."""
    rng = np.random.default_rng(0)
    tex = (rng.random((64, 400, 3)) * 255).astype(np.uint8)
    import cv2

    tex = cv2.GaussianBlur(tex, (5, 5), 1.5)
    return np.stack([tex[:, int(round(k * speed)):int(round(k * speed)) + 96] for k in range(n)])


def test_motion_score_grows_with_speed():
    still, slow, fast = (motion_score(moving_video(9, s)) for s in (0.0, 1.0, 3.0))
    assert still < 0.1 < slow < fast
    assert abs(fast - 3.0) < 1.0           # px per frame at the frames' own size


def test_fast_segments_rank_by_motion_and_cover_every_video(tmp_path):
    write_video(tmp_path / "a_still.mp4", moving_video(40, 0.0), fps=16)
    write_video(tmp_path / "b_fast.mp4", moving_video(40, 4.0), fps=16)
    segs = fast_segments(3, tmp_path, 9, 16.0, (96, 64))
    assert len(segs) == 3
    scores = [s for _, _, s in segs]
    assert scores == sorted(scores, reverse=True)
    names = [n for n, _, _ in segs]
    assert any(n.startswith("a_still") for n in names) and names[0].startswith("b_fast")
    assert any(n.endswith("x2") for n in names)            # played at twice the speed: twice the motion
    assert all(f.shape == (9, 64, 96, 3) for _, f, _ in segs)
