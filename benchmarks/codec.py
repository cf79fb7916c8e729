"""Codec benchmark: reconstruction quality and decoding speed of the shipped embedded codec.

    .venv/bin/python benchmarks/codec.py [--vae vae-tiny-cpu --tiny tiny-decoder-tiny-cpu --clips 64]

Quality (scoring.metrics PSNR / SSIM on uint8 frames): the [world] held-out test set
(data.splits.held_out_seeds) at the model's native 256x144, and the real clips in ../shared/media
(never trained on), for the full decoder and for the tiny streaming decoder (decoding chunk by chunk
with c3 = 3 latent frames per chunk, as the streaming engine does).
Speed: steady-state ms per output frame of one c3 chunk (12 frames) at 256x144, both decoders
measured in the same run, median of --repeats, torch threads = --threads. The machine's load
average is printed: the 2 cores are shared, so absolute times vary with the other jobs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from motionstream.config import VideoConfig
from motionstream.scoring.metrics import psnr, ssim
from motionstream.models.codec import frames_to_tensor, load_codec, tensor_to_frames

CHUNK_LATENT_FRAMES = 3          # c3: the paper's chunk of 3 latent frames = 12 video frames
VIDEO = VideoConfig()            # the tiny-cpu format (its defaults), the shipped codec's native size
WIDTH, HEIGHT, FPS = VIDEO.width, VIDEO.height, VIDEO.fps
MEDIA = Path(__file__).resolve().parent.parent.parent / "shared" / "media"


def stream_decode(codec, z: torch.Tensor, tiny: bool) -> torch.Tensor:
    dec = codec.stream_decoder(tiny=tiny)
    return torch.cat([dec.decode_chunk(z[:, :, i:i + CHUNK_LATENT_FRAMES])
                      for i in range(0, z.shape[2], CHUNK_LATENT_FRAMES)], 2)


def quality(codec, clips: list[np.ndarray], with_tiny: bool) -> dict[str, float]:
    res: dict[str, list[float]] = {"full_psnr": [], "full_ssim": [], "tiny_psnr": [], "tiny_ssim": []}
    with torch.no_grad():
        for frames in clips:
            z = codec.encode(frames_to_tensor(frames))
            full = tensor_to_frames(codec.decode(z))
            res["full_psnr"].append(psnr(full, frames))
            res["full_ssim"].append(ssim(full, frames))
            if with_tiny:
                tiny = tensor_to_frames(stream_decode(codec, z, tiny=True))
                res["tiny_psnr"].append(psnr(tiny, frames))
                res["tiny_ssim"].append(ssim(tiny, frames))
    return {k: float(np.mean(v)) for k, v in res.items() if v}


def speed(codec, tiny: bool, repeats: int, channels_last: bool = False) -> float:
    """Median ms per output frame of a steady-state c3 chunk at 256x144."""
    z = torch.randn(1, codec.latent_channels, 1 + 2 * CHUNK_LATENT_FRAMES, HEIGHT // 8, WIDTH // 8)
    if channels_last and codec.tiny_decoder is not None:
        codec.tiny_decoder.to(memory_format=torch.channels_last)
    times = []
    with torch.no_grad():
        dec = codec.stream_decoder(tiny=tiny)
        dec.decode_chunk(z[:, :, :1])                          # stream start (frame 0)
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = dec.decode_chunk(z[:, :, 1:1 + CHUNK_LATENT_FRAMES])
            times.append((time.perf_counter() - t0) * 1000 / out.shape[2])
    if channels_last and codec.tiny_decoder is not None:
        codec.tiny_decoder.to(memory_format=torch.contiguous_format)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", default="vae-tiny-cpu")
    ap.add_argument("--tiny", default="tiny-decoder-tiny-cpu", help="tiny decoder folder ('' to skip)")
    ap.add_argument("--clips", type=int, default=64, help="held-out test clips (max 64)")
    ap.add_argument("--frames", type=int, default=33, help="frames per clip (1 + 4n)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from motionstream.data.splits import held_out_seeds
    from motionstream.data.synth import render_clip
    from motionstream.video import read_video

    codec = load_codec(args.vae, args.tiny or None)
    with_tiny = codec.tiny_decoder is not None
    print(f"codec: vae={args.vae} tiny={args.tiny or '-'}  threads={args.threads}  load average {os.getloadavg()}")

    seeds = held_out_seeds()[:args.clips]
    world = [render_clip(s, num_frames=args.frames, width=WIDTH, height=HEIGHT, fps=FPS).frames for s in seeds]
    q = quality(codec, world, with_tiny)
    print(f"[world] held-out test ({len(seeds)} clips x {args.frames} frames, {WIDTH}x{HEIGHT}): "
          + "  ".join(f"{k} {v:.4f}" if "ssim" in k else f"{k} {v:.2f} dB" for k, v in q.items()))

    for path in sorted(MEDIA.glob("*.mp4")) if MEDIA.is_dir() else []:
        frames, _ = read_video(path, fps=FPS, size=(WIDTH, HEIGHT), max_frames=args.frames)
        frames = frames[:1 + (len(frames) - 1) // 4 * 4]
        q = quality(codec, [frames], with_tiny)
        print(f"real {path.name} ({len(frames)} frames, {WIDTH}x{HEIGHT}): "
              + "  ".join(f"{k} {v:.4f}" if "ssim" in k else f"{k} {v:.2f} dB" for k, v in q.items()))

    full_ms = speed(codec, tiny=False, repeats=args.repeats)
    line = f"decode speed (c3 chunk, 256x144, steady state): full {full_ms:.1f} ms/frame"
    if with_tiny:
        tiny_ms = speed(codec, tiny=True, repeats=args.repeats)
        tiny_cl = speed(codec, tiny=True, repeats=args.repeats, channels_last=True)
        best = min(tiny_ms, tiny_cl)
        line += (f"; tiny {tiny_ms:.1f} ms/frame (channels_last {tiny_cl:.1f}); "
                 f"tiny is {full_ms / best:.1f}x faster")
    print(line + f"  [load average after: {os.getloadavg()[0]:.1f}]")


if __name__ == "__main__":
    main()
