"""Backpropagation: the reference every alternative is measured against."""
from __future__ import annotations

from .registry import register
from .base import TrainingMethod


@register
class Backprop(TrainingMethod):
    name = "bp"
    summary = "backpropagation (reference); compute 6ND"
    supports = ("gpt", "mlp")
    settings = ()

    def forward(self, idx, targets):
        _, loss = self.model(idx, targets)
        return loss, loss

    def compute_per_token(self):
        flops = self.model.flops_per_token()
        return {"paper": flops["6N"], "optimistic": flops["6N"], "exact": flops["exact"]}
