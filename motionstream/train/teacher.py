"""`motionstream train teacher`: the bidirectional motion-guided teacher (paper Sec. 3.1, App. D).

Rectified flow on cached [world] latents (train/cache.py). Conditions: first-frame latent (Wan I2V),
text tokens, the Eq. 1 track map of 92-230 random tracks (1000-2500 scaled to our 32x18 latent grid),
and the trajectory guide (tiny-cpu). Text and motion are dropped independently so v(c_t, 0) and
v(0, c_m) are learned for joint guidance; stage 2 adds stochastic mid-frame masking (p = 0.2).

Per step and sample (all draws keyed by (seed, step, global sample index), so the same global batch
gives the same result on 1 or N processes and after a resume):

    z0 [C, F, h, w] cached latents (F = phase1_latent_frames for the first phase1_steps, then
    latent_frames), z1 ~ N(0, I), t' = shift(u), z_t = (1 - t') z0 + t' z1,
    loss = w(t') * sum_cells m (|v_hat - (z1 - z0)|^2 averaged over channels) / sum_cells m,
    m = 1 + moving_weight * (fraction of the cell that moves)  (moving content is ~10% of pixels)

Run folder (runs/teacher by default): train.log, metrics.jsonl (loss, lr, samples/s; every
eval_minutes the track-following report on held-out val clips), samples/ (GT | sample with tracks
drawn), state.safetensors + state.json (resume: re-run the same command; kill -9 loses at most
`checkpoint_every` steps), and `--export DIR` writes the EMA weights as a model folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from motionstream.errors import UserError
from motionstream.config import REPO_ROOT, VideoConfig, add_config_arguments, section, to_dict, video_config
from motionstream.diffusion.flow import DiffusionConfig, add_noise, loss_weight, shift_timesteps, velocity_target
from motionstream.diffusion.sampling import TeacherParam, predict_velocity
from motionstream.train.common import append_jsonl, load_run_config, run_logger, run_section

TEACHER_KIND = "teacher"


@dataclass
class TeacherTrainConfig:
    """Section `train_teacher` of a preset."""

    seed: int = 0
    batch_size: int = 8                 # global batch (split over torchrun processes)
    phase1_batch_size: int = 8          # batch while training on fewer latent frames
    phase1_latent_frames: int = 5       # 17 video frames: fewer tokens while learning to follow
    phase1_steps: int = 1500
    latent_frames: int = 9              # 33 video frames
    stage: int = 1                      # 2 = fine-tune with stochastic mid-frame masking
    lr: float = 3e-4
    lr_schedule: str = "constant"       # constant | cosine (train.common.lr_at)
    warmup_steps: int = 50
    total_steps: int = 100000           # cosine horizon
    weight_decay: float = 0.01
    adam_beta2: float = 0.99
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    text_drop: float = 0.1              # P(text replaced by the empty prompt)
    motion_drop: float = 0.1            # P(track map + guide zeroed), independent of text_drop
    moving_weight: float = 4.0
    output_skip: str = "warp"           # none | guide | warp | video, see diffusion/sampling.py
    skip_min_t: float = 0.25
    skip_form: str = "mmse"             # damped | mmse (diffusion/sampling.apply_skip)
    prior_var: float = 1.0
    cache_dir: str = "cache/teacher-tiny-cpu"
    cache_clips: int = 3000             # world train clips the background builder renders + encodes
    min_cache_clips: int = 32           # start training once this many exist
    vae: str = "vae-tiny-cpu"
    val_clips: int = 4
    eval_minutes: float = 10.0
    eval_sample_steps: int = 20
    eval_max_points: int = 256
    eval_loss_times: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])  # held-out loss at these t
    checkpoint_every: int = 1           # steps between training-state saves
    log_every: int = 10
    threads: int = 2
    compile: bool = False


# ---------------------------------------------------------------------- helpers
def item_rng(seed: int, step: int, index: int) -> tuple[np.random.Generator, torch.Generator]:
    """The random streams of one sample of one step (independent of process count and resume)."""
    rng = np.random.default_rng([seed, step, index])
    gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
    return rng, gen


def latent_frames_at(step: int, tcfg: TeacherTrainConfig) -> tuple[int, int]:
    """(latent frames, global batch) of training step `step`."""
    if step < tcfg.phase1_steps:
        return tcfg.phase1_latent_frames, tcfg.phase1_batch_size
    return tcfg.latent_frames, tcfg.batch_size


def tracks_section(cfg: dict[str, Any]):
    from motionstream.tracks.embed import TracksConfig

    return section(cfg, "tracks", TracksConfig)


def teacher_param(tcfg: TeacherTrainConfig) -> TeacherParam:
    return TeacherParam(output_skip=tcfg.output_skip, skip_min_t=tcfg.skip_min_t, skip_form=tcfg.skip_form,
                        prior_var=tcfg.prior_var)


def pad_text(tokens: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack [L_i, D] token sets into [B, L, D] + bool mask [B, L] (padding masked out)."""
    length = max(t.shape[0] for t in tokens)
    out = tokens[0].new_zeros(len(tokens), length, tokens[0].shape[1])
    mask = torch.zeros(len(tokens), length, dtype=torch.bool)
    for i, (t, m) in enumerate(zip(tokens, masks)):
        out[i, :t.shape[0]] = t
        mask[i, :t.shape[0]] = m
    return out, mask


