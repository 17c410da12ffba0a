"""The MLP track's image data sets as standardised arrays: digits, MNIST, Fashion-MNIST.

scikit-learn's bundled 8x8 digits (offline, the default), MNIST and Fashion-MNIST through
torchvision (downloaded under the cache folder, `cache.cache_base`). Inputs are standardised per
feature with the training split's statistics; the train/test split of digits is the same for
every run seed. Arrays, not tensors: planning a study asks a data set's shape
(`image_data_shape`) without loading torch; the MLP loop makes tensors of them.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass

import numpy as np

from ..config import ConfigError, DataConfig
from .cache import cache_base

DIGITS_TEST_FRACTION = 0.25
SPLIT_SEED = 0  # the train/test split is the same for every run seed


@dataclass
class ImageData:
    train_x: np.ndarray  # [n, features] float32, standardised
    train_y: np.ndarray  # [n] int64 class indices
    test_x: np.ndarray
    test_y: np.ndarray
    n_classes: int

    @property
    def n_inputs(self) -> int:
        return self.train_x.shape[1]


def load_image_data(dataset: str, cfg: DataConfig) -> ImageData:
    """The data set `dataset` (a run's mlp.dataset); `cfg` gives the cache folder torchvision's go to."""
    loaders = {"digits": _load_digits, "mnist": _load_torchvision, "fashion_mnist": _load_torchvision}
    if dataset not in loaders:
        raise ConfigError(f"mlp.dataset: unknown dataset {dataset!r} (valid: {', '.join(loaders)})")
    train_x, train_y, test_x, test_y = loaders[dataset](dataset, cfg)
    mean, std = train_x.mean(0), train_x.std(0)
    std = np.where(std > 1e-8, std, 1.0)  # constant pixels (image borders) stay at zero
    as_x = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    as_y = lambda a: np.asarray(a, dtype=np.int64)  # noqa: E731
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    return ImageData(as_x(train_x), as_y(train_y), as_x(test_x), as_y(test_y), n_classes)


def image_data_shape(dataset: str, data_cfg: DataConfig) -> tuple[int, int, int]:
    """(inputs, classes, training examples) of a data set, loaded once per process."""
    return _image_data_shape(dataset, json.dumps(dataclasses.asdict(data_cfg), sort_keys=True))


@functools.lru_cache(maxsize=None)
def _image_data_shape(dataset: str, data_key: str) -> tuple[int, int, int]:
    data = load_image_data(dataset, DataConfig(**json.loads(data_key)))
    return data.n_inputs, data.n_classes, len(data.train_x)


def _load_digits(dataset: str, cfg: DataConfig):
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ConfigError("mlp.dataset: digits needs scikit-learn (pip install 'beyondbp[mlp]')") from None
    digits = load_digits()
    x, y = digits.data.astype(np.float64), digits.target
    train_x, test_x, train_y, test_y = train_test_split(x, y, test_size=DIGITS_TEST_FRACTION, stratify=y,
                                                        random_state=SPLIT_SEED)
    return train_x, train_y, test_x, test_y


def _load_torchvision(dataset: str, cfg: DataConfig):
    try:
        import torchvision
    except ImportError:
        raise ConfigError(f"mlp.dataset: {dataset} needs torchvision (pip install torchvision)") from None
    cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST}[dataset]
    root = cache_base(cfg) / "torchvision"
    try:
        splits = [cls(root=str(root), train=train, download=True) for train in (True, False)]
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"mlp.dataset: cannot load {dataset} into {root} "
                          f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    arrays = []
    for split in splits:
        arrays += [split.data.reshape(len(split.data), -1).numpy().astype(np.float64) / 255.0,
                   split.targets.numpy()]
    return tuple(arrays)
