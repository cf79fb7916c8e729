"""Benchmarks that need the trained diffusion models: registered now so the report lists them.

Each reports "not available: missing weights/..." until its weights exist, then "not available:
not implemented yet" until its body is written (the second half of the [eval] issue). To
implement one, replace its body; the registry, runner and report need no change.
"""

from __future__ import annotations

from motionstream.eval.benchmarks import BenchmarkContext, NotAvailable, benchmark

TEACHER_WEIGHTS = "teacher-tiny-cpu"
STUDENT_WEIGHTS = "student-tiny-cpu"


@benchmark("long", "Long streams: drift per time window (Table 4, Fig. 6)", needs_weights=(STUDENT_WEIGHTS,))
def run_long(ctx: BenchmarkContext) -> None:
    """Streams of >= 10x the training horizon against ground truth; metrics per time window for
    c3s1w1, c3s0w1, c1s1w1, c3s0w6."""
    raise NotAvailable("not implemented yet (needs the streaming engine)")


@benchmark("guidance", "Joint guidance grid (Fig. 4)", needs_weights=(TEACHER_WEIGHTS,))
def run_guidance(ctx: BenchmarkContext) -> None:
    """(w_t, w_m) grid on the teacher: EPE, PSNR, text adherence."""
    raise NotAvailable("not implemented yet (needs the teacher sampler)")


@benchmark("speed", "Throughput and latency, teacher vs student", needs_weights=(TEACHER_WEIGHTS, STUDENT_WEIGHTS))
def run_speed(ctx: BenchmarkContext) -> None:
    """Teacher vs student throughput and latency, decode included and excluded."""
    raise NotAvailable("not implemented yet (needs the streaming engine)")
