"""The synthetic video world: seed -> clip with exact tracks, a caption, effects and a motion mask.

    clip = render_clip(seed=7, num_frames=33, width=256, height=144, fps=16)
    clip.frames       uint8 [T, H, W, 3]
    clip.tracks       TrackSet, G*G points on a grid of frame 0 (G = cfg.grid_size), exact
                      positions; visibility False when a nearer layer covers the point with alpha
                      > cfg.occlusion_alpha or the point is outside the frame
    clip.caption      "a striped red disc slides right over a brick wall, while the camera zooms in; it gets darker."
    clip.effects      ["darker"]
    clip.moving_mask  bool [T, H, W]: pixels owned by a layer moving relative to the background
                      between this frame and the next (what the teacher's loss and eval weight)
    clip.owner        uint8 [T, H, W]: index of the layer that owns each pixel (0 = background)
    clip.point_layer  int64 [N]: the layer each grid track belongs to (0 = background)

    render_without(seed=7, layers=[2], num_frames=33, ...): uint8 [T, H, W, 3], the same clip with object
    layer 2 left out (what it hides)

The scene program (scenes.py) is a function of time, so a seed renders the same first frames at
any num_frames; fps only changes where time is sampled. Randomness comes from one SeedSequence
per seed, split into independent streams for background, objects, camera and effects, so turning
effects off (cfg.effect_prob = 0) leaves the scene itself unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import cv2
import numpy as np

from motionstream.config import VideoConfig
from motionstream.data.effects import EFFECTS, Effect, sample_effects
from motionstream.data.scenes import Layer, Scene, build_scene
from motionstream.tracks.sources import grid_points
from motionstream.tracks.trackset import TrackSet


@dataclass
class WorldConfig:
    """Section `data` of a config preset. Lengths in px are at `reference_height` (scaled with
    the frame height) and speeds in px per frame at `reference_fps`."""

    program_version: int = 1          # bump when the scene program changes: seeds render anew
    grid_size: int = 50               # tracks: grid_size x grid_size points on frame 0
    occlusion_alpha: float = 0.5      # a nearer layer with alpha above this hides a point
    moving_threshold_px: float = 0.25  # per-frame motion relative to background that counts as moving
    reference_fps: float = 16.0
    reference_height: int = 144
    # foreground layers
    min_layers: int = 1
    max_layers: int = 6
    min_object_px: float = 24.0
    max_object_px: float = 96.0
    texture_oversample: float = 1.25  # object textures are this much sharper than their screen size
    edge_softness_px: float = 1.0     # gaussian sigma of the alpha edge
    photo_object_prob: float = 0.5
    object_zoom_min: float = 0.15     # photo crop = this..max fraction of the photo's short side
    object_zoom_max: float = 0.5
    static_object_prob: float = 0.1
    min_speed_px: float = 0.5
    max_speed_px: float = 4.0
    sway_hz: list[float] = field(default_factory=lambda: [0.1, 0.6])
    max_sway_px: float = 6.0
    rotation_prob: float = 0.4
    max_spin_deg: float = 3.0         # per frame
    scale_prob: float = 0.3
    max_scale_pulse: float = 0.2      # log-scale amplitude
    wobble_prob: float = 0.25
    max_wobble_px: float = 2.0
    min_wobble_wavelength_px: float = 24.0
    max_wobble_lipschitz: float = 0.35  # amp * wavenumber bound: keeps the forward map solvable
    enter_prob: float = 0.15          # an object starts outside the frame and walks in
    wrap_margin_px: float = 8.0
    parallax: float = 0.5             # nearest layer moves (1 + parallax) x the background under the camera
    # background
    photo_background_prob: float = 0.6
    background_margin: float = 2.0    # background texture size / frame size (room for pan and zoom-out)
    background_zoom_min: float = 0.35
    background_tries: int = 3         # photo crops tried per background; the most textured is kept
    # camera
    camera_prob: float = 0.6
    max_pan_px: float = 2.0           # per frame
    max_zoom: float = 1.25
    max_roll_deg: float = 6.0
    camera_period_s: list[float] = field(default_factory=lambda: [6.0, 12.0])
    # effects
    effects: list[str] = field(default_factory=lambda: list(EFFECTS))
    effect_prob: float = 0.5
    second_effect_prob: float = 0.15
    effect_start_s: list[float] = field(default_factory=lambda: [0.1, 0.5])
    effect_duration_s: list[float] = field(default_factory=lambda: [0.8, 1.2])
    effect_strength: list[float] = field(default_factory=lambda: [0.4, 0.7])
    flash_width_s: float = 0.12
    flash_strength: list[float] = field(default_factory=lambda: [0.6, 0.85])  # peak blend toward white
    min_particles: int = 80
    max_particles: int = 240
    particle_fall_px: list[float] = field(default_factory=lambda: [1.0, 3.0])  # per frame
    particle_radius_px: float = 1.4
    max_caption_objects: int = 3


@dataclass
class Clip:
    frames: np.ndarray        # uint8 [T, H, W, 3]
    tracks: TrackSet          # [T, G*G] grid on frame 0
    caption: str
    effects: list[str]
    moving_mask: np.ndarray   # bool [T, H, W]
    seed: int
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # cached arrays from shards (latents, ...)
    owner: np.ndarray | None = None        # uint8 [T, H, W] layer index per pixel (0 = background); renders only
    point_layer: np.ndarray | None = None  # int64 [N] layer of each grid track (0 = background); renders only


# ------------------------------------------------------------------------------------ render
def frame_grid(width: int, height: int, grid: int) -> np.ndarray:
    """float64 [grid*grid, 2]: the tracker's grid on a frame (cell centres, row-major), so synthetic
    and real clips are tracked from the same points."""
    return grid_points(0, 0, width, height, rows=grid, cols=grid).astype(np.float64)


def _warp_layer(layer: Layer, scene: Scene, t: float, box: tuple[int, int, int, int],
                pix: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """float32 [y1-y0, x1-x0, C] layer texture resampled onto screen pixels of `box` (bilinear)."""

    x0, y0, x1, y1 = box
    border = cv2.BORDER_REFLECT if layer.is_background else cv2.BORDER_CONSTANT
    if layer.wobble.amp == 0:
        # affine: texture index = inv(A) (screen - trans) + centre - 0.5, screen = index + 0.5 + box origin
        m = layer.screen_from_local(scene.camera, t, scene.screen_centre)
        inv = np.linalg.inv(m[:, :2])
        origin = np.array([x0 + 0.5, y0 + 0.5]) - m[:, 2]
        warp = np.concatenate([inv, (inv @ origin + layer.centre - 0.5)[:, None]], 1)
        return cv2.warpAffine(layer.texture, warp, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=border, borderValue=0)
    px, py = pix[0][y0:y1, x0:x1], pix[1][y0:y1, x0:x1]
    ux, uy = layer.screen_to_texture(scene.camera, t, scene.screen_centre, px, py)
    return cv2.remap(layer.texture, (ux - 0.5).astype(np.float32), (uy - 0.5).astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=border, borderValue=0)


def _layer_box(layer: Layer, scene: Scene, t: float) -> tuple[int, int, int, int] | None:
    if layer.is_background:
        return 0, 0, scene.width, scene.height
    b = layer.screen_bbox(scene.camera, t, scene.screen_centre)
    x0, y0 = max(0, int(np.floor(b[0]))), max(0, int(np.floor(b[1])))
    x1, y1 = min(scene.width, int(np.ceil(b[2])) + 1), min(scene.height, int(np.ceil(b[3])) + 1)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def composite(scene: Scene, t: float, occlusion_alpha: float,
              pix: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(canvas float32 [H, W, 3] premultiplied-over composite in [0, 1], owner uint8 [H, W]):
    owner = index of the nearest layer whose alpha > occlusion_alpha (0 = background)."""

    canvas = np.zeros((scene.height, scene.width, 3), np.float32)
    owner = np.zeros((scene.height, scene.width), np.uint8)
    for index, layer in enumerate(scene.layers):
        box = _layer_box(layer, scene, t)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        rgba = _warp_layer(layer, scene, t, box, pix)
        rgb = cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)  # contiguous copies: numpy is ~7x slower when
        if layer.is_background:                      # it broadcasts a [h, w, 1] alpha over RGB
            canvas[:] = rgb
            continue
        alpha = rgba[..., 3]
        keep = 1 - alpha
        region = canvas[y0:y1, x0:x1]
        region *= cv2.merge([keep, keep, keep])
        region += rgb
        owner[y0:y1, x0:x1][alpha > occlusion_alpha] = index
    return canvas, owner