def apply_motion_masks(cond, keep_motion: torch.Tensor, frame_keep: torch.Tensor | None):
    """Zero the motion condition of dropped samples (keep_motion [B] float) and, in stage 2, of masked
    mid latent frames (frame_keep [B, F] float; the track map's video frames follow the VAE layout)."""
    from motionstream.models.track_head import TrackHead

    b = keep_motion.shape[0]
    lat_keep = keep_motion.view(b, 1, 1, 1, 1).expand(b, 1, cond.num_frames, 1, 1).clone()
    if frame_keep is not None:
        lat_keep = lat_keep * frame_keep.view(b, 1, -1, 1, 1)
    # latent frame k covers video frames [a_k, b_k) of the track map (VAE layout: 1, then 4 each)
    spans = [TrackHead.video_frames(k, k + 1, cond.temporal_factor) for k in range(cond.num_frames)]
    vid_keep = lat_keep.repeat_interleave(torch.tensor([b - a for a, b in spans]), dim=2)
    # a dropped sample's video prior is the frozen first frame, as for the null condition (drop_motion)
    prior = cond.prior
    if prior is not None:
        prior = lat_keep * prior + (1 - lat_keep) * cond.image_latent[:, :, :1]
    return replace(cond, track_map=cond.track_map * vid_keep,
                   guide=None if cond.guide is None else cond.guide * lat_keep,
                   guide_mask=None if cond.guide_mask is None else cond.guide_mask * lat_keep, prior=prior)


@dataclass
class Batch:
    z0: torch.Tensor            # [B, C, F, h, w]
    noise: torch.Tensor         # [B, C, F, h, w]
    t: torch.Tensor             # [B] shifted flow time
    text: torch.Tensor          # [B, L, D]
    text_mask: torch.Tensor     # [B, L]
    cond: Any                   # MotionCondition
    moving: torch.Tensor        # [B, F, h, w]


def make_batch(clips: list, indices: list[int], step: int, tcfg: TeacherTrainConfig, dcfg: DiffusionConfig,
               dit_cfg, tracks_cfg, null_text: tuple[torch.Tensor, torch.Tensor], encode=None) -> Batch:
    """Assemble the samples `indices` (global positions in the step's batch) of `clips` (CachedClip).

    encode: VideoCodec.encode, needed when tcfg.output_skip is "video" (the prior is encoded per sample,
    since it depends on the sample's random track subset)."""
    from motionstream.diffusion.sampling import video_prior_for
    from motionstream.models.conditioning import build_condition
    from motionstream.tracks.embed import mid_frame_mask, sample_track_subset

    num_f = clips[0].latents.shape[1]
    h, w = clips[0].latents.shape[2:]
    z0, noise, t, toks, tmasks, tracks, keep_m, frame_keep, moving = [], [], [], [], [], [], [], [], []
    for clip, index in zip(clips, indices):
        rng, gen = item_rng(tcfg.seed, step, index)
        z0.append(clip.latents)
        noise.append(torch.randn(clip.latents.shape, generator=gen))
        t.append(shift_timesteps(torch.rand(1, generator=gen), dcfg.shift))
        sub = sample_track_subset(clip.tracks, rng, min_tracks=tracks_cfg.min_tracks, max_tracks=tracks_cfg.max_tracks,
                                  cells=h * w, id_range=tracks_cfg.id_range)
        tracks.append(sub)  # carries fresh random track IDs (sinusoidal embedding seeds)
        drop_text = rng.random() < tcfg.text_drop
        drop_motion = rng.random() < tcfg.motion_drop
        toks.append(null_text[0] if drop_text else clip.text_tokens)
        tmasks.append(null_text[1] if drop_text else clip.text_mask)
        keep_m.append(0.0 if drop_motion else 1.0)
        if tcfg.stage >= 2:
            masked = mid_frame_mask(num_f, rng, p=tracks_cfg.mask_prob)
            frame_keep.append(torch.from_numpy(~np.asarray(masked)).float())
        moving.append(clip.moving)
    z0 = torch.stack(z0)
    prior = video_prior_for(teacher_param(tcfg), encode, [c.first_frame for c in clips], tracks, num_f,
                            dit_cfg.temporal_factor)
    cond = build_condition(z0[:, :, 0], tracks, num_f, dit_cfg, prior=prior)
    cond = apply_motion_masks(cond, torch.tensor(keep_m), torch.stack(frame_keep) if frame_keep else None)
    text, text_mask = pad_text(toks, tmasks)
    return Batch(z0=z0, noise=torch.stack(noise), t=torch.cat(t), text=text, text_mask=text_mask, cond=cond,
                 moving=torch.stack(moving))


