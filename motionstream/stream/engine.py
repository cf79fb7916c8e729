"""StreamingGenerator: image + prompt in, then motion chunk by chunk, video frames out, forever.

Paper Sec. 3.2 "Inference" and Sec. 4.4. Per chunk of C latent frames (config `stream`, default
c3s1w1 = 3 latent frames, 1 sink chunk, a window of 1 chunk):

    tracks of the chunk's video frames (MotionControls) -> MotionCondition (Eq. 1 map + guide)
    K denoising steps + one clean pass, by the distillation's own sampler (diffusion/student.py
    StudentSampler.denoise / .write, so inference follows training exactly, paper Sec. 3.2):
        z = noise;  for each step t_k (shifted `denoising_steps`):  v = student(z, t_k | cache, text,
        motion) (cache read only);  x0 = z - t_k v;  z = (1 - t_{k+1}) x0 + t_{k+1} * fresh noise
        clean pass student(x0, t = 0, write=True): x0's K/V join the sink or roll the window
    noise per chunk = diffusion/student.chunk_noise from one generator seeded at start(): the same latents as
    train/rollout.stream_generate on the same whole-stream condition (tests/stream/test_stream.py)
    x0 -> streaming decoder (tiny by default) -> uint8 frames: 1 + 4(C-1) for the first chunk, 4C after

Weights with the "video" output skip (the shipped student) also take a prior per chunk: the image
warped along the chunk's tracks. `stream.prior = encode` runs the warped pixels through the VAE's
streaming encoder (what the student was trained on; as many FLOPs as the DiT passes); `latent`
warps the anchor latent itself on the latent grid with the same flows, which costs nothing next to
the DiT (models/conditioning.warp_latent). The warped pixels also feed the composite
(stream/composite.py). With `stream.drag_paste`, a chunk moved only by drags and pins (the studio's
input) gets segment paste instead of the Gaussian warp: the object under each drag patch moves as a
whole over the background inpainted behind it (tracks/paste.py; segments are made once per patch and
image, SegmentCache). The encoded prior and the composite take its pixels; the latent prior moves the
anchor latent along the same segments over the plate encoded once (tracks/paste.paste_flows).

The cache holds at most S + W chunks and RoPE indexes cache positions (models/kv_cache.py), so
chunk 10,000 costs what chunk 2 costs. Decoding of chunk i runs on a worker thread and may overlap
the generation of chunk i+1 (`next_chunk_async`); torch ops release the GIL.

API (all frames uint8 [T, H, W, 3]):

    gen = StreamingGenerator(model, codec, text_encoder, StreamConfig(), param=TeacherParam())
    gen.start(image [H, W, 3], prompt)         encode the first frame and the prompt once, empty cache
    gen.push(ts: TrackSet, start_frame=None)   tracks for upcoming stream frames (or use gen.controls
                                               for live pointer input: pointer_down/move/up, pins, paths)
    gen.push([(t_s, x, y), ...], drag_id)      pointer samples of a live drag (gen.controls.pointer_down first)
    frames = gen.next_chunk()                  generate + decode the next chunk (blocking)
    fut = gen.next_chunk_async()               same, decode on the worker: fut.result() -> frames
    gen.pause(); gen.resume()                  paused: next_chunk returns 0 frames and the clock stops
    gen.reset()                                the same image and prompt from frame 0, controls cleared
    gen.presegment()                           after a pointer_down: segment its patch for drag_paste now,
                                               on a thread of its own, not when it first moves

Dynamic sink refresh (config `sink_refresh_chunks`, 0 = off, paper Limitation F): every N chunks
the sink is re-anchored on the most recent window chunk (its keys re-rotated to the sink's cache
positions), the guide's source latent becomes that chunk's last latent frame and every live
track's anchor its current position. The fixed sink anchors the stream to frame 0, which resists
drift but also resists scene changes (paper App. F); the refresh trades some drift resistance for
following a changing scene. Off by default. With a "video" prior the prior restarts from the new
anchor: its latent decoded as a first frame, warped along the re-anchored tracks, encoded by a fresh
streaming encoder (with the latent prior, the new anchor latent itself is warped). Measured by `eval
long` (row c3s1w1-r6, 20 scenes x 330 frames): drift -4.8 dB / +0.2 px against -2.1 dB / +0.6 px
with the fixed sink; the student was never trained on a refreshed sink.

Student model folders (`--model student` = weights/student-tiny-cpu, or any folder) are those of
diffusion/student.export_student: config.json {"kind": "student", "config": DiTConfig, "teacher":
TeacherParam, "student": StudentConfig} + model.safetensors. The output parameterisation
(diffusion/sampling.py: TeacherParam) travels with the weights.
"""

from __future__ import annotations

import concurrent.futures as futures
import copy
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from motionstream.config import section
from motionstream.diffusion.sampling import TeacherParam, load_dit_folder
from motionstream.diffusion.student import (StudentConfig, StudentSampler, add_skip, chunk_noise, parse_cache_name,
                                            stream_prior)
from motionstream.models.codec import frames_to_tensor, tensor_to_frames
from motionstream.models.conditioning import PRIORS, MotionCondition, build_guide, image_condition, warp_latent
from motionstream.models.dit import ChunkBlocks
from motionstream.models.kv_cache import KVCache
from motionstream.models.openvino_runner import PRECISIONS as OPENVINO_PRECISIONS
from motionstream.models.openvino_runner import OpenVINORunner
from motionstream.stream.composite import chunk_is_still, composite_frames, composite_weight, latent_gap
from motionstream.stream.controls import ChunkTracks, MotionControls
from motionstream.tracks.embed import rasterize
from motionstream.tracks.paste import (SegmentCache, content_key, drag_segments, is_drag_input, paste_flows,
                                      paste_segments)
from motionstream.tracks.trackset import TrackSet
from motionstream.tracks.warp import frame_flow, remap_back

