"""Conditioning of the motion DiT: image (Wan I2V style), track map (Eq. 1), trajectory guide.

    MotionCondition
      image_latent [B, C_lat, F, h, w]   first-frame latent in latent frame 0, zeros elsewhere
      image_mask   [B, m, F, h, w]       1 in latent frame 0 (the known frame), 0 elsewhere (m = 4 as Wan I2V)
      track_map    [B, d, T, h, w]       Eq. 1 map at VIDEO frame rate, d = 64, T = 1 + 4(F-1) for a
                                         whole clip (4F for a chunk that does not start at frame 0)
      guide        [B, C_lat, F, h, w] | None   Wan-Move trajectory guide (see build_guide)
      guide_mask   [B, 1, F, h, w] | None       1 where the guide has content
      image_embeds [B, L_img, image_dim] | None CLIP tokens of the conditioning image (Wan I2V's image
                                         branch, dit.image_dim > 0): one per clip, not per frame, so
                                         chunk() keeps them whole; part of the cross-attention context

All values are float32 (or the model dtype). `h, w` is the latent grid (video size / VAE stride), the
same grid as the noisy latents, so every part concatenates by channel before the patch embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from motionstream.models.frames import frames_to_tensor
from motionstream.models.track_head import TrackHead
from motionstream.tracks.embed import rasterize
from motionstream.tracks.paste import is_drag_input, segment_paste
from motionstream.tracks.warp import clip_flows, forward_warp

if TYPE_CHECKING:
    from motionstream.models.dit import DiTConfig
    from motionstream.tracks.trackset import TrackSet


@dataclass
class MotionCondition:
    image_latent: torch.Tensor
    image_mask: torch.Tensor
    track_map: torch.Tensor
    guide: torch.Tensor | None = None
    guide_mask: torch.Tensor | None = None
    prior: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    temporal_factor: int = 4          # video frames per latent frame (VAE temporal compression)

    @property
    def num_frames(self) -> int:
        """Latent frames F."""
        return int(self.image_latent.shape[2])

    def _tensors(self) -> dict[str, torch.Tensor | None]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "temporal_factor"}

    def chunk(self, start: int, stop: int) -> "MotionCondition":
        """Latent frames [start, stop) and the matching video frames of track_map (image_embeds whole).

        Valid on a condition that starts at latent frame 0 (as build_condition returns)."""
        a, b = TrackHead.video_frames(start, stop, self.temporal_factor)
        lat = lambda t: None if t is None else t[:, :, start:stop]  # noqa: E731
        return replace(self, image_latent=lat(self.image_latent), image_mask=lat(self.image_mask),
                       track_map=self.track_map[:, :, a:b], guide=lat(self.guide), guide_mask=lat(self.guide_mask),
                       prior=lat(self.prior))

    def drop_motion(self) -> "MotionCondition":
        """The null motion condition (motion CFG, Eq. 2): track map, guide and guide mask zeroed, and
        no video prior (the prior falls back to the frozen first frame, see sampling.condition_prior).
        The image (latent, mask, image_embeds) is not motion and stays."""
        zero = lambda t: None if t is None else torch.zeros_like(t)  # noqa: E731
        return replace(self, track_map=zero(self.track_map), guide=zero(self.guide), guide_mask=zero(self.guide_mask),
                       prior=None)

    def to(self, *args, **kwargs) -> "MotionCondition":
        """Tensor.to on every part (device and/or dtype)."""
        return replace(self, **{k: None if v is None else v.to(*args, **kwargs) for k, v in self._tensors().items()})

    @staticmethod
    def cat(conds: Sequence["MotionCondition"]) -> "MotionCondition":
        """Join conditions along the batch dim (e.g. conditional + null for CFG in one batch)."""
        out = {}
        for name in conds[0]._tensors():
            parts = [getattr(c, name) for c in conds]
            if any(p is None for p in parts):
                if not all(p is None for p in parts):
                    raise ValueError(f"MotionCondition.cat: {name} is None in some conditions only")
                out[name] = None
            else:
                out[name] = torch.cat(parts, dim=0)
        return replace(conds[0], **out)


def image_condition(first_latent: torch.Tensor, num_frames: int, mask_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan I2V image conditioning: (latent [B, C, F, h, w] with frame 0 = first_latent, mask [B, m, F, h, w])."""
    b, c, h, w = first_latent.shape
    latent = first_latent.new_zeros(b, c, num_frames, h, w)
    latent[:, :, 0] = first_latent
    mask = first_latent.new_zeros(b, mask_channels, num_frames, h, w)
    mask[:, :, 0] = 1.0
    return latent, mask


