"""The small interface every training method implements.

A method decides how gradients are made; the loop, optimizer and data are shared. A method
is an `nn.Module` that wraps the model, so that parallel wrappers (DDP) and checkpoints treat
its fixed feedback matrices (registered buffers) like any other state: `forward(idx, targets)`
returns `(loss, objective)`, and one `objective.backward()` leaves the method's update in every
trainable parameter's `.grad`. `loss` is the true cross-entropy, for logging.

A subclass states `name`, `summary`, `supports` and `settings` (its `method.*` settings,
`settings.Setting`) and may state `train_defaults` (its defaults for training keys, applied
below a config's and the command line's values). A built-in one states them as literal class
attributes: the torch-free catalogue (`catalogue`) reads them from the source.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterator

import torch
import torch.nn as nn

from ..config import MethodConfig
from .settings import Setting


class TrainingMethod(nn.Module):
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for `beyondbp methods`
    supports: ClassVar[tuple[str, ...]] = ("gpt",)  # model kinds this method can train
    settings: ClassVar[tuple[Setting, ...]] = ()  # its method.* settings, read as cfg.<name>
    train_defaults: ClassVar[dict[str, Any]] = {}  # dotted training keys -> this method's default

    def __init__(self, model: nn.Module, cfg: MethodConfig, seed: int = 0):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.seed = seed

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The model's trainable parameters, then the method's own (auxiliary heads, predictors)."""
        return (p for p in self.parameters() if p.requires_grad)

    def compute_per_token(self) -> dict[str, float]:
        """Training FLOPs per token under each accounting: 'paper', 'optimistic' and 'exact'."""
        raise NotImplementedError

    def block_names(self) -> list[str]:
        """Names of the units alignment is reported for, matching `block_parameters`."""
        return [f"block{i}" for i in range(len(self.model.blocks))]

    def block_parameters(self) -> list[list[nn.Parameter]]:
        return [list(b.parameters()) for b in self.model.blocks]

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the run seed, for fixed random feedback matrices."""
        return torch.Generator().manual_seed(10_007 * (self.seed + 1) + offset)
