"""The teacher's periodic evaluation: track following of the EMA weights on held-out [world] val clips
(scoring.track_following), its held-out flow-matching loss, and GT | sample videos.

Sample grids, track subsets and noises are fixed per run (seeded from the stage's seed), so the
reports of one run are comparable over time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from motionstream.config import section, video_config
from motionstream.data.splits import split_seeds
from motionstream.data.synth import render_clip
from motionstream.diffusion.flow import DiffusionConfig, add_noise, velocity_target
from motionstream.diffusion.sampling import (TeacherParam, condition_prior, predict_velocity, sample,
                                             video_prior_for)
from motionstream.models.codec import frames_to_tensor, load_codec, tensor_to_frames
from motionstream.models.conditioning import build_condition
from motionstream.models.text import load_text_encoder
from motionstream.scoring.track_following import TrackFollowingEval
from motionstream.tracks.draw import draw_tracks
from motionstream.tracks.embed import TracksConfig, sample_track_subset
from motionstream.video import write_video

TRACK_SUBSET_SALT = 12345           # seed offset of the fixed conditioning track subsets
SAMPLE_NOISE_SALT = 777             # seed offset of the fixed sampling noise
LOSS_NOISE_SALT = 778               # seed offset of the fixed noise of the held-out loss
SAMPLE_VIDEOS = 2                   # clips in each GT | sample video
NO_GUIDANCE_KEYS = ("epe", "epe_reliable", "epe_ratio", "psnr", "region_psnr")


def tracks_section(cfg: dict[str, Any]) -> TracksConfig:
    return section(cfg, "tracks", TracksConfig)


def teacher_param(tcfg) -> TeacherParam:
    """The output parameterisation of a teacher trained with `tcfg` (TeacherTrainConfig)."""
    return TeacherParam(output_skip=tcfg.output_skip, skip_min_t=tcfg.skip_min_t, skip_form=tcfg.skip_form,
                        prior_var=tcfg.prior_var)


class _ZeroNetwork(torch.nn.Module):
    """A teacher whose network outputs zero: predict_velocity then returns the prior skip alone."""

    def forward(self, z_t: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return torch.zeros_like(z_t)


class TeacherEval:
    """Track following of the EMA teacher on a few held-out [world] val clips (scoring.track_following).

    Besides the evaluator's baselines (frozen first frame, forward warp) it scores the "prior paste":
    the decoded prior the output is parameterised around (diffusion/sampling.condition_prior), i.e.
    what the untrained teacher produces; and the VAE round trip of the ground truth (the ceiling of
    any latent model: the codec's blur alone costs EPE and PSNR).
    """

    def __init__(self, cfg: dict[str, Any], tcfg, dcfg: DiffusionConfig, dit_cfg,
                 codec, text_encoder, num_latent_frames: int, log=print, seeds: list[int] | None = None):
        video = video_config(cfg)
        tracks_cfg = tracks_section(cfg)
        self.tcfg, self.dcfg, self.codec = tcfg, dcfg, codec
        self.num_latent_frames = num_latent_frames
        num_video = 1 + codec.temporal_stride * (num_latent_frames - 1)
        t0 = time.time()
        self.clips = [render_clip(s, num_frames=num_video, width=video.width, height=video.height,
                                  fps=video.fps)
                      for s in (seeds if seeds is not None else split_seeds("val", tcfg.val_clips))]
        self._index = {id(c): i for i, c in enumerate(self.clips)}  # clips hold arrays: look up by identity
        self.evaluator = TrackFollowingEval(self.clips, max_points=tcfg.eval_max_points)
        with torch.no_grad():
            first = torch.cat([codec.encode(frames_to_tensor(c.frames[:1]))[:, :, 0] for c in self.clips])
            self.text = text_encoder.encode([c.caption for c in self.clips])
            self.null_text = text_encoder.encode([""])
        h, w = first.shape[2:]
        rng = np.random.default_rng(tcfg.seed + TRACK_SUBSET_SALT)  # fixed subsets: evals are comparable over time
        self.cond_tracks = [sample_track_subset(c.tracks, rng, tracks_cfg.min_tracks, tracks_cfg.max_tracks,
                                                cells=h * w, id_range=tracks_cfg.id_range) for c in self.clips]
        prior = video_prior_for(teacher_param(tcfg), codec.encode, [c.frames[0] for c in self.clips],
                                self.cond_tracks, num_latent_frames, dit_cfg.temporal_factor)
        self.cond = build_condition(first, self.cond_tracks, num_latent_frames, dit_cfg, prior=prior)
        self.noise = torch.randn(first.shape[0], first.shape[1], num_latent_frames, h, w,
                                 generator=torch.Generator().manual_seed(tcfg.seed + SAMPLE_NOISE_SALT))
        # the prior the output is parameterised around, decoded: what an untrained teacher produces
        paste = self._decode(condition_prior(self.cond, tcfg.output_skip if tcfg.output_skip != "none" else "guide"))
        self.references = {"prior_paste": self._score_videos(paste)}
        # the codec's own round trip bounds what any latent model can reach (EPE and PSNR ceiling)
        with torch.no_grad():
            self.latents = torch.cat([codec.encode(frames_to_tensor(c.frames)) for c in self.clips])
        self.references["vae_recon"] = self._score_videos(self._decode(self.latents))
        log(f"eval: {len(self.clips)} held-out clips x {num_video} frames ready in {time.time() - t0:.0f}s")

    def _score_videos(self, videos: list[np.ndarray]) -> dict[str, float]:
        scores, _ = self.evaluator.score(lambda clip: videos[self._index[id(clip)]])
        summary = self.evaluator.summarize(scores)
        return {k: summary[k] for k in ("epe", "epe_reliable", "psnr", "region_psnr")}

    def _decode(self, latents: torch.Tensor) -> list[np.ndarray]:
        with torch.no_grad():
            return [tensor_to_frames(self.codec.decode(latents[i:i + 1])) for i in range(latents.shape[0])]

    def __call__(self, model: torch.nn.Module, param: TeacherParam, text_scale: float | None = None,
                 motion_scale: float | None = None, steps: int | None = None) -> tuple[dict[str, Any], list[np.ndarray]]:
        """(report, generated videos) of `model`; guidance weights / steps default to the configs'."""
        t0 = time.time()
        wt = self.dcfg.text_scale if text_scale is None else text_scale
        wm = self.dcfg.motion_scale if motion_scale is None else motion_scale
        latents = sample(model, self.cond, self.text, self.null_text, param, steps=steps or self.tcfg.eval_sample_steps,
                         shift=self.dcfg.shift, text_scale=wt, motion_scale=wm, noise=self.noise)
        videos = self._decode(latents)
        report = self.evaluator(lambda clip: videos[self._index[id(clip)]])
        report = {k: v for k, v in report.items() if k != "per_clip"}
        for name, ref in self.references.items():
            report.update({f"{k}_{name}": v for k, v in ref.items()})
        report.update(eval_s=time.time() - t0, text_scale=wt, motion_scale=wm)
        report["eval_frames"] = int(self.clips[0].frames.shape[0])
        return report, videos

    @torch.no_grad()
    def heldout_loss(self, model: torch.nn.Module | None, param: TeacherParam) -> dict[str, float]:
        """Unweighted flow-matching loss on the held-out clips at the fixed times `eval_loss_times` (same
        noise every call): `val_loss` (their mean) and `val_loss_t{t}`. model None = a network that outputs
        zero, i.e. the prior skip alone, the reference the network has to beat.

        The denoiser's own progress: sample quality (EPE, PSNR) also depends on how its errors compound
        over the sampler's steps, this does not."""
        noise = torch.randn(self.latents.shape, generator=torch.Generator().manual_seed(self.tcfg.seed + LOSS_NOISE_SALT))
        target = velocity_target(self.latents, noise)
        net = _ZeroNetwork() if model is None else model
        b, _, f = self.latents.shape[:3]
        report = {}
        for t in self.tcfg.eval_loss_times:
            tt = torch.full((b, f), float(t))
            pred = predict_velocity(net, add_noise(self.latents, noise, tt), tt, self.text, self.cond, param)
            report[f"val_loss_t{t:g}"] = float((pred - target).pow(2).mean())
        report["val_loss"] = float(np.mean(list(report.values())))
        return report

    def write_samples(self, out_dir: Path, step: int, videos: list[np.ndarray], count: int = SAMPLE_VIDEOS) -> Path:
        """GT | sample side by side, the conditioning tracks drawn on both."""
        rows = []
        for clip, ts, vid in list(zip(self.clips, self.cond_tracks, videos))[:count]:
            rows.append(np.concatenate([draw_tracks(clip.frames, ts), draw_tracks(vid, ts)], axis=2))
        path = out_dir / f"step{step:06d}.mp4"
        write_video(path, np.concatenate(rows, axis=1), fps=self.clips[0].tracks.fps)
        return path


class TeacherEvaluation:
    """The stage's eval: codec, text encoder and the evaluator built on first use (and again when the
    clip length changes at the phase switch); `__call__` scores EMA weights and writes samples."""

    def __init__(self, cfg: dict[str, Any], tcfg, dcfg: DiffusionConfig, dit_cfg, build_model, codec=None):
        self.cfg, self.tcfg, self.dcfg, self.dit_cfg, self.build_model = cfg, tcfg, dcfg, dit_cfg, build_model
        self.codec, self.text_encoder, self.evaluator, self.frames = codec, None, None, None

    def __call__(self, ema_state: dict[str, torch.Tensor], param: TeacherParam, step: int, num_frames: int,
                 run_dir: Path, log) -> dict[str, Any]:
        if self.codec is None:
            self.codec = load_codec(self.tcfg.vae, tiny_decoder=None)
        if self.text_encoder is None:
            self.text_encoder = load_text_encoder(self.cfg)
        if self.evaluator is None or self.frames != num_frames:
            self.evaluator = TeacherEval(self.cfg, self.tcfg, self.dcfg, self.dit_cfg, self.codec, self.text_encoder,
                                         num_frames, log=log.info)
            self.frames = num_frames
        model = self.build_model()
        model.load_state_dict(ema_state, strict=False)
        model.eval()
        report, videos = self.evaluator(model, param)
        # the conditional prediction alone (w_t = w_m = 0): learning progress without guidance effects
        plain, _ = self.evaluator(model, param, text_scale=0.0, motion_scale=0.0)
        report.update({f"{k}_noguide": plain[k] for k in NO_GUIDANCE_KEYS})
        report.update(self.evaluator.heldout_loss(model, param))
        report["val_loss_prior_only"] = self.evaluator.heldout_loss(None, param)["val_loss"]
        report["step"] = step
        log.info(f"samples: {self.evaluator.write_samples(run_dir / 'samples', step, videos)}")
        return report
