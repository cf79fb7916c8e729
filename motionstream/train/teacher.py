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

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from motionstream.errors import UserError
from motionstream.config import REPO_ROOT, section, to_dict
from motionstream.diffusion.flow import DiffusionConfig
from motionstream.diffusion.sampling import TeacherParam
from motionstream.models.checkpoints import load_model_dir, save_model_dir
from motionstream.models.codec import load_codec
from motionstream.models.dit import DiTConfig, WanDiT
from motionstream.train.cache import TeacherCache, text_key
from motionstream.train.common import (EMA, WarmupSchedule, load_run_config, optimizer_step, read_training_state,
                                       repo_path, run_section, seed_everything)
from motionstream.train.distributed import DistContext, checkpoint_views, init_distributed, restore_views, shutdown, wrap_model
from motionstream.train.loop import LoopResult, LoopSettings, Stage, StageArgs, run_stage, stage_logger
from motionstream.train.teacher_batch import Batch, latent_frames_at, make_batch, pad_text, teacher_loss
from motionstream.train.teacher_eval import TeacherEval, TeacherEvaluation, teacher_param, tracks_section

TEACHER_KIND = "teacher"
CACHE_REFRESH_EVERY = 50            # steps between re-listing the cache (a background builder adds clips)
CACHE_POLL_SECONDS = 5              # while waiting for the first clips of the cache
ADAM_BETA1 = 0.9

# batch and loss live in train/teacher_batch.py, the eval in train/teacher_eval.py; importable from here too
__all__ = ["TeacherTrainConfig", "TeacherArgs", "TeacherStage", "TeacherEval", "Batch", "teacher_param", "tracks_section",
           "latent_frames_at", "make_batch", "pad_text", "teacher_loss", "build_teacher", "export_teacher",
           "train_teacher"]


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


# ------------------------------------------------------------------- the model
def build_teacher(cfg: dict[str, Any]):
    dit_cfg = section(cfg, "dit", DiTConfig)
    return WanDiT(dit_cfg), dit_cfg


def export_teacher(out_dir: str | Path, state: dict[str, torch.Tensor], dit_cfg, param: TeacherParam,
                   dcfg: DiffusionConfig, extra: dict[str, Any] | None = None) -> Path:
    """Write a model folder (fp16) that diffusion.sampling.load_teacher reads."""
    meta = {"kind": TEACHER_KIND, "config": to_dict(dit_cfg), "teacher": to_dict(param),
            "diffusion": to_dict(dcfg), **(extra or {})}
    return save_model_dir(out_dir, state, meta)


# --------------------------------------------------------------------- training
@dataclass
class TeacherArgs(StageArgs):
    """`motionstream train teacher` (see cli/train.py for each option's meaning)."""

    run: str = str(REPO_ROOT / "runs" / "teacher")
    cache: str | None = None
    resume_from: str | None = None
    stage: int | None = None
    device: str = "auto"
    no_eval: bool = False
    no_build_cache: bool = False
    cache_wait_minutes: float = 30.0