def teacher_loss(model: torch.nn.Module, batch: Batch, param: TeacherParam, dcfg: DiffusionConfig,
                 moving_weight: float) -> torch.Tensor:
    """Weighted rectified-flow loss (Eq. A2) of one batch (mean over its samples)."""
    f = batch.z0.shape[2]
    t_frames = batch.t[:, None].expand(-1, f)
    z_t = add_noise(batch.z0, batch.noise, t_frames)
    pred = predict_velocity(model, z_t, t_frames, (batch.text, batch.text_mask), batch.cond, param)
    err = (pred - velocity_target(batch.z0, batch.noise)).pow(2).mean(1)        # [B, F, h, w]
    cell_w = 1 + moving_weight * batch.moving
    per_sample = (err * cell_w).sum((1, 2, 3)) / cell_w.sum((1, 2, 3))
    return (per_sample * loss_weight(batch.t, dcfg.shift, dcfg.loss_weighting)).mean()


# ------------------------------------------------------------------- the model
def build_teacher(cfg: dict[str, Any]):
    from motionstream.models.dit import DiTConfig, WanDiT

    dit_cfg = section(cfg, "dit", DiTConfig)
    return WanDiT(dit_cfg), dit_cfg


def export_teacher(out_dir: str | Path, state: dict[str, torch.Tensor], dit_cfg, param: TeacherParam,
                   dcfg: DiffusionConfig, extra: dict[str, Any] | None = None) -> Path:
    """Write a model folder (fp16) that diffusion.sampling.load_teacher reads."""
    from motionstream.models.checkpoints import save_model_dir

    meta = {"kind": TEACHER_KIND, "config": to_dict(dit_cfg), "teacher": to_dict(param),
            "diffusion": to_dict(dcfg), **(extra or {})}
    return save_model_dir(out_dir, state, meta)


