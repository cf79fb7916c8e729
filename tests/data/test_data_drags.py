"""Studio-like inputs cut from the world's ground truth (data/drags.py) and the layers they read."""

from __future__ import annotations

import numpy as np
import pytest

from motionstream.data.drags import (PIN_MARGIN, changed_mask, drag_input, drag_world, moving_objects,
                                     never_covered, object_drag)
from motionstream.data.splits import split_seeds
from motionstream.data.synth import render_clip

W, H, T, FPS = 128, 72, 17, 16.0


@pytest.fixture(scope="module")
def clip():
    """The first val clip of the drag world with a moving object."""
    for seed in split_seeds("val", 20):
        c = render_clip(seed, T, W, H, FPS, cfg=drag_world())
        if moving_objects(c):
            return c
    pytest.fail("no val clip with a moving object in 20 seeds")


def test_layers_are_rendered_with_the_clip(clip):
    assert clip.owner.shape == (T, H, W) and clip.point_layer.shape == (clip.tracks.num_tracks,)
    # a grid point's layer owns the pixel under it on frame 0 (point and pixel sample alpha alike)
    pts = clip.tracks.tracks[0].astype(int)
    inside = (pts[:, 0] < W) & (pts[:, 1] < H)
    agree = clip.owner[0, pts[inside, 1], pts[inside, 0]] == clip.point_layer[inside]
    assert agree.mean() > 0.9
    assert set(np.unique(clip.owner)) <= set(range(int(clip.owner.max()) + 1))


def test_drag_follows_the_grab_points_truth(clip):
    layer = moving_objects(clip)[0]
    drag = object_drag(clip, layer)
    assert set(drag.role) == {"drag"}
    offsets = drag.tracks - drag.tracks[:1]
    assert np.allclose(offsets, offsets[:, :1], atol=1e-4)          # the patch moves rigidly
    sel = np.flatnonzero((clip.point_layer == layer) & clip.tracks.visibility[0])
    truth = clip.tracks.tracks[:, sel] - clip.tracks.tracks[:1, sel]
    # the pointer follows one of the object's own true tracks
    assert np.abs(truth - offsets[:, :1]).max(axis=(0, 2)).min() < 1e-3


def test_benchmark_input_is_fixed_and_pins_avoid_every_object(clip):
    tracks, objects = drag_input(clip)
    again, _ = drag_input(clip)
    assert tracks == again and objects == moving_objects(clip)
    pins = np.array([r == "static" for r in tracks.role])
    assert pins.any() and (tracks.tracks[:, pins] == tracks.tracks[:1, pins]).all()
    xy = tracks.tracks[0, pins].astype(int)
    assert never_covered(clip)[xy[:, 1], xy[:, 0]].all()
    covered = (clip.owner > 0).any(0)
    ys, xs = np.nonzero(covered)
    d = np.hypot(xy[:, None, 0] - xs[None], xy[:, None, 1] - ys[None]).min(1)
    assert d.min() > PIN_MARGIN - 1


def test_training_inputs_vary_with_the_rng(clip):
    a = [drag_input(clip, np.random.default_rng(i))[0] for i in range(6)]
    assert len({x.num_tracks for x in a}) > 1
    assert all(set(x.role) <= {"drag", "static"} for x in a)


def test_no_moving_object_gives_no_drag():
    still = render_clip(split_seeds("val", 1)[0], T, W, H, FPS, cfg=drag_world(static_object_prob=1.0))
    assert moving_objects(still) == [] and drag_input(still) is None


def test_changed_mask_marks_what_moved(clip):
    changed = changed_mask(clip.frames)
    assert not changed[0].any() and changed[-1].any()
    assert not changed[-1][never_covered(clip)].any()     # the still background never changes
