"""Benchmark registry and runner: `motionstream eval NAME [--quick] [--out docs/]`.

A benchmark is a function registered with `@benchmark(...)` that receives a BenchmarkContext and
fills it with tables, plots, headline figures and notes:

    @benchmark("codec", "Codec: full VAE vs tiny decoder", needs_weights=("vae-tiny-cpu",))
    def run_codec(ctx: BenchmarkContext) -> None:
        clips = ctx.world_clips()                # 2 in --quick mode, EvalConfig.full_clips otherwise
        ctx.add_table(Table("Reconstruction", ["decoder", "PSNR"], rows))
        ctx.add_plot(fig, "psnr")                # -> docs/eval/codec/psnr.png
        ctx.summary["tiny_psnr"] = 27.1          # headline figures, quoted by the report
        ctx.raw["per_clip"] = rows               # anything else worth keeping (result.json only)

The runner writes `OUT/eval/NAME/result.json` (everything), `OUT/eval/NAME/table.md` (the
tables) and the PNGs. A benchmark whose weights folders are missing, or that raises NotAvailable
(a module or model not built yet), is recorded as "not available: <what is missing>" instead of
crashing, so `motionstream eval all` always regenerates the whole report.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import platform
import shutil
import subprocess
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm import tqdm

from motionstream.config import REPO_ROOT, load_config, section
from motionstream.eval.availability import NotAvailable, require_module  # noqa: F401 (re-exported)
from motionstream.eval.clips import fast_media_clips, media_clips, world_test_clips
from motionstream.models.checkpoints import WeightsNotFound, resolve_model_dir

# Modules that register benchmarks when imported (kept light: heavy imports live inside functions).
BENCHMARK_MODULES = (
    "motionstream.eval.bench_transfer",
    "motionstream.eval.bench_drag",
    "motionstream.eval.bench_codec",
    "motionstream.eval.bench_camera",
    "motionstream.eval.bench_adherence",
    "motionstream.eval.bench_long",
    "motionstream.eval.bench_guidance",
    "motionstream.eval.bench_speed",
)

RESULT_FILE = "result.json"
TABLE_FILE = "table.md"


@dataclass
class EvalConfig:
    """The `eval` section of a config preset."""

    num_frames: int = 33          # frames per clip: 1 + 4 * 8 (the VAE's temporal layout)
    quick_clips: int = 2          # clips per benchmark in --quick mode (CI)
    full_clips: int = 8           # clips per data source in a full run
    max_points: int = 256         # EPE on a fixed random subset of the input tracks
    fast_clips: int = 4           # segments in the hard real set (eval.clips.fast_media_clips)
    compare_students: list[str] = field(default_factory=list)   # extra student rows (folders) in transfer and drag
    track_grid: int = 50          # tracks for real clips come from a grid x grid on frame 0
    media_dir: str = "../shared/media"   # real clips, relative to the repo root
    lpips_weights: str | None = None     # local LPIPS-alex safetensors file; None = LPIPS skipped
    quick_teacher_steps: int = 12        # --quick: teacher Euler steps in `transfer` (shipped 50 steps x 3 guided
                                         # passes x 4 clips = 600 teacher passes of ~1 s on 2 busy cores)


@dataclass
class Table:
    """A markdown table: `rows` hold numbers or strings, numbers are formatted to `digits`."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""
    digits: int = 3

    def markdown(self) -> str:
        def fmt(v: Any) -> str:
            if isinstance(v, bool) or v is None:
                return "–" if v is None else str(v)
            if isinstance(v, int):
                return str(v)
            if isinstance(v, float):
                if math.isnan(v):
                    return "–"
                if math.isinf(v):
                    return "inf"
                if v != 0 and abs(v) < 10 ** -self.digits:
                    return f"{v:.1e}"
                return f"{v:.{self.digits}g}" if abs(v) >= 10 ** self.digits else f"{v:.{self.digits}f}"
            return str(v)

        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"