# ------------------------------------------------------------------ evaluation
class _ZeroNetwork(torch.nn.Module):
    """A teacher whose network outputs zero: predict_velocity then returns the prior skip alone."""

    def forward(self, z_t: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return torch.zeros_like(z_t)


class TeacherEval:
    """Track following of the EMA teacher on a few held-out [world] val clips (scoring.track_following).

    Besides the evaluator's baselines (frozen first frame, forward warp) it scores the "prior paste":
    the decoded prior the output is parameterised around (diffusion/sampling.condition_prior), i.e.
    what the untrained teacher produces; and the VAE round trip of the ground truth (the ceiling of
    any latent model: the codec's blur alone costs EPE and PSNR).
    """

    def __init__(self, cfg: dict[str, Any], tcfg: TeacherTrainConfig, dcfg: DiffusionConfig, dit_cfg,
                 codec, text_encoder, num_latent_frames: int, log=print, seeds: list[int] | None = None):
        from motionstream.data.splits import split_seeds
        from motionstream.data.synth import render_clip
        from motionstream.scoring.track_following import TrackFollowingEval
        from motionstream.models.codec import frames_to_tensor
        from motionstream.diffusion.sampling import video_prior_for
        from motionstream.models.conditioning import build_condition
        from motionstream.tracks.embed import sample_track_subset

        video = video_config(cfg)
        tracks_cfg = tracks_section(cfg)
        self.tcfg, self.dcfg, self.codec = tcfg, dcfg, codec
        self.num_latent_frames = num_latent_frames
        num_video = 1 + codec.temporal_stride * (num_latent_frames - 1)
        t0 = time.time()
        self.clips = [render_clip(s, num_frames=num_video, width=video.width, height=video.height, fps=video.fps)
                      for s in (seeds if seeds is not None else split_seeds("val", tcfg.val_clips))]
        self._index = {id(c): i for i, c in enumerate(self.clips)}  # clips hold arrays: look up by identity
        self.evaluator = TrackFollowingEval(self.clips, max_points=tcfg.eval_max_points)
        with torch.no_grad():
            first = torch.cat([codec.encode(frames_to_tensor(c.frames[:1]))[:, :, 0] for c in self.clips])
            self.text = text_encoder.encode([c.caption for c in self.clips])
            self.null_text = text_encoder.encode([""])
        h, w = first.shape[2:]
        rng = np.random.default_rng(tcfg.seed + 12345)  # fixed subsets: evals are comparable over time
        self.cond_tracks = [sample_track_subset(c.tracks, rng, tracks_cfg.min_tracks, tracks_cfg.max_tracks,
                                                cells=h * w, id_range=tracks_cfg.id_range) for c in self.clips]
        prior = video_prior_for(teacher_param(tcfg), codec.encode, [c.frames[0] for c in self.clips],
                                self.cond_tracks, num_latent_frames, dit_cfg.temporal_factor)
        self.cond = build_condition(first, self.cond_tracks, num_latent_frames, dit_cfg, prior=prior)
        self.noise = torch.randn(first.shape[0], first.shape[1], num_latent_frames, h, w,
                                 generator=torch.Generator().manual_seed(tcfg.seed + 777))
        from motionstream.diffusion.sampling import condition_prior

        # the prior the output is parameterised around, decoded: what an untrained teacher produces
        paste = self._decode(condition_prior(self.cond, tcfg.output_skip if tcfg.output_skip != "none" else "guide"))
        self.references = {"prior_paste": self._score_videos(paste)}
        # the codec's own round trip bounds what any latent model can reach (EPE and PSNR ceiling)
        with torch.no_grad():
            self.latents = torch.cat([codec.encode(frames_to_tensor(c.frames)) for c in self.clips])
        self.references["vae_recon"] = self._score_videos(self._decode(self.latents))
        log(f"eval: {len(self.clips)} held-out clips x {num_video} frames ready in {time.time() - t0:.0f}s")

    def _score_videos(self, videos: list[np.ndarray]) -> dict[str, float]:
        scores, _ = self.evaluator.score(lambda clip: videos[self._index[id(clip)]])
        summary = self.evaluator.summarize(scores)
        return {k: summary[k] for k in ("epe", "epe_reliable", "psnr", "region_psnr")}

    def _decode(self, latents: torch.Tensor) -> list[np.ndarray]:
        from motionstream.models.codec import tensor_to_frames

        with torch.no_grad():
            return [tensor_to_frames(self.codec.decode(latents[i:i + 1])) for i in range(latents.shape[0])]

    def __call__(self, model: torch.nn.Module, param: TeacherParam, text_scale: float | None = None,
                 motion_scale: float | None = None, steps: int | None = None) -> tuple[dict[str, Any], list[np.ndarray]]:
        """(report, generated videos) of `model`; guidance weights / steps default to the configs'."""
        from motionstream.diffusion.sampling import sample

        t0 = time.time()
        wt = self.dcfg.text_scale if text_scale is None else text_scale
        wm = self.dcfg.motion_scale if motion_scale is None else motion_scale
        latents = sample(model, self.cond, self.text, self.null_text, param, steps=steps or self.tcfg.eval_sample_steps,
                         shift=self.dcfg.shift, text_scale=wt, motion_scale=wm, noise=self.noise)
        videos = self._decode(latents)
        report = self.evaluator(lambda clip: videos[self._index[id(clip)]])
        report = {k: v for k, v in report.items() if k != "per_clip"}
        for name, ref in self.references.items():
            report.update({f"{k}_{name}": v for k, v in ref.items()})
        report.update(eval_s=time.time() - t0, text_scale=wt, motion_scale=wm)
        report["eval_frames"] = int(self.clips[0].frames.shape[0])
        return report, videos

    @torch.no_grad()
    def heldout_loss(self, model: torch.nn.Module | None, param: TeacherParam) -> dict[str, float]:
        """Unweighted flow-matching loss on the held-out clips at the fixed times `eval_loss_times` (same
        noise every call): `val_loss` (their mean) and `val_loss_t{t}`. model None = a network that outputs
        zero, i.e. the prior skip alone, the reference the network has to beat.

        The denoiser's own progress: sample quality (EPE, PSNR) also depends on how its errors compound
        over the sampler's steps, this does not."""
        noise = torch.randn(self.latents.shape, generator=torch.Generator().manual_seed(self.tcfg.seed + 778))
        target = velocity_target(self.latents, noise)
        net = _ZeroNetwork() if model is None else model
        b, _, f = self.latents.shape[:3]
        report = {}
        for t in self.tcfg.eval_loss_times:
            tt = torch.full((b, f), float(t))
            pred = predict_velocity(net, add_noise(self.latents, noise, tt), tt, self.text, self.cond, param)
            report[f"val_loss_t{t:g}"] = float((pred - target).pow(2).mean())
        report["val_loss"] = float(np.mean(list(report.values())))
        return report

    def write_samples(self, out_dir: Path, step: int, videos: list[np.ndarray], count: int = 2) -> Path:
        """GT | sample side by side, the conditioning tracks drawn on both."""
        from motionstream.tracks.draw import draw_tracks
        from motionstream.video import write_video

        rows = []
        for clip, ts, vid in list(zip(self.clips, self.cond_tracks, videos))[:count]:
            rows.append(np.concatenate([draw_tracks(clip.frames, ts), draw_tracks(vid, ts)], axis=2))
        path = out_dir / f"step{step:06d}.mp4"
        write_video(path, np.concatenate(rows, axis=1), fps=self.clips[0].tracks.fps)
        return path


# --------------------------------------------------------------------- training
def _ensure_cache(args, tcfg: TeacherTrainConfig, cache_dir: Path, run_dir: Path, log) -> None:
    """Start the background cache builder unless the cache is complete or a builder is alive."""
    clips = cache_dir / "clips"
    have = len(list(clips.glob("*.npz"))) if clips.is_dir() else 0
    if have >= tcfg.cache_clips or args.no_build_cache:
        return
    pid_file = cache_dir / "builder.pid"
    if pid_file.is_file():
        try:
            os.kill(int(pid_file.read_text()), 0)
            log.info(f"cache builder already running (pid {pid_file.read_text().strip()}), {have} clips so far")
            return
        except (OSError, ValueError):
            pass
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "motionstream", "train", "teacher-cache", "--config", args.config,
           *[a for item in args.set for a in ("--set", item)],
           "--cache", str(cache_dir), "--n", str(tcfg.cache_clips), "--threads", "1"]
    out = open(run_dir / "cache.log", "a")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(REPO_ROOT))
    pid_file.write_text(str(proc.pid))
    log.info(f"started cache builder pid {proc.pid}: {' '.join(cmd)} (log {run_dir / 'cache.log'})")


