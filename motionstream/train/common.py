"""Pieces every training loop shares: resumable training state, EMA, learning-rate schedules,
the run's log file and metrics lines.

Training state (model, EMA, optimizer, step, RNG, data position) is written as one safetensors file
(never pickle) with its metadata inside, atomically (temp + rename), every `checkpoint_every` steps
of a stage's config (`checkpoint_every_steps` for the codec stages). A `kill -9` at any moment
therefore loses the steps since the last save: at most that interval (1 step by default for the
teacher, ODE and DMD stages; the preset's interval, 25 steps, for the VAE and the tiny decoder),
never a consistent state. Resuming replays the same data order (each stage saves its data cursor and
RNG), so the resumed run's losses match the uninterrupted run's within float noise.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel

from motionstream.config import REPO_ROOT, load_config, section
from motionstream.errors import UserError


# ----------------------------------------------------------------------------- logs
def load_run_config(path: str, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The preset of a training command with its `--set` overrides; a bad preset or override is the user's
    input, so it becomes a one-line UserError."""
    try:
        return load_config(path, list(overrides))
    except Exception as err:  # ConfigError / YAML errors
        raise UserError(str(err)) from err


def run_section(cfg: dict[str, Any], name: str, cls: type):
    """`config.section` for a training command: a malformed section (unknown key, bad value) is the user's
    input, so it becomes a one-line UserError like a bad `--set`."""
    try:
        return section(cfg, name, cls)
    except Exception as err:  # ConfigError / TypeError from the dataclass
        raise UserError(str(err)) from err


LOG_FORMAT = ("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")   # train.log lines: time, message


def run_logger(run_dir: Path, name: str, is_main: bool = True) -> logging.Logger:
    """The logger `motionstream.<name>`, writing `run_dir/train.log` on the main process only
    (other torchrun ranks get a logger with no handler)."""
    log = logging.getLogger(f"motionstream.{name}")
    log.setLevel(logging.INFO)
    for handler in log.handlers:
        handler.close()
    log.handlers.clear()
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(run_dir / "train.log")
        fh.setFormatter(logging.Formatter(*LOG_FORMAT))
        log.addHandler(fh)
    log.propagate = False
    return log


def format_record(record: dict[str, Any]) -> str:
    """One log line of a metrics record: `key=value` pairs, floats to 4 significant digits, no time."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items() if k != "time")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (numpy / torch scalars as floats) to a metrics file."""
    with open(path, "a") as f:
        f.write(json.dumps(record, default=float) + "\n")


# ----------------------------------------------------------------------------- EMA
EMA_WARMUP = (1, 10)        # decay_n = min(decay, (1 + n) / (10 + n)): short runs still get a useful average


def floating_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The floating-point entries of `model.state_dict()` (parameters and buffers the EMA averages)."""
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}


class _TensorBag(torch.nn.Module):
    """Tensors held as buffers, in a fixed key order: what `AveragedModel` averages. Built around the
    live model's state-dict tensors (no copy) it is the `model` side of an update; around float copies,
    the averaged side. Plain buffers (not the model itself) so that a sharded (FSDP) model needs no
    deep copy and frozen parameters are averaged like the others."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.names = list(tensors)
        for i, name in enumerate(self.names):
            self.register_buffer(f"t{i}", tensors[name])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"t{i}") for i, name in enumerate(self.names)}


