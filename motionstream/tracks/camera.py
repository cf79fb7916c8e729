"""Camera control: a depth map + intrinsics + a camera path -> a grid of 2D tracks (role "camera").

Conventions (OpenCV pinhole): camera x right, y down, z forward; pixel (u, v) with (0, 0) the
top-left corner of the image, K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]. Depth is z-depth (distance
along the optical axis, > 0), not ray length. The world frame is the camera of frame 0, and a pose
is **world-to-camera** (extrinsics): x_cam = R @ x_world + t, stored as the 4x4 [[R, t], [0, 1]];
poses[0] is the identity.

Each grid point of frame 0 is lifted to 3D with its depth and projected into every frame. It is
invisible where it is behind the camera, outside the image, or hidden by nearer scene geometry: a
z-buffer of the whole depth map, splatted into the new view, decides occlusion. For a plane of
constant depth d the projection is exactly the plane homography H = K (R + t n^T / d) K^-1,
n = (0, 0, 1).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from motionstream.tracks.io import read_npy
from motionstream.tracks.sources import grid_points
from motionstream.tracks.trackset import TrackError, TrackSet
from motionstream.video import VideoError, decode_image

CAMERA_PATHS = ("orbit", "dolly", "pan", "truck")
DEFAULT_FOV_DEG = 60.0       # horizontal field of view assumed when no intrinsics are given
ORBIT_DEGREES = 15.0         # strength 1: orbit this far around the scene centre over the clip ...
DOLLY_FRACTION = 0.3         # ... or move forward this fraction of the scene depth ...
PAN_DEGREES = 20.0           # ... or turn (yaw) this far in place ...
TRUCK_FRACTION = 0.2         # ... or slide sideways this fraction of the scene depth
ZBUF_CELLS = 128             # z-buffer cells along the longer image side: fine enough that a tilted surface
                             # changes depth by < ZBUF_REL_TOL inside one cell, coarse enough to be fast
ZBUF_REL_TOL = 0.03          # a point is hidden when something in its cell is nearer by more than this
MIN_Z = 1e-6                 # points at or behind this depth are behind the camera
DEPTH_NEAR, DEPTH_FAR = 1.0, 10.0  # depth range that depth *images* (no units) are mapped into


def default_intrinsics(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    """float64 [3, 3]: square pixels, principal point at the image centre, horizontal FOV `fov_deg`."""
    f = width / (2 * np.tan(np.deg2rad(fov_deg) / 2))
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)


def _rot_y(angle_rad: float) -> np.ndarray:
    """Rotation about the camera's vertical (y, down) axis; positive turns +z (forward) towards +x (right)."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def camera_path(name: str, num_frames: int, strength: float = 1.0, scene_depth: float = 1.0) -> np.ndarray:
    """float64 [T, 4, 4] world-to-camera poses of a named camera move, poses[0] = identity, moving
    linearly in time to the full move at the last frame.

    orbit: circle around the point `scene_depth` ahead, keep looking at it (ORBIT_DEGREES * strength).
    dolly: move forward by DOLLY_FRACTION * strength * scene_depth (negative strength: backwards).
    pan:   turn in place by PAN_DEGREES * strength.
    truck: slide sideways by TRUCK_FRACTION * strength * scene_depth.
    Positive strength moves / turns the camera to the right (the scene appears to move left)."""
    if name not in CAMERA_PATHS:
        raise TrackError(f"unknown camera path {name!r}; choose one of {list(CAMERA_PATHS)}")
    if num_frames < 1 or not scene_depth > 0:
        raise TrackError(f"need num_frames >= 1 and scene_depth > 0, got {num_frames} and {scene_depth}")
    progress = np.arange(num_frames) / max(num_frames - 1, 1)
    centre = np.array([0.0, 0.0, scene_depth])
    poses = np.repeat(np.eye(4)[None], num_frames, 0)
    for k, s in enumerate(progress):
        cam_to_world = np.eye(3)  # camera orientation in the world
        position = np.zeros(3)    # camera centre in the world
        if name == "orbit":
            cam_to_world = _rot_y(-np.deg2rad(ORBIT_DEGREES * strength * s))
            position = centre - cam_to_world @ centre  # the centre stays on the optical axis
        elif name == "dolly":
            position = np.array([0.0, 0.0, DOLLY_FRACTION * strength * scene_depth * s])
        elif name == "pan":
            cam_to_world = _rot_y(np.deg2rad(PAN_DEGREES * strength * s))
        elif name == "truck":
            position = np.array([TRUCK_FRACTION * strength * scene_depth * s, 0.0, 0.0])
        poses[k, :3, :3] = cam_to_world.T
        poses[k, :3, 3] = -cam_to_world.T @ position
    return poses


