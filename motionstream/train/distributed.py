"""Scale-out: the same training command single-process or under `torchrun --nproc_per_node N`.

Under torchrun (RANK / WORLD_SIZE in the environment) the model is sharded with FSDP2
(`torch.distributed.fsdp.fully_shard`, one unit per transformer block + the root, see fsdp_units): NCCL on CUDA,
gloo on CPU (the CPU path runs in the tests, so the GPU path is the same code with another backend).
Without torchrun everything here is a no-op and the model stays a plain module.

Equivalence with single-process training on the same global batch holds because
  * every rank starts from the same weights (built from the same seed before sharding),
  * each rank takes a contiguous, equal slice of the global batch (`local_slice`),
  * every random draw of a sample is keyed by (seed, step, global sample index), never by rank,
  * the local loss is a mean over the local slice and FSDP averages gradients over ranks.

Checkpoints: sharded tensors (DTensor) are gathered to full tensors on every rank (a collective),
rank 0 writes them with train.common.save_training_state, and loading gives every rank the full
tensors, re-sharded with the model's own placements. So a run can resume with a different world
size, and the files are the same as a single-process run's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import distribute_tensor

from motionstream.train.common import EMA


@dataclass
class DistContext:
    """Where this process sits. `world_size == 1` means plain single-process training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_slice(self, global_batch: int) -> slice:
        """This rank's contiguous part of a global batch (equal parts: loss means stay comparable)."""
        if global_batch % self.world_size:
            raise ValueError(f"global batch {global_batch} does not split evenly over {self.world_size} processes")
        per = global_batch // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, value: float) -> float:
        """Mean of a Python number over ranks (for logging)."""
        if not self.enabled:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def is_torchrun_worker() -> bool:
    """True in a process that torchrun started as one of several ranks (RANK set, WORLD_SIZE > 1)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Join the torchrun process group if launched by torchrun, else a single-process context.

    device: "auto" (CUDA when available), "cpu" or "cuda".
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if not is_torchrun_worker():
        return DistContext(device=torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       device=torch.device(f"cuda:{local_rank}" if use_cuda else "cpu"))


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        # every rank past its last collective first: a rank that tears gloo down while another still
        # talks to it can abort the other ("terminate called without an active exception", seen once in CI)
        dist.barrier()
        dist.destroy_process_group()


def fsdp_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Modules that get their own FSDP unit, innermost first (the root is added by wrap_model).

    One unit per transformer block (`model.blocks`). WanDiT computes each block's text K/V with
    `block.cross_attn.context_kv(...)` outside the block's forward (once per forward / stream), so
    the modules it calls (k, v, norm_k) get units of their own: FSDP gathers a unit's parameters only
    around that unit's own forward call.
    """
    units: list[torch.nn.Module] = []
    for block in getattr(model, "blocks", []):
        cross = getattr(block, "cross_attn", None)
        if cross is not None and hasattr(cross, "context_kv"):
            names = ("k", "v", "norm_k", "k_img", "v_img", "norm_k_img")     # k_img...: Wan I2V image branch
            units += [m for m in (getattr(cross, n, None) for n in names)
                      if m is not None and any(True for _ in m.parameters())]
        units.append(block)
    return units


def wrap_model(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """Shard `model` with FSDP2 under torchrun (units from `fsdp_units`, then the root); no-op otherwise."""
    if not ctx.enabled:
        return model

    for unit in fsdp_units(model):
        fully_shard(unit)
    fully_shard(model)
    return model


# ------------------------------------------------------------------- checkpoints
def _full(t: torch.Tensor) -> torch.Tensor:
    """A full CPU copy of a (possibly sharded) tensor. A collective for DTensors: call on all ranks."""
    if hasattr(t, "full_tensor"):
        t = t.full_tensor()
    return t.detach().cpu()


def _reshard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` laid out like `like` (a DTensor keeps its mesh and placements; a plain tensor its device)."""
    if hasattr(like, "device_mesh"):
        return distribute_tensor(full.to(like.dtype).to(like.device_mesh.device_type), like.device_mesh, like.placements)
    return full.to(device=like.device, dtype=like.dtype)


class _Snapshot:
    """A module stand-in holding a ready state dict (what save_training_state reads / load fills)."""

    def __init__(self, state: dict[str, torch.Tensor] | None = None):
        self.state = state or {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.state = dict(state)


class _OptimizerSnapshot:
    """An optimizer stand-in: full (gathered) state keyed by parameter index, like a plain optimizer's."""

    def __init__(self, state: dict[str, Any] | None = None):
        self.state = state

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = state


def checkpoint_views(ctx: DistContext, modules: dict[str, torch.nn.Module | EMA],
                     optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict, dict]:
    """Full-tensor views of modules / EMAs / optimizers for save_training_state.

    Single process: the objects themselves. Under torchrun: snapshots gathered on every rank (call
    on all ranks; only rank 0 should then write).
    """
    if not ctx.enabled:
        return modules, optimizers
    mods: dict[str, Any] = {}
    for name, mod in modules.items():
        if isinstance(mod, EMA):
            snap = EMA(None, mod.decay, mod.num_updates)
            snap.shadow = {k: _full(v) for k, v in mod.shadow.items()}
            mods[name] = snap
        else:
            mods[name] = _Snapshot({k: _full(v) for k, v in mod.state_dict().items()})
    opts: dict[str, Any] = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        state = {pid: {k: (_full(v) if torch.is_tensor(v) and v.dim() > 0 else (v.detach().cpu() if torch.is_tensor(v) else v))
                       for k, v in st.items()} for pid, st in sd["state"].items()}
        opts[name] = _OptimizerSnapshot({"state": state, "param_groups": sd["param_groups"]})
    return mods, opts


def restore_views(ctx: DistContext, modules: dict[str, torch.nn.Module | EMA],
                  optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict, dict, Any]:
    """Empty stand-ins for load_training_state, and a `finish()` that copies what was loaded into the
    real (sharded) objects. Single process: the objects themselves and a no-op."""
    if not ctx.enabled:
        return modules, optimizers, lambda: None
    mods = {name: (EMA(None, m.decay) if isinstance(m, EMA) else _Snapshot()) for name, m in modules.items()}
    opts = {name: _OptimizerSnapshot() for name in optimizers}

    def finish() -> None:
        for name, mod in modules.items():
            snap = mods[name]
            if not (getattr(snap, "shadow", None) or getattr(snap, "state", None)):
                continue  # nothing was loaded into this stand-in
            if isinstance(mod, EMA):
                mod.num_updates = snap.num_updates
                mod.shadow = {k: _reshard_like(snap.shadow[k], v) for k, v in mod.shadow.items()}
            else:
                live = mod.state_dict()
                mod.load_state_dict({k: _reshard_like(snap.state[k], v) for k, v in live.items()})
        for name, opt in optimizers.items():
            loaded = opts[name].state
            if loaded is None:
                continue
            params = [p for g in opt.param_groups for p in g["params"]]
            state = {}
            for pid, st in loaded["state"].items():
                p = params[int(pid)]
                state[int(pid)] = {k: (_reshard_like(v, p) if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in st.items()}
            opt.load_state_dict({"state": state, "param_groups": loaded["param_groups"]})

    return mods, opts, finish
