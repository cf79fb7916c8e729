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

import argparse
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from motionstream.errors import UserError
from motionstream.config import REPO_ROOT, add_config_arguments


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


@dataclass
class StepPlan:
    """The draws shared by every sample of one global step."""

    num_chunks: int
    sink_chunks: int
    window_chunks: int
    exit_step: int
    window_start: int                   # latent frame where the score window starts
    generator_step: bool


def plan_step(step: int, cfg: DMDTrainConfig, num_steps: int, chunk_frames: int) -> StepPlan:
    """The step's rollout length, cache configuration, exit step and score window (module docstring)."""
    from motionstream.diffusion.dmd import is_generator_step

    min_chunks = max(cfg.min_rollout_chunks, -(-cfg.teacher_frames // chunk_frames))
    if cfg.max_rollout_chunks < min_chunks:
        raise ValueError(f"train_dmd.max_rollout_chunks {cfg.max_rollout_chunks} < {min_chunks} "
                         f"(the score window needs {cfg.teacher_frames} latent frames)")
    rng = np.random.default_rng([cfg.seed, 3, step])
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


# ------------------------------------------------------------------------- inputs
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
               latent_hw: tuple[int, int], window_frames: int, shift: float, cfg: DMDTrainConfig):
    """(chunk noises, score t, score noise, critic t, critic noise) from one generator per sample."""
    from motionstream.diffusion.dmd import sample_dmd_timesteps

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
    from motionstream.data.synth import WorldConfig, build_world, scene_tracks
    from motionstream.tracks.trackset import TrackSet

    wcfg = WorldConfig()
    scene, _, _ = build_world(seed, width, height, wcfg)
    tracks, visible, _ = scene_tracks(scene, np.arange(num_frames) / float(fps), wcfg.grid_size, wcfg.occlusion_alpha)
    return TrackSet(tracks=tracks, visibility=visible, width=width, height=height, fps=float(fps))


class PromptSource:
    """DMD prompts from the teacher cache: first-frame latent + text of a clip, tracks of any length."""

    def __init__(self, cache, tracks_cfg: dict[str, Any], memo: int, encode=None):
        """encode: VideoCodec.encode when the teacher uses the "video" prior (computed per prompt)."""
        from motionstream.train.cache import text_key

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
               cfg: DMDTrainConfig) -> DMDInputs:
        from motionstream.models.conditioning import build_condition, video_prior
        from motionstream.tracks.embed import sample_track_subset
        from motionstream.train.ode import item_rng
        from motionstream.train.teacher import pad_text

        frames = plan.num_chunks * scfg.chunk_frames
        num_video = 1 + dit_cfg.temporal_factor * (frames - 1)
        firsts, images, tracks, toks, masks, gens = [], [], [], [], [], []
        for index in indices:
            rng, gen = item_rng(cfg.seed, step, index, salt=4)
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
    from motionstream.models.conditioning import build_condition

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


# ------------------------------------------------------------------------ trainer
class DMDTrainer:
    """Generator (causal student), critic and frozen teacher, with their optimizers and the EMA.

    step(step, plan, inputs) runs one global step (module docstring) and returns its metrics.
    """

    def __init__(self, generator, critic, teacher, param, scfg, dcfg, cfg: DMDTrainConfig, latent_hw,
                 text_scale: float, motion_scale: float):
        from motionstream.train.common import EMA

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

    def modules(self) -> dict[str, Any]:
        return {"generator": self.generator, "critic": self.critic, "ema": self.ema}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"gen_opt": self.gen_opt, "critic_opt": self.critic_opt}

    def set_lr(self, step: int) -> float:
        from motionstream.train.common import lr_at, set_lr

        for opt, base in ((self.gen_opt, self.cfg.generator_lr), (self.critic_opt, self.cfg.critic_lr)):
            set_lr(opt, lr_at(step, base, self.cfg.warmup_steps, self.cfg.total_steps, self.cfg.lr_schedule))
        return lr_at(step, self.cfg.generator_lr, self.cfg.warmup_steps, self.cfg.total_steps, self.cfg.lr_schedule)

    def rollout(self, plan: StepPlan, inputs: DMDInputs):
        from motionstream.train.rollout import StudentSampler, self_rollout

        sampler = StudentSampler(self.generator, self.scfg, self.param, inputs.cond, inputs.text)
        cache = sampler.new_cache(inputs.noise[0].shape[1], self.latent_hw, plan.sink_chunks, plan.window_chunks)
        return self_rollout(sampler, cache, inputs.noise, exit_step=plan.exit_step,
                            grad_chunks=grad_chunks(plan, self.scfg.chunk_frames, self.cfg.teacher_frames))

    def real_x0(self, z_t: torch.Tensor, t: torch.Tensor, cond, inputs: DMDInputs) -> torch.Tensor:
        """Eq. 4: the frozen teacher's joint-guided x0 prediction."""
        from motionstream.diffusion.flow import x0_from_velocity
        from motionstream.diffusion.guidance import guided_prediction
        from motionstream.diffusion.sampling import predict_velocity

        no_motion = cond.drop_motion()

        def predict(use_text: bool, use_motion: bool) -> torch.Tensor:
            return predict_velocity(self.teacher, z_t, t, inputs.text if use_text else inputs.null_text,
                                    cond if use_motion else no_motion, self.param)
        return x0_from_velocity(z_t, guided_prediction(predict, self.text_scale, self.motion_scale), t)

    def step(self, step: int, plan: StepPlan, inputs: DMDInputs) -> dict[str, float]:
        from motionstream.diffusion.dmd import critic_loss, dmd_gradient, dmd_loss
        from motionstream.diffusion.flow import add_noise, x0_from_velocity
        from motionstream.diffusion.sampling import predict_velocity
        from motionstream.train.common import optimizer_step

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
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    fully_shard(model)
    register_fsdp_forward_method(model, "forward_chunk")
    return model