STUDENT_WEIGHTS = "student-tiny-cpu"
TEACHER_WEIGHTS = "teacher-tiny-cpu"
FULL_QUALITY = "full"                 # the rung of the student's own denoising steps
AUTO_QUALITY = "auto"                 # `--quality auto`: adaptive from the preset's rung (StreamConfig.adaptive)
# rungs below FULL_QUALITY for a preset without its own (the paper-scale ones): fewer steps, then no prior encode,
# then smaller, each starting from noise, so any model runs them. tiny-cpu's ladder (configs/tiny-cpu.yaml) starts
# its one step at u = 1/3 from the video prior noised to that time (StudentSampler.initial_latents)
DEFAULT_LADDER = {"2-step": [1.0, 1 / 3], "2-step-latent": [1.0, 1 / 3], "2-step-small": [1.0, 1 / 3]}
DEFAULT_SCALE = {"2-step-small": 0.75}
DEFAULT_RUNG_PRIOR = {"2-step-latent": "latent", "2-step-small": "latent"}
# the stream's priors: training's (conditioning.PRIORS), and "linear", which encodes the warped pixels with the
# VAE encoder's linear path alone (a stand-in for "encode" at ~1/400 of its FLOPs; the stream's only)
LINEAR_PRIOR = "linear"
STREAM_PRIORS = (*PRIORS, LINEAR_PRIOR)
SLOW_CHUNKS_TO_STEP_DOWN = 2          # consecutive chunks slower than real time before a rung down (one may be noise)


@dataclass
class StreamConfig:
    """Section `stream` of a preset + the sampler settings (names: cXsYwZ = chunk X latent frames, Y
    sink chunks, window Z chunks). Build it with `stream_config_for`: the sampler fields come from the
    preset's `student` section and the student folder (what the weights were distilled for); the
    sink / window sizes stay a runtime choice (the student is trained with random ones)."""

    chunk_frames: int = 3                 # C: latent frames per chunk (12 video frames after the first)
    sink_chunks: int = 1                  # S
    window_chunks: int = 1                # W
    # the K denoising steps as unshifted times u (1 = noise), shifted like the teacher: t = shift(u)
    denoising_steps: list[float] = field(default_factory=lambda: [1.0, 2 / 3, 1 / 3])
    shift: float = 3.0
    renoise: bool = True                  # fresh noise between steps (Self-Forcing); False = DDIM
    decoder: str = "tiny"                 # tiny (TAEHV-style streaming decoder) | full (the causal VAE decoder)
    overlap_decode: bool = True           # decode chunk i on a worker thread while chunk i+1 generates
    sink_refresh_chunks: int = 0          # 0 = fixed sink; N = re-anchor the sink every N chunks (Limitation F)
    seed: int = 0                         # a stream's noise comes from one generator seeded with this
    student: str = STUDENT_WEIGHTS        # model folder of `--model student`
    vae: str = "vae-tiny-cpu"
    tiny_decoder: str = "tiny-decoder-tiny-cpu"
    max_tracks: int = 2500                # pushed TrackSets with more tracks are subsampled (conditioning cost)
    # the write of the clean chunk's K/V rides on the last denoising pass (its noisy input at t_{K-1})
    # instead of one more pass at t = 0: one DiT pass less per chunk (benchmarks/stream_levers.py)
    fuse_cache_pass: bool = False
    # quality rung the stream starts on: FULL_QUALITY (the student's own steps) or a rung of
    # quality_ladder (AUTO_QUALITY here = the top rung, adaptive)
    quality: str = "full"
    # step down the ladder from `quality` while the machine cannot keep the video's fps (see `adapt`)
    adaptive: bool = False
    # rung name -> unshifted denoising steps u, best first (measured: `eval transfer --set stream.quality=RUNG`)
    quality_ladder: dict[str, list[float]] = field(default_factory=lambda: dict(DEFAULT_LADDER))
    # rung -> fraction of the video size it generates at (absent = 1); frames are scaled back up
    quality_scale: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SCALE))
    # [lo, hi] latent RMS gap: show the warp's pixels where the student keeps its "video" prior
    # (stream/composite.py); [] = the decoded latents alone
    composite: list[float] = field(default_factory=list)
    # with the composite on, a chunk whose tracks all stay within this many px of their anchors (or that
    # has none) shows the image itself (stream/composite.py chunk_is_still); < 0 = never
    still_px: float = -1.0
    # int8 dynamic quantisation (torch.ao quantize_dynamic) of the Linear layers in the DiT's blocks:
    # int8 weights, activations quantised per call, fp32 in and out; attention, norms, embeddings and
    # the head stay fp32 (`int8_dit`). CPU only. Measured in benchmarks/stream_levers.py
    int8: bool = False
    # the DiT's blocks (models/dit.ChunkBlocks) and the tiny decoder run by OpenVINO (models/openvino_runner.py):
    # bf16 where the CPU has bf16 instructions, f32 elsewhere; converted on the first chunk that needs them.
    # CPU only; takes the place of int8. Measured in benchmarks/stream_levers.py
    openvino: bool = False
    # its precision: auto = OpenVINO's CPU default (bf16 where the CPU has it, else f32) | bf16 | f32
    openvino_precision: str = "auto"
    # how the "video" prior is made: encode = the warped pixels through the VAE encoder chunk by chunk
    # (what the student was trained on); linear = the same pixels through the encoder's linear path alone
    # (CausalVAE.encode_linear: its 8x8x4 patch projection, ~1/400 of the FLOPs); latent = the anchor latent
    # warped on the latent grid (models/conditioning.warp_latent: no encoder FLOPs)
    prior: str = "encode"
    # rung -> its prior (absent = `prior`; like quality_scale, rungs not on the ladder are ignored)
    quality_prior: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_RUNG_PRIOR))
    # a chunk moved only by drags and pins takes segment paste (tracks/paste.py) as its prior and
    # composite, not the Gaussian warp (which stretches the dragged object and never shows what it uncovers)
    drag_paste: bool = False

    def __post_init__(self) -> None:
        self.student_config()             # validates chunk size and steps
        for lever in ("int8", "openvino"):
            if not isinstance(getattr(self, lever), bool):
                raise ValueError(f"stream.{lever} must be true or false, got {getattr(self, lever)!r}")
        if self.openvino_precision not in OPENVINO_PRECISIONS:
            raise ValueError(f"stream.openvino_precision must be one of {', '.join(OPENVINO_PRECISIONS)}, "
                             f"got {self.openvino_precision!r}")
        if self.sink_chunks < 0 or self.window_chunks < 0:
            raise ValueError(f"bad cache shape {self.name}")
        if self.prior not in STREAM_PRIORS:
            raise ValueError(f"stream.prior must be one of {', '.join(STREAM_PRIORS)}, got {self.prior!r}")
        for rung, prior in self.quality_prior.items():
            if prior not in STREAM_PRIORS:
                raise ValueError(f"stream.quality_prior maps rungs to {', '.join(STREAM_PRIORS)}, "
                                 f"got {rung!r}: {prior!r}")
        if self.decoder not in ("tiny", "full"):
            raise ValueError(f"stream.decoder must be tiny or full, got {self.decoder!r}")
        if self.composite and (len(self.composite) != 2 or not 0 <= self.composite[0] < self.composite[1]):
            raise ValueError(f"stream.composite must be [] or [lo, hi] with 0 <= lo < hi, got {self.composite}")
        if self.quality == AUTO_QUALITY:
            self.quality, self.adaptive = self.rungs[0], True
        if self.quality not in self.rungs:
            raise ValueError(f"stream.quality must be {AUTO_QUALITY} or one of {self.rungs}, got {self.quality!r}")

    @property
    def rungs(self) -> list[str]:
        """Quality rungs, best first: FULL_QUALITY, then quality_ladder's."""
        return [FULL_QUALITY, *(r for r in self.quality_ladder if r != FULL_QUALITY)]

    def prior_of(self, rung: str) -> str:
        """How the "video" prior is made on quality `rung`: encode | linear | latent."""
        return self.quality_prior.get(rung, self.prior)

    def steps_of(self, rung: str) -> list[float]:
        """Unshifted denoising steps of a rung (FULL_QUALITY: denoising_steps, the student's own)."""
        return list(self.denoising_steps) if rung == FULL_QUALITY else [float(u) for u in self.quality_ladder[rung]]

    @property
    def name(self) -> str:
        return f"c{self.chunk_frames}s{self.sink_chunks}w{self.window_chunks}"

    def for_model_without_prior(self) -> "StreamConfig":
        """This config for a model without an output-skip prior (TeacherParam.output_skip "none"): a rung whose
        first step is below u = 1 starts from that prior (StudentSampler.initial_latents), so it leaves the
        ladder. An adaptive stream that would start on one starts on FULL_QUALITY; a pinned one is an error."""
        kept = {rung: steps for rung, steps in self.quality_ladder.items() if float(steps[0]) >= 1.0}
        quality = self.quality
        if quality != FULL_QUALITY and quality not in kept:
            if not self.adaptive:
                raise ValueError(f"quality rung {quality!r} starts from the model's video prior, and this model has "
                                 f"none (no output skip); use --quality full or one of {[FULL_QUALITY, *kept]}")
            quality = FULL_QUALITY
        return replace(self, quality_ladder=kept, quality=quality)

    def student_config(self, rung: str = FULL_QUALITY) -> StudentConfig:
        """The diffusion/student.StudentConfig the sampler runs with on quality `rung`."""
        if self.chunk_frames < 1:
            raise ValueError(f"stream.chunk_frames must be >= 1, got {self.chunk_frames}")
        return StudentConfig(self.chunk_frames, self.sink_chunks, self.window_chunks, self.steps_of(rung),
                             self.shift, self.renoise)

    def with_cache_name(self, name: str) -> "StreamConfig":
        """A copy with chunk/sink/window from a cXsYwZ name (e.g. 'c3s1w1', 'c3s0w6')."""
        c, s, w = parse_cache_name(name)
        return replace(self, chunk_frames=c, sink_chunks=s, window_chunks=w)


