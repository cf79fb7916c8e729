"""Sink + rolling-window KV cache for the causal student (paper Sec. 3.2, "Inference").

Layout of one layer's key/value buffer, in chunks of n = C * tokens_per_frame tokens:

    [ sink: S chunks | window: W chunks | current: 1 chunk ]        positions (in frames) = slot * C

* The first S chunks written form the sink. Their keys are stored AFTER RoPE, at their slot
  position, which is also their absolute position (the stream starts at 0).
* Later chunks go to the window. Window keys are also stored BEFORE RoPE (`window_raw`); a key is
  rotated by its position in the cache: window slot k sits at frame (S + k) * C. When the window is
  full, writing one more chunk rolls it (drops the oldest) and every window key is re-rotated from
  its raw copy at its new slot. Rotations only change at a write, so the rotated window keys are
  memoised in the key buffer until then ("rotated when read", computed once per write).
* The chunk being generated sits in the next free slot: at frame (S + filled window) * C, at most
  (S + W) * C. Positions are bounded, so chunk 10,000 costs the same as chunk 5.
* Denoising passes (write=False) put the current chunk's K/V in the current slot as scratch and
  never change what is filled; the one pass on the clean chunk (write=True) keeps it there and
  `commit()` advances the counters (rolling when full).
* Cross-attention K/V of the context (text; plus the CLIP image tokens of Wan I2V models) are
  computed once per stream and kept here, apart from the sink / window buffers: they never roll.

All counters are Python ints: no host syncs in the hot path, no allocation after construction
(except the text K/V, once per stream). Under autograd (DMD self-rollout) the cached K/V are read
detached and the current chunk's K/V are concatenated instead of written in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from motionstream.models.attention import SelfAttention, merge_heads
from motionstream.models.rope import apply_rope, rope_tables

if TYPE_CHECKING:
    from motionstream.models.dit import DiTConfig


def chunk_attention(attn: SelfAttention, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor,
                    values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Self-attention of a chunk x [B, n, dim] to the cache before it and to itself.

    keys, values [B, H, ctx, d]: the cache before the chunk (keys RoPE-rotated; ctx may be 0); cos, sin
    [n, d/2]: the chunk's slot. Returns (out [B, n, dim], and the chunk's k_rot, v, k_raw [B, H, n, d]:
    what a write pass stores). Read-only: KVCache.attend and the exported models/dit.ChunkBlocks share it.
    """
    q, k, v = attn.qkv(x)
    q, k_rot = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    out = F.scaled_dot_product_attention(q, torch.cat([keys, k_rot], 2), torch.cat([values, v], 2))
    return attn.o(merge_heads(out)), k_rot, v, k


