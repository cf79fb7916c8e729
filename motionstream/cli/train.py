"""`motionstream train STAGE` and `motionstream codec ...`: the training stages' commands.

Each stage module in motionstream/train/ still builds its own sub-parser (`register`); this module
delegates to them. They import torch at import time, so the summary used by `motionstream --help`
names the stages without importing them.
"""

from __future__ import annotations

import argparse
import importlib

# stage modules, in the order their sub-commands are listed; train.vae also registers `codec`
STAGE_MODULES = ("motionstream.train.vae", "motionstream.train.teacher", "motionstream.train.ode",
                 "motionstream.train.dmd", "motionstream.train.gt")
CODEC_HELP = "video codec tools (roundtrip, export weights)"


def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
    for name in STAGE_MODULES:
        importlib.import_module(name).register(commands, train)
    # train/vae.py builds the tiny decoder's parsers but cannot name its handlers (train/tiny_decoder.py
    # imports train/vae.py): they are attached here
    from motionstream.train import tiny_decoder

    train.choices["tiny-decoder"].set_defaults(func=tiny_decoder.cmd_train_tiny_decoder)
    subcommand(commands.choices["codec"], "export-tiny-decoder").set_defaults(func=tiny_decoder.cmd_export_tiny_decoder)


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The sub-parser `name` of a parser built with add_subparsers."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def register_summary(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
    """The `codec` command's name and help line only (`train` itself is built by cli.build_parser)."""
    commands.add_parser("codec", help=CODEC_HELP)
