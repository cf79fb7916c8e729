import cv2
import numpy as np
import pytest

from motionstream.tracks import TrackError
from motionstream.tracks.camera import CAMERA_PATHS, camera_path, camera_tracks, default_intrinsics, load_depth

W, H = 96, 64


def plane_homography(K, pose, d):
    """Homography induced by the plane z = d of camera 0 for a world-to-camera pose."""
    R, t = pose[:3, :3], pose[:3, 3]
    return K @ (R + np.outer(t, [0.0, 0.0, 1.0]) / d) @ np.linalg.inv(K)


@pytest.mark.parametrize("name", CAMERA_PATHS)
@pytest.mark.parametrize("strength", [1.0, -1.5])
def test_planar_depth_reproduces_the_homography(name, strength):
    d = 2.5
    K = default_intrinsics(W, H)
    poses = camera_path(name, 9, strength=strength, scene_depth=d)
    ts = camera_tracks(np.full((H, W), d), K, poses, grid=12, fps=16)
    assert ts.tracks.shape == (9, 144, 2) and ts.role == ["camera"] * 144
    for k, pose in enumerate(poses):
        ref = cv2.perspectiveTransform(ts.tracks[0][None].astype(np.float64), plane_homography(K, pose, d))[0]
        np.testing.assert_allclose(ts.tracks[k], ref, atol=1e-3)
    # a plane never hides itself: exactly the in-frame points are visible
    assert np.array_equal(ts.visibility, ts.in_frame())
    assert np.abs(ts.tracks[-1] - ts.tracks[0]).max() > 5   # the move is not trivially small


def test_camera_paths_are_rigid_world_to_camera_poses():
    for name in CAMERA_PATHS:
        poses = camera_path(name, 5, scene_depth=3.0)
        np.testing.assert_allclose(poses[0], np.eye(4))
        for p in poses:
            np.testing.assert_allclose(p[:3, :3] @ p[:3, :3].T, np.eye(3), atol=1e-12)
    # orbit keeps the scene centre on the optical axis; positive strength moves the camera right
    orbit = camera_path("orbit", 5, strength=1.0, scene_depth=3.0)
    centre = orbit[-1] @ np.array([0, 0, 3.0, 1])
    assert abs(centre[0]) < 1e-9 and abs(centre[1]) < 1e-9
    camera_centre = -orbit[-1][:3, :3].T @ orbit[-1][:3, 3]
    assert camera_centre[0] > 0
    with pytest.raises(TrackError, match="unknown camera path"):
        camera_path("zoom", 5)


def test_zbuffer_hides_background_behind_a_near_box():
    # far wall at depth 4, a box at depth 1 in the middle; sliding sideways moves the box over the wall
    depth = np.full((H, W), 4.0)
    depth[20:44, 30:60] = 1.0
    K = default_intrinsics(W, H)
    ts = camera_tracks(depth, K, camera_path("truck", 9, strength=1.0, scene_depth=2.0), grid=16)
    hidden = ts.in_frame() & ~ts.visibility
    assert hidden[0].sum() == 0 and hidden[-1].sum() > 0
    box = (depth[ts.tracks[0, :, 1].astype(int), ts.tracks[0, :, 0].astype(int)] == 1.0)
    assert not hidden[:, box].any()                  # the box itself is never hidden
    # every hidden wall point lies where the box now is (inside its projected outline)
    box_now = ts.tracks[-1, box]
    x, y = ts.tracks[-1, hidden[-1], 0], ts.tracks[-1, hidden[-1], 1]
    assert (x >= box_now[:, 0].min() - 3).all() and (x <= box_now[:, 0].max() + 3).all()
    assert (y >= box_now[:, 1].min() - 3).all() and (y <= box_now[:, 1].max() + 3).all()


def test_points_behind_the_camera_are_invisible_and_finite():
    poses = camera_path("dolly", 5, strength=8.0, scene_depth=1.0)  # drives 2.4 x through a wall at depth 1
    ts = camera_tracks(np.ones((H, W)), None, poses, grid=8)
    assert not ts.visibility[-1].any() and np.isfinite(ts.tracks).all()


def test_bad_depth_and_poses_are_clear_errors():
    poses = camera_path("orbit", 3)
    with pytest.raises(TrackError, match="> 0"):
        camera_tracks(np.zeros((H, W)), None, poses)
    with pytest.raises(TrackError, match="2D"):
        camera_tracks(np.ones((H, W, 3)), None, poses)
    with pytest.raises(TrackError, match="poses"):
        camera_tracks(np.ones((H, W)), None, np.eye(4))
    with pytest.raises(TrackError, match="K must"):
        camera_tracks(np.ones((H, W)), np.zeros((3, 3)), poses)


def test_load_depth_npy_and_images(tmp_path):
    np.save(tmp_path / "d.npy", np.full((4, 6), 2.0, np.float32))
    assert load_depth(tmp_path / "d.npy").tolist() == np.full((4, 6), 2.0).tolist()
    ramp = np.tile(np.array([0, 255], np.uint8), (4, 3))   # columns alternate black / white
    cv2.imwrite(str(tmp_path / "d.png"), ramp)
    disp = load_depth(tmp_path / "d.png", mode="disparity", near=1, far=10)
    assert disp[0, 0] == pytest.approx(10) and disp[0, 1] == pytest.approx(1)    # bright = near
    depth = load_depth(tmp_path / "d.png", mode="depth", near=1, far=10)
    assert depth[0, 0] == pytest.approx(1) and depth[0, 1] == pytest.approx(10)  # bright = far
    assert load_depth(tmp_path / "d.png", size=(12, 8)).shape == (8, 12)
    with pytest.raises(TrackError, match="not found"):
        load_depth(tmp_path / "nope.png")
    np.save(tmp_path / "neg.npy", -np.ones((4, 4)))
    with pytest.raises(TrackError, match="> 0"):
        load_depth(tmp_path / "neg.npy")
