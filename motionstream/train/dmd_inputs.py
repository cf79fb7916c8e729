"""The draws and inputs of one DMD step (see train/dmd.py): the step plan (rollout length, cache
configuration, exit step, score window), the prompts from the teacher cache with tracks of any
length, the noises, the score window's condition, and the periodic sample videos.

Every draw is keyed by (seed, step[, sample index]): resume and world size do not change a step.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from motionstream.data.synth import WorldConfig, build_world, scene_tracks
from motionstream.diffusion.dmd import is_generator_step, sample_dmd_timesteps
from motionstream.diffusion.sampling import video_prior_for
from motionstream.models.checkpoints import WeightsNotFound
from motionstream.models.codec import load_codec, tensor_to_frames
from motionstream.models.conditioning import build_condition, video_prior
from motionstream.models.dit import WanDiT
from motionstream.tracks.draw import draw_tracks
from motionstream.tracks.embed import sample_track_subset
from motionstream.tracks.trackset import TrackSet
from motionstream.train.cache import text_key
from motionstream.train.common import item_rng
from motionstream.train.rollout import StudentSampler, stream_generate
from motionstream.train.teacher_batch import pad_text
from motionstream.video import write_video

PLAN_SALT = 3                       # numpy seed salt of the step plan
PROMPT_SALT = 4                     # item_rng salt of the prompts
SAMPLE_SALT = 999                   # seed offset of the sample videos' track subsets


@dataclass
class StepPlan:
    """The draws shared by every sample of one global step."""

    num_chunks: int
    sink_chunks: int
    window_chunks: int
    exit_step: int
    window_start: int                   # latent frame where the score window starts
    generator_step: bool


def plan_step(step: int, cfg, num_steps: int, chunk_frames: int) -> StepPlan:
    """The step's rollout length, cache configuration, exit step and score window (module docstring)."""
    min_chunks = max(cfg.min_rollout_chunks, -(-cfg.teacher_frames // chunk_frames))
    if cfg.max_rollout_chunks < min_chunks:
        raise ValueError(f"train_dmd.max_rollout_chunks {cfg.max_rollout_chunks} < {min_chunks} "
                         f"(the score window needs {cfg.teacher_frames} latent frames)")
    rng = np.random.default_rng([cfg.seed, PLAN_SALT, step])
    n = int(rng.integers(min_chunks, cfg.max_rollout_chunks + 1))
    s, w = int(rng.choice(cfg.sink_choices)), int(rng.choice(cfg.window_choices))
    k = int(rng.integers(0, num_steps))
    start = int(rng.integers(0, n * chunk_frames - cfg.teacher_frames + 1))
    return StepPlan(n, s, w, k, start, is_generator_step(step, cfg.ratio))


def grad_chunks(plan: StepPlan, chunk_frames: int, window_frames: int) -> list[int]:
    """Chunks whose output reaches the score window (only they need a graph)."""
    if not plan.generator_step:
        return []
    first = plan.window_start // chunk_frames
    last = (plan.window_start + window_frames - 1) // chunk_frames
    return list(range(first, last + 1))


@dataclass
class DMDInputs:
    """One step's local batch. cond covers the whole rollout; tracks rebuild a later window's condition."""

    cond: Any                            # MotionCondition [B, ..., N*C latent frames]
    text: tuple[torch.Tensor, torch.Tensor | None]
    null_text: tuple[torch.Tensor, torch.Tensor | None]
    tracks: list[Any]                    # TrackSet per sample (with ids), >= the rollout's video frames
    noise: list[torch.Tensor]            # N chunk noises [K, B, C, Cf, h, w]
    score_t: torch.Tensor                # [B] generator-step noise level
    score_noise: torch.Tensor            # [B, C, Fw, h, w]
    critic_t: torch.Tensor               # [B]
    critic_noise: torch.Tensor           # [B, C, Fw, h, w]


def make_noise(plan: StepPlan, gens: list[torch.Generator], num_steps: int, channels: int, chunk_frames: int,
               latent_hw: tuple[int, int], window_frames: int, shift: float, cfg):
    """(chunk noises, score t, score noise, critic t, critic noise) from one generator per sample."""
    per = []
    for g in gens:
        chunks = [torch.randn(num_steps, 1, channels, chunk_frames, *latent_hw, generator=g)
                  for _ in range(plan.num_chunks)]
        st = sample_dmd_timesteps(1, shift, cfg.min_t, cfg.max_t, generator=g)
        sn = torch.randn(1, channels, window_frames, *latent_hw, generator=g)
        ct = sample_dmd_timesteps(1, shift, cfg.min_t, cfg.max_t, generator=g)
        cn = torch.randn(1, channels, window_frames, *latent_hw, generator=g)
        per.append((chunks, st, sn, ct, cn))
    noise = [torch.cat([p[0][i] for p in per], dim=1) for i in range(plan.num_chunks)]
    cat = lambda j: torch.cat([p[j] for p in per])  # noqa: E731
    return noise, cat(1), cat(2), cat(3), cat(4)


def long_tracks(seed: int, num_frames: int, width: int, height: int, fps: float):
    """The exact grid tracks of world clip `seed` for `num_frames` frames, without rendering video.

    Same scene program and grid as data.synth.render_clip, so the first frames equal the cached ones."""
    wcfg = WorldConfig()
    scene, _, _ = build_world(seed, width, height, wcfg)
    tracks, visible, _ = scene_tracks(scene, np.arange(num_frames) / float(fps), wcfg.grid_size, wcfg.occlusion_alpha)
    return TrackSet(tracks=tracks, visibility=visible, width=width, height=height, fps=float(fps))


class PromptSource:
    """DMD prompts from the teacher cache: first-frame latent + text of a clip, tracks of any length."""

    def __init__(self, cache, tracks_cfg: dict[str, Any], memo: int, encode=None):
        """encode: VideoCodec.encode when the teacher uses the "video" prior (computed per prompt)."""
        self.cache, self.tracks_cfg, self.memo, self.encode = cache, tracks_cfg, memo, encode
        self.null_text = cache.text(text_key(""))
        self._tracks: OrderedDict[tuple[int, int], Any] = OrderedDict()

    def tracks(self, seed: int, num_frames: int, cached=None):
        """The clip's grid tracks for num_frames frames; `cached` (the cache's TrackSet) is checked
        against them, so a world program that changed since the cache was built is an error."""
        key = (seed, num_frames)
        if key not in self._tracks:
            m = self.cache.meta
            ts = long_tracks(seed, num_frames, m["width"], m["height"], m["fps"])
            if cached is not None:
                n = min(cached.num_frames, num_frames)
                same = ts.num_tracks == cached.num_tracks and np.allclose(ts.tracks[:n], cached.tracks[:n], atol=1e-3)
                if not same:
                    raise RuntimeError(f"tracks recomputed for world clip {seed} differ from the cache "
                                       f"{self.cache.root}: the world program changed since the cache was built; "
                                       "rebuild the cache")
            self._tracks[key] = ts
            while len(self._tracks) > self.memo:
                self._tracks.popitem(last=False)
        return self._tracks[key]

    def inputs(self, step: int, indices: list[int], plan: StepPlan, dit_cfg, scfg, window_frames: int, shift: float,
               cfg) -> DMDInputs:
        frames = plan.num_chunks * scfg.chunk_frames
        num_video = 1 + dit_cfg.temporal_factor * (frames - 1)
        firsts, images, tracks, toks, masks, gens = [], [], [], [], [], []
        for index in indices:
            rng, gen = item_rng(cfg.seed, step, index, salt=PROMPT_SALT)
            clip = self.cache.load_seed(self.cache.seeds[int(rng.integers(len(self.cache)))])
            h, w = clip.latents.shape[2:]
            full = self.tracks(clip.seed, num_video, cached=clip.tracks)
            tracks.append(sample_track_subset(full, rng, self.tracks_cfg.get("min_tracks", 1000),
                                              self.tracks_cfg.get("max_tracks", 2500), cells=h * w))
            firsts.append(clip.latents[:, 0])
            images.append(clip.first_frame)
            toks.append(clip.text_tokens)
            masks.append(clip.text_mask)
            gens.append(gen)
        first = torch.stack(firsts)
        prior = None if self.encode is None else video_prior(self.encode, images, tracks, frames, dit_cfg.temporal_factor)
        cond = build_condition(first, tracks, frames, dit_cfg, prior=prior)
        text = pad_text(toks, masks)
        noise, st, sn, ct, cn = make_noise(plan, gens, scfg.num_steps, first.shape[1], scfg.chunk_frames,
                                           tuple(first.shape[2:]), window_frames, shift, cfg)
        null = (self.null_text[0][None].expand(len(indices), -1, -1), self.null_text[1][None].expand(len(indices), -1))
        return DMDInputs(cond, text, null, tracks, noise, st, sn, ct, cn)


def window_condition(inputs: DMDInputs, window: torch.Tensor, start: int, dit_cfg):
    """The teacher / critic condition of the score window [start, start + Fw) (module docstring)."""
    fw = window.shape[2]
    if start == 0:
        return inputs.cond.chunk(0, fw)
    tf = dit_cfg.temporal_factor
    a = tf * start                                   # last video frame of latent frame `start`
    rebased = [ts.frames(a, a + 1 + tf * (fw - 1)) for ts in inputs.tracks]
    # the video prior stays the image warped from frame 0 (its slice): the window's first latent is a
    # generated frame whose pixels the rollout never decodes
    prior = None if inputs.cond.prior is None else inputs.cond.prior[:, :, start:start + fw]
    return build_condition(window[:, :, 0].detach(), rebased, fw, dit_cfg, prior=prior)


def write_samples(run_dir: Path, step: int, ema_state: dict[str, torch.Tensor], param, scfg, source: PromptSource,
                  dit_cfg, cfg, log: Callable[[str], None], vae: str | None = None) -> Path | None:
    """Stream `sample_chunks` chunks (past the horizon) with the EMA generator on the first cached clips,
    decode with the full VAE and write one mp4 (clips stacked vertically, conditioning tracks drawn)."""
    vae = vae or source.cache.meta.get("codec", "vae-tiny-cpu")
    try:
        codec = load_codec(vae, tiny_decoder=None)
    except (WeightsNotFound, FileNotFoundError, KeyError, RuntimeError) as err:
        log(f"samples skipped (VAE {vae} not loadable: {str(err).splitlines()[0]})")
        return None
    model = WanDiT(dit_cfg)
    model.load_state_dict(ema_state)
    model.eval()
    frames = cfg.sample_chunks * scfg.chunk_frames
    num_video = 1 + dit_cfg.temporal_factor * (frames - 1)
    rows = []
    rng = np.random.default_rng(cfg.seed + SAMPLE_SALT)
    for seed in source.cache.seeds[:cfg.sample_clips]:
        clip = source.cache.load_seed(seed)
        h, w = clip.latents.shape[2:]
        ts = sample_track_subset(source.tracks(seed, num_video), rng, source.tracks_cfg.get("min_tracks", 1000),
                                 source.tracks_cfg.get("max_tracks", 2500), cells=h * w)
        prior = video_prior_for(param, codec.encode, [clip.first_frame], [ts], frames, dit_cfg.temporal_factor)
        cond = build_condition(clip.latents[None, :, 0], [ts], frames, dit_cfg, prior=prior)
        sampler = StudentSampler(model, scfg, param, cond, (clip.text_tokens[None], clip.text_mask[None]))
        with torch.no_grad():
            lat = stream_generate(sampler, cfg.sample_chunks, (h, w), torch.Generator().manual_seed(cfg.seed))
            video = tensor_to_frames(codec.decode(lat))
        rows.append(draw_tracks(video, ts.frames(0, video.shape[0])))
    path = run_dir / "samples" / f"step{step:06d}_{scfg.name}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, np.concatenate(rows, axis=1), fps=source.cache.meta.get("fps", 16))
    log(f"samples: {path}")
    return path


def to_device(inputs: DMDInputs, device) -> DMDInputs:
    mv = lambda t: None if t is None else t.to(device)  # noqa: E731
    return replace(inputs, cond=inputs.cond.to(device), text=(mv(inputs.text[0]), mv(inputs.text[1])),
                   null_text=(mv(inputs.null_text[0]), mv(inputs.null_text[1])),
                   noise=[n.to(device) for n in inputs.noise], score_t=mv(inputs.score_t),
                   score_noise=mv(inputs.score_noise), critic_t=mv(inputs.critic_t),
                   critic_noise=mv(inputs.critic_noise))
