"""Uniform sign-concordant feedback (uSF; Liao, Leibo and Poggio 2016, "How important is weight
symmetry in backpropagation?"): feedback alignment whose feedback matrix for a weight W is not a
fixed random matrix but sign(W), every entry of one magnitude, recomputed from W at every step.

grad_x = grad_out @ B with B = s * mean|W| * sign(W); the weight's own gradient is exact given
that signal. The magnitude mean|W| keeps the signal at the size BP's would have; s is the
`method.sign_scale` setting. The work is BP's (6N per token): only the matrix differs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from beyondbp.config import POSITIVE
from beyondbp.methods.base import TrainingMethod
from beyondbp.methods.fa import FALinear
from beyondbp.methods.settings import Setting


class _SignFeedbackMode(TorchFunctionMode):
    """Routes F.linear on the model's own weights through FALinear with B = scale * mean|W| * sign(W)."""

    def __init__(self, weights: set[int], scale: float):
        super().__init__()
        self.weights, self.scale = weights, scale

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight, bias = _linear_args(*args, **kwargs)
            if id(weight) in self.weights:
                w = weight.detach()
                return FALinear.apply(x, weight, bias, self.scale * w.abs().mean() * torch.sign(w))
        return func(*args, **kwargs)


def _linear_args(input, weight, bias=None):
    return input, weight, bias


class SignSymmetry(TrainingMethod):
    name = "sign_symmetry"
    summary = "uniform sign-concordant feedback: FA with B = sign(W) at uniform magnitude; compute 6ND"
    supports = ("gpt", "mlp")
    settings = (Setting("sign_scale", float, 1.0, "feedback magnitude relative to mean|W|", range=POSITIVE),)

    def forward(self, idx, targets):
        weights = {id(m.weight) for m in self.model.modules() if isinstance(m, nn.Linear)}
        with _SignFeedbackMode(weights, self.cfg.sign_scale):
            _, loss = self.model(idx, targets)
        return loss, loss

    def compute_per_token(self):
        flops = self.model.flops_per_token()  # BP's work with another matrix (the sign is O(N) per step)
        return {"paper": flops["6N"], "optimistic": flops["6N"], "exact": flops["exact"]}
