"""torchrun/DDP set-up, kept out of model and method code.

`context()` reads the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK) and starts the
process group once: gloo for CPU tensors and, where CUDA is present, NCCL for GPU tensors.
Training code asks this module to wrap the method, shard a global batch and agree on each
step's outcome; in a single process each is a no-op.

How a run stays one run whatever the process count K:
- every rank reads the same global batch (a pure function of the step) and keeps its own
  contiguous 1/K of the rows; DDP averages the gradients, so the update is the global batch's;
- only rank 0 writes (metrics, summary, checkpoint) and evaluates, with the unwrapped model,
  which involves no collective: the other ranks wait for it in the next step's all-reduce;
- `step_consensus` all-reduces the step loss together with a "stop requested" flag, so a
  signal that reaches any one rank stops every rank after the same step.
"""
from __future__ import annotations

import atexit
import contextlib
import inspect
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..config import ConfigError
from ..runs.dist_env import check_environment, ranks

# Ranks other than 0 wait in a collective while rank 0 evaluates and checkpoints; NCCL's
# default 10-minute timeout would kill a run whose evaluation or checkpoint of a large model
# takes longer, so both backends get gloo's 30 minutes.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


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
    check_environment()
    rank, world, local_rank = ranks()
    if world <= 1:
        return DistContext()
    ctx = DistContext(rank, world, local_rank)
    if not dist.is_initialized():
        # one group serves both devices, so train.device=cpu works on a GPU host too
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
        atexit.register(_shutdown)
    return ctx


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device_for(ctx: DistContext, device: torch.device) -> torch.device:
    """This rank's device: GPU number LOCAL_RANK when training on CUDA across processes."""
    if device.type != "cuda" or not ctx.enabled:
        return device
    n_gpus = torch.cuda.device_count()
    if ctx.local_rank >= n_gpus:
        raise ConfigError(f"torchrun --nproc_per_node: local rank {ctx.local_rank} has no GPU of its own "
                          f"({n_gpus} visible); start at most {n_gpus} processes per node or set train.device=cpu")
    torch.cuda.set_device(ctx.local_rank)
    return torch.device("cuda", ctx.local_rank)


def wrap(method: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """DDP over the method module: rank 0's weights and feedback buffers are broadcast once.

    The fixed feedback matrices are buffers that never change after construction, so DDP's
    default re-broadcast of every buffer at every forward (each micro-batch) would only move
    bytes: vocabulary x width per matrix for logit-error DFA, one per layer with per-layer
    feedback. They are drawn from the run seed and identical on every rank anyway; the one
    broadcast at construction makes that a guarantee, not an assumption.
    Frozen parameters (requires_grad False, e.g. the shallow baseline's lower blocks) are left
    out of DDP's gradient buckets, so no method needs find_unused_parameters.
    """
    if not ctx.enabled:
        return method
    from torch.nn.parallel import DistributedDataParallel
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(method, device_ids=ids, **_buffers_synced_at_start_only(method))


def _buffers_synced_at_start_only(method: torch.nn.Module) -> dict:
    """DDP keyword arguments for buffers broadcast at construction and never again."""
    from torch.nn.parallel import DistributedDataParallel
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}  # torch >= 2.13: still broadcast at construction
    # older torch: broadcast_buffers=False skips the construction broadcast too, so do it here
    for buffer in method.buffers():
        dist.broadcast(buffer, src=0)
    return {"broadcast_buffers": False}


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


def step_consensus(loss: torch.Tensor, stop_requested: bool, ctx: DistContext) -> tuple[float, bool]:
    """(mean loss over ranks, whether any rank was asked to stop), in one all-reduce.

    Every rank gets the same answer, so all take the same branch (diverged, interrupted, go
    on) after the same step and none is left waiting in a collective.
    """
    if not ctx.enabled:
        return loss.item(), stop_requested
    both = torch.stack([loss.detach().float().reshape(()),
                        torch.tensor(float(stop_requested), device=loss.device)])
    dist.all_reduce(both, op=dist.ReduceOp.SUM)
    return (both[0] / ctx.world_size).item(), bool(both[1].item() > 0)
