"""`motionstream train gt`: the causal student's self-rollout regressed on the world's ground truth.

Distillation (ODE + DMD) can only make the student as good as its teacher, and the teacher makes
worse video than the forward warp its output is built around. The world knows the truth, so this
stage trains the student on it directly, in the paper's form (causal, few-step, sink + rolling KV
cache, streamed chunk by chunk with the inference sampler):

    inputs     a train-split world clip rendered on the fly, with the motion a user would give:
               "dense"  a 1000-2500-track subset of the 50x50 grid scaled to the latent grid (as before)
               "drag"   the studio's input (data/drags.py): a drag patch on some moving objects,
                        pinned points on background the objects never cover; still camera
               "sparse" a few random grid tracks
    rollout    N chunks in [min_rollout_chunks, max_rollout_chunks] with the inference KVCache
               (train/rollout.self_rollout), sink S and window W drawn per step, exit step k drawn
               per step; every chunk's step-k output carries gradients (nothing crosses chunks)
    loss       weighted_mse(x0 of every chunk, the VAE latents of the true clip), weights
               1 + changed_weight x the changed fraction of each latent cell (losses_student.py)
    EMA        of the student, exported to RUN/student every `export_every` steps

The whole clip supervises every input kind, so a drag on three points of an object teaches the
model to move the whole object and to show what it uncovers. Every draw is keyed by
(seed, step, sample index): a resumed run replays the same data.

A held-out check every `eval_every` steps streams the EMA student on fixed val clips (dense and
drag inputs) and logs its latent error on the changed cells next to the prior's (the forward warp encoded, or with
`drag_paste` the segment paste on drag inputs: what the network would output if it added nothing).

Run folder: train.log, metrics.jsonl, state.safetensors + state.json (re-run to resume), student/.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from motionstream.errors import UserError
from motionstream.config import REPO_ROOT, VideoConfig
from motionstream.data.drags import drag_input, drag_world
from motionstream.data.splits import SPLIT_SIZE, split_seeds
from motionstream.data.synth import WorldConfig, render_clip
from motionstream.models.codec import frames_to_tensor, load_codec
from motionstream.models.conditioning import PRIORS, build_condition, latent_video_prior, video_prior
from motionstream.models.text import load_text_encoder
from motionstream.tracks.embed import sample_track_subset, with_ids
from motionstream.train.common import EMA, WarmupSchedule, item_rng, optimizer_step, run_section
from motionstream.train.distributed import DistContext
from motionstream.train.loop import LoopResult, Stage, StageArgs, run_stage
from motionstream.train.losses_student import changed_cell_weights, weighted_mse
from motionstream.train.rollout import StudentSampler, chunk_noise, load_dit_folder, self_rollout
from motionstream.train.student_stage import export_run_model, open_student_run, student_settings

INPUT_KINDS = ("dense", "drag", "sparse")
GT_SALT = 7          # item_rng salt of this stage (ODE / DMD use others)
EVAL_SALT = 8
ADAM_BETA1 = 0.9
VAL_SINK, VAL_WINDOW = 1, 1        # the held-out streams run c{C}s1w1


@dataclass
class GTTrainConfig:
    """Section `train_gt` of a preset."""

    seed: int = 0
    batch_size: int = 2
    input_probs: list[float] = field(default_factory=lambda: [0.4, 0.45, 0.15])   # dense, drag, sparse
    sparse_tracks: list[int] = field(default_factory=lambda: [4, 64])             # [min, max] tracks of "sparse"
    min_rollout_chunks: int = 3
    max_rollout_chunks: int = 4
    sink_choices: list[int] = field(default_factory=lambda: [1])
    window_choices: list[int] = field(default_factory=lambda: [1, 2])
    changed_weight: float = 8.0
    lr: float = 5.0e-5
    lr_schedule: str = "constant"
    warmup_steps: int = 20
    total_steps: int = 4000
    weight_decay: float = 0.0
    adam_beta2: float = 0.99
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    checkpoint_every: int = 5
    export_every: int = 50
    log_every: int = 10
    eval_every: int = 200
    eval_clips: int = 4
    threads: int = 2
    # the "video" prior the student learns around: encode (the warped pixels through the VAE) or latent
    # (the first latent warped on the latent grid, models/conditioning.latent_video_prior), as stream.prior
    prior: str = "encode"
    # with the encode prior, drag inputs are moved by segment paste instead of the warp (as stream.drag_paste)
    drag_paste: bool = False

    def __post_init__(self) -> None:
        if self.prior not in PRIORS:
            raise ValueError(f"train_gt.prior must be encode or latent, got {self.prior!r}")
        if self.drag_paste and self.prior == "latent":
            # the stream's latent rungs paste in latent space (warp_latent fill=), which this stage does not build
            raise ValueError("train_gt.drag_paste works with train_gt.prior: encode only "
                             "(with prior latent, set train_gt.drag_paste=false)")


@dataclass
class GTBatch:
    """One step's inputs: the condition of the whole rollout and its ground truth."""

    cond: Any                                     # MotionCondition [B, ..., N*C latent frames]
    text: tuple[torch.Tensor, torch.Tensor]
    target: torch.Tensor                          # [B, C, N*C, h, w] VAE latents of the true clip
    weights: torch.Tensor                         # [B, 1, N*C, h, w]
    noise: list[torch.Tensor]                     # N chunk noises [K, B, C, Cf, h, w]
    kinds: list[str]


