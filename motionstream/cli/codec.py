"""`motionstream codec`: encode/decode videos with the codec (roundtrip) and ship trained codec weights."""

from __future__ import annotations

import argparse


def cmd_export_vae(args) -> int:
    import torch

    from motionstream.train.vae import export_vae

    torch.set_num_threads(args.threads)
    out = export_vae(args.run, args.output, args.stats_clips, args.stats_from)
    print(f"wrote {out}")
    return 0


def cmd_export_tiny_decoder(args) -> int:
    from motionstream.train.tiny_decoder import export_tiny_decoder

    print(f"wrote {export_tiny_decoder(args.run, args.output)}")
    return 0


def cmd_roundtrip(args) -> int:
    import numpy as np
    import torch

    from motionstream.errors import UserError
    from motionstream.models.checkpoints import WeightsNotFound
    from motionstream.models.codec import frames_to_tensor, load_codec, tensor_to_frames
    from motionstream.train.losses_codec import psnr, ssim
    from motionstream.video import VideoError, check_output, probe_video, read_video, write_video

    torch.set_num_threads(args.threads)
    try:   # the input and the output path are checked before the codec loads
        check_output(args.output, what="--output")
        probe_video(args.video)
    except VideoError as err:
        raise UserError(str(err)) from err
    try:
        codec = load_codec(args.vae, args.tiny_decoder if args.tiny else None)
    except WeightsNotFound as err:
        raise UserError(str(err)) from err
    try:
        frames, fps = read_video(args.video, fps=args.fps, size=(args.width, args.height), max_frames=args.max_frames)
    except VideoError as err:
        raise UserError(str(err)) from err
    t = 1 + (len(frames) - 1) // codec.temporal_stride * codec.temporal_stride
    x = frames_to_tensor(frames[:t])
    with torch.no_grad():
        z = codec.encode(x)
        if args.tiny:
            dec = codec.stream_decoder(tiny=True)
            y = dec.decode_chunk(z)
        else:
            y = codec.decode(z)
    p, s = float(psnr(y, x)), float(ssim(y, x))
    side = np.concatenate([frames[:t], tensor_to_frames(y)], axis=2)
    write_video(args.output, side, fps)
    print(f"{args.video}: {t} frames {args.width}x{args.height}, {'tiny' if args.tiny else 'full'} decoder: "
          f"PSNR {p:.2f} dB, SSIM {s:.4f}; wrote {args.output} (original | reconstruction)")
    return 0




def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
    codec = commands.add_parser("codec", help="video codec tools (roundtrip, export weights)",
                                description="Encode/decode videos with the codec and export trained weights.")
    sub = codec.add_subparsers(dest="codec_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("roundtrip", help="encode + decode a video, write original|reconstruction, print PSNR/SSIM")
    p.add_argument("video")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--tiny", action="store_true", help="decode with the tiny streaming decoder")
    p.add_argument("--vae", default="vae-tiny-cpu")
    p.add_argument("--tiny-decoder", default="tiny-decoder-tiny-cpu")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=144)
    p.add_argument("--fps", type=float, default=16.0)
    p.add_argument("--max-frames", type=int, default=33)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_roundtrip)

    p = sub.add_parser("export-vae", help="ship a VAE run's EMA weights + latent statistics as a model folder")
    p.add_argument("--run", default="runs/vae")
    p.add_argument("-o", "--output", default="weights/vae-tiny-cpu")
    p.add_argument("--stats-clips", type=int, default=200, help="train clips for the per-channel latent mean/std")
    p.add_argument("--stats-from", default=None, help="copy latent stats from this shipped folder (decoder fine-tuning)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_export_vae)

    p = sub.add_parser("export-tiny-decoder", help="ship a tiny-decoder run's EMA weights as a model folder")
    p.add_argument("--run", default="runs/tiny-decoder")
    p.add_argument("-o", "--output", default="weights/tiny-decoder-tiny-cpu")
    p.set_defaults(func=cmd_export_tiny_decoder)
