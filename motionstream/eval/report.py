"""docs/REPORT.md: every benchmark's tables and plots, with the commit and the machine they ran on.

Written by `motionstream eval all` from the results just produced, or by `motionstream eval report`
from the result.json files already under OUT/eval/ (e.g. after running benchmarks one by one).
When OUT is the repository's docs/, the headline figures are also copied into README.md between
the HEADLINE_BEGIN / HEADLINE_END markers of its Evaluation section.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from motionstream.config import REPO_ROOT
from motionstream.eval.benchmarks import BenchmarkResult, load_benchmarks, read_results

REPORT_FILE = "REPORT.md"
HEADLINE_BEGIN = "<!-- eval-headline:begin (written by motionstream eval all) -->"
HEADLINE_END = "<!-- eval-headline:end -->"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.3g}" if abs(v) >= 100 or abs(v) < 0.01 and v != 0 else f"{v:.2f}"
    return str(v)


def headline(result: BenchmarkResult) -> str:
    """One line per benchmark: its summary figures, or why it did not run."""
    if result.status != "ok":
        return f"{result.status}: {result.reason}"
    return ", ".join(f"{k} {_fmt(v)}" for k, v in result.summary.items()) or "ok"


def _machine_line(results: Sequence[BenchmarkResult]) -> str:
    m = next((r.machine for r in results if r.machine), {})
    parts = [f"CPU {m.get('cpu', '?')}", f"{m.get('cores', '?')} cores (load average {m.get('load_avg_1min', '?')} "
             "when the first benchmark started)",
             f"torch {m.get('torch', '?')} with {m.get('torch_threads', '?')} threads"]
    if m.get("cuda"):
        parts.append(f"GPU {m['cuda']}")
    return ", ".join(parts) + f"; {m.get('platform', '')}, Python {m.get('python', '?')}"


def _mode_line(results: Sequence[BenchmarkResult], quick: bool) -> str:
    """Quick or full, and the clips per data source each benchmark actually ran (`--clips` overrides both)."""
    clips = ", ".join(f"{r.name} {r.num_clips}" for r in results if r.num_clips)
    mode = ("**quick** (fewer teacher steps and shorter streams than a full run; the CI smoke run uses 2 clips: "
            "figures from few clips are noisy)" if quick else "full")
    return f"{mode}; clips per data source: {clips}" if clips else mode


def render_report(results: Sequence[BenchmarkResult], out_root: Path) -> str:
    """The markdown text of the report (plots linked relative to OUT/)."""
    registry = load_benchmarks()
    commits = sorted({r.commit for r in results if r.commit})
    quick = any(r.quick for r in results)
    finished = max((r.finished_at for r in results), default="")
    lines = [
        "# MotionStream evaluation report",
        "",
        "The paper's tables in miniature, on the embedded `tiny-cpu` models. Regenerate with "
        f"`motionstream eval all{' --quick' if quick else ''}` (one benchmark: `motionstream eval NAME`).",
        "",
        f"- commit: `{'`, `'.join(commits) or 'unknown'}`",
        f"- machine: {_machine_line(results)}",
        f"- mode: {_mode_line(results, quick)}",
        f"- finished: {finished}; total benchmark wall time {sum(r.wall_s for r in results):.0f} s",
        "",
        "Reading the numbers: PSNR/SSIM compare with the ground-truth video (higher is better). EPE is the "
        "mean distance in pixels between the input tracks and the tracks our tracker re-extracts from the "
        "output (lower is better); the *tracker floor* is the same measured on the ground truth, so no method "
        "can be judged below it. \"Reliable points\" restricts EPE to the points the tracker follows within "
        "1 px on the ground truth. fps is generation throughput on this machine's CPU; the cores are shared "
        "with other jobs, so timings are indicative.",
        "",
        "## Summary",
        "",
        "| benchmark | status | wall (s) | headline |",
        "|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| [{r.name}](#{r.name}) | {r.status} | {r.wall_s:.1f} | {headline(r)} |")
    for r in results:
        bench = registry.get(r.name)
        lines += ["", f"<a id=\"{r.name}\"></a>", f"## {r.title} (`{r.name}`)", ""]
        if bench and bench.description:
            lines += [bench.description, ""]
        lines.append(r.markdown())
        for plot in r.plots:
            lines += [f"![{r.name}: {Path(plot).stem}](eval/{r.name}/{plot})", ""]
        lines.append(f"<sub>{r.wall_s:.1f} s, commit `{r.commit}`, {r.finished_at}, "
                     f"raw figures: [eval/{r.name}/result.json](eval/{r.name}/result.json)</sub>")
    return "\n".join(lines) + "\n"


def update_readme_headline(results: Sequence[BenchmarkResult], readme: Path = REPO_ROOT / "README.md") -> bool:
    """Replace the text between the headline markers in README.md; False if the markers are absent."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    if HEADLINE_BEGIN not in text or HEADLINE_END not in text:
        return False
    head, rest = text.split(HEADLINE_BEGIN, 1)
    _, tail = rest.split(HEADLINE_END, 1)
    quick = any(r.quick for r in results)
    body = [f"Headline figures ({'quick run, ' if quick else ''}commit "
            f"`{next((r.commit for r in results if r.commit), 'unknown')}`, see [docs/REPORT.md](docs/REPORT.md)):", ""]
    body += [f"- **{r.name}**: {headline(r)}" for r in results]
    readme.write_text(head + HEADLINE_BEGIN + "\n" + "\n".join(body) + "\n" + HEADLINE_END + tail)
    return True


def write_report(out_root: str | Path = REPO_ROOT / "docs", results: Sequence[BenchmarkResult] | None = None) -> Path:
    """Write OUT/REPORT.md from `results` (default: the result.json files under OUT/eval/)."""
    out_root = Path(out_root)
    if results is None:
        results = read_results(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    path = out_root / REPORT_FILE
    path.write_text(render_report(results, out_root))
    if out_root.resolve() == (REPO_ROOT / "docs").resolve():
        update_readme_headline(results)
    return path
