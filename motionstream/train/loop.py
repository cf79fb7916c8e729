"""The training loop every stage runs: resume, progress bar, logs, checkpoints, EMA, lr, eval cadence.

A stage (vae, tiny-decoder, teacher, ode, dmd, gt) is a `Stage`: its modules and optimizers, one
update (`train_step`), and optionally an evaluation and an export. `run_stage` does the rest, once:

    resume      `load_training_state` from RUN/state.safetensors (gathered views under torchrun),
                then `Stage.restore` rebuilds the stage's data position from the saved `extra`
    step        the lr of the step (torch LR schedulers, `train.common.WarmupSchedule`), then
                `train_step`; the stage updates its EMA (`train.common.EMA`, on
                `torch.optim.swa_utils.AveragedModel`) where its update rule says
    checkpoint  every `checkpoint_every` steps and at the end: one atomic safetensors file
                (`save_training_state`), so a `kill -9` loses at most that many steps
    logs        every `log_every` steps the window's mean figures go to RUN/metrics.jsonl,
                RUN/train.log and TensorBoard event files in RUN (`tensorboard --logdir runs`
                shows every stage: loss, eval figures, learning rate)
    eval        every `eval_every_steps` steps or `eval_every_minutes` minutes; figures to the
                same three places (`{"eval": ..., "step": ...}` lines in metrics.jsonl)
    export      every `export_every` steps and at the end (`Stage.export`)

Stops at `max_steps` (a global step), after `more_steps` more steps, or after `minutes`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

try:                       # optional at run time: a run without it logs one warning and goes on
    from torch.utils.tensorboard import SummaryWriter
except ImportError:
    SummaryWriter = None

from motionstream.train.common import (append_jsonl, format_record, load_training_state, run_logger,
                                       save_training_state)
from motionstream.train.distributed import DistContext, checkpoint_views, restore_views

METRICS_FILE = "metrics.jsonl"
EVAL_TAG = "eval"
MISSING_TENSORBOARD = "tensorboard is not installed: no TensorBoard event files (pip install -r requirements.txt)"
_warned_missing_tensorboard: list[bool] = []                  # TensorBoard tag prefix of evaluation figures (training figures: "train")


@dataclass
class LoopSettings:
    """How one run is driven: where it lives, when it stops, how often it saves, logs and evaluates."""

    name: str                                   # stage name: logger, progress bar, log lines
    run_dir: Path
    max_steps: int | None = None                # stop at this global step
    more_steps: int | None = None               # or after this many steps of this invocation
    minutes: float | None = None                # or after this many minutes
    checkpoint_every: int = 1
    log_every: int = 10
    eval_every_steps: int = 0                   # 0: never by steps
    eval_every_minutes: float = 0.0             # 0: never by time
    eval_at_start: bool = False                 # a time-based eval is due at once in a fresh run
    eval_at_end: bool = False
    export_every: int = 0
    progress: bool = True
    metrics: bool = True                        # write metrics.jsonl records


class Stage:
    """One training stage as the loop sees it. Subclasses set `modules`, `optimizers`, `schedulers`
    (set to each step's rate before the update) and implement `train_step`; the rest is optional."""

    modules: dict[str, Any]                     # saved in the training state under their names
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: list[torch.optim.lr_scheduler.LRScheduler]

    def restore(self, step: int, extra: dict[str, Any], resumed: bool, log: logging.Logger) -> None:
        """After the training state is loaded (or not): rebuild the data position from `extra`."""

    def extra(self) -> dict[str, Any]:
        """JSON-serialisable state saved beside the tensors (data cursor, RNG, lineage)."""
        return {}

    def train_step(self, step: int) -> dict[str, float]:
        """One update at global step `step`; returns its figures (averaged over the log window)."""
        raise NotImplementedError

    def evaluate(self, step: int, log: logging.Logger) -> dict[str, Any] | None:
        """Held-out figures of the current weights (called on every rank under torchrun)."""
        return None

    def export(self, step: int, train_seconds: float) -> None:
        """Write the run's shippable model (called on every rank under torchrun)."""

    def bar_postfix(self, figures: dict[str, float]) -> dict[str, str]:
        return {"loss": f"{figures.get('loss', float('nan')):.4f}"}

    def log_context(self) -> dict[str, Any]:
        """Figures added to each metrics record as they are now (not averaged)."""
        return {}

    def lr(self) -> float:
        """The learning rate logged for the step that just ran."""
        return self.schedulers[0].rate() if self.schedulers else float("nan")


@dataclass
class LoopResult:
    step: int
    resumed_from: int | None
    train_seconds: float
    last_eval: dict[str, Any] = field(default_factory=dict)


def tensorboard_writer(run_dir: Path, purge_step: int | None, log: logging.Logger):
    """A SummaryWriter writing event files into `run_dir`, or None when the `tensorboard` package is
    missing (one warning; training goes on). `purge_step`: a resumed run's step, so the events a kill
    left past the last checkpoint are dropped and the curves continue from the resumed step."""
    if SummaryWriter is None:
        log.warning(MISSING_TENSORBOARD)
        if not _warned_missing_tensorboard:       # the console hears it once per process
            _warned_missing_tensorboard.append(True)
            logging.getLogger("motionstream").warning(MISSING_TENSORBOARD)
        return None
    return SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)


