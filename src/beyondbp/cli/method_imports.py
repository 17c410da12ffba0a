"""The import rule of each command (`methods.import_policy`): which `package.module:Class`
methods it may import.

A command with the opt-in flag (`study run`, `train`, `chain`, `mlp`, `sample`: they build
methods) imports the names typed on its command line, refuses any other that a file names in
one line, and imports every name with the flag. A command without it only reads (`study
report|status|plan`, `fit`, `methods`): a name a file gives is a label, never imported.
"""
from __future__ import annotations

from pathlib import Path

from ..config import METHOD_IMPORTS_OPT_IN as OPT_IN, ConfigError, parse_overrides

HELP = ("import the package.module:Class methods that the spec or config files name (importing runs "
        "that module's code); without it only built-in and installed methods and names typed on this "
        "command line are imported")
FOLDER_FILES = {"out": ("spec.yaml", "config.yaml", "run.yaml"), "run": ("config.yaml",),
                "trunk": ("run.yaml", "chain.yaml"), "dir": ("spec.yaml",)}


def add_opt_in(parser) -> None:
    parser.add_argument(OPT_IN, dest="trust_method_imports", action="store_true", help=HELP)


def rule_for(args):
    """The rule (`methods.import_policy.ImportRule`) of the command `args` was parsed for; the
    method package loads here, when a command runs, not when the parser is built."""
    from ..methods.import_policy import ImportRule
    builds = hasattr(args, "trust_method_imports")
    if builds and args.trust_method_imports:
        return ImportRule(None, refuse=True)
    return ImportRule(frozenset(typed_names(args)), refuse=builds, sources=tuple(_sources(args)),
                      typeable=hasattr(args, "overrides"))


def typed_names(args) -> set[str]:
    """Every `package.module:Class`-like string typed on the command line: override values (nested
    in lists and mappings) and --methods."""
    items = list(getattr(args, "overrides", None) or [])
    spec = getattr(args, "spec", None)
    if spec is not None and "=" in spec:  # `study run --preset X KEY=VALUE` parses the first one as SPEC
        items.append(spec)
    try:
        values = list(parse_overrides(items).values())
    except ConfigError:  # the command says what is wrong with it
        values = []
    values += list(getattr(args, "methods", None) or [])
    return {text for text in _strings(values) if ":" in text}


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _sources(args):
    """The files the command reads method names from, for the refusal's message."""
    for attr in ("config", "spec"):
        value = getattr(args, attr, None)
        if isinstance(value, str) and "=" not in value:
            yield value
    for attr, names in FOLDER_FILES.items():
        value = getattr(args, attr, None)
        if isinstance(value, str):
            yield from (str(Path(value) / name) for name in names)
