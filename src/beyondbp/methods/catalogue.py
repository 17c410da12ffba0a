"""The method catalogue: every training method's name, summary, model kinds and keys, without torch.

Spec validation, `study plan`, `study report` and `beyondbp methods` need only these facts, and
importing a method's module would load torch (seconds: docs/benchmarks.md). So the catalogue reads them from the
method files' source: each registered class (decorated with `@register`) states them as literal
class attributes,

    name = "dfa"
    summary = "one line for `beyondbp methods`"
    supports = ("gpt", "mlp")        # the model kinds it can train
    settings = (FEEDBACK, ...)       # its method.* settings (`methods.settings`), or Setting(...) calls
    train_defaults = {"train.lr": 1e-3}  # optional: its defaults for training keys

(`settings` is evaluated with only the names of `methods.settings` in scope.)

and `methods.registry` imports the same classes when a run builds one; a test checks that both
agree. A new method is still one file here: the catalogue finds it by its `@register`.
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .settings import NAMESPACE, Setting, check_settings

FIELDS = ("name", "summary", "supports", "settings")
OPTIONAL = {"train_defaults": {}}
NOT_METHODS = ("__init__", "base", "catalogue", "feedback", "lookup", "registry", "settings")
PACKAGE = __name__.rpartition(".")[0]


@dataclass(frozen=True)
class MethodInfo:
    """What spec validation, planning and `beyondbp methods` know of a method without building it."""
    name: str
    summary: str
    supports: tuple[str, ...]  # model kinds (model.kind) it trains
    settings: tuple[Setting, ...]  # its method.* settings
    module: str  # the module that defines it (dotted, importable)
    class_name: str
    train_defaults: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # training key -> default
    version: str = ""  # the version of the distribution that ships it

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.settings)

    @property
    def origin(self) -> str:
        """The class's import path, `package.module:Class`: what a run folder records."""
        return f"{self.module}:{self.class_name}"


def _is_registered(node: ast.ClassDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "register" for d in node.decorator_list)


def _value(node: ast.expr, path: Path):
    """A literal, or (for `settings`) an expression over the names of `methods.settings` only."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        code = compile(ast.Expression(node), str(path), "eval")
        try:
            return eval(code, {"__builtins__": {}}, dict(NAMESPACE))  # noqa: S307 - our own source, no builtins
        except NameError as exc:
            raise TypeError(f"{path.name}: {exc}; a built-in method's settings use only the names of "
                            f"beyondbp.methods.settings") from None


def _literals(node: ast.ClassDef, path: Path) -> dict:
    values = {}
    for stmt in node.body:
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else \
            stmt.target if isinstance(stmt, ast.AnnAssign) else None
        if isinstance(target, ast.Name) and target.id in (*FIELDS, *OPTIONAL) and stmt.value is not None:
            values[target.id] = _value(stmt.value, path)
    return values


def _declared(path: Path) -> list[MethodInfo]:
    out = []
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, ast.ClassDef) and _is_registered(node):
            values = _literals(node, path)
            missing = [f for f in FIELDS if f not in values]
            if missing:
                raise TypeError(f"{path.name}: registered class {node.name} does not state "
                                f"{', '.join(missing)} as literal class attributes")
            settings = check_settings(values["settings"], f"{path.name}: {node.name}")
            defaults = MappingProxyType(dict(values.get("train_defaults", OPTIONAL["train_defaults"])))
            out.append(MethodInfo(values["name"], values["summary"], tuple(values["supports"]), settings,
                                  f"{PACKAGE}.{path.stem}", node.name, defaults, _own_version()))
    return out


@functools.lru_cache(maxsize=None)
def _own_version() -> str:
    try:
        return importlib.metadata.version("beyondbp")
    except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
        return "unknown"


@functools.lru_cache(maxsize=None)
def catalogue() -> dict[str, MethodInfo]:
    """{name: MethodInfo} of the methods in this package, sorted by name."""
    found = {}
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.stem not in NOT_METHODS:
            for info in _declared(path):
                found[info.name] = info
    return dict(sorted(found.items()))
