"""Greedy block-local learning (Belilovsky, Eickenberg, Oyallon 2019; decoupled: Belilovsky et al. 2020).

Every block but the last learns by backpropagation from its own auxiliary language-modelling
loss, computed from its output alone; nothing flows between blocks. The last block and the head
learn from the true loss, as with BP.

The auxiliary head of block k is a LayerNorm of its own (trained) followed by the model's projector
to the vocabulary with its gradient stopped: logits_k = LN_k(out_k) W_head^T, W_head detached. So
the heads add 2 d (LayerNorm) parameters per block and no projector of their own; the projector
learns only from the true loss. (On the MLP track the head is the output layer, gradient stopped,
without a LayerNorm.)

Each block's input is detached, so a block's backward stops at its input; the embedding belongs
to the first block's module and learns from block 0's auxiliary loss.

Compute per token: the blocks' and head's forward and backward as in BP (6N), plus each auxiliary
head's forward (2 d V: the projector's matmul) and its backward to the block output (2 d V; the
stopped projector gets no weight gradient) -> paper count 6N + 4 d V (L - 1); the exact count is
BP's exact count plus the same 4 d V (L - 1).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register
from .base import TrainingMethod


@register
class LocalLearning(TrainingMethod):
    name = "local"
    summary = "block-local learning: each block learns from its own auxiliary LM loss; compute 6ND + heads"
    supports = ("gpt", "mlp")
    settings = ()

    def __init__(self, model, cfg, seed=0):
        super().__init__(model, cfg, seed)
        self.transformer = hasattr(model, "lm_head")
        width = model.projector.in_features
        norms = [nn.LayerNorm(width) if self.transformer else nn.Identity() for _ in model.blocks[:-1]]
        self.aux_norms = nn.ModuleList(norms)

    def aux_logits(self, k: int, out: torch.Tensor) -> torch.Tensor:
        weight, bias = self.model.projector.weight, self.model.projector.bias
        return F.linear(self.aux_norms[k](out), weight.detach(), None if bias is None else bias.detach())

    def forward(self, idx, targets):
        model = self.model
        h = model.embed(idx)
        aux_losses = []
        for k, block in enumerate(model.blocks[:-1]):
            out = block(h)
            aux_losses.append(model.loss_fn(self.aux_logits(k, out), targets))
            h = out.detach()
        loss = model.loss_fn(model.head(model.blocks[-1](h)), targets)
        return loss, loss + sum(aux_losses)

    def aux_head_flops_per_token(self) -> int:
        """Forward of one auxiliary head plus its backward to the block output."""
        return 2 * self.model.head_forward_flops_per_token()

    def compute_per_token(self):
        flops = self.model.flops_per_token()
        heads = (len(self.model.blocks) - 1) * self.aux_head_flops_per_token()
        return {"paper": flops["6N"] + heads, "optimistic": flops["6N"] + heads, "exact": flops["exact"] + heads}
