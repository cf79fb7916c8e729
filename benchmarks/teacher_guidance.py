"""Guidance trade-off of the teacher (paper Fig. 4): EPE / PSNR / text adherence for (w_t, w_m) pairs.

    .venv/bin/python benchmarks/teacher_guidance.py [--model weights/teacher-tiny-cpu] [--clips 4]
        [--steps 20] [--frames 17] [--pairs 0,0 3,0 0,1.5 3,1.5] [--network-times 0,1 0.4,1 0,0.4 off]

Held-out [world] test clips (data.splits "test"), the same noise for every pair, the track-following
evaluator of train/teacher.py (scoring.track_following): EPE re-tracked from the input query points,
its ratio to the frozen-first-frame baseline, PSNR (whole frame and moving regions) and text-effect
adherence. Prints one row per pair plus the baselines, then the held-out flow-matching loss of the
network against the prior skip alone (TeacherEval.heldout_loss); timings depend on other load on the machine.

--network-times LO,HI: repeat every pair with the network's output kept only at flow times in [LO, HI]
(0 elsewhere, so the velocity is the prior skip alone there; `off` = never): where along the sampler the
trained network helps and where it hurts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from motionstream.config import load_config, section


class NetworkWindow(torch.nn.Module):
    """The teacher's network with its output zeroed outside flow times [lo, hi] (per frame)."""

    def __init__(self, model: torch.nn.Module, lo: float, hi: float):
        super().__init__()
        self.model, self.lo, self.hi = model, lo, hi

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        out = self.model(z_t, t, *args, **kwargs)
        keep = ((t >= self.lo) & (t <= self.hi)).to(out.dtype)           # [B, F]
        return out * keep[:, None, :, None, None]


def parse_window(text: str) -> tuple[float, float]:
    if text == "off":
        return 2.0, 2.0  # no flow time lies in [2, 2]
    lo, hi = (float(v) for v in text.split(","))
    return lo, hi


def main() -> None:
    from motionstream.data.splits import split_seeds
    from motionstream.diffusion.sampling import load_teacher
    from motionstream.models.codec import load_codec
    from motionstream.models.text import load_text_encoder
    from motionstream.train.teacher import TeacherEval, TeacherTrainConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="teacher-tiny-cpu")
    ap.add_argument("--config", default="configs/tiny-cpu.yaml")
    ap.add_argument("--vae", default="vae-tiny-cpu")
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--frames", type=int, default=17, help="video frames (1 + 4n)")
    ap.add_argument("--pairs", nargs="+", default=["0,0", "3,0", "0,1.5", "3,1.5"])
    ap.add_argument("--network-times", nargs="+", default=["0,1"], metavar="LO,HI",
                    help="keep the network's output only at these flow times (`off`: never); default 0,1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    tcfg = section(cfg, "train_teacher", TeacherTrainConfig)
    model, param, dcfg, meta = load_teacher(args.model)
    codec = load_codec(args.vae, tiny_decoder=None)
    text_encoder = load_text_encoder(cfg)
    t0 = time.time()
    ev = TeacherEval(cfg, tcfg, dcfg, model.cfg, codec, text_encoder, 1 + (args.frames - 1) // 4,
                     log=print, seeds=split_seeds("test", args.clips))
    print(f"teacher {args.model} (step {meta.get('step')}), {args.clips} test clips x {args.frames} frames, "
          f"{args.steps} Euler steps; setup {time.time() - t0:.0f}s")
    rows = []
    header = f"{'w_t':>5} {'w_m':>5} {'net t':>9} {'EPE':>7} {'ratio':>6} {'PSNR':>6} {'regPSNR':>7} {'text':>5} {'s':>6}"
    print(header)
    first = None
    for pair, window in itertools.product(args.pairs, args.network_times):
        wt, wm = (float(v) for v in pair.split(","))
        lo, hi = parse_window(window)
        net = model if (lo, hi) == (0.0, 1.0) else NetworkWindow(model, lo, hi)
        rep, _ = ev(net, param, text_scale=wt, motion_scale=wm, steps=args.steps)
        rep["network_times"] = window
        first = first or rep
        rows.append(rep)
        print(f"{wt:5.1f} {wm:5.1f} {window:>9} {rep['epe']:7.2f} {rep['epe_ratio']:6.2f} {rep['psnr']:6.2f} "
              f"{rep['region_psnr']:7.2f} {rep['text_adherence']:5.2f} {rep['eval_s']:6.0f}")
    for name, suffix in (("frozen first frame", "first_frame_baseline"), ("forward warp", "forward_warp_baseline"),
                         ("prior paste", "prior_paste"), ("VAE round trip", "vae_recon")):
        g = {k: first.get(f"{k}_{suffix}", float("nan")) for k in ("epe", "psnr", "region_psnr")}
        print(f"{name:>18}: EPE {g['epe']:.2f}  PSNR {g['psnr']:.2f}  regPSNR {g['region_psnr']:.2f}")
    print(f"tracker floor {first['tracker_floor']:.2f} px (reliable points {first['tracker_floor_reliable']:.2f})")
    loss, prior_only = ev.heldout_loss(model, param), ev.heldout_loss(None, param)
    print("held-out loss  " + "  ".join(f"{k[len('val_loss_'):] if k != 'val_loss' else 'mean'} {v:.3f} "
                                        f"(prior alone {prior_only[k]:.3f})" for k, v in loss.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=float)


if __name__ == "__main__":
    main()
