"""Scene programs for the synthetic world: textures, soft shapes, layer and camera motion.

A scene is a background layer plus 1-6 textured foreground layers (back to front) and a camera.
Every layer maps its own texture coordinates to the screen by a transform that is a pure function
of time t (seconds), so any frame of any length of clip can be rendered on its own and the track of
a texture point is exactly the layer's forward transform of it.

Coordinates (the TrackSet convention): continuous pixel (x, y), (0, 0) = top-left corner of the
top-left pixel; pixel (i, j) has its centre at (i + 0.5, j + 0.5). Textures use the same
convention in their own pixels. Textures are float32 [h, w, 4] in [0, 1], RGB premultiplied by
alpha (so bilinear sampling never bleeds the transparent colour into soft edges).

Forward transform of layer L at time t, for a texture point u (texture px):
    q  = u - centre                          centred texture coords
    q' solves q = q' + wobble(q', t)         (mild non-rigid motion; contraction, see Wobble)
    world  = pos(t) + s(t) R(theta(t)) q'
    screen = z_L(t) R(roll(t)) (world - view_centre_L(t)) + screen_centre
Rendering uses the inverse (screen -> q' is affine, q = q' + wobble(q') is explicit), which is
why the wobble lives on that side: inverse warps are exact and cheap, and tracks solve the small
fixed point instead.
"""

from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np
import skimage.data

if TYPE_CHECKING:  # pragma: no cover
    from motionstream.data.synth import WorldConfig

# ------------------------------------------------------------------------------------ photos
# skimage.data images that ship with scikit-image (no download). Colour photos are used as they
# are; grey ones are colourised with a random two-colour gradient map.
COLOUR_PHOTOS = {
    "astronaut": "an astronaut",
    "coffee": "a coffee cup",
    "chelsea": "a cat",
    "rocket": "a rocket launch",
    "immunohistochemistry": "stained tissue",
    "stereo_motorcycle": "a motorcycle",
}
GREY_PHOTOS = {
    "brick": "a brick wall",
    "grass": "grass",
    "gravel": "gravel",
    "coins": "old coins",
    "camera": "a photographer",
    "clock": "a clock",
    "text": "printed text",
}
PROCEDURAL_TEXTURES = ("noise", "stripes", "checker", "dots", "marble")
TEXTURE_WORDS = {"noise": "mottled", "stripes": "striped", "checker": "checkered", "dots": "spotted",
                 "marble": "marbled", "photo": "photo-textured"}
SHAPES = ("disc", "ellipse", "square", "rectangle", "triangle", "pentagon", "hexagon", "star", "blob")

# colour names for captions: (name, hue in degrees)
HUES = (("red", 0), ("orange", 30), ("yellow", 58), ("green", 120), ("teal", 170), ("blue", 220),
        ("purple", 275), ("pink", 325))
WOBBLE_FIXED_POINT_ITERS = 60  # max fixed-point iterations for the forward wobble (contraction <= 0.35)
WOBBLE_TOLERANCE_PX = 1e-6     # stop when an iteration moves no point by more than this (texture px)
MATRIX_CACHE_SIZE = 64         # memoised screen_from_local matrices per layer


@functools.lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """float32 [h, w, 3] in [0, 1] (grey photos repeated to 3 channels), cached per process."""

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo pairs
        img = img[0]
    img = np.asarray(img)
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    img = img[..., :3].astype(np.float32) / 255.0
    img.setflags(write=False)
    return img


# ---------------------------------------------------------------------------------- textures
def _random_colour(rng: np.random.Generator, sat: tuple[float, float] = (0.5, 1.0),
                   val: tuple[float, float] = (0.35, 1.0)) -> np.ndarray:
    """float32 [3] RGB in [0, 1] from a random hue / saturation / value."""

    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val)), np.float32)


