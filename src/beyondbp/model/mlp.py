"""The fully-connected track: an MLP classifier and its small image datasets.

`MLPClassifier` exposes the same parts as the GPT (`embed`, `blocks`, `head`, `loss_fn`), so
the same training methods train it; one "token" is one example in its compute counts.
Datasets: scikit-learn's bundled 8x8 digits (offline, the default), MNIST and Fashion-MNIST
through torchvision. Inputs are standardised per feature with the training split's statistics.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError, DataConfig, ModelConfig, check_choice

ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "sigmoid": torch.sigmoid}
DIGITS_TEST_FRACTION = 0.25
SPLIT_SEED = 0  # the train/test split is the same for every run seed


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


class MLPClassifier(nn.Module):
    def __init__(self, cfg: ModelConfig):
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

    @staticmethod
    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.dtype in (torch.float16, torch.bfloat16):  # autocast: the loss in float32
            logits = logits.float()
        return F.cross_entropy(logits, targets)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        logits = self.head(h)
        return logits, None if targets is None else self.loss_fn(logits, targets)

    # --- counts (per example) ----------------------------------------------------------
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

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


def resolve_mlp_config(cfg: ModelConfig, n_inputs: int | None = None, n_classes: int | None = None) -> ModelConfig:
    """Take input and class counts from the dataset (unless set); validate the shape."""
    if n_inputs is not None and cfg.n_inputs is None:
        cfg.n_inputs = n_inputs
    if n_classes is not None and cfg.n_classes is None:
        cfg.n_classes = n_classes
    check_choice("model.activation", cfg.activation, ACTIVATIONS, "activation")
    for name in ("depth", "width", "n_inputs"):
        if getattr(cfg, name) is None or getattr(cfg, name) < 1:
            raise ConfigError(f"model.{name}: must be >= 1, got {getattr(cfg, name)}")
    if cfg.n_classes is None or cfg.n_classes < 2:
        raise ConfigError(f"model.n_classes: must be >= 2, got {cfg.n_classes}")
    return cfg


# --- datasets ---------------------------------------------------------------------------
@dataclass
class ImageData:
    train_x: torch.Tensor  # [n, features], standardised
    train_y: torch.Tensor  # [n], class indices
    test_x: torch.Tensor
    test_y: torch.Tensor
    n_classes: int

    @property
    def n_inputs(self) -> int:
        return self.train_x.shape[1]


def cache_dir(cfg: DataConfig) -> Path:
    root = cfg.cache_dir or os.environ.get("BEYONDBP_CACHE") or Path.home() / ".cache" / "beyondbp"
    return Path(root)


def load_image_data(cfg: DataConfig) -> ImageData:
    loaders = {"digits": _load_digits, "mnist": _load_torchvision, "fashion_mnist": _load_torchvision}
    if cfg.dataset not in loaders:
        raise ConfigError(f"data.dataset: unknown dataset {cfg.dataset!r} (valid: {', '.join(loaders)})")
    train_x, train_y, test_x, test_y = loaders[cfg.dataset](cfg)
    mean, std = train_x.mean(0), train_x.std(0)
    std = np.where(std > 1e-8, std, 1.0)  # constant pixels (image borders) stay at zero
    as_x = lambda a: torch.from_numpy(((a - mean) / std).astype(np.float32))  # noqa: E731
    as_y = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))  # noqa: E731
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    return ImageData(as_x(train_x), as_y(train_y), as_x(test_x), as_y(test_y), n_classes)


def _load_digits(cfg: DataConfig):
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ConfigError("data.dataset: digits needs scikit-learn (pip install 'beyondbp[mlp]')") from None
    digits = load_digits()
    x, y = digits.data.astype(np.float64), digits.target
    train_x, test_x, train_y, test_y = train_test_split(x, y, test_size=DIGITS_TEST_FRACTION, stratify=y,
                                                        random_state=SPLIT_SEED)
    return train_x, train_y, test_x, test_y


def _load_torchvision(cfg: DataConfig):
    try:
        import torchvision
    except ImportError:
        raise ConfigError(f"data.dataset: {cfg.dataset} needs torchvision (pip install torchvision)") from None
    cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST}[cfg.dataset]
    root = cache_dir(cfg) / "torchvision"
    try:
        splits = [cls(root=str(root), train=train, download=True) for train in (True, False)]
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"data.dataset: cannot load {cfg.dataset} into {root} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    arrays = []
    for split in splits:
        arrays += [split.data.reshape(len(split.data), -1).numpy().astype(np.float64) / 255.0,
                   split.targets.numpy()]
    return tuple(arrays)
