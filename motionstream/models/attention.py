"""Attention layers of the Wan DiT: self-attention with RMS qk-norm + 3D RoPE, text (+ image) cross-attention.

Parameter names follow Wan 2.1's original layout (q, k, v, o, norm_q, norm_k) so its checkpoints
load by name. All attention goes through F.scaled_dot_product_attention (boolean masks: True =
attend), which has CPU forward and backward kernels.

Shapes: x [B, L, dim]; heads are split as [B, H, L, head_dim].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from motionstream.models.rope import apply_rope


class RMSNorm(nn.Module):
    """RMS norm over the last dim with a learned scale (Wan applies it over all heads at once)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (stable under bf16), cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).type_as(x)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, L, H*d] -> [B, H, L, d]."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, L, d] -> [B, L, H*d]."""
    return x.transpose(1, 2).flatten(2)


class SelfAttention(nn.Module):
    """Multi-head self-attention; q and k are RMS-normalised (over all heads) before RoPE."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v [B, H, L, d], q and k normalised but NOT yet rotated."""
        h = self.num_heads
        return (split_heads(self.norm_q(self.q(x)), h), split_heads(self.norm_k(self.k(x)), h),
                split_heads(self.v(x), h))

    def forward(self, x: torch.Tensor, rope: "RopePlan") -> torch.Tensor:
        """Full-sequence attention over x [B, L, dim] as planned by `rope` (positions, mask, sink copies)."""
        q, k, v = self.qkv(x)
        k_raw = k
        q = apply_rope(q, rope.cos, rope.sin)
        k = apply_rope(k, rope.cos, rope.sin)
        if rope.sink_copies:
            # Sink keys seen from later chunks sit at their cache position, not their absolute one:
            # one extra copy of the sink keys per such chunk, rotated by its own shift (see dit.py).
            n = rope.sink_tokens
            ks = [k] + [apply_rope(k_raw[:, :, :n], c, s) for c, s in rope.sink_copies]
            vs = [v] + [v[:, :, :n]] * len(rope.sink_copies)
            k, v = torch.cat(ks, dim=2), torch.cat(vs, dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=rope.mask)
        return self.o(merge_heads(out))


class CrossAttention(SelfAttention):
    """Attention from video tokens to text tokens (no RoPE). The text K/V can be precomputed once."""

    def context_kv(self, context: torch.Tensor, image: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """k, v [B, H, L_text, d] of embedded text tokens context [B, L_text, dim] (`image`: unused here)."""
        return split_heads(self.norm_k(self.k(context)), self.num_heads), split_heads(self.v(context), self.num_heads)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor],
                context_mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, L, dim], kv from context_kv, context_mask bool [B, L_text] (True = real token) | None."""
        q = split_heads(self.norm_q(self.q(x)), self.num_heads)
        mask = None if context_mask is None else context_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask)
        return self.o(merge_heads(out))


class ImageCrossAttention(CrossAttention):
    """Cross-attention of Wan's image-to-video blocks: text tokens plus CLIP image tokens.

    The image tokens have their own key / value projections (k_img, v_img, RMS norm_k_img; Wan 2.1
    WanI2VCrossAttention). Queries attend to the text and to the image separately; the two results
    are summed before the output projection. No mask on the image side: all its tokens are real.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float):
        super().__init__(dim, num_heads, qk_norm, eps)
        self.k_img = nn.Linear(dim, dim)
        self.v_img = nn.Linear(dim, dim)
        self.norm_k_img = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def context_kv(self, context: torch.Tensor, image: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """(k, v, k_img, v_img) [B, H, L, d] of embedded text [B, L_text, dim] and image tokens [B, L_img, dim]."""
        if image is None:
            raise ValueError("this DiT has the CLIP image branch (dit.image_dim > 0): the condition needs image_embeds")
        h = self.num_heads
        return (*super().context_kv(context),
                split_heads(self.norm_k_img(self.k_img(image)), h), split_heads(self.v_img(image), h))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, ...], context_mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, L, dim], kv from context_kv, context_mask bool [B, L_text] (True = real token) | None."""
        k, v, k_img, v_img = kv
        q = split_heads(self.norm_q(self.q(x)), self.num_heads)
        mask = None if context_mask is None else context_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask) + F.scaled_dot_product_attention(q, k_img, v_img)
        return self.o(merge_heads(out))


class RopePlan:
    """What one full-sequence forward needs for self-attention, computed once and shared by all layers.

    cos, sin      [L, head_dim/2]  rotation of every token (time index = its frame position)
    mask          bool [L, L + copies * sink_tokens] | None (None = bidirectional)
    sink_copies   list of (cos, sin) [sink_tokens, head_dim/2]: extra rotations of the sink keys
    sink_tokens   number of tokens at the start of the sequence that form the sink
    """

    def __init__(self, cos, sin, mask=None, sink_copies=(), sink_tokens=0):
        self.cos, self.sin, self.mask = cos, sin, mask
        self.sink_copies, self.sink_tokens = list(sink_copies), sink_tokens
