"""`build_model`: the model a `ModelConfig` describes, by its kind (gpt | mlp)."""
from __future__ import annotations

from ..config import ConfigError, ModelConfig


def build_model(cfg: ModelConfig, init_weights: bool = True):
    """init_weights=False (GPT only) leaves PyTorch's default initialisation, for counting on the
    meta device."""
    if cfg.kind == "gpt":
        from .gpt import GPT
        return GPT(cfg, init_weights)
    if cfg.kind == "mlp":
        from .mlp import MLPClassifier
        return MLPClassifier(cfg)
    raise ConfigError(f"model.kind: unknown kind {cfg.kind!r} (valid: gpt, mlp)")
