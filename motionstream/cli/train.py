"""`motionstream train STAGE`: the command lines of the training stages (vae, tiny-decoder, teacher,
teacher-cache, ode, dmd, gt). Each handler turns its arguments into the stage's typed arguments and
calls the library (motionstream/train/); heavy imports stay inside the handlers so `--help` is fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

from motionstream.config import REPO_ROOT, add_config_arguments


def typed(cls, args: argparse.Namespace):
    """The dataclass `cls` from parsed arguments: fields by name, `--set` as `overrides`."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    if "overrides" in {f.name for f in fields(cls)}:
        values["overrides"] = list(getattr(args, "set", []) or [])
    return cls(**values)


def video_size(cfg: dict) -> tuple[int, int]:
    """(width, height) of the preset's video section (a bad section is a one-line error)."""
    from motionstream.config import VideoConfig
    from motionstream.train.common import run_section

    return run_section(cfg, "video", VideoConfig).size


# ------------------------------------------------------------------------- handlers
def cmd_train_vae(args) -> int:
    import torch

    from motionstream.errors import UserError
    from motionstream.train.common import load_run_config, run_section
    from motionstream.train.vae import VAESection, train_vae

    torch.set_num_threads(args.threads)
    cfg = load_run_config(args.config, args.set)
    sec = run_section(cfg, "vae", VAESection)
    if args.freeze_encoder and not args.init:
        raise UserError("--freeze-encoder needs --init WEIGHTS (the shipped VAE whose encoder stays fixed)")
    if args.gan_start is not None:
        sec.train.gan_start_step = args.gan_start
    if args.lpips_weights and not Path(args.lpips_weights).is_file():
        raise UserError(f"--lpips-weights: no file at {args.lpips_weights} (an LPIPS-alex .safetensors, see scoring.metrics)")
    res = train_vae(sec, args.run, args.minutes, args.steps, args.init, args.freeze_encoder, video_size=video_size(cfg),
                    lpips_weights=args.lpips_weights)
    print(f"step {res['step']}: held-out PSNR {res['psnr']:.2f} dB, SSIM {res['ssim']:.4f} (log: {Path(args.run) / 'train.log'})")
    return 0


def cmd_train_tiny_decoder(args) -> int:
    import torch

    from motionstream.errors import UserError
    from motionstream.models.checkpoints import WeightsNotFound
    from motionstream.train.common import load_run_config, run_section
    from motionstream.train.tiny_decoder import TinyDecoderSection, train_tiny_decoder

    torch.set_num_threads(args.threads)
    cfg = load_run_config(args.config, args.set)
    sec = run_section(cfg, "tiny_decoder", TinyDecoderSection)
    try:
        res = train_tiny_decoder(sec, args.run, args.vae, args.minutes, args.steps, args.init,
                                 video_size=video_size(cfg), lpips_weights=args.lpips_weights)
    except WeightsNotFound as err:
        raise UserError(str(err)) from err
    print(f"step {res['step']}: held-out PSNR {res['psnr']:.2f} dB, SSIM {res['ssim']:.4f} (log: {Path(args.run) / 'train.log'})")
    return 0


def run_typed(train_fn, args_cls, args, done: str) -> int:
    """Run a stage's `train_fn` on its typed arguments; `done` (formatted with step, run, student) is
    printed when it trained (not after an export)."""
    from motionstream.train.distributed import is_torchrun_worker

    result = train_fn(typed(args_cls, args))
    if result is not None:
        print(done.format(step=result.step, run=args.run, student=Path(args.run) / "student"))
    if is_torchrun_worker():
        leave_worker()
    return 0


