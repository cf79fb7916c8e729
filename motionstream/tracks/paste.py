"""Segment paste: moving dragged objects as wholes over the background they reveal, without a model.

    drag_groups(tracks) -> lists of track indices, one per drag patch (tracks that move together)
    segment_object(image, patch_points, background_points) -> bool [H, W]: the object under a patch
    inpainted_plate(image, masks) -> [H, W, 3]: the image with the objects filled in (the background)
    paste_segments(image, masks, displacements) -> [T, H, W, 3]: segments moved over an inpainted plate
    paste_transformed(image, masks, transforms, background) -> [T, H, W, 3]: the same with affine motion
    segment_paste(first_frame, tracks, cache) -> [T, H, W, 3]: the three above, from the studio's input
    drag_segments(first_frame, tracks, cache) -> (masks, displacements, plate): segment_paste's parts
    paste_flows(masks, displacements) -> (flows, holes): the same motion as flows, for a latent warp
    is_drag_input(tracks) -> bool: the tracks are the studio's drags and pins, which segment paste serves
    SegmentCache: segments and plates already made (a stream segments a patch once, not every chunk)
    content_key(array) -> str: what a SegmentCache key holds for an image

The studio sends a few drag patches (role "drag" or "path": every point of a patch shares one motion)
and pinned points (role "static"). The forward warp (tracks/warp.py) spreads each patch's motion over
a Gaussian around it, so a dragged object stretches like a rubber sheet and what it uncovers never
shows. Segment paste instead:

  1. groups the drag tracks into patches by their common motion (offsets from frame 0, rounded);
  2. segments the object under each patch on frame 0 with GrabCut (cv2.grabCut): the patch's points
     within SURE_CORE_PX of its centre (the grab point) are sure foreground, its outer points probable
     foreground (a patch wider than a small object reaches onto the wall), every other track's point on
     frame 0 (pins, other patches) sure background;
  3. fills where the objects were (grown by HOLE_GROW_PX) by frequency-selective reconstruction
     (opencv-contrib's xphoto) at 1/4 size: the plate;
  4. on frame t pastes each object's frame-0 pixels at its patch's median displacement from frame 0
     (over the patch's points visible on frame t; none visible = it stays) onto the plate, in patch
     order, its edge feathered over about FEATHER_SIGMA_PX (a hard GrabCut edge reads as a cut-out).

GrabCut takes 0.06-0.4 s per patch at 256x144 and the plate 0.02-0.3 s, more than the rest of a chunk's
prior, so a stream keeps a SegmentCache: a patch is segmented again only when the image or its seeds
change.

Rigid translation only (no rotation or scaling); the plate carries the colours around the hole into
it, blurred (a checkerboard's edges are not continued), not what truly was behind the object. Tracks
of other roles (static pins, dense transfer or camera tracks) move nothing: without a drag it is the
frozen frame. The `drag` benchmark scores it as the strongest no-model row.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from motionstream.tracks.trackset import TrackSet

DRAG_ROLES = ("drag", "path")   # roles whose points move together as one patch
OFFSET_DECIMALS = 1             # patches are told apart by their offsets rounded to 0.1 px
SEED_RADIUS_PX = 3              # radius of the sure fore- / background disc drawn at each point
GRABCUT_ITERATIONS = 5
# a patch's points this close to its centre are sure foreground, the rest probable. Segment paste on 24
# [world] VAL drag cases (48 px patches), mask IoU with the true layer and changed / object / frame PSNR:
# every point sure (before) 0.49, 18.95 / 21.54 / 23.41; core 8 px 0.56, 19.68 / 21.24 / 26.67; 12 px 0.57,
# 19.57 / 21.25 / 26.10; 16 px 0.57, 19.59 / 21.43 / 25.98; 20 px 0.55, 19.41 / 21.40 / 24.86; outer points
# left undecided instead of probable (core 8) 0.47, 17.57 / 18.69 / 25.20
SURE_CORE_PX = 16.0
GRABCUT_SEED = 0                # the same image and seeds give the same segment
HOLE_GROW_PX = 5                # the objects' mask is grown by this before inpainting (soft edges)
# a pasted segment's edge is feathered by a Gaussian of this sigma. Segment paste on 24 [world] VAL drag
# cases, changed / object / frame PSNR: hard edge 18.77 / 21.37 / 23.20, sigma 0.7: 18.92 / 21.54 / 23.35,
# 1.0: 18.94 / 21.55 / 23.39, 1.2: 18.95 / 21.54 / 23.41, 2.0: 18.96 / 21.43 / 23.47
FEATHER_SIGMA_PX = 1.2
# the plate's fill runs at 1/4 size. Segment paste on 24 [world] VAL drag cases, changed / object / frame
# PSNR by fill scale: 2: 18.59 / 21.45 / 23.04, 4: 18.78 / 21.45 / 23.21, 8: 18.27 / 21.49 / 22.64 (small
# cells rounded to known below half hole; with any hole pixel unknown, as now, 4: 18.77 / 21.37 / 23.20);
# Telea's cv2.inpaint (before): 17.68 / 21.50 / 22.24. At 1/4 a plate takes 0.02-0.3 s at 256x144, at
# 1/2 up to 1 s
FILL_SCALE = 4
MAX_PATCHES = 8                 # a patch costs a GrabCut (0.06-0.4 s): a stream pastes at most 8 (the warp beyond)
CACHE_ENTRIES = 4 * MAX_PATCHES  # segments + plates a SegmentCache keeps (least recently used dropped)


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


def is_drag_input(tracks: TrackSet) -> bool:
    """True when the tracks are drags (DRAG_ROLES) and pins (role "static") only, with 1 to MAX_PATCHES
    drag patches: the input segment paste is for (more patches would cost a GrabCut each)."""
    roles = set(tracks.role or ())
    if not roles & set(DRAG_ROLES) or not roles <= {*DRAG_ROLES, "static"}:
        return False
    return len(drag_groups(tracks)) <= MAX_PATCHES


def segment_object(image: np.ndarray, patch_points: np.ndarray, background_points: np.ndarray) -> np.ndarray:
    """bool [H, W]: the object under a drag patch on `image` (uint8 [H, W, 3]). patch_points [n, 2]
    (x, y) within SURE_CORE_PX of their mean (the grab point; at least the nearest one) are sure
    foreground and the others probable foreground, background_points [m, 2] sure background, the rest
    is decided by GrabCut; only the connected parts that hold a sure point are kept."""
    h, w = image.shape[:2]
    if len(patch_points) == 0:
        return np.zeros((h, w), bool)
    mask = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    _disc_seeds(mask, background_points, cv2.GC_BGD)
    from_centre = np.hypot(*(patch_points - patch_points.mean(0)).T)
    core = from_centre <= max(SURE_CORE_PX, from_centre.min())     # at least the point nearest the centre
    sure = patch_points[core]
    _disc_seeds(mask, patch_points[~core], cv2.GC_PR_FGD)
    _disc_seeds(mask, sure, cv2.GC_FGD)
    if not (mask == cv2.GC_FGD).any():
        return np.zeros((h, w), bool)                # the patch lies outside the frame
    background_model, foreground_model = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.setRNGSeed(GRABCUT_SEED)                     # its GMMs start from k-means on OpenCV's thread RNG
    cv2.grabCut(np.ascontiguousarray(image), mask, None, background_model, foreground_model,
                GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    fore = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    _, parts = cv2.connectedComponents(fore)
    xy = np.round(sure).astype(np.int64)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    held = np.unique(parts[xy[inside, 1], xy[inside, 0]])
    return np.isin(parts, held[held > 0])


def plate_hole(masks: list[np.ndarray]) -> np.ndarray:
    """bool [H, W]: where the plate differs from the image: the union of `masks` grown by HOLE_GROW_PX."""
    held = np.any(masks, axis=0).astype(np.uint8)
    return cv2.dilate(held, np.ones((HOLE_GROW_PX, HOLE_GROW_PX), np.uint8)) > 0


def inpainted_plate(image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """uint8 [H, W, 3]: the background the objects leave behind: `image` with the union of `masks`,
    grown by HOLE_GROW_PX, filled by frequency-selective reconstruction (opencv-contrib's
    cv2.xphoto.inpaint, INPAINT_FSR_FAST: it extends the surrounding content's low frequencies, where
    Telea's cv2.inpaint smears the nearest colour inward) run at 1 / FILL_SCALE of the size; elsewhere
    the image itself."""
    hole = plate_hole(masks)
    h, w = hole.shape
    size = (max(1, w // FILL_SCALE), max(1, h // FILL_SCALE))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    # a small cell that holds any hole pixel is unknown (nearest-neighbour sampling could miss thin holes)
    small_hole = cv2.resize(hole.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
    filled = np.zeros_like(small)
    cv2.xphoto.inpaint(small, (~small_hole).astype(np.uint8), filled, cv2.xphoto.INPAINT_FSR_FAST)
    plate = image.copy()
    plate[hole] = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)[hole]
    return plate


def translations(displacements: np.ndarray) -> np.ndarray:
    """float32 [..., 2, 3]: the affine maps (cv2.warpAffine's form) that move by displacements [..., 2] (x, y)."""
    maps = np.zeros(displacements.shape[:-1] + (2, 3), np.float32)
    maps[..., 0, 0] = maps[..., 1, 1] = 1
    maps[..., 2] = displacements
    return maps


def moved_masks(masks: list[np.ndarray], transforms: np.ndarray) -> Iterator[np.ndarray]:
    """bool [H, W]: mask k mapped by transforms[k] (float [K, 2, 3], frame 0 -> now), per segment in paste
    order (nearest pixel)."""
    for mask, transform in zip(masks, transforms):
        moved = cv2.warpAffine(mask.astype(np.uint8, copy=False), transform, mask.shape[::-1], flags=cv2.INTER_NEAREST)
        yield moved > 0


def paste_segments(image: np.ndarray, masks: list[np.ndarray], displacements: np.ndarray,
                   plate: np.ndarray | None = None) -> np.ndarray:
    """uint8 [T, H, W, 3]: frame t = the plate (default inpainted_plate(image, masks)) with image's
    pixels inside masks[k] pasted at displacements[t, k] (float [T, K, 2], x, y) with feathered edges
    (paste_transformed), later masks over earlier ones; a frame whose displacements are all 0 is the
    image itself."""
    if not masks:
        return np.repeat(image[None], len(displacements), 0)
    plate = inpainted_plate(image, masks) if plate is None else plate
    return paste_transformed(image, masks, translations(displacements), plate)


def paste_transformed(image: np.ndarray, masks: list[np.ndarray], transforms: np.ndarray,
                      background: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3]: paste_segments with any affine motion: frame t = background (uint8 [H, W, 3],
    or [T, H, W, 3], one per frame) with image's pixels inside masks[k] mapped by transforms[t, k]
    (float [T, K, 2, 3], frame 0 -> t, cv2.warpAffine's form), later masks over earlier ones, each
    blended in by its feathered mask (feathered_alpha); a frame whose transforms are all the identity is
    the image itself."""
    h, w = image.shape[:2]
    identity = translations(np.zeros(2, np.float32))
    alphas = [feathered_alpha(mask) for mask in masks]      # once, not per frame
    frames = []
    for t, maps in enumerate(np.asarray(transforms, np.float32)):
        if (maps == identity).all():
            frames.append(image.copy())             # nothing moved (frame 0): the image, no inpainted seam
            continue
        frame = (background if background.ndim == 3 else background[t]).astype(np.float32)
        for alpha, transform in zip(alphas, maps):
            moved = cv2.warpAffine(alpha, transform, (w, h), flags=cv2.INTER_LINEAR)[..., None]
            frame += moved * (cv2.warpAffine(image, transform, (w, h), flags=cv2.INTER_LINEAR) - frame)
        frames.append(np.clip(frame + 0.5, 0, 255).astype(np.uint8))
    return np.stack(frames)


def feathered_alpha(mask: np.ndarray) -> np.ndarray:
    """float32 [H, W] in [0, 1]: bool mask [H, W] blurred by a Gaussian of FEATHER_SIGMA_PX, the weight a
    pasted segment gets: its seam with the plate is soft, as the object's own anti-aliased edge was."""
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), FEATHER_SIGMA_PX)


def paste_flows(masks: list[np.ndarray], displacements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The motion of paste_segments, hard-edged (a latent is not feathered), as (backward flows float32
    [T, H, W, 2], holes float32 [T, H, W]):
    a pixel inside a moved segment reads the image at itself minus the segment's displacement, every
    other pixel stays; holes are 1 where the plate differs from the image (plate_hole) and no segment is
    now (the plate shows). For a stream that moves a latent instead of pixels
    (models/conditioning.warp_latent). masks: at least one."""
    if not masks:
        raise ValueError("paste_flows needs at least one mask")
    h, w = masks[0].shape
    hole = plate_hole(masks)
    flows = np.zeros((len(displacements), h, w, 2), np.float32)
    holes = np.zeros((len(displacements), h, w), np.float32)
    for t, shifts in enumerate(displacements):
        if not np.any(shifts):
            continue                                # the image itself, as paste_segments shows it
        covered = np.zeros((h, w), bool)
        for where, shift in zip(moved_masks(masks, translations(shifts)), shifts):
            flows[t][where] = shift
            covered |= where
        holes[t] = hole & ~covered
    return flows, holes


def content_key(array: np.ndarray) -> str:
    """The SHA-1 of an array's bytes: a SegmentCache key part that changes when the image does."""
    return hashlib.sha1(np.ascontiguousarray(array)).hexdigest()


class SegmentCache:
    """Segments and plates by what they are made of (the image's bytes and the seed points), least
    recently used dropped beyond CACHE_ENTRIES."""

    def __init__(self, entries: int = CACHE_ENTRIES):
        self.entries = entries
        self._store: OrderedDict[tuple, Any] = OrderedDict()
        # a stream segments ahead on another thread (StreamingGenerator.presegment): one that needs a
        # value being made waits for it rather than making it twice
        self._lock = threading.RLock()

    def get(self, key: tuple, make: Callable[[], Any]) -> Any:
        """The value stored under `key`, else make() stored under it."""
        with self._lock:
            if key in self._store:
                self._store.move_to_end(key)
                return self._store[key]
            value = self._store[key] = make()
            if len(self._store) > self.entries:
                self._store.popitem(last=False)
            return value


def drag_segments(first_frame: np.ndarray, tracks: TrackSet, cache: SegmentCache | None = None
                  ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
    """(masks, displacements [T, K, 2], plate) of segment_paste (paste_segments' inputs); the plate is
    None when nothing is dragged."""
    h, w = first_frame.shape[:2]
    if (tracks.width, tracks.height) != (w, h):
        tracks = tracks.scaled(w, h)
    cache = cache or SegmentCache()
    image_key = content_key(first_frame)
    groups = drag_groups(tracks)
    start, seen = tracks.tracks[0], tracks.visibility[0]
    masks, keys = [], []
    for group in groups:
        background = seen.copy()
        background[group] = False                   # every other track on frame 0 is sure background
        fore, back = start[group[seen[group]]], start[background]
        keys.append((image_key, fore.tobytes(), back.tobytes()))
        masks.append(cache.get(keys[-1], lambda: segment_object(first_frame, fore, back)))
    displacements = np.zeros((tracks.num_frames, len(groups), 2), np.float32)
    for k, group in enumerate(groups):
        moved = tracks.tracks[:, group] - start[None, group]                 # [T, n, 2]
        for t in range(tracks.num_frames):
            shown = tracks.visibility[t, group]
            if shown.any():
                displacements[t, k] = np.median(moved[t, shown], axis=0)
    plate = cache.get(("plate", *keys), lambda: inpainted_plate(first_frame, masks)) if masks else None
    return masks, displacements, plate


def segment_paste(first_frame: np.ndarray, tracks: TrackSet, cache: SegmentCache | None = None) -> np.ndarray:
    """uint8 [T, H, W, 3] (T = tracks.num_frames): the module docstring's method on `first_frame`
    (uint8 [H, W, 3], the tracks' size); frame 0 of `tracks` holds each track's content on first_frame."""
    return paste_segments(first_frame, *drag_segments(first_frame, tracks, cache))
