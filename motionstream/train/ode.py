"""`motionstream train ode`: causal adaptation of the student by ODE regression (paper Sec. 3.2, App. D).

Stage 1 of the distillation (CausVid initialisation):

1. ODE pairs. For world train clips of the teacher cache (first-frame latent, text, tracks), the
   frozen teacher integrates its probability-flow ODE with Euler under joint guidance (Eq. 2,
   w_t = 3.0, w_m = 1.5 from the `diffusion` section). The Euler grid is split into K segments
   whose ends are exactly the student's denoising times t_0 = 1 > ... > t_{K-1} (student section),
   and the states there are kept:  states [K, C, F, h, w]  and the end point  x0 [C, F, h, w].
   One file per pair (`PAIRS/pairs/NNNNNN.npz`, atomic): generation is resumable and its result
   is cached for any number of regression runs.

2. Regression. The student (initialised from the teacher, same output parameterisation) sees,
   per chunk, the state of a randomly drawn step j (t_j), and predicts x0 = z - t_j v:

       loss = mean |x0_student - x0_teacher|^2   over the noisy chunks

   with the CausVid teacher-forcing mask `chunk_attention_mask(..., clean_context=True)`: the
   sequence is [clean x0 chunks | noisy chunks]; noisy chunk i sees the clean sink + window of
   chunk i and itself, exactly what streaming with the cache shows it. Sink and window sizes are
   drawn per batch from `sink_choices` x `window_choices`, so one model serves every cXsYwZ.

Every draw is keyed by (seed, step or pair index, sample index): the same run gives the same result
on 1 or N torchrun processes and after a resume. Run folder: train.log, metrics.jsonl,
state.safetensors + state.json (re-run the command to resume), student/ (exported model folder,
kind "student", the input of `motionstream train dmd`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from motionstream.errors import UserError
from motionstream.config import REPO_ROOT
from motionstream.diffusion.sampling import condition_prior, prior_encoder
from motionstream.models.dit import chunk_attention_mask
from motionstream.train.cache import TeacherCache, text_key
from motionstream.train.common import WarmupSchedule, optimizer_step, repo_path, seed_everything
from motionstream.train.distributed import DistContext, shutdown, wrap_model
from motionstream.train.loop import LoopResult, Stage, StageArgs, run_stage
from motionstream.train.ode_pairs import (ODEPairs, generate_pairs, ode_schedule, open_pairs_dir, pair_batch, pair_meta,
                                          teacher_trajectory)
from motionstream.train.rollout import add_skip, load_dit_folder
from motionstream.train.student_stage import export_run_model, open_student_run, student_settings


STEP_SALT = 2                       # numpy seed salt of the regression draws
ADAM_BETA1 = 0.9


@dataclass
class ODETrainConfig:
    """Section `train_ode` of a preset."""

    seed: int = 0
    num_pairs: int = 1000               # teacher ODE trajectories (paper: 4000)
    latent_frames: int = 9              # clip length of a pair (the teacher's horizon; a multiple of chunk_frames)
    teacher_steps: int = 24             # Euler steps per trajectory (split evenly over the K student segments)
    pairs_dir: str = "cache/ode-tiny-cpu"
    pair_batch: int = 2                 # trajectories integrated together
    batch_size: int = 8                 # global regression batch
    lr: float = 5.0e-5
    lr_schedule: str = "constant"
    warmup_steps: int = 20
    total_steps: int = 2000             # cosine horizon (paper: 2000 steps)
    weight_decay: float = 0.0
    adam_beta2: float = 0.99
    grad_clip: float = 1.0
    sink_choices: list[int] = field(default_factory=lambda: [0, 1, 2])
    window_choices: list[int] = field(default_factory=lambda: [1, 2, 6])
    clean_context: bool = True          # CausVid teacher forcing: clean context + noisy chunks
    checkpoint_every: int = 1           # steps between training-state saves
    export_every: int = 100             # steps between student exports (run/student)
    log_every: int = 10
    threads: int = 2


# ------------------------------------------------------------------------ helpers
def draw_cache_config(rng: np.random.Generator, sink_choices: list[int], window_choices: list[int]) -> tuple[int, int]:
    """(S, W) for one batch: uniform over the configured choices."""
    return int(rng.choice(sink_choices)), int(rng.choice(window_choices))


def noisy_inputs(states: torch.Tensor, x0: torch.Tensor, t_student: torch.Tensor, chunk_steps: torch.Tensor,
                 chunk_frames: int, clean_context: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression inputs: (z [B, C, F or 2F, h, w], t [B, F or 2F]).

    states [B, K, C, F, h, w]; chunk_steps long [B, n_chunks]: the step j drawn for each chunk.
    With clean_context the clean x0 (t = 0) comes first, then the noisy chunks.
    """
    b, _, c, f = states.shape[:4]
    steps = chunk_steps.repeat_interleave(chunk_frames, dim=1)                      # [B, F]
    idx = steps[:, None, None, :, None, None].expand(b, 1, c, f, *states.shape[4:])
    z = states.gather(1, idx)[:, 0]
    t = t_student.to(states.device)[steps]
    if clean_context:
        return torch.cat([x0, z], 2), torch.cat([torch.zeros_like(t), t], 1)
    return z, t


