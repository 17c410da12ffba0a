"""The one run builder: a method, its settings, layers of keys and command-line overrides in; one
validated `RunConfig` out, its method resolved once.

Every path that makes a run builds it here: `beyondbp train` and `beyondbp mlp` (a config file and
KEY=VALUE overrides), study planning (the spec's layers, `beyondbp.study.plan`), and every
executor and chain, which read back the run.yaml they wrote (`load_run_file`).

Precedence, lowest first (the one place it is written down):

  1. RunConfig's defaults (`beyondbp.config`)
  2. the track's defaults (`config.TRACK_DEFAULTS`, by model.kind: the MLP track's optimizer)
  3. the method's `train_defaults` (Transformer runs only: they are tuned there)
  4. the layers, in order: a config file; a study's spec base, size, variant, per_method
  5. the overrides: the command line's KEY=VALUE; a study run's learning rate and seed

The method's name and the model's kind are read off the layers (the last one that sets them wins,
as it does when they are applied) before anything is built, so no throwaway config is made.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from ..config import TRACK_DEFAULTS, RunConfig, apply_mapping, load_yaml, parse_overrides, validate_config
from .lookup import resolve_method, training_defaults

_MISSING = object()
Layer = tuple[str, dict]  # (prefix of its keys in messages: "base.", "" for a file; its mapping)


def _find(mapping: Any, path: list[str]) -> Any:
    """The value a nested or dotted mapping gives `path` (['method', 'name']); the last key wins."""
    if not isinstance(mapping, dict):
        return _MISSING
    found = _MISSING
    for key, value in mapping.items():
        parts = str(key).split(".")
        if parts == path[:len(parts)]:
            got = value if len(parts) == len(path) else _find(value, path[len(parts):])
            found = got if got is not _MISSING else found
    return found


def _named(mappings: list[dict], path: list[str], default: str) -> str:
    value = default
    for mapping in mappings:
        whole = _find(mapping, path[:-1])  # `method: dfa` names the method
        if whole is not _MISSING and not isinstance(whole, dict):
            value = whole
        named = _find(mapping, path)
        if named is not _MISSING:
            value = named
    return str(value)


def build_run(layers: Iterable[Layer] = (), overrides: list[str] | dict | None = None, *,
              kind: str | None = None, unresolved: tuple[str, ...] = (), resolve: bool = True) -> RunConfig:
    """A validated RunConfig from `layers` and `overrides` over the defaults, in the module's order
    of precedence; its method resolved (settings checked and typed, defaults filled in, origin and
    version recorded). `kind` fixes model.kind (a command that trains one track); a method name in
    `unresolved` (`mlp`'s `all`), or any with resolve=False, is left as given. Every bad key or
    value is one ConfigError."""
    layers = list(layers)
    if overrides:
        layers.append(("", overrides if isinstance(overrides, dict) else parse_overrides(list(overrides))))
    if kind is not None:
        layers.append(("", {"model.kind": kind}))
    mappings = [mapping for _, mapping in layers]
    kind = _named(mappings, ["model", "kind"], "gpt")
    name = _named(mappings, ["method", "name"], RunConfig().method.name)
    cfg = apply_mapping(RunConfig(), TRACK_DEFAULTS.get(kind, {}))
    if kind == "gpt":
        apply_mapping(cfg, training_defaults(name), prefix=f"method {name}'s train_defaults: ")
    for prefix, mapping in layers:
        apply_mapping(cfg, mapping, prefix=prefix)
    validate_config(cfg)
    if resolve and cfg.method.name not in unresolved:
        cfg.method = resolve_method(cfg.method)
    return cfg


def build_from_file(config_file: str | Path | None = None, overrides: list[str] | dict | None = None,
                    **options) -> RunConfig:
    """`build_run` of a config file (or none) and command-line overrides: `beyondbp train` and `mlp`."""
    layers = [("", load_yaml(config_file))] if config_file is not None else []
    return build_run(layers, overrides, **options)


def load_run_file(path: str | Path) -> RunConfig:
    """The RunConfig an executor wrote into a run folder's run.yaml (every key given, the method
    resolved when the study was planned), as a worker, a Slurm job and a chain train it; the loop
    that trains it checks the method's settings in its own process (a method registered there too)."""
    return build_from_file(path, resolve=False)