def user_tracks(clip, kind: str, rng: np.random.Generator, tracks_cfg: dict[str, Any], cells: int,
                sparse_range: list[int]):
    """The motion input of one sample (module docstring), with track IDs; "drag" falls back to
    "dense" when no object moves."""
    if kind == "drag":
        made = drag_input(clip, rng)
        if made is not None:
            return with_ids(made[0], rng)
    if kind == "sparse":
        usable = np.flatnonzero(clip.tracks.visibility[0])
        count = min(len(usable), int(rng.integers(sparse_range[0], sparse_range[1] + 1)))
        if count > 0:
            return with_ids(clip.tracks.subset(np.sort(rng.choice(usable, count, replace=False))), rng)
    return sample_track_subset(clip.tracks, rng, tracks_cfg.get("min_tracks", 1000),
                               tracks_cfg.get("max_tracks", 2500), cells=cells)


class ClipSource:
    """Train-split world clips rendered on demand and encoded with the frozen VAE."""

    def __init__(self, codec, text_encoder, video: tuple[int, int, float], tracks_cfg: dict[str, Any],
                 cfg: GTTrainConfig, split: str = "train"):
        self.codec, self.text_encoder, self.tracks_cfg, self.cfg, self.split = codec, text_encoder, tracks_cfg, cfg, split
        self.width, self.height, self.fps = video

    def sample(self, rng: np.random.Generator, kind: str, num_latent: int, dit_cfg):
        """(first latent [C, h, w], tracks, prior [C, F, h, w], target [C, F, h, w], weights [1, F, h, w], caption)."""
        tf = dit_cfg.temporal_factor
        num_video = 1 + tf * (num_latent - 1)
        seed = split_seeds(self.split, 1, start=int(rng.integers(SPLIT_SIZE)))[0]
        world = drag_world() if kind == "drag" else WorldConfig()
        clip = render_clip(seed, num_video, self.width, self.height, self.fps, cfg=world)
        with torch.no_grad():
            target = self.codec.encode(frames_to_tensor(clip.frames))[0]
        stride = self.width // target.shape[-1]
        tracks = user_tracks(clip, kind, rng, self.tracks_cfg, target.shape[-1] * target.shape[-2],
                             self.cfg.sparse_tracks)
        with torch.no_grad():
            if self.cfg.prior == "latent":
                prior = latent_video_prior(target[None, :, 0], [tracks], num_latent, self.width, self.height, tf)[0]
            else:
                prior = video_prior(self.codec.encode, [clip.frames[0]], [tracks], num_latent, tf,
                                    drag_paste=self.cfg.drag_paste)[0]
        weights = changed_cell_weights(clip.frames, stride, tf, self.cfg.changed_weight)[None]
        return target[:, 0], tracks, prior, target, weights, clip.caption

    def batch(self, step: int, indices: list[int], num_chunks: int, scfg, dit_cfg, salt: int = GT_SALT,
              kinds: list[str] | None = None) -> GTBatch:
        frames = num_chunks * scfg.chunk_frames
        parts, gens, picked = [], [], []
        for j, index in enumerate(indices):
            rng, gen = item_rng(self.cfg.seed, step, index, salt=salt)
            kind = kinds[j] if kinds else str(rng.choice(INPUT_KINDS, p=self.cfg.input_probs))
            parts.append(self.sample(rng, kind, frames, dit_cfg))
            gens.append(gen)
            picked.append(kind)
        first, tracks, prior, target, weights, captions = zip(*parts)
        cond = build_condition(torch.stack(first), list(tracks), frames, dit_cfg, prior=torch.stack(prior))
        text = self.text_encoder.encode(list(captions))
        c, (h, w) = first[0].shape[0], first[0].shape[1:]
        noise = [torch.cat([chunk_noise(g, scfg.num_steps, 1, c, scfg.chunk_frames, (h, w)) for g in gens], dim=1)
                 for _ in range(num_chunks)]
        return GTBatch(cond, text, torch.stack(target), torch.stack(weights), noise, picked)


