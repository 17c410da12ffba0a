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

from beyondbp.methods.api import POSITIVE, FeedbackLinearMode, Setting, TrainingMethod


class SignSymmetry(TrainingMethod):
    name = "sign_symmetry"
    summary = "uniform sign-concordant feedback: FA with B = sign(W) at uniform magnitude; compute 6ND"
    supports = ("gpt", "mlp")
    settings = (Setting("sign_scale", float, 1.0, "feedback magnitude relative to mean|W|", range=POSITIVE),)

    def forward(self, idx, targets):
        scale = self.cfg.sign_scale
        weights = [m.weight for m in self.model.modules() if isinstance(m, nn.Linear)]
        # FA's routing of every F.linear on these weights (by identity), with B = scale * mean|W| * sign(W)
        feedback = {id(w): scale * w.detach().abs().mean() * torch.sign(w.detach()) for w in weights}
        with FeedbackLinearMode(feedback):
            _, loss = self.model(idx, targets)
        return loss, loss

    def compute_per_token(self):
        flops = self.model.flops_per_token()  # BP's work with another matrix (the sign is O(N) per step)
        return {"paper": flops["6N"], "optimistic": flops["6N"], "exact": flops["exact"]}