def _cells(tracks: "TrackSet", stride: int, h: int, w: int, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat cell index long [N], usable bool [N]) of every track at video `frame`."""
    xy = torch.from_numpy(np.floor(tracks.tracks[frame] / stride).astype(np.int64))
    usable = torch.from_numpy(tracks.conditioning_mask()[frame].copy())
    usable &= (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    return (xy[:, 1].clamp(0, h - 1) * w + xy[:, 0].clamp(0, w - 1)), usable


def build_guide(first_latent: torch.Tensor, tracks: "TrackSet", num_frames: int, stride: int,
                temporal_factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan-Move trajectory guide for one clip: (guide [C, F, h, w], coverage mask [1, F, h, w]).

    For each latent frame k >= 1, every track usable (visible and inside) at video frame 0 and at
    video frame 4k (the last video frame of latent frame k) copies the first frame's latent feature
    at its start cell into its cell at frame 4k. Several tracks landing in one cell are averaged.
    Latent frame 0 stays empty: it already is the image condition.
    """
    c, h, w = first_latent.shape
    guide = first_latent.new_zeros(c, num_frames, h * w)
    count = first_latent.new_zeros(num_frames, h * w)
    src, src_ok = _cells(tracks, stride, h, w, 0)
    feats = first_latent.reshape(c, h * w)[:, src.to(first_latent.device)]          # [C, N]
    for k in range(1, num_frames):
        dst, dst_ok = _cells(tracks, stride, h, w, temporal_factor * k)
        ok = (src_ok & dst_ok).to(first_latent.device)
        dst = dst.to(first_latent.device)[ok]
        guide[:, k].index_add_(1, dst, feats[:, ok])
        count[k].index_add_(0, dst, torch.ones_like(dst, dtype=count.dtype))
    guide = guide / count.clamp(min=1.0)
    return guide.view(c, num_frames, h, w), (count > 0).to(first_latent.dtype).view(1, num_frames, h, w)


def video_prior(encode: "Callable[[torch.Tensor], torch.Tensor]", images: "Sequence[np.ndarray]",
                tracks: "Sequence[TrackSet]", num_latent_frames: int, temporal_factor: int = 4,
                drag_paste: bool = False) -> torch.Tensor:
    """The "video" prior of a batch: [B, C_lat, F, h, w] normalised latents.

    Each image (uint8 [H, W, 3]) is forward-warped along its tracks in pixels (tracks.warp), one
    frame per video frame (1 + temporal_factor (F - 1)), and the clip is encoded by `encode`
    (VideoCodec.encode: video [1, 3, T, H, W] in [-1, 1] -> latents). A pixel warp keeps sub-cell
    motion and the VAE sees the motion inside each latent frame, which a latent-space warp cannot:
    on [world] test clips its decoded EPE was 2.6 px vs 9.0 for the latent "warp" prior
    (frozen first frame: 9.4).

    With drag_paste, an item whose tracks are the studio's drags and pins (tracks/paste.is_drag_input)
    is moved by segment paste instead of the warp, as the stream's `drag_paste` does.
    """

    num_video = 1 + temporal_factor * (num_latent_frames - 1)
    out = []
    for image, ts in zip(images, tracks):
        if ts.num_frames < num_video:
            raise ValueError(f"video_prior: tracks have {ts.num_frames} frames, {num_latent_frames} latent frames "
                             f"need {num_video}")
        along = ts.frames(0, num_video)
        moved = segment_paste(image, along) if drag_paste and is_drag_input(along) else forward_warp(image, along)
        out.append(encode(frames_to_tensor(moved)))
    return torch.cat(out)


PRIORS = ("encode", "latent")     # how a "video" prior is made: video_prior | latent_video_prior


def warp_latent(anchor_latent: torch.Tensor, flows: np.ndarray, temporal_factor: int,
                first_chunk: bool, fill: tuple[torch.Tensor, np.ndarray] | None = None) -> torch.Tensor:
    """The "video" prior warped in latent space: [1, C_lat, n, h, w] from a latent [1, C_lat, h, w] and
    the backward pixel flows [T, H, W, 2] of T video frames (tracks.warp.frame_flow). Latent frame j
    is the latent moved by each of its video frames' flows (area-averaged onto the latent grid and
    scaled to its cells), averaged over them; with first_chunk, video frame 0 alone makes latent frame
    0 (T = 1 + 4(n-1)), else T = 4n. Stands in for encoding the warped pixels (video_prior), whose
    VAE encode costs as many FLOPs per streamed chunk as the DiT.

    fill = (latent [1, C_lat, h, w], weights float [T, H, W] in [0, 1]): each moved frame is blended
    toward that latent by its weights (area-averaged onto the latent grid), e.g. the inpainted plate
    where segment paste's objects left (tracks/paste.paste_flows)."""

    _, _, h, w = anchor_latent.shape
    t, height, width = flows.shape[:3]
    if (t - first_chunk) % temporal_factor:
        raise ValueError(f"warp_latent: {t} flows do not fill latent frames of {temporal_factor} video frames")
    small = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in flows])
    small = small * np.array([w / width, h / height], np.float32)
    # grid_sample reads pixel centres on [-1, 1] (align_corners=False)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    sx = (gx - small[..., 0] + 0.5) / w * 2 - 1
    sy = (gy - small[..., 1] + 0.5) / h * 2 - 1
    grid = torch.from_numpy(np.stack([sx, sy], -1)).to(anchor_latent)
    moved = F.grid_sample(anchor_latent.expand(t, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                          align_corners=False)                                         # [T, C, h, w]
    if fill is not None:
        fill_latent, weights = fill
        small_weights = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA) for m in weights])
        blend = torch.from_numpy(small_weights)[:, None].to(anchor_latent)              # [T, 1, h, w]
        moved = moved * (1 - blend) + fill_latent.to(anchor_latent) * blend
    groups = [moved[:1]] if first_chunk else []
    groups += [moved[i:i + temporal_factor].mean(0, keepdim=True) for i in range(int(first_chunk), t, temporal_factor)]
    return torch.cat(groups).permute(1, 0, 2, 3)[None]