def camera_tracks(depth: np.ndarray, K: np.ndarray | None, poses: np.ndarray, grid: int = 50,
                  fps: float = 16.0) -> TrackSet:
    """Tracks of a grid x grid point grid on frame 0 under the camera path `poses` (see module docstring).

    depth: float [H, W] z-depth > 0 of the conditioning image (its size is the TrackSet's size).
    K:     [3, 3] intrinsics in pixels of that image, or None for default_intrinsics(W, H).
    poses: [T, 4, 4] world-to-camera, world = camera of frame 0 (poses[0] is normally identity).
    Returns TrackSet [T, grid*grid] with role "camera"."""
    depth = _check_depth(depth)
    poses = np.asarray(poses, np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or not np.isfinite(poses).all():
        raise TrackError(f"poses must be finite [T, 4, 4], got shape {poses.shape}")
    height, width = depth.shape
    K = default_intrinsics(width, height) if K is None else np.asarray(K, np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or abs(np.linalg.det(K)) < 1e-12:
        raise TrackError(f"K must be an invertible finite [3, 3] matrix, got {K.shape}")

    points = grid_points(0, 0, width, height, rows=grid, cols=grid).astype(np.float64)
    point_depth = depth[points[:, 1].astype(int), points[:, 0].astype(int)]
    world = _unproject(points, point_depth, K)

    # the scene surface for the z-buffer: the depth map sampled every half z-buffer cell
    cell = max(width, height) / ZBUF_CELLS
    sy, sx = np.mgrid[cell / 4:height:cell / 2, cell / 4:width:cell / 2]
    surface_px = np.stack([sx.ravel(), sy.ravel()], 1)
    surface = _unproject(surface_px, depth[sy.astype(int), sx.astype(int)].ravel(), K)

    tracks = np.zeros((len(poses), len(points), 2), np.float32)
    visibility = np.zeros((len(poses), len(points)), bool)
    for k, pose in enumerate(poses):
        uv, z = _project(world, pose, K)
        tracks[k] = uv
        uv = tracks[k]  # judge "in frame" on the stored float32 positions, which may round onto the border
        in_front = z > MIN_Z
        in_frame = (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
        zbuf = _zbuffer(*_project(surface, pose, K), width, height, cell)
        test = in_frame & in_front
        unoccluded = np.ones(len(points), bool)
        unoccluded[test] = z[test] <= zbuf[_cell_index(uv[test], width, cell)] * (1 + ZBUF_REL_TOL)
        visibility[k] = in_front & in_frame & unoccluded
    return TrackSet(tracks=tracks, visibility=visibility, width=width, height=height, fps=fps,
                    role=["camera"] * len(points))


def _check_depth(depth: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth, np.float64)
    if depth.ndim != 2 or min(depth.shape) < 1:
        raise TrackError(f"depth must be a 2D array [H, W], got shape {depth.shape}")
    if not np.isfinite(depth).all() or (depth <= 0).any():
        raise TrackError("depth must be finite and > 0 everywhere")
    return depth


def _unproject(px: np.ndarray, z: np.ndarray, K: np.ndarray) -> np.ndarray:
    """[M, 2] pixels with z-depth [M] -> [3, M] camera-0 (= world) points (column layout: numpy's
    3x3 @ 3xM runs as one fast matrix product, Mx3 @ 3x3 does not)."""
    rays = np.linalg.inv(K) @ np.concatenate([px.T, np.ones((1, len(px)))], 0)
    return rays * z[None, :]


def _project(world: np.ndarray, pose: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points [3, M] -> (pixels [M, 2], z-depth [M]) in the camera `pose` (world-to-camera)."""
    cam = pose[:3, :3] @ world + pose[:3, 3:]
    z = cam[2]
    # clamp before dividing so points behind the camera get finite (and later invisible) positions
    uvw = K[:2] @ cam
    uv = (uvw / np.maximum(z, MIN_Z)[None, :]).T
    return uv, z


def _cell_index(uv: np.ndarray, width: int, cell: float) -> np.ndarray:
    """Flat z-buffer index of in-frame pixel positions [M, 2] for square cells of `cell` px."""
    cols = int(np.ceil(width / cell))
    return (uv[:, 1] // cell).astype(int) * cols + (uv[:, 0] // cell).astype(int)


def _zbuffer(uv: np.ndarray, z: np.ndarray, width: int, height: int, cell: float) -> np.ndarray:
    """Flat [cells] nearest depth of the points (uv [M, 2], z [M]) landing in each cell (inf: none)."""
    ok = (z > MIN_Z) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
    zbuf = np.full(int(np.ceil(height / cell)) * int(np.ceil(width / cell)), np.inf)
    np.minimum.at(zbuf, _cell_index(uv[ok], width, cell), z[ok])
    return zbuf


def load_depth(path: str | Path, mode: str = "disparity", near: float = DEPTH_NEAR, far: float = DEPTH_FAR,
               size: tuple[int, int] | None = None) -> np.ndarray:
    """float64 [H, W] z-depth > 0 from a file.

    .npy:   used as is (metric or relative z-depth; `mode`, near and far are ignored).
    images: 8/16-bit grayscale (colour images use their first channel), min..max mapped into
            [near, far]: mode "disparity" (bright = near, what monocular depth networks usually save:
            inverse depth is linear in the pixel value) or "depth" (bright = far, linear in depth).
            A constant image is a plane at `near`.
    size:   (width, height) to resize to (nearest neighbour, so depth edges stay sharp)."""

    path = Path(path)
    if not path.is_file():
        raise TrackError(f"depth file not found: {path}")
    if mode not in ("disparity", "depth"):
        raise TrackError(f"depth mode must be 'disparity' or 'depth', got {mode!r}")
    if path.suffix.lower() == ".npy":
        depth = read_npy(path)
        if depth.ndim not in (2, 3) or not np.issubdtype(depth.dtype, np.number):
            raise TrackError(f"{path}: a depth map must be a numeric [H, W] array, got {depth.dtype} {list(depth.shape)}")
        depth = depth.astype(np.float64)
        depth = depth[..., 0] if depth.ndim == 3 else depth
    else:
        try:   # 8/16-bit as stored; the pixel cap is checked from the header before decoding
            img = decode_image(path.read_bytes(), as_rgb=False)
        except VideoError as err:
            raise TrackError(f"cannot read depth image {path}: {err}") from None
        value = (img[..., 0] if img.ndim == 3 else img).astype(np.float64)
        lo, hi = value.min(), value.max()
        d = (value - lo) / (hi - lo) if hi > lo else np.zeros_like(value)
        if mode == "depth":
            depth = near + d * (far - near) if hi > lo else np.full_like(value, near)
        else:
            depth = 1.0 / (1.0 / far + d * (1.0 / near - 1.0 / far)) if hi > lo else np.full_like(value, near)
    if size is not None:
        depth = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)
    return _check_depth(depth)
