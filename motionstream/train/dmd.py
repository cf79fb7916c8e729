"""`motionstream train dmd`: Self-Forcing DMD with the sink + rolling KV cache (paper Sec. 3.2, Eq. 3/4).

One global step (all draws keyed by (seed, step[, sample index]), so resume and world size do not
change the result):

    plan       N rollout chunks in [min_rollout_chunks, max_rollout_chunks] (past the teacher's
               horizon: the window really rolls), S and W from the choices, exit step k in [0, K),
               a score window of `teacher_frames` latent frames inside the rollout (continuous
               frames the bidirectional teacher can judge)
    rollout    the generator streams N chunks with the inference KVCache (train/rollout.py); on a
               generator step the exit step of the chunks that overlap the window carries
               gradients, everything else (earlier steps, write passes, cached K/V) is detached
    critic     every step: rectified-flow regression of the critic on the detached window
    generator  every `ratio`-th step (critic:generator = ratio:1): z_t = noised sg(window),
               real x0 = frozen teacher with joint guidance (Eq. 4 = Eq. 2 on its velocities),
               fake x0 = critic (no guidance), loss = dmd_loss(window, dmd_gradient(...))
               (diffusion/dmd.py); then the EMA of the generator

The teacher is image-conditioned: a window that starts at latent frame a > 0 is conditioned on the
generated latent frame a (detached) as its "first frame", with the tracks re-based to video frame
4a (the last video frame of latent frame a), so it sees a continuous clip that starts there.

Prompts come from the teacher cache (first-frame latent, text) plus the clip's exact tracks
recomputed for the rollout's length from the world's scene program (no video is rendered: DMD
needs no target frames).

Run folder: train.log, metrics.jsonl, samples/ (periodic EMA streams as mp4, when the VAE weights
exist), state.safetensors + state.json (resume: re-run the command), student/ (EMA generator,
the input of the streaming engine; `--export DIR` copies it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

from motionstream.errors import UserError
from motionstream.config import REPO_ROOT
from motionstream.diffusion.dmd import critic_loss, dmd_gradient, dmd_loss
from motionstream.diffusion.flow import add_noise, x0_from_velocity
from motionstream.diffusion.guidance import guided_prediction
from motionstream.diffusion.sampling import predict_velocity, prior_encoder
from motionstream.train.cache import TeacherCache
from motionstream.train.common import EMA, WarmupSchedule, optimizer_step, repo_path, seed_everything
from motionstream.train.distributed import DistContext, checkpoint_views, shutdown, wrap_model
from motionstream.train.dmd_inputs import (DMDInputs, PromptSource, StepPlan, grad_chunks, long_tracks, make_noise,
                                           plan_step, to_device, window_condition, write_samples)
from motionstream.train.loop import LoopResult, Stage, StageArgs, run_stage
from motionstream.train.rollout import StudentSampler, load_dit_folder, self_rollout
from motionstream.train.student_stage import export_run_model, open_student_run, student_settings


@dataclass
class DMDTrainConfig:
    """Section `train_dmd` of a preset."""

    seed: int = 0
    batch_size: int = 2                 # global rollouts per step
    teacher_frames: int = 9             # score window (latent frames): the teacher's horizon
    min_rollout_chunks: int = 3         # rollout length in chunks; > teacher_frames / C trains extrapolation
    max_rollout_chunks: int = 6
    sink_choices: list[int] = field(default_factory=lambda: [0, 1])
    window_choices: list[int] = field(default_factory=lambda: [1, 2, 6])
    ratio: int = 5                      # critic updates per generator update (paper: 5)
    generator_lr: float = 2.0e-5        # paper: 2e-6 (generator) and 4e-7 (critic) at batch 64
    critic_lr: float = 4.0e-6
    lr_schedule: str = "constant"
    warmup_steps: int = 10
    total_steps: int = 2000             # critic steps (generator steps = total / ratio); paper ~400 gen steps
    adam_beta1: float = 0.0             # Self-Forcing / DMD2 Adam betas
    adam_beta2: float = 0.999
    weight_decay: float = 0.01
    grad_clip: float = 10.0
    ema_decay: float = 0.99
    min_t: float = 0.02                 # score noise levels u ~ U(min_t, max_t), then shifted
    max_t: float = 0.98
    checkpoint_every: int = 1
    log_every: int = 5
    export_every: int = 25              # steps between exports of the EMA generator (run/student)
    sample_every: int = 100             # steps between sample videos (0 = never)
    sample_clips: int = 2
    sample_chunks: int = 12             # length of the sample streams (chunks): 4x the horizon
    track_memo: int = 64                # clips whose long tracks are kept in memory
    threads: int = 2


# ------------------------------------------------------------------------- inputs


# ------------------------------------------------------------------------ trainer
class DMDTrainer:
    """Generator (causal student), critic and frozen teacher, with their optimizers and the EMA.

    step(step, plan, inputs) runs one global step (module docstring) and returns its metrics.
    """

    def __init__(self, generator, critic, teacher, param, scfg, dcfg, cfg: DMDTrainConfig, latent_hw,
                 text_scale: float, motion_scale: float):
        self.generator, self.critic, self.teacher = generator, critic, teacher
        self.param, self.scfg, self.dcfg, self.cfg = param, scfg, dcfg, cfg
        self.latent_hw = tuple(latent_hw)
        self.text_scale, self.motion_scale = text_scale, motion_scale
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.gen_opt = torch.optim.AdamW(generator.parameters(), lr=cfg.generator_lr,
                                         betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)
        self.critic_opt = torch.optim.AdamW(critic.parameters(), lr=cfg.critic_lr,
                                            betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)
        self.ema = EMA(generator, cfg.ema_decay)
        self.schedulers = [WarmupSchedule(opt, base, cfg.warmup_steps, cfg.total_steps, cfg.lr_schedule)
                           for opt, base in ((self.gen_opt, cfg.generator_lr), (self.critic_opt, cfg.critic_lr))]

    def modules(self) -> dict[str, Any]:
        return {"generator": self.generator, "critic": self.critic, "ema": self.ema}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"gen_opt": self.gen_opt, "critic_opt": self.critic_opt}

    def set_lr(self, step: int) -> float:
        """Both optimizers' rates of global step `step`; returns the generator's."""
        for sched in self.schedulers:
            sched.jump_to(step)
        return self.schedulers[0].rate()

    def rollout(self, plan: StepPlan, inputs: DMDInputs):
        sampler = StudentSampler(self.generator, self.scfg, self.param, inputs.cond, inputs.text)
        cache = sampler.new_cache(inputs.noise[0].shape[1], self.latent_hw, plan.sink_chunks, plan.window_chunks)
        return self_rollout(sampler, cache, inputs.noise, exit_step=plan.exit_step,
                            grad_chunks=grad_chunks(plan, self.scfg.chunk_frames, self.cfg.teacher_frames))

    def real_x0(self, z_t: torch.Tensor, t: torch.Tensor, cond, inputs: DMDInputs) -> torch.Tensor:
        """Eq. 4: the frozen teacher's joint-guided x0 prediction."""
        no_motion = cond.drop_motion()

        def predict(use_text: bool, use_motion: bool) -> torch.Tensor:
            return predict_velocity(self.teacher, z_t, t, inputs.text if use_text else inputs.null_text,
                                    cond if use_motion else no_motion, self.param)
        return x0_from_velocity(z_t, guided_prediction(predict, self.text_scale, self.motion_scale), t)

    def step(self, step: int, plan: StepPlan, inputs: DMDInputs) -> dict[str, float]:
        fw = self.cfg.teacher_frames
        self.set_lr(step)
        self.generator.train()
        out: dict[str, float] = {"chunks": plan.num_chunks, "exit_step": plan.exit_step,
                                 "window_start": plan.window_start, "generator_step": float(plan.generator_step)}
        roll = self.rollout(plan, inputs)
        window = roll.latents[:, :, plan.window_start:plan.window_start + fw]
        cond = window_condition(inputs, window, plan.window_start, self.generator.cfg)
        frames = lambda t: t[:, None].expand(-1, fw)  # noqa: E731

        if plan.generator_step:
            t = frames(inputs.score_t)
            z_t = add_noise(window.detach(), inputs.score_noise, t)
            with torch.no_grad():
                real = self.real_x0(z_t, t, cond, inputs)
                fake = x0_from_velocity(z_t, predict_velocity(self.critic, z_t, t, inputs.text, cond, self.param), t)
            grad = dmd_gradient(window, real, fake)
            loss = dmd_loss(window, grad)
            out["gen_grad_norm"] = float(optimizer_step(self.gen_opt, loss, self.generator.parameters(),
                                                        self.cfg.grad_clip))
            self.ema.update(self.generator)
            out["dmd_loss"] = loss.item()
            out["dmd_grad_abs"] = grad.abs().mean().item()
            out["real_fake_gap"] = (real - fake).abs().mean().item()

        # critic: rectified flow on the detached generator window
        x = window.detach()
        t = frames(inputs.critic_t)
        z_t = add_noise(x, inputs.critic_noise, t)
        v = predict_velocity(self.critic, z_t, t, inputs.text, cond, self.param)
        closs = critic_loss(v, x, inputs.critic_noise)
        out["critic_grad_norm"] = float(optimizer_step(self.critic_opt, closs, self.critic.parameters(),
                                                       self.cfg.grad_clip))
        out["critic_loss"] = closs.item()
        return out


