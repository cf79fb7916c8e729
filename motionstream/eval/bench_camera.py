"""`camera`: camera-path tracks from a known depth (motionstream.tracks.camera), checked exactly.

Planar case: a fronto-parallel plane at depth d seen by a camera moving along a named path. Every
frame is then exactly the plane homography H_t = K (R_t + t_t n^T / d) K^-1 (n = (0, 0, 1)) of the
first frame, so
  - the tracks must equal H_t applied to the grid points (track error, px; float round-off only),
  - the image warped along the tracks (baselines.forward_warp) can be compared with the exact
    homography render (PSNR / SSIM inside the pixels the first frame covers),
  - the tracker re-extracts the tracks from the exact render (EPE = tracker floor on camera video).
Depth-step case: a near box at d/2 in front of the plane at d, camera trucking sideways: pure
translation gives image displacement f * tx / z, so near points must move exactly 2x as far as far
points (parallax ratio), and the box must hide part of the background (visibility < 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import skimage.data

from motionstream.config import REPO_ROOT, video_config
from motionstream.eval.benchmarks import BenchmarkContext, Table, benchmark, require_module
from motionstream.eval.clips import media_paths
from motionstream.scoring import metrics
from motionstream.scoring.baselines import forward_warp
from motionstream.tracks import camera
from motionstream.video import read_video, resize_crop


@dataclass
class CameraBenchConfig:
    """Scene constants of the camera benchmark (all relative, so any image size works)."""

    plane_depth: float = 2.0        # z of the plane, scene units
    near_box_ratio: float = 0.5     # the depth-step box sits at this fraction of the plane's depth
    box_frac: float = 0.4           # the box covers this central fraction of width and height
    strength: float = 1.0           # camera_path strength
    quick_paths: tuple[str, ...] = ("pan", "dolly")


CFG = CameraBenchConfig()


def homography(K: np.ndarray, pose: np.ndarray, depth: float) -> np.ndarray:
    """[3, 3] map of frame-0 pixels (continuous, (0,0) = top-left corner) to the frame of `pose`
    (world-to-camera [4, 4], world = camera 0) for the plane z = depth."""
    n = np.array([0.0, 0.0, 1.0])
    return K @ (pose[:3, :3] + np.outer(pose[:3, 3], n) / depth) @ np.linalg.inv(K)


def apply_homography(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.concatenate([pts, np.ones((len(pts), 1))], 1) @ H.T
    return p[:, :2] / p[:, 2:]


def render_homography(image: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frame uint8 [h, w, 3], valid bool [h, w]): `image` seen through H, and where it covers.
    cv2 samples at pixel centres (index i = continuous i + 0.5), hence the half-pixel shifts."""

    h, w = image.shape[:2]
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    M = np.linalg.inv(shift) @ H @ shift
    frame = cv2.warpPerspective(image, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    valid = cv2.warpPerspective(np.ones((h, w), np.uint8), M, (w, h), flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    return frame, valid


def camera_images(ctx: BenchmarkContext, n: int) -> list[tuple[str, np.ndarray]]:
    """Conditioning images at the model's size: media first frames, then skimage's bundled photos."""

    vcfg = video_config(ctx.cfg)
    width, height, fps = vcfg.width, vcfg.height, vcfg.fps
    images = []
    media_dir = (REPO_ROOT / ctx.eval_cfg.media_dir).resolve()
    for path in media_paths(media_dir)[:n]:
        images.append((path.stem, read_video(path, fps=fps, size=(width, height), max_frames=1)[0][0]))
    for name in ("astronaut", "coffee", "chelsea")[:max(0, n - len(images))]:
        images.append((name, resize_crop(np.asarray(getattr(skimage.data, name)())[..., :3], (width, height))))
    return images


def planar_case(image: np.ndarray, path: str, num_frames: int, grid: int, fps: float, max_points: int) -> dict[str, Any]:
    """Camera tracks vs the exact homography, and renders along the tracks vs the exact render."""

    h, w = image.shape[:2]
    K = camera.default_intrinsics(w, h)
    poses = camera.camera_path(path, num_frames, CFG.strength, scene_depth=CFG.plane_depth)
    tracks = camera.camera_tracks(np.full((h, w), CFG.plane_depth), K, poses, grid=grid, fps=fps)
    Hs = [homography(K, p, CFG.plane_depth) for p in poses]
    exact_pts = np.stack([apply_homography(H, tracks.tracks[0].astype(np.float64)) for H in Hs])
    vis = tracks.visibility
    err = np.linalg.norm(tracks.tracks - exact_pts, axis=-1)[vis]
    renders = [render_homography(image, H) for H in Hs]
    exact = np.stack([r[0] for r in renders])
    valid = np.stack([r[1] for r in renders])
    warped = forward_warp(image, tracks)
    frozen = np.repeat(image[None], num_frames, 0)
    eval_tracks = metrics.subsample_tracks(tracks, max_points)
    return {
        "track_err_max": float(err.max()), "track_err_mean": float(err.mean()),
        "visible_last": float(vis[-1].mean()),
        "mean_motion": float(np.linalg.norm(tracks.tracks[-1] - tracks.tracks[0], axis=-1)[vis[-1]].mean()),
        "warp_psnr": metrics.psnr(warped, exact, mask=valid), "warp_ssim": metrics.ssim(warped, exact, mask=valid),
        "frozen_psnr": metrics.psnr(frozen, exact, mask=valid),
        "tracker_floor": metrics.tracker_noise_floor(exact, eval_tracks),
        "warp_epe": metrics.epe(eval_tracks, warped),
        "frames": (exact, warped),
    }


def depth_step_case(width: int, height: int, num_frames: int, grid: int, fps: float) -> dict[str, float]:
    """Parallax of a near box against the plane behind it under a sideways truck."""

    depth = np.full((height, width), CFG.plane_depth)
    bh, bw = int(height * CFG.box_frac), int(width * CFG.box_frac)
    y0, x0 = (height - bh) // 2, (width - bw) // 2
    depth[y0:y0 + bh, x0:x0 + bw] = CFG.plane_depth * CFG.near_box_ratio
    poses = camera.camera_path("truck", num_frames, CFG.strength, scene_depth=CFG.plane_depth)
    tracks = camera.camera_tracks(depth, None, poses, grid=grid, fps=fps)
    p0 = tracks.tracks[0]
    near = depth[p0[:, 1].astype(int), p0[:, 0].astype(int)] < CFG.plane_depth
    both = tracks.visibility[-1]
    disp = np.abs(tracks.tracks[-1, :, 0] - p0[:, 0])
    return {"parallax_ratio": float(disp[near].mean() / disp[~near].mean()),
            "expected_ratio": 1.0 / CFG.near_box_ratio,
            "visible_far_last": float(both[~near].mean()), "visible_near_last": float(both[near].mean())}


@benchmark("camera", "Camera control from a known depth")
def run_camera(ctx: BenchmarkContext) -> None:
    """Camera-path tracks from a known depth map: the planar case against the exact homography
    (track error; render along the tracks vs the exact render), and parallax on a depth step."""

    matplotlib.use("Agg")

    camera = require_module("motionstream.tracks.camera", "camera tracks")

    vcfg = video_config(ctx.cfg)
    width, height, fps = vcfg.width, vcfg.height, vcfg.fps
    T, grid = ctx.eval_cfg.num_frames, ctx.eval_cfg.track_grid
    paths = CFG.quick_paths if ctx.quick else camera.CAMERA_PATHS
    # one "clip" = one (image, camera path) case: every path on as many images as the count needs
    images = camera_images(ctx, -(-ctx.num_clips // len(paths)))
    rows, per_case, montage = [], [], None
    cases = [(name, img, p) for name, img in images for p in paths][:ctx.num_clips]
    for name, img, path in ctx.progress(cases, "planar"):
        r = planar_case(img, path, T, grid, fps, ctx.eval_cfg.max_points)
        exact, warped = r.pop("frames")
        if montage is None:
            montage = (f"{name}, {path}", exact, warped)
        rows.append([name, path, r["track_err_max"], r["visible_last"], r["mean_motion"], r["warp_psnr"],
                     r["frozen_psnr"], r["warp_ssim"], r["warp_epe"], r["tracker_floor"]])
        per_case.append({"image": name, "path": path, **r})
    ctx.add_table(Table(
        f"Planar scene (plane at depth {CFG.plane_depth}, {T} frames, {grid}x{grid} tracks) vs exact homography",
        ["image", "path", "track err max (px)", "visible @end", "motion @end (px)", "warp PSNR", "frozen PSNR",
         "warp SSIM", "warp EPE", "tracker floor"], rows,
        note="track err: camera tracks vs H_t applied to the grid. warp: the first frame moved along the tracks "
             "(forward_warp) vs the exact homography render; PSNR and SSIM inside the covered pixels. tracker floor: "
             "EPE of our tracker on the exact render.", digits=3))
    step = depth_step_case(width, height, T, grid, fps)
    ctx.add_table(Table("Depth step (box at half the depth, camera trucks sideways)",
                        ["parallax near/far", "expected", "visible far @end", "visible near @end"],
                        [[step["parallax_ratio"], step["expected_ratio"], step["visible_far_last"],
                          step["visible_near_last"]]]))
    ctx.summary.update({"max track err (px)": max(r["track_err_max"] for r in per_case),
                        "warp PSNR (dB)": float(np.mean([r["warp_psnr"] for r in per_case])),
                        "frozen PSNR (dB)": float(np.mean([r["frozen_psnr"] for r in per_case])),
                        "parallax ratio": step["parallax_ratio"]})
    ctx.raw.update(planar=per_case, depth_step=step)

    title, exact, warped = montage
    picks = np.linspace(0, T - 1, 4).astype(int)
    fig, axes = plt.subplots(2, len(picks), figsize=(3 * len(picks), 3.6))
    for j, t in enumerate(picks):
        for i, (video, label) in enumerate(((exact, "exact homography"), (warped, "warp along tracks"))):
            axes[i, j].imshow(video[t])
            axes[i, j].set_axis_off()
            axes[i, j].set_title(f"{label}, frame {t}", fontsize=8)
    fig.suptitle(title, y=1.03)
    ctx.add_plot(fig, "frames")
    fig, ax = plt.subplots(figsize=(6, 3))
    labels = [f"{r['image']}\n{r['path']}" for r in per_case]
    x = np.arange(len(per_case))
    ax.bar(x - 0.2, [r["warp_psnr"] for r in per_case], 0.4, label="warp along tracks")
    ax.bar(x + 0.2, [r["frozen_psnr"] for r in per_case], 0.4, label="frozen first frame")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("PSNR vs exact (dB)")
    ax.legend(fontsize=8)
    ctx.add_plot(fig, "psnr")
