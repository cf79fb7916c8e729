"""`motionstream eval NAME|all|report|list [--quick] [--out docs/]`."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction, train: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval", help="run evaluation benchmarks and regenerate docs/REPORT.md",
        description="Run one benchmark (`eval codec`), all of them and the report (`eval all`), only the "
        "report from stored results (`eval report`), or list them (`eval list`). Each benchmark writes "
        "JSON + a markdown table + PNG plots under OUT/eval/NAME/.")
    p.add_argument("name", metavar="NAME", help="a benchmark name, or all | report | list")
    p.add_argument("--quick", action="store_true", help="2 clips per benchmark (CI smoke run)")
    p.add_argument("--out", default=None, help="output root (default: the repository's docs/)")
    p.add_argument("--clips", type=int, default=None, help="clips per data source (overrides --quick / the config)")
    p.add_argument("--config", default="tiny-cpu", help="config preset (default: tiny-cpu)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set stream.student=runs/gt/student to "
                   "score a candidate student in the student rows")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from motionstream.errors import UserError
    from motionstream.config import ConfigError
    from motionstream.eval import benchmarks
    from motionstream.eval.report import headline, write_report

    out_root = args.out or benchmarks.default_out_root()
    if args.clips is not None and args.clips < 1:
        raise UserError(f"--clips must be >= 1, got {args.clips}")
    registry = benchmarks.load_benchmarks()
    if args.name == "list":
        for name, b in registry.items():
            needs = f" (needs {', '.join(b.needs_weights)})" if b.needs_weights else ""
            print(f"{name:10s} {b.title}{needs}")
        return 0
    try:
        if args.name == "all":
            results = benchmarks.run_all(args.quick, out_root, args.config, clips=args.clips, overrides=args.set)
            write_report(out_root, results)
        elif args.name == "report":
            results = None
        elif args.name in registry:
            results = [benchmarks.run_benchmark(args.name, args.quick, out_root, args.config, clips=args.clips,
                                                overrides=args.set)]
        else:
            raise UserError(f"unknown benchmark {args.name!r}; choose one of {', '.join(registry)}, all, report, list")
    except ConfigError as err:
        raise UserError(str(err)) from err
    if results is None:
        print(f"wrote {write_report(out_root)}")
        return 0
    for r in results:
        print(f"{r.name}: {headline(r)}  [{r.wall_s:.1f} s -> {out_root}/eval/{r.name}/]")
    if args.name == "all":
        print(f"wrote {out_root}/REPORT.md")
    return 1 if any(r.status == "failed" for r in results) else 0
