"""`codec`: the full causal VAE decoder vs the tiny streaming decoder (Tables A1/A2 in miniature).

Each clip is encoded once (latent means), then decoded (a) by the full VAE decoder in one call and
(b) by the tiny decoder chunk by chunk, the way the streaming engine uses it. Both are compared
with the input frames (PSNR / SSIM), and the tiny output also with the full decoder's output
(how faithfully the distilled decoder reproduces its teacher). Timings are wall-clock ms per output
frame on this machine's CPU threads, median over clips.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

from motionstream.config import REPO_ROOT, video_config
from motionstream.eval.benchmarks import BenchmarkContext, NotAvailable, Table, benchmark, require_module
from motionstream.eval.clips import media_segments
from motionstream.models.codec import frames_to_tensor, tensor_to_frames
from motionstream.scoring import metrics

VAE_WEIGHTS = "vae-tiny-cpu"
TINY_WEIGHTS = "tiny-decoder-tiny-cpu"


@dataclass
class CodecBenchConfig:
    chunk_latents: int = 3        # latent frames per streamed chunk (the paper's chunk size, c3)


CFG = CodecBenchConfig()


def _params(module) -> int:
    return int(sum(p.numel() for p in module.parameters())) if module is not None else 0


def codec_clips(ctx: BenchmarkContext) -> dict[str, list[tuple[str, np.ndarray]]]:
    """{source: [(name, frames uint8 [T,H,W,3])]}: [world] test clips and real media segments."""

    sources: dict[str, list[tuple[str, np.ndarray]]] = {}
    try:
        sources["world test"] = [(c.name, c.frames) for c in ctx.world_clips()]
    except NotAvailable as err:
        ctx.note(f"world test set not available: {err}")
    media_dir = (REPO_ROOT / ctx.eval_cfg.media_dir).resolve()
    if media_dir.is_dir():
        vcfg = video_config(ctx.cfg)
        sources["real media"] = media_segments(ctx.num_clips, media_dir, ctx.eval_cfg.num_frames, vcfg.fps, vcfg.size)
    if not sources:
        raise NotAvailable("no clips: neither the [world] renderer nor the sample media are present")
    return sources


def measure_clip(codec, frames: np.ndarray) -> dict[str, Any]:
    """Encode + both decodes of one clip, with timings (s) and the decoded frames."""

    x = frames_to_tensor(frames)
    with torch.no_grad():
        t0 = time.perf_counter()
        z = codec.encode(x)
        t1 = time.perf_counter()
        full = tensor_to_frames(codec.decode(z))
        t2 = time.perf_counter()
        dec = codec.stream_decoder(tiny=True)
        tiny = np.concatenate([tensor_to_frames(dec.decode_chunk(z[:, :, i:i + CFG.chunk_latents]))
                               for i in range(0, z.shape[2], CFG.chunk_latents)])
        t3 = time.perf_counter()
    return {"encode_s": t1 - t0, "full_s": t2 - t1, "tiny_s": t3 - t2, "full": full, "tiny": tiny}


@benchmark("codec", "Codec: full VAE decoder vs tiny streaming decoder (Tables A1/A2)",
           needs_weights=(VAE_WEIGHTS, TINY_WEIGHTS))
def run_codec(ctx: BenchmarkContext) -> None:
    """Reconstruction quality and speed of the embedded VAE's full decoder and the tiny decoder."""

    matplotlib.use("Agg")

    codec_mod = require_module("motionstream.models.codec", "video codec")
    codec = codec_mod.load_codec(vae=VAE_WEIGHTS, tiny_decoder=TINY_WEIGHTS)
    sources = codec_clips(ctx)
    per_clip, rows = [], []
    for source, clips in sources.items():
        for name, frames in ctx.progress(clips, f"codec on {source}"):
            m = measure_clip(codec, frames)
            n = len(frames)
            per_clip.append({
                "source": source, "clip": name, "frames": n,
                "encode_ms_per_frame": 1e3 * m["encode_s"] / n,
                "full_ms_per_frame": 1e3 * m["full_s"] / n, "tiny_ms_per_frame": 1e3 * m["tiny_s"] / n,
                "full_psnr": metrics.psnr(m["full"], frames), "full_ssim": metrics.ssim(m["full"], frames),
                "tiny_psnr": metrics.psnr(m["tiny"], frames), "tiny_ssim": metrics.ssim(m["tiny"], frames),
                "tiny_vs_full_psnr": metrics.psnr(m["tiny"], m["full"]),
            })
            if len(per_clip) == 1:
                example = (name, frames, m["full"], m["tiny"])

    def agg(source: str | None, key: str, fn=np.mean) -> float:
        vals = [r[key] for r in per_clip if source is None or r["source"] == source]
        return float(fn(np.minimum(vals, metrics.PSNR_CAP_DB))) if vals else float("nan")

    enc_params = _params(codec.vae.encoder)
    for label, prefix, params in (("full VAE decoder", "full", _params(codec.vae.decoder)),
                                  (f"tiny decoder (streamed, {CFG.chunk_latents}-latent chunks)", "tiny",
                                   _params(codec.tiny_decoder))):
        row = [label, params / 1e6, agg(None, f"{prefix}_ms_per_frame", np.median)]
        for source in sources:
            row += [agg(source, f"{prefix}_psnr"), agg(source, f"{prefix}_ssim")]
        rows.append(row)
    columns = ["decoder", "params (M)", "ms / frame"]
    for source in sources:
        columns += [f"PSNR {source}", f"SSIM {source}"]
    ctx.add_table(Table("Decoders (same latents from the VAE encoder)", columns, rows,
                        note=f"Encoder: {enc_params / 1e6:.2f} M params, "
                             f"{agg(None, 'encode_ms_per_frame', np.median):.1f} ms / frame. "
                             f"Tiny vs full decoder output: {agg(None, 'tiny_vs_full_psnr'):.2f} dB PSNR. "
                             f"Timings: median over clips, {ctx.num_clips} clips per source."))
    speedup = agg(None, "full_ms_per_frame", np.median) / agg(None, "tiny_ms_per_frame", np.median)
    ctx.summary.update({"full PSNR": agg(None, "full_psnr"), "tiny PSNR": agg(None, "tiny_psnr"),
                        "tiny decode speed-up": speedup,
                        "tiny ms/frame": agg(None, "tiny_ms_per_frame", np.median)})
    ctx.raw["per_clip"] = per_clip

    name, frames, full, tiny = example
    picks = np.linspace(0, len(frames) - 1, 4).astype(int)
    fig, axes = plt.subplots(3, len(picks), figsize=(3 * len(picks), 5.2))
    for j, t in enumerate(picks):
        for i, (video, label) in enumerate(((frames, "input"), (full, "full VAE"), (tiny, "tiny decoder"))):
            axes[i, j].imshow(video[t])
            axes[i, j].set_axis_off()
            axes[i, j].set_title(f"{label}, frame {t}", fontsize=8)
    fig.suptitle(f"Reconstructions: {name}", y=1.03)
    ctx.add_plot(fig, "frames")
    fig, ax = plt.subplots(figsize=(6, 3))
    for prefix, label in (("full", "full VAE"), ("tiny", "tiny decoder")):
        ax.plot([r[f"{prefix}_psnr"] for r in per_clip], "o-", label=label)
    ax.set_xticks(range(len(per_clip)), [r["clip"] for r in per_clip], rotation=30, fontsize=7, ha="right")
    ax.set_ylabel("PSNR (dB)")
    ax.legend(fontsize=8)
    ctx.add_plot(fig, "psnr")
