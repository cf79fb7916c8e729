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
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from motionstream.tracks.trackset import TrackError, TrackSet
from motionstream.limits import MAX_IMAGE_PIXELS

WAN_FPS = 16.0  # frame rate assumed for formats that do not store one (ATI, Wan-Move: both Wan 2.1 at 16 fps)
KEYFRAME_TOLERANCE_PX = 1e-3  # a JSON keyframe is dropped when linear interpolation reproduces it this closely
WANMOVE_TRACKS_SUFFIX = "_tracks.npy"
WANMOVE_VISIBILITY_SUFFIX = "_visibility.npy"
ATI_SUFFIX = ".ati.json"

# Limits of what a track file may ask for: checked from the file's headers / keys before anything is
# allocated, so a few-KB file cannot ask for gigabytes (e.g. fps 1e-6 resampled to 16 fps).
MIN_FPS, MAX_FPS = 1.0, 240.0              # frame rates a track file (or a resampling) may use
MAX_TRACK_FRAMES = 100_000                 # frames of one TrackSet (~1.7 h at 16 fps)
MAX_TRACK_POINTS = 10_000_000              # frames x tracks (~1 GB of float64 temporaries in `resample`)
MAX_ARRAY_ELEMENTS = 2 * MAX_TRACK_POINTS  # one array of a track file ([T, N, 2] positions)
ERROR_DETAIL_CHARS = 80                    # of a library's own error text, quoted in ours (one line stays short)
# errors numpy / zipfile raise for files that are not what their name says (truncated, text, pickles)
_READ_ERRORS = (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError, TypeError, IndexError)


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
    if source_fps is not None:
        check_fps(source_fps, "source fps")
    name = path.name.lower()
    if name.endswith(".npz"):
        ts = _load_npz(path, width, height, source_fps)
    elif name.endswith(".json"):
        data = _read_json(path)
        if isinstance(data, list):
            ts = from_ati(data, *_need_size(path, width, height), fps=source_fps or WAN_FPS)
        else:
            ts = _from_keyframe_json(data, where=str(path))
    elif name.endswith(".npy"):
        if not name.endswith(WANMOVE_TRACKS_SUFFIX):
            raise TrackError(f"{path}: a Wan-Move track file must be named NAME{WANMOVE_TRACKS_SUFFIX}")
        vis_path = _wanmove_visibility_path(path)
        visibility = read_npy(vis_path) if vis_path.is_file() else None
        ts = _converted(path, lambda: from_wanmove(read_npy(path), visibility, *_need_size(path, width, height),
                                                   fps=source_fps or WAN_FPS))
    else:
        raise TrackError(f"{path}: unknown track file type; use .npz, .json or NAME{WANMOVE_TRACKS_SUFFIX}")
    check_limits(ts, str(path))
    return resample(ts, fps) if fps is not None and fps != ts.fps else ts


