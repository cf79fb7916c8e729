import cv2
import numpy as np

from motionstream.tracks.paste import (drag_groups, paste_segments, paste_transformed, segment_object,
                                      segment_paste, translations)
from motionstream.tracks.sources import drag_tracks, grid_points, static_grid
from motionstream.tracks.trackset import TrackSet
from motionstream.tracks.warp import forward_warp

W, H, T, FPS = 128, 72, 9, 16.0
SQUARE = (slice(20, 44), slice(24, 48))      # rows, cols of the red object on frame 0
SHIFT = 32                                   # px the object is dragged to the right by the last frame
EDGE_BAND = np.ones((13, 13), np.uint8)      # covers a pasted edge's feathering (paste.FEATHER_SIGMA_PX)


def scene() -> np.ndarray:
    """A noisy grey wall with a red square on it (uint8 [H, W, 3])."""
    rng = np.random.default_rng(0)
    image = rng.integers(90, 130, (H, W, 3)).astype(np.uint8)
    image[SQUARE] = (220, 30, 30)
    return image


def drag_input() -> TrackSet:
    """A drag patch on the square, moving it SHIFT px right over T frames, plus pins on the wall."""
    samples = [(k / FPS, 36 + SHIFT * k / (T - 1), 32.0) for k in range(T)]
    drag = drag_tracks(samples, (36.0, 32.0), T, W, H, FPS, patch_radius=8, spacing=8)
    pins = grid_points(8, 8, W - 8, H - 8, spacing=16)
    pins = pins[~((pins[:, 0] > 16) & (pins[:, 0] < 96) & (pins[:, 1] > 12) & (pins[:, 1] < 52))]
    return TrackSet.concat([drag, static_grid(pins, T, W, H, FPS)])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b) ** 2)))


def test_drag_groups_tell_patches_apart_by_their_motion_and_skip_pins():
    left = drag_tracks([(0.0, 20.0, 20.0), (0.5, 40.0, 20.0)], (20.0, 20.0), T, W, H, FPS, patch_radius=8, spacing=8)
    right = drag_tracks([(0.0, 90.0, 40.0), (0.5, 90.0, 60.0)], (90.0, 40.0), T, W, H, FPS, patch_radius=8, spacing=8)
    pins = static_grid(grid_points(0, 0, W, H, rows=2, cols=2), T, W, H, FPS)
    ts = TrackSet.concat([pins, left, right])
    groups = drag_groups(ts)
    n_pins, n_left = pins.num_tracks, left.num_tracks
    assert [g.tolist() for g in groups] == [list(range(n_pins, n_pins + n_left)),
                                           list(range(n_pins + n_left, ts.num_tracks))]
    assert drag_groups(pins) == []
    assert drag_groups(TrackSet(tracks=ts.tracks, visibility=ts.visibility, width=W, height=H, fps=FPS)) == []


def test_segment_object_finds_the_object_under_the_patch():
    image, ts = scene(), drag_input()
    patch = ts.tracks[0, [i for i, r in enumerate(ts.role) if r == "drag"]]
    pins = ts.tracks[0, [i for i, r in enumerate(ts.role) if r == "static"]]
    mask = segment_object(image, patch, pins)
    truth = np.zeros((H, W), bool)
    truth[SQUARE] = True
    assert (mask & truth).sum() / (mask | truth).sum() > 0.9
    cv2.setRNGSeed(123)                                  # OpenCV's RNG elsewhere does not change it
    cv2.randu(np.zeros((4, 4)), 0, 1)
    assert (segment_object(image, patch, pins) == mask).all()
    assert not segment_object(image, np.array([[-50.0, -50.0]]), pins).any()     # a patch off the frame


def test_a_patch_wider_than_the_object_does_not_take_the_wall_under_its_rim():
    """A 48 px patch (the studio's) on the 24 px square: only its core is sure foreground, so the wall
    under its outer points stays out of the segment."""
    image = scene()
    patch = drag_tracks([(0.0, 36.0, 32.0), (1.0, 40.0, 32.0)], (36.0, 32.0), 2, W, H, FPS, patch_radius=24,
                        spacing=8).tracks[0]
    assert (np.hypot(*(patch - (36, 32)).T) > 12).sum() >= 8          # plenty of points on the wall
    ts = drag_input()
    pins = ts.tracks[0, [i for i, r in enumerate(ts.role) if r == "static"]]
    mask = segment_object(image, patch, pins)
    truth = np.zeros((H, W), bool)
    truth[SQUARE] = True
    # (0.28 with every patch point sure; the core's rim, 16 px out, still touches the wall beside a 24 px square)
    assert (mask & truth).sum() / (mask | truth).sum() > 0.7 and mask[SQUARE].all()
    assert not segment_object(image, np.empty((0, 2)), pins).any()     # no patch point: nothing
    # points that leave nothing within the core of their mean (two far groups): the nearest is sure
    apart = np.array([[30.0, 26.0], [30.0, 38.0], [100.0, 26.0], [100.0, 38.0]])
    assert segment_object(image, apart, pins).any()


