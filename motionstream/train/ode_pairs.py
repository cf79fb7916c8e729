"""The ODE pairs of `motionstream train ode` (stage 1 of distillation, see train/ode.py): the frozen
teacher's joint-guided Euler trajectories through the student's denoising times, one atomic file per
pair (`PAIRS/pairs/NNNNNN.npz`), resumable and cached for any number of regression runs.

A pair depends only on its index (all draws keyed by (seed, PAIR_SALT, index)), so 1 or N torchrun
processes write the same files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from motionstream.errors import UserError
from motionstream.diffusion.flow import euler_sample, shift_timesteps
from motionstream.diffusion.guidance import guided_prediction
from motionstream.diffusion.sampling import null_text_like, predict_velocity, video_prior_for
from motionstream.models.conditioning import build_condition
from motionstream.tracks.embed import sample_track_subset
from motionstream.tracks.trackset import TrackSet
from motionstream.train.cache import _atomic_savez, _check_meta
from motionstream.train.common import item_rng
from motionstream.train.teacher_batch import pad_text

PAIR_SALT = 1                       # item_rng salt of the pair draws
PURE_NOISE_TOLERANCE = 1e-6         # the student's first time must be 1.0 up to this
PAIR_LOG_EVERY = 20                 # pairs between generation log lines


def ode_schedule(denoising_steps: list[float], total_steps: int, shift: float) -> tuple[torch.Tensor, list[int]]:
    """Euler grid through the student's times: (shifted times [N + 1] from 1 to 0, index of each student step).

    The unshifted segments [u_j, u_{j+1}] (u_K = 0) get total_steps / K Euler steps each.
    """
    k = len(denoising_steps)
    per = max(1, total_steps // k)
    bounds = list(denoising_steps) + [0.0]
    if abs(bounds[0] - 1.0) > PURE_NOISE_TOLERANCE:
        raise ValueError(f"the student's first denoising step must be pure noise (1.0), got {bounds[0]}")
    u, marks = [], []
    for j in range(k):
        marks.append(len(u))
        seg = torch.linspace(bounds[j], bounds[j + 1], per + 1, dtype=torch.float64)
        u.extend(seg[:-1].tolist())
    u.append(0.0)
    return shift_timesteps(torch.tensor(u, dtype=torch.float64), shift).float(), marks


@torch.no_grad()
def teacher_trajectory(teacher: torch.nn.Module, param, cond, text, null_text, noise: torch.Tensor,
                       schedule: torch.Tensor, marks: list[int], text_scale: float,
                       motion_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint-guided Euler integration recording the states at `marks`.

    Returns (states [B, K, C, F, h, w], x0 [B, C, F, h, w]); states[:, 0] is the initial noise.
    """
    b = noise.shape[0]
    null = null_text_like(null_text, b)
    no_motion = cond.drop_motion()
    keep = set(marks)
    states: list[torch.Tensor] = []
    calls = [0]

    def velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if calls[0] in keep:
            states.append(z.clone())
        calls[0] += 1

        def predict(use_text: bool, use_motion: bool) -> torch.Tensor:
            return predict_velocity(teacher, z, t, text if use_text else null, cond if use_motion else no_motion, param)
        return guided_prediction(predict, text_scale, motion_scale)

    x0 = euler_sample(velocity, noise, schedule)
    return torch.stack(states, dim=1), x0


