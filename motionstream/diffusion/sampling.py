"""Teacher prediction and sampling: the one place that turns a WanDiT into a velocity field.

    predict_velocity(model, z_t, t, text, cond, param) -> v        [B, C, F, h, w]
    sample(model, cond, text, null_text, ...) -> clean latents      [B, C, F, h, w] (normalised)

Output parameterisation around a prior (`TeacherParam`, tiny-cpu: output_skip "warp", skip_form
"mmse"): the network output F is a correction to a velocity built from a prior clip that the
conditions alone imply (condition_prior):

    "guide"  prior = the Wan-Move guide where it covers a cell, the first-frame latent elsewhere
    "warp"   prior = the guide where it covers a cell, elsewhere the first-frame latent warped
             backwards along the track displacements spread from the covered cells (a latent
             forward warp; at 256x144 with ~140 tracks it measured +1.0 dB PSNR and +2.4 dB in
             moving regions over "guide" on [world] val clips, both decoded by the VAE)
    "video"  prior = cond.prior: the image forward-warped along the tracks in pixels, VAE-encoded
             (conditioning.video_prior); decoded, it follows the tracks far better than "warp"
             (EPE 2.6 vs 9.0 px on [world] test clips, PSNR 18.9 vs 17.9 dB; frozen frame 9.4 px,
             15.8 dB), at the cost of one VAE encode of the warped clip per condition

and the velocity (apply_skip):

    damped   v = F + (z_t - prior) / max(t, skip_min_t): exact for F = 0 when z0 = prior, but the
             prior's error e enters F's target as e / max(t, skip_min_t); measured on cached
             clips with F = 0 the loss was 5-10x that of no skip at all for t < 0.3
    mmse     v = F + E[v | z_t] under z0 ~ N(prior, prior_var I): tends to (z_t - prior) at t = 1
             and to -z_t at t = 0; with F = 0 its loss was below the no-skip loss at every t
             (1.0-1.9 vs 2.0 with prior_var 1; the warp prior's error is ~0.9 per element)

With the motion condition dropped the guide is zero, so the prior is the frozen first frame. Every
user of the teacher (training, sampling, generate, distillation, streaming) must go through
predict_velocity / skip_term / apply_skip with the weights' TeacherParam (stored in config.json).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from motionstream.config import from_dict
from motionstream.diffusion.flow import DiffusionConfig, euler_sample, sampling_schedule
from motionstream.diffusion.guidance import guided_prediction
from motionstream.models.codec import load_codec
from motionstream.models.conditioning import MotionCondition, video_prior
from motionstream.models.folders import TEACHER_KIND, load_folder


@dataclass
class TeacherParam:
    """How the network output maps to a velocity (stored with the weights)."""

    output_skip: str = "none"      # the prior: "none" (v = network output) | "guide" | "warp" (module doc)
    skip_min_t: float = 0.25       # skip_form "damped": damping of the skip at low noise
    skip_form: str = "damped"      # "damped" | "mmse" (module doc)
    prior_var: float = 1.0         # skip_form "mmse": assumed variance of the prior's error (per element)


SKIP_MODES = ("none", "guide", "warp", "video")
WARP_SIGMA_CELLS = 1.5       # spread of the track displacements over uncovered cells (latent cells)
WARP_REACH = 3.0             # a cell further than ~this many sigmas from any covered cell keeps zero motion
WARP_SPATIAL_PENALTY = 1e-3  # per squared cell: among near-identical features, prefer the nearest source cell


def condition_prior(cond: "MotionCondition", mode: str = "guide") -> torch.Tensor:
    """The clip the conditions imply before any learning: [B, C, F, h, w].

    "guide": the guide where it covers a cell, the first-frame latent elsewhere.
    "warp":  the guide where it covers a cell; elsewhere the first-frame latent warped by the track
             displacements spread from the covered cells (a latent-space forward warp, see
             warp_prior). Frame k uses only frame k's guide, so a chunk's prior is causal.
    "video": cond.prior (conditioning.video_prior), computed where the condition is built.
    Without motion (no guide / no video prior) every mode gives the frozen first-frame latent.
    """
    first = cond.image_latent[:, :, :1]                                   # [B, C, 1, h, w]
    if mode == "video":
        return first.expand_as(cond.image_latent) if cond.prior is None else cond.prior
    if cond.guide is None or cond.guide_mask is None:
        return first.expand_as(cond.image_latent)
    if mode == "warp":
        return warp_prior(first[:, :, 0], cond.guide, cond.guide_mask)
    return cond.guide_mask * cond.guide + (1 - cond.guide_mask) * first


def video_prior_for(param: TeacherParam, encode, images, tracks, num_latent_frames: int,
                    temporal_factor: int) -> torch.Tensor | None:
    """The `prior` build_condition needs for weights with `param`: conditioning.video_prior for
    output_skip "video" (encode = VideoCodec.encode), None for every other mode (built from the guide)."""
    if param.output_skip != "video":
        return None
    if encode is None:
        raise ValueError("weights with the 'video' prior need the codec's encode function to build a condition")

    return video_prior(encode, images, tracks, num_latent_frames, temporal_factor)


def prior_encoder(param: TeacherParam, vae: str, device: torch.device | str = "cpu"):
    """VideoCodec.encode of the VAE `vae` when `param` needs the video prior, else None (nothing loaded)."""
    if param.output_skip != "video":
        return None

    return load_codec(vae, tiny_decoder=None).to(device).encode


def _gaussian_kernel(sigma: float, dtype) -> torch.Tensor:
    r = int(math.ceil(WARP_REACH * sigma))
    x = torch.arange(-r, r + 1, dtype=dtype)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return (g[:, None] * g[None, :])[None, None]                           # [1, 1, K, K]


def warp_prior(first: torch.Tensor, guide: torch.Tensor, guide_mask: torch.Tensor) -> torch.Tensor:
    """Latent forward warp of the first frame along the tracks the guide encodes.

    first [B, C, h, w]; guide [B, C, F, h, w]; guide_mask [B, 1, F, h, w] -> prior [B, C, F, h, w].
    The guide holds, at a track's cell in frame k, the first-frame feature of its start cell, so the
    start cell is recovered as the first-frame cell with the nearest feature (exact for one track
    per cell; a small spatial penalty picks the nearest of near-identical cells). The displacements
    of covered cells are spread over the frame by normalised Gaussian convolution, and uncovered
    cells sample the first frame backwards along them (bilinear); covered cells keep the guide.
    Cells out of reach of every covered cell keep zero motion (the first-frame feature).
    """

    b, c, f, h, w = guide.shape
    dtype = first.dtype
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype, device=first.device),
                            torch.arange(w, dtype=dtype, device=first.device), indexing="ij")
    pos = torch.stack([xs, ys], -1).reshape(h * w, 2)                      # [hw, 2] (x, y) in cells
    feats = first.flatten(2).transpose(1, 2)                               # [B, hw, C]
    kernel = _gaussian_kernel(WARP_SIGMA_CELLS, dtype).to(first.device)
    pad = kernel.shape[-1] // 2
    spatial = WARP_SPATIAL_PENALTY * torch.cdist(pos, pos) ** 2            # [hw, hw]
    out = []
    for k in range(f):
        g = guide[:, :, k].flatten(2).transpose(1, 2)                      # [B, hw, C]
        m = guide_mask[:, :, k]                                            # [B, 1, h, w]
        src = (torch.cdist(g, feats) ** 2 + spatial).argmin(-1)            # [B, hw]
        disp = (pos[None] - pos[src]).transpose(1, 2).reshape(b, 2, h, w)  # dst - src, cells
        num = F.conv2d((disp * m).reshape(b * 2, 1, h, w), kernel, padding=pad).reshape(b, 2, h, w)
        den = F.conv2d(m, kernel, padding=pad)
        flow = num / den.clamp_min(1e-6) * (den > 1e-3)
        # backward sampling: prior(p) = first(p - flow(p)); grid_sample wants (x, y) in [-1, 1]
        at = pos.reshape(1, h, w, 2) - flow.permute(0, 2, 3, 1)
        grid = torch.stack([(at[..., 0] + 0.5) / w * 2 - 1, (at[..., 1] + 0.5) / h * 2 - 1], -1)
        warped = F.grid_sample(first, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out.append(m * guide[:, :, k] + (1 - m) * warped)
    return torch.stack(out, 2)


def apply_skip(out: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor, prior: torch.Tensor | None,
               param: TeacherParam) -> torch.Tensor:
    """Network output -> velocity (the one implementation of the output parameterisation).

    out, z_t, prior [B, C, F, h, w] (prior None = no skip); t [B, F] flow time.
      damped: v = out + (z_t - prior) / max(t, skip_min_t)
      mmse:   v = out + v_prior,  v_prior = ((t (z_t - prior) - (1 - t) s z_t) / ((1 - t)^2 s + t^2)),
              s = prior_var: the exact expected velocity if z0 ~ N(prior, s I); it tends to the
              prior's straight line (z_t - prior) at t = 1 and to -z_t (= E[v | z_t = z0]) at t = 0,
              so the residual the network learns stays bounded at every t.
    """
    if prior is None:
        return out
    tt = t.to(z_t.dtype)[:, None, :, None, None]
    if param.skip_form == "damped":
        return out + (z_t - prior) / tt.clamp_min(param.skip_min_t)
    if param.skip_form != "mmse":
        raise ValueError(f"unknown skip_form {param.skip_form!r} (damped | mmse)")
    a, s = 1 - tt, param.prior_var
    return out + (tt * (z_t - prior) - a * s * z_t) / (a * a * s + tt * tt)


def skip_term(z_t: torch.Tensor, t: torch.Tensor, cond: "MotionCondition", param: TeacherParam) -> torch.Tensor | None:
    """The part of v_hat that does not come from the network (None for output_skip = "none")."""
    if param.output_skip == "none":
        return None
    if param.output_skip not in SKIP_MODES:
        raise ValueError(f"unknown output_skip {param.output_skip!r} ({' | '.join(SKIP_MODES)})")
    return apply_skip(torch.zeros_like(z_t), z_t, t, condition_prior(cond, param.output_skip), param)


def predict_velocity(model: torch.nn.Module, z_t: torch.Tensor, t: torch.Tensor,
                     text: tuple[torch.Tensor, torch.Tensor | None], cond: "MotionCondition",
                     param: TeacherParam, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """v_hat(z_t, t, c_t, c_m). z_t [B, C, F, h, w]; t [B, F] in [0, 1]; text = (tokens [B, L, D], mask [B, L])."""
    out = model(z_t, t, text[0], text[1], cond, attn_mask)
    skip = skip_term(z_t, t, cond, param)
    return out if skip is None else out + skip


def null_text_like(null_text: tuple[torch.Tensor, torch.Tensor | None], batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The empty-prompt embedding ([1, L, D] or [L, D]) repeated over a batch."""
    tok, mask = null_text
    if tok.dim() == 2:
        tok, mask = tok[None], (None if mask is None else mask[None])
    return tok.expand(batch, -1, -1), (None if mask is None else mask.expand(batch, -1))