def check_fps(fps: Any, what: str = "fps") -> float:
    """`fps` as a float within [MIN_FPS, MAX_FPS]; TrackError naming `what` and the limits otherwise."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) \
            or not MIN_FPS <= float(fps) <= MAX_FPS:
        raise TrackError(f"{what} must be a number within [{MIN_FPS:g}, {MAX_FPS:g}], got {fps!r}")
    return float(fps)


def check_size(frames: int, tracks: int, where: str) -> None:
    """Refuse frames (> MAX_TRACK_FRAMES) or frames x tracks (> MAX_TRACK_POINTS) before allocating them."""
    if frames > MAX_TRACK_FRAMES:
        raise TrackError(f"{where}: {frames} frames is more than the limit of {MAX_TRACK_FRAMES} "
                         "(MAX_TRACK_FRAMES)")
    if frames * tracks > MAX_TRACK_POINTS:
        raise TrackError(f"{where}: {frames} frames x {tracks} tracks = {frames * tracks} points is more than "
                         f"the limit of {MAX_TRACK_POINTS} (MAX_TRACK_POINTS)")


def check_limits(ts: TrackSet, where: str) -> None:
    """A loaded TrackSet within the limits: fps, frames x tracks, and an image size that the pixel cap
    of images (limits.MAX_IMAGE_PIXELS) allows, since drawing and conditioning allocate images that size."""

    check_fps(ts.fps, f"{where}: fps")
    check_size(ts.num_frames, ts.num_tracks, where)
    if ts.width * ts.height > MAX_IMAGE_PIXELS:
        raise TrackError(f"{where}: image size {ts.width}x{ts.height} is more than the limit of "
                         f"{MAX_IMAGE_PIXELS} pixels (MAX_IMAGE_PIXELS)")


def _read_json(path: Path) -> Any:
    """The parsed JSON of a track file; TrackError for anything that is not UTF-8 JSON."""
    try:
        return json.loads(path.read_text())
    except (ValueError, RecursionError) as err:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise TrackError(f"{path}: not valid JSON ({type(err).__name__}: {str(err)[:ERROR_DETAIL_CHARS]})") from None


def _array_header(f: BinaryIO, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from an .npy header, without reading the data; refuses arrays over MAX_ARRAY_ELEMENTS."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, _, dtype = reader(f)
    if int(np.prod(shape, dtype=np.float64)) > MAX_ARRAY_ELEMENTS:
        raise TrackError(f"{where}: an array of shape {list(shape)} is more than the limit of {MAX_ARRAY_ELEMENTS} "
                         "values (MAX_ARRAY_ELEMENTS)")
    return shape, dtype


def read_npy(path: Path) -> np.ndarray:
    """A plain (no pickles) .npy array within MAX_ARRAY_ELEMENTS; TrackError for anything else."""
    try:
        with open(path, "rb") as f:
            _array_header(f, str(path))
        return np.load(path, allow_pickle=False)
    except TrackError:
        raise
    except _READ_ERRORS as err:
        raise TrackError(f"{path}: not a readable .npy array ({type(err).__name__}: {str(err)[:ERROR_DETAIL_CHARS]})") from None


def _converted(path: Path, build) -> TrackSet:
    """build() -> TrackSet, with arrays of the wrong kind (strings, wrong ranks) reported against `path`."""
    try:
        return build()
    except TrackError as err:
        raise TrackError(f"{path}: {err}") from None
    except (ValueError, TypeError, IndexError) as err:
        raise TrackError(f"{path}: arrays of the wrong kind ({type(err).__name__}: {str(err)[:ERROR_DETAIL_CHARS]})") from None


def _need_size(path: Path, width: int | None, height: int | None) -> tuple[int, int]:
    if width is None or height is None:
        raise TrackError(f"{path}: this format does not store the image size; pass width and height (--size WxH)")
    return width, height


def _wanmove_visibility_path(tracks_path: Path) -> Path:
    return tracks_path.with_name(tracks_path.name[: -len(WANMOVE_TRACKS_SUFFIX)] + WANMOVE_VISIBILITY_SUFFIX)


def _load_npz(path: Path, width: int | None, height: int | None, source_fps: float | None) -> TrackSet:
    """Any supported .npz layout -> TrackSet; every array's header is checked before its data is read."""
    try:
        with zipfile.ZipFile(path) as zf:
            shapes = {}
            for member in zf.namelist():
                with zf.open(member) as f:
                    shapes[member.removesuffix(".npy")] = _array_header(f, f"{path}: {member}")[0]
        with np.load(path, allow_pickle=False) as z:
            return _npz_trackset(path, z, shapes, width, height, source_fps)
    except TrackError:
        raise
    except _READ_ERRORS as err:
        raise TrackError(f"{path}: not a readable track .npz ({type(err).__name__}: {str(err)[:ERROR_DETAIL_CHARS]})") from None


def _scalar(z: Any, key: str, path: Path) -> float:
    """The single number stored under `key` (width, height, fps); TrackError for arrays and text."""
    value = z[key]
    if value.size != 1 or not np.issubdtype(value.dtype, np.number):
        raise TrackError(f"{path}: '{key}' must be a single number, got a {value.dtype} array of shape "
                         f"{list(value.shape)}")
    return float(value.reshape(()))


def _npz_trackset(path: Path, z: Any, shapes: dict[str, tuple[int, ...]], width: int | None, height: int | None,
                  source_fps: float | None) -> TrackSet:
    keys = set(z.files)
    if {"tracks", "visibility"} <= keys:
        missing = sorted({"width", "height", "fps"} - keys)
        if missing:
            raise TrackError(f"{path}: missing {missing}")
        fps = check_fps(_scalar(z, "fps", path), f"{path}: fps")
        size = int(_scalar(z, "width", path)), int(_scalar(z, "height", path))
        return _converted(path, lambda: TrackSet(
            tracks=z["tracks"], visibility=z["visibility"], width=size[0], height=size[1], fps=fps,
            ids=z["ids"] if "ids" in keys else None, role=[str(r) for r in z["role"]] if "role" in keys else None))
    size = (int(_scalar(z, "width", path)), int(_scalar(z, "height", path))) if {"width", "height"} <= keys \
        else (width, height)
    fps = check_fps(_scalar(z, "fps", path), f"{path}: fps") if "fps" in keys else (source_fps or WAN_FPS)
    if {"points", "occluded"} <= keys:
        if "video" in keys:   # only its size is used: read from the header, never decoded
            if len(shapes["video"]) != 4:
                raise TrackError(f"{path}: 'video' must be [T, H, W, 3], got shape {list(shapes['video'])}")
            size = int(shapes["video"][2]), int(shapes["video"][1])
        else:
            size = _need_size(path, *size)
        data = {k: z[k] for k in ("points", "occluded")}
        return _converted(path, lambda: from_tapvid(data, fps=fps, width=size[0], height=size[1]))
    if "pred_tracks" in keys:
        vis = z["pred_visibility"] if "pred_visibility" in keys else None
        return _converted(path, lambda: from_cotracker(z["pred_tracks"], vis, *_need_size(path, *size), fps=fps))
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
    keyframes = [_keyframe_array(spec, i, where) for i, spec in enumerate(specs)]
    last_t = max(int(np.ceil(kf[-1, 0])) for kf in keyframes)
    num_frames = data.get("num_frames", last_t + 1)
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, float)) or num_frames != int(num_frames) \
            or not 1 <= num_frames <= MAX_TRACK_FRAMES:
        raise TrackError(f"{where}: num_frames must be a whole number within [1, {MAX_TRACK_FRAMES}] "
                         f"(MAX_TRACK_FRAMES), got {num_frames!r}")
    num_frames = int(num_frames)
    check_size(num_frames, len(keyframes), where)
    times = np.arange(num_frames, dtype=np.float64)
    tracks = np.zeros((num_frames, len(keyframes), 2), np.float32)
    visibility = np.zeros((num_frames, len(keyframes)), bool)
    for n, kf in enumerate(keyframes):
        tracks[:, n, 0] = np.interp(times, kf[:, 0], kf[:, 1])
        tracks[:, n, 1] = np.interp(times, kf[:, 0], kf[:, 2])
        visibility[:, n] = kf[_nearest_keyframe(kf[:, 0], times), 3] > 0.5
    roles = [_optional_field(s, "role", str, i, where) for i, s in enumerate(specs)]
    ids = [_optional_field(s, "id", int, i, where) for i, s in enumerate(specs)]
    return TrackSet(tracks=tracks, visibility=visibility, width=data["width"], height=data["height"],
                    fps=check_fps(data["fps"], f"{where}: fps"),
                    ids=np.array(ids, np.int64) if all(i is not None for i in ids) else None,
                    role=[r or "path" for r in roles] if any(r is not None for r in roles) else None)