@dataclass
class BenchmarkResult:
    """What one benchmark run produced (serialised to result.json)."""

    name: str
    title: str
    status: str                               # "ok" | "not available" | "failed"
    quick: bool
    num_clips: int = 0                        # clips per data source the benchmark was asked for
    tables: list[Table] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)     # file names inside the benchmark folder
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)    # per-clip figures etc., JSON only
    reason: str = ""                          # why not available / failed
    wall_s: float = 0.0
    commit: str = ""
    machine: dict[str, Any] = field(default_factory=dict)
    finished_at: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=_json_default, allow_nan=True) + "\n"

    @staticmethod
    def from_json(text: str) -> "BenchmarkResult":
        d = json.loads(text)
        d["tables"] = [Table(**t) for t in d.get("tables", [])]
        return BenchmarkResult(**d)

    def markdown(self) -> str:
        """The benchmark's section body: status line, tables, notes (plots are linked by the report)."""
        if self.status != "ok":
            return f"*{self.status}: {self.reason}*\n"
        parts = [t.markdown() for t in self.tables]
        parts += [f"- {n}" for n in self.notes]
        return "\n".join(parts) + "\n"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


@dataclass
class BenchmarkContext:
    """Handed to a benchmark function: where to write, how many clips, and collectors for output."""

    name: str
    quick: bool
    out_dir: Path
    cfg: dict[str, Any]
    eval_cfg: EvalConfig
    tables: list[Table] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    clips_override: int | None = None         # --clips N: this many clips per source, whatever the mode

    @property
    def num_clips(self) -> int:
        if self.clips_override is not None:
            return self.clips_override
        return self.eval_cfg.quick_clips if self.quick else self.eval_cfg.full_clips

    def add_table(self, table: Table) -> None:
        self.tables.append(table)

    def add_plot(self, fig, stem: str) -> Path:
        """Save a matplotlib figure as OUT/eval/NAME/<stem>.png and close it."""

        path = self.out_dir / f"{stem}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        self.plots.append(path.name)
        return path

    def add_contact_sheet(self, stem: str, videos: dict[str, Any], title: str, num_times: int = 4) -> Path | None:
        """A grid of frames as OUT/eval/NAME/<stem>.png: one row per video (label -> uint8 [T, H, W, 3],
        all of one length), `num_times` evenly spaced frames from the first to the last. None when
        `videos` is empty."""

        matplotlib.use("Agg")

        if not videos:
            return None
        length = min(len(v) for v in videos.values())
        times = np.linspace(0, length - 1, num_times).round().astype(int)
        h, w = next(iter(videos.values())).shape[1:3]
        fig, axes = plt.subplots(len(videos), num_times, squeeze=False,
                                 figsize=(num_times * w / 80, len(videos) * h / 80 + 0.4))
        for row, (label, video) in enumerate(videos.items()):
            for col, t in enumerate(times):
                ax = axes[row, col]
                ax.imshow(video[t])
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 0:
                    ax.set_ylabel(label, fontsize=8)
                if row == 0:
                    ax.set_title(f"frame {t}", fontsize=8)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        return self.add_plot(fig, stem)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def progress(self, items: Iterable, desc: str):
        return tqdm(items, desc=f"{self.name}: {desc}", leave=False)

    # clip sources shared by benchmarks (see motionstream.eval.clips)
    def world_clips(self, n: int | None = None):
        return world_test_clips(n or self.num_clips, self.cfg, self.eval_cfg)

    def media_clips(self, n: int | None = None):
        return media_clips(n or self.num_clips, self.cfg, self.eval_cfg)

    def fast_media_clips(self, n: int | None = None):
        """The hard real set: the fastest-moving segments of the real videos (eval.clips.fast_media_clips);
        at least eval.fast_clips of them, whatever the mode."""

        return fast_media_clips(max(n or self.num_clips, self.eval_cfg.fast_clips), self.cfg, self.eval_cfg)


BenchmarkFn = Callable[[BenchmarkContext], None]


@dataclass
class Benchmark:
    name: str
    title: str
    fn: BenchmarkFn
    needs_weights: tuple[str, ...] = ()
    description: str = ""


REGISTRY: dict[str, Benchmark] = {}


def benchmark(name: str, title: str, needs_weights: Iterable[str] = (), description: str = "") -> Callable[[BenchmarkFn], BenchmarkFn]:
    """Register `fn(ctx)` as benchmark `name`. `needs_weights`: folders under weights/ (or paths)
    that must exist; when one is missing the benchmark is reported as not available."""
    def register(fn: BenchmarkFn) -> BenchmarkFn:
        REGISTRY[name] = Benchmark(name, title, fn, tuple(needs_weights), description or inspect.cleandoc(fn.__doc__ or ""))
        return fn
    return register