# ------------------------------------------------------------------------------- conditioning
def chunk_condition(first_latent: torch.Tensor, chunk: ChunkTracks, latent_start: int, num_latent: int,
                    cfg: Any, prior: torch.Tensor | None = None) -> MotionCondition:
    """MotionCondition of latent frames [latent_start, latent_start + num_latent) of a stream.

    first_latent [1, C_lat, h, w] (the image; or the refreshed anchor latent), chunk: the tracks of
    exactly the chunk's video frames. Equal to build_condition(...).chunk(a, b) on a whole clip
    whose tracks start at the anchors (tests/stream/test_stream.py checks this), but needs only the chunk.
    prior: the chunk's video prior [1, C_lat, num_latent, h, w] (chunk_video_frames + a StreamEncoder,
    or models/conditioning.warp_latent).
    """

    tf = cfg.temporal_factor
    _, _, h, w = first_latent.shape
    ts = chunk.tracks
    stride = ts.width // w
    cm = rasterize(ts, stride, dim=cfg.track_dim, ids=ts.ids)                       # [T, h, w, d]
    track_map = torch.from_numpy(np.ascontiguousarray(cm)).permute(3, 0, 1, 2)[None].to(first_latent)
    # the image sits in latent frame 0 only: later chunks get zeros of their own size (never a
    # stream-long tensor sliced, which would grow with the chunk index)
    latent, mask = image_condition(first_latent, num_latent, cfg.image_mask_channels)
    if latent_start > 0:
        latent, mask = torch.zeros_like(latent), torch.zeros_like(mask)
    guide = guide_mask = None
    if cfg.use_guide:
        # a virtual clip for build_guide: frame 0 = the anchors (source cells), frame tf*j = the last
        # video frame of the chunk's j-th latent frame (global video frame tf * (latent_start + j - 1))
        n = ts.num_tracks
        xy = np.zeros((1 + tf * num_latent, n, 2), np.float32)
        vis = np.zeros((1 + tf * num_latent, n), bool)
        xy[0], vis[0] = chunk.anchors, chunk.anchor_visible
        for j in range(1, num_latent + 1):
            local = tf * (latent_start + j - 1) - chunk.start_frame
            xy[tf * j], vis[tf * j] = ts.tracks[local], ts.visibility[local]
        virtual = TrackSet(xy, vis, ts.width, ts.height, ts.fps)
        g, gm = build_guide(first_latent[0], virtual, num_latent + 1, stride, tf)
        guide, guide_mask = g[None, :, 1:], gm[None, :, 1:]
        if latent_start == 0:   # latent frame 0 is the image itself: no guide there (as build_guide)
            guide[:, :, 0], guide_mask[:, :, 0] = 0, 0
    return MotionCondition(image_latent=latent, image_mask=mask, track_map=track_map, guide=guide,
                           guide_mask=guide_mask, prior=prior, temporal_factor=tf)