def _value_noise(rng: np.random.Generator, h: int, w: int, octaves: int = 4, base_cells: int = 4) -> np.ndarray:
    """float32 [h, w] in [0, 1]: smooth multi-octave value noise (coarse random grids, upsampled)."""

    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = base_cells * 2 ** o
        grid = rng.random((max(2, cells * h // max(h, w)) + 1, max(2, cells * w // max(h, w)) + 1)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.55
    out /= total
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


def _gradient_map(lum: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """[h, w] in [0, 1] -> [h, w, 3] blending colour c0 (dark) to c1 (light)."""
    return c0 + lum[..., None] * (c1 - c0)


def procedural_texture(rng: np.random.Generator, kind: str, h: int, w: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(rgb float32 [h, w, 3] in [0, 1], main colour [3]). `scale` ~ pixels per pattern period / 16.

    Every pattern carries fine noise so that points on it are trackable, not just edges.
    """
    c0, c1 = _random_colour(rng), _random_colour(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    along = xx * math.cos(angle) + yy * math.sin(angle)
    period = 16.0 * scale * rng.uniform(0.5, 1.5)
    if kind == "noise":
        lum = _value_noise(rng, h, w, base_cells=int(rng.integers(3, 7)))
    elif kind == "stripes":
        lum = 0.5 + 0.5 * np.sin(2 * math.pi * along / period)
        lum = np.clip(lum * 1.6 - 0.3, 0, 1)
    elif kind == "checker":
        across = -xx * math.sin(angle) + yy * math.cos(angle)
        lum = ((np.floor(along / period) + np.floor(across / period)) % 2).astype(np.float32)
    elif kind == "dots":
        across = -xx * math.sin(angle) + yy * math.cos(angle)
        d = np.hypot((along % period) - period / 2, (across % period) - period / 2)
        lum = np.clip((period * 0.3 - d) / 1.5, 0, 1)
    elif kind == "marble":
        turb = _value_noise(rng, h, w, base_cells=3)
        lum = 0.5 + 0.5 * np.sin(2 * math.pi * (along / (period * 2) + 3.0 * turb))
    else:
        raise ValueError(f"unknown procedural texture {kind!r}; known: {PROCEDURAL_TEXTURES}")
    grain = _value_noise(rng, h, w, octaves=2, base_cells=max(8, int(max(h, w) / 6)))
    lum = np.clip(0.8 * lum + 0.2 * grain, 0, 1).astype(np.float32)
    rgb = _gradient_map(lum, c0 * 0.35, c1)
    return rgb.astype(np.float32), (c0 * 0.35 + c1) / 2


def photo_crop(rng: np.random.Generator, name: str, h: int, w: int, zoom: tuple[float, float]) -> np.ndarray:
    """float32 [h, w, 3]: a random crop of photo `name` covering `zoom` of its short side, resized
    to (h, w); random horizontal flip. Grey photos are colourised with a random gradient map."""

    photo = load_photo(name)
    ph, pw = photo.shape[:2]
    frac = rng.uniform(*zoom)
    ch = min(ph, max(8, int(round(min(ph, pw * h / w) * frac))))
    cw = min(pw, max(8, int(round(ch * w / h))))
    ch = min(ph, max(8, int(round(cw * h / w))))
    y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = photo[y0:y0 + ch, x0:x0 + cw]
    interp = cv2.INTER_AREA if ch > h else cv2.INTER_LINEAR
    out = cv2.resize(crop, (w, h), interpolation=interp)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if name in GREY_PHOTOS:
        out = _gradient_map(out[..., 0], _random_colour(rng, val=(0.1, 0.4)), _random_colour(rng, sat=(0.2, 0.7), val=(0.7, 1.0)))
    return np.ascontiguousarray(out, np.float32)


def texture_energy(rgb: np.ndarray) -> float:
    """Mean absolute luminance gradient of an image in [0, 1] (how much trackable detail it has)."""
    lum = rgb.mean(-1)
    return float(np.abs(np.diff(lum, axis=0)).mean() + np.abs(np.diff(lum, axis=1)).mean())


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def colour_name(rgb: np.ndarray) -> str:
    """Caption word for an RGB colour in [0, 1] (grey / white / black for unsaturated ones)."""

    h, s, v = colorsys.rgb_to_hsv(*[float(c) for c in rgb])
    if v < 0.2:
        return "black"
    if s < 0.2:
        return "white" if v > 0.8 else "grey"
    deg = h * 360
    return min(HUES, key=lambda hv: min(abs(deg - hv[1]), 360 - abs(deg - hv[1])))[0]


# ------------------------------------------------------------------------------------ shapes
def shape_alpha(rng: np.random.Generator, kind: str, size: int, pad: int, softness: float) -> np.ndarray:
    """float32 [size + 2 pad, size + 2 pad] in [0, 1]: a soft-edged shape filling about `size` px.

    Elongated shapes get a random aspect ratio; the blur of `softness` px makes the edge soft.
    """

    n = size + 2 * pad
    c = n / 2.0
    r = size / 2.0
    mask = np.zeros((n, n), np.float32)
    shift = 4  # sub-pixel vertex precision for cv2 drawing
    k = 1 << shift

    def poly(pts: np.ndarray) -> None:
        cv2.fillPoly(mask, [np.round(pts * k).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=shift)

    rot = rng.uniform(0, 2 * math.pi)
    if kind == "disc":
        cv2.circle(mask, (int(c * k), int(c * k)), int(r * k), 1.0, -1, cv2.LINE_AA, shift)
    elif kind in ("ellipse", "rectangle", "square"):
        aspect = 1.0 if kind == "square" else rng.uniform(0.45, 0.8)
        if kind == "ellipse":
            cv2.ellipse(mask, (int(c * k), int(c * k)), (int(r * k), int(r * aspect * k)),
                        math.degrees(rot), 0, 360, 1.0, -1, cv2.LINE_AA, shift)
        else:
            half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * [r * 0.8, r * 0.8 * aspect]
            rmat = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]], np.float32)
            poly(half @ rmat.T + c)
    elif kind in ("triangle", "pentagon", "hexagon", "star"):
        sides = {"triangle": 3, "pentagon": 5, "hexagon": 6, "star": 5}[kind]
        if kind == "star":
            ang = rot + np.arange(2 * sides) * math.pi / sides
            rad = np.where(np.arange(2 * sides) % 2 == 0, r, r * rng.uniform(0.4, 0.55))
        else:
            ang = rot + np.arange(sides) * 2 * math.pi / sides
            rad = np.full(sides, r)
        poly(np.stack([c + rad * np.cos(ang), c + rad * np.sin(ang)], 1))
    elif kind == "blob":
        ang = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        rad = np.ones_like(ang)
        for harmonic in range(2, 5):
            rad += rng.uniform(0, 0.25 / harmonic * 2) * np.cos(harmonic * ang + rng.uniform(0, 2 * math.pi))
        rad = r * rad / rad.max()
        poly(np.stack([c + rad * np.cos(ang), c + rad * np.sin(ang)], 1))
    else:
        raise ValueError(f"unknown shape {kind!r}; known: {SHAPES}")
    if softness > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), softness)
    return np.clip(mask, 0, 1)


# ------------------------------------------------------------------------------------ motion
def _sinusoids(t: float | np.ndarray, amp: np.ndarray, omega: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """sum_k amp_k (sin(omega_k t + phase_k) - sin(phase_k)): smooth, bounded, 0 at t = 0.
    amp [K, D] -> [D] (scalar t)."""
    return (amp * (np.sin(omega[:, None] * t + phase[:, None]) - np.sin(phase[:, None]))).sum(0)


@dataclass
class Camera:
    """Global camera program. pan (px/s drift + sway), zoom (log, sinusoidal so it stays bounded)
    and roll (radians) are all 0 at t = 0, so frame 0 shows world = screen."""

    pan_velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))   # [2] px/s
    pan_amp: np.ndarray = field(default_factory=lambda: np.zeros((1, 2)))   # [K, 2] px
    pan_omega: np.ndarray = field(default_factory=lambda: np.ones(1))      # [K] rad/s
    pan_phase: np.ndarray = field(default_factory=lambda: np.zeros(1))     # [K]
    log_zoom_amp: float = 0.0      # zoom(t) = exp(log_zoom_amp sin(zoom_omega t))
    zoom_omega: float = 1.0
    roll_amp: float = 0.0          # roll(t) = roll_amp sin(roll_omega t)  (radians)
    roll_omega: float = 1.0

    def pan(self, t: float) -> np.ndarray:
        return self.pan_velocity * t + _sinusoids(t, self.pan_amp, self.pan_omega, self.pan_phase)

    def log_zoom(self, t: float) -> float:
        return self.log_zoom_amp * math.sin(self.zoom_omega * t)

    def roll(self, t: float) -> float:
        return self.roll_amp * math.sin(self.roll_omega * t)


@dataclass
class Wobble:
    """Mild non-rigid motion, applied on the inverse side: q = q' + amp * sin(k q'_other + w t + phase).

    amp * k <= 0.35 keeps q' -> q a contraction-perturbed identity, so the forward fixed point
    q' = q - wobble(q') converges geometrically (rate <= 0.35).
    """

    amp: float = 0.0          # texture px
    wavenumber: float = 0.0   # rad / texture px
    omega: float = 0.0        # rad/s
    phase: tuple[float, float] = (0.0, 0.0)

    def offset(self, qx: np.ndarray, qy: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        if self.amp == 0:
            return np.zeros_like(qx), np.zeros_like(qy)
        return (self.amp * np.sin(self.wavenumber * qy + self.omega * t + self.phase[0]),
                self.amp * np.sin(self.wavenumber * qx + self.omega * t + self.phase[1]))


@dataclass
class Layer:
    """One layer: an RGBA texture and its motion program (a function of t in seconds).

    texture  float32 [h, w, 4] in [0, 1], RGB premultiplied by alpha.
    pos0 / velocity / sway_*   world position of the texture centre: pos0 + velocity t + sway(t),
                               wrapped into a box around the layer's view centre (half extents
                               `wrap_half`, None = no wrap) so objects leave and come back in
                               long clips, jumping only while out of view.
    scale0, scale_pulse, scale_omega, scale_phase   s(t) = scale0 exp(pulse (sin(w t + ph) - sin ph))
    angle0, spin, ...          theta(t) = angle0 + spin t (radians)
    parallax                   camera pan/zoom are multiplied by this (background 1, nearer > 1)
    """

    texture: np.ndarray
    pos0: np.ndarray
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    sway_amp: np.ndarray = field(default_factory=lambda: np.zeros((1, 2)))
    sway_omega: np.ndarray = field(default_factory=lambda: np.ones(1))
    sway_phase: np.ndarray = field(default_factory=lambda: np.zeros(1))
    scale0: float = 1.0
    scale_pulse: float = 0.0
    scale_omega: float = 0.0
    scale_phase: float = 0.0
    angle0: float = 0.0
    spin: float = 0.0
    wobble: Wobble = field(default_factory=Wobble)
    parallax: float = 1.0
    wrap_half: np.ndarray | None = None
    is_background: bool = False
    # caption material
    name: str = ""          # e.g. "a striped red disc"
    colour: str = ""
    enters_from: str = ""   # "the left", "the top right", ... when it starts outside the frame
    _matrix_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def centre(self) -> np.ndarray:
        """Texture centre in texture px (continuous coords)."""
        h, w = self.texture.shape[:2]
        return np.array([w / 2.0, h / 2.0])

    def view_centre(self, camera: Camera, t: float, screen_centre: np.ndarray) -> np.ndarray:
        """The world point this layer shows at the screen centre (pan scaled by parallax)."""
        return screen_centre + self.parallax * camera.pan(t)

    def raw_position(self, t: float) -> np.ndarray:
        return self.pos0 + self.velocity * t + _sinusoids(t, self.sway_amp, self.sway_omega, self.sway_phase)

    def position(self, camera: Camera, t: float, screen_centre: np.ndarray) -> np.ndarray:
        pos = self.raw_position(t)
        if self.wrap_half is None:
            return pos
        vc = self.view_centre(camera, t, screen_centre)
        rel = pos - vc
        span = 2 * self.wrap_half
        return vc + (rel + self.wrap_half) % span - self.wrap_half

    def scale(self, t: float) -> float:
        return self.scale0 * math.exp(self.scale_pulse * (math.sin(self.scale_omega * t + self.scale_phase)
                                                          - math.sin(self.scale_phase)))

    def angle(self, t: float) -> float:
        return self.angle0 + self.spin * t

    def screen_from_local(self, camera: Camera, t: float, screen_centre: np.ndarray) -> np.ndarray:
        """float64 [2, 3] affine: centred pre-wobble texture coords q' -> screen px.

        Memoised for the last few times (rendering, tracks and the motion mask all ask for the
        same t); the key includes the camera and screen centre so a changed scene never hits."""
        key = (id(camera), float(t), float(screen_centre[0]), float(screen_centre[1]))
        cached = self._matrix_cache.get(key)
        if cached is None:
            if len(self._matrix_cache) >= MATRIX_CACHE_SIZE:
                self._matrix_cache.clear()
            cached = self._matrix_cache[key] = self._screen_from_local(camera, t, screen_centre)
        return cached

    def _screen_from_local(self, camera: Camera, t: float, screen_centre: np.ndarray) -> np.ndarray:
        zoom = math.exp(self.parallax * camera.log_zoom(t))
        rot = self.angle(t) + camera.roll(t)
        roll = camera.roll(t)
        lin = zoom * self.scale(t) * np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]])
        rc = zoom * np.array([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
        trans = rc @ (self.position(camera, t, screen_centre) - self.view_centre(camera, t, screen_centre)) + screen_centre
        return np.concatenate([lin, trans[:, None]], 1)

    # ---------------------------------------------------------------- point maps
    def screen_to_texture(self, camera: Camera, t: float, screen_centre: np.ndarray,
                          x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse map: screen points (continuous px) -> texture coords u (continuous texture px)."""
        m = self.screen_from_local(camera, t, screen_centre)
        inv = np.linalg.inv(m[:, :2])
        dx, dy = x - m[0, 2], y - m[1, 2]
        qx = inv[0, 0] * dx + inv[0, 1] * dy
        qy = inv[1, 0] * dx + inv[1, 1] * dy
        ox, oy = self.wobble.offset(qx, qy, t)
        c = self.centre
        return qx + ox + c[0], qy + oy + c[1]

    def texture_to_screen(self, camera: Camera, t: float, screen_centre: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Forward map: texture points u float [N, 2] -> screen px [N, 2] (solves the wobble)."""
        q = u - self.centre
        qp = q.copy()
        if self.wobble.amp:
            for _ in range(WOBBLE_FIXED_POINT_ITERS):
                ox, oy = self.wobble.offset(qp[:, 0], qp[:, 1], t)
                new = q - np.stack([ox, oy], 1)
                done = np.abs(new - qp).max() < WOBBLE_TOLERANCE_PX
                qp = new
                if done:
                    break
        m = self.screen_from_local(camera, t, screen_centre)
        return qp @ m[:, :2].T + m[:, 2]

    def screen_bbox(self, camera: Camera, t: float, screen_centre: np.ndarray) -> np.ndarray:
        """[x0, y0, x1, y1] screen box that contains the whole texture at time t."""
        h, w = self.texture.shape[:2]
        a = self.wobble.amp
        corners = np.array([[-a, -a], [w + a, -a], [w + a, h + a], [-a, h + a]], np.float64) - self.centre
        m = self.screen_from_local(camera, t, screen_centre)
        pts = corners @ m[:, :2].T + m[:, 2]
        return np.concatenate([pts.min(0), pts.max(0)])


@dataclass
class Scene:
    """Everything needed to render any frame: layers[0] is the background, then back to front."""

    width: int
    height: int
    layers: list[Layer]
    camera: Camera
    background_name: str
    camera_words: str   # caption clause for the camera ("" when still)

    @property
    def screen_centre(self) -> np.ndarray:
        return np.array([self.width / 2.0, self.height / 2.0])


# ------------------------------------------------------------------------------ scene builder
def _rgba(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Premultiplied float32 [h, w, 4]."""
    return np.ascontiguousarray(np.concatenate([rgb * alpha[..., None], alpha[..., None]], -1), np.float32)


def build_background(rng: np.random.Generator, cfg: "WorldConfig", width: int, height: int) -> tuple[Layer, str]:
    """A background layer bigger than the frame (cfg.background_margin) and its caption phrase."""
    bw = int(math.ceil(width * cfg.background_margin))
    bh = int(math.ceil(height * cfg.background_margin))
    if rng.random() < cfg.photo_background_prob:
        names = list(COLOUR_PHOTOS) + list(GREY_PHOTOS)
        name = names[int(rng.integers(len(names)))]
        # a few candidate crops, keep the most textured: flat sky or wall gives untrackable points
        crops = [photo_crop(rng, name, bh, bw, (cfg.background_zoom_min, 1.0)) for _ in range(cfg.background_tries)]
        rgb = max(crops, key=texture_energy)
        words = (COLOUR_PHOTOS | GREY_PHOTOS)[name]
        phrase = f"a photo of {words}" if name in COLOUR_PHOTOS else words
    else:
        kind = PROCEDURAL_TEXTURES[int(rng.integers(len(PROCEDURAL_TEXTURES)))]
        rgb, main = procedural_texture(rng, kind, bh, bw, scale=rng.uniform(1.0, 3.0))
        phrase = f"a {TEXTURE_WORDS[kind]} {colour_name(main)} background"
    layer = Layer(texture=_rgba(rgb, np.ones(rgb.shape[:2], np.float32)),
                  pos0=np.array([width / 2.0, height / 2.0]), is_background=True, parallax=1.0,
                  name=phrase, colour="")
    return layer, phrase


def build_object(rng: np.random.Generator, cfg: "WorldConfig", width: int, height: int, depth: float,
                 px: float, fps_ref: float) -> Layer:
    """One foreground layer. depth in (0, 1]: 1 = nearest (most parallax). px = size scale
    (frame height / reference height); fps_ref converts per-frame speeds to per-second."""
    size = rng.uniform(cfg.min_object_px, cfg.max_object_px) * px
    tex_size = int(math.ceil(size * cfg.texture_oversample))
    softness = cfg.edge_softness_px * cfg.texture_oversample
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    pad = int(math.ceil(3 * softness)) + 2
    alpha = shape_alpha(rng, shape, tex_size, pad, softness)
    n = alpha.shape[0]
    if rng.random() < cfg.photo_object_prob:
        names = list(COLOUR_PHOTOS) + list(GREY_PHOTOS)
        pname = names[int(rng.integers(len(names)))]
        rgb = photo_crop(rng, pname, n, n, (cfg.object_zoom_min, cfg.object_zoom_max))
        main = (rgb * alpha[..., None]).sum((0, 1)) / max(alpha.sum(), 1e-6)
        colour = colour_name(main)
        if pname in COLOUR_PHOTOS and rng.random() < 0.5:
            name = f"a cut-out of {COLOUR_PHOTOS[pname]} shaped like {article(shape)} {shape}"
        else:
            name = f"a photo-textured {colour} {shape}"
    else:
        kind = PROCEDURAL_TEXTURES[int(rng.integers(len(PROCEDURAL_TEXTURES)))]
        rgb, main = procedural_texture(rng, kind, n, n, scale=max(0.4, size / 64))
        colour = colour_name(main)
        name = f"a {TEXTURE_WORDS[kind]} {colour} {shape}"

    # --- motion (speeds drawn per reference frame, stored per second)
    static = rng.random() < cfg.static_object_prob
    speed = 0.0 if static else rng.uniform(cfg.min_speed_px, cfg.max_speed_px) * px
    heading = rng.uniform(0, 2 * math.pi)
    velocity = speed * fps_ref * np.array([math.cos(heading), math.sin(heading)])
    k = 2
    sway_omega = rng.uniform(*cfg.sway_hz) * 2 * math.pi * np.ones(k) * rng.uniform(0.6, 1.4, k)
    sway_amp = (rng.uniform(0, cfg.max_sway_px, (k, 2)) * px) * (0.0 if static else 1.0)
    sway_phase = rng.uniform(0, 2 * math.pi, k)
    scale0 = 1.0 / cfg.texture_oversample
    spin = 0.0
    if not static and rng.random() < cfg.rotation_prob:
        spin = math.radians(rng.uniform(-cfg.max_spin_deg, cfg.max_spin_deg)) * fps_ref
    pulse = rng.uniform(0, cfg.max_scale_pulse) if (not static and rng.random() < cfg.scale_prob) else 0.0
    wobble = Wobble()
    if not static and rng.random() < cfg.wobble_prob:
        wavelength = rng.uniform(cfg.min_wobble_wavelength_px, 2 * cfg.min_wobble_wavelength_px) * px * cfg.texture_oversample
        wn = 2 * math.pi / wavelength
        amp = min(rng.uniform(0.3, 1.0) * cfg.max_wobble_px * px * cfg.texture_oversample, cfg.max_wobble_lipschitz / wn)
        wobble = Wobble(amp=amp, wavenumber=wn, omega=rng.uniform(*cfg.sway_hz) * 2 * math.pi * 2,
                        phase=(rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)))

    # --- placement at t = 0: mostly inside the frame; some start outside and enter
    radius = size / 2 * math.exp(2 * cfg.max_scale_pulse) + wobble.amp * scale0
    enters_from = ""
    if not static and rng.random() < cfg.enter_prob and speed > 0:
        # start just outside, on the side the heading comes from, so the object walks in
        back = -np.array([math.cos(heading), math.sin(heading)])
        centre = np.array([width / 2.0, height / 2.0])
        dist = abs(np.array([width / 2.0 + radius * 0.6, height / 2.0 + radius * 0.6]) / np.maximum(np.abs(back), 1e-3)).min()
        pos0 = centre + back * dist + rng.uniform(-0.25, 0.25, 2) * [width, height] * (1 - np.abs(back))
        enters_from = "the " + _direction_words(back).replace("up", "top").replace("down", "bottom").replace(" and ", " ")
    else:
        pos0 = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height])
    parallax = 1.0 + cfg.parallax * depth
    # wrap box: view half extents at the widest zoom-out and roll, plus the object's radius
    zmin = math.exp(-parallax * math.log(cfg.max_zoom))
    roll = math.radians(cfg.max_roll_deg)
    half_view = np.array([width / 2 * math.cos(roll) + height / 2 * math.sin(roll),
                          width / 2 * math.sin(roll) + height / 2 * math.cos(roll)]) / zmin
    wrap_half = half_view + radius + cfg.wrap_margin_px * px
    return Layer(texture=_rgba(rgb, alpha), pos0=pos0, velocity=velocity, sway_amp=sway_amp,
                 sway_omega=sway_omega, sway_phase=sway_phase, scale0=scale0, scale_pulse=pulse,
                 scale_omega=rng.uniform(*cfg.sway_hz) * 2 * math.pi, scale_phase=rng.uniform(0, 2 * math.pi),
                 angle0=0.0, spin=spin, wobble=wobble, parallax=parallax, wrap_half=wrap_half,
                 name=name, colour=colour, enters_from=enters_from)


