"""The method catalogue: every training method's name, summary, model kinds and keys, without torch.

Spec validation, `study plan`, `study report` and `beyondbp methods` need only these facts, and
importing a method's module would load torch (about 2 s). So the catalogue reads them from the
method files' source: each registered class (decorated with `@register`) states them as literal
class attributes,

    name = "dfa"
    summary = "one line for `beyondbp methods`"
    supports = ("gpt", "mlp")        # the model kinds it can train
    keys = ("feedback", ...)         # the method.* settings it reads

and `methods.registry` imports the same classes when a run builds one; a test checks that both
agree. A new method is still one file here: the catalogue finds it by its `@register`.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

FIELDS = ("name", "summary", "supports", "keys")
NOT_METHODS = ("__init__", "base", "catalogue", "feedback", "registry")


@dataclass(frozen=True)
class MethodInfo:
    name: str
    summary: str
    supports: tuple[str, ...]  # model kinds (model.kind) it trains
    keys: tuple[str, ...]  # the method.* settings it reads
    module: str  # the module under beyondbp.methods that defines it


def _is_registered(node: ast.ClassDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "register" for d in node.decorator_list)


def _literals(node: ast.ClassDef) -> dict:
    values = {}
    for stmt in node.body:
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else \
            stmt.target if isinstance(stmt, ast.AnnAssign) else None
        if isinstance(target, ast.Name) and target.id in FIELDS and stmt.value is not None:
            values[target.id] = ast.literal_eval(stmt.value)
    return values


def _declared(path: Path) -> list[MethodInfo]:
    out = []
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, ast.ClassDef) and _is_registered(node):
            values = _literals(node)
            missing = [f for f in FIELDS if f not in values]
            if missing:
                raise TypeError(f"{path.name}: registered class {node.name} does not state "
                                f"{', '.join(missing)} as literal class attributes")
            out.append(MethodInfo(values["name"], values["summary"], tuple(values["supports"]),
                                  tuple(values["keys"]), path.stem))
    return out


@functools.lru_cache(maxsize=None)
def catalogue() -> dict[str, MethodInfo]:
    """{name: MethodInfo} of the methods in this package, sorted by name."""
    found = {}
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.stem not in NOT_METHODS:
            for info in _declared(path):
                found[info.name] = info
    return dict(sorted(found.items()))