def train_teacher(args) -> int:
    from tqdm import tqdm

    from motionstream.train.cache import TeacherCache, text_key
    from motionstream.train.common import EMA, load_training_state, lr_at, optimizer_step, seed_everything, set_lr
    from motionstream.train.distributed import init_distributed, restore_views, shutdown, wrap_model

    cfg = load_run_config(args.config, args.set)
    tcfg = run_section(cfg, "train_teacher", TeacherTrainConfig)
    dcfg = run_section(cfg, "diffusion", DiffusionConfig)
    if args.stage is not None:
        tcfg.stage = args.stage
    torch.set_num_threads(args.threads or tcfg.threads)
    ctx = init_distributed(args.device)
    run_dir = Path(args.run)
    log = run_logger(run_dir, "teacher", ctx.is_main)
    metrics_path = run_dir / "metrics.jsonl"
    cache_dir = Path(args.cache or tcfg.cache_dir)
    if not cache_dir.is_absolute():
        cache_dir = REPO_ROOT / cache_dir

    if args.export:
        return _export_from_run(run_dir, Path(args.export), cfg, tcfg, dcfg, args.set)

    if ctx.is_main:
        _ensure_cache(args, tcfg, cache_dir, run_dir, log)
    # wait for the first clips of the cache
    t_wait = time.time()
    while True:
        try:
            cache = TeacherCache(cache_dir)
            if len(cache) >= min(tcfg.min_cache_clips, tcfg.cache_clips):
                break
        except FileNotFoundError:
            pass
        if time.time() - t_wait > args.cache_wait_minutes * 60:
            raise UserError(f"teacher cache {cache_dir} has too few clips after {args.cache_wait_minutes} min "
                            f"(need {tcfg.min_cache_clips}); see {run_dir / 'cache.log'}")
        time.sleep(5)
    null_text = cache.text(text_key(""))
    tracks_cfg = tracks_section(cfg)

    seed_everything(tcfg.seed)
    model, dit_cfg = build_teacher(cfg)
    param = teacher_param(tcfg)
    model = wrap_model(model.to(ctx.device), ctx)
    ema = EMA(model, tcfg.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, betas=(0.9, tcfg.adam_beta2), weight_decay=tcfg.weight_decay)
    mods, opts, finish = restore_views(ctx, {"model": model, "ema": ema}, {"opt": opt})
    resumed = load_training_state(run_dir, mods, opts)
    if resumed is not None:
        finish()
    step, extra = (resumed if resumed is not None else (0, {}))
    extra["config_overrides"] = list(args.set)  # the export's config.json names them beside the preset
    if resumed is None and args.resume_from:
        from motionstream.models.checkpoints import load_model_dir

        _, state = load_model_dir(args.resume_from)
        full = {k: v for k, v in state.items()}
        if ctx.enabled:
            mods2, _, finish2 = restore_views(ctx, {"model": model, "ema": ema}, {})
            mods2["model"].load_state_dict(full)
            mods2["ema"].shadow, mods2["ema"].num_updates = dict(full), 0
            finish2()
        else:
            model.load_state_dict(full)
            ema.shadow = {k: v.clone() for k, v in full.items()}
        step = 0
        log.info(f"initialised from {args.resume_from}")
    train_seconds = float(extra.get("train_seconds", 0.0))
    samples_seen = int(extra.get("samples_seen", 0))
    if resumed is not None:
        log.info(f"resumed {run_dir} at step {step}")
    fwd = torch.compile(model) if tcfg.compile else model
    nparams = sum(p.numel() for p in model.parameters())
    log.info(f"teacher: {nparams / 1e6:.2f} M params, {ctx.world_size} process(es), cache {len(cache)} clips, "
             f"config {args.config}, stage {tcfg.stage}")

    evaluator, eval_frames = None, None
    codec = text_encoder = None
    if param.output_skip == "video":  # the prior is encoded per sample
        from motionstream.models.codec import load_codec

        codec = load_codec(tcfg.vae, tiny_decoder=None)
    last_eval = time.time() if extra.get("last_eval_step") is not None else 0.0
    start = time.time()
    stop_at = start + args.minutes * 60 if args.minutes else None
    max_steps = args.steps
    bar = tqdm(initial=step, total=max_steps, desc="teacher", unit="step", disable=not ctx.is_main or args.no_progress)
    window_t, window_n, window_loss = time.time(), 0, []
    while True:
        if (max_steps is not None and step >= max_steps) or (stop_at is not None and time.time() >= stop_at):
            break
        num_f, gbatch = latent_frames_at(step, tcfg)
        if step % 50 == 0:
            cache.refresh()
        rng = np.random.default_rng([tcfg.seed, step])
        picks = rng.integers(0, len(cache), size=gbatch)
        local = ctx.local_slice(gbatch)
        idx = list(range(gbatch))[local]
        clips = [cache[int(picks[i])].prefix(num_f, dit_cfg.temporal_factor) for i in idx]
        t_step = time.time()
        batch = make_batch(clips, idx, step, tcfg, dcfg, dit_cfg, tracks_cfg, null_text,
                           encode=None if codec is None else codec.encode)
        lr = lr_at(step, tcfg.lr, tcfg.warmup_steps, tcfg.total_steps, tcfg.lr_schedule)
        set_lr(opt, lr)
        loss = teacher_loss(fwd, batch, param, dcfg, tcfg.moving_weight)
        grad_norm = optimizer_step(opt, loss, model.parameters(), tcfg.grad_clip)
        ema.update(model)
        step += 1
        samples_seen += gbatch
        train_seconds += time.time() - t_step
        window_n += gbatch
        window_loss.append(loss.item())
        if step % tcfg.checkpoint_every == 0:
            _save(ctx, run_dir, step, model, ema, opt, train_seconds, samples_seen, extra)
        if ctx.is_main:
            sps = window_n / max(1e-6, time.time() - window_t)
            bar.update(1)
            bar.set_postfix(loss=f"{window_loss[-1]:.4f}", sps=f"{sps:.2f}", F=num_f)
            if step % tcfg.log_every == 0:
                rec = {"step": step, "loss": float(np.mean(window_loss)), "lr": lr, "grad_norm": float(grad_norm),
                       "samples_per_s": sps, "latent_frames": num_f, "samples_seen": samples_seen,
                       "train_hours": train_seconds / 3600, "cache_clips": len(cache), "time": time.time()}
                append_jsonl(metrics_path, rec)
                log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items() if k != "time"))
                window_t, window_n, window_loss = time.time(), 0, []
        due = tcfg.eval_minutes > 0 and time.time() - last_eval >= tcfg.eval_minutes * 60 and not args.no_eval
        if due:
            codec, text_encoder, evaluator, eval_frames = _run_eval(
                ctx, cfg, tcfg, dcfg, dit_cfg, ema, param, run_dir, step, codec, text_encoder, evaluator,
                eval_frames, num_f, log)
            extra["last_eval_step"] = step
            last_eval = time.time()
    bar.close()
    _save(ctx, run_dir, step, model, ema, opt, train_seconds, samples_seen, extra)
    if ctx.is_main:
        log.info(f"stopped at step {step} ({train_seconds / 3600:.2f} h of training steps, {samples_seen} samples)")
        print(f"teacher: step {step}, state in {run_dir}")
    for handler in log.handlers:
        handler.close()
    shutdown(ctx)
    return 0