def alpha_at(layer: Layer, scene: Scene, t: float, points: np.ndarray) -> np.ndarray:
    """float32 [N] the layer's alpha at screen points [N, 2], sampled like the renderer samples it."""

    ux, uy = layer.screen_to_texture(scene.camera, t, scene.screen_centre, points[:, 0], points[:, 1])
    alpha = np.ascontiguousarray(layer.texture[..., 3])
    return cv2.remap(alpha, (ux - 0.5).astype(np.float32)[None], (uy - 0.5).astype(np.float32)[None],
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)[0]


def scene_tracks(scene: Scene, times: np.ndarray, grid: int, occlusion_alpha: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tracks float32 [T, N, 2], visibility bool [T, N], point_layer int [N]) for the grid on
    frame times[0]. A point belongs to the nearest layer with alpha > occlusion_alpha there; its
    track is that layer's forward map of its texture coordinate."""
    pts0 = frame_grid(scene.width, scene.height, grid)
    t0 = float(times[0])
    point_layer = np.zeros(len(pts0), np.int64)
    for index, layer in enumerate(scene.layers[1:], 1):
        point_layer[alpha_at(layer, scene, t0, pts0) > occlusion_alpha] = index
    tex = np.zeros_like(pts0)
    for index, layer in enumerate(scene.layers):
        sel = point_layer == index
        if sel.any():
            tex[sel] = np.stack(layer.screen_to_texture(scene.camera, t0, scene.screen_centre, pts0[sel, 0], pts0[sel, 1]), 1)
    tracks = np.zeros((len(times), len(pts0), 2), np.float64)
    visible = np.zeros((len(times), len(pts0)), bool)
    for i, t in enumerate(times):
        for index, layer in enumerate(scene.layers):
            sel = point_layer == index
            if sel.any():
                tracks[i, sel] = layer.texture_to_screen(scene.camera, float(t), scene.screen_centre, tex[sel])
        pos = tracks[i]
        vis = (pos[:, 0] >= 0) & (pos[:, 0] < scene.width) & (pos[:, 1] >= 0) & (pos[:, 1] < scene.height)
        for index, layer in enumerate(scene.layers[1:], 1):
            behind = vis & (point_layer < index)
            if behind.any():
                vis[behind] &= alpha_at(layer, scene, float(t), pos[behind]) <= occlusion_alpha
        visible[i] = vis
    return tracks.astype(np.float32), visible, point_layer


