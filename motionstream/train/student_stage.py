"""What the student stages (ode, dmd, gt) share: their preset sections and the student model folder
they export (RUN/student, kind "student", what the streaming engine and the next stage load).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from motionstream.errors import UserError
from motionstream.diffusion.flow import DiffusionConfig
from motionstream.models.checkpoints import load_model_dir
from motionstream.train.common import load_run_config, run_section
from motionstream.train.distributed import DistContext, checkpoint_views, init_distributed
from motionstream.train.loop import LoopSettings, stage_logger
from motionstream.train.rollout import StudentConfig, export_student, load_dit_folder
from motionstream.train.teacher import TeacherTrainConfig


def load_distill_config(path: str, stage: str, stage_cls: type,
                        overrides: Sequence[str] = ()) -> tuple[dict[str, Any], Any, Any, Any, Any]:
    """(preset, `stage` section, student, diffusion, train_teacher sections) of a distillation run;
    config problems are the user's input, so they become one-line UserErrors."""
    cfg = load_run_config(path, overrides)
    return (cfg, run_section(cfg, stage, stage_cls), run_section(cfg, "student", StudentConfig),
            run_section(cfg, "diffusion", DiffusionConfig), run_section(cfg, "train_teacher", TeacherTrainConfig))


def export_run_model(ctx, run_dir: Path, model, dit_cfg, param, scfg, stage: str, step: int, train_seconds: float,
                     seed: int, cfg: dict[str, Any], name: str = "model", extra: dict[str, Any] | None = None) -> None:
    """Write run_dir/student (a student model folder) from `model` (a module or an EMA)."""
    mods, _ = checkpoint_views(ctx, {name: model}, {})
    if ctx.is_main:
        export_student(run_dir / "student", mods[name].state_dict(), dit_cfg, param, scfg,
                       {"stage": stage, "step": step, "train_hours": train_seconds / 3600, "data_seed": seed,
                        "preset": cfg.get("name"), **(extra or {})})
    ctx.barrier()


def export_from_run(run_dir: Path, out_dir: Path, cfg: dict[str, Any], scfg, stage: str) -> int:
    """Write a run's student weights (the EMA when the run keeps one) as a model folder."""
    src = run_dir / "student"
    if not (src / "config.json").is_file():
        raise UserError(f"no exported student in {src}: train first")
    model, param, meta = load_dit_folder(src)
    _, state = load_model_dir(src)
    extra = {k: v for k, v in meta.items() if k not in ("kind", "config", "teacher", "student")}
    export_student(out_dir, state, model.cfg, param, scfg, extra)
    print(f"exported {stage} student of step {meta.get('step')} to {out_dir}")
    return 0


def student_settings(name: str, args, section, **more) -> LoopSettings:
    """The loop settings of a student stage: stop at `--steps` (default: the section's total_steps) or
    after `--minutes`; the section's checkpoint, log and export intervals."""
    return LoopSettings(name=name, run_dir=Path(args.run), max_steps=args.steps if args.steps is not None
                        else section.total_steps, minutes=args.minutes, checkpoint_every=section.checkpoint_every,
                        log_every=section.log_every, export_every=section.export_every,
                        progress=not args.no_progress, **more)


@dataclass
class StudentRun:
    """What a student stage starts from: its preset sections, process context and run logger."""

    cfg: dict[str, Any]
    section: Any                        # the stage's own section (train_ode, train_dmd, train_gt)
    scfg: StudentConfig
    dcfg: DiffusionConfig
    tcfg: TeacherTrainConfig
    ctx: DistContext
    log: logging.Logger


def open_student_run(args, name: str, section_cls: type, device: str = "auto") -> StudentRun | None:
    """Read the preset, set threads, join torchrun (if launched by it) and open the run's log; with
    `args.export`, copy RUN/student to it and return None."""
    cfg, sec, scfg, dcfg, tcfg = load_distill_config(args.config, f"train_{name}", section_cls, args.overrides)
    torch.set_num_threads(args.threads or sec.threads)
    ctx = init_distributed(device)
    log = stage_logger(Path(args.run), name, ctx)
    if args.export:
        export_from_run(Path(args.run), Path(args.export), cfg, scfg, name)
        return None
    return StudentRun(cfg, sec, scfg, dcfg, tcfg, ctx, log)
