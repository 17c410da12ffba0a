"""The registry of training methods: name -> class, for building a run's method.

Each method module here registers its `TrainingMethod` subclass with `@register`. The modules
are imported the first time a method is looked up; which ones, the torch-free catalogue
(`catalogue`) says, so a new method is one new file here and nothing else changes. Methods from
outside (an entry point in `beyondbp.methods`, or `package.module:Class`) are found by `lookup`.
"""
from __future__ import annotations

import importlib

from ..config import ConfigError, MethodConfig
from .base import HOOKS, TrainingMethod, missing_compute, overridden
from .catalogue import catalogue
from .import_policy import Label, refusal
from .lookup import describe, info_from_class, resolve_method

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
    for module in sorted({info.module for info in catalogue().values()}):
        importlib.import_module(module)


def available() -> dict[str, type[TrainingMethod]]:
    if not _discovered:
        _discover()
    return dict(sorted(REGISTRY.items()))


def get_method_class(name: str) -> type[TrainingMethod]:
    """The class a method name means: registered here, installed (entry point) or `package.module:Class`."""
    methods = available()
    if name in methods:
        return methods[name]
    info = describe(name)  # imports an outside method's module, or raises one line naming it
    if isinstance(info, Label):  # building it would import a module only a file names
        raise refusal(name, "method")
    return getattr(importlib.import_module(info.module), info.class_name)


def resolve(cfg: MethodConfig) -> MethodConfig:
    """`lookup.resolve_method` for any method a run can name, classes registered here included."""
    if cfg.name in available() and cfg.name not in catalogue():  # registered by a test or a script
        return resolve_method(cfg, info=info_from_class(REGISTRY[cfg.name]))
    return resolve_method(cfg)


def check_complete(name: str) -> type[TrainingMethod]:
    """The class `name` means, refused in one line when it lacks what every training run calls
    (`compute_per_token`; `forward`, or `update_without_backward` with uses_backward = False)."""
    cls = get_method_class(name)
    needed = ["compute_per_token", "forward" if cls.uses_backward else "update_without_backward"]
    missing = [f"{method}()" for method in needed if not overridden(cls, method)]
    if missing:
        detail = missing_compute(cls) if missing[0] == "compute_per_token()" else \
            f"method {name!r} ({cls.__module__}:{cls.__qualname__}) does not define {missing[0]}"
        raise ConfigError(detail)
    return cls


def build_method(model, cfg: MethodConfig, seed: int = 0, model_kind: str = "gpt") -> TrainingMethod:
    """The method `cfg` names, built on `model` with its settings checked and defaults filled in."""
    cls = get_method_class(cfg.name)
    cfg = resolve(cfg)
    if model_kind not in cls.supports:
        raise ConfigError(f"method: {cfg.name!r} cannot train model.kind={model_kind!r} "
                          f"(it supports: {', '.join(cls.supports)})")
    uses = [hook for hook in HOOKS if overridden(cls, hook)]
    if model_kind != "gpt" and uses:  # the step API runs in the Transformer track's step only
        raise ConfigError(f"method: {cfg.name!r} uses the step API ({', '.join(uses)}), which only "
                          f"model.kind=gpt runs")
    return cls(model, cfg, seed)
