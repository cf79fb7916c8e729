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

# module -> the top-level commands it registers. `main` imports only the modules of the command it
# runs: the training modules import torch at import time (~2 s on a loaded machine), which a bad
# input to `generate` or `tracks` must not wait for. The order matters: generate.py registers
# `generate` before stream/cli.py extends it.
COMMAND_MODULES = {
    "motionstream.tracks.cli": ("tracks",),
    "motionstream.data.cli": ("data",),
    "motionstream.demo": ("demo",),
    "motionstream.eval.cli": ("eval",),
    "motionstream.train.vae": ("train", "codec"),
    "motionstream.train.teacher": ("train",),
    "motionstream.train.ode": ("train",),
    "motionstream.train.dmd": ("train",),
    "motionstream.train.gt": ("train",),
    "motionstream.generate": ("generate",),
    "motionstream.stream.cli": ("generate", "transfer", "camera", "edit"),
    "motionstream.app.server": ("studio",),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or (`command` given and known) only what that command needs."""
    parser = argparse.ArgumentParser(
        prog="motionstream",
        description="Real-time, motion-controlled video generation (MotionStream). "
        "Image + prompt + motion tracks in, a video stream out.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train = commands.add_parser(
        "train", help="train a model stage (vae, tiny-decoder, teacher, ode, dmd, gt)",
        description="Train one stage of the pipeline. Every stage is resumable: re-running the same "
        "command continues from the last checkpoint in its run folder.",
    ).add_subparsers(dest="stage", metavar="STAGE", required=True)
    known = {c for provided in COMMAND_MODULES.values() for c in provided}
    for name, provided in COMMAND_MODULES.items():
        if command not in known or command in provided:
            importlib.import_module(name).register(commands, train)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # the top level has no options besides -h: its first word is the command
    args = build_parser(next((a for a in argv if not a.startswith("-")), None)).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        # one line whatever the message holds (a decoder's multi-line text, a file name with a newline)
        print(f"motionstream: error: {' '.join(str(err).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("motionstream: interrupted", file=sys.stderr)
        return 130