class ODEPairs:
    """Reader of a pair folder: PAIRS/meta.json + PAIRS/pairs/NNNNNN.npz.

    A pair file: states float16 [K, C, F, h, w], x0 float16 [C, F, h, w], first_latent float16
    [C, h, w], text_tokens float16 [L, D], text_mask bool [L], tracks float32 [T, N, 2] (the subset
    the teacher was conditioned on), visibility bool [T, N], ids int64 [N], width, height, fps,
    clip_seed, caption.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.refresh()

    def refresh(self) -> int:
        d = self.root / "pairs"
        self.indices = sorted(int(p.stem) for p in d.glob("*.npz") if p.stem.isdigit()) if d.is_dir() else []
        return len(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def path(self, index: int) -> Path:
        return self.root / "pairs" / f"{index:06d}.npz"

    def load(self, index: int) -> dict[str, Any]:
        with np.load(self.path(index), allow_pickle=False) as z:
            floats = ("states", "x0", "first_latent", "text_tokens")
            out = {k: torch.from_numpy(z[k].astype(np.float32)) for k in floats}
            out["text_mask"] = torch.from_numpy(z["text_mask"])
            out["prior"] = torch.from_numpy(z["prior"].astype(np.float32)) if "prior" in z.files else None
            out["tracks"] = TrackSet(z["tracks"], z["visibility"], int(z["width"]), int(z["height"]), float(z["fps"]),
                                     ids=z["ids"].astype(np.int64))
            out["caption"] = str(z["caption"])
        return out


def pair_meta(teacher: str, teacher_meta: dict[str, Any], scfg, dcfg, ocfg) -> dict[str, Any]:
    """What a pair folder was generated with (a folder never mixes teachers or schedules)."""
    return {"version": 1, "teacher": str(teacher), "teacher_step": teacher_meta.get("step"),
            "denoising_steps": list(scfg.denoising_steps), "shift": scfg.shift, "teacher_steps": ocfg.teacher_steps,
            "latent_frames": ocfg.latent_frames, "text_scale": dcfg.text_scale, "motion_scale": dcfg.motion_scale,
            "seed": ocfg.seed}


def open_pairs_dir(pairs_dir: Path, meta: dict[str, Any]) -> None:
    """Create a pair folder, or check that an existing one was generated with the same settings."""
    try:
        _check_meta(pairs_dir, meta)
    except ValueError as err:
        raise UserError(str(err)) from err
    (pairs_dir / "pairs").mkdir(parents=True, exist_ok=True)


def generate_pairs(pairs_dir: Path, teacher, param, cache, null_text, dit_cfg, scfg, dcfg, ocfg,
                   tracks_cfg: dict[str, Any], meta: dict[str, Any], count: int, progress: bool = True,
                   log=print, rank: int = 0, world_size: int = 1, encode=None) -> int:
    """Write the missing pairs 0..count-1 (resumable); returns how many were written now.

    encode: VideoCodec.encode, for a teacher with the "video" prior (stored in each pair file).

    Under torchrun every rank writes the pairs i with i % world_size == rank (a pair depends only on
    its index). The folder must have been opened with open_pairs_dir (rank 0, before the others)."""
    if json.loads((pairs_dir / "meta.json").read_text()) != meta:
        raise UserError(f"pair folder {pairs_dir} was generated with other settings")
    reader = ODEPairs(pairs_dir)
    mine = [i for i in range(count) if i % world_size == rank]
    todo = [i for i in mine if not reader.path(i).is_file()]
    count = len(mine)
    schedule, marks = ode_schedule(scfg.denoising_steps, ocfg.teacher_steps, scfg.shift)
    f = ocfg.latent_frames
    bar = tqdm(total=count, initial=count - len(todo), desc="ode pairs", unit="pair", disable=not progress)
    t0, written = time.time(), 0
    for g in range(0, len(todo), ocfg.pair_batch):
        group = todo[g:g + ocfg.pair_batch]
        clips, tracks, noise = [], [], []
        for i in group:
            rng, gen = item_rng(ocfg.seed, i, 0, salt=PAIR_SALT)
            clip = cache.load_seed(cache.seeds[int(rng.integers(len(cache)))]).prefix(f, dit_cfg.temporal_factor)
            h, w = clip.latents.shape[2:]
            tracks.append(sample_track_subset(clip.tracks, rng, tracks_cfg.get("min_tracks", 1000),
                                              tracks_cfg.get("max_tracks", 2500), cells=h * w))
            noise.append(torch.randn(clip.latents.shape, generator=gen))
            clips.append(clip)
        first = torch.stack([c.latents[:, 0] for c in clips])
        prior = video_prior_for(param, encode, [c.first_frame for c in clips], tracks, f, dit_cfg.temporal_factor)
        cond = build_condition(first, tracks, f, dit_cfg, prior=prior)
        text = pad_text([c.text_tokens for c in clips], [c.text_mask for c in clips])
        states, x0 = teacher_trajectory(teacher, param, cond, text, null_text, torch.stack(noise), schedule, marks,
                                        dcfg.text_scale, dcfg.motion_scale)
        for k, i in enumerate(group):
            ts, clip = tracks[k], clips[k]
            _atomic_savez(reader.path(i), states=states[k].numpy().astype(np.float16),
                          x0=x0[k].numpy().astype(np.float16), first_latent=first[k].numpy().astype(np.float16),
                          text_tokens=clip.text_tokens.numpy().astype(np.float16), text_mask=clip.text_mask.numpy(),
                          tracks=ts.tracks, visibility=ts.visibility, ids=np.asarray(ts.ids, np.int64),
                          width=np.array(ts.width), height=np.array(ts.height), fps=np.array(ts.fps),
                          clip_seed=np.array(clip.seed), caption=np.array(clip.caption),
                          **({} if prior is None else {"prior": prior[k].numpy().astype(np.float16)}))
            written += 1
        bar.update(len(group))
        if written % PAIR_LOG_EVERY < len(group):
            log(f"ode pairs: {count - len(todo) + written}/{count}, {(time.time() - t0) / written:.1f} s/pair")
    bar.close()
    return written


def pair_batch(pairs: ODEPairs, picks: list[int], dit_cfg) -> tuple[torch.Tensor, torch.Tensor, tuple, Any]:
    """(states [B, K, C, F, h, w], x0 [B, C, F, h, w], text (tokens, mask), MotionCondition) of pairs `picks`."""
    items = [pairs.load(pairs.indices[i]) for i in picks]
    states = torch.stack([it["states"] for it in items])
    x0 = torch.stack([it["x0"] for it in items])
    first = torch.stack([it["first_latent"] for it in items])
    priors = [it["prior"] for it in items]
    prior = None if any(p is None for p in priors) else torch.stack(priors)
    cond = build_condition(first, [it["tracks"] for it in items], x0.shape[2], dit_cfg, prior=prior)
    text = pad_text([it["text_tokens"] for it in items], [it["text_mask"] for it in items])
    return states, x0, text, cond