def plan_step(step: int, cfg: GTTrainConfig, num_steps: int) -> tuple[int, int, int, int]:
    """(rollout chunks, sink S, window W, exit step k) of one global step."""
    rng = np.random.default_rng([cfg.seed, GT_SALT, step])
    n = int(rng.integers(cfg.min_rollout_chunks, cfg.max_rollout_chunks + 1))
    return n, int(rng.choice(cfg.sink_choices)), int(rng.choice(cfg.window_choices)), int(rng.integers(0, num_steps))


def rollout_loss(model, param, scfg, batch: GTBatch, sink: int, window: int, exit_step: int | None,
                 grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted MSE of the rollout against the truth, the rollout's latents)."""
    sampler = StudentSampler(model, scfg, param, batch.cond, batch.text)
    b, _, _, h, w = batch.target.shape
    cache = sampler.new_cache(b, (h, w), sink, window)
    chunks = range(len(batch.noise)) if grad else ()
    roll = self_rollout(sampler, cache, batch.noise, exit_step=exit_step, grad_chunks=chunks)
    return weighted_mse(roll.latents, batch.target, batch.weights), roll.latents


VAL_KINDS = ("dense", "drag")


def val_batches(source: ClipSource, scfg, dit_cfg, cfg: GTTrainConfig) -> dict[str, GTBatch]:
    """The fixed held-out batches of `heldout` (built once per run: they never change)."""
    return {kind: source.batch(0, list(range(cfg.eval_clips)), cfg.min_rollout_chunks, scfg, dit_cfg,
                               salt=EVAL_SALT, kinds=[kind] * cfg.eval_clips) for kind in VAL_KINDS}


@torch.no_grad()
def heldout(model, param, scfg, batches: dict[str, GTBatch]) -> dict[str, float]:
    """Changed-cell latent error of full K-step streams (c{C}s1w1) on the val batches (val_batches),
    per input kind, for the model and for its prior (the forward warp or segment paste, encoded)."""
    out = {}
    for kind, batch in batches.items():
        changed = (batch.weights > 1).float()
        _, lat = rollout_loss(model, param, scfg, batch, VAL_SINK, VAL_WINDOW, None, grad=False)
        out[f"val_{kind}"] = weighted_mse(lat, batch.target, changed).item()
        out[f"val_{kind}_prior"] = weighted_mse(batch.cond.prior, batch.target, changed).item()
    return out


@dataclass
class GTArgs(StageArgs):
    """`motionstream train gt` (see cli/train.py for each option's meaning)."""

    student: str = "student-tiny-cpu"
    run: str = str(REPO_ROOT / "runs" / "gt")
    vae: str | None = None


class GTStage(Stage):
    """The student's self-rollout regressed on the true clip (module docstring), EMA every step."""

    def __init__(self, args: GTArgs, cfg, mcfg: GTTrainConfig, scfg, model, param, meta, codec, video):
        self.args, self.cfg, self.mcfg, self.scfg, self.param, self.meta = args, cfg, mcfg, scfg, param, meta
        text_encoder = load_text_encoder(cfg)
        self.source = ClipSource(codec, text_encoder, video, cfg.get("tracks", {}), mcfg)
        self.val_source = ClipSource(codec, text_encoder, video, cfg.get("tracks", {}), mcfg, split="val")
        self.probe = copy.deepcopy(model).eval()
        self.model = model.train()
        self.opt = torch.optim.AdamW(model.parameters(), lr=mcfg.lr, betas=(ADAM_BETA1, mcfg.adam_beta2),
                                     weight_decay=mcfg.weight_decay)
        self.ema = EMA(model, mcfg.ema_decay)
        self.modules, self.optimizers = {"model": model, "ema": self.ema}, {"opt": self.opt}
        self.schedulers = [WarmupSchedule(self.opt, mcfg.lr, mcfg.warmup_steps, mcfg.total_steps, mcfg.lr_schedule)]
        self.held: dict[str, GTBatch] | None = None
        self.lineage = {"init_student": str(args.student), "init_stage": meta.get("stage"), "init_step": meta.get("step")}
        self.plan = (0, 0)

    def restore(self, step: int, extra: dict[str, Any], resumed: bool, log: logging.Logger) -> None:
        log.info(f"student {self.args.student} (stage {self.meta.get('stage')}, step {self.meta.get('step')}), "
                 f"inputs {dict(zip(INPUT_KINDS, self.mcfg.input_probs))}")

    def train_step(self, step: int) -> dict[str, float]:
        n, sink, win, exit_step = plan_step(step, self.mcfg, self.scfg.num_steps)
        batch = self.source.batch(step, list(range(self.mcfg.batch_size)), n, self.scfg, self.model.cfg)
        loss, _ = rollout_loss(self.model, self.param, self.scfg, batch, sink, win, exit_step, grad=True)
        grad_norm = optimizer_step(self.opt, loss, self.model.parameters(), self.mcfg.grad_clip)
        self.ema.update(self.model)
        self.plan = (n, exit_step)
        return {"loss": loss.item(), "grad_norm": float(grad_norm)}

    def bar_postfix(self, figures: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{figures['loss']:.4f}", "n": str(self.plan[0]), "k": str(self.plan[1])}

    def evaluate(self, step: int, log: logging.Logger) -> dict[str, float]:
        self.ema.copy_to(self.probe)
        if self.held is None:
            self.held = val_batches(self.val_source, self.scfg, self.model.cfg, self.mcfg)
        return heldout(self.probe, self.param, self.scfg, self.held)

    def export(self, step: int, train_seconds: float) -> None:
        export_run_model(DistContext(), Path(self.args.run), self.ema, self.model.cfg, self.param, self.scfg, "gt",
                         step, train_seconds, self.mcfg.seed, self.cfg, name="ema", extra=self.lineage)


def train_gt(args: GTArgs) -> LoopResult | None:
    """Train (or resume) the ground-truth stage in `args.run`; with `args.export`, copy its EMA student."""
    run = open_student_run(args, "gt", GTTrainConfig, device="cpu")
    if run is None:
        return None
    cfg, mcfg, scfg, tcfg = run.cfg, run.section, run.scfg, run.tcfg
    try:
        model, param, meta = load_dit_folder(args.student)
        codec = load_codec(args.vae or tcfg.vae, tiny_decoder=None)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise UserError(str(err)) from err
    if param.output_skip != "video":
        raise UserError(f"{args.student} is not built around the video prior (output_skip {param.output_skip!r})")
    vcfg = run_section(cfg, "video", VideoConfig)
    video = (vcfg.width, vcfg.height, vcfg.fps)
    stage = GTStage(args, cfg, mcfg, scfg, model, param, meta, codec, video)
    settings = student_settings("gt", args, mcfg, eval_every_steps=mcfg.eval_every)
    return run_stage(stage, settings)
