"""Alignment: how close a method's update is to the true backpropagation gradient.

`measure_alignment` gives, per block, the cosine similarity between the update the method
applies (its `objective.backward()`, or its `update_without_backward`) and the true BP gradient (the model's own loss backward),
for the same batch and weights. `hidden_signal_alignment` does the same for the signal each
block's OUTPUT receives (for DFA: B e against the backpropagated gradient there);
`signal_comparison` gives those signals row by row and any parameters' two gradients, from
which the MLP track's angles are made (`mlp_loop.measure_angles`).

Both leave training undisturbed: every `.grad` is put back (the very tensor objects), the CPU
and CUDA RNG states are restored (and reset before each pass, so both passes draw the same
dropout masks), and nothing else (train/eval mode, optimizer) is touched.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from ..methods.base import StepInfo


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors as flat vectors, in float64; 0.0 if either is zero."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    norms = a.norm() * b.norm()
    return 0.0 if norms == 0 else (a @ b / norms).item()


class _Preserved:
    """Saves grads and RNG states on entry, restores them on exit; `reset_rng()` in between."""

    def __init__(self, params: list[torch.nn.Parameter]):
        self.params = params

    def __enter__(self):
        self.grads = [p.grad for p in self.params]
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        return self

    def reset_rng(self):
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)

    def clear_grads(self):
        for p in self.params:
            p.grad = None

    def __exit__(self, *exc):
        self.reset_rng()
        for p, g in zip(self.params, self.grads):
            p.grad = g


def _flat_grad(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).detach().flatten().double()
                      for p in params])


def measure_alignment(method, x: torch.Tensor, y: torch.Tensor,
                      autocast: Callable[[], contextlib.AbstractContextManager] | None = None) -> dict[str, float]:
    """{block name: cos(method's update, true BP gradient)} over each block's parameters."""
    autocast = autocast or contextlib.nullcontext
    params = list(method.parameters())
    blocks = method.block_parameters()
    with _Preserved(params) as state, method.unlogged():
        state.clear_grads()
        method_update(method, x, y, autocast)
        updates = [_flat_grad(b) for b in blocks]

        state.reset_rng()
        state.clear_grads()
        with autocast():
            _, loss = method.model(x, y)
        loss.backward()
        true_grads = [_flat_grad(b) for b in blocks]
    return {name: cosine(u, g) for name, u, g in zip(method.block_names(), updates, true_grads)}


def method_update(method, x: torch.Tensor, y: torch.Tensor,
                  autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> torch.Tensor:
    """The method's update on one batch left in `.grad` (by its backward, or by its
    `update_without_backward` for a method that has none); its loss."""
    if getattr(method, "uses_backward", True):
        with autocast():
            loss, objective = method(x, y)
        objective.backward()
        return loss.detach()
    with torch.no_grad(), autocast():
        loss, updates = method.update_without_backward(x, y, StepInfo(0, 0.0))
        for param, update in updates:
            param.grad = update.to(param.dtype) if param.grad is None else param.grad.add_(update.to(param.dtype))
    return loss.detach()


def signal_comparison(method, x: torch.Tensor, y: torch.Tensor, params=()) -> tuple[dict[str, torch.Tensor], list]:
    """The method's signals against BP's on one batch, in one backward each.

    Returns ({"block{i}": cosine per row (token or example) between the signal at block i's
    output and BP's gradient there, rows where either is zero left out}, [(the method's update,
    BP's gradient) of each parameter in `params`, None where no gradient reaches it]). A block
    appears only if both passes call the block module (MLP and block-wise DFA do; per-layer DFA
    on a GPT composes the block's layers itself)."""
    params = list(params)
    with _Preserved(list(method.parameters())) as state:
        state.clear_grads()
        method_signals = _block_output_grads(method.model, lambda: method(x, y)[1])
        method_grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
        state.reset_rng()
        state.clear_grads()
        true_signals = _block_output_grads(method.model, lambda: method.model(x, y)[1])
        true_grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    rows = {name: row_cosines(signal, true_signals[name]) for name, signal in method_signals.items()
            if name in true_signals}
    return rows, list(zip(method_grads, true_grads))


def hidden_signal_alignment(method, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """{"block{i}": mean over rows (tokens/examples) of cos(signal at block i's output, BP's there)}
    (`signal_comparison`; 0.0 for a block whose rows all carry no signal)."""
    rows, _ = signal_comparison(method, x, y)
    return {name: cos.mean().item() if cos.numel() else 0.0 for name, cos in rows.items()}


def _block_output_grads(model, objective_fn) -> dict[str, torch.Tensor]:
    grads: dict[str, torch.Tensor] = {}

    def on_output(name):
        def hook(module, inputs, output):
            if output.requires_grad:
                output.register_hook(lambda g: grads.__setitem__(name, g.detach().clone()))
        return hook

    handles = [b.register_forward_hook(on_output(f"block{i}")) for i, b in enumerate(model.blocks)]
    try:
        objective_fn().backward()
    finally:
        for h in handles:
            h.remove()
    return grads


def row_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosines between matching rows of two [..., width] tensors, in float64, rows where either
    is zero (no direction) left out."""
    a, b = a.reshape(-1, a.shape[-1]).double(), b.reshape(-1, b.shape[-1]).double()
    keep = (a.norm(dim=1) > 0) & (b.norm(dim=1) > 0)
    return torch.nn.functional.cosine_similarity(a[keep], b[keep], dim=1)
