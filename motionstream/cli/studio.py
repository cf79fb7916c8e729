"""`motionstream studio`: serve the interactive web studio (motionstream.app.server) on a model stack.

The handlers check the host, the token and the preset before the model stack loads; the library is
imported on use so that `motionstream --help` does not load torch.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from motionstream.app.config import LOOPBACK_HOSTS, TOKEN_ENV, TOKEN_SHOWN_CHARS, WILDCARD_HOSTS, StudioConfig
from motionstream.errors import UserError


def check_host(host: str, token: str | None) -> None:
    """Non-loopback hosts need a token (anyone on the network could otherwise drive the server)."""
    if host not in LOOPBACK_HOSTS and not token:
        raise UserError(f"--host {host} exposes the studio beyond this machine: set a token as well "
                        f"({TOKEN_ENV}=SECRET, --token-file FILE or --token SECRET; clients then add "
                        "?token=SECRET to the page URL)")


def resolve_token(args: argparse.Namespace) -> str | None:
    """The access token from --token-file, else the MOTIONSTREAM_TOKEN environment variable, else
    --token (visible in the process list, so the other two are preferred); None when none is set."""
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"--token-file {args.token_file}: cannot read it ({type(err).__name__})") from None
        if not token:
            raise UserError(f"--token-file {args.token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or args.token or None


def shown_token(token: str) -> str:
    """The token as printed: its first TOKEN_SHOWN_CHARS characters, the rest elided."""
    return token[:TOKEN_SHOWN_CHARS] + "..."


def allowed_hosts(args: argparse.Namespace) -> tuple[str, ...]:
    """--allow-host names, plus the bind address when it names one host (clients use it as the Host)."""
    extra = tuple(args.allow_host or ())
    return extra + ((args.host,) if args.host not in WILDCARD_HOSTS else ())


def studio_from_args(args: argparse.Namespace) -> "Studio":  # noqa: F821 (app.server, imported on use)
    """Load the model stack named by the arguments; UserError for anything the user can fix."""
    from motionstream.app.server import Studio
    from motionstream.cli.common import parse_size
    from motionstream.config import ConfigError, load_config, section
    from motionstream.models.checkpoints import WeightsNotFound

    try:
        cfg = section(load_config(args.config), "studio", StudioConfig)
    except (ConfigError, TypeError) as err:
        raise UserError(str(err)) from None
    if args.record_dir:
        cfg.record_dir = args.record_dir
    if args.threads:
        cfg.threads = args.threads
    from motionstream.stream.stack import load_stream_stack

    try:
        stack = load_stream_stack(args.model, args.config, vae=args.vae, tiny_decoder=args.tiny_decoder,
                                  size=parse_size(args.size) if args.size else None,
                                  cache=args.cache or cfg.cache or None, quality=args.quality)
    except WeightsNotFound as err:
        hint = (" The distilled student has not shipped yet: start the studio on any streaming model folder with "
                "--model PATH (or --model teacher once weights/teacher-tiny-cpu exists)."
                if args.model == "student" else "")
        raise UserError(f"{err}{hint}") from None
    except (ConfigError, ValueError) as err:
        raise UserError(str(err)) from None
    return Studio(stack, cfg, token=resolve_token(args), allowed_hosts=allowed_hosts(args))


def run_studio(args: argparse.Namespace) -> int:
    token = resolve_token(args)
    check_host(args.host, token)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    studio = studio_from_args(args)
    query = f"?token={shown_token(token)}  (the token elided: use the whole one)" if token else ""
    print(f"motionstream studio: {studio.stack.label} [{studio.stack.folder}]")
    print(f"open http://{args.host}:{args.port}/{query}  (Ctrl+C to stop)", flush=True)
    from motionstream.app.server import serve

    serve(studio, args.host, args.port)
    return 0


def add_studio_arguments(p: argparse.ArgumentParser) -> None:
    defaults = StudioConfig()
    p.add_argument("--model", default="student",
                   help="student (default: weights/student-tiny-cpu) | teacher | PATH to a streaming model folder")
    p.add_argument("--config", default="tiny-cpu", help="preset name or YAML path (default tiny-cpu)")
    p.add_argument("--vae", help="VAE model folder (default weights/vae-tiny-cpu)")
    p.add_argument("--tiny-decoder", help="tiny decoder model folder (default weights/tiny-decoder-tiny-cpu)")
    p.add_argument("--size", help="video size WIDTHxHEIGHT (default: the preset's)")
    p.add_argument("--cache", help="cache shape cXsYwZ (default: the preset's studio.cache, c1s3w3 in tiny-cpu: "
                   "one-latent-frame chunks for a quicker response to a drag, measured on the shipped student; "
                   "else the model's, c3s1w1)")
    p.add_argument("--quality", default="auto", help="quality rung (default auto: start on the preset's "
                   "stream.quality and step down its ladder while the machine falls behind real time; a rung "
                   "name such as full or 1-step pins it)")
    p.add_argument("--host", default=defaults.host, help=f"bind address (default {defaults.host}; others need --token)")
    p.add_argument("--port", type=int, default=defaults.port, help=f"port (default {defaults.port})")
    p.add_argument("--token", default=None, help=f"access token every client must send (required off loopback); "
                   f"visible in the process list: prefer {TOKEN_ENV}=SECRET or --token-file")
    p.add_argument("--token-file", default=None, help="read the access token from this file")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also accept requests for this host name (repeatable; loopback names and the --host "
                   "address are always accepted)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--record-dir", default=None, help=f"where session recordings live (default {defaults.record_dir})")


def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
    p = commands.add_parser("studio", help="interactive web studio: drag, pin, draw paths, watch it stream",
                            description="Serve the MotionStream studio: upload or pick an image, type a prompt, "
                            "press Enter and drag on the video while it streams (Space pauses).")
    add_studio_arguments(p)
    p.set_defaults(func=run_studio)
