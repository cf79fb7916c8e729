"""Metrics, baselines and the training-time track-following report, on small synthetic clips."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from motionstream.scoring import metrics
from motionstream.scoring.baselines import forward_warp, repeat_first_frame
from motionstream.scoring.track_following import TrackFollowingEval, format_report
from motionstream.tracks import TrackSet

H, W, T, FPS = 72, 128, 9, 16.0
SHIFT = 2.0  # pixels per frame, content moves left


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (0, 0), 1.5)


def translating_clip(num_frames: int = T, shift: float = SHIFT):
    """A texture panning left by `shift` px/frame, exact grid tracks, a moving mask on a square."""
    big = texture(H, W + int(shift * num_frames) + 2)
    frames = np.stack([big[:, int(round(t * shift)):int(round(t * shift)) + W] for t in range(num_frames)])
    gx, gy = np.meshgrid(np.linspace(8, W - 8, 12), np.linspace(8, H - 8, 7))
    p0 = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    tracks = np.stack([p0 - np.array([shift * t, 0], np.float32) for t in range(num_frames)])
    ts = TrackSet(tracks, np.ones(tracks.shape[:2], bool), W, H, FPS)
    mask = np.zeros(frames.shape[:3], bool)
    mask[:, 20:40, 30:60] = True
    return SimpleNamespace(frames=frames, tracks=ts, moving_mask=mask)


def lk_tracker(frames: np.ndarray, points: np.ndarray, fps: float) -> TrackSet:
    """A plain pyramidal Lucas-Kanade tracker, frame to frame (test stand-in for the project tracker)."""
    import cv2

    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    pts = points.astype(np.float32).reshape(-1, 1, 2)
    out = [pts[:, 0].copy()]
    for a, b in zip(grey[:-1], grey[1:]):
        pts, _, _ = cv2.calcOpticalFlowPyrLK(a, b, pts, None, winSize=(15, 15), maxLevel=2)
        out.append(pts[:, 0].copy())
    tracks = np.stack(out).astype(np.float32)
    return TrackSet(tracks, np.ones(tracks.shape[:2], bool), frames.shape[2], frames.shape[1], fps)


# ----------------------------------------------------------------------------- PSNR / SSIM
def test_psnr_ssim_identical_and_known_noise():
    a = texture(32, 48)[None].repeat(3, 0)
    assert metrics.psnr(a, a) == math.inf and metrics.ssim(a, a) == pytest.approx(1.0)
    # +-5 everywhere: MSE = 25 exactly -> PSNR = 10 log10(255^2 / 25)
    b = a.astype(np.int16) + np.where(np.indices(a.shape).sum(0) % 2 == 0, 5, -5)
    b = np.clip(b, 0, 255).astype(np.uint8)
    exact = (b.astype(float) - a) ** 2
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / exact.mean()), rel=1e-9)
    assert 20 < metrics.psnr(a, b) < 35
    assert metrics.ssim(a, b) < 0.999
    noisy = np.clip(a + np.random.default_rng(1).normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert metrics.ssim(a, noisy) < metrics.ssim(a, b)


def test_psnr_mask_and_shape_errors():
    a = np.zeros((2, 8, 8, 3), np.uint8)
    b = a.copy()
    b[:, :4] = 10                        # errors only in the top half
    mask = np.zeros((2, 8, 8), bool)
    mask[:, 4:] = True
    assert metrics.region_psnr(a, b, mask) == math.inf
    assert metrics.region_psnr(a, b, ~mask) == pytest.approx(10 * math.log10(255 ** 2 / 100))
    assert math.isnan(metrics.region_psnr(a, b, np.zeros_like(mask)))
    assert metrics.frame_psnr(a, b).shape == (2,)
    with pytest.raises(ValueError, match="shape"):
        metrics.psnr(a, b[:1])
    with pytest.raises(ValueError, match="uint8"):
        metrics.psnr(a.astype(np.float32), b)


def test_lpips_is_skipped_without_local_weights(capsys, tmp_path):
    a = np.zeros((1, 8, 8, 3), np.uint8)
    assert metrics.lpips(a, a) is None
    assert metrics.lpips(a, a, tmp_path / "nope.safetensors") is None
    assert "skipped" in capsys.readouterr().err


def test_lpips_with_local_weights(tmp_path):
    """A weights file in the documented layout (random values): 0 for identical, > 0 otherwise."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    state = {}
    for i, (layer, s) in enumerate(shapes.items()):
        state[f"features.{layer}.weight"] = torch.randn(s, generator=g) * 0.05
        state[f"features.{layer}.bias"] = torch.zeros(s[0])
        state[f"lin{i}.model.1.weight"] = torch.rand(1, s[0], 1, 1, generator=g)
    path = tmp_path / "lpips_alex.safetensors"
    save_file(state, str(path))
    a = texture(64, 64)[None]
    b = np.clip(a.astype(int) + 60, 0, 255).astype(np.uint8)
    assert metrics.lpips(a, a, path) == pytest.approx(0.0, abs=1e-6)
    assert metrics.lpips(a, b, path) > 1e-4