def load_benchmarks() -> dict[str, Benchmark]:
    """Import every benchmark module (registering them) and return the registry, in report order."""
    for mod in BENCHMARK_MODULES:
        importlib.import_module(mod)
    return REGISTRY


def missing_weights(names: Iterable[str]) -> list[str]:
    """The model folders among `names` that resolve to nothing (weights/NAME or a path)."""

    missing = []
    for n in names:
        try:
            resolve_model_dir(n)
        except WeightsNotFound:
            missing.append(n if "/" in n else f"weights/{n}")
    return missing


# ------------------------------------------------------------------------- machine
def git_commit() -> str:
    """Short HEAD hash, with '+dirty' when tracked files differ from it."""

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads, versions: where the figures were measured."""

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 1),
                            "platform": platform.platform(), "python": platform.python_version()}
    info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    return info


# -------------------------------------------------------------------------- runner
def eval_config(cfg: dict[str, Any]) -> EvalConfig:
    return section(cfg, "eval", EvalConfig)


def run_benchmark(name: str, quick: bool = False, out_root: str | Path = "docs", config: str = "tiny-cpu",
                  catch_errors: bool = False, clips: int | None = None,
                  overrides: Iterable[str] = ()) -> BenchmarkResult:
    """Run one benchmark and write OUT/eval/NAME/{result.json, table.md, *.png}.

    Missing weights / NotAvailable -> status "not available". Other exceptions propagate, unless
    `catch_errors` (used by `eval all`), where they become status "failed" with the traceback in
    OUT/eval/NAME/error.log.
    """
    registry = load_benchmarks()
    if name not in registry:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(registry)}")
    bench = registry[name]
    cfg = load_config(config, list(overrides))
    out_dir = Path(out_root) / "eval" / name
    if out_dir.exists():            # a stale PNG from an older run must not survive into the report
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    ctx = BenchmarkContext(name, quick, out_dir, cfg, eval_config(cfg), clips_override=clips)
    result = BenchmarkResult(name, bench.title, "ok", quick, ctx.num_clips, commit=git_commit(), machine=machine_info())
    t0 = time.perf_counter()
    missing = missing_weights(bench.needs_weights)
    if missing:
        result.status, result.reason = "not available", f"missing {', '.join(missing)}"
    else:
        try:
            bench.fn(ctx)
        except NotAvailable as err:
            result.status, result.reason = "not available", str(err)
        except Exception as err:  # noqa: BLE001 - recorded, the rest of the report still runs
            if not catch_errors:
                raise
            result.status, result.reason = "failed", f"{type(err).__name__}: {err} (see error.log)"
            (out_dir / "error.log").write_text(traceback.format_exc())
    result.wall_s = time.perf_counter() - t0
    result.tables, result.plots, result.summary, result.notes, result.raw = (
        ctx.tables, ctx.plots, ctx.summary, ctx.notes, ctx.raw)
    result.finished_at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    (out_dir / RESULT_FILE).write_text(result.to_json())
    (out_dir / TABLE_FILE).write_text(f"# {result.title}\n\n" + result.markdown())
    return result


def read_results(out_root: str | Path) -> list[BenchmarkResult]:
    """The stored results under OUT/eval/*, registered benchmarks first in registry order."""
    order = list(load_benchmarks())
    found = {}
    for path in sorted((Path(out_root) / "eval").glob(f"*/{RESULT_FILE}")):
        res = BenchmarkResult.from_json(path.read_text())
        found[res.name] = res
    return [found[n] for n in order if n in found] + [r for n, r in found.items() if n not in order]


def run_all(quick: bool = False, out_root: str | Path = "docs", config: str = "tiny-cpu",
            clips: int | None = None, overrides: Iterable[str] = ()) -> list[BenchmarkResult]:
    """Run every registered benchmark (a failure is recorded, not fatal); the caller writes OUT/REPORT.md
    (eval/report.write_report: the report reads this module's registry)."""
    results = [run_benchmark(name, quick, out_root, config, catch_errors=True, clips=clips, overrides=overrides)
               for name in load_benchmarks()]
    return results


def default_out_root() -> Path:
    return REPO_ROOT / "docs"