class KVCache:
    """Preallocated K/V for all layers of one stream of `batch` items.

    model_cfg: DiTConfig; chunk_frames C (latent frames per chunk); sink_chunks S; window_chunks W;
    token_grid (rows, cols) of tokens per latent frame (latent h, w divided by the patch size).
    """

    def __init__(self, model_cfg: "DiTConfig", batch: int, chunk_frames: int, sink_chunks: int,
                 window_chunks: int, token_grid: tuple[int, int], device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32):
        if chunk_frames < 1 or sink_chunks < 0 or window_chunks < 0:
            raise ValueError(f"bad cache shape c{chunk_frames}s{sink_chunks}w{window_chunks}")
        self.cfg = model_cfg
        self.chunk_frames, self.sink_chunks, self.window_chunks = chunk_frames, sink_chunks, window_chunks
        self.token_grid = tuple(token_grid)
        self.chunk_tokens = chunk_frames * token_grid[0] * token_grid[1]
        layers, heads = model_cfg.num_layers, model_cfg.num_heads
        head_dim = model_cfg.dim // heads
        slots = sink_chunks + window_chunks + 1
        n = self.chunk_tokens
        self.keys = torch.zeros(layers, batch, heads, slots * n, head_dim, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        self.window_raw = torch.zeros(layers, batch, heads, window_chunks * n, head_dim, device=device, dtype=dtype)
        self.pending_raw = torch.zeros(layers, batch, heads, n, head_dim, device=device, dtype=dtype)
        # RoPE of every slot, [slots, n, head_dim/2]: slot p covers frames p*C .. p*C + C-1
        cos, sin = rope_tables(torch.arange(slots * chunk_frames), token_grid[0], token_grid[1], head_dim,
                               model_cfg.rope_theta)                       # float32, applied in float32
        self.slot_cos, self.slot_sin = cos.view(slots, n, -1).to(device), sin.view(slots, n, -1).to(device)
        self.cross_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.context_ref: tuple[torch.Tensor | None, ...] | None = None
        self._stacked_kv: tuple[list, torch.Tensor, torch.Tensor] | None = None   # (cross_kv it stacks, k, v)
        self.num_written = 0

    # -------------------------------------------------------------- counters
    @property
    def config_name(self) -> str:
        return f"c{self.chunk_frames}s{self.sink_chunks}w{self.window_chunks}"

    @property
    def sink_filled(self) -> int:
        return min(self.num_written, self.sink_chunks)

    @property
    def window_filled(self) -> int:
        return min(max(self.num_written - self.sink_chunks, 0), self.window_chunks)

    @property
    def current_slot(self) -> int:
        """Slot (= cache position in chunks) of the chunk being generated; <= S + W."""
        return self.sink_filled + self.window_filled

    def reset(self) -> None:
        """Start a new stream (buffers are kept; nothing beyond the counters is ever read)."""
        self.num_written = 0
        self.cross_kv, self.context_ref = None, None

    # ------------------------------------------------------------- attention
    def attend(self, layer: int, attn: SelfAttention, x: torch.Tensor, write: bool) -> torch.Tensor:
        """Self-attention of the current chunk x [B, n, dim] to [cache | itself] in `layer`; a write pass
        stores the chunk's K/V (detached) in its slot."""
        slot, n = self.current_slot, self.chunk_tokens
        ctx = slot * n
        keys, values = self.keys[layer], self.values[layer]
        out, k_rot, v, k = chunk_attention(attn, x, self.slot_cos[slot], self.slot_sin[slot], keys[:, :, :ctx],
                                           values[:, :, :ctx])
        if write:
            keys[:, :, ctx:ctx + n] = k_rot.detach()
            values[:, :, ctx:ctx + n] = v.detach()
            self.pending_raw[layer] = k.detach()
        return out

    def chunk_context(self) -> tuple[torch.Tensor, ...]:
        """What models/dit.ChunkBlocks reads besides the chunk: keys, values [L, B, H, ctx, d] before the
        current slot, the slot's cos, sin [n, d/2], and the text K/V of every layer (context_kv, text-only
        models) stacked, text_k, text_v [L, B, H, L_text, d], stacked once per context."""
        slot = self.current_slot
        ctx = slot * self.chunk_tokens
        if self._stacked_kv is None or self._stacked_kv[0] is not self.cross_kv:
            self._stacked_kv = (self.cross_kv, torch.stack([k for k, _ in self.cross_kv]),
                                torch.stack([v for _, v in self.cross_kv]))
        return (self.keys[:, :, :, :ctx], self.values[:, :, :, :ctx], self.slot_cos[slot], self.slot_sin[slot],
                *self._stacked_kv[1:])

    # ---------------------------------------------------------------- writes
    def store(self, k_rot: torch.Tensor, v: torch.Tensor, k_raw: torch.Tensor) -> None:
        """A write pass's K/V of every layer at once (k_rot, v, k_raw [L, B, H, n, d]), as attend()
        stores them layer by layer; commit() follows."""
        ctx, n = self.current_slot * self.chunk_tokens, self.chunk_tokens
        self.keys[:, :, :, ctx:ctx + n] = k_rot
        self.values[:, :, :, ctx:ctx + n] = v
        self.pending_raw.copy_(k_raw)

    def commit(self) -> None:
        """After a write pass over all layers: the current chunk joins the sink or the window."""
        s, w, n = self.sink_chunks, self.window_chunks, self.chunk_tokens
        if self.num_written >= s and w > 0:
            filled = self.window_filled
            if filled < w:
                # the rotated key/value are already in slot s + filled; keep the raw key for later rolls
                self.window_raw[:, :, :, filled * n:(filled + 1) * n] = self.pending_raw
            else:
                self.roll()
        self.num_written += 1

    def roll(self) -> None:
        """Drop the oldest window chunk, append the current slot's chunk, re-rotate the window keys.

        Called by commit() when the window is full; the current chunk's value is in the current slot
        and its raw key in `pending_raw`.
        """
        s, w, n = self.sink_chunks, self.window_chunks, self.chunk_tokens
        win = slice(s * n, (s + w) * n)
        if w > 1:
            self.window_raw[:, :, :, :-n] = self.window_raw[:, :, :, n:].clone()
            self.values[:, :, :, s * n:(s + w - 1) * n] = self.values[:, :, :, (s + 1) * n:(s + w) * n].clone()
        self.window_raw[:, :, :, -n:] = self.pending_raw
        self.values[:, :, :, (s + w - 1) * n:(s + w) * n] = self.values[:, :, :, (s + w) * n:]
        cos = self.slot_cos[s:s + w].flatten(0, 1)
        sin = self.slot_sin[s:s + w].flatten(0, 1)
        self.keys[:, :, :, win] = apply_rope(self.window_raw, cos, sin)

    def refresh_sink(self) -> bool:
        """Re-anchor the sink on the newest S window chunks: their raw keys rotated at the sink's slot
        positions, their values copied (dynamic sink refresh, stream/engine.py). False when the window
        does not yet hold S chunks (nothing changed)."""
        s, n = self.sink_chunks, self.chunk_tokens
        filled = self.window_filled
        if s == 0 or filled < s:
            return False
        raw = self.window_raw[:, :, :, (filled - s) * n:filled * n]
        src = slice(filled * n, (s + filled) * n)        # cache slots s + filled - s .. s + filled - 1
        sink_cos, sink_sin = self.slot_cos[:s].flatten(0, 1), self.slot_sin[:s].flatten(0, 1)
        self.keys[:, :, :, :s * n] = apply_rope(raw, sink_cos, sink_sin)     # sink keys are stored rotated
        self.values[:, :, :, :s * n] = self.values[:, :, :, src].clone()
        return True

    # ------------------------------------------------------------ text K/V
    def context_kv(self, blocks, context: tuple[torch.Tensor | None, ...], embed) -> list[tuple[torch.Tensor, ...]]:
        """Per-layer cross-attention K/V of the context (text, and the CLIP image tokens of I2V models).

        context: the tensors the context is made of, e.g. (text tokens, image embeds | None);
        embed(context) -> the embedded context tuple each block's cross_attn.context_kv takes. Computed
        once per stream (per context tensors, compared by identity), kept unless training. The context
        K/V live here, apart from the self-attention sink / window: they never roll.
        """
        if torch.is_grad_enabled():
            ctx = embed(context)
            return [b.cross_attn.context_kv(*ctx) for b in blocks]
        same = self.context_ref is not None and all(a is b for a, b in zip(self.context_ref, context))
        if self.cross_kv is None or not same:
            ctx = embed(context)
            self.cross_kv = [b.cross_attn.context_kv(*ctx) for b in blocks]
            self.context_ref = tuple(context)
        return self.cross_kv