def wrap_generator(model: torch.nn.Module, ctx) -> torch.nn.Module:
    """FSDP2 for the streaming generator under torchrun: ONE unit over the whole model (the cache calls
    the blocks' cross-attention outside their forward, so per-block units would stay sharded there),
    with forward_chunk registered as a forward method so FSDP unshards for it."""
    if not ctx.enabled:
        return model
    fully_shard(model)
    register_fsdp_forward_method(model, "forward_chunk")
    return model


# ------------------------------------------------------------------------ samples


# ------------------------------------------------------------------------ command
@dataclass
class DMDArgs(StageArgs):
    """`motionstream train dmd` (see cli/train.py for each option's meaning)."""

    teacher: str = "teacher-tiny-cpu"
    student: str = str(REPO_ROOT / "runs" / "ode" / "student")
    run: str = str(REPO_ROOT / "runs" / "dmd")
    cache: str | None = None
    device: str = "auto"
    no_samples: bool = False
    vae: str | None = None


LOGGED = ("critic_loss", "dmd_loss", "dmd_grad_abs", "real_fake_gap", "gen_grad_norm")


class DMDStage(Stage):
    """Self-Forcing DMD (module docstring): one `DMDTrainer.step` per global step."""

    def __init__(self, args: DMDArgs, cfg, mcfg: DMDTrainConfig, scfg, trainer: DMDTrainer, source: PromptSource,
                 lineage: dict[str, Any], ctx: DistContext):
        self.args, self.cfg, self.mcfg, self.scfg, self.trainer, self.source = args, cfg, mcfg, scfg, trainer, source
        self.lineage, self.ctx = lineage, ctx
        self.modules, self.optimizers = trainer.modules(), trainer.optimizers()
        self.schedulers = []          # DMDTrainer.step sets both rates itself (it is also used alone)
        self.local = list(range(mcfg.batch_size))[ctx.local_slice(mcfg.batch_size)]
        self.postfix: dict[str, str] = {}
        self.rate = float("nan")

    def train_step(self, step: int) -> dict[str, float]:
        m, s = self.mcfg, self.scfg
        plan = plan_step(step, m, s.num_steps, s.chunk_frames)
        inputs = self.source.inputs(step, self.local, plan, self.trainer.generator.cfg, s, m.teacher_frames, s.shift, m)
        rec = self.trainer.step(step, plan, to_device(inputs, self.ctx.device))
        self.rate = self.trainer.schedulers[0].rate()
        self.postfix = {"critic": f"{rec['critic_loss']:.4f}", "dmd": f"{rec.get('dmd_loss', float('nan')):.4f}",
                        "cfg": f"c{s.chunk_frames}s{plan.sink_chunks}w{plan.window_chunks}", "n": str(plan.num_chunks)}
        if m.sample_every and (step + 1) % m.sample_every == 0 and not self.args.no_samples:
            self.samples(step + 1)
        return {k: rec[k] for k in LOGGED if k in rec}

    def samples(self, step: int) -> None:
        views, _ = checkpoint_views(self.ctx, {"ema": self.trainer.ema}, {})      # a collective under torchrun
        if self.ctx.is_main:
            try:      # samples are for watching a run: never let them stop it
                write_samples(Path(self.args.run), step, views["ema"].state_dict(), self.trainer.param, self.scfg,
                              self.source, self.trainer.generator.cfg, self.mcfg, self.log, self.args.vae)
            except Exception as err:  # noqa: BLE001
                self.log(f"samples failed at step {step}: {type(err).__name__}: {err}")

    def restore(self, step: int, extra: dict[str, Any], resumed: bool, log: logging.Logger) -> None:
        self.log = log.info

    def lr(self) -> float:
        return self.rate

    def bar_postfix(self, figures: dict[str, float]) -> dict[str, str]:
        return self.postfix

    def export(self, step: int, train_seconds: float) -> None:
        export_run_model(self.ctx, Path(self.args.run), self.trainer.ema, self.trainer.generator.cfg,
                         self.trainer.param, self.scfg, "dmd", step, train_seconds, self.mcfg.seed, self.cfg,
                         name="ema", extra=self.lineage)