def moving_layers(scene: Scene, t: float, dt: float, threshold_px: float) -> np.ndarray:
    """bool [L]: layer moves more than threshold_px relative to the background between t and t+dt
    (background entry always False). Measured on the rigid part of the motion at the layer's centre
    and four inner points: a screen point x on layer L goes to P(t+dt) P(t)^-1 x, the background
    under it to B(t+dt) B(t)^-1 x; the wobble (< amp * omega * dt) is left out."""
    cam, c = scene.camera, scene.screen_centre

    def homogeneous(layer: Layer, time: float) -> np.ndarray:
        return np.vstack([layer.screen_from_local(cam, time, c), [0.0, 0.0, 1.0]])

    bg = scene.layers[0]
    bg_step = homogeneous(bg, t + dt) @ np.linalg.inv(homogeneous(bg, t))
    out = np.zeros(len(scene.layers), bool)
    for index, layer in enumerate(scene.layers[1:], 1):
        h, w = layer.texture.shape[:2]
        now = homogeneous(layer, t)
        step = homogeneous(layer, t + dt) @ np.linalg.inv(now) - bg_step
        q = np.array([[0, 0, 1], [-w / 4, -h / 4, 1], [w / 4, -h / 4, 1], [w / 4, h / 4, 1], [-w / 4, h / 4, 1]])
        rel = (step @ now @ q.T)[:2]
        out[index] = np.sqrt((rel ** 2).sum(0)).max() > threshold_px
    return out


