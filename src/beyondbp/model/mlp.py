"""The fully-connected track's model: an MLP classifier of tanh (relu, sigmoid) layers.

`MLPClassifier` exposes the same parts as the GPT (`embed`, `blocks`, `head`, `loss_fn`), so
the same training methods train it; one "token" is one example in its compute counts (the
counts without building it: `beyondbp.model.shape.mlp_n_params`, `mlp_forward_flops`). Its
data sets live in `beyondbp.data.images`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import MLPConfig
from .parts import BlockStack
from .shape import resolve_mlp_config

ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "sigmoid": torch.sigmoid}  # one per MLP_ACTIVATIONS


class DenseLayer(nn.Module):
    """h = f(W x + b): one hidden layer, the unit methods treat as a block."""

    def __init__(self, n_in: int, n_out: int, activation: str):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.activation](self.linear(x))

    def forward_flops_per_token(self) -> int:
        return 2 * self.linear.in_features * self.linear.out_features


class MLPClassifier(BlockStack):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        resolve_mlp_config(cfg)
        self.config = cfg
        widths = [cfg.n_inputs] + [cfg.width] * cfg.depth
        self.blocks = nn.ModuleList(DenseLayer(a, b, cfg.activation) for a, b in zip(widths, widths[1:]))
        self.output = nn.Linear(widths[-1], cfg.n_classes)

    # --- parts, for training methods -------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(x)

    @property
    def projector(self) -> nn.Linear:
        """The linear map from the last block's output to the class scores."""
        return self.output

    # --- counts (per example) ----------------------------------------------------------
    def n_params_nonembedding(self) -> int:
        return self.n_params()  # no embedding tables: every parameter is in a matmul

    def block_forward_flops_per_token(self, index: int = -1) -> int:
        return self.blocks[index].forward_flops_per_token()

    def head_forward_flops_per_token(self) -> int:
        return 2 * self.output.in_features * self.output.out_features

    def forward_flops_per_token(self) -> int:
        return sum(b.forward_flops_per_token() for b in self.blocks) + self.head_forward_flops_per_token()

    def flops_per_token(self) -> dict[str, int]:
        """BP training FLOPs per example: 6N and the exact count (backward = 2x forward)."""
        return {"6N": 6 * self.n_params(), "exact": 3 * self.forward_flops_per_token()}
