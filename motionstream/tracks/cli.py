"""`motionstream tracks ...` sub-commands."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
    tracks = commands.add_parser("tracks", help="extract, show, convert and synthesise motion tracks",
                                 description="Everything about motion tracks (TrackSet files: .npz canonical, .json keyframes).")
    tracks.add_subparsers(dest="tracks_command", metavar="SUBCOMMAND", required=True)