# ---------------------------------------------------------------------------------- EPE
def test_epe_true_video_small_frozen_frame_large():
    clip = translating_clip()
    true_epe = metrics.epe(clip.tracks, clip.frames, lk_tracker)
    frozen = metrics.epe(clip.tracks, repeat_first_frame(clip.frames[0], T), lk_tracker)
    assert true_epe < 0.5
    # a frozen frame's tracks stay put: mean error = mean displacement = SHIFT * mean(1..T-1)
    assert frozen == pytest.approx(SHIFT * np.mean(np.arange(1, T)), rel=0.05)
    assert metrics.tracker_noise_floor(clip.frames, clip.tracks, lk_tracker) == pytest.approx(true_epe)


def test_epe_ignores_invisible_and_out_of_frame_points_and_rescales():
    clip = translating_clip()
    tr = clip.tracks.tracks.copy()
    vis = clip.tracks.visibility.copy()
    vis[:, 0] = False                        # this track is wrong but invisible
    tr[:, 0] += 50
    tr[:, 1, 0] = -5                         # this one is out of frame from frame 1 on
    tr[0, 1, 0] = clip.tracks.tracks[0, 1, 0]
    bad = TrackSet(tr, vis, W, H, FPS)
    err, valid = metrics.track_errors(bad, clip.frames, lk_tracker)
    assert not valid[:, 0].any() and not valid[1:, 1].any() and not valid[0].any()
    assert err[valid].mean() < 0.5
    # tracks given for a 2x larger image: errors come back in that image's pixels (2x)
    big = clip.tracks.scaled(2 * W, 2 * H)
    frozen = repeat_first_frame(clip.frames[0], T)
    assert metrics.epe(big, frozen, lk_tracker) == pytest.approx(2 * metrics.epe(clip.tracks, frozen, lk_tracker), rel=1e-4)
    with pytest.raises(ValueError, match="frames"):
        metrics.epe(clip.tracks, clip.frames[:-1], lk_tracker)


def test_epe_with_project_tracker():
    pytest.importorskip("motionstream.tracks.tracker")
    clip = translating_clip()
    assert metrics.epe(clip.tracks, clip.frames) < 0.5
    assert metrics.epe(clip.tracks, repeat_first_frame(clip.frames[0], T)) > 4.0


# ----------------------------------------------------------------------------- baselines
def test_baselines_shapes_and_forward_warp_beats_frozen_frame():
    clip = translating_clip()
    frozen = repeat_first_frame(clip.frames[0], T)
    warped = forward_warp(clip.frames[0], clip.tracks)
    assert frozen.shape == warped.shape == clip.frames.shape and warped.dtype == np.uint8
    assert np.array_equal(warped[0], clip.frames[0]) and np.array_equal(frozen[-1], clip.frames[0])
    assert metrics.psnr(warped, clip.frames) > metrics.psnr(frozen, clip.frames) + 8
    # the warp's own tracks follow the input: EPE near the floor, far below the frozen frame's
    assert metrics.epe(clip.tracks, warped, lk_tracker) < 0.25 * metrics.epe(clip.tracks, frozen, lk_tracker)
    # tracks for another image size are rescaled to the frame
    assert np.array_equal(forward_warp(clip.frames[0], clip.tracks.scaled(2 * W, 2 * H)), warped)
    with pytest.raises(ValueError):
        repeat_first_frame(clip.frames, 3)