def scale_chunk(chunk: ChunkTracks, width: int, height: int) -> ChunkTracks:
    """The chunk's tracks and anchors in a frame of width x height (a quality rung's working size)."""
    ts = chunk.tracks
    k = np.array([width / ts.width, height / ts.height], np.float32)
    return replace(chunk, tracks=ts.scaled(width, height), anchors=chunk.anchors * k)


def chunk_video_frames(image: np.ndarray, chunk: ChunkTracks, flows: np.ndarray | None = None) -> np.ndarray:
    """uint8 [T, H, W, 3]: `image` forward-warped from the anchors to each of the chunk's video frames
    (tracks.warp; the pixels the "video" prior encodes, see conditioning.video_prior). flows: the
    chunk's chunk_flows when already made."""

    if flows is None:
        flows = chunk_flows(chunk, image.shape[1], image.shape[0])
    return np.stack([remap_back(image, f) for f in flows])


def is_drag_chunk(chunk: ChunkTracks) -> bool:
    """True when the chunk's tracks are the studio's drags and pins (tracks/paste.is_drag_input)."""
    return is_drag_input(chunk.tracks)


def chunk_drag_segments(image: np.ndarray, chunk: ChunkTracks, segments: SegmentCache
                        ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
    """tracks/paste.drag_segments of `image` along a drag chunk (is_drag_chunk): (masks, displacements
    [T, K, 2] of the chunk's T video frames, plate). The anchors are each track's content on `image`,
    the chunk's frames follow them where the prior does (ChunkTracks.prior_visibility)."""
    ts = chunk.tracks
    along = TrackSet(np.concatenate([chunk.anchors[None], ts.tracks]),
                     np.concatenate([chunk.anchor_visible[None], chunk.prior_visibility]),
                     ts.width, ts.height, ts.fps, role=ts.role)
    masks, displacements, plate = drag_segments(image, along, segments)
    return masks, displacements[1:], plate


def chunk_paste_frames(image: np.ndarray, chunk: ChunkTracks, segments: SegmentCache) -> np.ndarray:
    """uint8 [T, H, W, 3]: tracks/paste.segment_paste of `image` along a drag chunk (chunk_drag_segments)."""
    return paste_segments(image, *chunk_drag_segments(image, chunk, segments))


def chunk_flows(chunk: ChunkTracks, width: int, height: int) -> np.ndarray:
    """float32 [T, H, W, 2]: the backward flows of chunk_video_frames (tracks.warp.frame_flow)."""
    ts, shown = chunk.tracks, chunk.prior_visibility
    return np.stack([frame_flow(chunk.anchors, ts.tracks[j], shown[j], width, height, num_tracks=ts.num_tracks)
                     for j in range(ts.num_frames)])


# -------------------------------------------------------------------------------- the engine
class StreamingGenerator:
    """Causal few-step student + rolling KV cache + streaming decoder (see module docstring).

    model: WanDiT (causal student weights; a random one works for tests); codec: VideoCodec;
    text_encoder: .encode(list[str]) -> (tokens [B, L, D], mask [B, L]); param: TeacherParam of the
    weights (its output parameterisation; None = raw velocity output); image_encoder: for DiTs with
    the CLIP image branch (dit.image_dim > 0), .encode(image [1, 3, H, W] in [-1, 1]) -> tokens
    (models/image_encoder.CLIPImageEncoder); its tokens ride in every chunk's condition.
    """

    def __init__(self, model: torch.nn.Module, codec: torch.nn.Module, text_encoder: Any,
                 config: StreamConfig | None = None, param: Any = None, fps: float = 16.0,
                 image_encoder: Any = None):
        if getattr(model.cfg, "image_dim", 0) and image_encoder is None:
            raise ValueError("this DiT has the CLIP image branch (dit.image_dim > 0): pass an image_encoder")
        self.image_encoder = image_encoder
        self.fp32_model = model.eval()
        self._int8_model: torch.nn.Module | None = None
        self.codec = codec.eval()
        self.text_encoder = text_encoder
        self.param = param or TeacherParam()
        self.config = self._fitted(config or StreamConfig())
        self.fps = float(fps)
        self.temporal_factor = model.cfg.temporal_factor
        self._worker: futures.ThreadPoolExecutor | None = None
        self._segmenter: futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.started = False
        self.paused = False
        self.quality = self.config.quality
        self.last_decode_s = 0.0
        self.pending_quality = None

    @property
    def encodes_prior(self) -> bool:
        """Whether the current rung makes its "video" prior by encoding warped pixels (stream.quality_prior:
        encode, or linear with the encoder's linear path alone)."""
        return self.param.output_skip == "video" and self.config.prior_of(self.quality) != "latent"

    def _fitted(self, config: StreamConfig) -> StreamConfig:
        """`config` with the rungs this model can run (StreamConfig.for_model_without_prior)."""
        return config.for_model_without_prior() if self.param.output_skip == "none" else config

    @property
    def model(self) -> torch.nn.Module:
        """The DiT the stream runs: the given weights; with stream.openvino the same weights whose blocks
        OpenVINO runs (`openvino_dit`); else with stream.int8 their int8 copy (`int8_dit`). Built on first
        use. The sampler takes it at start(), so a changed config applies from the next start."""
        if self.config.openvino:
            return openvino_dit(self.fp32_model, self.config.openvino_precision)
        if not self.config.int8:
            return self.fp32_model
        if self._int8_model is None:
            self._int8_model = int8_dit(self.fp32_model)
        return self._int8_model

    # ------------------------------------------------------------------ lifecycle
    @torch.inference_mode()
    def start(self, image: np.ndarray, prompt: str, config: StreamConfig | None = None) -> None:
        """Begin a stream from uint8 image [H, W, 3] (H, W multiples of the VAE stride) and a prompt."""

        if config is not None:
            self.config = self._fitted(config)
        image = np.asarray(image)
        s = self.codec.spatial_stride * self.model.cfg.patch_size[1]
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
        if image.shape[0] % s or image.shape[1] % s:
            raise ValueError(f"image size {image.shape[1]}x{image.shape[0]} must be a multiple of {s} "
                             "(VAE stride x patch size); resize it with video.resize_crop")
        self.wait()
        self.image = image
        self.height, self.width = image.shape[:2]
        device = next(self.model.parameters()).device
        self.device = device
        self.image_embeds = None if self.image_encoder is None else \
            self.image_encoder.encode(frames_to_tensor(image)[:, :, 0]).to(device)
        tokens, mask = self.text_encoder.encode([prompt])
        self.text = (tokens.to(device), None if mask is None else mask.to(device))
        self.prompt = prompt
        self.controls = MotionControls(self.width, self.height, self.fps, seed=self.config.seed)
        c = self.config
        self.quality = c.quality
        self.pending_quality: str | None = None
        self._begin_rung()
        self.slow_chunks = 0
        self.started = True
        self.reset()

    @torch.inference_mode()
    def _begin_rung(self) -> None:
        """Image latent, cache and sampler of the current rung. A rung with a smaller working size
        (stream.quality_scale) generates from the image resized to it; the tracks are scaled to it per
        chunk and the frames scaled back to the stream's size, so callers never see the working size."""

        c = self.config
        self.work_width, self.work_height = self.work_size(self.quality)
        self.work_image = self.image if (self.work_width, self.work_height) == (self.width, self.height) else \
            cv2.resize(self.image, (self.work_width, self.work_height), interpolation=cv2.INTER_AREA)
        latent = self.codec.encode(frames_to_tensor(self.work_image).to(self.device))     # [1, C, 1, h, w]
        self.image_latent = latent[:, :, 0].to(torch.float32)
        self.cache = self.model.new_cache(1, tuple(self.image_latent.shape[2:]), c.chunk_frames, c.sink_chunks,
                                          c.window_chunks, device=self.device)
        self.sampler = ChunkSampler(self.model, c.student_config(self.quality), self.param, self.text)

    def work_size(self, rung: str) -> tuple[int, int]:
        """(width, height) the stream is generated at on `rung`: the stream's size times the rung's
        stream.quality_scale, rounded to the VAE stride x patch size (at least one step)."""
        step = self.codec.spatial_stride * self.model.cfg.patch_size[1]
        scale = self.config.quality_scale.get(rung, 1.0)
        return tuple(max(step, int(round(n * scale / step)) * step) for n in (self.width, self.height))

    def reset(self) -> None:
        """Restart from frame 0 with the same image and prompt (cache, decoder and controls cleared);
        a rung of another working size chosen during the last stream (`set_quality`) starts here."""
        self._need_started()
        self.wait()
        if self.pending_quality is not None:
            self.quality, self.pending_quality = self.pending_quality, None
            self._begin_rung()
        self.cache.reset()
        self.decoder = self.codec.stream_decoder(tiny=self.config.decoder == "tiny", openvino=self.config.openvino,
                                                 precision=self.config.openvino_precision)
        self.controls.reset()
        self.anchor_latent = self.image_latent
        # weights with the "video" prior: the image warped along the tracks, encoded chunk by chunk
        self.prior_image = self.work_image
        self.segments = SegmentCache()
        self.noise_gen = torch.Generator().manual_seed(self.config.seed)
        self.chunk_index = 0
        self._sync_prior_encoder(restart=True)
        self.frames_out = 0
        self.paused = False
        self.last_latents: torch.Tensor | None = None
        self.last_blend: tuple[np.ndarray, np.ndarray] | None = None

    def pause(self) -> None:
        """Stop generating: next_chunk returns no frames and the stream clock stands still."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    WARM_UP_CHUNKS = 2                    # the first chunk decodes in torch, the second with stream.openvino's decoder

    def warm_up(self, width: int, height: int) -> None:
        """With stream.openvino, stream WARM_UP_CHUNKS chunks of a grey width x height image, so that its
        conversions (seconds, on the first chunks) are done before a user waits. Leaves no stream started."""
        if not self.config.openvino:
            return
        try:
            self.start(np.full((height, width, 3), 128, np.uint8), "")
            for _ in range(self.WARM_UP_CHUNKS):
                self.next_chunk()
        finally:
            self.started = False

    def close(self) -> None:
        """Finish pending decodes and segmentations and stop their threads."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        if self._segmenter is not None:
            self._segmenter.shutdown(wait=True)
            self._segmenter = None

    def wait(self) -> None:
        """Block until every submitted chunk is decoded."""
        if self._worker is not None:
            self._worker.submit(lambda: None).result()

    # ------------------------------------------------------------------ input
    def push(self, tracks: TrackSet | Sequence[tuple[float, float, float]], drag_id: int | None = None,
             start_frame: int | None = None) -> None:
        """Motion for the next frames: a TrackSet whose frame 0 is stream frame `start_frame` (default:
        the next frame not yet generated), or pointer samples (t_seconds, x, y) of the live drag `drag_id`
        (pointer_down on gen.controls first; samples may arrive at any time)."""
        self._need_started()
        if isinstance(tracks, TrackSet):
            if tracks.num_tracks > self.config.max_tracks:
                keep = np.random.default_rng(self.config.seed).choice(tracks.num_tracks, self.config.max_tracks,
                                                                      replace=False)
                tracks = tracks.subset(np.sort(keep))
            self.controls.push_tracks(tracks, start_frame)
            return
        if drag_id is None:
            raise ValueError("pointer samples need the drag_id returned by gen.controls.pointer_down")
        for t, x, y in tracks:
            self.controls.pointer_move(drag_id, t, x, y)

    def presegment(self) -> "futures.Future | None":
        """Segment now the drag patches the next chunk would paste (stream.drag_paste), on a thread of
        their own: a GrabCut and its plate take 0.1-0.7 s (and on a latent-prior rung the plate's encode),
        which the next chunk would otherwise spend before its DiT passes. Call it between chunks, on the
        thread that generates, after gen.controls.pointer_down (the studio's worker does, as it applies
        input): the segmentation then runs while that thread waits for playback, and the next chunk finds
        it in the cache (or waits for the one being made). A stream slower than real time never waits, so
        it gains nothing. None when that chunk would paste nothing."""
        if not (self.started and self.config.drag_paste and self.param.output_skip == "video"):
            return None
        chunk = self._at_work_size(self.controls.chunk_tracks(self.next_frame, self.chunk_num_frames(), consume=False))
        if not is_drag_chunk(chunk):
            return None
        if self._segmenter is None:
            self._segmenter = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="motionstream-segment")
        latent_prior = not self.encodes_prior
        return self._segmenter.submit(self._segment_ahead, chunk, latent_prior)

    @torch.inference_mode()
    def _segment_ahead(self, chunk: ChunkTracks, latent_prior: bool
                       ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
        """presegment's work: chunk_drag_segments into the cache and, on a rung that shows the plate as a
        latent (latent_prior), the plate's latent too."""
        masks, shifts, plate = chunk_drag_segments(self.prior_image, chunk, self.segments)
        if latent_prior and plate is not None:
            self._plate_latent(plate)
        return masks, shifts, plate

    # ------------------------------------------------------------------ output
    @property
    def next_frame(self) -> int:
        """Stream frame index of the first frame of the next chunk."""
        c, tf = self.config.chunk_frames, self.temporal_factor
        return 0 if self.chunk_index == 0 else 1 + tf * (c * self.chunk_index - 1)

    def chunk_num_frames(self, index: int | None = None) -> int:
        """Video frames of chunk `index` (default: the next): 1 + 4(C-1) for the first, 4C after."""
        index = self.chunk_index if index is None else index
        c, tf = self.config.chunk_frames, self.temporal_factor
        return 1 + tf * (c - 1) if index == 0 else tf * c

    @property
    def stream_time(self) -> float:
        """Seconds of video generated so far (the clock pointer samples are in)."""
        return self.next_frame / self.fps

    def next_chunk(self) -> np.ndarray:
        """Generate and decode the next chunk: uint8 [T, H, W, 3] (T = 0 while paused)."""
        return self.next_chunk_async().result()

    def next_chunk_async(self) -> "futures.Future[np.ndarray]":
        """Generate the next chunk now; its decode runs on the worker thread (returned future)."""
        self._need_started()
        if self.paused:
            done: futures.Future[np.ndarray] = futures.Future()
            done.set_result(np.zeros((0, self.height, self.width, 3), np.uint8))
            return done
        t0 = time.perf_counter()
        latents = self.generate_latents()
        self.adapt(time.perf_counter() - t0 + self.last_decode_s)
        blend = self.last_blend
        if not self.config.overlap_decode:
            done = futures.Future()
            done.set_result(self.decode_now(latents, blend))
            return done
        if self._worker is None:
            # OpenMP thread counts are per thread: give the worker the caller's torch thread count
            threads = torch.get_num_threads()
            self._worker = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="motionstream-decode",
                                                      initializer=torch.set_num_threads, initargs=(threads,))
        return self._worker.submit(self.decode_now, latents, blend)

    @torch.inference_mode()
    def generate_latents(self) -> torch.Tensor:
        """The next chunk's clean latents [1, C_lat, C, h, w] (cache updated); no decoding."""

        c = self.config.chunk_frames
        latent_start = self.chunk_index * c
        chunk = self.controls.chunk_tracks(self.next_frame, self.chunk_num_frames())
        still = (bool(self.config.composite) and self.config.still_px >= 0      # judged in the stream's pixels
                 and chunk_is_still(chunk, self.config.still_px))
        chunk = self._at_work_size(chunk)
        prior, warp, fill = None, None, None
        if self.param.output_skip == "video":
            encode = self.encodes_prior
            pixels = encode or bool(self.config.composite)        # the encoder's input, the composite's
            if self.config.drag_paste and is_drag_chunk(chunk):
                masks, shifts, plate = chunk_drag_segments(self.prior_image, chunk, self.segments)
                if pixels:
                    warp = paste_segments(self.prior_image, masks, shifts, plate)
                if not encode:
                    flows, holes = paste_flows(masks, shifts)
                    fill = (self._plate_latent(plate), holes)
            else:
                flows = chunk_flows(chunk, self.prior_image.shape[1], self.prior_image.shape[0])
                if pixels:
                    warp = chunk_video_frames(self.prior_image, chunk, flows)
            if encode:
                prior = self.prior_encoder.encode_chunk(frames_to_tensor(warp).to(self.device))
            else:
                prior = warp_latent(self.anchor_latent, flows, self.temporal_factor, self.chunk_index == 0, fill=fill)
        cond = replace(chunk_condition(self.anchor_latent, chunk, latent_start, c, self.model.cfg, prior=prior),
                       image_embeds=self.image_embeds)
        self.sampler.set_chunk(cond, self._prior(cond))
        b, ch, h, w = self.anchor_latent.shape
        noise = chunk_noise(self.noise_gen, self.sampler.cfg.num_steps, b, ch, c, (h, w), self.device)
        if self.config.fuse_cache_pass:
            x0 = self.sampler.denoise_writing(noise, latent_start, self.cache)
        else:
            x0 = self.sampler.denoise(noise, latent_start, self.cache)
            self.sampler.write(x0, latent_start, self.cache)     # the clean pass: K/V into sink / window
        self.last_blend = None
        if warp is not None and self.config.composite:
            lo, hi = self.config.composite
            weight = composite_weight(latent_gap(x0, self.sampler.prior), lo, hi, warp.shape[1:3],
                                      self.temporal_factor, first_chunk=self.chunk_index == 0)
            if still:                    # the image itself, not a resampled warp within still_px of it, and
                # at the stream's size on a smaller rung, unless a sink refresh re-anchored the prior image
                shown = self.image if self.prior_image is self.work_image else self.prior_image
                warp, weight = np.repeat(shown[None], len(warp), 0), np.zeros((len(warp), *shown.shape[:2]), np.float32)
            self.last_blend = (warp, weight)
        self.chunk_index += 1
        self.last_latents = x0
        if self.config.sink_refresh_chunks > 0 and self.chunk_index % self.config.sink_refresh_chunks == 0:
            self.refresh_sink()
        return x0

    def adapt(self, chunk_seconds: float) -> None:
        """Adaptive real time (stream.adaptive, `--quality auto`): after SLOW_CHUNKS_TO_STEP_DOWN consecutive chunks
        whose generation + decode took longer than the video they yield, step one rung down the ladder
        (fewer denoising steps) from the next chunk on. Never steps back up within a stream: the load that
        made it slow is usually still there, and flipping rungs would flicker. The first chunk (warm-up,
        image encode) is not counted."""
        if not self.config.adaptive or self.chunk_index <= 1:
            return
        rungs = self.config.rungs
        if self.pending_quality is not None:
            return                      # a smaller size is already chosen for the next start
        video_seconds = self.chunk_num_frames(self.chunk_index - 1) / self.fps
        self.slow_chunks = self.slow_chunks + 1 if chunk_seconds > video_seconds else 0
        at = rungs.index(self.quality)
        if self.slow_chunks >= SLOW_CHUNKS_TO_STEP_DOWN and at + 1 < len(rungs):
            self.set_quality(rungs[at + 1])

    def set_quality(self, rung: str) -> None:
        """Run on quality rung `rung`: from the next chunk when it keeps the working size (the cache is
        kept: the rungs share the student), else from the next reset() / start() (the cache's token grid
        is fixed for a stream; `pending_quality` says which rung waits)."""
        if rung not in self.config.rungs:
            raise ValueError(f"unknown quality rung {rung!r}; rungs: {self.config.rungs}")
        self.slow_chunks = 0
        if self.work_size(rung) != (self.work_width, self.work_height):
            self.pending_quality = rung
            return
        self.quality = rung
        self.sampler = ChunkSampler(self.model, self.config.student_config(rung), self.param, self.text)
        self._sync_prior_encoder()

    def refresh_sink(self) -> bool:
        """Re-anchor the sink on the newest window chunk(s) (see module docstring). False when the
        window does not yet hold S chunks (nothing changed)."""
        if not self.cache.refresh_sink():
            return False
        if self.last_latents is not None:
            self.anchor_latent = self.last_latents[:, :, -1].clone()
        self.controls.reanchor()
        if self.param.output_skip == "video":
            self._restart_video_prior()
        return True

    @torch.inference_mode()
    def _restart_video_prior(self) -> None:
        """The video prior after a refresh warps the new anchor's pixels along the re-anchored tracks.
        Those pixels are the anchor latent decoded as a first frame (which is how the model reads it as
        the image latent); a fresh causal encoder sees them first, so later chunks encode as 4n frames."""

        self.prior_image = tensor_to_frames(self.codec.decode(self.anchor_latent[:, :, None]))[0]
        self._sync_prior_encoder(restart=True)

    @torch.inference_mode()
    def _sync_prior_encoder(self, restart: bool = False) -> None:
        """A streaming encoder exactly when the rung encodes its "video" prior (none otherwise); restart:
        a fresh one even if there is one. One made mid-stream sees the prior image first, so its chunks
        encode as 4n frames, as after a refresh."""
        encodes = self.encodes_prior
        linear = self.config.prior_of(self.quality) == LINEAR_PRIOR
        if restart or not encodes or (self.prior_encoder is not None and self.prior_encoder.linear != linear):
            self.prior_encoder = None
        if encodes and self.prior_encoder is None:
            self.prior_encoder = self.codec.stream_encoder(linear=linear)
            if self.chunk_index > 0:
                self.prior_encoder.encode_chunk(frames_to_tensor(self.prior_image).to(self.device))

    # ------------------------------------------------------------------ internals
    def _at_work_size(self, chunk: ChunkTracks) -> ChunkTracks:
        """The chunk in the current rung's working size (scale_chunk), where the prior image lives."""
        if (self.work_width, self.work_height) == (self.width, self.height):
            return chunk
        return scale_chunk(chunk, self.work_width, self.work_height)

    def _plate_latent(self, plate: np.ndarray) -> torch.Tensor:
        """[1, C_lat, h, w]: the inpainted plate of a drag paste encoded as an image (as the anchor is),
        kept in the segment cache: the latent prior shows it where dragged objects left."""
        key = ("plate latent", content_key(plate))
        return self.segments.get(key, lambda: self.codec.encode(frames_to_tensor(plate).to(self.device))[:, :, 0]
                                 .to(torch.float32))

    def _prior(self, cond) -> torch.Tensor | None:
        """The output-skip prior of the chunk (diffusion/student.stream_prior of the whole stream, sliced):
        cond.prior for the "video" prior; for "warp" / "guide" built from the guide and the anchor latent."""
        first = self.anchor_latent[:, :, None].expand_as(cond.image_latent)
        return stream_prior(replace(cond, image_latent=first), self.param)

    @torch.inference_mode()
    def decode_now(self, latents: torch.Tensor, blend: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Decode a chunk's latents [1, C_lat, C, h, w] on this thread: uint8 frames [T, H, W, 3] of the
        stream's size; blend = (warp frames, weight) of stream/composite.py, at the working size."""

        with self._lock:
            t0 = time.perf_counter()
            frames = tensor_to_frames(self.decoder.decode_chunk(latents))
            if blend is not None:       # at the blend's size: the working size, or the stream's for a still chunk
                frames = composite_frames(resized_frames(frames, blend[0].shape[2], blend[0].shape[1]), *blend)
            frames = resized_frames(frames, self.width, self.height)
            self.frames_out += len(frames)
            self.last_decode_s = time.perf_counter() - t0
        return frames

    def _need_started(self) -> None:
        if not self.started:
            raise RuntimeError("call start(image, prompt) first")


def resized_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 [T, H, W, 3] frames at width x height (bilinear; the frames themselves when they already are)."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) for f in frames])


# ------------------------------------------------------------------------------- loading
def load_stream_model(name_or_path: str | Path) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """(WanDiT in eval mode, TeacherParam, metadata) from a model folder (diffusion/sampling.load_dit_folder).

    'student' and 'teacher' are the shipped folders weights/student-tiny-cpu and
    weights/teacher-tiny-cpu; raises checkpoints.WeightsNotFound naming the folder looked for."""
    name = {"student": STUDENT_WEIGHTS, "teacher": TEACHER_WEIGHTS}.get(str(name_or_path), name_or_path)
    return load_dit_folder(name)


# OpenVINO copies by the weights they run and their precision: each converts once per process, however
# many streams run it
_OPENVINO_DITS: "weakref.WeakKeyDictionary[torch.nn.Module, dict[str, torch.nn.Module]]" = weakref.WeakKeyDictionary()
_OPENVINO_DITS_LOCK = threading.Lock()


def openvino_dit(model: torch.nn.Module, precision: str = "auto") -> torch.nn.Module:
    """`model` (a WanDiT, shared weights) whose streaming chunks run their blocks in OpenVINO at `precision`
    (models/dit.ChunkBlocks through models/openvino_runner.OpenVINORunner, converted on the first chunk),
    one per model and precision. Models with the CLIP image branch, and anything with grad, keep the eager blocks."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("stream.openvino runs on the CPU only: set stream.openvino: false in the preset (--config) for a GPU")
    with _OPENVINO_DITS_LOCK:
        by_precision = _OPENVINO_DITS.setdefault(model, {})
        if precision not in by_precision:
            runner = copy.copy(model)            # a shallow copy: the same modules, its own chunk_runner
            runner.chunk_runner = OpenVINORunner(ChunkBlocks(model), precision)
            by_precision[precision] = runner
        return by_precision[precision]


def int8_dit(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of WanDiT `model` (CPU, eval) whose blocks' nn.Linear layers (self- and cross-attention
    q / k / v / o, the FFN) are int8 dynamic-quantised: weights int8 per tensor, activations quantised
    per call, inputs and outputs fp32, so the KV cache stays fp32. The attention itself, the norms,
    the patch / text / time embeddings and the head stay fp32. `model` itself is not changed."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("stream.int8 (dynamic quantisation) runs on the CPU only: set stream.int8: false in the preset (--config) for a GPU")
    quantised = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        # torch.ao.quantization and its quantized tensors warn that they move to torchao; they work here
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantised.blocks = torch.ao.quantization.quantize_dynamic(quantised.blocks, {torch.nn.Linear},
                                                                 dtype=torch.qint8, inplace=True)
    return quantised


def stream_config_for(cfg: dict[str, Any], meta: dict[str, Any] | None = None, **overrides: Any) -> StreamConfig:
    """StreamConfig from a loaded preset: its `stream` section, the sampler settings of its `student`
    section (diffusion/student.StudentConfig: chunk size, sink, window, steps, shift, renoise), then
    what a student folder says it was distilled for (its `student` metadata: chunk size, steps,
    shift, renoise; the sink / window stay a runtime choice), then explicit overrides (None = keep)."""

    sc = section(cfg, "stream", StreamConfig)
    sampler_keys = ("chunk_frames", "sink_chunks", "window_chunks", "denoising_steps", "shift", "renoise")
    preset = section(cfg, "student", StudentConfig) if cfg.get("student") else None
    from_preset = {k: getattr(preset, k) for k in sampler_keys} if preset is not None else {}
    student = (meta or {}).get("student") or {}
    from_model = {k: student[k] for k in ("chunk_frames", "denoising_steps", "shift", "renoise") if k in student}
    if overrides.get("quality") == AUTO_QUALITY:      # `--quality auto`: the preset's rung, adaptive
        overrides = {**overrides, "quality": None, "adaptive": True}
    return replace(sc, **{**from_preset, **from_model, **{k: v for k, v in overrides.items() if v is not None}})


class ChunkSampler(StudentSampler):
    """diffusion/student.StudentSampler fed one chunk's condition at a time.

    StudentSampler slices a whole-stream condition, which an endless stream never has; this keeps
    its denoise / write loop (the code the student is trained with) and only changes where the
    chunk's condition and output-skip prior come from (`set_chunk` before each chunk)."""

    def __init__(self, model: torch.nn.Module, student_cfg: StudentConfig, param: TeacherParam,
                 text: tuple[torch.Tensor, torch.Tensor | None]):
        self.model, self.cfg, self.param, self.text = model, student_cfg, param, text
        self.t = student_cfg.timesteps()
        self.cond, self.prior = None, None
        self.write_at_last_step = False

    def set_chunk(self, cond: MotionCondition, prior: torch.Tensor | None) -> None:
        self.cond, self.prior = cond, prior

    def denoise_writing(self, noise: torch.Tensor, start: int, cache: KVCache) -> torch.Tensor:
        """denoise() whose last pass also writes the chunk's K/V into the cache (the fused cache pass:
        the context is the chunk at t_{K-1}, not the clean chunk at t = 0; one pass less)."""
        self.write_at_last_step = True
        try:
            return self.denoise(noise, start, cache)
        finally:
            self.write_at_last_step = False

    def velocity(self, z: torch.Tensor, t: float, start: int, cache: KVCache, write: bool) -> torch.Tensor:
        write = write or (self.write_at_last_step and float(t) == float(self.t[-1]))
        tt = z.new_full((z.shape[0], z.shape[2]), float(t))
        out = self.model.forward_chunk(z, tt, self.text[0], self.text[1], self.cond, cache, write)
        return add_skip(out, z, tt, self.chunk_prior(start, z.shape[2]), self.param)

    def chunk_prior(self, start: int, frames: int) -> torch.Tensor | None:
        """The prior set_chunk gave: already this chunk's frames, whatever `start`."""
        return self.prior
