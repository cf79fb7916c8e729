"""The motion-conditioned Wan DiT: one definition for the bidirectional teacher and the causal student.

Public API (other modules import exactly these from motionstream.models.dit)
-----------------------------------------------------------------------------
DiTConfig                     dataclass of section "dit" (every size comes from here)
MotionCondition               image latent + mask, video-rate track map, optional guide (+ mask),
                              optional CLIP image tokens (image_embeds, for dit.image_dim > 0);
                              .chunk(a, b), .drop_motion(), .to(...), MotionCondition.cat([...])
build_condition(first_latent [B,C,h,w], tracks: list[TrackSet], num_latent_frames, cfg, ids=None)
                              -> MotionCondition  (rasterizes Eq. 1 + builds the Wan-Move guide)
WanDiT(cfg)
  .forward(x [B,C,F,h,w], timesteps [B,F] in [0,1] (flow time, 1 = noise), context [B,L,text_dim],
           context_mask [B,L] bool | None, cond: MotionCondition, attn_mask=None) -> velocity [B,C,F,h,w]
      attn_mask None = bidirectional (teacher); a ChunkMask from chunk_attention_mask = causal student
      training; a plain bool tensor [F*T, F*T] is used as is with positions 0..F-1.
  .forward_chunk(x [B,C,Cf,h,w], timesteps [B,Cf], context, context_mask, cond_chunk, cache: KVCache,
                 write: bool) -> velocity [B,C,Cf,h,w]   (streaming; write=True on the clean chunk)
  .new_cache(batch, latent_hw, chunk_frames, sink_chunks, window_chunks, device=None, dtype=None) -> KVCache
  .tokens_per_frame(latent_hw) -> int
  .gradient_checkpointing = True   recompute blocks in backward (full-sequence forward only)
chunk_attention_mask(num_frames, frames_per_chunk, sink_chunks, window_chunks, tokens_per_frame,
                     clean_context=False, token_grid=None) -> ChunkMask
KVCache(model_cfg, batch, chunk_frames, sink_chunks, window_chunks, token_grid, device, dtype)
                              .reset(), .roll(), .commit() (forward_chunk commits write passes itself)

Tensor conventions: latents float32 [B, C_lat, F, h, w] on the VAE's latent grid; F = 1 + n latent
frames for T = 1 + 4n video frames; token grid = (h / 2, w / 2) with patch (1, 2, 2); tokens are
ordered (frame, row, column). Velocity is the rectified-flow target noise - data.

Layout (Wan 2.1, parameter names as in its original checkpoints so they load by name):
  inputs concatenated by channel [noisy x | image mask | control (zeros) | image latent |
  track-head features | guide | guide mask] -> patch_embedding (Conv3d, stride = patch) -> blocks
  (adaLN 6-way modulation from the per-frame timestep, self-attention with RMS qk-norm and 3D RoPE,
  text cross-attention, GELU FFN) -> head (2-way modulation) -> unpatchify. The first channels are
  those of Wan's own checkpoints (T2V: x; I2V and VideoX-Fun InP: x, mask, image latent; Fun
  Control: x, control, image latent); the motion channels come after them and only widen the patch
  embedding; the DiT body is Wan's.

Image branch (dit.image_dim > 0, Wan 2.1 I2V and VideoX-Fun): the CLIP tokens cond.image_embeds
[B, 257, image_dim] go through img_emb (LayerNorm, Linear, GELU, Linear, LayerNorm) and join the
cross-attention context next to the text (ImageCrossAttention: k_img / v_img). Like the text, they
are context, computed once per stream in the KV cache; they never enter the self-attention cache.

Text padding (dit.pad_text_to = N > 0): the text tokens are zero-padded to N and all N are attended
to, as upstream Wan does (its text_len 512, context_lens None); 0 masks the padding instead.

Causal training masks (chunk_attention_mask) and the sink position
------------------------------------------------------------------
Chunk i (of C frames) attends to itself, the S sink chunks and the W previous chunks, exactly as
the streaming cache does (kv_cache.py). In the cache, chunk i sits at position min(i, S+W) chunks
and window chunks sit contiguously before it, so query-to-window distances equal the absolute ones
and RoPE (relative) agrees with absolute positions. Only the sink is seen at a different distance
once the window has rolled (i > S + W): (min(i, S+W) * C) frames instead of (i * C). The masked
full-sequence path reproduces this exactly by appending, for each such chunk, one extra copy of the
sink keys (and values) rotated at (absolute position + (i - S - W) * C); the mask lets chunk i see
its own copy instead of the original sink keys. Softmax is over the exact same key set, so the
result equals the cache path to float tolerance (tests/models/test_dit_causal.py). With a short sequence
(n_chunks <= S + W + 1, the usual training case) no copy is needed.

clean_context=True builds the CausVid / teacher-forcing variant as a doubled sequence
[clean chunks | noisy chunks] (x, timesteps of length 2F; cond stays F frames): clean chunk i sees
the clean context of chunk i (sink + window) and itself, noisy chunk i sees the same clean context
and itself. Both halves use the positions of chunk i. This equals streaming with the cache: the
denoising pass of chunk i on its noisy input, then the write pass on the clean chunk.
clean_context=False is the plain chunk-causal mask (every chunk sees the earlier chunks of the same
sequence, e.g. diffusion-forcing style per-chunk noise levels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from motionstream.models.attention import CrossAttention, FP32LayerNorm, ImageCrossAttention, RopePlan, SelfAttention
from motionstream.models.conditioning import MotionCondition, build_condition
from motionstream.models.kv_cache import KVCache, chunk_attention
from motionstream.models.rope import rope_tables
from motionstream.models.track_head import TrackHead

__all__ = ["DiTConfig", "MotionCondition", "build_condition", "WanDiT", "ChunkBlocks", "ChunkMask",
           "chunk_attention_mask", "KVCache"]


@dataclass
class DiTConfig:
    """Section `dit` of a preset. Defaults are the tiny-cpu sizes."""
    dim: int = 256
    num_layers: int = 6
    num_heads: int = 4
    ffn_dim: int = 1024
    freq_dim: int = 256               # sinusoidal timestep features
    patch_size: list[int] = field(default_factory=lambda: [1, 2, 2])
    latent_channels: int = 16         # VAE latent channels (16 for Wan 2.1 / tiny, 48 for Wan 2.2 5B)
    text_dim: int = 384               # text encoder token width (384 MiniLM, 4096 umT5-XXL)
    image_mask_channels: int = 4      # Wan I2V mask channels (one per video frame of a latent frame)
    track_dim: int = 64               # d of the Eq. 1 sinusoidal track embedding
    track_channels: int = 16          # track head output channels
    temporal_factor: int = 4          # video frames per latent frame (VAE temporal compression)
    use_guide: bool = True            # Wan-Move trajectory guide + coverage mask as extra inputs
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    rope_theta: float = 10000.0
    timestep_scale: float = 1000.0    # flow time t in [0, 1] -> Wan's timestep t * 1000
    image_dim: int = 0                # CLIP image token width (1280 for Wan I2V's ViT-H/14); 0 = no image branch
    control_channels: int = 0         # VideoX-Fun Control's control-video latent channels (fed zeros); 0 = none
    pad_text_to: int = 0              # >0: zero-pad text to this many tokens and attend to all (upstream Wan: 512)

    def __post_init__(self) -> None:
        self.patch_size = list(self.patch_size)
        if self.patch_size[0] != 1:
            raise ValueError("dit.patch_size must be (1, p, p): per-frame timesteps and chunking need one frame per token row")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"dit.dim {self.dim} must split into {self.num_heads} heads of even size")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def condition_channels(self) -> int:
        """Channels after the noisy latent: image mask + control + image latent + track + guide (+ mask)."""
        guide = self.latent_channels + 1 if self.use_guide else 0
        return self.image_conditioned_channels - self.latent_channels + self.track_channels + guide

    @property
    def image_conditioned_channels(self) -> int:
        """Input channels of a Wan image-conditioned checkpoint with this layout (I2V, Fun InP / Control):
        noisy latent + image mask + control + image latent (36 for Wan 2.1 I2V, 48 for Fun Control)."""
        return 2 * self.latent_channels + self.image_mask_channels + self.control_channels

    @property
    def in_channels(self) -> int:
        return self.latent_channels + self.condition_channels


# ---------------------------------------------------------------------------------- masks
@dataclass
class ChunkMask:
    """A block-sparse causal attention pattern for one full-sequence forward (see module docstring).

    mask             bool [Q, K]: Q = F_seq * T query tokens, K = Q + len(sink_shifts) * sink_tokens
    frame_positions  long [F_seq]: RoPE time index of each sequence frame
    frame_source     long [F_seq]: latent frame of `cond` each sequence frame is conditioned on
    sink_shifts      frames added to the sink's positions in each extra sink copy
    sink_frames      S * C: the first sink_frames sequence frames form the sink
    """
    mask: torch.Tensor
    frame_positions: torch.Tensor
    frame_source: torch.Tensor
    sink_shifts: list[int]
    sink_frames: int

    def to(self, device: torch.device | str) -> "ChunkMask":
        """Mask and frame_source on `device`; frame_positions stay on the CPU (RoPE tables are built there
        and memoised by value, which must not cost a device sync)."""
        return ChunkMask(self.mask.to(device), self.frame_positions, self.frame_source.to(device),
                         list(self.sink_shifts), self.sink_frames)


def chunk_attention_mask(num_frames: int, frames_per_chunk: int, sink_chunks: int, window_chunks: int | None,
                         tokens_per_frame: int, clean_context: bool = False) -> ChunkMask:
    """Chunk-causal attention with S sink chunks and a window of W chunks (None = full history).

    num_frames: latent frames F of the clip (a multiple of frames_per_chunk).
    clean_context: doubled [clean | noisy] sequence for CausVid-style regression (module docstring).
    """
    c, s = frames_per_chunk, sink_chunks
    n = num_frames // c
    if n * c != num_frames or n < 1:
        raise ValueError(f"{num_frames} latent frames do not split into chunks of {c}")
    w = n if window_chunks is None or window_chunks < 0 else window_chunks
    cache_chunks = s + w

    def context(i: int) -> list[int]:
        return [j for j in range(i) if j < s or j >= i - w]

    copy_of: dict[int, int] = {}
    shifts: list[int] = []
    for i in range(n):
        if s > 0 and i > cache_chunks:
            copy_of[i] = len(shifts)
            shifts.append((i - cache_chunks) * c)
    rows = 2 * n if clean_context else n
    main = torch.zeros(rows, rows, dtype=torch.bool)
    copies = torch.zeros(rows, len(shifts), dtype=torch.bool)
    for i in range(n):
        for row in ([i, n + i] if clean_context else [i]):
            for j in context(i):
                if j < s and i in copy_of:
                    copies[row, copy_of[i]] = True
                else:
                    main[row, j] = True      # clean chunk j (the first half when doubled)
            main[row, row] = True
    tok = c * tokens_per_frame
    mask = main.repeat_interleave(tok, 0).repeat_interleave(tok, 1)
    if shifts:
        mask = torch.cat([mask, copies.repeat_interleave(tok, 0).repeat_interleave(s * tok, 1)], dim=1)
    frames = torch.arange(num_frames)
    if clean_context:
        frames = torch.cat([frames, frames])
    return ChunkMask(mask, frames.clone(), frames.clone(), shifts, s * c)


# --------------------------------------------------------------------------------- layers
def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[...] -> [..., dim] float32: [cos(t w_i), sin(t w_i)], w_i = 10000^(-i / (dim/2)) (Wan's layout)."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = t.to(torch.float64)[..., None] * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [B, F*T, D] with per-frame shift, scale [B, F, D] -> x * (1 + scale) + shift, per frame."""
    f = shift.shape[1]
    xf = x.unflatten(1, (f, -1))
    return (xf * (1 + scale[:, :, None]) + shift[:, :, None]).flatten(1, 2)


