"""Track files and other projects' track formats <-> TrackSet.

`save_tracks` / `load_tracks` dispatch on the file name:

    *.npz              canonical: tracks float32 [T, N, 2], visibility bool [T, N], width, height, fps,
                       optional ids int64 [N] and role str [N]. `load_tracks` also accepts .npz files
                       holding TAP-Vid (`points`, `occluded`, + `width`/`height` or `video`) or
                       CoTracker (`pred_tracks`, `pred_visibility`, + `width`/`height`) arrays.
    *.ati.json         ATI-style JSON: a list of tracks, each a list of {"x": .., "y": ..} per frame, in
                       pixels; no visibility, size or fps (pass width/height; fps defaults to 16, Wan's rate).
    *.json             sparse keyframes, linearly interpolated (t in frames, may be fractional):
                       {"fps": 16, "width": 832, "height": 480, "num_frames": 81,      (num_frames optional)
                        "tracks": [{"keyframes": [[t, x, y, visible], ...], "role": "path", "id": 7}, ...]}
                       Before the first / after the last keyframe a point holds that keyframe's position and
                       visibility; between keyframes visibility is the nearest keyframe's (ties: earlier).
                       `load_tracks` recognises ATI content in any .json file.
    NAME_tracks.npy    Wan-Move pair: NAME_tracks.npy float [T, N, 2] (or [1, T, N, 2]) pixels and
                       NAME_visibility.npy bool [T, N] (all visible when absent); no size or fps.

Adapters between in-memory formats (no files): from_/to_cotracker (torch [B, T, N, 2] + [B, T, N]),
from_/to_tapvid (dict with normalized `points` [N, T, 2] and `occluded` [N, T]), from_/to_wanmove,
from_/to_ati. `resample` changes the frame rate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from motionstream.tracks.trackset import TrackError, TrackSet

WAN_FPS = 16.0  # frame rate assumed for formats that do not store one (ATI, Wan-Move: both Wan 2.1 at 16 fps)
KEYFRAME_TOLERANCE_PX = 1e-3  # a JSON keyframe is dropped when linear interpolation reproduces it this closely
WANMOVE_TRACKS_SUFFIX = "_tracks.npy"
WANMOVE_VISIBILITY_SUFFIX = "_visibility.npy"
ATI_SUFFIX = ".ati.json"


# --------------------------------------------------------------------------------------------- files
def track_format(path: str | Path) -> str:
    """The format a file name asks for when writing: "npz", "ati", "keyframes" or "wanmove"
    (raises TrackError for anything else, so commands can check an output name before working)."""
    name = Path(path).name.lower()
    for suffix, kind in ((".npz", "npz"), (ATI_SUFFIX, "ati"), (".json", "keyframes"), (WANMOVE_TRACKS_SUFFIX, "wanmove")):
        if name.endswith(suffix):
            return kind
    raise TrackError(f"{path}: unknown track file type; use .npz, .json, {ATI_SUFFIX} or NAME{WANMOVE_TRACKS_SUFFIX}")


def save_tracks(path: str | Path, ts: TrackSet) -> Path:
    """Write `ts` in the format named by the file name (see module docstring); returns the path."""
    path = Path(path)
    kind = track_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "npz":
        arrays: dict[str, Any] = dict(tracks=ts.tracks, visibility=ts.visibility, width=ts.width,
                                      height=ts.height, fps=ts.fps)
        if ts.ids is not None:
            arrays["ids"] = ts.ids
        if ts.role is not None:
            arrays["role"] = np.array(ts.role, dtype=str)
        np.savez_compressed(path, **arrays)
    elif kind == "ati":
        path.write_text(json.dumps(to_ati(ts)))
    elif kind == "keyframes":
        path.write_text(json.dumps(_to_keyframe_json(ts)))
    else:
        tracks, visibility = to_wanmove(ts)
        np.save(path, tracks)
        np.save(_wanmove_visibility_path(path), visibility)
    return path


def load_tracks(path: str | Path, fps: float | None = None, *, width: int | None = None,
                height: int | None = None, source_fps: float | None = None) -> TrackSet:
    """Read any supported track file into a TrackSet.

    fps:           resample to this frame rate (None keeps the file's own rate).
    width, height: image size for formats that do not store it (ATI, Wan-Move, some .npz); they
                   override nothing in files that do store a size.
    source_fps:    frame rate of formats that do not store one (default 16, Wan's rate).
    """
    path = Path(path)
    if not path.is_file():
        raise TrackError(f"track file not found: {path}")
    name = path.name.lower()
    if name.endswith(".npz"):
        ts = _load_npz(path, width, height, source_fps)
    elif name.endswith(".json"):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise TrackError(f"{path}: not valid JSON ({err})") from err
        if isinstance(data, list):
            ts = from_ati(data, *_need_size(path, width, height), fps=source_fps or WAN_FPS)
        else:
            ts = _from_keyframe_json(data, where=str(path))
    elif name.endswith(".npy"):
        if not name.endswith(WANMOVE_TRACKS_SUFFIX):
            raise TrackError(f"{path}: a Wan-Move track file must be named NAME{WANMOVE_TRACKS_SUFFIX}")
        vis_path = _wanmove_visibility_path(path)
        visibility = np.load(vis_path, allow_pickle=False) if vis_path.is_file() else None
        ts = from_wanmove(np.load(path, allow_pickle=False), visibility, *_need_size(path, width, height),
                          fps=source_fps or WAN_FPS)
    else:
        raise TrackError(f"{path}: unknown track file type; use .npz, .json or NAME{WANMOVE_TRACKS_SUFFIX}")
    return resample(ts, fps) if fps is not None and fps != ts.fps else ts


def _need_size(path: Path, width: int | None, height: int | None) -> tuple[int, int]:
    if width is None or height is None:
        raise TrackError(f"{path}: this format does not store the image size; pass width and height (--size WxH)")
    return width, height


def _wanmove_visibility_path(tracks_path: Path) -> Path:
    return tracks_path.with_name(tracks_path.name[: -len(WANMOVE_TRACKS_SUFFIX)] + WANMOVE_VISIBILITY_SUFFIX)


def _load_npz(path: Path, width: int | None, height: int | None, source_fps: float | None) -> TrackSet:
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if {"tracks", "visibility"} <= keys:
            missing = sorted({"width", "height", "fps"} - keys)
            if missing:
                raise TrackError(f"{path}: missing {missing}")
            return TrackSet(tracks=z["tracks"], visibility=z["visibility"], width=int(z["width"]),
                            height=int(z["height"]), fps=float(z["fps"]),
                            ids=z["ids"] if "ids" in keys else None,
                            role=[str(r) for r in z["role"]] if "role" in keys else None)
        size = (int(z["width"]), int(z["height"])) if {"width", "height"} <= keys else (width, height)
        fps = float(z["fps"]) if "fps" in keys else (source_fps or WAN_FPS)
        if {"points", "occluded"} <= keys:
            data = {k: z[k] for k in ("points", "occluded", "video") if k in keys}
            if "video" not in data:
                size = _need_size(path, *size)
            return from_tapvid(data, fps=fps, width=size[0], height=size[1])
        if "pred_tracks" in keys:
            vis = z["pred_visibility"] if "pred_visibility" in keys else None
            return from_cotracker(z["pred_tracks"], vis, *_need_size(path, *size), fps=fps)
    raise TrackError(f"{path}: .npz holds {sorted(keys)}; expected tracks+visibility (canonical), "
                     "points+occluded (TAP-Vid) or pred_tracks (CoTracker)")


# ------------------------------------------------------------------------------------ keyframe JSON
def _to_keyframe_json(ts: TrackSet) -> dict[str, Any]:
    times = np.arange(ts.num_frames)
    tracks = []
    for n in range(ts.num_tracks):
        xy, vis = ts.tracks[:, n].astype(np.float64), ts.visibility[:, n]
        keep = _keyframe_indices(xy, vis)
        track: dict[str, Any] = {"keyframes": [[int(times[i]), float(xy[i, 0]), float(xy[i, 1]), int(vis[i])]
                                               for i in keep]}
        if ts.role is not None:
            track["role"] = ts.role[n]
        if ts.ids is not None:
            track["id"] = int(ts.ids[n])
        tracks.append(track)
    return {"fps": ts.fps, "width": ts.width, "height": ts.height, "num_frames": ts.num_frames, "tracks": tracks}


def _keyframe_indices(xy: np.ndarray, vis: np.ndarray) -> list[int]:
    """Frames to keep so that linear interpolation between kept frames reproduces `xy` within
    KEYFRAME_TOLERANCE_PX and nearest-keyframe visibility reproduces `vis` (greedy, from the start)."""
    t_last = len(xy) - 1

    def reproduces(anchor: int, cand: int) -> bool:
        inner = np.arange(anchor + 1, cand)
        w = ((inner - anchor) / (cand - anchor))[:, None]
        line = xy[anchor] * (1 - w) + xy[cand] * w
        # nearest-keyframe visibility on (anchor, cand): the first half from anchor, the rest from cand
        near_anchor = (inner - anchor) <= (cand - inner)
        return bool(np.abs(line - xy[inner]).max(initial=0.0) <= KEYFRAME_TOLERANCE_PX
                    and np.array_equal(np.where(near_anchor, vis[anchor], vis[cand]), vis[inner]))

    keep = [0]
    anchor = 0
    while anchor < t_last:
        if reproduces(anchor, t_last):  # fast path: static and straight tracks need no inner keyframes
            end = t_last
        else:
            end = anchor + 1
            while end < t_last and reproduces(anchor, end + 1):
                end += 1
        keep.append(end)
        anchor = end
    return keep


def _from_keyframe_json(data: Any, where: str) -> TrackSet:
    if not isinstance(data, dict) or "tracks" not in data:
        raise TrackError(f"{where}: keyframe JSON must be an object with 'fps', 'width', 'height' and 'tracks'")
    missing = [k for k in ("fps", "width", "height") if k not in data]
    if missing:
        raise TrackError(f"{where}: missing {missing}")
    specs = data["tracks"]
    if not isinstance(specs, list) or not specs:
        raise TrackError(f"{where}: 'tracks' must be a non-empty list")
    keyframes = []
    for i, spec in enumerate(specs):
        kf = np.asarray(spec.get("keyframes", []) if isinstance(spec, dict) else [], dtype=np.float64)
        if kf.ndim != 2 or kf.shape[0] < 1 or kf.shape[1] not in (3, 4):
            raise TrackError(f"{where}: track {i} needs 'keyframes' as a list of [t, x, y, visible]")
        if kf.shape[1] == 3:
            kf = np.concatenate([kf, np.ones((len(kf), 1))], 1)
        if not np.isfinite(kf).all():
            raise TrackError(f"{where}: track {i} has NaN/inf keyframes")
        keyframes.append(kf[np.argsort(kf[:, 0], kind="stable")])
    last_t = max(int(np.ceil(kf[-1, 0])) for kf in keyframes)
    num_frames = int(data.get("num_frames", last_t + 1))
    times = np.arange(num_frames, dtype=np.float64)
    tracks = np.zeros((num_frames, len(keyframes), 2), np.float32)
    visibility = np.zeros((num_frames, len(keyframes)), bool)
    for n, kf in enumerate(keyframes):
        tracks[:, n, 0] = np.interp(times, kf[:, 0], kf[:, 1])
        tracks[:, n, 1] = np.interp(times, kf[:, 0], kf[:, 2])
        visibility[:, n] = kf[_nearest_keyframe(kf[:, 0], times), 3] > 0.5
    roles = [s.get("role") for s in specs]
    ids = [s.get("id") for s in specs]
    return TrackSet(tracks=tracks, visibility=visibility, width=data["width"], height=data["height"],
                    fps=data["fps"], ids=np.array(ids, np.int64) if all(i is not None for i in ids) else None,
                    role=[r or "path" for r in roles] if any(r is not None for r in roles) else None)


def _nearest_keyframe(key_t: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the keyframe nearest to each time (ties go to the earlier keyframe)."""
    right = np.searchsorted(key_t, times, side="left").clip(0, len(key_t) - 1)
    left = (right - 1).clip(0)
    take_left = np.abs(times - key_t[left]) <= np.abs(key_t[right] - times)
    return np.where(take_left, left, right)


# ---------------------------------------------------------------------------------------- adapters
def _numpy(x: Any) -> np.ndarray:
    """numpy view of a numpy array or (CPU/GPU) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu() if x.is_floating_point() else x.detach().cpu()
        return x.numpy()
    return np.asarray(x)


def from_cotracker(tracks: Any, visibility: Any | None, width: int, height: int, fps: float = WAN_FPS,
                   batch_index: int = 0) -> TrackSet:
    """CoTracker output (`pred_tracks` [B, T, N, 2] pixels, `pred_visibility` [B, T, N] bool or
    probability; unbatched [T, N, 2] / [T, N] also accepted) -> TrackSet (role transfer).
    Probabilities are visible above 0.5."""
    xy = _numpy(tracks).astype(np.float32)
    if xy.ndim == 4:
        xy = xy[batch_index]
    vis = np.ones(xy.shape[:2], bool) if visibility is None else _numpy(visibility)
    if vis.ndim == 3:
        vis = vis[batch_index]
    vis = vis > 0.5 if vis.dtype != np.bool_ else vis
    return TrackSet(tracks=np.ascontiguousarray(xy), visibility=np.ascontiguousarray(vis), width=width,
                    height=height, fps=fps, role=["transfer"] * xy.shape[1] if xy.ndim == 3 else None)


def to_cotracker(ts: TrackSet):
    """TrackSet -> (tracks torch.float32 [1, T, N, 2], visibility torch.bool [1, T, N]) as CoTracker returns them."""
    import torch

    return torch.from_numpy(ts.tracks.copy())[None], torch.from_numpy(ts.visibility.copy())[None]


def from_tapvid(data: dict[str, Any], fps: float, width: int | None = None, height: int | None = None) -> TrackSet:
    """TAP-Vid sample {'points': [N, T, 2] (x, y) normalized to [0, 1], 'occluded': bool [N, T],
    optional 'video': uint8 [T, H, W, 3]} -> TrackSet. The size comes from `video` when present,
    else from width/height."""
    if "video" in data and data["video"] is not None:
        height, width = np.asarray(data["video"]).shape[1:3]
    if width is None or height is None:
        raise TrackError("TAP-Vid data has no 'video'; pass width and height")
    points = _numpy(data["points"]).astype(np.float64)
    if points.ndim != 3 or points.shape[-1] != 2:
        raise TrackError(f"TAP-Vid 'points' must be [N, T, 2], got {points.shape}")
    occluded = _numpy(data["occluded"]).astype(bool)
    tracks = (points * np.array([width, height])).transpose(1, 0, 2).astype(np.float32)
    return TrackSet(tracks=np.ascontiguousarray(tracks), visibility=np.ascontiguousarray(~occluded.T),
                    width=int(width), height=int(height), fps=fps)


def to_tapvid(ts: TrackSet) -> dict[str, np.ndarray]:
    """TrackSet -> {'points': float32 [N, T, 2] normalized, 'occluded': bool [N, T]}."""
    scale = np.array([ts.width, ts.height], np.float64)
    points = (ts.tracks.astype(np.float64) / scale).astype(np.float32).transpose(1, 0, 2)
    return {"points": np.ascontiguousarray(points), "occluded": np.ascontiguousarray(~ts.visibility.T)}


def from_wanmove(tracks: Any, visibility: Any | None, width: int, height: int, fps: float = WAN_FPS) -> TrackSet:
    """Wan-Move arrays (tracks [T, N, 2] or [1, T, N, 2] pixels; visibility [T, N] or [1, T, N]) -> TrackSet."""
    xy = _numpy(tracks).astype(np.float32)
    xy = xy[0] if xy.ndim == 4 else xy
    vis = np.ones(xy.shape[:2], bool) if visibility is None else _numpy(visibility)
    vis = vis[0] if vis.ndim == 3 else vis
    return TrackSet(tracks=np.ascontiguousarray(xy), visibility=vis.astype(bool), width=width, height=height, fps=fps)


def to_wanmove(ts: TrackSet) -> tuple[np.ndarray, np.ndarray]:
    """TrackSet -> (tracks float32 [T, N, 2] pixels, visibility bool [T, N]) as Wan-Move's .npy files hold them."""
    return ts.tracks.copy(), ts.visibility.copy()


def from_ati(data: list, width: int, height: int, fps: float = WAN_FPS) -> TrackSet:
    """ATI-style JSON (a list of tracks, each a list of {'x', 'y'} pixel points per frame; an optional
    'visible' key per point, default visible) -> TrackSet. Tracks of different lengths are padded by
    holding their last point, invisible."""
    if not isinstance(data, list) or not data or not all(isinstance(tr, list) and tr for tr in data):
        raise TrackError("ATI JSON must be a non-empty list of non-empty per-frame point lists")
    num_frames = max(len(tr) for tr in data)
    tracks = np.zeros((num_frames, len(data), 2), np.float32)
    visibility = np.zeros((num_frames, len(data)), bool)
    for n, tr in enumerate(data):
        try:
            pts = np.array([[p["x"], p["y"]] for p in tr], np.float32)
        except (KeyError, TypeError) as err:
            raise TrackError(f"ATI track {n}: every point needs 'x' and 'y'") from err
        tracks[:, n] = np.concatenate([pts, np.repeat(pts[-1:], num_frames - len(pts), 0)])
        visibility[: len(tr), n] = [bool(p.get("visible", True)) for p in tr]
    return TrackSet(tracks=tracks, visibility=visibility, width=width, height=height, fps=fps)


def to_ati(ts: TrackSet) -> list[list[dict[str, float]]]:
    """TrackSet -> ATI-style list of tracks of per-frame {'x', 'y', 'visible'} points (pixels)."""
    xy, vis = ts.tracks.astype(np.float64), ts.visibility
    return [[{"x": float(xy[t, n, 0]), "y": float(xy[t, n, 1]), "visible": int(vis[t, n])}
             for t in range(ts.num_frames)] for n in range(ts.num_tracks)]


# --------------------------------------------------------------------------------------- resampling
def resample(ts: TrackSet, fps: float) -> TrackSet:
    """The same motion at another frame rate: output frame k is at time k / fps, for every time
    inside [0, ts.duration]; positions are linearly interpolated in time, visibility is the nearest
    source frame's (ties: earlier)."""
    if not np.isfinite(fps) or fps <= 0:
        raise TrackError(f"fps must be a positive number, got {fps!r}")
    # the epsilon keeps the last frame when duration * fps is an integer up to rounding
    num_out = int(np.floor(ts.duration * fps + 1e-6)) + 1
    src = np.arange(num_out, dtype=np.float64) * (ts.fps / fps)  # fractional source frame of each output frame
    lo = np.floor(src).astype(int).clip(0, ts.num_frames - 1)
    hi = (lo + 1).clip(max=ts.num_frames - 1)
    w = (src - lo).clip(0, 1)[:, None, None]
    tracks = ts.tracks[lo].astype(np.float64) * (1 - w) + ts.tracks[hi].astype(np.float64) * w
    nearest = np.ceil(src - 0.5).astype(int).clip(0, ts.num_frames - 1)
    return TrackSet(tracks=tracks.astype(np.float32), visibility=ts.visibility[nearest].copy(), width=ts.width,
                    height=ts.height, fps=float(fps), ids=ts.ids, role=ts.role)
