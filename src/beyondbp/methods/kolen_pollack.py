"""Kolen-Pollack learning (Kolen and Pollack 1994; Akrout et al. 2019, "Deep learning without weight
transport"): feedback alignment whose feedback matrices learn.

The backward is `fa`'s: every linear layer sends the gradient to its input through a feedback
matrix B of its weight's shape instead of W itself. Here each B is a parameter of the method
(not trained by any gradient of its own) that receives, at every step, the very update of its
weight W: after the backward (`after_backward`) B's gradient is W's (averaged, clipped), and
B sits in an optimizer group of its own (`parameter_groups`) with W's AdamW settings and weight
decay (times `method.feedback_decay`). With equal gradients and equal moments AdamW moves B and
W alike, and the decay shrinks their difference by (1 - lr x decay) each step, so B converges
to W and the backward to backpropagation's. The mean cosine of B with W over the linear layers
is logged at every step (`feedback_alignment`, in metrics.jsonl under `method/`).

Compute: FA's (BP's work with another matrix) plus one O(N) update of B per step.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import StepInfo
from .fa import FeedbackAlignment, _buffer_name
from .registry import register
from .settings import FEEDBACK_DECAY, FEEDBACK_SCALE


@register
class KolenPollack(FeedbackAlignment):
    name = "kolen_pollack"
    summary = "Kolen-Pollack: FA whose feedback matrices get their weights' updates and decay; compute 6ND"
    supports = ("gpt",)
    settings = (FEEDBACK_SCALE, FEEDBACK_DECAY)

    def __init__(self, model, cfg, seed=0):
        super().__init__(model, cfg, seed)
        for module_name in self.linear_names:  # FA's fixed buffers become parameters the optimizer moves
            key = _buffer_name(module_name)
            self.register_parameter(key, nn.Parameter(self._buffers.pop(key), requires_grad=False))

    def parameter_groups(self) -> list[dict]:
        return [{"params": list(self.feedback_matrices().values()), "weight_decay_scale": self.cfg.feedback_decay}]

    def pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(forward weight W, its feedback matrix B) of every linear layer."""
        return [(self.model.get_submodule(n).weight, b) for n, b in self.feedback_matrices().items()]

    def after_backward(self, step: StepInfo) -> None:
        for weight, feedback in self.pairs():
            feedback.grad = None if weight.grad is None else weight.grad.detach().clone()

    def after_optimizer_step(self, step: StepInfo) -> None:
        with torch.no_grad():
            cosines = [torch.nn.functional.cosine_similarity(w.flatten().float(), b.flatten().float(), dim=0)
                       for w, b in self.pairs()]
        self.log("feedback_alignment", torch.stack(cosines).mean())