def gate(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """x [B, F*T, D] * per-frame gate g [B, F, D]."""
    return (x.unflatten(1, (g.shape[1], -1)) * g[:, :, None]).flatten(1, 2)


class WanBlock(nn.Module):
    """Self-attention, text cross-attention and FFN, modulated by the per-frame timestep embedding."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.dim
        self.norm1 = FP32LayerNorm(d, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(d, cfg.num_heads, cfg.qk_norm, cfg.eps)
        self.norm3 = FP32LayerNorm(d, cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else nn.Identity()
        cross = ImageCrossAttention if cfg.image_dim else CrossAttention
        self.cross_attn = cross(d, cfg.num_heads, cfg.qk_norm, cfg.eps)
        self.norm2 = FP32LayerNorm(d, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(d, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, d))
        # learned offsets added to the timestep modulation: shift/scale/gate for attention and FFN
        self.modulation = nn.Parameter(torch.randn(1, 6, d) / d ** 0.5)

    def forward(self, x, e, self_attend, context_kv, context_mask):
        """x [B, F*T, D]; e [B, F, 6, D]; self_attend(attn_module, h) -> [B, F*T, D]."""
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation[:, None] + e).unbind(2)
        x = x + gate(self_attend(self.self_attn, modulate(self.norm1(x), shift1, scale1)), gate1)
        x = x + self.cross_attn(self.norm3(x), context_kv, context_mask)
        return x + gate(self.ffn(modulate(self.norm2(x), shift2, scale2)), gate2)


class Head(nn.Module):
    """Final modulated LayerNorm + linear to patch pixels: [B, F*T, D] -> [B, F*T, prod(patch) * C]."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm = FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, math.prod(cfg.patch_size) * cfg.latent_channels)
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim ** 0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation[:, None] + e[:, :, None]).unbind(2)
        return self.head(modulate(self.norm(x), shift, scale))


