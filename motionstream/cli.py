"""The `motionstream` command: one entry point, sub-commands registered by each subsystem.

Each module in COMMAND_MODULES exposes `register(commands, train)`, where `commands` is the
top-level sub-parser action and `train` the one under `motionstream train`. Handlers are set with
`parser.set_defaults(func=...)` and import heavy dependencies (torch, cv2) inside the handler so
that `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "motionstream.tracks.cli",
    "motionstream.data.cli",
    "motionstream.demo",
    "motionstream.eval.cli",
    "motionstream.train.vae",
    "motionstream.train.teacher",
    "motionstream.train.ode",
    "motionstream.train.dmd",
    "motionstream.generate",
    "motionstream.stream.cli",
    "motionstream.app.server",
]


class UserError(Exception):
    """An error caused by the user's input: printed as one line, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="motionstream",
        description="Real-time, motion-controlled video generation (MotionStream). "
        "Image + prompt + motion tracks in, a video stream out.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train = commands.add_parser(
        "train", help="train a model stage (vae, tiny-decoder, teacher, ode, dmd)",
        description="Train one stage of the pipeline. Every stage is resumable: re-running the same "
        "command continues from the last checkpoint in its run folder.",
    ).add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands, train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        # one line whatever the message holds (a decoder's multi-line text, a file name with a newline)
        print(f"motionstream: error: {' '.join(str(err).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("motionstream: interrupted", file=sys.stderr)
        return 130
