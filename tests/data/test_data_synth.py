"""The synthetic world: determinism, prefix consistency, exact tracks, occlusion, captions/effects."""

from dataclasses import replace

import cv2
import numpy as np
import pytest

from motionstream.data.effect_scores import effect_scores
from motionstream.data.effects import EFFECTS
from motionstream.data.scenes import HUES
from motionstream.data.synth import (WorldConfig, build_world, composite, frame_grid, pixel_centres,
                                     render_clip, render_frames, render_without, scene_tracks)

W, H, FPS = 128, 72, 16


def test_same_seed_same_bytes_and_different_seeds_differ():
    a, b = render_clip(3, num_frames=6, width=W, height=H), render_clip(3, num_frames=6, width=W, height=H)
    assert a.frames.dtype == np.uint8 and a.frames.shape == (6, H, W, 3)
    assert a.frames.tobytes() == b.frames.tobytes() and a.tracks == b.tracks and a.caption == b.caption
    assert np.array_equal(a.moving_mask, b.moving_mask) and a.effects == b.effects
    c = render_clip(4, num_frames=6, width=W, height=H)
    assert not np.array_equal(a.frames, c.frames) and a.caption != c.caption


def test_render_without_a_layer_shows_what_it_hides_and_keeps_the_rest():
    clip = render_clip(6, num_frames=6, width=W, height=H)
    layer = int(clip.owner.max())
    hidden = render_without(6, [layer], num_frames=6, width=W, height=H)
    assert hidden.shape == clip.frames.shape and hidden.dtype == np.uint8
    diff = np.abs(hidden.astype(np.int16) - clip.frames).max(-1)
    owned = clip.owner == layer
    near = np.stack([cv2.dilate(o.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0 for o in owned])
    assert diff[owned].mean() > 20                 # where the layer was, something else shows
    assert diff[~near].mean() < 0.5 and diff[~near].max() <= 8     # elsewhere the same (soft shading aside)
    with pytest.raises(ValueError, match="object layers"):
        render_without(6, [0], num_frames=2, width=W, height=H)   # the background is not an object


def test_longer_render_starts_with_the_same_frames():
    short = render_clip(11, num_frames=9, width=W, height=H)
    long = render_clip(11, num_frames=21, width=W, height=H)
    assert np.array_equal(long.frames[:9], short.frames)
    assert long.tracks.frames(0, 9) == short.tracks
    assert np.array_equal(long.moving_mask[:9], short.moving_mask)
    assert long.caption == short.caption
    assert not np.array_equal(long.frames[9], long.frames[20])  # and the clip keeps moving


def test_grid_tracks_have_the_configured_layout():
    cfg = WorldConfig(grid_size=10)
    clip = render_clip(5, num_frames=4, width=W, height=H, cfg=cfg)
    ts = clip.tracks
    assert ts.tracks.shape == (4, 100, 2) and ts.visibility.shape == (4, 100)
    assert (ts.width, ts.height, ts.fps) == (W, H, 16.0)
    np.testing.assert_allclose(ts.tracks[0], frame_grid(W, H, 10), atol=1e-3)
    assert ts.visibility[0].all()  # every grid point is on some layer and inside the frame at t=0


def _coordinate_textures(scene):
    """Replace every texture by (u_x, u_y, layer index) in texture px, premultiplied, same alpha:
    rendering then writes, at every pixel, which texture point of which layer landed there."""
    for index, layer in enumerate(scene.layers):
        h, w = layer.texture.shape[:2]
        uy, ux = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
        alpha = layer.texture[..., 3]
        rgb = np.stack([ux, uy, np.full_like(ux, index)], -1) * alpha[..., None]
        layer.texture = np.concatenate([rgb, alpha[..., None]], -1).astype(np.float32)


def _bilinear(img, pts):
    """Sample img [H, W, C] at continuous points [N, 2] (pixel centres at +0.5); returns values and the
    4 neighbour values [4, N, C]."""
    x, y = pts[:, 0] - 0.5, pts[:, 1] - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = np.clip(x0, 0, img.shape[1] - 2), np.clip(y0, 0, img.shape[0] - 2)
    n = np.stack([img[y0, x0], img[y0, x0 + 1], img[y0 + 1, x0], img[y0 + 1, x0 + 1]])
    val = n[0] * (1 - fx) * (1 - fy) + n[1] * fx * (1 - fy) + n[2] * (1 - fx) * fy + n[3] * fx * fy
    return val, n


@pytest.mark.parametrize("seed", [0, 2, 9, 21])
def test_tracks_land_on_the_rendered_texture_point_and_occlusion_hides_them(seed):
    # rotation, scale pulses, wobble, camera pan/zoom/roll and parallax all occur in these seeds
    cfg = replace(WorldConfig(grid_size=30), wobble_prob=0.6)
    scene, _, _ = build_world(seed, W, H, cfg)
    times = np.arange(0, 24, 3) / FPS
    tracks, visible, point_layer = scene_tracks(scene, times, cfg.grid_size, cfg.occlusion_alpha)
    pts0 = frame_grid(W, H, cfg.grid_size)
    expected_u = np.zeros_like(pts0)
    for index, layer in enumerate(scene.layers):
        sel = point_layer == index
        expected_u[sel] = np.stack(layer.screen_to_texture(scene.camera, 0.0, scene.screen_centre,
                                                           pts0[sel, 0], pts0[sel, 1]), 1)
    _coordinate_textures(scene)
    pix = pixel_centres(W, H)
    checked = errors = 0
    occl_ok = occl_n = 0
    worst = 0.0
    for i, t in enumerate(times):
        canvas, owner = composite(scene, float(t), cfg.occlusion_alpha, pix)
        inside = (tracks[i, :, 0] >= 1) & (tracks[i, :, 0] < W - 1) & (tracks[i, :, 1] >= 1) & (tracks[i, :, 1] < H - 1)
        val, nb = _bilinear(canvas, tracks[i].astype(np.float64))
        # visible points whose 4 neighbour pixels are all purely their own layer: decode u exactly
        pure = (np.abs(nb[..., 2] - point_layer[None]) < 1e-4).all(0) & visible[i] & inside
        err = np.abs(val[pure, :2] - expected_u[pure]).max(1)
        checked += int(pure.sum())
        errors += int((err > 0.1).sum())
        worst = max(worst, float(err.max(initial=0)))
        # invisible points inside the frame sit under a nearer layer in the rendered owner map
        hidden = ~visible[i] & inside
        near = owner[tracks[i, hidden, 1].astype(int), tracks[i, hidden, 0].astype(int)]
        occl_ok += int((near > point_layer[hidden]).sum())
        occl_n += int(hidden.sum())
    assert checked > 0.5 * visible.sum(), (checked, visible.sum())
    assert errors == 0, f"{errors}/{checked} tracked points off their texture point by > 0.1 px (worst {worst:.3f})"
    assert occl_n == 0 or occl_ok >= 0.9 * occl_n, (occl_ok, occl_n)


def test_some_points_get_occluded_and_leave_the_frame():
    hidden = outside = 0
    for seed in range(6):
        clip = render_clip(seed, num_frames=24, width=W, height=H, cfg=WorldConfig(grid_size=20, effect_prob=0))
        inf = clip.tracks.in_frame()
        hidden += int((~clip.tracks.visibility & inf).sum())
        outside += int((~inf).sum())
        assert not (clip.tracks.visibility & ~inf).any()  # out of frame is never visible
    assert hidden > 0 and outside > 0


def test_real_colours_follow_the_tracks():
    # with real textures: the colour at a visible tracked point stays what it was on frame 0
    cfg = WorldConfig(grid_size=30, effect_prob=0)
    diffs, shuffled = [], []
    rng = np.random.default_rng(0)
    for seed in (1, 6):
        clip = render_clip(seed, num_frames=17, width=256, height=144, cfg=cfg)
        ts = clip.tracks
        c0, _ = _bilinear(clip.frames[0].astype(np.float32), ts.tracks[0].astype(np.float64))
        for t in (8, 16):
            ok = ts.visibility[t]
            ct, _ = _bilinear(clip.frames[t].astype(np.float32), ts.tracks[t].astype(np.float64))
            diffs.append(np.abs(ct[ok] - c0[ok]).mean(1))
            shuffled.append(np.abs(ct[ok] - c0[ok][rng.permutation(int(ok.sum()))]).mean(1))
    d, s = np.median(np.concatenate(diffs)), np.median(np.concatenate(shuffled))
    assert d < 6 and d < 0.25 * s, (d, s)


def test_moving_mask_covers_moving_objects_only():
    cfg = WorldConfig(camera_prob=0, static_object_prob=0, min_layers=2, max_layers=2, effect_prob=0)
    clip = render_clip(8, num_frames=5, width=W, height=H, cfg=cfg)
    assert 0.01 < clip.moving_mask.mean() < 0.9
    still = render_clip(8, num_frames=5, width=W, height=H,
                        cfg=replace(cfg, static_object_prob=1.0))  # nothing moves relative to the background
    assert not still.moving_mask.any()


def test_objects_keep_coming_back_in_long_streams():
    # the scene program is defined for any t: objects wrap around out of view and re-enter
    cfg = WorldConfig(grid_size=10)
    times = np.array([60.0, 90.0, 120.0])  # 2000 frames ~ 125 s at 16 fps
    pix = pixel_centres(W, H)
    on_screen = []
    for seed in range(8):
        scene, effects, _ = build_world(seed, W, H, cfg)
        frames = [f for f, _, _ in render_frames(scene, effects, times, cfg, 1 / FPS)]
        assert all(f.shape == (H, W, 3) and 5 < f.mean() < 250 for f in frames)
        on_screen += [bool(composite(scene, float(t), cfg.occlusion_alpha, pix)[1].any()) for t in times]
    assert np.mean(on_screen) > 0.5, on_screen


@pytest.mark.parametrize("name", EFFECTS)
def test_effect_named_in_caption_has_its_signature(name):
    cfg = WorldConfig(effects=[name], effect_prob=1.0, second_effect_prob=0.0)
    plain_cfg = replace(cfg, effect_prob=0.0)
    for seed in (0, 1):
        clip = render_clip(seed, num_frames=33, width=W, height=H, cfg=cfg)
        plain = render_clip(seed, num_frames=33, width=W, height=H, cfg=plain_cfg)
        assert clip.effects == [name] and plain.effects == []
        assert clip.caption != plain.caption and clip.caption.startswith(plain.caption[:-1])
        tint = next((hue for hue, _ in HUES if f"a {hue} tint" in clip.caption), None)
        got = effect_scores(clip.frames, tint)[name]
        ref = effect_scores(plain.frames, tint)[name]
        margin = {"darker": 0.05, "brighter": 0.05, "tint": 0.02, "fog": 0.1, "flash": 0.05, "particles": 0.004}[name]
        assert got > ref + margin, (name, seed, got, ref)
        if name == "darker":  # measured trend of mean brightness over time is negative
            luma = clip.frames.reshape(33, -1, 3).mean(1) @ np.array([0.299, 0.587, 0.114])
            assert np.polyfit(np.arange(33), luma, 1)[0] < -0.5
