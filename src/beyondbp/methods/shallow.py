"""Shallow baseline: only the topmost block(s) and the head learn; the rest stays at initialisation.

It tells how much of a method's result the lower layers earn: a method whose lower layers learn
nothing useful is no better than this. The embeddings and the lower blocks are frozen
(requires_grad False) and run under no_grad, so no backward work is done there. The head is
every parameter outside the blocks that does not belong to an embedding table (GPT: final
LayerNorm and projector; MLP: output layer); with tied embeddings the shared matrix is the
projector and is trained.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..config import ConfigError
from .registry import register
from .settings import TRAIN_LAST_N
from .base import TrainingMethod


@register
class Shallow(TrainingMethod):
    name = "shallow"
    summary = "shallow baseline: only the top block(s) and head trained; compute 2ND"
    supports = ("gpt", "mlp")
    settings = (TRAIN_LAST_N,)

    def __init__(self, model, cfg, seed=0):
        super().__init__(model, cfg, seed)
        n_blocks = len(model.blocks)
        if not 1 <= cfg.train_last_n <= n_blocks:
            raise ConfigError(f"method.train_last_n: must be between 1 and the model's {n_blocks} blocks, "
                              f"got {cfg.train_last_n}")
        self.n_frozen_blocks = n_blocks - cfg.train_last_n
        trained = {id(p) for p in self._trained_parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in trained)

    def _trained_parameters(self) -> list[nn.Parameter]:
        top_blocks = self.model.blocks[self.n_frozen_blocks:]
        params = [p for block in top_blocks for p in block.parameters()]
        for name, module in self.model.named_modules():
            if name == "blocks" or name.startswith("blocks.") or isinstance(module, nn.Embedding):
                continue
            params += list(module.parameters(recurse=False))
        return params

    def forward(self, idx, targets):
        blocks = self.model.blocks
        with torch.no_grad():
            x = self.model.embed(idx)
            for block in blocks[:self.n_frozen_blocks]:
                x = block(x)
        for block in blocks[self.n_frozen_blocks:]:
            x = block(x)
        loss = self.model.loss_fn(self.model.head(x), targets)
        return loss, loss

    def block_names(self):
        return [f"block{i}" for i in range(self.n_frozen_blocks, len(self.model.blocks))]

    def block_parameters(self):
        return [list(b.parameters()) for b in self.model.blocks[self.n_frozen_blocks:]]

    def compute_per_token(self):
        model = self.model
        trained_forward = model.head_forward_flops_per_token() + sum(
            _block_forward_flops(model, i) for i in range(self.n_frozen_blocks, len(model.blocks)))
        two_n = model.flops_per_token()["6N"] // 3  # the paper's 2N: forward of everything, no backward
        return {"paper": two_n, "optimistic": two_n,
                "exact": model.forward_flops_per_token() + 2 * trained_forward}


def _block_forward_flops(model: nn.Module, index: int) -> int:
    block = model.blocks[index]
    if hasattr(block, "forward_flops_per_token"):  # MLP layers differ in width
        return block.forward_flops_per_token()
    return model.block_forward_flops_per_token()  # GPT blocks are all alike
