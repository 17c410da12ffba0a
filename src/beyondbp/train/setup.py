"""The trainer set-up both loops share (`loop` for the Transformer track, `mlp_loop` for the MLP
track): the run seeded from its config, its model, the training method around the model, and
AdamW over the method's trainable parameters and its own parameter groups
(`method_step.build_optimizer`). Seeding here, first, is what makes a run's bits independent of
what the process trained before (`beyondbp.train.worker`)."""
from __future__ import annotations

import torch

from ..config import RunConfig
from ..config_mlp import shape_section
from ..methods.registry import build_method
from ..model.build import build_model
from .method_step import build_optimizer


def build_trainer(cfg: RunConfig, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
    """(model, method, optimizer) of a run, on `device`, after torch's generator is seeded with cfg.seed."""
    torch.manual_seed(cfg.seed)
    model = build_model(shape_section(cfg)).to(device)
    method = build_method(model, cfg.method, cfg.seed, cfg.model.kind).to(device)
    return model, method, build_optimizer(cfg, method)  # AdamW (decay on matrices only), then the method's own groups