# ------------------------------------------------------------------------ samples
def write_samples(run_dir: Path, step: int, ema_state: dict[str, torch.Tensor], param, scfg, source: PromptSource,
                  dit_cfg, cfg: DMDTrainConfig, log: Callable[[str], None], vae: str | None = None) -> Path | None:
    """Stream `sample_chunks` chunks (past the horizon) with the EMA generator on the first cached clips,
    decode with the full VAE and write one mp4 (clips stacked vertically, conditioning tracks drawn)."""
    from motionstream.models.checkpoints import WeightsNotFound
    from motionstream.models.codec import load_codec, tensor_to_frames
    from motionstream.diffusion.sampling import video_prior_for
    from motionstream.models.conditioning import build_condition
    from motionstream.models.dit import WanDiT
    from motionstream.tracks.draw import draw_tracks
    from motionstream.tracks.embed import sample_track_subset
    from motionstream.train.rollout import StudentSampler, stream_generate
    from motionstream.video import write_video

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
    rng = np.random.default_rng(cfg.seed + 999)
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


# ------------------------------------------------------------------------ command
def train_dmd(args) -> int:
    from tqdm import tqdm

    from motionstream.diffusion.sampling import prior_encoder
    from motionstream.train.cache import TeacherCache
    from motionstream.train.common import append_jsonl, load_training_state, run_logger, seed_everything
    from motionstream.train.distributed import checkpoint_views, init_distributed, restore_views, shutdown, wrap_model
    from motionstream.train.ode import _abs, export_from_run, export_run_model, load_distill_config, save_run
    from motionstream.train.rollout import load_dit_folder

    cfg, mcfg, scfg, dcfg, tcfg = load_distill_config(args.config, "train_dmd", DMDTrainConfig, args.set)
    torch.set_num_threads(args.threads or mcfg.threads)
    ctx = init_distributed(args.device)
    run_dir = Path(args.run)
    log = run_logger(run_dir, "dmd", ctx.is_main)
    if args.export:
        return export_from_run(run_dir, Path(args.export), cfg, scfg, "dmd")
    try:
        cache = TeacherCache(_abs(args.cache or tcfg.cache_dir))
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
    mods, opts, finish = restore_views(ctx, trainer.modules(), trainer.optimizers())
    resumed = load_training_state(run_dir, mods, opts)
    finish()
    step, extra = resumed if resumed is not None else (0, {})
    log.info(f"{'resumed ' + str(run_dir) + ' at step ' + str(step) if resumed else 'new run'}: generator from "
             f"{args.student} (stage {gen_meta.get('stage')}, step {gen_meta.get('step')}), teacher {args.teacher}, "
             f"{len(cache)} clips, {ctx.world_size} process(es), K={scfg.num_steps} t={scfg.timesteps().tolist()}")
    train_seconds = float(extra.get("train_seconds", 0.0))
    lineage = {"teacher_folder": str(args.teacher), "teacher_step": teacher_meta.get("step"),
               "ode_student": str(args.student), "ode_step": gen_meta.get("step")}
    source = PromptSource(cache, cfg.get("tracks", {}), mcfg.track_memo,
                          encode=prior_encoder(param, tcfg.vae, ctx.device))
    stop_at = time.time() + args.minutes * 60 if args.minutes else None
    max_steps = args.steps if args.steps is not None else mcfg.total_steps
    bar = tqdm(initial=step, total=max_steps, desc="dmd", unit="step", disable=not ctx.is_main or args.no_progress)
    metrics, window = run_dir / "metrics.jsonl", []
    local = ctx.local_slice(mcfg.batch_size)
    while step < max_steps and (stop_at is None or time.time() < stop_at):
        plan = plan_step(step, mcfg, scfg.num_steps, scfg.chunk_frames)
        inputs = source.inputs(step, list(range(mcfg.batch_size))[local], plan, generator.cfg, scfg,
                               mcfg.teacher_frames, scfg.shift, mcfg)
        inputs = to_device(inputs, ctx.device)
        t_step = time.time()
        rec = trainer.step(step, plan, inputs)
        step += 1
        train_seconds += time.time() - t_step
        window.append(rec)
        if step % mcfg.checkpoint_every == 0:
            save_run(ctx, run_dir, step, trainer.modules(), trainer.optimizers(),
                     {**extra, "train_seconds": train_seconds})
        if step % mcfg.export_every == 0:
            export_run_model(ctx, run_dir, trainer.ema, generator.cfg, param, scfg, "dmd", step, train_seconds,
                             mcfg.seed, cfg, name="ema", extra=lineage)
        if ctx.is_main:
            bar.update(1)
            bar.set_postfix(critic=f"{rec['critic_loss']:.4f}", dmd=f"{rec.get('dmd_loss', float('nan')):.4f}",
                            cfg=f"c{scfg.chunk_frames}s{plan.sink_chunks}w{plan.window_chunks}", n=plan.num_chunks)
            if step % mcfg.log_every == 0:
                agg = {k: float(np.nanmean([r.get(k, np.nan) for r in window]))
                       for k in ("critic_loss", "dmd_loss", "dmd_grad_abs", "real_fake_gap", "gen_grad_norm")
                       if any(k in r for r in window)}
                agg.update({"step": step, "train_hours": train_seconds / 3600, "time": time.time()})
                append_jsonl(metrics, agg)
                log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in agg.items()
                                  if k != "time"))
                window = []
        if mcfg.sample_every and step % mcfg.sample_every == 0 and not args.no_samples:
            views, _ = checkpoint_views(ctx, {"ema": trainer.ema}, {})      # a collective under torchrun
            if ctx.is_main:
                try:      # samples are for watching a run: never let them stop it
                    write_samples(run_dir, step, views["ema"].state_dict(), param, scfg, source, generator.cfg,
                                  mcfg, log.info, args.vae)
                except Exception as err:  # noqa: BLE001
                    log.info(f"samples failed at step {step}: {type(err).__name__}: {err}")
    bar.close()
    save_run(ctx, run_dir, step, trainer.modules(), trainer.optimizers(), {**extra, "train_seconds": train_seconds})
    export_run_model(ctx, run_dir, trainer.ema, generator.cfg, param, scfg, "dmd", step, train_seconds, mcfg.seed,
                     cfg, name="ema", extra=lineage)
    if ctx.is_main:
        log.info(f"stopped at step {step}; EMA student in {run_dir / 'student'}")
        print(f"dmd: step {step}, EMA student in {run_dir / 'student'}")
    shutdown(ctx)
    return 0


def to_device(inputs: DMDInputs, device) -> DMDInputs:
    mv = lambda t: None if t is None else t.to(device)  # noqa: E731
    return replace(inputs, cond=inputs.cond.to(device), text=(mv(inputs.text[0]), mv(inputs.text[1])),
                   null_text=(mv(inputs.null_text[0]), mv(inputs.null_text[1])),
                   noise=[n.to(device) for n in inputs.noise], score_t=mv(inputs.score_t),
                   score_noise=mv(inputs.score_noise), critic_t=mv(inputs.critic_t),
                   critic_noise=mv(inputs.critic_noise))


def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
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
    p.add_argument("--steps", type=int, default=None, help="stop at this global step (default: total_steps)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes")
    p.add_argument("--export", default=None, metavar="DIR", help="copy RUN/student (EMA) to DIR and exit")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-samples", action="store_true", help="skip the periodic sample videos")
    p.add_argument("--vae", default=None, help="VAE folder that decodes the sample videos (default: the cache's)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=train_dmd)