def build_dmd(args: DMDArgs, cfg, mcfg: DMDTrainConfig, scfg, dcfg, tcfg, ctx: DistContext, log: logging.Logger):
    """(trainer, prompt source, lineage) of a run: teacher, critic and generator loaded and wrapped."""
    try:
        cache = TeacherCache(repo_path(args.cache or tcfg.cache_dir))
        teacher, param, teacher_meta = load_dit_folder(args.teacher, ctx.device)
        critic, _, _ = load_dit_folder(args.teacher, ctx.device)          # the critic starts as the teacher
        generator, gen_param, gen_meta = load_dit_folder(args.student, ctx.device)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise UserError(str(err)) from err
    if len(cache) == 0:
        raise UserError(f"teacher cache {cache.root} has no clips")
    if gen_param != param or generator.cfg != teacher.cfg:
        raise UserError(f"student {args.student} does not match teacher {args.teacher} (config or output param)")
    h, w = cache.load_seed(cache.seeds[0]).latents.shape[2:]
    seed_everything(mcfg.seed)
    generator, critic = wrap_generator(generator, ctx), wrap_model(critic, ctx)
    teacher = wrap_model(teacher, ctx)
    trainer = DMDTrainer(generator, critic, teacher, param, scfg, dcfg, mcfg, (h, w), dcfg.text_scale,
                         dcfg.motion_scale)
    log.info(f"generator from {args.student} (stage {gen_meta.get('stage')}, step {gen_meta.get('step')}), teacher "
             f"{args.teacher}, {len(cache)} clips, {ctx.world_size} process(es), K={scfg.num_steps} "
             f"t={scfg.timesteps().tolist()}")
    lineage = {"teacher_folder": str(args.teacher), "teacher_step": teacher_meta.get("step"),
               "ode_student": str(args.student), "ode_step": gen_meta.get("step")}
    source = PromptSource(cache, cfg.get("tracks", {}), mcfg.track_memo, encode=prior_encoder(param, tcfg.vae, ctx.device))
    return trainer, source, lineage


def train_dmd(args: DMDArgs) -> LoopResult | None:
    """Train (or resume) DMD in `args.run`; with `args.export`, copy its EMA student instead."""
    run = open_student_run(args, "dmd", DMDTrainConfig, args.device)
    if run is None:
        return None
    cfg, mcfg, scfg, dcfg, tcfg, ctx, log = run.cfg, run.section, run.scfg, run.dcfg, run.tcfg, run.ctx, run.log
    trainer, source, lineage = build_dmd(args, cfg, mcfg, scfg, dcfg, tcfg, ctx, log)
    stage = DMDStage(args, cfg, mcfg, scfg, trainer, source, lineage, ctx)
    settings = student_settings("dmd", args, mcfg)
    result = run_stage(stage, settings, ctx)
    shutdown(ctx)
    return result


# the step's draws and inputs live in train/dmd_inputs.py; these names stay importable from here
__all__ = ["DMDTrainConfig", "DMDArgs", "DMDTrainer", "DMDStage", "DMDInputs", "StepPlan", "grad_chunks", "long_tracks",
           "make_noise", "plan_step", "window_condition", "train_dmd"]
