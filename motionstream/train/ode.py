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

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from motionstream.errors import UserError
from motionstream.config import REPO_ROOT, add_config_arguments
from motionstream.train.common import append_jsonl, load_run_config, run_logger, run_section


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
def item_rng(seed: int, key: int, index: int, salt: int = 0) -> tuple[np.random.Generator, torch.Generator]:
    """Random streams of one sample (independent of process count and resume)."""
    rng = np.random.default_rng([seed, salt, key, index])
    return rng, torch.Generator().manual_seed(int(rng.integers(2 ** 62)))


def draw_cache_config(rng: np.random.Generator, sink_choices: list[int], window_choices: list[int]) -> tuple[int, int]:
    """(S, W) for one batch: uniform over the configured choices."""
    return int(rng.choice(sink_choices)), int(rng.choice(window_choices))


def ode_schedule(denoising_steps: list[float], total_steps: int, shift: float) -> tuple[torch.Tensor, list[int]]:
    """Euler grid through the student's times: (shifted times [N + 1] from 1 to 0, index of each student step).

    The unshifted segments [u_j, u_{j+1}] (u_K = 0) get total_steps / K Euler steps each.
    """
    from motionstream.diffusion.flow import shift_timesteps

    k = len(denoising_steps)
    per = max(1, total_steps // k)
    bounds = list(denoising_steps) + [0.0]
    if abs(bounds[0] - 1.0) > 1e-6:
        raise ValueError(f"the student's first denoising step must be pure noise (1.0), got {bounds[0]}")
    u, marks = [], []
    for j in range(k):
        marks.append(len(u))
        seg = torch.linspace(bounds[j], bounds[j + 1], per + 1, dtype=torch.float64)
        u.extend(seg[:-1].tolist())
    u.append(0.0)
    return shift_timesteps(torch.tensor(u, dtype=torch.float64), shift).float(), marks


@torch.no_grad()
def teacher_trajectory(teacher: torch.nn.Module, param, cond, text, null_text, noise: torch.Tensor,
                       schedule: torch.Tensor, marks: list[int], text_scale: float,
                       motion_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint-guided Euler integration recording the states at `marks`.

    Returns (states [B, K, C, F, h, w], x0 [B, C, F, h, w]); states[:, 0] is the initial noise.
    """
    from motionstream.diffusion.flow import euler_sample
    from motionstream.diffusion.guidance import guided_prediction
    from motionstream.diffusion.sampling import null_text_like, predict_velocity

    b = noise.shape[0]
    null = null_text_like(null_text, b)
    no_motion = cond.drop_motion()
    keep = set(marks)
    states: list[torch.Tensor] = []
    calls = [0]

    def velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if calls[0] in keep:
            states.append(z.clone())
        calls[0] += 1

        def predict(use_text: bool, use_motion: bool) -> torch.Tensor:
            return predict_velocity(teacher, z, t, text if use_text else null, cond if use_motion else no_motion, param)
        return guided_prediction(predict, text_scale, motion_scale)

    x0 = euler_sample(velocity, noise, schedule)
    return torch.stack(states, dim=1), x0


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
    from motionstream.diffusion.sampling import condition_prior
    from motionstream.train.rollout import add_skip

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
class ODEPairs:
    """Reader of a pair folder: PAIRS/meta.json + PAIRS/pairs/NNNNNN.npz.

    A pair file: states float16 [K, C, F, h, w], x0 float16 [C, F, h, w], first_latent float16
    [C, h, w], text_tokens float16 [L, D], text_mask bool [L], tracks float32 [T, N, 2] (the subset
    the teacher was conditioned on), visibility bool [T, N], ids int64 [N], width, height, fps,
    clip_seed, caption.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.refresh()

    def refresh(self) -> int:
        d = self.root / "pairs"
        self.indices = sorted(int(p.stem) for p in d.glob("*.npz") if p.stem.isdigit()) if d.is_dir() else []
        return len(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def path(self, index: int) -> Path:
        return self.root / "pairs" / f"{index:06d}.npz"

    def load(self, index: int) -> dict[str, Any]:
        from motionstream.tracks.trackset import TrackSet

        with np.load(self.path(index), allow_pickle=False) as z:
            floats = ("states", "x0", "first_latent", "text_tokens")
            out = {k: torch.from_numpy(z[k].astype(np.float32)) for k in floats}
            out["text_mask"] = torch.from_numpy(z["text_mask"])
            out["prior"] = torch.from_numpy(z["prior"].astype(np.float32)) if "prior" in z.files else None
            out["tracks"] = TrackSet(z["tracks"], z["visibility"], int(z["width"]), int(z["height"]), float(z["fps"]),
                                     ids=z["ids"].astype(np.int64))
            out["caption"] = str(z["caption"])
        return out


def pair_meta(teacher: str, teacher_meta: dict[str, Any], scfg, dcfg, ocfg: ODETrainConfig) -> dict[str, Any]:
    """What a pair folder was generated with (a folder never mixes teachers or schedules)."""
    return {"version": 1, "teacher": str(teacher), "teacher_step": teacher_meta.get("step"),
            "denoising_steps": list(scfg.denoising_steps), "shift": scfg.shift, "teacher_steps": ocfg.teacher_steps,
            "latent_frames": ocfg.latent_frames, "text_scale": dcfg.text_scale, "motion_scale": dcfg.motion_scale,
            "seed": ocfg.seed}


def open_pairs_dir(pairs_dir: Path, meta: dict[str, Any]) -> None:
    """Create a pair folder, or check that an existing one was generated with the same settings."""
    from motionstream.train.cache import _check_meta

    try:
        _check_meta(pairs_dir, meta)
    except ValueError as err:
        raise UserError(str(err)) from err
    (pairs_dir / "pairs").mkdir(parents=True, exist_ok=True)


def generate_pairs(pairs_dir: Path, teacher, param, cache, null_text, dit_cfg, scfg, dcfg, ocfg: ODETrainConfig,
                   tracks_cfg: dict[str, Any], meta: dict[str, Any], count: int, progress: bool = True,
                   log=print, rank: int = 0, world_size: int = 1, encode=None) -> int:
    """Write the missing pairs 0..count-1 (resumable); returns how many were written now.

    encode: VideoCodec.encode, for a teacher with the "video" prior (stored in each pair file).

    Under torchrun every rank writes the pairs i with i % world_size == rank (a pair depends only on
    its index). The folder must have been opened with open_pairs_dir (rank 0, before the others)."""
    from tqdm import tqdm

    from motionstream.diffusion.sampling import video_prior_for
    from motionstream.models.conditioning import build_condition
    from motionstream.tracks.embed import sample_track_subset
    from motionstream.train.cache import _atomic_savez
    from motionstream.train.teacher import pad_text

    if json.loads((pairs_dir / "meta.json").read_text()) != meta:
        raise UserError(f"pair folder {pairs_dir} was generated with other settings")
    reader = ODEPairs(pairs_dir)
    mine = [i for i in range(count) if i % world_size == rank]
    todo = [i for i in mine if not reader.path(i).is_file()]
    count = len(mine)
    schedule, marks = ode_schedule(scfg.denoising_steps, ocfg.teacher_steps, scfg.shift)
    f = ocfg.latent_frames
    bar = tqdm(total=count, initial=count - len(todo), desc="ode pairs", unit="pair", disable=not progress)
    t0, written = time.time(), 0
    for g in range(0, len(todo), ocfg.pair_batch):
        group = todo[g:g + ocfg.pair_batch]
        clips, tracks, noise = [], [], []
        for i in group:
            rng, gen = item_rng(ocfg.seed, i, 0, salt=1)
            clip = cache.load_seed(cache.seeds[int(rng.integers(len(cache)))]).prefix(f, dit_cfg.temporal_factor)
            h, w = clip.latents.shape[2:]
            tracks.append(sample_track_subset(clip.tracks, rng, tracks_cfg.get("min_tracks", 1000),
                                              tracks_cfg.get("max_tracks", 2500), cells=h * w))
            noise.append(torch.randn(clip.latents.shape, generator=gen))
            clips.append(clip)
        first = torch.stack([c.latents[:, 0] for c in clips])
        prior = video_prior_for(param, encode, [c.first_frame for c in clips], tracks, f, dit_cfg.temporal_factor)
        cond = build_condition(first, tracks, f, dit_cfg, prior=prior)
        text = pad_text([c.text_tokens for c in clips], [c.text_mask for c in clips])
        states, x0 = teacher_trajectory(teacher, param, cond, text, null_text, torch.stack(noise), schedule, marks,
                                        dcfg.text_scale, dcfg.motion_scale)
        for k, i in enumerate(group):
            ts, clip = tracks[k], clips[k]
            _atomic_savez(reader.path(i), states=states[k].numpy().astype(np.float16),
                          x0=x0[k].numpy().astype(np.float16), first_latent=first[k].numpy().astype(np.float16),
                          text_tokens=clip.text_tokens.numpy().astype(np.float16), text_mask=clip.text_mask.numpy(),
                          tracks=ts.tracks, visibility=ts.visibility, ids=np.asarray(ts.ids, np.int64),
                          width=np.array(ts.width), height=np.array(ts.height), fps=np.array(ts.fps),
                          clip_seed=np.array(clip.seed), caption=np.array(clip.caption),
                          **({} if prior is None else {"prior": prior[k].numpy().astype(np.float16)}))
            written += 1
        bar.update(len(group))
        if written % 20 < len(group):
            log(f"ode pairs: {count - len(todo) + written}/{count}, {(time.time() - t0) / written:.1f} s/pair")
    bar.close()
    return written


def pair_batch(pairs: ODEPairs, picks: list[int], dit_cfg) -> tuple[torch.Tensor, torch.Tensor, tuple, Any]:
    """(states [B, K, C, F, h, w], x0 [B, C, F, h, w], text (tokens, mask), MotionCondition) of pairs `picks`."""
    from motionstream.models.conditioning import build_condition
    from motionstream.train.teacher import pad_text

    items = [pairs.load(pairs.indices[i]) for i in picks]
    states = torch.stack([it["states"] for it in items])
    x0 = torch.stack([it["x0"] for it in items])
    first = torch.stack([it["first_latent"] for it in items])
    priors = [it["prior"] for it in items]
    prior = None if any(p is None for p in priors) else torch.stack(priors)
    cond = build_condition(first, [it["tracks"] for it in items], x0.shape[2], dit_cfg, prior=prior)
    text = pad_text([it["text_tokens"] for it in items], [it["text_mask"] for it in items])
    return states, x0, text, cond


# --------------------------------------------------------------------- training
def ode_step_inputs(step: int, ocfg: ODETrainConfig, num_pairs: int, num_chunks: int, num_steps: int,
                    local: slice) -> tuple[list[int], torch.Tensor, tuple[int, int]]:
    """(pair picks of this rank, chunk_steps long [B_local, n_chunks], (S, W)) of global step `step`."""
    rng = np.random.default_rng([ocfg.seed, 2, step])
    picks = rng.integers(0, num_pairs, size=ocfg.batch_size)
    s, w = draw_cache_config(rng, ocfg.sink_choices, ocfg.window_choices)
    steps = torch.from_numpy(rng.integers(0, num_steps, size=(ocfg.batch_size, num_chunks)))
    return [int(p) for p in picks[local]], steps[local], (s, w)


def load_distill_config(path: str, stage: str, stage_cls: type,
                        overrides: Sequence[str] = ()) -> tuple[dict[str, Any], Any, Any, Any, Any]:
    """(preset, `stage` section, student, diffusion, train_teacher sections) of a distillation run;
    config problems are the user's input, so they become one-line UserErrors."""
    from motionstream.diffusion.flow import DiffusionConfig
    from motionstream.train.rollout import StudentConfig
    from motionstream.train.teacher import TeacherTrainConfig

    cfg = load_run_config(path, overrides)
    return (cfg, run_section(cfg, stage, stage_cls), run_section(cfg, "student", StudentConfig),
            run_section(cfg, "diffusion", DiffusionConfig), run_section(cfg, "train_teacher", TeacherTrainConfig))


def train_ode(args) -> int:
    from tqdm import tqdm

    from motionstream.diffusion.sampling import prior_encoder
    from motionstream.models.dit import chunk_attention_mask
    from motionstream.train.cache import TeacherCache, text_key
    from motionstream.train.common import load_training_state, lr_at, optimizer_step, seed_everything, set_lr
    from motionstream.train.distributed import init_distributed, restore_views, shutdown, wrap_model
    from motionstream.train.rollout import load_dit_folder

    cfg, ocfg, scfg, dcfg, tcfg = load_distill_config(args.config, "train_ode", ODETrainConfig, args.set)
    if ocfg.latent_frames % scfg.chunk_frames:
        raise UserError(f"train_ode.latent_frames {ocfg.latent_frames} is not a multiple of student.chunk_frames "
                        f"{scfg.chunk_frames}")
    torch.set_num_threads(args.threads or ocfg.threads)
    ctx = init_distributed(args.device)
    run_dir = Path(args.run)
    log = run_logger(run_dir, "ode", ctx.is_main)
    if args.export:
        return export_from_run(run_dir, Path(args.export), cfg, scfg, "ode")
    pairs_dir = _abs(args.pairs or ocfg.pairs_dir)
    num_pairs = args.num_pairs or ocfg.num_pairs
    try:
        teacher, param, teacher_meta = load_dit_folder(args.teacher, ctx.device)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise UserError(f"teacher {args.teacher}: {err}") from err
    dit_cfg = teacher.cfg

    # ---- 1. pairs (every rank integrates its share; rank 0 owns meta.json)
    if not args.no_generate:
        try:
            cache = TeacherCache(_abs(args.cache or tcfg.cache_dir))
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
        n = generate_pairs(pairs_dir, teacher, param, cache, cache.text(text_key("")), dit_cfg, scfg, dcfg, ocfg,
                           cfg.get("tracks", {}), meta, num_pairs, progress=ctx.is_main and not args.no_progress,
                           log=log.info, rank=ctx.rank, world_size=ctx.world_size, encode=encode)
        log.info(f"ODE pairs: rank {ctx.rank} wrote {n} new")
    ctx.barrier()
    pairs = ODEPairs(pairs_dir)
    if len(pairs) == 0:
        raise UserError(f"no ODE pairs in {pairs_dir}")
    if args.pairs_only:
        return 0
    del teacher

    # ---- 2. regression
    lineage = {"teacher_folder": str(args.teacher), "teacher_step": teacher_meta.get("step"),
               "ode_pairs": len(pairs)}
    seed_everything(ocfg.seed)
    model, param, _ = load_dit_folder(args.teacher, ctx.device)   # the student starts as the teacher
    model.train()
    model = wrap_model(model, ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=ocfg.lr, betas=(0.9, ocfg.adam_beta2),
                            weight_decay=ocfg.weight_decay)
    mods, opts, finish = restore_views(ctx, {"model": model}, {"opt": opt})
    resumed = load_training_state(run_dir, mods, opts)
    finish()
    step, extra = resumed if resumed is not None else (0, {})
    if resumed is not None:
        log.info(f"resumed {run_dir} at step {step}")
    train_seconds = float(extra.get("train_seconds", 0.0))
    t_student = scfg.timesteps()
    num_chunks = ocfg.latent_frames // scfg.chunk_frames
    h, w = pairs.load(pairs.indices[0])["x0"].shape[2:]
    tokens = model.tokens_per_frame((h, w))
    log.info(f"ODE regression: {len(pairs)} pairs, {ctx.world_size} process(es), batch {ocfg.batch_size}, "
             f"S in {ocfg.sink_choices}, W in {ocfg.window_choices}, clean_context={ocfg.clean_context}")
    stop_at = time.time() + args.minutes * 60 if args.minutes else None
    max_steps = args.steps if args.steps is not None else ocfg.total_steps
    bar = tqdm(initial=step, total=max_steps, desc="ode", unit="step", disable=not ctx.is_main or args.no_progress)
    metrics = run_dir / "metrics.jsonl"
    window = []
    while step < max_steps and (stop_at is None or time.time() < stop_at):
        picks, chunk_steps, (s, wc) = ode_step_inputs(step, ocfg, len(pairs), num_chunks, scfg.num_steps,
                                                      ctx.local_slice(ocfg.batch_size))
        states, x0, text, cond = pair_batch(pairs, picks, dit_cfg)
        dev = ctx.device
        mask = chunk_attention_mask(ocfg.latent_frames, scfg.chunk_frames, s, wc, tokens,
                                    clean_context=ocfg.clean_context)
        lr = lr_at(step, ocfg.lr, ocfg.warmup_steps, ocfg.total_steps, ocfg.lr_schedule)
        set_lr(opt, lr)
        t_step = time.time()
        loss = ode_regression_loss(model, param, states.to(dev), x0.to(dev), t_student, chunk_steps.to(dev),
                                   scfg.chunk_frames, (text[0].to(dev), text[1].to(dev)), cond.to(dev), mask,
                                   ocfg.clean_context)
        grad_norm = optimizer_step(opt, loss, model.parameters(), ocfg.grad_clip)
        step += 1
        train_seconds += time.time() - t_step
        loss_value = loss.item()
        window.append(ctx.mean(loss_value))
        if step % ocfg.checkpoint_every == 0:
            save_run(ctx, run_dir, step, {"model": model}, {"opt": opt}, {**extra, "train_seconds": train_seconds})
        if step % ocfg.export_every == 0:
            export_run_model(ctx, run_dir, model, dit_cfg, param, scfg, "ode", step, train_seconds, ocfg.seed, cfg,
                             extra=lineage)
        if ctx.is_main:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", cfg=f"c{scfg.chunk_frames}s{s}w{wc}")
            if step % ocfg.log_every == 0:
                rec = {"step": step, "loss": float(np.mean(window)), "lr": lr, "grad_norm": float(grad_norm),
                       "train_hours": train_seconds / 3600, "time": time.time()}
                append_jsonl(metrics, rec)
                log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()
                                  if k != "time"))
                window = []
    bar.close()
    save_run(ctx, run_dir, step, {"model": model}, {"opt": opt}, {**extra, "train_seconds": train_seconds})
    export_run_model(ctx, run_dir, model, dit_cfg, param, scfg, "ode", step, train_seconds, ocfg.seed, cfg,
                     extra=lineage)
    if ctx.is_main:
        log.info(f"stopped at step {step}; student exported to {run_dir / 'student'}")
        print(f"ode: step {step}, student in {run_dir / 'student'}")
    shutdown(ctx)
    return 0


def _abs(path: str | Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def save_run(ctx, run_dir: Path, step: int, modules: dict, optimizers: dict, extra: dict[str, Any]) -> None:
    """Gather (under torchrun) and write the training state on rank 0."""
    from motionstream.train.common import save_training_state
    from motionstream.train.distributed import checkpoint_views

    mods, opts = checkpoint_views(ctx, modules, optimizers)
    if ctx.is_main:
        save_training_state(run_dir, step, mods, opts, extra=extra)
    ctx.barrier()


def export_run_model(ctx, run_dir: Path, model, dit_cfg, param, scfg, stage: str, step: int, train_seconds: float,
                     seed: int, cfg: dict[str, Any], name: str = "model", extra: dict[str, Any] | None = None) -> None:
    """Write run_dir/student (a student model folder) from `model` (a module or an EMA)."""
    from motionstream.train.distributed import checkpoint_views
    from motionstream.train.rollout import export_student

    mods, _ = checkpoint_views(ctx, {name: model}, {})
    if ctx.is_main:
        export_student(run_dir / "student", mods[name].state_dict(), dit_cfg, param, scfg,
                       {"stage": stage, "step": step, "train_hours": train_seconds / 3600, "data_seed": seed,
                        "preset": cfg.get("name"), **(extra or {})})
    ctx.barrier()


def export_from_run(run_dir: Path, out_dir: Path, cfg: dict[str, Any], scfg, stage: str) -> int:
    """Write a run's student weights (the EMA when the run keeps one) as a model folder."""
    from motionstream.models.checkpoints import load_model_dir
    from motionstream.train.rollout import export_student, load_dit_folder

    src = run_dir / "student"
    if not (src / "config.json").is_file():
        raise UserError(f"no exported student in {src}: train first")
    model, param, meta = load_dit_folder(src)
    _, state = load_model_dir(src)
    extra = {k: v for k, v in meta.items() if k not in ("kind", "config", "teacher", "student")}
    export_student(out_dir, state, model.cfg, param, scfg, extra)
    print(f"exported {stage} student of step {meta.get('step')} to {out_dir}")
    return 0


# -------------------------------------------------------------------------- CLI
def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
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
    p.add_argument("--steps", type=int, default=None, help="stop at this global step (default: total_steps)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes")
    p.add_argument("--export", default=None, metavar="DIR", help="copy RUN/student to DIR and exit")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=train_ode)


__all__ = ["ODETrainConfig", "ode_schedule", "teacher_trajectory", "noisy_inputs", "ode_regression_loss",
           "ode_predictions", "draw_cache_config", "open_pairs_dir", "generate_pairs", "ODEPairs", "train_ode",
           "register"]
