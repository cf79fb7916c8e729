"""The causal student's few-step chunk sampler, its settings and its model folders (paper Sec. 3.2).

One code path for training and inference: `StudentSampler` denoises one chunk of C latent frames
in K steps with `WanDiT.forward_chunk` and the SAME `KVCache` the streaming engine uses (sink +
rolling window, RoPE by cache position), then writes the clean chunk into the cache (one more
pass at t = 0). The streaming engine (stream/engine.py) runs it chunk by chunk; the Self-Forcing
self-rollout (train/rollout.py) chains it over chunks in training.

Few-step sampling (CausVid / Self-Forcing), times t_0 > t_1 > ... > t_{K-1} > 0 (config
`student.denoising_steps`, unshifted, then shifted by `student.shift` like the teacher); training always
starts at t_0 = 1, a streaming rung may start lower from the prior (`initial_latents`):

    z = noise[0]                       (t_0 = 1;  t_0 < 1: (1 - t_0) prior + t_0 noise[0])
    for j in 0..K-1:   v = student(z, t_j);   x0 = z - t_j v
                       z = (1 - t_{j+1}) x0 + t_{j+1} * noise[j+1]        (renoise = True)
                       z = z + (t_{j+1} - t_j) v                          (renoise = False: DDIM / Euler)
    chunk = x0 of the last step;  write pass: student(chunk, t = 0, write=True)

Gradient truncation (Self-Forcing): `denoise(..., exit_step=k, grad=True)` stops at step k and
runs only that evaluation with autograd; the steps before it and the write passes run under
no_grad, and the cache reads the stored K/V detached, so no gradient crosses chunks.

Output parameterisation: the student is initialised from the teacher and keeps its
`TeacherParam` (diffusion/sampling.py): v = network + (z_t - prior) / max(t, skip_min_t) with the
prior of the WHOLE stream's condition sliced to the chunk (a chunk's own condition has no first
frame in it, so `condition_prior(cond.chunk(a, b))` would be wrong).

Tensor conventions: latents float32 [B, C, F, h, w] normalised; flow time t in [0, 1], 1 = noise;
noise for a chunk [K, B, C, Cf, h, w] (index j = the noise used to enter step j).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from motionstream.config import from_dict, to_dict
from motionstream.diffusion.flow import shift_timesteps
from motionstream.diffusion.sampling import TeacherParam, apply_skip, condition_prior, load_dit_folder
from motionstream.models.checkpoints import save_model_dir
from motionstream.models.folders import STUDENT_KIND


@dataclass
class StudentConfig:
    """Section `student` of a preset: the streaming configuration the student is sampled with."""

    chunk_frames: int = 3                  # C latent frames per chunk (paper: 3)
    sink_chunks: int = 1                   # S (paper default c3s1w1)
    window_chunks: int = 1                 # W
    denoising_steps: list[float] = field(default_factory=lambda: [1.0, 2 / 3, 1 / 3])  # unshifted u of the K steps
    shift: float = 3.0                     # timestep shift applied to denoising_steps (= diffusion.shift)
    renoise: bool = True                   # x0 + fresh noise between steps (Self-Forcing); False = DDIM

    def __post_init__(self) -> None:
        self.denoising_steps = [float(u) for u in self.denoising_steps]
        u = self.denoising_steps
        if not u or any(not 0.0 < a <= 1.0 for a in u) or any(b >= a for a, b in zip(u, u[1:])):
            raise ValueError(f"student.denoising_steps must decrease inside (0, 1], got {u}")

    @property
    def name(self) -> str:
        return f"c{self.chunk_frames}s{self.sink_chunks}w{self.window_chunks}"

    @property
    def num_steps(self) -> int:
        return len(self.denoising_steps)

    def timesteps(self) -> torch.Tensor:
        """Shifted flow times of the K denoising steps, float32 [K] (descending; first = 1 when u starts at 1)."""
        return shift_timesteps(torch.tensor(self.denoising_steps, dtype=torch.float64), self.shift).float()


def parse_cache_name(name: str) -> tuple[int, int, int]:
    """'c3s1w1' -> (3, 1, 1)."""
    m = re.fullmatch(r"c(\d+)s(\d+)w(\d+)", name.strip())
    if not m:
        raise ValueError(f"cache configuration {name!r} is not of the form cXsYwZ (e.g. c3s1w1)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


# ------------------------------------------------------------------------ one chunk
def stream_prior(cond, param: TeacherParam) -> torch.Tensor | None:
    """The output-skip prior of the whole stream [B, C, F, h, w] (None when the param has no skip)."""
    return None if param.output_skip == "none" else condition_prior(cond, param.output_skip)


def add_skip(out: torch.Tensor, z: torch.Tensor, t: torch.Tensor, prior: torch.Tensor | None,
             param: TeacherParam) -> torch.Tensor:
    """Network output -> velocity: out + (z - prior) / max(t, skip_min_t) (diffusion/sampling.py).

    out, z [B, C, F, h, w]; t [B, F]; prior [B, C, F, h, w] (the stream prior sliced to these
    frames, or None for output_skip = "none")."""
    return apply_skip(out, z, t, prior, param)


class StudentSampler:
    """Few-step denoising of chunks with a KV cache (module docstring).

    model: WanDiT (the causal student); cfg: StudentConfig; param: its output parameterisation.
    text: (tokens [B, L, D], mask [B, L] | None) of the stream; cond: MotionCondition of the whole
    stream (at least as many latent frames as will be generated).
    """

    def __init__(self, model: torch.nn.Module, cfg: StudentConfig, param: TeacherParam, cond,
                 text: tuple[torch.Tensor, torch.Tensor | None]):
        self.model, self.cfg, self.param, self.cond, self.text = model, cfg, param, cond, text
        self.prior = stream_prior(cond, param)
        self.t = cfg.timesteps()

    def velocity(self, z: torch.Tensor, t: float, start: int, cache, write: bool) -> torch.Tensor:
        """Student velocity of the chunk z [B, C, Cf, h, w] at time t, frames [start, start + Cf)."""
        b, _, cf = z.shape[:3]
        stop = start + cf
        if stop > self.cond.num_frames:
            raise ValueError(f"the condition has {self.cond.num_frames} latent frames; chunk ends at {stop}")
        tt = z.new_full((b, cf), float(t))
        out = self.model.forward_chunk(z, tt, self.text[0], self.text[1], self.cond.chunk(start, stop), cache, write)
        return add_skip(out, z, tt, self.chunk_prior(start, cf), self.param)

    def chunk_prior(self, start: int, frames: int) -> torch.Tensor | None:
        """The output-skip prior of frames [start, start + frames) (None without a skip)."""
        return None if self.prior is None else self.prior[:, :, start:start + frames]

    def initial_latents(self, noise: torch.Tensor, start: int) -> torch.Tensor:
        """The first step's input: the noise itself when the first step is at t = 1 (the trained
        schedule); at t < 1 (a rung that skips the first steps) the chunk's output-skip prior noised to
        t, as the skipped steps would have left it: at t = 1 the student's x0 is the prior minus a
        small correction (diffusion/sampling.py's skip), so the renoised x0 is nearly this."""
        t = float(self.t[0])
        if t >= 1.0:
            return noise
        prior = self.chunk_prior(start, noise.shape[2])
        if prior is None:
            raise ValueError(f"denoising from t = {t:.3f} < 1 needs an output-skip prior; this model has none")
        return (1 - t) * prior + t * noise

    def denoise(self, noise: torch.Tensor, start: int, cache, exit_step: int | None = None,
                grad: bool = False) -> torch.Tensor:
        """x0 of one chunk after steps 0..exit_step (default: all K). noise [K, B, C, Cf, h, w].

        grad=True runs the exit step with autograd (gradient truncation); every other step never
        builds a graph. The cache is only read.
        """
        k_steps = self.cfg.num_steps
        exit_step = k_steps - 1 if exit_step is None else exit_step
        if not 0 <= exit_step < k_steps:
            raise ValueError(f"exit step {exit_step} outside [0, {k_steps})")
        if noise.shape[0] < exit_step + 1:
            raise ValueError(f"noise has {noise.shape[0]} entries, exit step {exit_step} needs {exit_step + 1}")
        z = self.initial_latents(noise[0], start)
        for j in range(exit_step + 1):
            t = float(self.t[j])
            with torch.set_grad_enabled(grad and j == exit_step):
                v = self.velocity(z, t, start, cache, write=False)
                x0 = z - t * v
            if j == exit_step:
                return x0
            t_next = float(self.t[j + 1])
            with torch.no_grad():
                if self.cfg.renoise:
                    z = (1 - t_next) * x0 + t_next * noise[j + 1]
                else:
                    z = z + (t_next - t) * v
        raise AssertionError("unreachable")

    @torch.no_grad()
    def write(self, chunk: torch.Tensor, start: int, cache) -> None:
        """The clean pass: the chunk's K/V (at t = 0) join the sink or the rolling window."""
        self.velocity(chunk.detach(), 0.0, start, cache, write=True)

    def new_cache(self, batch: int, latent_hw: tuple[int, int], sink_chunks: int | None = None,
                  window_chunks: int | None = None):
        s = self.cfg.sink_chunks if sink_chunks is None else sink_chunks
        w = self.cfg.window_chunks if window_chunks is None else window_chunks
        return self.model.new_cache(batch, latent_hw, self.cfg.chunk_frames, s, w)


def chunk_noise(generator: torch.Generator, num_steps: int, batch: int, channels: int, chunk_frames: int,
                latent_hw: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Noise of one chunk [K, B, C, Cf, h, w] (initial noise, then the re-noise of steps 1..K-1)."""
    return torch.randn(num_steps, batch, channels, chunk_frames, *latent_hw, generator=generator).to(device)


# ------------------------------------------------------------------ model folders
def load_student(name_or_path: str | Path, device: torch.device | str = "cpu"):
    """(WanDiT, StudentConfig, TeacherParam, metadata) of a student folder (weights/student-tiny-cpu).

    The streaming engine builds `StudentSampler(model, student_cfg, param, cond, text)` from these.
    """
    model, param, meta = load_dit_folder(name_or_path, device, kind=STUDENT_KIND)
    scfg = from_dict(StudentConfig, meta.get("student", {}), f"{name_or_path}/config.json:student")
    return model, scfg, param, meta


def export_student(out_dir: str | Path, state: dict[str, torch.Tensor], dit_cfg, param: TeacherParam,
                   scfg: StudentConfig, extra: dict[str, Any] | None = None) -> Path:
    """Write a student model folder (config.json + fp16 model.safetensors) that load_student reads."""
    meta = {"kind": STUDENT_KIND, "config": to_dict(dit_cfg), "teacher": to_dict(param),
            "student": to_dict(scfg), **(extra or {})}
    return save_model_dir(out_dir, state, meta)