def ode_predictions(model: torch.nn.Module, param, states: torch.Tensor, x0: torch.Tensor,
                    t_student: torch.Tensor, chunk_steps: torch.Tensor, chunk_frames: int, text, cond,
                    mask, clean_context: bool) -> torch.Tensor:
    """The student's x0 [B, C, F, h, w] for the noisy chunks (one masked full-sequence forward).

    mask: ChunkMask from chunk_attention_mask(F, chunk_frames, S, W, tokens, clean_context).
    """
    f = x0.shape[2]
    z, t = noisy_inputs(states, x0, t_student, chunk_steps, chunk_frames, clean_context)
    prior = None if param.output_skip == "none" else condition_prior(cond, param.output_skip)
    if prior is not None and clean_context:
        prior = torch.cat([prior, prior], 2)
    v = add_skip(model(z, t, text[0], text[1], cond, mask), z, t, prior, param)
    return (z - t[:, None, :, None, None] * v)[:, :, -f:]


def ode_regression_loss(model: torch.nn.Module, param, states: torch.Tensor, x0: torch.Tensor,
                        t_student: torch.Tensor, chunk_steps: torch.Tensor, chunk_frames: int, text, cond,
                        mask, clean_context: bool) -> torch.Tensor:
    """mean |x0_student - x0_teacher|^2 on the noisy chunks (module docstring)."""
    pred = ode_predictions(model, param, states, x0, t_student, chunk_steps, chunk_frames, text, cond, mask,
                           clean_context)
    return (pred - x0).pow(2).mean()


# ------------------------------------------------------------------------ pairs


# --------------------------------------------------------------------- training
def ode_step_inputs(step: int, ocfg: ODETrainConfig, num_pairs: int, num_chunks: int, num_steps: int,
                    local: slice) -> tuple[list[int], torch.Tensor, tuple[int, int]]:
    """(pair picks of this rank, chunk_steps long [B_local, n_chunks], (S, W)) of global step `step`."""
    rng = np.random.default_rng([ocfg.seed, STEP_SALT, step])
    picks = rng.integers(0, num_pairs, size=ocfg.batch_size)
    s, w = draw_cache_config(rng, ocfg.sink_choices, ocfg.window_choices)
    steps = torch.from_numpy(rng.integers(0, num_steps, size=(ocfg.batch_size, num_chunks)))
    return [int(p) for p in picks[local]], steps[local], (s, w)


@dataclass
class ODEArgs(StageArgs):
    """`motionstream train ode` (see cli/train.py for each option's meaning)."""

    teacher: str = "teacher-tiny-cpu"
    run: str = str(REPO_ROOT / "runs" / "ode")
    cache: str | None = None
    pairs: str | None = None
    num_pairs: int | None = None
    pairs_only: bool = False
    text_scale: float | None = None
    motion_scale: float | None = None
    no_generate: bool = False
    device: str = "auto"


