"""The `motionstream` command: one entry point, one module per command group in this package.

Each module in COMMAND_MODULES exposes `register(commands, train)`, where `commands` is the
top-level sub-parser action and `train` the one under `motionstream train`. Handlers are set with
`parser.set_defaults(func=...)`. cli/ is the only package that imports the library inside functions
(handlers, and `register` where the library holds the defaults): `motionstream --help`, a sub-command's
`--help` and a bad argument answer without loading torch (tests/cli/test_cli_imports.py).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from motionstream.errors import UserError

# module -> the top-level commands it registers. `main` imports only the modules of the command it
# runs. The order matters: cli/generate.py registers `generate` before cli/stream.py extends it.
COMMAND_MODULES = {
    "motionstream.cli.tracks": ("tracks",),
    "motionstream.cli.data": ("data",),
    "motionstream.cli.demo": ("demo",),
    "motionstream.cli.eval": ("eval",),
    "motionstream.cli.train": ("train",),
    "motionstream.cli.codec": ("codec",),
    "motionstream.cli.generate": ("generate",),
    "motionstream.cli.stream": ("generate", "transfer", "camera", "edit"),
    "motionstream.cli.studio": ("studio",),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or (`command` given and known) only what that command needs.

    The whole command line (for `motionstream --help` and an unknown command) takes each module's
    `register_summary` where it has one: the command names and help lines without the options whose
    defaults live in modules that load torch (the training stages)."""
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
        if command in provided:
            importlib.import_module(name).register(commands, train)
        elif command not in known:
            module = importlib.import_module(name)
            getattr(module, "register_summary", module.register)(commands, train)
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