def _scalars(prefix: str, figures: dict[str, Any]) -> dict[str, float]:
    """The finite numeric figures of a record as TensorBoard tags `prefix/name`."""
    out = {}
    for k, v in figures.items():
        if k in ("step", "time") or isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            continue
        if np.isfinite(v):
            out[f"{prefix}/{k}"] = float(v)
    return out


class _Run:
    """The mutable state of one invocation of the loop (kept off the Stage so stages stay plain)."""

    def __init__(self, stage: Stage, settings: LoopSettings, ctx: DistContext):
        self.stage, self.s, self.ctx = stage, settings, ctx
        self.run_dir = Path(settings.run_dir)
        self.log = run_logger(self.run_dir, settings.name, ctx.is_main)
        self.window: list[dict[str, float]] = []
        self.last_eval: dict[str, Any] = {}

    # ---------------------------------------------------------------- state
    def resume(self) -> None:
        mods, opts, finish = restore_views(self.ctx, self.stage.modules, self.stage.optimizers)
        loaded = load_training_state(self.run_dir, mods, opts)
        finish()
        self.step, extra = loaded if loaded is not None else (0, {})
        self.resumed_from = self.step if loaded is not None else None
        self.train_seconds = float(extra.get("train_seconds", 0.0))
        self.elapsed0 = float(extra.get("elapsed_s", 0.0))
        self.last_eval_step = extra.get("last_eval_step")
        self.stage.restore(self.step, extra, loaded is not None, self.log)

    def save(self) -> None:
        extra = {**self.stage.extra(), "train_seconds": self.train_seconds,
                 "elapsed_s": self.elapsed0 + time.time() - self.t_start}
        if self.last_eval_step is not None:
            extra["last_eval_step"] = self.last_eval_step
        mods, opts = checkpoint_views(self.ctx, self.stage.modules, self.stage.optimizers)
        if self.ctx.is_main:
            save_training_state(self.run_dir, self.step, mods, opts, extra)
            if self.writer is not None:
                self.writer.flush()
        self.ctx.barrier()

    # ---------------------------------------------------------------- cadence
    def stop(self) -> bool:
        s = self.s
        return ((s.max_steps is not None and self.step >= s.max_steps)
                or (s.more_steps is not None and self.step >= self.start_step + s.more_steps)
                or (s.minutes is not None and time.time() - self.t_start >= s.minutes * 60))

    def eval_due(self) -> bool:
        s = self.s
        if s.eval_every_steps and self.step % s.eval_every_steps == 0:
            return True
        return bool(s.eval_every_minutes) and time.time() - self.eval_clock >= s.eval_every_minutes * 60

    # ---------------------------------------------------------------- output
    def write_record(self, record: dict[str, Any], prefix: str) -> None:
        if not self.ctx.is_main:
            return
        if self.s.metrics:
            append_jsonl(self.run_dir / METRICS_FILE, record)
        flat = record.get(EVAL_TAG, record)
        self.log.info((f"{EVAL_TAG} " if prefix == EVAL_TAG else "") + format_record({"step": self.step, **flat}))
        if self.writer is not None:
            for tag, value in _scalars(prefix, flat).items():
                self.writer.add_scalar(tag, value, self.step)

    def log_window(self) -> None:
        keys = list(dict.fromkeys(k for r in self.window for k in r))
        means = {k: float(np.nanmean([r.get(k, np.nan) for r in self.window])) for k in keys}
        self.window = []
        record = {"step": self.step, **means, "lr": self.stage.lr(), **self.stage.log_context(),
                  "train_hours": self.train_seconds / 3600, "time": time.time()}
        self.write_record(record, "train")

    def evaluate(self) -> None:
        figures = self.stage.evaluate(self.step, self.log)
        self.eval_clock = time.time()
        self.last_eval_step = self.step
        if figures is not None:
            self.last_eval = figures
            self.write_record({EVAL_TAG: figures, "step": self.step, "time": time.time()}, EVAL_TAG)
        self.ctx.barrier()

    # ---------------------------------------------------------------- loop
    def one_step(self, bar) -> None:
        s = self.s
        t0 = time.time()
        for sched in self.stage.schedulers:
            sched.jump_to(self.step)
        figures = self.stage.train_step(self.step)
        self.step += 1
        self.train_seconds += time.time() - t0
        self.window.append({k: self.ctx.mean(v) for k, v in figures.items()})
        if self.step % s.checkpoint_every == 0:
            self.save()
        if s.export_every and self.step % s.export_every == 0:
            self.stage.export(self.step, self.train_seconds)
        if self.ctx.is_main:
            bar.update(1)
            bar.set_postfix(self.stage.bar_postfix(figures))
        if self.step % s.log_every == 0:
            self.log_window()
        if self.eval_due():
            self.evaluate()

    def run(self) -> LoopResult:
        self.resume()
        self.start_step = self.step
        self.t_start = time.time()
        fresh_eval = self.s.eval_at_start and self.last_eval_step is None
        self.eval_clock = 0.0 if fresh_eval else self.t_start
        self.writer = tensorboard_writer(self.run_dir, self.resumed_from, self.log) if self.ctx.is_main else None
        self.log.info(f"{'resume' if self.resumed_from is not None else 'start'} step={self.step} "
                      f"run={self.run_dir} processes={self.ctx.world_size}")
        total = self.s.max_steps if self.s.max_steps is not None else (
            None if self.s.more_steps is None else self.step + self.s.more_steps)
        bar = tqdm(initial=self.step, total=total, desc=self.s.name, unit="step",
                   disable=not (self.ctx.is_main and self.s.progress))
        try:
            while not self.stop():
                self.one_step(bar)
        finally:
            bar.close()
        self.save()
        self.stage.export(self.step, self.train_seconds)
        if self.s.eval_at_end:
            self.evaluate()
        self.log.info(f"end step={self.step} train_hours={self.train_seconds / 3600:.3g} "
                      f"elapsed_s={self.elapsed0 + time.time() - self.t_start:.0f}")
        if self.writer is not None:
            self.writer.close()
        return LoopResult(self.step, self.resumed_from, self.train_seconds, self.last_eval)


def run_stage(stage: Stage, settings: LoopSettings, ctx: DistContext | None = None) -> LoopResult:
    """Resume (or start) `stage` in `settings.run_dir` and train it until a stop condition; the training
    state is saved and the stage exported at the end."""
    return _Run(stage, settings, ctx or DistContext()).run()


def stage_logger(run_dir: Path, name: str, ctx: DistContext | None = None) -> logging.Logger:
    """The run's logger before the loop starts (set-up messages go to the same train.log)."""
    return run_logger(Path(run_dir), name, (ctx or DistContext()).is_main)
