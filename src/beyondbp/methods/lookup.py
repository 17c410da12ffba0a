"""Which method a name means, what it declares, and a run's `method.*` settings checked against it.

A method name is one of
  - a built-in method (`catalogue`: read from this package's source, torch-free),
  - a method an installed package offers through the entry-point group `beyondbp.methods`
    (`[project.entry-points."beyondbp.methods"] NAME = "package.module:Class"`),
  - an importable class, `package.module:Class`, when the command's import rule lets it be
    imported (`import_policy`: typed on the command line, or opted in); otherwise a label.
Outside methods are imported to read their declarations (they import torch themselves); the
built-in ones never are, so spec validation, `study plan` and `study report` stay torch-free.
Every failure is one ConfigError naming the method: unknown, not importable, not a method,
a bad or unknown setting.
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import sys
from types import MappingProxyType

from ..config import ConfigError, MethodConfig
from . import import_policy
from .catalogue import MethodInfo, catalogue
from .settings import LEGACY_DEFAULTS, check_settings, unknown_setting

GROUP = "beyondbp.methods"
BASE = "beyondbp.methods.base"  # where TrainingMethod lives; loaded by any module that subclasses it


@functools.lru_cache(maxsize=None)
def installed() -> dict[str, importlib.metadata.EntryPoint]:
    """{name: entry point} of the methods installed packages offer (none is imported here)."""
    return {ep.name: ep for ep in sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: e.name)}


def known_names() -> list[str]:
    return [*catalogue(), *(n for n in installed() if n not in catalogue())]


def _import_class(path: str, key: str):
    module_name, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - any failure to import is the user's one line
        raise ConfigError(f"{key}: cannot import {path!r} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                          ) from None
    return obj


@functools.lru_cache(maxsize=None)  # packages_distributions() scans every installed package (~0.2 s)
def _distribution_version(module: str) -> str:
    top = module.partition(".")[0]
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def info_from_class(cls, key: str = "method", version: str | None = None, path: str | None = None) -> MethodInfo:
    """A method class's declarations as a MethodInfo; a ConfigError when `cls` is not a method."""
    base = sys.modules.get(BASE)
    if not isinstance(cls, type) or base is None or not issubclass(cls, base.TrainingMethod):
        raise ConfigError(f"{key}: {path or getattr(cls, '__qualname__', repr(cls))!r} is not a training method "
                          f"(a subclass of beyondbp.methods.base.TrainingMethod)")
    if not cls.name:
        raise ConfigError(f"{key}: {cls.__qualname__} does not state its name")
    try:
        settings = check_settings(cls.settings, cls.__qualname__)
    except TypeError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return MethodInfo(cls.name, cls.summary, tuple(cls.supports), settings, cls.__module__, cls.__qualname__,
                      MappingProxyType(dict(cls.train_defaults)), version or _distribution_version(cls.__module__))


def describe(name: str, key: str = "method") -> MethodInfo:
    """The MethodInfo a method name means; one ConfigError naming it when there is none. A
    `package.module:Class` that the command's import rule (`import_policy`) does not let it import
    is a `Label`, or refused in one line."""
    if name in catalogue():
        return catalogue()[name]
    if ":" in name and not import_policy.may_import(name, _installed_paths()):
        if import_policy.refuses():
            raise import_policy.refusal(name, key)
        return import_policy.label(name)
    return _describe(name, key)


def _installed_paths() -> set[str]:
    """The import paths of the built-in methods and of installed entry points: always importable."""
    return {*(info.origin for info in catalogue().values()), *(ep.value for ep in installed().values())}


@functools.lru_cache(maxsize=None)
def _describe(name: str, key: str) -> MethodInfo:
    if ":" in name:
        return info_from_class(_import_class(name, key), key, path=name)
    entry = installed().get(name)
    if entry is None:
        raise ConfigError(f"{key}: unknown method {name!r} (valid: {', '.join(known_names())}, "
                          f"or package.module:Class)")
    dist = entry.dist
    version = dist.version if dist is not None else None
    return info_from_class(_import_class(entry.value, f"{key}: {name} (entry point)"), key, version, entry.value)


def resolve_method(method: MethodConfig, prefix: str = "", info: MethodInfo | None = None) -> MethodConfig:
    """A copy of `method` with every setting checked and typed, defaults filled in, and the class's
    origin and version recorded; raises one ConfigError naming the first bad or unknown setting.
    Keys in messages carry `prefix` (`variants.x.`, a run's name)."""
    info = info or describe(method.name, f"{prefix}method")
    if isinstance(info, import_policy.Label):  # never imported: its settings are what the folder records
        return MethodConfig(method.name, method.origin, method.version, **method.settings)
    declared = {s.name: s for s in info.settings}
    resolved = {}
    for key, value in method.settings.items():
        if key not in declared:
            if LEGACY_DEFAULTS.get(key, object()) == value:  # an old config.yaml's record of a key
                continue
            raise unknown_setting(f"{prefix}method.{key}", method.name, info.settings)
        resolved[key] = declared[key].check(value, f"{prefix}method.{key}")
    values = {s.name: resolved.get(s.name, s.default) for s in info.settings}
    return MethodConfig(method.name, info.origin, info.version, **values)


def training_defaults(name: str) -> dict:
    """The method's defaults for training keys ({'train.lr': 1e-3}); {} for an unknown name (the
    name's own check reports it)."""
    try:
        return dict(describe(name).train_defaults)
    except ConfigError:
        return {}