def build_camera(rng: np.random.Generator, cfg: "WorldConfig", px: float, fps_ref: float) -> tuple[Camera, str]:
    """A camera program and its caption clause ("" for a still camera)."""
    cam = Camera()
    words: list[str] = []
    if rng.random() >= cfg.camera_prob:
        return cam, ""
    moves = [m for m in ("pan", "zoom", "roll") if rng.random() < 0.5] or ["pan"]
    if "pan" in moves:
        heading = rng.uniform(0, 2 * math.pi)
        speed = rng.uniform(0.3, 1.0) * cfg.max_pan_px * px * fps_ref
        cam.pan_velocity = speed * np.array([math.cos(heading), math.sin(heading)])
        # the camera moving right makes the scene slide left: name the camera's direction
        words.append(f"pans {_direction_words(cam.pan_velocity)}")
    if "zoom" in moves:
        sign = 1 if rng.random() < 0.5 else -1
        cam.log_zoom_amp = sign * math.log(cfg.max_zoom) * rng.uniform(0.6, 1.0)
        cam.zoom_omega = 2 * math.pi / rng.uniform(*cfg.camera_period_s)
        words.append("zooms in" if sign > 0 else "zooms out")
    if "roll" in moves:
        sign = 1 if rng.random() < 0.5 else -1
        cam.roll_amp = sign * math.radians(cfg.max_roll_deg) * rng.uniform(0.6, 1.0)
        cam.roll_omega = 2 * math.pi / rng.uniform(*cfg.camera_period_s)
        words.append("rotates clockwise" if sign > 0 else "rotates counter-clockwise")
    return cam, "the camera " + " and ".join(words)