class TeacherStage(Stage):
    """Rectified flow of the teacher DiT on cached clips (module docstring), EMA every step."""

    def __init__(self, args: TeacherArgs, cfg, tcfg: TeacherTrainConfig, dcfg: DiffusionConfig, cache: TeacherCache,
                 ctx: DistContext):
        self.args, self.cfg, self.tcfg, self.dcfg, self.cache, self.ctx = args, cfg, tcfg, dcfg, cache, ctx
        self.null_text = cache.text(text_key(""))
        self.tracks_cfg = tracks_section(cfg)
        seed_everything(tcfg.seed)
        model, self.dit_cfg = build_teacher(cfg)
        self.param = teacher_param(tcfg)
        self.model = wrap_model(model.to(ctx.device), ctx)
        self.ema = EMA(self.model, tcfg.ema_decay)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=tcfg.lr, betas=(ADAM_BETA1, tcfg.adam_beta2),
                                     weight_decay=tcfg.weight_decay)
        self.modules, self.optimizers = {"model": self.model, "ema": self.ema}, {"opt": self.opt}
        self.schedulers = [WarmupSchedule(self.opt, tcfg.lr, tcfg.warmup_steps, tcfg.total_steps, tcfg.lr_schedule)]
        self.fwd = torch.compile(self.model) if tcfg.compile else self.model
        self.num_frames = latent_frames_at(0, tcfg)[0]

    def restore(self, step: int, extra: dict[str, Any], resumed: bool, log: logging.Logger) -> None:
        self.samples_seen = int(extra.get("samples_seen", 0))
        # the "video" prior is encoded per sample (the codec is built after the state, as it always was)
        self.codec = load_codec(self.tcfg.vae, tiny_decoder=None) if self.param.output_skip == "video" else None
        self.evaluation = TeacherEvaluation(self.cfg, self.tcfg, self.dcfg, self.dit_cfg,
                                            lambda: build_teacher(self.cfg)[0], self.codec)
        if not resumed and self.args.resume_from:
            self.init_from(self.args.resume_from)
            log.info(f"initialised from {self.args.resume_from}")
        nparams = sum(p.numel() for p in self.model.parameters())
        log.info(f"teacher: {nparams / 1e6:.2f} M params, {self.ctx.world_size} process(es), cache {len(self.cache)} "
                 f"clips, config {self.args.config}, stage {self.tcfg.stage}")

    def init_from(self, folder: str) -> None:
        """Model and EMA start from a teacher model folder (a fresh run only)."""
        _, full = load_model_dir(folder)
        if self.ctx.enabled:
            mods, _, finish = restore_views(self.ctx, {"model": self.model, "ema": self.ema}, {})
            mods["model"].load_state_dict(full)
            mods["ema"].shadow, mods["ema"].num_updates = dict(full), 0
            finish()
        else:
            self.model.load_state_dict(full)
            self.ema.shadow = {k: v.clone() for k, v in full.items()}

    def extra(self) -> dict[str, Any]:
        # the export's config.json names the overrides beside the preset
        return {"config_overrides": list(self.args.overrides), "samples_seen": self.samples_seen}

    def train_step(self, step: int) -> dict[str, float]:
        tcfg, t0 = self.tcfg, time.time()
        self.num_frames, gbatch = latent_frames_at(step, tcfg)
        if step % CACHE_REFRESH_EVERY == 0:
            self.cache.refresh()
        picks = np.random.default_rng([tcfg.seed, step]).integers(0, len(self.cache), size=gbatch)
        idx = list(range(gbatch))[self.ctx.local_slice(gbatch)]
        clips = [self.cache[int(picks[i])].prefix(self.num_frames, self.dit_cfg.temporal_factor) for i in idx]
        batch = make_batch(clips, idx, step, tcfg, self.dcfg, self.dit_cfg, self.tracks_cfg, self.null_text,
                           encode=None if self.codec is None else self.codec.encode)
        loss = teacher_loss(self.fwd, batch, self.param, self.dcfg, tcfg.moving_weight)
        grad_norm = optimizer_step(self.opt, loss, self.model.parameters(), tcfg.grad_clip)
        self.ema.update(self.model)
        self.samples_seen += gbatch
        return {"loss": loss.item(), "grad_norm": float(grad_norm), "latent_frames": self.num_frames,
                "samples_per_s": gbatch / max(1e-6, time.time() - t0)}

    def log_context(self) -> dict[str, Any]:
        return {"samples_seen": self.samples_seen, "cache_clips": len(self.cache)}

    def bar_postfix(self, figures: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{figures['loss']:.4f}", "sps": f"{figures['samples_per_s']:.2f}", "F": str(self.num_frames)}

    def evaluate(self, step: int, log: logging.Logger) -> dict[str, Any] | None:
        """Track following of the EMA weights on the val clips (rank 0; the gather is a collective)."""
        mods, _ = checkpoint_views(self.ctx, {"ema": self.ema}, {})
        if not self.ctx.is_main:
            return None
        return self.evaluation(mods["ema"].state_dict(), self.param, step, self.num_frames, Path(self.args.run), log)


def wait_for_cache(args: TeacherArgs, tcfg: TeacherTrainConfig, cache_dir: Path, run_dir: Path) -> TeacherCache:
    """The cache once it holds `min_cache_clips` clips (a background builder may still be adding)."""
    t_wait = time.time()
    while True:
        try:
            cache = TeacherCache(cache_dir)
            if len(cache) >= min(tcfg.min_cache_clips, tcfg.cache_clips):
                return cache
        except FileNotFoundError:
            pass
        if time.time() - t_wait > args.cache_wait_minutes * 60:
            raise UserError(f"teacher cache {cache_dir} has too few clips after {args.cache_wait_minutes} min "
                            f"(need {tcfg.min_cache_clips}); see {run_dir / 'cache.log'}")
        time.sleep(CACHE_POLL_SECONDS)


def train_teacher(args: TeacherArgs) -> LoopResult | None:
    """Train (or resume) the teacher in `args.run`; with `args.export`, write its EMA weights instead."""
    cfg = load_run_config(args.config, args.overrides)
    tcfg = run_section(cfg, "train_teacher", TeacherTrainConfig)
    dcfg = run_section(cfg, "diffusion", DiffusionConfig)
    if args.stage is not None:
        tcfg.stage = args.stage
    torch.set_num_threads(args.threads or tcfg.threads)
    ctx = init_distributed(args.device)
    run_dir = Path(args.run)
    if args.export:
        export_from_run(run_dir, Path(args.export), cfg, tcfg, dcfg, args.overrides)
        return None
    cache_dir = repo_path(args.cache or tcfg.cache_dir)
    if ctx.is_main:
        ensure_cache(args, tcfg, cache_dir, run_dir, stage_logger(run_dir, "teacher", ctx))
    cache = wait_for_cache(args, tcfg, cache_dir, run_dir)
    stage = TeacherStage(args, cfg, tcfg, dcfg, cache, ctx)
    settings = LoopSettings(name="teacher", run_dir=run_dir, max_steps=args.steps, minutes=args.minutes,
                            checkpoint_every=tcfg.checkpoint_every, log_every=tcfg.log_every,
                            eval_every_minutes=0.0 if args.no_eval else tcfg.eval_minutes, eval_at_start=True,
                            progress=not args.no_progress)
    result = run_stage(stage, settings, ctx)
    shutdown(ctx)
    return result


def ensure_cache(args: "TeacherArgs", tcfg: TeacherTrainConfig, cache_dir: Path, run_dir: Path, log) -> None:
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
           *[a for item in args.overrides for a in ("--set", item)],
           "--cache", str(cache_dir), "--n", str(tcfg.cache_clips), "--threads", "1"]
    out = open(run_dir / "cache.log", "a")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(REPO_ROOT))
    pid_file.write_text(str(proc.pid))
    log.info(f"started cache builder pid {proc.pid}: {' '.join(cmd)} (log {run_dir / 'cache.log'})")


def export_from_run(run_dir: Path, out_dir: Path, cfg, tcfg, dcfg, overrides: list[str]) -> int:
    """Write the run's EMA weights as a model folder (config.json + model.safetensors fp16); `overrides`
    (the export command's `--set`) stand in for a run that did not record its own."""
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