def latent_video_prior(first_latents: torch.Tensor, tracks: "Sequence[TrackSet]", num_latent_frames: int,
                       width: int, height: int, temporal_factor: int = 4) -> torch.Tensor:
    """video_prior made in latent space (warp_latent): [B, C_lat, F, h, w] from the first frames'
    latents [B, C_lat, h, w] and their tracks, in a width x height video."""

    num_video = 1 + temporal_factor * (num_latent_frames - 1)
    return torch.cat([warp_latent(latent[None], np.stack(list(clip_flows(ts, width, height, num_video))),
                                  temporal_factor, first_chunk=True)
                      for latent, ts in zip(first_latents, tracks)])


def _checked_prior(prior: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    if prior is not None and prior.shape != shape:
        raise ValueError(f"build_condition: prior {tuple(prior.shape)} does not match the latents {tuple(shape)}")
    return prior


def build_condition(first_latent: torch.Tensor, tracks: "list[TrackSet]", num_latent_frames: int,
                    cfg: "DiTConfig", ids: "Sequence[np.ndarray | None] | np.ndarray | None" = None,
                    prior: torch.Tensor | None = None) -> MotionCondition:
    """Everything the DiT needs besides noise and text, for a clip of `num_latent_frames` latent frames.

    first_latent: [B, C_lat, h, w] latent of the conditioning image.
    tracks: one TrackSet per batch item in pixel coordinates of the video (width = w * stride), with
      at least T = 1 + 4(F-1) frames (extra frames are ignored).
    ids: per-item track IDs for the sinusoidal embedding (passed to rasterize), or one array for all.
    prior: the video prior [B, C_lat, F, h, w] (video_prior), for weights with output_skip "video".
    """

    b, _, h, w = first_latent.shape
    if len(tracks) != b:
        raise ValueError(f"build_condition: {len(tracks)} TrackSets for a batch of {b}")
    tf = cfg.temporal_factor
    num_video = 1 + tf * (num_latent_frames - 1)
    if ids is None or isinstance(ids, np.ndarray):
        ids = [ids] * b
    maps, guides, guide_masks = [], [], []
    for ts, item_ids, lat in zip(tracks, ids, first_latent):
        if ts.num_frames < num_video:
            raise ValueError(f"build_condition: tracks have {ts.num_frames} frames, "
                             f"{num_latent_frames} latent frames need {num_video}")
        stride = ts.width // w
        if stride * w != ts.width or stride * h != ts.height:
            raise ValueError(f"build_condition: tracks of a {ts.width}x{ts.height} video do not match a "
                             f"{w}x{h} latent grid with an integer stride")
        ts = ts.frames(0, num_video)
        cm = rasterize(ts, stride, dim=cfg.track_dim, ids=item_ids)                 # [T, h, w, d]
        maps.append(torch.from_numpy(np.ascontiguousarray(cm)).permute(3, 0, 1, 2))
        if cfg.use_guide:
            g, gm = build_guide(lat, ts, num_latent_frames, stride, tf)
            guides.append(g)
            guide_masks.append(gm)
    latent, mask = image_condition(first_latent, num_latent_frames, cfg.image_mask_channels)
    track_map = torch.stack(maps).to(device=first_latent.device, dtype=first_latent.dtype)
    return MotionCondition(
        image_latent=latent, image_mask=mask, track_map=track_map,
        guide=torch.stack(guides) if guides else None,
        guide_mask=torch.stack(guide_masks) if guide_masks else None,
        prior=_checked_prior(prior, latent.shape),
        temporal_factor=tf,
    )