def _keyframe_array(spec: Any, i: int, where: str) -> np.ndarray:
    """Track i's keyframes as float64 [K, 4] (t, x, y, visible) sorted by t, times within +-MAX_TRACK_FRAMES."""
    shape_error = TrackError(f"{where}: track {i} needs 'keyframes' as a list of [t, x, y, visible]")
    try:
        kf = np.asarray(spec.get("keyframes", []) if isinstance(spec, dict) else [], dtype=np.float64)
    except (ValueError, TypeError):
        raise shape_error from None
    if kf.ndim != 2 or kf.shape[0] < 1 or kf.shape[1] not in (3, 4):
        raise shape_error
    if kf.shape[1] == 3:
        kf = np.concatenate([kf, np.ones((len(kf), 1))], 1)
    if not np.isfinite(kf).all():
        raise TrackError(f"{where}: track {i} has NaN/inf keyframes")
    if np.abs(kf[:, 0]).max() > MAX_TRACK_FRAMES:
        raise TrackError(f"{where}: track {i} has a keyframe time beyond +-{MAX_TRACK_FRAMES} frames "
                         "(MAX_TRACK_FRAMES)")
    return kf[np.argsort(kf[:, 0], kind="stable")]


def _optional_field(spec: Any, key: str, kind: type, i: int, where: str) -> Any:
    """spec[key] when present (None otherwise), which must be a `kind` (bool is not an int here)."""
    value = spec.get(key) if isinstance(spec, dict) else None
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise TrackError(f"{where}: track {i} '{key}' must be {'an integer' if kind is int else 'a string'}, "
                         f"got {value!r:.{ERROR_DETAIL_CHARS}}")
    return value


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
    # the one import inside a function in tracks/: the track files and the `tracks` commands need no
    # torch (loading it costs ~2 s), only this adapter does
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
    check_size(num_frames, len(data), "ATI JSON")
    tracks = np.zeros((num_frames, len(data), 2), np.float32)
    visibility = np.zeros((num_frames, len(data)), bool)
    for n, tr in enumerate(data):
        try:
            pts = np.array([[p["x"], p["y"]] for p in tr], np.float32)
        except (KeyError, TypeError, ValueError) as err:
            raise TrackError(f"ATI track {n}: every point needs numbers 'x' and 'y'") from err
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
    fps = check_fps(fps, "resampling fps")
    # the epsilon keeps the last frame when duration * fps is an integer up to rounding
    num_out = int(np.floor(ts.duration * fps + 1e-6)) + 1
    check_size(num_out, ts.num_tracks, f"resampled to {fps:g} fps")
    src = np.arange(num_out, dtype=np.float64) * (ts.fps / fps)  # fractional source frame of each output frame
    lo = np.floor(src).astype(int).clip(0, ts.num_frames - 1)
    hi = (lo + 1).clip(max=ts.num_frames - 1)
    w = (src - lo).clip(0, 1)[:, None, None]
    tracks = ts.tracks[lo].astype(np.float64) * (1 - w) + ts.tracks[hi].astype(np.float64) * w
    nearest = np.ceil(src - 0.5).astype(int).clip(0, ts.num_frames - 1)
    return TrackSet(tracks=tracks.astype(np.float32), visibility=ts.visibility[nearest].copy(), width=ts.width,
                    height=ts.height, fps=float(fps), ids=ts.ids, role=ts.role)
