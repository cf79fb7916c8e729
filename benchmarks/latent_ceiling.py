"""How well the best latent for our VAE decoder tracks: decoder inversion on held-out clips.

    .venv/bin/python benchmarks/latent_ceiling.py [--vae vae-tiny-cpu] [--clips 8] [--frames 33]
        [--iters 0 10 40] [--lr 0.05]          (defaults: ~15 min on 2 cores)

A latent video model is scored on what the decoder makes of its latents. The VAE round trip (decode the
encoder's latents of the ground truth) is one such latent; it is not the best one, because the encoder
is not the decoder's exact inverse. This script searches for the best: starting from the encoder's
latents, Adam on the pixel MSE between the decoded clip and the ground truth (gradients through the full
decoder). The decoded result of each iteration count is scored by the same track-following evaluator and
held-out [world] test clips as the teacher's in-training report and benchmarks/teacher_guidance.py: EPE
re-tracked from the ground-truth query points, its ratio to the frozen first frame, PSNR, and the
tracker's error on the ground truth itself (its floor). A latent model whose decoded samples are close copies
of the ground truth should not be expected to beat the inverted row on EPE (the search minimises MSE, not
EPE, so this is a measured ceiling, not a proof); the [teacher] issue's 0.35x target is checked against it.

Two reference rows degrade the ground truth itself at about a decoder's PSNR: a blur (an error tied to the
content) and independent per-frame noise (an error drawn afresh every frame). The `flicker` column is the
rms of the error's frame-to-frame change over the rms of the error: sqrt(2) = 1.41 for per-frame noise,
lower for an error that changes slowly from frame to frame (moving content raises it even for a blur).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch

from motionstream.config import load_config, section, video_config


def invert_decoder(codec, latents: torch.Tensor, target: torch.Tensor, iters: int, lr: float) -> torch.Tensor:
    """Normalised latents [1, C, F, h, w] minimising MSE(decode(z), target [1, 3, T, H, W] in [-1, 1]),
    started from `latents`; `iters` Adam steps (0: `latents` unchanged)."""
    z = latents.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(iters):
        opt.zero_grad(set_to_none=True)
        # codec.decode is inference-only (no_grad); the VAE's own decode keeps the graph
        video = codec.vae.decode(codec.denormalize(z))
        loss = torch.nn.functional.mse_loss(video, target)
        loss.backward()
        opt.step()
    return z.detach()


REFERENCE_BLUR_SIGMA_PX = 1.2     # Gaussian blur of the ground truth: ~34 dB, an error tied to the content
REFERENCE_NOISE_STD = 8.0         # iid per-frame noise (uint8 levels): ~30 dB, an error redrawn every frame


def flicker(video: np.ndarray, target: np.ndarray) -> float:
    """rms of the error's frame-to-frame change over rms of the error, for uint8 videos [T, H, W, 3]:
    0 when the error is the same in every frame, sqrt(2) when it is independent from frame to frame."""
    err = video.astype(np.float64) - target.astype(np.float64)
    return float(np.sqrt((np.diff(err, axis=0) ** 2).mean() / max((err ** 2).mean(), 1e-12)))


def reference_degradations(seed: int = 0) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """name -> degrade(frames uint8 [T, H, W, 3]) for the two reference rows."""
    import cv2

    rng = np.random.default_rng(seed)
    return {
        f"ground truth, blur sigma {REFERENCE_BLUR_SIGMA_PX:g} px":
            lambda f: np.stack([cv2.GaussianBlur(x, (0, 0), REFERENCE_BLUR_SIGMA_PX) for x in f]),
        f"ground truth + per-frame noise std {REFERENCE_NOISE_STD:g}":
            lambda f: np.clip(f + rng.normal(0, REFERENCE_NOISE_STD, f.shape), 0, 255).round().astype(np.uint8),
    }


def main() -> None:
    from motionstream.data.splits import split_seeds
    from motionstream.data.synth import render_clip
    from motionstream.scoring.track_following import TrackFollowingEval
    from motionstream.models.codec import frames_to_tensor, load_codec, tensor_to_frames
    from motionstream.train.teacher import TeacherTrainConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vae", default="vae-tiny-cpu")
    ap.add_argument("--config", default="configs/tiny-cpu.yaml")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=33, help="video frames (1 + 4n)")
    ap.add_argument("--iters", type=int, nargs="+", default=[0, 10, 40],
                    help="Adam steps per clip to report (0 = the plain round trip); each row continues the previous")
    ap.add_argument("--lr", type=float, default=0.05, help="Adam learning rate on the normalised latents")
    ap.add_argument("--no-references", action="store_true", help="skip the blurred / noisy ground-truth rows")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if (args.frames - 1) % 4:
        ap.error(f"--frames must be 1 + 4n, got {args.frames}")
    if sorted(args.iters) != args.iters or args.iters[0] < 0:
        ap.error("--iters must be non-negative and increasing")
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    video = video_config(cfg)
    tcfg = section(cfg, "train_teacher", TeacherTrainConfig)
    codec = load_codec(args.vae, tiny_decoder=None)
    for p in codec.parameters():
        p.requires_grad_(False)
    clips = [render_clip(s, num_frames=args.frames, width=video.width, height=video.height, fps=video.fps)
             for s in split_seeds("test", args.clips)]
    evaluator = TrackFollowingEval(clips, max_points=tcfg.eval_max_points)
    targets = [frames_to_tensor(c.frames) for c in clips]
    latents = [codec.encode(x) for x in targets]
    print(f"{args.clips} test clips x {args.frames} frames, decoder {args.vae}, Adam lr {args.lr}")
    header = f"{'':44s} {'EPE':>6} {'ratio':>6} {'PSNR':>6} {'regPSNR':>7} {'flicker':>7}"

    def row(name: str, videos: dict[int, np.ndarray], extra: str = "") -> dict:
        report = evaluator(lambda clip: videos[id(clip)])
        flick = np.mean([flicker(videos[id(c)], c.frames) for c in clips])
        print(f"{name:44s} {report['epe']:6.2f} {report['epe_ratio']:6.2f} {report['psnr']:6.2f} "
              f"{report['region_psnr']:7.2f} {flick:7.2f}{extra}", flush=True)
        return report

    print(header)
    done = 0
    report = None
    for iters in args.iters:
        t0 = time.time()
        latents = [invert_decoder(codec, z, x, iters - done, args.lr) for z, x in zip(latents, targets)]
        done = iters
        secs = (time.time() - t0) / len(clips)
        name = "round trip" if iters == 0 else f"decoder inverted, {iters} Adam steps"
        report = row(name, {id(c): tensor_to_frames(codec.decode(z)) for c, z in zip(clips, latents)},
                     f"   ({secs:.1f} s/clip)" if iters else "")
    if not args.no_references:
        for name, degrade in reference_degradations().items():
            row(name, {id(c): degrade(c.frames) for c in clips})
    print(f"frozen first frame: EPE {report['epe_first_frame_baseline']:.2f}  PSNR {report['psnr_first_frame_baseline']:.2f}"
          f"   tracker floor (ground truth itself): {report['tracker_floor']:.2f} px "
          f"= {report['tracker_floor'] / report['epe_first_frame_baseline']:.2f}x")


if __name__ == "__main__":
    main()
