"""torch.distributed helpers: one code path for 1 process and ``torchrun --nproc_per_node=N``."""
from __future__ import annotations

import os
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def init_distributed(device: torch.device) -> None:
    """Initialise the default process group when launched by torchrun (NCCL on CUDA, gloo on CPU)."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def loader_workers(setting: int | str) -> int:
    """Data-loading processes for the ``num_workers`` setting: a number as given; ``auto``: min(4, this
    process's CPUs shared among the ranks on this machine), so no loader asks for more than the machine has."""
    if setting != "auto":
        return int(setting)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    ranks_here = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return min(4, max(1, cpus // ranks_here))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items`` (round-robin, so every rank gets similar image sizes)."""
    return list(items[rank()::world_size()])


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's decision, shared with every rank."""
    if not dist.is_initialized():
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def gather_float(x: float) -> list[float]:
    """Every rank's value of ``x`` (float64), in rank order."""
    if not dist.is_initialized():
        return [x]
    out = [torch.zeros(1, dtype=torch.float64) for _ in range(world_size())]
    dist.all_gather(out, torch.tensor([x], dtype=torch.float64))
    return [float(t.item()) for t in out]