class ImageProjection(nn.Module):
    """Wan's img_emb (MLPProj): CLIP tokens [B, L_img, image_dim] -> context tokens [B, L_img, dim].

    proj = [LayerNorm(image_dim), Linear(image_dim, image_dim), GELU, Linear(image_dim, dim), LayerNorm(dim)]
    (indices 0..4 as in the checkpoints; the LayerNorms are torch's default affine ones).
    """

    LAYER_NORM_EPS = 1e-5            # torch.nn.LayerNorm's default, which upstream uses

    def __init__(self, image_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Sequential(FP32LayerNorm(image_dim, self.LAYER_NORM_EPS), nn.Linear(image_dim, image_dim),
                                  nn.GELU(), nn.Linear(image_dim, dim), FP32LayerNorm(dim, self.LAYER_NORM_EPS))

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.proj(image_embeds)


# ---------------------------------------------------------------------------------- model
class ChunkBlocks(nn.Module):
    """WanDiT.forward_chunk's blocks as a pure function of tensors, to export (the stream's OpenVINO lever).

    tokens [B, n, D] (one chunk); e6 [B, F, 6, D]; keys, values [L, B, H, ctx, d]: the cache before
    this chunk (keys RoPE-rotated; ctx = slot * n, 0 allowed); cos, sin [n, d/2]: the chunk's slot;
    text_k, text_v [L, B, H, L_text, d]: each layer's text cross-attention K/V; text_mask bool
    [B, L_text] (True = attended). Returns tokens [B, n, D] and the chunk's k_rot, v, k_raw
    [L, B, H, n, d] (what a write pass stores, KVCache.store). Self-attention as in KVCache.attend;
    text-only cross-attention (models without the CLIP image branch).
    """

    def __init__(self, model: "WanDiT"):
        super().__init__()
        self.blocks = model.blocks

    def forward(self, tokens, e6, keys, values, cos, sin, text_k, text_v, text_mask):
        written: list[tuple[torch.Tensor, ...]] = []

        def attend(layer: int, attn: SelfAttention, h: torch.Tensor) -> torch.Tensor:
            out, *chunk_kv = chunk_attention(attn, h, cos, sin, keys[layer], values[layer])
            written.append(chunk_kv)
            return out

        for i, block in enumerate(self.blocks):
            tokens = block(tokens, e6, lambda attn, h, i=i: attend(i, attn, h), (text_k[i], text_v[i]), text_mask)
        k_rot, v, k_raw = (torch.stack(t) for t in zip(*written))
        return tokens, k_rot, v, k_raw


class WanDiT(nn.Module):
    """Motion-conditioned Wan DiT (see module docstring for the API and tensor shapes)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_channels, d, kernel_size=tuple(cfg.patch_size),
                                         stride=tuple(cfg.patch_size))
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.blocks = nn.ModuleList([WanBlock(cfg) for _ in range(cfg.num_layers)])
        self.head = Head(cfg)
        if cfg.image_dim:
            self.img_emb = ImageProjection(cfg.image_dim, d)
        self.track_head = TrackHead(cfg.track_dim, cfg.track_channels, cfg.temporal_factor)
        self._rope_memo: dict = {}
        # recompute each block in backward instead of storing its activations (long clips on a GPU)
        self.gradient_checkpointing = False
        # a compiled stand-in for ChunkBlocks(self) (same inputs and outputs) that forward_chunk runs
        # without grad; None = the blocks in eager torch (stream/engine.py's openvino lever sets it)
        self.chunk_runner = None
        self.init_weights()

    def init_weights(self) -> None:
        """Wan's init: xavier linears, small-normal text/time embeddings, zero output layer."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        for seq in (self.text_embedding, self.time_embedding):
            for m in seq.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(self.head.head.weight)

    # ------------------------------------------------------------------ helpers
    def token_grid(self, latent_hw: tuple[int, int]) -> tuple[int, int]:
        _, ph, pw = self.cfg.patch_size
        h, w = latent_hw
        if h % ph or w % pw:
            raise ValueError(f"latent size {h}x{w} is not divisible by the patch {ph}x{pw}")
        return h // ph, w // pw

    def tokens_per_frame(self, latent_hw: tuple[int, int]) -> int:
        rows, cols = self.token_grid(latent_hw)
        return rows * cols

    def new_cache(self, batch: int, latent_hw: tuple[int, int], chunk_frames: int, sink_chunks: int,
                  window_chunks: int, device=None, dtype=None) -> KVCache:
        p = self.patch_embedding.weight
        return KVCache(self.cfg, batch, chunk_frames, sink_chunks, window_chunks, self.token_grid(latent_hw),
                       device=device or p.device, dtype=dtype or p.dtype)

    def condition_features(self, cond: MotionCondition) -> torch.Tensor:
        """[B, condition_channels, F, h, w]: image mask, control (zeros), image latent, track features,
        guide (+ mask)."""
        cond = cond.to(dtype=self.patch_embedding.weight.dtype)     # no-op unless the model runs in bf16
        lat = cond.image_latent
        zeros = lambda c: lat.new_zeros(lat.shape[0], c, *lat.shape[2:])  # noqa: E731
        parts = [cond.image_mask] + ([zeros(self.cfg.control_channels)] if self.cfg.control_channels else [])
        parts += [cond.image_latent, self.track_head(cond.track_map)]
        if self.cfg.use_guide:
            parts += [cond.guide if cond.guide is not None else zeros(self.cfg.latent_channels),
                      cond.guide_mask if cond.guide_mask is not None else zeros(1)]
        return torch.cat(parts, dim=1)

    def embed_inputs(self, x: torch.Tensor, cond_feats: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Concatenate inputs by channel and patchify: tokens [B, F*T, D], token grid (F, rows, cols)."""
        tokens = self.patch_embedding(torch.cat([x, cond_feats.to(x.dtype)], dim=1))
        grid = tuple(tokens.shape[2:])
        return tokens.flatten(2).transpose(1, 2), grid

    def text_inputs(self, context: torch.Tensor, context_mask: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(context, mask) as the cross-attention sees them: unchanged, or with pad_text_to > 0 the text
        zero-padded to pad_text_to tokens (padding zeroed by the mask first) and no mask (upstream Wan)."""
        n = self.cfg.pad_text_to
        if not n:
            return context, context_mask
        if context.shape[1] > n:
            raise ValueError(f"{context.shape[1]} text tokens do not fit dit.pad_text_to = {n}")
        if context_mask is not None:
            context = context * context_mask[..., None].to(context.dtype)
        return F.pad(context, (0, 0, 0, n - context.shape[1])), self.text_attention_mask(context_mask)

    def text_attention_mask(self, context_mask: torch.Tensor | None) -> torch.Tensor | None:
        """The text mask cross-attention uses: none with pad_text_to > 0 (every padded token is attended)."""
        return None if self.cfg.pad_text_to else context_mask

    def embed_context(self, context: torch.Tensor, context_mask: torch.Tensor | None,
                      image_embeds: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Cross-attention context: (text tokens [B, L', D], image tokens [B, L_img, D] | None)."""
        text = self.text_embedding(self.text_inputs(context, context_mask)[0])
        if not self.cfg.image_dim:
            return text, None
        if image_embeds is None:
            raise ValueError("this DiT has the CLIP image branch (dit.image_dim > 0): the condition needs image_embeds")
        return text, self.img_emb(image_embeds.to(text.dtype))

    def embed_time(self, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """timesteps [B, F] in [0, 1] -> (e [B, F, D], e6 [B, F, 6, D]) in float32."""
        e = self.time_embedding(sinusoidal_embedding(timesteps * self.cfg.timestep_scale, self.cfg.freq_dim)
                                .to(self.time_embedding[0].weight.dtype))
        return e, self.time_projection(e).unflatten(2, (6, self.cfg.dim))

    def unpatchify(self, out: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, F*T, pt*ph*pw*C] -> [B, C, F*pt, rows*ph, cols*pw]."""
        f, rows, cols = grid
        pt, ph, pw = self.cfg.patch_size
        c = self.cfg.latent_channels
        u = out.reshape(out.shape[0], f, rows, cols, pt, ph, pw, c)
        return u.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(out.shape[0], c, f * pt, rows * ph, cols * pw)

    def _rope(self, frame_positions: list[int], rows: int, cols: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Memoised float32 RoPE tables for frames at `frame_positions` (host ints: no device sync)."""
        key = (tuple(frame_positions), rows, cols, str(device))
        if key not in self._rope_memo:
            if len(self._rope_memo) > 64:
                self._rope_memo.clear()
            tables = rope_tables(torch.tensor(frame_positions), rows, cols, self.cfg.head_dim, self.cfg.rope_theta)
            self._rope_memo[key] = tuple(t.to(device) for t in tables)
        return self._rope_memo[key]

    def _check(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.cfg.latent_channels:
            raise ValueError(f"x must be [B, {self.cfg.latent_channels}, F, h, w], got {tuple(x.shape)}")
        if timesteps.shape != (x.shape[0], x.shape[2]):
            raise ValueError(f"timesteps must be [B, F] = {(x.shape[0], x.shape[2])}, got {tuple(timesteps.shape)}")
        if context.ndim != 3 or context.shape[-1] != self.cfg.text_dim:
            raise ValueError(f"context must be [B, L, {self.cfg.text_dim}], got {tuple(context.shape)}")

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None, cond: MotionCondition,
                attn_mask: "ChunkMask | torch.Tensor | None" = None) -> torch.Tensor:
        """Full-sequence velocity prediction (bidirectional, or causal with a ChunkMask)."""
        self._check(x, timesteps, context)
        cond_feats = self.condition_features(cond)
        if isinstance(attn_mask, ChunkMask):
            attn_mask = attn_mask.to(x.device)
            positions = attn_mask.frame_positions.tolist()
            cond_feats = cond_feats.index_select(2, attn_mask.frame_source)
        else:
            positions = list(range(x.shape[2]))
        tokens, grid = self.embed_inputs(x, cond_feats)
        _, rows, cols = grid
        e, e6 = self.embed_time(timesteps)
        cos, sin = self._rope(positions, rows, cols, x.device)
        if isinstance(attn_mask, ChunkMask):
            copies = [self._rope([f + s for f in range(attn_mask.sink_frames)], rows, cols, x.device)
                      for s in attn_mask.sink_shifts]
            plan = RopePlan(cos, sin, attn_mask.mask, copies, attn_mask.sink_frames * rows * cols)
        else:
            plan = RopePlan(cos, sin, attn_mask)
        ctx = self.embed_context(context, context_mask, cond.image_embeds)
        context_mask = self.text_attention_mask(context_mask)
        attend = lambda attn, h: attn(h, plan)  # noqa: E731
        checkpointed = self.gradient_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            if checkpointed:
                tokens = torch.utils.checkpoint.checkpoint(self._block_forward, block, tokens, e6, attend, ctx,
                                                           context_mask, use_reentrant=False)
            else:
                tokens = self._block_forward(block, tokens, e6, attend, ctx, context_mask)
        return self.unpatchify(self.head(tokens, e), grid)

    def _run_chunk_blocks(self, tokens, e6, context_mask, cache: KVCache, write: bool) -> torch.Tensor:
        """forward_chunk's blocks through `chunk_runner` (ChunkBlocks' signature): tokens [B, n, D] ->
        [B, n, D]; context_mask bool [B, L_text] | None; the cache's text K/V were set by context_kv.
        The cache is written here, as KVCache.attend + commit would."""
        keys, values, cos, sin, text_k, text_v = cache.chunk_context()
        mask = (torch.ones(text_k.shape[1], text_k.shape[3], dtype=torch.bool, device=text_k.device)
                if context_mask is None else context_mask)
        tokens, k_rot, v, k_raw = self.chunk_runner(tokens, e6, keys, values, cos, sin, text_k, text_v, mask)
        if write:
            cache.store(k_rot, v, k_raw)
            cache.commit()
        return tokens

    @staticmethod
    def _block_forward(block, tokens, e6, attend, ctx, context_mask):
        return block(tokens, e6, attend, block.cross_attn.context_kv(*ctx), context_mask)

    def forward_chunk(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                      context_mask: torch.Tensor | None, cond_chunk: MotionCondition, cache: KVCache,
                      write: bool) -> torch.Tensor:
        """Streaming: velocity of one chunk x [B, C, Cf, h, w] attending to [cache | itself].

        Denoising passes use write=False (the cache is read, never changed). The one pass on the
        clean chunk uses write=True: its K/V join the sink or the window (rolling when full).
        cond_chunk = cond.chunk(a, b) for the chunk's latent frames [a, b).
        """
        self._check(x, timesteps, context)
        if x.shape[2] != cache.chunk_frames:
            raise ValueError(f"chunk has {x.shape[2]} frames, the cache expects {cache.chunk_frames}")
        tokens, grid = self.embed_inputs(x, self.condition_features(cond_chunk))
        if tuple(grid[1:]) != cache.token_grid:
            raise ValueError(f"token grid {grid[1:]} does not match the cache's {cache.token_grid}")
        e, e6 = self.embed_time(timesteps)
        image = cond_chunk.image_embeds
        kv = cache.context_kv(self.blocks, (context, image),
                              lambda c: self.embed_context(c[0], context_mask, c[1]))
        context_mask = self.text_attention_mask(context_mask)
        if self.chunk_runner is not None and image is None and not torch.is_grad_enabled():
            tokens = self._run_chunk_blocks(tokens, e6, context_mask, cache, write)
        else:
            for i, block in enumerate(self.blocks):
                attend = lambda attn, h, i=i: cache.attend(i, attn, h, write)  # noqa: E731
                tokens = block(tokens, e6, attend, kv[i], context_mask)
            if write:
                cache.commit()
        return self.unpatchify(self.head(tokens, e), grid)
