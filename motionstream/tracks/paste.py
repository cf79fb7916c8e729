"""Segment paste: moving dragged objects as wholes over the background they reveal, without a model.

    drag_groups(tracks) -> lists of track indices, one per drag patch (tracks that move together)
    segment_object(image, patch_points, background_points) -> bool [H, W]: the object under a patch
    paste_segments(image, masks, displacements) -> [T, H, W, 3]: segments moved over an inpainted plate
    segment_paste(first_frame, tracks) -> [T, H, W, 3]: the three above, from the studio's input

The studio sends a few drag patches (role "drag" or "path": every point of a patch shares one motion)
and pinned points (role "static"). The forward warp (tracks/warp.py) spreads each patch's motion over
a Gaussian around it, so a dragged object stretches like a rubber sheet and what it uncovers never
shows. Segment paste instead:

  1. groups the drag tracks into patches by their common motion (offsets from frame 0, rounded);
  2. segments the object under each patch on frame 0 with GrabCut (cv2.grabCut): the patch's points
     are sure foreground, every other track's point on frame 0 (pins, other patches) sure background;
  3. fills where the objects were (grown by HOLE_GROW_PX) with cv2.inpaint (Telea): the plate;
  4. on frame t pastes each object's frame-0 pixels at its patch's median displacement from frame 0
     onto the plate, in patch order.

Rigid translation only (no rotation or scaling), and the inpainted plate is smooth where the truth has
texture. Tracks of other roles (static pins, dense transfer or camera tracks) move nothing: without
a drag it is the frozen frame. The `drag` benchmark scores it as the strongest no-model row.
"""

from __future__ import annotations

import cv2
import numpy as np

from motionstream.tracks.trackset import TrackSet

DRAG_ROLES = ("drag", "path")   # roles whose points move together as one patch
OFFSET_DECIMALS = 1             # patches are told apart by their offsets rounded to 0.1 px
SEED_RADIUS_PX = 3              # radius of the sure fore- / background disc drawn at each point
GRABCUT_ITERATIONS = 5
HOLE_GROW_PX = 5                # the objects' mask is grown by this before inpainting (soft edges)
INPAINT_RADIUS_PX = 5


def drag_groups(tracks: TrackSet) -> list[np.ndarray]:
    """Indices of the drag tracks (DRAG_ROLES), one int array per patch, in order of first track.
    Tracks without roles count as no drag."""
    if tracks.role is None:
        return []
    drag = np.array([i for i, r in enumerate(tracks.role) if r in DRAG_ROLES], np.int64)
    if len(drag) == 0:
        return []
    offsets = np.round(tracks.tracks[:, drag] - tracks.tracks[:1, drag], OFFSET_DECIMALS)   # [T, n, 2]
    keys = offsets.transpose(1, 0, 2).reshape(len(drag), -1)
    _, first, label = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)                       # patches in the order their first track comes
    return [drag[label.ravel() == k] for k in order]


def _disc_seeds(mask: np.ndarray, points: np.ndarray, value: int) -> None:
    h, w = mask.shape
    for x, y in np.round(points).astype(np.int64):
        if 0 <= x < w and 0 <= y < h:
            cv2.circle(mask, (int(x), int(y)), SEED_RADIUS_PX, value, -1)


def segment_object(image: np.ndarray, patch_points: np.ndarray, background_points: np.ndarray) -> np.ndarray:
    """bool [H, W]: the object under a drag patch on `image` (uint8 [H, W, 3]). patch_points [n, 2]
    (x, y) are sure foreground, background_points [m, 2] sure background, the rest is decided by
    GrabCut; only the connected parts that hold a patch point are kept."""
    h, w = image.shape[:2]
    mask = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    _disc_seeds(mask, background_points, cv2.GC_BGD)
    _disc_seeds(mask, patch_points, cv2.GC_FGD)
    if not (mask == cv2.GC_FGD).any():
        return np.zeros((h, w), bool)                # the patch lies outside the frame
    background_model, foreground_model = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.grabCut(np.ascontiguousarray(image), mask, None, background_model, foreground_model,
                GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    fore = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    _, parts = cv2.connectedComponents(fore)
    xy = np.round(patch_points).astype(np.int64)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    held = np.unique(parts[xy[inside, 1], xy[inside, 0]])
    return np.isin(parts, held[held > 0])


def paste_segments(image: np.ndarray, masks: list[np.ndarray], displacements: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3]: frame t = the plate (image inpainted under every mask, grown by
    HOLE_GROW_PX) with image's pixels inside masks[k] pasted at displacements[t, k] (float [T, K, 2],
    x, y), later masks over earlier ones; a frame whose displacements are all 0 is the image itself."""
    h, w = image.shape[:2]
    if not masks:
        return np.repeat(image[None], len(displacements), 0)
    held = np.any(masks, axis=0).astype(np.uint8)
    grow = np.ones((HOLE_GROW_PX, HOLE_GROW_PX), np.uint8)
    plate = cv2.inpaint(image, cv2.dilate(held, grow), INPAINT_RADIUS_PX, cv2.INPAINT_TELEA)
    frames = []
    for shifts in displacements:
        if not np.any(shifts):
            frames.append(image.copy())             # nothing moved (frame 0): the image, no inpainted seam
            continue
        frame = plate.copy()
        for mask, (dx, dy) in zip(masks, shifts):
            shift = np.float32([[1, 0, dx], [0, 1, dy]])
            moved = cv2.warpAffine(image, shift, (w, h), flags=cv2.INTER_LINEAR)
            where = cv2.warpAffine(mask.astype(np.uint8), shift, (w, h), flags=cv2.INTER_NEAREST) > 0
            frame[where] = moved[where]
        frames.append(frame)
    return np.stack(frames)


def segment_paste(first_frame: np.ndarray, tracks: TrackSet) -> np.ndarray:
    """uint8 [T, H, W, 3] (T = tracks.num_frames): the module docstring's method on `first_frame`
    (uint8 [H, W, 3], the tracks' size)."""
    h, w = first_frame.shape[:2]
    if (tracks.width, tracks.height) != (w, h):
        tracks = tracks.scaled(w, h)
    groups = drag_groups(tracks)
    start, seen = tracks.tracks[0], tracks.visibility[0]
    masks = []
    for group in groups:
        background = seen.copy()
        background[group] = False                   # every other track on frame 0 is sure background
        masks.append(segment_object(first_frame, start[group[seen[group]]], start[background]))
    displacements = np.zeros((tracks.num_frames, len(groups), 2), np.float32)
    for k, group in enumerate(groups):
        displacements[:, k] = np.median(tracks.tracks[:, group] - start[None, group], axis=1)
    return paste_segments(first_frame, masks, displacements)
