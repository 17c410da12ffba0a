"""The registry of training methods: name -> class, for building a run's method.

Each method module here registers its `TrainingMethod` subclass with `@register`. The modules
are imported the first time a method is looked up; which ones, the torch-free catalogue
(`catalogue`) says, so a new method is one new file here and nothing else changes.
"""
from __future__ import annotations

import importlib

from ..config import ConfigError, MethodConfig
from .base import TrainingMethod
from .catalogue import catalogue

REGISTRY: dict[str, type[TrainingMethod]] = {}
_discovered = False  # importing one method module directly must not stop the others being found


def register(cls: type[TrainingMethod]) -> type[TrainingMethod]:
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _discovered
    _discovered = True
    package = __name__.rpartition(".")[0]
    for module in sorted({info.module for info in catalogue().values()}):
        importlib.import_module(f"{package}.{module}")


def available() -> dict[str, type[TrainingMethod]]:
    if not _discovered:
        _discover()
    return dict(sorted(REGISTRY.items()))


def get_method_class(name: str) -> type[TrainingMethod]:
    methods = available()
    if name not in methods:
        raise ConfigError(f"method: unknown method {name!r} (valid: {', '.join(methods)})")
    return methods[name]


def build_method(model, cfg: MethodConfig, seed: int = 0, model_kind: str = "gpt") -> TrainingMethod:
    cls = get_method_class(cfg.name)
    if model_kind not in cls.supports:
        raise ConfigError(f"method: {cfg.name!r} cannot train model.kind={model_kind!r} "
                          f"(it supports: {', '.join(cls.supports)})")
    return cls(model, cfg, seed)
