"""The Self-Forcing self-rollout (paper Sec. 3.2): the student's chunk sampler chained over chunks.

The sampler (`StudentSampler`: K denoising steps of one chunk with the streaming engine's KV cache,
then the clean write pass), its config and the student's model folders live in
diffusion/student.py, where the streaming engine finds them too; they are re-exported here for the
training stages. `self_rollout` chains the sampler over chunks; in DMD training it runs past the
teacher's horizon, so the rolled cache seen in training is the one seen in a 10,000-chunk stream.

Gradient truncation (Self-Forcing): in training one exit step k in [0, K) is drawn per rollout;
every chunk stops at step k and its x0 at step k is its output. Only that evaluation runs with
autograd (and only for the chunks in `grad_chunks`); the steps before it and the write passes run
under no_grad, and the cache reads the stored K/V detached, so no gradient crosses chunks.

Tensor conventions: latents float32 [B, C, F, h, w] normalised; noise for a chunk
[K, B, C, Cf, h, w] (index j = the noise used to enter step j).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from motionstream.diffusion.sampling import load_dit_folder
from motionstream.diffusion.student import (STUDENT_KIND, StudentConfig, StudentSampler, add_skip, chunk_noise,
                                            export_student, load_student, parse_cache_name, stream_prior)


# ------------------------------------------------------------------------ rollout
@dataclass
class Rollout:
    """latents [B, C, N*Cf, h, w] = cat(chunks); chunks[i] carries a graph iff i was a grad chunk."""

    latents: torch.Tensor
    chunks: list[torch.Tensor]


def self_rollout(sampler: StudentSampler, cache, noise: torch.Tensor | Sequence[torch.Tensor],
                 exit_step: int | None = None, grad_chunks: Sequence[int] | None = None) -> Rollout:
    """Generate len(noise) chunks autoregressively (Self-Forcing roll-out with the inference cache).

    noise: [N, K, B, C, Cf, h, w] or a list of N chunk noises [K, B, C, Cf, h, w].
    exit_step: the step whose x0 is each chunk's output (None: all K steps, as inference).
    grad_chunks: chunks whose exit step carries gradients (None: none, e.g. critic updates).
    The cache must be fresh (reset) and sized for `cache.chunk_frames == sampler.cfg.chunk_frames`.
    """
    cf = sampler.cfg.chunk_frames
    if cache.chunk_frames != cf:
        raise ValueError(f"cache chunks have {cache.chunk_frames} frames, the student samples {cf}")
    grad_set = set(grad_chunks or ())
    chunks = []
    for i, n in enumerate(noise):
        x0 = sampler.denoise(n, i * cf, cache, exit_step, grad=i in grad_set)
        sampler.write(x0, i * cf, cache)
        chunks.append(x0)
    return Rollout(torch.cat(chunks, dim=2), chunks)


@torch.no_grad()
def stream_generate(sampler: StudentSampler, num_chunks: int, latent_hw: tuple[int, int],
                    generator: torch.Generator, sink_chunks: int | None = None,
                    window_chunks: int | None = None) -> torch.Tensor:
    """Inference convenience: a whole stream of num_chunks chunks [B, C, N*Cf, h, w] (all K steps).

    Noise is drawn chunk by chunk from `generator` with chunk_noise (the order a streaming engine
    should follow to reproduce it).
    """
    b = sampler.cond.image_latent.shape[0]
    c = sampler.cond.image_latent.shape[1]
    dev = sampler.cond.image_latent.device
    cache = sampler.new_cache(b, latent_hw, sink_chunks, window_chunks)
    noise = [chunk_noise(generator, sampler.cfg.num_steps, b, c, sampler.cfg.chunk_frames, latent_hw, dev)
             for _ in range(num_chunks)]
    return self_rollout(sampler, cache, noise).latents


__all__ = ["StudentConfig", "StudentSampler", "Rollout", "self_rollout", "stream_generate", "chunk_noise",
           "stream_prior", "add_skip", "parse_cache_name", "load_dit_folder", "load_student", "export_student",
           "STUDENT_KIND"]
