"""torchrun/DDP set-up, kept out of model and method code.

`context()` reads the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK) and starts the
process group once: NCCL on GPUs, gloo on CPU. Training code asks this module to wrap the
method, shard a global batch and average a scalar; in a single process each is a no-op.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def context() -> DistContext:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=backend)
    return ctx


def device_for(ctx: DistContext, device: torch.device) -> torch.device:
    if device.type == "cuda" and ctx.enabled:
        return torch.device("cuda", ctx.local_rank)
    return device


def wrap(method: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """DDP over the method module: it broadcasts rank 0's weights and feedback buffers at start."""
    if not ctx.enabled:
        return method
    from torch.nn.parallel import DistributedDataParallel
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(method, device_ids=ids)


def shard(batch: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's contiguous share of the rows of a global batch."""
    if not ctx.enabled:
        return batch
    per_rank = batch.shape[0] // ctx.world_size
    return batch[ctx.rank * per_rank:(ctx.rank + 1) * per_rank]


def maybe_no_sync(wrapped: torch.nn.Module, skip_sync: bool):
    if skip_sync and hasattr(wrapped, "no_sync"):
        return wrapped.no_sync()
    return contextlib.nullcontext()


def mean_across(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if not ctx.enabled:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / ctx.world_size


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
