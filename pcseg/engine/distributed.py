"""Multi-process training through ``torchrun``; one process is the world-size-1 case of the same path.

``torchrun --nproc_per_node=2 tools/train.py ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and starts the process
group with ``gloo`` on CPU and ``nccl`` on CUDA. Without them it returns a single-process
:class:`DistInfo` and every collective below is the identity.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .config import ConfigKeyError

__all__ = ["DistInfo", "init_distributed", "check_device", "resolve_device", "wrap_model", "unwrap_model",
           "all_reduce_sum", "all_gather_object", "gather_rows", "barrier", "shutdown"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes checkpoints (rank 0)."""
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group described by torchrun's environment variables, if any.

    device_type: ``"cpu"`` (gloo backend) or ``"cuda"`` (nccl). Idempotent.
    """
    check_device(device_type)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(rank=int(os.environ["RANK"]), world_size=world_size,
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo",
                                rank=info.rank, world_size=world_size)
    return info


def check_device(device_type: str) -> None:
    """Raise :class:`~pcseg.engine.config.ConfigKeyError` (key ``device``) unless ``device_type`` can run here."""
    if device_type not in ("cpu", "cuda"):
        raise ConfigKeyError(f"device: expected 'cpu' or 'cuda', got {device_type!r}")
    if device_type == "cuda" and not torch.cuda.is_available():
        raise ConfigKeyError("device: expected 'cpu' on this machine, got 'cuda' (torch.cuda.is_available() is "
                             "False: no GPU, or a CPU-only torch); pass device=cpu")


def resolve_device(device_type: str, info: DistInfo) -> torch.device:
    """``"cuda"`` → this process's GPU (``cuda:<local_rank>``), ``"cpu"`` → cpu; checked by :func:`check_device`."""
    check_device(device_type)
    return torch.device("cuda", info.local_rank) if device_type == "cuda" else torch.device("cpu")


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` (already on ``device``) when the world is > 1."""
    if not info.enabled:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def all_reduce_sum(tensor: Tensor, info: DistInfo) -> Tensor:
    """Sum ``tensor`` over all processes, in place; returns it."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: object, info: DistInfo) -> list[object]:
    """``[obj of rank 0, obj of rank 1, …]`` on every process."""
    if not info.enabled:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


class _GatherRows(torch.autograd.Function):
    """Forward: every process's rows in rank order. Backward: the summed gradient of this process's rows."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        counts = [torch.zeros((), dtype=torch.int64, device=tensor.device) for _ in range(world)]
        dist.all_gather(counts, torch.tensor(tensor.shape[0], dtype=torch.int64, device=tensor.device))
        sizes = [int(c) for c in counts]
        padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
        padded[:tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        ctx.start, ctx.size = sum(sizes[:rank]), sizes[rank]
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every process's loss depends on these rows
        return grad[ctx.start:ctx.start + ctx.size]


def gather_rows(tensor: Tensor) -> Tensor:
    """(ΣR_r, …): the rows of ``tensor`` (R_r, …) of every process in rank order; ``tensor`` itself in one process.

    Differentiable, for a loss over the rows of all processes (a contrastive loss whose negatives
    come from the whole joined batch): each process computes the same loss of the gathered rows, its
    rows' gradient is the sum over the processes, and DDP's mean of the parameter gradients is then
    the gradient of that one loss, as one process on the joined batch would compute. The processes
    may hold different numbers of rows. Uses the default process group (collective).
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return tensor
    return _GatherRows.apply(tensor)


def barrier(info: DistInfo) -> None:
    """Wait for every process."""
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group (safe to call when none was started)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
