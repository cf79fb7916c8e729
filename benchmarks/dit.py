"""DiT speed on this CPU: the causal student streaming chunks at tiny-cpu size (256x144, c3s1w1).

Prints
  * ms per denoising pass of one chunk with a full cache (432 queries, 1296 keys for c3s1w1),
  * ms per chunk (K denoising passes + 1 cache-writing pass) at chunk 10 and at chunk N, and their
    ratio, measured in one run (constant cost per chunk is the point of the rolling cache),
  * achieved GFLOP/s of a pass against an fp32 matmul peak measured in the same run,
  * the load average: the machine is shared, so every figure depends on what else runs.

Between the measured chunks only the cache-writing pass runs by default (`--fast-forward`): the
cache then goes through exactly the same writes and rolls as in a full stream, at a quarter of the
cost. `--no-fast-forward` runs every denoising pass too.

    .venv/bin/python benchmarks/dit.py [--config tiny-cpu] [--chunks 1000] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# Under load from other jobs, OpenMP threads that spin-wait for each other are 2-3x slower than
# threads that sleep (measured: 0.35 s vs 0.95 s per pass, load average 11 on 2 cores). Must be set
# before torch starts its thread pool; pass OMP_WAIT_POLICY=ACTIVE to compare.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from motionstream.diffusion.student import parse_cache_name  # noqa: E402
from motionstream.stream.perf import matmul_peak_gflops  # noqa: E402

MIN_CHUNKS = 17                # chunks 8..12 timed early, the last 5 late: the windows must not overlap
VAE_SPATIAL_STRIDE = 8        # 256x144 video -> 32x18 latents (embedded VAE and Wan 2.1 VAE)


def pass_flops(model, run_pass, queries: int, keys: int, text_len: int) -> float:
    """FLOPs of one pass: linears / convs counted by torch, attention (not counted on CPU) added here."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run_pass()
    cfg = model.cfg
    attention = cfg.num_layers * 4 * cfg.dim * queries * (keys + text_len)   # QK^T and AV, self + cross
    return counter.get_total_flops() + attention


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny-cpu")
    parser.add_argument("--cache", default="c3s1w1", help="cXsYwZ: chunk frames, sink chunks, window chunks")
    parser.add_argument("--chunks", type=int, default=1000,
                        help=f"chunks to stream (>= {MIN_CHUNKS}: chunk 10 and the last ones are timed)")
    parser.add_argument("--steps", type=int, default=3, help="denoising passes per chunk")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fast-forward", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    try:
        parse_cache_name(args.cache)
    except ValueError as err:
        parser.error(str(err))
    if args.chunks < MIN_CHUNKS:
        parser.error(f"--chunks must be >= {MIN_CHUNKS} (chunks 8-12 are the early timing window)")
    return args


def main() -> None:
    args = parse_args()
    from tqdm import tqdm

    from motionstream.config import load_config, section, video_config
    from motionstream.models.dit import DiTConfig, MotionCondition, WanDiT
    from motionstream.models.text import TextConfig

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    dit_cfg = section(cfg, "dit", DiTConfig)
    text_cfg = section(cfg, "text", TextConfig)
    video = video_config(cfg)
    hw = (video.height // VAE_SPATIAL_STRIDE, video.width // VAE_SPATIAL_STRIDE)
    c, s, w = parse_cache_name(args.cache)
    torch.manual_seed(0)
    model = WanDiT(dit_cfg).eval()
    tf = dit_cfg.temporal_factor
    cond = MotionCondition(
        image_latent=torch.randn(1, dit_cfg.latent_channels, c, *hw), image_mask=torch.zeros(1, dit_cfg.image_mask_channels, c, *hw),
        track_map=torch.randn(1, dit_cfg.track_dim, tf * c, *hw), guide=torch.randn(1, dit_cfg.latent_channels, c, *hw),
        guide_mask=torch.ones(1, 1, c, *hw), temporal_factor=tf)
    context = torch.randn(1, text_cfg.max_length, dit_cfg.text_dim)
    x = torch.randn(1, dit_cfg.latent_channels, c, *hw)
    t_noisy, t_clean = torch.full((1, c), 0.7), torch.zeros(1, c)
    cache = model.new_cache(1, hw, c, s, w)
    tokens = c * model.tokens_per_frame(hw)

    def denoise() -> None:
        model.forward_chunk(x, t_noisy, context, None, cond, cache, False)

    def chunk(full: bool) -> float:
        t = time.perf_counter()
        if full:
            for _ in range(args.steps):
                denoise()
        model.forward_chunk(x, t_clean, context, None, cond, cache, True)
        return time.perf_counter() - t

    early = range(8, 13)                                  # chunks 8..12 around chunk 10
    late = range(args.chunks - 4, args.chunks + 1)
    times: dict[int, float] = {}
    pass_ms: list[float] = []
    with torch.inference_mode():
        for i in tqdm(range(1, args.chunks + 1), desc=f"{args.config} {args.cache}", unit="chunk"):
            if i in early and i == early[0]:
                for _ in range(5):                        # cache is full from chunk S + W + 1 on
                    t = time.perf_counter()
                    denoise()
                    pass_ms.append((time.perf_counter() - t) * 1e3)
            measured = i in early or i in late
            dt = chunk(full=measured or not args.fast_forward)
            if measured:
                times[i] = dt
        flops = pass_flops(model, denoise, tokens, tokens * (cache.current_slot + 1), text_cfg.max_length)
    peak = matmul_peak_gflops(threads=args.threads)
    t_pass = statistics.median(pass_ms) / 1e3
    t10 = statistics.median(times[i] for i in early)
    tn = statistics.median(times[i] for i in late)
    params = sum(p.numel() for p in model.parameters())
    load = os.getloadavg()
    print(f"config {args.config} ({params / 1e6:.2f} M params), {video.width}x{video.height} -> latents "
          f"{hw[1]}x{hw[0]}, {args.cache}: {tokens} queries, {tokens * (cache.current_slot + 1)} keys, "
          f"text {text_cfg.max_length} tokens, fp32, {args.threads} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    print(f"denoising pass (full cache): {t_pass * 1e3:.1f} ms  (median of {len(pass_ms)})")
    print(f"chunk ({args.steps} denoising + 1 write pass): chunk 10 {t10 * 1e3:.1f} ms, chunk {args.chunks} "
          f"{tn * 1e3:.1f} ms, ratio {tn / t10:.3f}  (medians of 5 chunks)")
    print(f"compute: {flops / 1e9:.2f} GFLOP per pass -> {flops / t_pass / 1e9:.1f} GFLOP/s achieved; "
          f"fp32 matmul peak {peak:.1f} GFLOP/s ({100 * flops / t_pass / 1e9 / peak:.0f}% of peak)")
    print(f"cache positions stayed <= {(s + w) * c} frames; load average {load[0]:.2f} {load[1]:.2f} "
          f"on {os.cpu_count()} cores (other jobs share the machine)")


if __name__ == "__main__":
    main()