def test_segment_paste_moves_the_object_whole_and_shows_the_wall_behind_it():
    image, ts = scene(), drag_input()
    video = segment_paste(image, ts)
    assert video.shape == (T, H, W, 3) and video.dtype == np.uint8
    assert (video[0] == image).all()
    last = video[-1]
    moved = (SQUARE[0], slice(SQUARE[1].start + SHIFT, SQUARE[1].stop + SHIFT))
    core = (slice(SQUARE[0].start + 2, SQUARE[0].stop - 2),
            slice(SQUARE[1].start + SHIFT + 2, SQUARE[1].stop + SHIFT - 2))
    assert np.abs(last[core].astype(int) - (220, 30, 30)).max() < 20           # the square arrives whole
    assert (last[moved][..., 0] > 140).all()        # its feathered edge, corners too, is more square than wall
    uncovered = (SQUARE[0], slice(SQUARE[1].start, SQUARE[1].start + SHIFT))
    assert np.abs(last[uncovered].astype(int) - 110).mean() < 25               # the wall shows where it was
    # against the truth of this scene (the square moved over the wall, unseen wall = its mean grey),
    # the paste is closer than the forward warp, which stretches the square over the uncovered wall
    expected = np.full_like(image, 110)
    expected[moved] = (220, 30, 30)
    region = np.zeros((H, W), bool)
    region[SQUARE[0], SQUARE[1].start:SQUARE[1].stop + SHIFT] = True
    warp = forward_warp(image, ts)[-1]
    assert psnr(last[region], expected[region]) > psnr(warp[region], expected[region]) + 3


def test_no_drag_is_the_frozen_frame_and_zero_motion_the_image():
    image, ts = scene(), drag_input()
    pins_only = ts.subset(np.array([i for i, r in enumerate(ts.role) if r == "static"]))
    assert (segment_paste(image, pins_only) == image[None]).all()
    mask = np.zeros((H, W), bool)
    mask[SQUARE] = True
    assert (paste_segments(image, [mask], np.zeros((3, 1, 2), np.float32)) == image[None]).all()


def test_paste_transformed_turns_a_segment_and_takes_a_background_per_frame():
    """A bar turned a quarter about its centre stands upright over frame 1's own background; shifts
    alone are paste_segments."""
    image = scene()
    bar = np.zeros((H, W), bool)
    bar[28:36, 20:60] = True                        # 40 px wide, 8 px tall, centre (39.5, 31.5)
    image[bar] = (30, 30, 220)
    backgrounds = np.stack([np.full_like(image, v) for v in (0, 50, 100)])
    turn = cv2.getRotationMatrix2D((39.5, 31.5), 90, 1.0)
    transforms = np.stack([translations(np.zeros((1, 2))), [turn], translations(np.float32([[5, 0]]))])
    out = paste_transformed(image, [bar], transforms, backgrounds)
    assert (out[0] == image).all()                  # identity: the image itself
    blue = (np.abs(out[1].astype(int) - (30, 30, 220)) < 20).all(-1)
    rows, cols = np.nonzero(blue)
    assert 36 <= rows.max() - rows.min() + 1 <= 41 and 4 <= cols.max() - cols.min() + 1 <= 9
    near = cv2.dilate(blue.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    assert (out[1][~near] == 50).all()              # frame 1's own background around it
    shifted = np.zeros((3, 1, 2), np.float32)
    shifted[2, 0, 0] = 5
    assert (out[2] == paste_segments(image, [bar], shifted, backgrounds[2])[2]).all()
    # the edge is feathered: the bar's top row (blue 220) is blended with the background (blue 100)
    assert 150 < out[2][28, 55:62, 2].min() and out[2][28, 55:62, 2].max() < 210


def test_paste_flows_move_the_image_as_paste_segments_does_and_mark_the_holes_it_fills():
    """remap_back along paste_flows, with the plate where the holes are, is paste_segments' frame (but
    for the band where paste_segments feathers the segment's edge)."""
    from motionstream.tracks.paste import drag_segments, paste_flows
    from motionstream.tracks.warp import remap_back

    image = scene()
    masks, shifts, plate = drag_segments(image, drag_input())
    pasted = paste_segments(image, masks, shifts, plate)
    flows, holes = paste_flows(masks, shifts)
    assert flows.shape == (T, H, W, 2) and holes.shape == (T, H, W)
    assert not flows[0].any() and not holes[0].any()          # frame 0 is the image itself
    held = np.any(masks, axis=0)
    for t in range(1, T):
        moved = remap_back(image, flows[t])
        moved[holes[t] > 0] = plate[holes[t] > 0]
        segment = (flows[t] != 0).any(-1).astype(np.uint8)
        band = cv2.dilate(segment, EDGE_BAND) > cv2.erode(segment, EDGE_BAND)
        assert (moved[~band] == pasted[t][~band]).all()
        assert (flows[t] != 0).any(-1).sum() == held.sum()   # the whole segment moved
    assert holes[-1][SQUARE].mean() > 0.9 and not holes[-1][:, SQUARE[1].stop + SHIFT:].any()


def test_the_plate_brings_back_the_striped_wall_behind_an_object():
    """inpainted_plate on a striped wall: the hole an object leaves is filled closer to the true wall
    (> 3 dB) than by Telea's fill, which smears the nearest colour inward; the rest is the image itself."""
    from motionstream.tracks.paste import inpainted_plate

    ys, xs = np.mgrid[0:H, 0:W]
    wall = np.where(((xs + ys) // 6) % 2 == 0, 60, 190).astype(np.uint8)[..., None].repeat(3, -1)
    image = wall.copy()
    image[SQUARE] = (220, 30, 30)
    mask = np.zeros((H, W), bool)
    mask[SQUARE] = True
    plate = inpainted_plate(image, [mask])
    hole = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert (plate[~hole] == image[~hole]).all()
    smooth = cv2.inpaint(image, hole.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    assert psnr(plate[mask], wall[mask]) > psnr(smooth[mask], wall[mask]) + 3