class EMA:
    """Exponential moving average of parameters with warm-up: decay_n = min(decay, (1 + n) / (10 + n)),
    n the number of updates so far (1 for the first). The averaging is torch's
    `torch.optim.swa_utils.AveragedModel` with that decay; `shadow` (float32, keyed like the model's
    state dict) is what checkpoints store under `ema.`."""

    def __init__(self, model: torch.nn.Module | None, decay: float = 0.999, num_updates: int = 0):
        self.decay = decay
        self.num_updates = num_updates
        start = {} if model is None else {k: v.detach().clone().float() for k, v in floating_state(model).items()}
        self._averaged = AveragedModel(_TensorBag(start), avg_fn=self._average, use_buffers=True)
        self._averaged.n_averaged.fill_(1)   # the copy above counts as the first average: never copy again

    def _average(self, averaged: torch.Tensor, current: torch.Tensor, _count: torch.Tensor) -> torch.Tensor:
        # the decay comes from the Python counter, not from AveragedModel's device tensor (no host sync);
        # one lerp per tensor, as before (torch._foreach_lerp_ differs in the last bit)
        return averaged.lerp(current.float(), 1 - self._decay_now)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        warm_a, warm_b = EMA_WARMUP
        self._decay_now = min(self.decay, (warm_a + self.num_updates) / (warm_b + self.num_updates))
        live = floating_state(model)
        self._averaged.update_parameters(_TensorBag({k: live[k] for k in self._averaged.module.names}))

    @property
    def shadow(self) -> dict[str, torch.Tensor]:
        return self._averaged.module.tensors()

    @shadow.setter
    def shadow(self, tensors: dict[str, torch.Tensor]) -> None:
        self._averaged.module = _TensorBag({k: v.float() for k, v in tensors.items()})

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict({**model.state_dict(), **self.shadow})


# ----------------------------------------------------------------------- schedules
LR_MIN_RATIO = 0.1          # cosine decays to this fraction of the base rate


def lr_at(step: int, base_lr: float, warmup: int, total: int, schedule: str = "cosine",
          min_ratio: float = LR_MIN_RATIO) -> float:
    """Linear warm-up, then `constant` or `cosine` decay to `min_ratio * base_lr` at `total`."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    if schedule != "cosine":
        raise ValueError(f"unknown lr schedule {schedule!r} (constant | cosine)")
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


class WarmupSchedule(torch.optim.lr_scheduler.LRScheduler):
    """`lr_at` as a torch LR scheduler: every group's rate at step `last_epoch` is
    lr_at(step, base_lr, ...) x the group's "lr_scale" (1 when it has none).

    The loop sets the step explicitly (`jump_to`) before each update instead of counting calls to
    `step()`: a resumed run starts mid-schedule, and an optimizer that does not step every global step
    (DMD's generator) keeps its rate a function of the global step."""

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, warmup: int, total: int,
                 schedule: str = "cosine"):
        if schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown lr schedule {schedule!r} (constant | cosine)")
        self.base_lr, self.warmup, self.total, self.schedule = base_lr, warmup, total, schedule
        super().__init__(optimizer)

    def rate(self) -> float:
        """The base rate (before lr_scale) of the current step."""
        return lr_at(self.last_epoch, self.base_lr, self.warmup, self.total, self.schedule)

    def get_lr(self) -> list[float]:
        rate = self.rate()
        return [rate * group.get("lr_scale", 1.0) for group in self.optimizer.param_groups]

    def jump_to(self, step: int) -> None:
        """Set every group's learning rate to that of global step `step`."""
        self.last_epoch = step
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate to lr (x the group's "lr_scale", when it has one)."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


# ------------------------------------------------------------------------- updates
def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: Iterable[torch.nn.Parameter],
                   grad_clip: float) -> torch.Tensor:
    """One update: zero the gradients, backpropagate `loss`, clip the total gradient norm of
    `params` at grad_clip, step. Returns that norm before clipping (0-d tensor, left on its device
    so no sync is forced; gathered from FSDP shards: a collective, so call it on every rank)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if hasattr(norm, "full_tensor"):     # FSDP2 returns a DTensor
        norm = norm.full_tensor()
    opt.step()
    return norm


def item_rng(seed: int, key: int, index: int, salt: int | None = None) -> tuple[np.random.Generator, torch.Generator]:
    """The random streams (numpy, torch) of one sample: keyed by (seed, [salt,] step or pair index, global
    sample index), never by process or resume, so 1 or N processes and a resumed run draw the same.
    Each stage has its own salt (the teacher none), so stages never share a stream."""
    rng = np.random.default_rng([seed, key, index] if salt is None else [seed, salt, key, index])
    return rng, torch.Generator().manual_seed(int(rng.integers(2 ** 62)))


def repo_path(path: str | Path) -> Path:
    """`path`, relative paths taken from the repository root (presets name cache folders that way)."""
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ------------------------------------------------------------------ training state
def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, val in st.items():
            if torch.is_tensor(val):
                tensors[f"opt.{pid}.{name}"] = val.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = val
    for key, val in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    return {"state": state, "param_groups": meta["param_groups"]}


STATE_META_KEY = "state"   # safetensors metadata entry holding the state.json content (one atomic file)
ERROR_DETAIL_CHARS = 100   # of the reader's own error text, quoted in the one-line error


def save_training_state(run_dir: str | Path, step: int, modules: dict[str, torch.nn.Module | EMA],
                        optimizers: dict[str, torch.optim.Optimizer], extra: dict[str, Any] | None = None) -> Path:
    """Write `run_dir/state.safetensors` (tensors + the step, RNG and `extra` as metadata) atomically
    (temp + rename), then `run_dir/state.json`, a readable copy of that metadata. The safetensors file
    alone restores the run, so a kill between the two renames still resumes consistently."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"step": step, "extra": extra or {}, "optimizers": {}}
    for name, mod in modules.items():
        for k, v in mod.state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().cpu().contiguous()
        if isinstance(mod, EMA):
            meta.setdefault("ema_updates", {})[name] = mod.num_updates
    for name, opt in optimizers.items():
        t, m = _flatten_optimizer(opt)
        tensors.update({f"{name}.{k}": v for k, v in t.items()})
        meta["optimizers"][name] = m
    tensors["torch_rng"] = torch.get_rng_state()
    text = json.dumps(meta, default=str)
    tmp = run_dir / "state.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={STATE_META_KEY: text})
    tmp_json = run_dir / "state.json.tmp"
    tmp_json.write_text(text)
    os.replace(tmp, run_dir / "state.safetensors")
    os.replace(tmp_json, run_dir / "state.json")
    return run_dir