def test_forward_warp_without_nearby_tracks_keeps_content():
    """A single track far away in a corner must not drag the rest of the image."""
    img = texture(H, W)
    tr = np.array([[[2, 2]], [[6, 2]]], np.float32)
    out = forward_warp(img, TrackSet(tr, np.ones((2, 1), bool), W, H, FPS))
    assert np.abs(out[1, H // 2:, W // 2:].astype(int) - img[H // 2:, W // 2:]).max() <= 1


# ------------------------------------------------------------------------ text adherence
def test_text_adherence_darkening_vs_constant():
    base = texture(36, 64)
    const = base[None].repeat(12, 0)
    gains = np.linspace(1.0, 0.6, 12)[:, None, None, None]
    dark = (base[None].astype(float) * gains).astype(np.uint8)
    bright = (255 - (255 - base[None].astype(float)) * gains).astype(np.uint8)
    assert metrics.effect_present(dark, "darker") and not metrics.effect_present(const, "darker")
    assert not metrics.effect_present(dark, "brighter") and metrics.effect_present(bright, "brighter")
    assert not metrics.effect_present(bright, "flash")          # a ramp is not a transient
    res = metrics.text_adherence(dark, ["darker", "brighter"])
    assert res["darker"]["agrees"] and not res["brighter"]["agrees"]
    assert metrics.adherence_rate([res]) == 0.5
    for effect in metrics.EFFECTS:
        assert not metrics.effect_present(const, effect), effect
    with pytest.raises(ValueError, match="unknown effect"):
        metrics.effect_score(const, "rainbow")


def test_text_adherence_other_effects_fire_on_their_effect():
    rng = np.random.default_rng(0)
    base = texture(36, 64)
    n = 12
    ramp = np.linspace(0, 1, n)[:, None, None, None]
    grey = np.full_like(base, 128)
    tint = np.clip(base[None] + ramp * np.array([60, 0, -60]), 0, 255).astype(np.uint8)
    fog = (base[None] * (1 - 0.7 * ramp) + 200 * 0.7 * ramp).astype(np.uint8)
    flash = base[None].repeat(n, 0).astype(float)
    flash[6] = np.clip(flash[6] + 90, 0, 255)
    particles = np.repeat(grey[None], n, 0)
    for t in range(n):                       # more bright specks every frame
        ys, xs = rng.integers(0, 36, 10 * t), rng.integers(0, 64, 10 * t)
        particles[t, ys, xs] = 255
    cases = {"tint": tint, "fog": fog, "flash": flash.astype(np.uint8), "particles": particles}
    for effect, video in cases.items():
        assert metrics.effect_present(video, effect), effect


# ---------------------------------------------------------------------- training report
def test_track_following_report_orders_models():
    clips = [translating_clip(), translating_clip(shift=1.0)]
    ev = TrackFollowingEval(clips, max_points=40, tracker=lk_tracker)
    perfect = ev(lambda c: c.frames)
    frozen = ev(lambda c: repeat_first_frame(c.frames[0], len(c.frames)))
    assert perfect["epe"] < 0.5 and perfect["epe_ratio"] < 0.2 and perfect["epe_reliable_ratio"] < 0.2
    assert frozen["epe_ratio"] == pytest.approx(1.0)
    assert perfect["psnr"] == metrics.PSNR_CAP_DB
    assert frozen["psnr"] == pytest.approx(frozen["psnr_first_frame_baseline"])
    assert frozen["region_psnr"] < frozen["region_psnr_forward_warp_baseline"]
    assert perfect["reliable_fraction"] > 0.95 and perfect["tracker_floor"] < 0.5
    assert len(perfect["per_clip"]) == 2 and "ratio" in format_report(frozen)
    with pytest.raises(ValueError, match="uint8"):
        ev(lambda c: c.frames[:-1])


def test_reliable_points_drop_what_the_tracker_cannot_follow():
    """A flash whites out the second half of the clip: LK loses every point there, so the plain EPE
    floor is large while the EPE over reliable points keeps a sub-pixel floor and still separates
    the true video from the frozen frame."""
    clip = translating_clip()
    clip.frames[T // 2:] = 255
    ev = TrackFollowingEval([clip], max_points=None, tracker=lk_tracker)
    truth = ev.ground_truth()
    reliable = ev.refs[0].reliable
    assert not reliable[T // 2:].any() and reliable[1:T // 2].mean() > 0.95
    valid = clip.tracks.conditioning_mask()
    before_flash = valid[1:T // 2].sum() / valid[1:].sum()
    assert truth["epe_reliable"] < 0.5 and 0.95 * before_flash < truth["reliable_fraction"] <= before_flash
    assert truth["epe"] > 20
    frozen = ev.score_video(0, repeat_first_frame(clip.frames[0], T))
    assert frozen.epe_reliable > 4 * truth["epe_reliable"] + 1
    assert np.array_equal(metrics.reliable_points(clip.frames, clip.tracks, lk_tracker), reliable)
