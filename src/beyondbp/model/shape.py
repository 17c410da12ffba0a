"""A model's shape without building it: named sizes, validation, parameter and FLOP counts.

Pure Python (no torch), so that planning a study and reading its report need not build models.
`beyondbp.model.gpt.GPT` takes its FLOP counts from here; its parameter counts come from its own
parameters, and tests/test_model.py checks `n_params` here against them (and the MLP counts
against `MLPClassifier`'s).

- `n_params_nonembedding` excludes the token and position embeddings; the projector to the
  vocabulary counts (it is a matmul every token pays), also when it is tied.
- The exact FLOP count is 2 per multiply-accumulate of every matmul, attention scores and
  weighted sums included over the full context (what dense attention kernels compute);
  LayerNorm, softmax, biases and the optimizer are neglected.
"""
from __future__ import annotations

from ..config import CHOICES, ConfigError, MLPConfig, ModelConfig, check_choice

# name: (n_layer, d_model, n_head, context)
NAMED_SIZES: dict[str, tuple[int, int, int, int]] = {
    # CPU sizes (byte vocabulary): tens of thousands to a few million parameters
    "cpu-20k": (2, 24, 2, 128),
    "cpu-60k": (2, 48, 4, 128),
    "cpu-140k": (2, 64, 4, 128),
    "cpu-400k": (4, 88, 4, 128),
    "cpu-1m": (6, 112, 4, 128),
    "cpu-3m": (8, 176, 4, 128),
    # the paper's range: context 512, vocabulary 51,200, tied embeddings (57M to 509M parameters)
    "paper-57m": (7, 576, 9, 512),
    "paper-106m": (9, 768, 12, 512),
    "paper-204m": (12, 1024, 16, 512),
    "paper-362m": (15, 1280, 20, 512),
    "paper-509m": (18, 1408, 22, 512),
}
PAPER_VOCAB = 51_200
NORMS = ("pre", "post")


def resolve_model_config(cfg: ModelConfig, vocab_size: int | None = None) -> ModelConfig:
    """Apply a named size and the tokenizer's vocabulary; validate shapes."""
    if cfg.size is not None:
        if cfg.size not in NAMED_SIZES:
            raise ConfigError(f"model.size: unknown size {cfg.size!r} (valid: {', '.join(NAMED_SIZES)})")
        cfg.n_layer, cfg.d_model, cfg.n_head, cfg.context = NAMED_SIZES[cfg.size]
        if cfg.size.startswith("paper-"):
            cfg.tie_embeddings = True
    if vocab_size is not None and cfg.vocab_size is None:
        cfg.vocab_size = vocab_size
    check_choice("model.norm", cfg.norm, NORMS, "placement")
    for name in ("n_layer", "d_model", "n_head", "context", "mlp_ratio"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"model.{name}: must be >= 1, got {getattr(cfg, name)}")
    if cfg.d_model % cfg.n_head:
        raise ConfigError(f"model.d_model: {cfg.d_model} is not divisible by model.n_head={cfg.n_head}")
    if cfg.vocab_size is None or cfg.vocab_size < 2:
        raise ConfigError(f"model.vocab_size: must be >= 2, got {cfg.vocab_size}")
    return cfg


def block_forward_flops(cfg: ModelConfig) -> int:
    """Exact matmul FLOPs of one block's forward, per token, attention over the full context."""
    d, T, r = cfg.d_model, cfg.context, cfg.mlp_ratio
    linear = 2 * (3 * d * d + d * d + 2 * r * d * d)
    attention = 2 * 2 * T * d  # scores q.k and the weighted sum of values
    return linear + attention


def head_forward_flops(cfg: ModelConfig) -> int:
    return 2 * cfg.d_model * cfg.vocab_size


def forward_flops(cfg: ModelConfig) -> int:
    return cfg.n_layer * block_forward_flops(cfg) + head_forward_flops(cfg)


def n_params(cfg: ModelConfig) -> tuple[int, int]:
    """(all parameters, non-embedding parameters) of a resolved GPT config."""
    d, r, V, T, b = cfg.d_model, cfg.mlp_ratio, cfg.vocab_size, cfg.context, int(cfg.bias)
    layer_norm = d + b * d
    block = 2 * layer_norm + (3 * d * d + b * 3 * d) + (d * d + b * d) + (r * d * d + b * r * d) + (r * d * d + b * d)
    embeddings = V * d + T * d
    total = embeddings + cfg.n_layer * block + layer_norm + (0 if cfg.tie_embeddings else V * d)
    return total, total - T * d - (0 if cfg.tie_embeddings else V * d)


# --- the MLP classifier (model.kind=mlp; its shape is the config's `mlp` section) ---------------------
MLP_ACTIVATIONS = CHOICES["mlp.activation"][0]  # the one list, config's


def resolve_mlp_config(cfg: MLPConfig, n_inputs: int | None = None, n_classes: int | None = None) -> MLPConfig:
    """Take input and class counts from the dataset (unless set); validate the shape."""
    if n_inputs is not None and cfg.n_inputs is None:
        cfg.n_inputs = n_inputs
    if n_classes is not None and cfg.n_classes is None:
        cfg.n_classes = n_classes
    check_choice("mlp.activation", cfg.activation, MLP_ACTIVATIONS, "activation")
    for name in ("depth", "width", "n_inputs"):
        if getattr(cfg, name) is None or getattr(cfg, name) < 1:
            raise ConfigError(f"mlp.{name}: must be >= 1, got {getattr(cfg, name)}")
    if cfg.n_classes is None or cfg.n_classes < 2:
        raise ConfigError(f"mlp.n_classes: must be >= 2, got {cfg.n_classes}")
    return cfg


def mlp_widths(cfg: MLPConfig) -> list[int]:
    """Input, hidden and output widths of a resolved MLP config."""
    return [cfg.n_inputs] + [cfg.width] * cfg.depth + [cfg.n_classes]


def mlp_n_params(cfg: MLPConfig) -> int:
    """Parameters of a resolved MLP config (weights and biases; none is an embedding)."""
    widths = mlp_widths(cfg)
    return sum(a * b + b for a, b in zip(widths, widths[1:]))


def mlp_forward_flops(cfg: MLPConfig) -> int:
    """Exact matmul FLOPs of one example's forward (2 per multiply-accumulate)."""
    widths = mlp_widths(cfg)
    return sum(2 * a * b for a, b in zip(widths, widths[1:]))