@torch.no_grad()
def sample(model: torch.nn.Module, cond: "MotionCondition", text: tuple[torch.Tensor, torch.Tensor | None],
           null_text: tuple[torch.Tensor, torch.Tensor | None], param: TeacherParam, steps: int = 50,
           shift: float = 3.0, text_scale: float = 3.0, motion_scale: float = 1.5,
           generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
           progress: bool = False) -> torch.Tensor:
    """Euler on the shifted schedule with joint guidance (Eq. 2): clean normalised latents [B, C, F, h, w].

    cond: MotionCondition for the whole clip; text: (tokens [B, L, D], mask [B, L]); null_text: the
    empty-prompt embedding. Evaluations per step: 3 (both weights > 0), 2 (one), 1 (none).
    """
    b, c, f, h, w = cond.image_latent.shape
    if noise is None:
        noise = torch.randn(b, c, f, h, w, generator=generator, dtype=cond.image_latent.dtype).to(cond.image_latent.device)
    null = null_text_like(null_text, b)
    null = (null[0].to(text[0]), None if null[1] is None else null[1].to(noise.device))
    no_motion = cond.drop_motion()

    def velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        def predict(use_text: bool, use_motion: bool) -> torch.Tensor:
            return predict_velocity(model, z, t, text if use_text else null, cond if use_motion else no_motion, param)
        return guided_prediction(predict, text_scale, motion_scale)

    return euler_sample(velocity, noise, sampling_schedule(steps, shift), progress=progress)


def load_dit_folder(name_or_path: str | Path, device: torch.device | str = "cpu", kind: str = "dit"):
    """(WanDiT in eval mode, TeacherParam, metadata) of a DiT model folder (models/folders.py) of
    `kind`: "teacher", "student", or "dit" for either. Raises checkpoints.WeightsNotFound naming the
    path when missing."""
    model, meta = load_folder(name_or_path, kind, device)
    param = from_dict(TeacherParam, meta.get("teacher", {}), f"{name_or_path}/config.json:teacher")
    return model, param, meta


def load_teacher(name_or_path: str = "teacher-tiny-cpu"):
    """(WanDiT in eval mode, TeacherParam, DiffusionConfig, metadata) from a teacher model folder
    (a name in weights/ or a path). Raises checkpoints.WeightsNotFound naming the path when missing."""
    model, param, meta = load_dit_folder(name_or_path, kind=TEACHER_KIND)
    dcfg = from_dict(DiffusionConfig, meta.get("diffusion"), f"{name_or_path}/config.json:diffusion")
    return model, param, dcfg, meta
