"""Latent / text / track cache of [world] training clips, so teacher training never renders or encodes.

One file per clip, written atomically (temp + rename), so the builder is resumable and a trainer
can read the directory while the builder is still adding to it:

    DIR/meta.json                    codec + config it was built with (a cache never mixes codecs)
    DIR/clips/SEED.npz               one clip:
        latents     float16 [C, F, h, w]   normalised latents from the FROZEN VAE encoder
        tracks      float32 [T, N, 2]      the full grid TrackSet (pixel coords at width x height)
        visibility  bool    [T, N]
        first_frame uint8   [H, W, 3]
        moving      float16 [F, h, w]      fraction of each latent cell's pixels that belong to a
                                           moving layer in that latent frame's video frames, or did
                                           at frame 0 (so disoccluded cells count as moving), in [0, 1]
        text_key    str                    sha1 of the caption -> DIR/texts/KEY.npz
        caption     str
    DIR/texts/KEY.npz                tokens float16 [L, D], mask bool [L]  (deduplicated by caption;
                                     the empty prompt, the null text of training, is always there)

Temporal layout follows the VAE: latent frame 0 = video frame 0, latent frame k >= 1 = video frames
4k-3..4k. A prefix of F' latent frames is the cache of the first 1 + 4 (F' - 1) video frames
(causal encoder), which is how training uses fewer frames early on.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from motionstream.models.codec import frames_to_tensor
from motionstream.tracks.trackset import TrackSet

CACHE_VERSION = 1


def text_key(caption: str) -> str:
    return hashlib.sha1(caption.encode("utf-8")).hexdigest()[:16]


def latent_moving_mask(moving: np.ndarray, spatial_stride: int, temporal_stride: int) -> np.ndarray:
    """bool [T, H, W] moving-pixel mask -> float32 [F, H/s, W/s] moving fraction per latent cell.

    Latent frame k takes the max over its video frames (4k-3..4k; frame 0 alone for k = 0) and over
    frame 0 too, so the cells an object leaves (disocclusions) count as moving.
    """
    t, h, w = moving.shape
    s = spatial_stride
    hc, wc = -(-h // s), -(-w // s)
    pad = np.zeros((t, hc * s, wc * s), np.float32)
    pad[:, :h, :w] = moving
    frac = pad.reshape(t, hc, s, wc, s).mean((2, 4))  # [T, hc, wc]
    num_latent = 1 + (t - 1) // temporal_stride
    out = np.empty((num_latent, hc, wc), np.float32)
    out[0] = frac[0]
    for k in range(1, num_latent):
        lo, hi = temporal_stride * (k - 1) + 1, temporal_stride * k + 1
        out[k] = np.maximum(frac[lo:hi].max(0), frac[0])
    return out


@dataclass
class CachedClip:
    """One training example, as stored. latents [C, F, h, w] float32; moving [F, h, w] float32."""

    seed: int
    latents: torch.Tensor
    tracks: TrackSet
    first_frame: np.ndarray
    moving: torch.Tensor
    caption: str
    text_tokens: torch.Tensor   # [L, D] float32
    text_mask: torch.Tensor     # [L] bool

    def prefix(self, num_latent_frames: int, temporal_stride: int) -> "CachedClip":
        """The first `num_latent_frames` latent frames and their 1 + 4 (F - 1) video frames of tracks."""
        n_video = 1 + temporal_stride * (num_latent_frames - 1)
        return CachedClip(self.seed, self.latents[:, :num_latent_frames], self.tracks.frames(0, n_video),
                          self.first_frame, self.moving[:num_latent_frames], self.caption, self.text_tokens,
                          self.text_mask)


# --------------------------------------------------------------------- building
def cache_meta(codec_name: str, cfg_name: str, width: int, height: int, num_frames: int, fps: float,
               text_model: str) -> dict[str, Any]:
    return {"version": CACHE_VERSION, "codec": codec_name, "config": cfg_name, "width": width, "height": height,
            "num_frames": num_frames, "fps": fps, "text_model": text_model}


def _check_meta(root: Path, meta: dict[str, Any]) -> None:
    path = root / "meta.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != meta:
            raise ValueError(f"cache {root} was built with {old}, not {meta}: use another --cache folder")
    else:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
        os.replace(tmp, path)


def _atomic_savez(path: Path, **arrays: Any) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def build_cache(root: str | Path, seeds: list[int], render, codec, text_encoder, meta: dict[str, Any],
                batch: int = 1, progress: bool = True, log=None) -> int:
    """Render, encode and store every seed not cached yet; returns the number of clips written.

    render(seed) -> a [world] Clip (frames uint8 [T,H,W,3], tracks, caption, moving_mask).
    codec: a VideoCodec (encode(video [B,3,T,H,W] in [-1,1]) -> normalised latents).
    text_encoder: encode(list[str]) -> (tokens [B,L,D], mask [B,L]).
    """

    root = Path(root)
    _check_meta(root, meta)
    (root / "clips").mkdir(exist_ok=True)
    (root / "texts").mkdir(exist_ok=True)
    todo = [s for s in seeds if not (root / "clips" / f"{s}.npz").is_file()]
    bar = tqdm(total=len(seeds), initial=len(seeds) - len(todo), desc="cache", unit="clip", disable=not progress)
    written, t0 = 0, time.time()
    for i in range(0, len(todo), batch):
        group = [render(s) for s in todo[i:i + batch]]
        with torch.no_grad():
            video = torch.cat([frames_to_tensor(c.frames) for c in group])
            latents = codec.encode(video).float().cpu().numpy()
        # the empty prompt is the null text condition of training (text dropout)
        captions = [c.caption for c in group] + [""]
        new_caps = sorted({c for c in captions if not (root / "texts" / f"{text_key(c)}.npz").is_file()})
        if new_caps:
            with torch.no_grad():
                tokens, mask = text_encoder.encode(new_caps)
            for cap, tok, m in zip(new_caps, tokens, mask):
                _atomic_savez(root / "texts" / f"{text_key(cap)}.npz", tokens=tok.float().numpy().astype(np.float16),
                              mask=m.numpy().astype(bool), caption=np.array(cap))
        for clip, lat in zip(group, latents):
            moving = latent_moving_mask(clip.moving_mask, codec.spatial_stride, codec.temporal_stride)
            _atomic_savez(root / "clips" / f"{clip.seed}.npz", latents=lat.astype(np.float16),
                          tracks=clip.tracks.tracks, visibility=clip.tracks.visibility,
                          first_frame=clip.frames[0], moving=moving.astype(np.float16),
                          text_key=np.array(text_key(clip.caption)), caption=np.array(clip.caption),
                          fps=np.array(clip.tracks.fps))
            written += 1
        bar.update(len(group))
        if log is not None and written % 50 < len(group):
            log(f"cache {root}: {len(seeds) - len(todo) + written}/{len(seeds)} clips, "
                f"{written / (time.time() - t0):.2f} clips/s")
    bar.close()
    return written


# ---------------------------------------------------------------------- reading
class TeacherCache:
    """Reader over a (possibly still growing) cache folder. Call `refresh()` to pick up new clips."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / "meta.json").is_file():
            raise FileNotFoundError(f"no teacher cache at {self.root} (meta.json missing); build it with "
                                    "`motionstream train teacher-cache --config ...`")
        self.meta = json.loads((self.root / "meta.json").read_text())
        self.seeds: list[int] = []
        self._texts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.refresh()

    def refresh(self) -> int:
        """Rescan the folder; returns the number of clips now available (sorted by seed: stable order)."""
        self.seeds = sorted(int(p.stem) for p in (self.root / "clips").glob("*.npz") if p.stem.lstrip("-").isdigit())
        return len(self.seeds)

    def __len__(self) -> int:
        return len(self.seeds)

    def text(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        if key not in self._texts:
            with np.load(self.root / "texts" / f"{key}.npz", allow_pickle=False) as z:
                self._texts[key] = (torch.from_numpy(z["tokens"].astype(np.float32)), torch.from_numpy(z["mask"]))
        return self._texts[key]

    def __getitem__(self, index: int) -> CachedClip:
        return self.load_seed(self.seeds[index])

    def load_seed(self, seed: int) -> CachedClip:
        m = self.meta
        with np.load(self.root / "clips" / f"{seed}.npz", allow_pickle=False) as z:
            tracks = TrackSet(z["tracks"], z["visibility"], m["width"], m["height"], float(z["fps"]))
            key = str(z["text_key"])
            tokens, mask = self.text(key)
            return CachedClip(seed=seed, latents=torch.from_numpy(z["latents"].astype(np.float32)), tracks=tracks,
                              first_frame=z["first_frame"], moving=torch.from_numpy(z["moving"].astype(np.float32)),
                              caption=str(z["caption"]), text_tokens=tokens, text_mask=mask)