def leave_worker() -> None:
    """End a torchrun worker whose run is saved and whose process group is destroyed, skipping
    interpreter finalization.

    Why: a gloo thread that drops the last reference to a tensor while Python finalizes takes the GIL,
    Python ends that thread with pthread_exit, and the unwind through C++ aborts the rank ("terminate
    called without an active exception", SIGABRT; seen twice in CI after every step had finished).
    multiprocessing's children leave the same way (os._exit).
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def cmd_train_teacher(args) -> int:
    from motionstream.train.teacher import TeacherArgs, train_teacher

    return run_typed(train_teacher, TeacherArgs, args, "teacher: step {step}, state in {run}")


def cmd_teacher_cache(args) -> int:
    from motionstream.train.teacher_cache import TeacherCacheArgs, build_teacher_cache

    return build_teacher_cache(typed(TeacherCacheArgs, args))


def cmd_train_ode(args) -> int:
    from motionstream.train.ode import ODEArgs, train_ode

    return run_typed(train_ode, ODEArgs, args, "ode: step {step}, student in {student}")


def cmd_train_dmd(args) -> int:
    from motionstream.train.dmd import DMDArgs, train_dmd

    return run_typed(train_dmd, DMDArgs, args, "dmd: step {step}, EMA student in {student}")


def cmd_train_gt(args) -> int:
    from motionstream.train.gt import GTArgs, train_gt

    return run_typed(train_gt, GTArgs, args, "gt: step {step}, EMA student in {student}")


# ------------------------------------------------------------------------- parsers
def codec_common(p: argparse.ArgumentParser, run: str) -> None:
    """The options both codec stages take."""
    add_config_arguments(p, default="tiny-cpu")
    p.add_argument("--run", default=run, help=f"run folder (default: {run}); rerun to resume")
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes")
    p.add_argument("--steps", type=int, default=None, help="stop after this many more steps")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")


def register_codec_stages(train: argparse._SubParsersAction) -> None:
    p = train.add_parser("vae", help="train the embedded causal video VAE",
                         description="Train the causal VAE (8x spatial, 4x temporal, 16 channels) on [world] clips.")
    codec_common(p, "runs/vae")
    p.add_argument("--init", default=None, help="start from a shipped VAE folder (name in weights/ or path)")
    p.add_argument("--freeze-encoder", action="store_true", help="train only the decoder (latent space stays fixed)")
    p.add_argument("--gan-start", type=int, default=None, help="step at which the PatchGAN term turns on")
    p.add_argument("--lpips-weights", default=None, help="optional local LPIPS-alex .safetensors; adds an LPIPS term")
    p.set_defaults(func=cmd_train_vae)

    p = train.add_parser("tiny-decoder", help="distill the tiny streaming decoder from the frozen VAE",
                         description="Train the TAEHV-style tiny decoder on latents of the frozen shipped VAE.")
    codec_common(p, "runs/tiny-decoder")
    p.add_argument("--vae", default="vae-tiny-cpu", help="frozen VAE folder (name in weights/ or path)")
    p.add_argument("--init", default=None, help="start from a shipped tiny decoder folder")
    p.add_argument("--lpips-weights", default=None, help="optional local LPIPS-alex .safetensors; adds an LPIPS term")
    p.set_defaults(func=cmd_train_tiny_decoder)


def register_teacher(train: argparse._SubParsersAction) -> None:
    p = train.add_parser("teacher", help="train the bidirectional motion-guided teacher (rectified flow)",
                         description="Train the teacher DiT on cached world clips. Re-running the same command "
                         "resumes from RUN. Under `torchrun --nproc_per_node N` the model is sharded with FSDP.")
    add_config_arguments(p)
    p.add_argument("--run", "--run-dir", dest="run", default=str(REPO_ROOT / "runs" / "teacher"),
                   help="run folder (state, logs, samples); under torchrun write --run-dir (torchrun takes "
                   "--run as its own --run-path)")
    p.add_argument("--cache", default=None, help="latent cache folder (default: train_teacher.cache_dir)")
    add_stage_arguments(p, "write RUN's EMA weights to DIR and exit", steps_help="stop at this global step")
    p.add_argument("--resume-from", default=None, help="initialise from a teacher model folder when RUN is empty")
    p.add_argument("--stage", type=int, default=None, choices=[1, 2], help="2 = mid-frame masking fine-tune")
    p.add_argument("--no-eval", action="store_true", help="skip the periodic track-following report")
    p.add_argument("--no-build-cache", action="store_true", help="do not start the background cache builder")
    p.add_argument("--cache-wait-minutes", type=float, default=30.0,
                   help="how long to wait for the background builder's first cache clips (default 30)")
    p.set_defaults(func=cmd_train_teacher)

    c = train.add_parser("teacher-cache", help="render + encode world train clips for teacher training",
                         description="Render world train clips, encode them with the frozen VAE encoder and store "
                         "latents, tracks, captions and text tokens. Resumable: existing clips are skipped.")
    add_config_arguments(c)
    c.add_argument("--cache", default=None)
    c.add_argument("--n", type=int, default=None, help="number of train clips (default: train_teacher.cache_clips)")
    c.add_argument("--vae", default=None, help="VAE model folder (default: train_teacher.vae)")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_teacher_cache)


def add_stage_arguments(p: argparse.ArgumentParser, export_help: str, device: bool = True,
                        steps_help: str = "stop at this global step (default: total_steps)") -> None:
    """The options every resumable stage takes (train/loop.py StageArgs), plus --device where it runs on CUDA too."""
    p.add_argument("--steps", type=int, default=None, help=steps_help)
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes")
    p.add_argument("--export", default=None, metavar="DIR", help=export_help)
    if device:
        p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")


def register_ode(train: argparse._SubParsersAction) -> None:
    p = train.add_parser("ode", help="distillation stage 1: teacher ODE pairs + causal regression (CausVid init)",
                         description="Generate ODE trajectories from the teacher under joint guidance (cached, "
                         "resumable), then regress the causal student onto them with randomly drawn sink/window "
                         "masks. Re-running the same command resumes. Works under torchrun (FSDP).")
    add_config_arguments(p)
    p.add_argument("--teacher", default="teacher-tiny-cpu", help="teacher model folder (name in weights/ or path)")
    p.add_argument("--run", "--run-dir", dest="run", default=str(REPO_ROOT / "runs" / "ode"),
                   help="run folder (state, logs, student/)")
    p.add_argument("--cache", default=None, help="teacher latent cache (default: train_teacher.cache_dir)")
    p.add_argument("--pairs", default=None, help="ODE pair folder (default: train_ode.pairs_dir)")
    p.add_argument("--num-pairs", type=int, default=None, help="pairs to generate (default: train_ode.num_pairs)")
    p.add_argument("--pairs-only", action="store_true", help="generate the pairs and stop")
    p.add_argument("--text-scale", type=float, default=None, help="w_t of the pairs' joint guidance "
                   "(default: diffusion.text_scale; recorded in the pair folder)")
    p.add_argument("--motion-scale", type=float, default=None, help="w_m of the pairs' joint guidance "
                   "(default: diffusion.motion_scale)")
    p.add_argument("--no-generate", action="store_true", help="train on the pairs that exist")
    add_stage_arguments(p, "copy RUN/student to DIR and exit")
    p.set_defaults(func=cmd_train_ode)


def register_dmd(train: argparse._SubParsersAction) -> None:
    p = train.add_parser("dmd", help="distillation stage 2: Self-Forcing DMD with sink + rolling KV cache",
                         description="Self-rollout of the causal student with the inference KV cache past the "
                         "teacher's horizon; DMD against the frozen teacher under joint guidance (Eq. 4) with a "
                         "trainable critic (5:1). Re-running the same command resumes. Works under torchrun (FSDP).")
    add_config_arguments(p)
    p.add_argument("--teacher", default="teacher-tiny-cpu", help="teacher model folder (real score, critic init)")
    p.add_argument("--student", default=str(REPO_ROOT / "runs" / "ode" / "student"),
                   help="ODE-initialised student folder (default: runs/ode/student)")
    p.add_argument("--run", "--run-dir", dest="run", default=str(REPO_ROOT / "runs" / "dmd"),
                   help="run folder (state, logs, samples, student/)")
    p.add_argument("--cache", default=None, help="teacher latent cache (default: train_teacher.cache_dir)")
    add_stage_arguments(p, "copy RUN/student (EMA) to DIR and exit")
    p.add_argument("--no-samples", action="store_true", help="skip the periodic sample videos")
    p.add_argument("--vae", default=None, help="VAE folder that decodes the sample videos (default: the cache's)")
    p.set_defaults(func=cmd_train_dmd)


def register_gt(train: argparse._SubParsersAction) -> None:
    p = train.add_parser("gt", help="student stage 3: self-rollout regressed on the world's ground truth",
                         description="Stream the causal student with the inference KV cache on world clips rendered "
                         "on the fly, with dense, drag (studio-like) and sparse motion inputs, and regress every "
                         "chunk on the true clip's latents, weighted toward the pixels that change. Re-running the "
                         "same command resumes.")
    add_config_arguments(p)
    p.add_argument("--student", default="student-tiny-cpu", help="student folder to start from (name in weights/ or path)")
    p.add_argument("--run", "--run-dir", dest="run", default=str(REPO_ROOT / "runs" / "gt"),
                   help="run folder (state, logs, student/)")
    p.add_argument("--vae", default=None, help="VAE folder (default: train_teacher.vae)")
    add_stage_arguments(p, "copy RUN/student (EMA) to DIR and exit", device=False)
    p.set_defaults(func=cmd_train_gt)


def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
    """Every `motionstream train STAGE` parser (the order of `motionstream train --help`)."""
    for add in (register_codec_stages, register_teacher, register_ode, register_dmd, register_gt):
        add(train)