def _save(ctx, run_dir, step, model, ema, opt, train_seconds, samples_seen, extra) -> None:
    from motionstream.train.common import save_training_state
    from motionstream.train.distributed import checkpoint_views

    mods, opts = checkpoint_views(ctx, {"model": model, "ema": ema}, {"opt": opt})
    if ctx.is_main:
        save_training_state(run_dir, step, mods, opts,
                            extra={**extra, "train_seconds": train_seconds, "samples_seen": samples_seen})
    ctx.barrier()


def _run_eval(ctx, cfg, tcfg, dcfg, dit_cfg, ema, param, run_dir, step, codec, text_encoder, evaluator,
              eval_frames, num_f, log):
    """Score the EMA weights on the val clips (rank 0), log to metrics.jsonl and write sample videos."""
    from motionstream.train.distributed import checkpoint_views

    mods, _ = checkpoint_views(ctx, {"ema": ema}, {})
    if ctx.is_main:
        from motionstream.models.codec import load_codec
        from motionstream.models.text import load_text_encoder

        if codec is None:
            codec = load_codec(tcfg.vae, tiny_decoder=None)
        if text_encoder is None:
            text_encoder = load_text_encoder(cfg)
        if evaluator is None or eval_frames != num_f:
            evaluator = TeacherEval(cfg, tcfg, dcfg, dit_cfg, codec, text_encoder, num_f, log=log.info)
            eval_frames = num_f
        eval_model, _ = build_teacher(cfg)
        eval_model.load_state_dict(mods["ema"].state_dict(), strict=False)
        eval_model.eval()
        report, videos = evaluator(eval_model, param)
        # the conditional prediction alone (w_t = w_m = 0): learning progress without guidance effects
        plain, _ = evaluator(eval_model, param, text_scale=0.0, motion_scale=0.0)
        report.update({f"{k}_noguide": plain[k] for k in ("epe", "epe_reliable", "epe_ratio", "psnr", "region_psnr")})
        report.update(evaluator.heldout_loss(eval_model, param))
        report["val_loss_prior_only"] = evaluator.heldout_loss(None, param)["val_loss"]
        report["step"] = step
        append_jsonl(run_dir / "metrics.jsonl", {"eval": report, "step": step, "time": time.time()})
        log.info("eval " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in report.items()))
        path = evaluator.write_samples(run_dir / "samples", step, videos)
        log.info(f"samples: {path}")
    ctx.barrier()
    return codec, text_encoder, evaluator, eval_frames