class ODEStage(Stage):
    """Regression of the causal student (initialised from the teacher) onto the ODE pairs."""

    def __init__(self, args: ODEArgs, cfg, ocfg: ODETrainConfig, scfg, pairs: ODEPairs, lineage: dict[str, Any],
                 ctx: DistContext):
        self.args, self.cfg, self.ocfg, self.scfg, self.pairs, self.lineage, self.ctx = (
            args, cfg, ocfg, scfg, pairs, lineage, ctx)
        seed_everything(ocfg.seed)
        model, self.param, _ = load_dit_folder(args.teacher, ctx.device)   # the student starts as the teacher
        self.dit_cfg = model.cfg
        model.train()
        self.model = wrap_model(model, ctx)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=ocfg.lr, betas=(ADAM_BETA1, ocfg.adam_beta2),
                                     weight_decay=ocfg.weight_decay)
        self.modules, self.optimizers = {"model": self.model}, {"opt": self.opt}
        self.schedulers = [WarmupSchedule(self.opt, ocfg.lr, ocfg.warmup_steps, ocfg.total_steps, ocfg.lr_schedule)]
        self.t_student = scfg.timesteps()
        self.num_chunks = ocfg.latent_frames // scfg.chunk_frames
        h, w = pairs.load(pairs.indices[0])["x0"].shape[2:]
        self.tokens = self.model.tokens_per_frame((h, w))
        self.cache_name = ""

    def restore(self, step: int, extra: dict[str, Any], resumed: bool, log: logging.Logger) -> None:
        o = self.ocfg
        log.info(f"ODE regression: {len(self.pairs)} pairs, {self.ctx.world_size} process(es), batch {o.batch_size}, "
                 f"S in {o.sink_choices}, W in {o.window_choices}, clean_context={o.clean_context}")

    def train_step(self, step: int) -> dict[str, float]:
        o, s, dev = self.ocfg, self.scfg, self.ctx.device
        picks, chunk_steps, (sink, window) = ode_step_inputs(step, o, len(self.pairs), self.num_chunks, s.num_steps,
                                                             self.ctx.local_slice(o.batch_size))
        states, x0, text, cond = pair_batch(self.pairs, picks, self.dit_cfg)
        mask = chunk_attention_mask(o.latent_frames, s.chunk_frames, sink, window, self.tokens,
                                    clean_context=o.clean_context)
        loss = ode_regression_loss(self.model, self.param, states.to(dev), x0.to(dev), self.t_student,
                                   chunk_steps.to(dev), s.chunk_frames, (text[0].to(dev), text[1].to(dev)),
                                   cond.to(dev), mask, o.clean_context)
        grad_norm = optimizer_step(self.opt, loss, self.model.parameters(), o.grad_clip)
        self.cache_name = f"c{s.chunk_frames}s{sink}w{window}"
        return {"loss": loss.item(), "grad_norm": float(grad_norm)}

    def bar_postfix(self, figures: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{figures['loss']:.4f}", "cfg": self.cache_name}

    def export(self, step: int, train_seconds: float) -> None:
        export_run_model(self.ctx, Path(self.args.run), self.model, self.dit_cfg, self.param, self.scfg, "ode", step,
                         train_seconds, self.ocfg.seed, self.cfg, extra=self.lineage)


def make_pairs(args: ODEArgs, cfg, ocfg: ODETrainConfig, scfg, dcfg, tcfg, teacher, param, teacher_meta,
               pairs_dir: Path, num_pairs: int, ctx: DistContext, log: logging.Logger) -> None:
    """Stage 1: every rank integrates its share of the missing pairs; rank 0 owns meta.json."""
    try:
        cache = TeacherCache(repo_path(args.cache or tcfg.cache_dir))
    except FileNotFoundError as err:
        raise UserError(str(err)) from err
    if len(cache) == 0:
        raise UserError(f"teacher cache {cache.root} has no clips")
    log.info(f"ODE pairs: {num_pairs} into {pairs_dir} from teacher {args.teacher} "
             f"(student steps {scfg.timesteps().tolist()}, {ocfg.teacher_steps} Euler steps)")
    if args.text_scale is not None:
        dcfg.text_scale = args.text_scale
    if args.motion_scale is not None:
        dcfg.motion_scale = args.motion_scale
    encode = prior_encoder(param, tcfg.vae, ctx.device)
    meta = pair_meta(args.teacher, teacher_meta, scfg, dcfg, ocfg)
    if ctx.is_main:
        open_pairs_dir(pairs_dir, meta)
    ctx.barrier()                                   # meta.json exists before any rank writes pairs
    n = generate_pairs(pairs_dir, teacher, param, cache, cache.text(text_key("")), teacher.cfg, scfg, dcfg, ocfg,
                       cfg.get("tracks", {}), meta, num_pairs, progress=ctx.is_main and not args.no_progress,
                       log=log.info, rank=ctx.rank, world_size=ctx.world_size, encode=encode)
    log.info(f"ODE pairs: rank {ctx.rank} wrote {n} new")


def train_ode(args: ODEArgs) -> LoopResult | None:
    """Generate the missing ODE pairs, then regress the student on them in `args.run` (resumable)."""
    run = open_student_run(args, "ode", ODETrainConfig, args.device)
    if run is None:
        return None
    cfg, ocfg, scfg, dcfg, tcfg, ctx, log = run.cfg, run.section, run.scfg, run.dcfg, run.tcfg, run.ctx, run.log
    if ocfg.latent_frames % scfg.chunk_frames:
        raise UserError(f"train_ode.latent_frames {ocfg.latent_frames} is not a multiple of student.chunk_frames "
                        f"{scfg.chunk_frames}")
    pairs_dir = repo_path(args.pairs or ocfg.pairs_dir)
    try:
        teacher, param, teacher_meta = load_dit_folder(args.teacher, ctx.device)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise UserError(f"teacher {args.teacher}: {err}") from err
    if not args.no_generate:
        make_pairs(args, cfg, ocfg, scfg, dcfg, tcfg, teacher, param, teacher_meta, pairs_dir,
                   args.num_pairs or ocfg.num_pairs, ctx, log)
    ctx.barrier()
    pairs = ODEPairs(pairs_dir)
    if len(pairs) == 0:
        raise UserError(f"no ODE pairs in {pairs_dir}")
    if args.pairs_only:
        return None
    del teacher
    lineage = {"teacher_folder": str(args.teacher), "teacher_step": teacher_meta.get("step"), "ode_pairs": len(pairs)}
    stage = ODEStage(args, cfg, ocfg, scfg, pairs, lineage, ctx)
    settings = student_settings("ode", args, ocfg)
    result = run_stage(stage, settings, ctx)
    shutdown(ctx)
    return result


# the pair side lives in train/ode_pairs.py; these names stay importable from here
__all__ = ["ODETrainConfig", "ODEArgs", "ODEStage", "ode_schedule", "teacher_trajectory", "noisy_inputs",
           "ode_regression_loss", "ode_predictions", "draw_cache_config", "open_pairs_dir", "generate_pairs", "ODEPairs",
           "pair_batch", "train_ode"]
