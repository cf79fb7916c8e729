"""The training-loop skeleton (train/loop.py) every stage runs: a run killed with SIGKILL after a
checkpoint resumes from that checkpoint and ends with the weights of an uninterrupted run; the loop
writes metrics, the log and TensorBoard event files; EMA and lr schedule keep their math."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
STEPS = 40              # the whole run
CHECKPOINT_EVERY = 4
KILL_AFTER = 8          # SIGKILL once a checkpoint at or past this step is on disk
STEP_SLEEP_S = 0.05     # each step also waits this long, so the kill lands mid-run

# a tiny stage: a linear model regressing a fixed random map, data keyed by (seed, step, index)
STAGE_SCRIPT = textwrap.dedent(f"""
    import sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from motionstream.train.common import EMA, WarmupSchedule, item_rng, optimizer_step
    from motionstream.train.loop import LoopSettings, Stage, run_stage

    class Tiny(Stage):
        def __init__(self):
            torch.manual_seed(0)
            self.model = torch.nn.Linear(4, 3)
            self.target = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
            self.ema = EMA(self.model, 0.9)
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=0.05)
            self.modules, self.optimizers = {{"model": self.model, "ema": self.ema}}, {{"opt": self.opt}}
            self.schedulers = [WarmupSchedule(self.opt, 0.05, 3, {STEPS}, "cosine")]

        def train_step(self, step):
            _, gen = item_rng(0, step, 0)
            x = torch.randn(8, 4, generator=gen)
            loss = (self.model(x) - x @ self.target).pow(2).mean()
            optimizer_step(self.opt, loss, self.model.parameters(), 1.0)
            self.ema.update(self.model)
            time.sleep({STEP_SLEEP_S})
            return {{"loss": loss.item()}}

        def evaluate(self, step, log):
            return {{"ema_norm": float(self.ema.shadow["weight"].norm())}}

    res = run_stage(Tiny(), LoopSettings(name="tiny", run_dir=Path(sys.argv[1]), max_steps={STEPS},
                    checkpoint_every={CHECKPOINT_EVERY}, log_every=2, eval_every_steps=10, progress=False))
    print("STEP", res.step, "RESUMED", res.resumed_from)
""")


def run_script(script: Path, run: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(run)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def saved_step(run: Path) -> int:
    path = run / "state.json"
    return json.loads(path.read_text())["step"] if path.is_file() else -1


def test_sigkilled_run_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(STAGE_SCRIPT)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    first = run_script(script, straight)

    victim = run_script(script, killed)
    deadline = time.time() + 120
    while saved_step(killed) < KILL_AFTER and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = saved_step(killed)
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert KILL_AFTER <= killed_at < STEPS and killed_at % CHECKPOINT_EVERY == 0

    out, _ = run_script(script, killed).communicate(timeout=120)
    assert f"STEP {STEPS} RESUMED {killed_at}" in out, out[-2000:]
    assert f"resume step={killed_at}" in (killed / "train.log").read_text()
    first_out, _ = first.communicate(timeout=120)
    assert f"STEP {STEPS} RESUMED None" in first_out, first_out[-2000:]

    a, b = load_file(str(straight / "state.safetensors")), load_file(str(killed / "state.safetensors"))
    assert set(a) == set(b)
    for k in a:
        if k != "torch_rng":
            assert torch.equal(a[k], b[k]), k
    # metrics: the resumed run logged every step window after the checkpoint again, same values
    rows = lambda run: [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    last = lambda run: {r["step"]: r["loss"] for r in rows(run) if "loss" in r}  # noqa: E731
    assert last(killed)[STEPS] == last(straight)[STEPS]
    evals = [r for r in rows(straight) if "eval" in r]
    assert [r["step"] for r in evals] == [10, 20, 30, 40] and evals[-1]["eval"]["ema_norm"] > 0

    pytest.importorskip("tensorboard")
    assert list(straight.glob("events.out.tfevents.*")) and len(list(killed.glob("events.out.tfevents.*"))) == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(straight))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "eval/ema_norm"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == list(range(2, STEPS + 1, 2))


def test_ema_keeps_its_warm_up_decay():
    """decay_n = min(decay, (1 + n) / (10 + n)) over n = 1, 2, ...: the first update keeps 2/11 of the
    start, and a long run converges on `decay`."""
    from motionstream.train.common import EMA

    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    ema = EMA(model, decay=0.5)
    expected = torch.zeros(2, 2)
    for n, value in enumerate([1.0, 2.0, 3.0, 4.0], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
        d = min(0.5, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * value
        assert torch.allclose(ema.shadow["weight"], expected), n
    assert ema.num_updates == 4


def test_warmup_schedule_is_lr_at_times_each_groups_scale():
    from motionstream.train.common import WarmupSchedule, lr_at

    p, q = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr_scale": 1.0}, {"params": [q], "lr_scale": 0.1}], lr=1.0)
    sched = WarmupSchedule(opt, 2.0, 5, 50, "cosine")
    for step in (0, 3, 5, 30, 60):
        sched.jump_to(step)
        assert [g["lr"] for g in opt.param_groups] == [lr_at(step, 2.0, 5, 50), lr_at(step, 2.0, 5, 50) * 0.1]
    with pytest.raises(ValueError, match="unknown lr schedule"):
        WarmupSchedule(opt, 1.0, 1, 10, "linear")