def _export_from_run(run_dir: Path, out_dir: Path, cfg, tcfg, dcfg, overrides: list[str]) -> int:
    """Write the run's EMA weights as a model folder (config.json + model.safetensors fp16); `overrides`
    (the export command's `--set`) stand in for a run that did not record its own."""
    from motionstream.train.common import read_training_state

    state = read_training_state(run_dir)
    if state is None:
        raise UserError(f"no training state in {run_dir} to export")
    meta, tensors = state
    ema = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
    _, dit_cfg = build_teacher(cfg)
    extra = meta.get("extra", {})
    export_teacher(out_dir, ema, dit_cfg, teacher_param(tcfg), dcfg,
                   {"step": meta["step"], "train_hours": extra.get("train_seconds", 0) / 3600,
                    "samples_seen": extra.get("samples_seen", 0), "data_seed": tcfg.seed, "preset": cfg.get("name"),
                    "config_overrides": extra.get("config_overrides", list(overrides))})
    print(f"exported EMA weights of step {meta['step']} to {out_dir}")
    return 0


# ------------------------------------------------------------------------ cache
def build_teacher_cache(args) -> int:
    from motionstream.data.splits import split_seeds
    from motionstream.data.synth import render_clip
    from motionstream.models.codec import load_codec
    from motionstream.models.checkpoints import WeightsNotFound
    from motionstream.models.text import load_text_encoder
    from motionstream.train.cache import build_cache, cache_meta

    cfg = load_run_config(args.config, args.set)
    tcfg = run_section(cfg, "train_teacher", TeacherTrainConfig)
    torch.set_num_threads(args.threads)
    video = run_section(cfg, "video", VideoConfig)
    width, height, fps = video.width, video.height, video.fps
    num_frames = 1 + 4 * (tcfg.latent_frames - 1)
    try:
        codec = load_codec(args.vae or tcfg.vae, tiny_decoder=None)
    except WeightsNotFound as err:
        raise UserError(str(err)) from err
    codec.eval()
    text_encoder = load_text_encoder(cfg)
    cache_dir = Path(args.cache or tcfg.cache_dir)
    if not cache_dir.is_absolute():
        cache_dir = REPO_ROOT / cache_dir
    meta = cache_meta(str(args.vae or tcfg.vae), cfg.get("name", ""), width, height, num_frames, fps,
                      type(text_encoder).__name__)
    seeds = split_seeds("train", args.n or tcfg.cache_clips)
    render = lambda s: render_clip(s, num_frames=num_frames, width=width, height=height, fps=fps)  # noqa: E731
    n = build_cache(cache_dir, seeds, render, codec, text_encoder, meta, progress=not args.no_progress,
                    log=lambda m: print(m, flush=True))
    print(f"teacher cache {cache_dir}: wrote {n} clips")
    return 0


