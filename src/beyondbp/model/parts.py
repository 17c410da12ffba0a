"""The parts every model kind shows the training methods: `embed`, `blocks`, `head`, `projector`
and `loss_fn`, with the one forward pass they make up."""
from __future__ import annotations

import torch
import torch.nn as nn

from .loss import cross_entropy


class BlockStack(nn.Module):
    """embed -> each of `blocks` -> head. A subclass defines `embed`, `blocks` (an nn.ModuleList),
    `head` and `projector`; the methods (DFA's feedback, shallow, local, synthetic and forward
    gradients) drive those parts themselves, and `forward` is the plain pass BP trains through."""
    loss_fn = staticmethod(cross_entropy)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        """(scores, the loss against targets or None)."""
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        logits = self.head(h)
        return logits, None if targets is None else self.loss_fn(logits, targets)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