def read_training_state(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """(metadata, tensors) that `save_training_state` wrote, or None when the run has no state yet.
    A truncated or corrupt state is the user's to resolve (delete or restore it): a one-line UserError."""
    run_dir = Path(run_dir)
    path, json_path = run_dir / "state.safetensors", run_dir / "state.json"
    if not path.is_file() and not json_path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(STATE_META_KEY)
        tensors = load_file(str(path))
        # states written before the metadata entry existed keep it in state.json only
        meta = json.loads(text if text is not None else json_path.read_text())
        int(meta["step"])
    except Exception as err:  # SafetensorError, OSError, JSONDecodeError, KeyError: all mean a broken state
        raise UserError(f"unreadable training state in {run_dir} ({type(err).__name__}: {str(err)[:ERROR_DETAIL_CHARS]}): "
                        f"delete {run_dir} to start over, or restore its state.safetensors") from None
    return meta, tensors


def load_training_state(run_dir: str | Path, modules: dict[str, torch.nn.Module | EMA],
                        optimizers: dict[str, torch.optim.Optimizer]) -> tuple[int, dict[str, Any]] | None:
    """Restore what `save_training_state` wrote; returns (step, extra) or None when no state exists."""
    state = read_training_state(run_dir)
    if state is None:
        return None
    meta, tensors = state
    for name, mod in modules.items():
        prefix = f"{name}."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if isinstance(mod, EMA):
            mod.shadow = {k: v.float() for k, v in sd.items()}
            mod.num_updates = meta.get("ema_updates", {}).get(name, 0)
        else:
            mod.load_state_dict(sd)
    for name, opt in optimizers.items():
        prefix = f"{name}."
        sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix + "opt.")}
        opt.load_state_dict(_unflatten_optimizer(sub, meta["optimizers"][name]))
    torch.set_rng_state(tensors["torch_rng"])
    return int(meta["step"]), meta.get("extra", {})