# -------------------------------------------------------------------------- CLI
def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
    p = train.add_parser("teacher", help="train the bidirectional motion-guided teacher (rectified flow)",
                         description="Train the teacher DiT on cached world clips. Re-running the same command "
                         "resumes from RUN. Under `torchrun --nproc_per_node N` the model is sharded with FSDP.")
    add_config_arguments(p)
    p.add_argument("--run", "--run-dir", dest="run", default=str(REPO_ROOT / "runs" / "teacher"),
                   help="run folder (state, logs, samples); under torchrun write --run-dir (torchrun takes "
                   "--run as its own --run-path)")
    p.add_argument("--cache", default=None, help="latent cache folder (default: train_teacher.cache_dir)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes")
    p.add_argument("--steps", type=int, default=None, help="stop at this global step")
    p.add_argument("--resume-from", default=None, help="initialise from a teacher model folder when RUN is empty")
    p.add_argument("--stage", type=int, default=None, choices=[1, 2], help="2 = mid-frame masking fine-tune")
    p.add_argument("--export", default=None, metavar="DIR", help="write RUN's EMA weights to DIR and exit")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-eval", action="store_true", help="skip the periodic track-following report")
    p.add_argument("--no-build-cache", action="store_true", help="do not start the background cache builder")
    p.add_argument("--cache-wait-minutes", type=float, default=30.0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=train_teacher)

    c = train.add_parser("teacher-cache", help="render + encode world train clips for teacher training",
                         description="Render world train clips, encode them with the frozen VAE encoder and store "
                         "latents, tracks, captions and text tokens. Resumable: existing clips are skipped.")
    add_config_arguments(c)
    c.add_argument("--cache", default=None)
    c.add_argument("--n", type=int, default=None, help="number of train clips (default: train_teacher.cache_clips)")
    c.add_argument("--vae", default=None, help="VAE model folder (default: train_teacher.vae)")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=build_teacher_cache)
