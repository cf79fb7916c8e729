"""`motionstream train teacher-cache`: render [world] train clips and encode them with the frozen VAE
encoder into the teacher's latent cache (train/cache.py). Resumable: existing clips are skipped."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from motionstream.errors import UserError
from motionstream.config import VideoConfig
from motionstream.data.splits import split_seeds
from motionstream.data.synth import render_clip
from motionstream.models.checkpoints import WeightsNotFound
from motionstream.models.codec import load_codec
from motionstream.models.text import load_text_encoder
from motionstream.train.cache import build_cache, cache_meta
from motionstream.train.common import load_run_config, repo_path, run_section
from motionstream.train.teacher import TeacherTrainConfig


@dataclass
class TeacherCacheArgs:
    """`motionstream train teacher-cache`."""

    config: str
    overrides: list[str] = field(default_factory=list)
    cache: str | None = None
    n: int | None = None
    vae: str | None = None
    threads: int = 1
    no_progress: bool = False


def build_teacher_cache(args: TeacherCacheArgs) -> int:
    cfg = load_run_config(args.config, args.overrides)
    tcfg = run_section(cfg, "train_teacher", TeacherTrainConfig)
    torch.set_num_threads(args.threads)
    video = run_section(cfg, "video", VideoConfig)
    width, height, fps = video.width, video.height, video.fps
    try:
        codec = load_codec(args.vae or tcfg.vae, tiny_decoder=None)
    except WeightsNotFound as err:
        raise UserError(str(err)) from err
    codec.eval()
    num_frames = 1 + codec.temporal_stride * (tcfg.latent_frames - 1)
    text_encoder = load_text_encoder(cfg)
    cache_dir = repo_path(args.cache or tcfg.cache_dir)
    meta = cache_meta(str(args.vae or tcfg.vae), cfg.get("name", ""), width, height, num_frames, fps,
                      type(text_encoder).__name__)
    seeds = split_seeds("train", args.n or tcfg.cache_clips)
    render = lambda s: render_clip(s, num_frames=num_frames, width=width, height=height, fps=fps)  # noqa: E731
    n = build_cache(cache_dir, seeds, render, codec, text_encoder, meta, progress=not args.no_progress,
                    log=lambda m: print(m, flush=True))
    print(f"teacher cache {cache_dir}: wrote {n} clips")
    return 0
