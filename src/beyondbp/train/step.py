"""One optimizer step as every trainer here takes it: the Transformer loop (`loop`), the MLP
epoch loop (`mlp_loop`) and `beyondbp bench`, which times this very code, so the benchmark
cannot drift from training. Also what they share around it: the device, autocast, AdamW and
the progress bar.

A step: `set_learning_rate`, `accumulate_gradients` (each micro-batch's forward under autocast
and one `objective.backward()`, averaged), then `apply_update` (clip, AdamW, zero the grads).
"""
from __future__ import annotations

import contextlib
import os
import sys

import torch

from ..config import ConfigError, RunConfig
from . import distributed as dist_utils


def make_optimizer(cfg: RunConfig, params) -> torch.optim.Optimizer:
    params = list(params)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel over all tensors instead of a Python loop per tensor (2x faster on CPU at 10M params)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params) or None
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2), fused=fused)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(cfg: RunConfig, say) -> None:
    """torch's intra-op threads from train.threads (0: left as is), never more than the usable cores:
    more threads than cores only wait on each other (docs/benchmarks.md, "Threads")."""
    threads = cfg.train.threads
    if threads <= 0:
        return
    cores = usable_cores()
    if threads > cores:
        say(f"note: train.threads={threads} is more than the {cores} cores this process may use; using {cores}")
        threads = cores
    torch.set_num_threads(threads)


def pick_device(cfg: RunConfig) -> torch.device:
    want = cfg.train.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but no CUDA device is available")
    if want not in ("cpu", "cuda"):
        raise ConfigError(f"train.device: unknown device {want!r} (valid: auto, cpu, cuda)")
    return torch.device(want)


def autocast_context(cfg: RunConfig, device: torch.device):
    dtype = cfg.train.dtype
    if dtype not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"train.dtype: unknown dtype {dtype!r} (valid: auto, float32, bfloat16)")
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def accumulate_gradients(wrapped, x: torch.Tensor, y: torch.Tensor, cfg: RunConfig, device: torch.device,
                         accum: int = 1) -> torch.Tensor:
    """Forward and backward of one batch (this process's rows) in `accum` micro-batches; the
    method's update is left in `.grad`, averaged. Returns the mean loss as a tensor (reading it
    is the caller's choice: it waits for the device). Under DDP only the last micro-batch
    synchronises gradients."""
    micro_seqs = x.shape[0] // accum
    step_loss = 0.0
    for micro in range(accum):
        rows = slice(micro * micro_seqs, (micro + 1) * micro_seqs)
        xs, ys = x[rows].to(device, non_blocking=True), y[rows].to(device, non_blocking=True)
        with dist_utils.maybe_no_sync(wrapped, micro < accum - 1), autocast_context(cfg, device):
            loss, objective = wrapped(xs, ys)
        (objective / accum).backward()
        step_loss += loss.detach().float() / accum
    return step_loss


def apply_update(method, optimizer: torch.optim.Optimizer, grad_clip: float) -> None:
    """Clip the gradient norm (grad_clip > 0), take the optimizer step, clear the gradients."""
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(list(method.trainable_parameters()), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def progress_bar(cfg: RunConfig, total: int, unit: str, initial: int = 0, enabled: bool = True,
                 unit_scale: bool = False):
    """A tqdm bar shown by train.progress (auto: only on a terminal); unit_scale: k/M suffixes."""
    from tqdm import tqdm
    mode = cfg.train.progress
    disable = not enabled or mode == "off" or (mode == "auto" and not sys.stderr.isatty())
    return tqdm(total=total, initial=initial, unit=unit, unit_scale=unit_scale, disable=disable,
                dynamic_ncols=True, leave=False)
