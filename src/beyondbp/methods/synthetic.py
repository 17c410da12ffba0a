"""Synthetic gradients: decoupled neural interfaces (Jaderberg et al. 2017).

Every block but the last has a small module M_k (`GradientPredictor`) that predicts
dLoss/d(out_k) from the block output (and, with `method.sg_conditional`, the default, the
position's target: the paper's conditional cDNI). It is zero at initialisation, as in the paper,
so training starts as the shallow baseline. It predicts each position's gradient in the scale of
that position's own loss (n times the gradient of the mean loss over n positions), so that its
targets are O(1) whatever the batch. Block k updates at once from that prediction:
dW_k = J_k^T M_k(out_k), its own backward within the block, nothing from above. M_k learns to
match the gradient that actually reaches out_k from above: through the last block, the true
gradient; through block k+1 < L-1, block k+1's backward of *its* synthetic gradient (the
paper's bootstrapping). The last block and the head learn from the true loss.

The predictor's form: M(out, y) = c / s, with the code c = W LN(out) + b [+ E[y]] (LN without
parameters) and s = sigma(out), the output's per-position standard deviation
(`method.sg_scale_aware`, the default; off: s = 1, the form that fails on our models). Every
path from the Pre-LN stream into the network passes a LayerNorm, whose backward scales as
1 / sigma, so the gradient at out is about (something of LN(out)) / sigma. A predictor that sees
LN(out) cannot know sigma; this one predicts the scale-free sigma x gradient instead, and is fitted
by 1/2 mean ||c - n s g||^2. It is still a function of the block output (and the target) alone,
as the paper's predictors are. Measured on `model.n_layer=4 model.d_model=64 model.n_head=4`,
2M tokens: the predictor above the last block fits its target to cosine 0.5-0.8 with s, 0.2
without, and the method leaves the unigram plateau only with s (docs/results.md).

All of it happens in one `objective.backward()`: block k+1's input is `SyntheticGradientTap`,
an identity on out_k (detached) that in the backward receives g = the gradient at block k+1's
input and hands the code c the gradient c / n - s g, from which autograd computes M_k's weight
gradient. No hooks, no second backward, so DDP works.

The embedding belongs to the first block's module and learns through block 0's backward.

Compute per token: every block computes its input gradient (the targets come from it), so the
model's forward and backward cost what BP's do (6N, and BP's exact count); each predictor adds
its forward (2 d^2) and weight gradient (2 d^2): paper and exact counts + 4 d^2 (L - 1) (the
LayerNorm and the target vectors' lookup neglected).

Without the target term the predictor fails on our models (docs/results.md): early in training the true
gradient is nearly the same at every position, the predictor learns that constant, the blocks
push every position the same way until all carry one vector (`residual_common` 1.0), and a
predictor that sees equal inputs can only predict equal gradients, so it stays there.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register
from .settings import SG_CONDITIONAL, SG_SCALE_AWARE
from .base import TrainingMethod


class SyntheticGradientTap(torch.autograd.Function):
    """Identity on x; in the backward, the gradient g reaching it trains the predictor's code c
    toward n s g (n: positions in the batch; s: the scale the code is divided by), through the
    gradient c / n - s g of 1/2 mean ||c - n s g||^2."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, code: torch.Tensor, scale: torch.Tensor):
        ctx.save_for_backward(code, scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        code, scale = ctx.saved_tensors
        positions = code.shape[:-1].numel()
        return None, code / positions - scale * grad.to(code.dtype), None


class GradientPredictor(nn.Module):
    """M(out, y) = c / s with the code c = W LN(out) + b [+ E[y]]: a linear map of the
    parameter-free LayerNorm of the block output, plus (conditional, the paper's cDNI) a learned
    vector per target class, all zero at initialisation; s = the output's per-position standard
    deviation (scale-aware) or 1. The LayerNorm keeps the code's scale from following the
    output's (a raw linear map of a growing residual stream predicts ever larger gradients, which
    grow the stream further); s restores the 1 / sigma a LayerNorm's backward puts into the true
    gradient; the target term lets positions with equal outputs get different gradients."""

    def __init__(self, width: int, n_targets: int | None, scale_aware: bool = True):
        super().__init__()
        self.scale_aware = scale_aware
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.linear = nn.Linear(width, width)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.by_target = None
        if n_targets is not None:
            self.by_target = nn.Embedding(n_targets, width)
            nn.init.zeros_(self.by_target.weight)

    def forward(self, out: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(code, scale): the predicted gradient is code / scale."""
        code = self.linear(self.norm(out))
        if self.by_target is not None:
            code = code + self.by_target(targets)
        if self.scale_aware:  # the LayerNorm's own sigma, eps included
            scale = (out.var(-1, unbiased=False, keepdim=True) + self.norm.eps).sqrt()
        else:
            scale = out.new_ones(out.shape[:-1] + (1,))
        return code, scale


@register
class SyntheticGradients(TrainingMethod):
    name = "synthetic"
    summary = "synthetic gradients: each block updates from a learned prediction of its gradient; compute 6ND + predictors"
    supports = ("gpt", "mlp")
    settings = (SG_CONDITIONAL, SG_SCALE_AWARE)
    train_defaults = {"train.lr": 1e-3}  # at the shared 6e-3 it stays on the unigram plateau (docs/results.md)

    def __init__(self, model, cfg, seed=0):
        super().__init__(model, cfg, seed)
        width = model.projector.in_features
        n_targets = model.projector.out_features if cfg.sg_conditional else None
        self.predictors = nn.ModuleList(GradientPredictor(width, n_targets, cfg.sg_scale_aware)
                                        for _ in model.blocks[:-1])

    def forward(self, idx, targets):
        model = self.model
        h = model.embed(idx)
        synthetic = []
        for block, predictor in zip(model.blocks[:-1], self.predictors):
            out = block(h)
            code, scale = predictor(out.detach(), targets)  # per position, in the scale of its own loss
            positions = out.shape[:-1].numel()
            synthetic.append((out * (code.detach() / scale)).sum() / positions)  # block update: J^T prediction / n
            h = SyntheticGradientTap.apply(out.detach(), code, scale)
        loss = model.loss_fn(model.head(model.blocks[-1](h)), targets)
        return loss, loss + sum(synthetic)

    def compute_per_token(self):
        flops = self.model.flops_per_token()
        width = self.model.projector.in_features
        predictors = (len(self.model.blocks) - 1) * 4 * width * width
        return {"paper": flops["6N"] + predictors, "optimistic": flops["6N"] + predictors,
                "exact": flops["exact"] + predictors}