def pixel_centres(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) float64 [H, W] continuous coordinates of pixel centres."""
    return np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)


def render_frames(scene: Scene, effects: list[Effect], times: np.ndarray, cfg: WorldConfig, dt: float
                  ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (frame uint8 [H, W, 3], moving bool [H, W], owner uint8 [H, W]) for each time in `times`."""
    pix = pixel_centres(scene.width, scene.height)
    for t in times:
        canvas, owner = composite(scene, float(t), cfg.occlusion_alpha, pix)
        for effect in effects:
            effect.apply(canvas, float(t))
        frame = (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)
        moving = moving_layers(scene, float(t), dt, cfg.moving_threshold_px)[owner]
        yield frame, moving, owner


def caption_for(scene: Scene, clauses: list[str], effects: list[Effect], max_objects: int) -> str:
    """One sentence from the scene program: objects (nearest first), background, camera, effects."""
    shown = clauses[:max_objects]
    objects = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
    extra = len(clauses) - len(shown)
    if extra:
        objects += f", and {extra} more object{'s' if extra > 1 else ''} move{'s' if extra == 1 else ''}"
    text = f"{objects} over {scene.background_name}"
    if scene.camera_words:
        text += f", while {scene.camera_words}"
    if effects:
        text += "; " + " and ".join(e.phrase for e in effects)
    return text + "."


def build_world(seed: int, width: int, height: int, cfg: WorldConfig) -> tuple[Scene, list[Effect], str]:
    """(scene, effects, caption) for a seed: everything about a clip except its length and fps."""
    scene, clauses = build_scene(seed, cfg, width, height)
    ss = np.random.SeedSequence([cfg.program_version, int(seed), 1])  # effects stream, separate from the scene's
    effects = sample_effects(np.random.default_rng(ss), cfg, width, height, height / cfg.reference_height)
    return scene, effects, caption_for(scene, clauses, effects, cfg.max_caption_objects)


DEFAULT_VIDEO = VideoConfig()     # clip format when none is given: the tiny-cpu preset's


def render_clip(seed: int, num_frames: int = 33, width: int = DEFAULT_VIDEO.width, height: int = DEFAULT_VIDEO.height,
                fps: float = DEFAULT_VIDEO.fps, cfg: WorldConfig | None = None) -> Clip:
    """Render clip `seed` (deterministic: same arguments -> identical bytes; a longer clip starts
    with the same frames). See the module docstring for what a Clip holds."""
    cfg = cfg or WorldConfig()
    if num_frames < 1 or width < 8 or height < 8 or fps <= 0:
        raise ValueError(f"bad clip size: {num_frames} frames of {width}x{height} at {fps} fps")
    scene, effects, caption = build_world(seed, width, height, cfg)
    times = np.arange(num_frames) / float(fps)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    moving = np.empty((num_frames, height, width), bool)
    owner = np.empty((num_frames, height, width), np.uint8)
    for i, (frame, mask, owners) in enumerate(render_frames(scene, effects, times, cfg, 1.0 / fps)):
        frames[i], moving[i], owner[i] = frame, mask, owners
    tracks, visible, point_layer = scene_tracks(scene, times, cfg.grid_size, cfg.occlusion_alpha)
    trackset = TrackSet(tracks=tracks, visibility=visible, width=width, height=height, fps=float(fps))
    return Clip(frames=frames, tracks=trackset, caption=caption, effects=[e.name for e in effects],
                moving_mask=moving, seed=int(seed), owner=owner, point_layer=point_layer)


def render_without(seed: int, layers: Sequence[int], num_frames: int = 33, width: int = DEFAULT_VIDEO.width,
                   height: int = DEFAULT_VIDEO.height, fps: float = DEFAULT_VIDEO.fps,
                   cfg: WorldConfig | None = None) -> np.ndarray:
    """uint8 [T, H, W, 3]: clip `seed` as render_clip draws it, with the object layers `layers` (indices
    >= 1, as in Clip.owner) left out: what those objects hide, frame by frame."""
    cfg = cfg or WorldConfig()
    scene, effects, _ = build_world(seed, width, height, cfg)
    if any(not 1 <= layer < len(scene.layers) for layer in layers):
        raise ValueError(f"layers {list(layers)}: clip {seed} has object layers 1..{len(scene.layers) - 1}")
    scene = replace(scene, layers=[layer for i, layer in enumerate(scene.layers) if i not in set(layers)])
    times = np.arange(num_frames) / float(fps)
    return np.stack([frame for frame, _, _ in render_frames(scene, effects, times, cfg, 1.0 / fps)])
