"""`build_model`: the model a `ModelConfig` (a GPT) or an `MLPConfig` (the MLP track's) describes."""
from __future__ import annotations

from ..config import ConfigError, MLPConfig, ModelConfig


def build_model(cfg: ModelConfig | MLPConfig, init_weights: bool = True):
    """init_weights=False (GPT only) leaves PyTorch's default initialisation, for counting on the
    meta device. A run's config gives its model's section as `config_mlp.shape_section`."""
    if isinstance(cfg, MLPConfig):
        from .mlp import MLPClassifier
        return MLPClassifier(cfg)
    if cfg.kind == "gpt":
        from .gpt import GPT
        return GPT(cfg, init_weights)
    if cfg.kind == "mlp":
        raise ConfigError("model.kind: an MLP's shape is the run's mlp section (build_model(cfg.mlp))")
    raise ConfigError(f"model.kind: unknown kind {cfg.kind!r} (valid: gpt, mlp)")