def _direction_words(v: np.ndarray) -> str:
    """'right', 'up and left', ... for a screen vector (y down)."""
    x, y = float(v[0]), float(v[1])
    horiz = "right" if x > 0 else "left"
    vert = "down" if y > 0 else "up"
    if abs(x) > 2.4 * abs(y):
        return horiz
    if abs(y) > 2.4 * abs(x):
        return vert
    return f"{vert} and {horiz}"


def motion_words(layer: Layer, px: float, fps_ref: float, cfg: "WorldConfig") -> str:
    """Caption verb phrase for an object's own motion ('slides right and spins')."""
    parts = [f"comes in from {layer.enters_from}"] if layer.enters_from else []
    speed = float(np.linalg.norm(layer.velocity)) / fps_ref / px
    if speed < cfg.min_speed_px * 0.5:
        parts.append("stays in place")
    else:
        verb = "drifts" if speed < 1.5 else ("slides" if speed < 3 else "moves quickly")
        parts.append(f"{verb} {_direction_words(layer.velocity)}")
    if abs(layer.spin) > 0:
        parts.append("spins " + ("clockwise" if layer.spin > 0 else "counter-clockwise"))
    if layer.scale_pulse > 0.05:
        parts.append("pulses in size")
    if layer.wobble.amp > 0:
        parts.append("wobbles")
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def build_scene(seed: int, cfg: "WorldConfig", width: int, height: int) -> tuple[Scene, list[str]]:
    """The scene program for `seed` (independent of clip length and fps) and the caption parts
    describing its objects (front to back, the most visible first)."""
    ss = np.random.SeedSequence([cfg.program_version, int(seed)])
    rng_bg, rng_obj, rng_cam = (np.random.default_rng(s) for s in ss.spawn(3))
    px = height / cfg.reference_height
    fps_ref = cfg.reference_fps
    background, bg_phrase = build_background(rng_bg, cfg, width, height)
    n_obj = int(rng_obj.integers(cfg.min_layers, cfg.max_layers + 1))
    objects = [build_object(rng_obj, cfg, width, height, (i + 1) / n_obj, px, fps_ref) for i in range(n_obj)]
    camera, cam_words = build_camera(rng_cam, cfg, px, fps_ref)
    scene = Scene(width=width, height=height, layers=[background] + objects, camera=camera,
                  background_name=bg_phrase, camera_words=cam_words)
    clauses = [f"{obj.name} {motion_words(obj, px, fps_ref, cfg)}" for obj in reversed(objects)]
    return scene, clauses
