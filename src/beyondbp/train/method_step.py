"""The step as a method sees it: the dispatch between the simple case and the step API.

The simple case (`forward -> (loss, objective)`, one `objective.backward()`) runs exactly the
shared step of `step` (`accumulate_gradients`, then `apply_update`'s clip, AdamW step and
cleared gradients), so a method that uses none of the step API trains bit for bit as before.
Around it, for a method that asks (`methods.base`):

- `build_optimizer`: AdamW over the trainable parameters, plus the method's own groups
  (`parameter_groups`) with their own weight decay (train.weight_decay times
  `weight_decay_scale` unless given), betas, eps and `lr_scale`;
- `compute_update`: a method with `uses_backward = False` gives each micro-batch's update
  itself (`update_without_backward`, under `torch.no_grad()` and autocast); it is averaged into
  `.grad` over micro-batches and, under DDP, all-reduced over the ranks;
- `finish_update`: clip, `after_backward`, the optimizer step, cleared gradients,
  `after_optimizer_step`, each hook given the step's `StepInfo`;
- `MethodMetrics`: what the method `log`s, averaged over the steps between evaluations, kept in
  the checkpoint so a resumed run logs the rows an uninterrupted one would;
- `measured_flops_per_token`: one step's FLOPs counted on the final weights, for summary.json.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ..config import RunConfig
from ..methods.base import StepInfo, overridden
from .step import accumulate_gradients, apply_update, autocast_context, make_optimizer

GROUP_KEYS = ("params", "weight_decay", "weight_decay_scale", "betas", "eps", "lr_scale")


def build_optimizer(cfg: RunConfig, method) -> torch.optim.Optimizer:
    """`step.make_optimizer` over the trainable parameters, then the method's own groups."""
    optimizer = make_optimizer(cfg, method.trainable_parameters())
    trainable = {id(p) for p in method.trainable_parameters()}
    for index, group in enumerate(method.parameter_groups()):
        unknown = sorted(set(group) - set(GROUP_KEYS))
        params = list(group.get("params", ()))
        if unknown or not params:
            raise TypeError(f"{type(method).__name__}.parameter_groups()[{index}]: a group is {{'params': [...]}} "
                            f"with any of {', '.join(GROUP_KEYS[1:])}" + (f"; unknown {unknown}" if unknown else ""))
        if any(id(p) in trainable for p in params):
            raise TypeError(f"{type(method).__name__}.parameter_groups()[{index}]: holds a parameter that "
                            f"trainable_parameters() yields too (give it requires_grad=False)")
        settings = {k: v for k, v in group.items() if k not in ("params", "weight_decay_scale")}
        settings.setdefault("weight_decay", cfg.train.weight_decay * group.get("weight_decay_scale", 1.0))
        optimizer.add_param_group({**settings, "params": params, "lr": cfg.train.lr})
    return optimizer


def set_rates(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group at the schedule's rate, times its `lr_scale` where a method's group has one."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr


def compute_update(wrapped, method, x: torch.Tensor, y: torch.Tensor, cfg: RunConfig, device: torch.device,
                   accum: int, info: StepInfo, reduce: bool = True) -> torch.Tensor:
    """The step's update in `.grad` and its mean loss (a tensor): by one backward per micro-batch
    (`step.accumulate_gradients`), or by the method's `update_without_backward`."""
    if method.uses_backward:
        return accumulate_gradients(wrapped, x, y, cfg, device, accum)
    micro_seqs = x.shape[0] // accum
    step_loss = 0.0
    for micro in range(accum):
        rows = slice(micro * micro_seqs, (micro + 1) * micro_seqs)
        xs, ys = x[rows].to(device, non_blocking=True), y[rows].to(device, non_blocking=True)
        here = StepInfo(info.step, info.lr, micro, accum)
        with torch.no_grad(), autocast_context(cfg, device):
            loss, updates = method.update_without_backward(xs, ys, here)
            for param, update in updates:
                update = update.to(param.dtype) / accum
                param.grad = update if param.grad is None else param.grad.add_(update)
        step_loss += loss.detach().float() / accum
    if reduce and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        _average_over_ranks(method)
    return step_loss


def _average_over_ranks(method) -> None:
    world = dist.get_world_size()
    for param in method.trainable_parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad.div_(world)


def finish_update(method, optimizer: torch.optim.Optimizer, grad_clip: float, info: StepInfo) -> None:
    """Clip, `after_backward`, the optimizer step, cleared gradients, `after_optimizer_step`;
    without hooks exactly `step.apply_update`."""
    if not (overridden(type(method), "after_backward") or overridden(type(method), "after_optimizer_step")):
        apply_update(method, optimizer, grad_clip)
        return
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(list(method.trainable_parameters()), grad_clip)
    method.after_backward(info)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    method.after_optimizer_step(info)


class MethodMetrics:
    """The method's logged scalars, summed over the steps since the last evaluation."""

    def __init__(self):
        self.sums: dict[str, list] = {}

    def add(self, method) -> None:
        for name, (total, count) in method.take_logged().items():
            mine = self.sums.setdefault(name, [0.0, 0])
            mine[0] = mine[0] + total
            mine[1] += count

    def take(self) -> dict:
        """{"method": {name: mean}} for a metrics row ({} when nothing was logged), and start over."""
        means = {name: float(total) / count for name, (total, count) in sorted(self.sums.items()) if count}
        self.sums = {}
        return {"method": means} if means else {}

    def state(self) -> dict:
        return {name: [float(total), count] for name, (total, count) in self.sums.items()}

    def restore(self, saved: dict | None) -> None:
        self.sums = {str(name): [float(total), int(count)] for name, (total, count) in (saved or {}).items()}


def measured_flops_per_token(method, x: torch.Tensor, y: torch.Tensor, cfg: RunConfig, device) -> float:
    """The FLOPs one update of the method takes on (x, y), per token, by FlopCounterMode (matmuls
    and attention, its math path): what the exact count declares. Gradients, RNG states and the
    method's logged values are left as they were; the weights are not changed."""
    from .alignment import _Preserved
    params = list(method.parameters())
    with _Preserved(params) as preserved, method.unlogged():
        preserved.clear_grads()
        x, y = x.to(device), y.to(device)
        with FlopCounterMode(display=False) as counter, sdpa_kernel([SDPBackend.MATH]):
            compute_update(method, method, x, y, cfg, device, 1, StepInfo(0, cfg.train.lr), reduce=False)
    return counter.get_total_flops() / y.numel()


def per_token_record(method, declared: dict, data, cfg: RunConfig, device, measure: bool) -> dict:
    """summary.json's `flops_per_token`: the method's declared count under each accounting and,
    for a completed run, `measured_exact` (`measured_flops_per_token` on the first training
    sequence, the final weights)."""
    record = {key: float(value) for key, value in declared.items()}
    if measure:
        x, y = data.train_batch(0, 1, cfg.model.context, cfg.seed)
        record["measured_exact"] = measured_flops_per_token(method, x[:1], y[:1], cfg, device)
    return record
