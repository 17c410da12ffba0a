"""Which `package.module:Class` methods may be imported: the threat model's import rule.

Reading a method's declarations means importing its module, and importing runs the module's
code. A received spec.yaml or config.yaml may name any module (`this`, `venv.__main__`), so the
command line decides what may be imported (`beyondbp.cli.main` sets the rule per command):

  - built-in methods and the classes of installed entry points (group `beyondbp.methods`)
    always, as does a caller of the library that set no rule (its code chose the names);
  - a `package.module:Class` typed on this command line (`methods=[bp,pkg.mod:Cls]`,
    `method=pkg.mod:Cls`), or any with the opt-in flag `--trust-method-imports`;
  - any other name: a command that only reads (`study report|status|plan`) takes it as an
    opaque label (a `Label`: its runs, recorded in the folder, are what the report needs), and
    a command that writes or builds the method refuses it in one line naming the file, the
    module and the opt-in.
"""
from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass

from ..config import METHOD_IMPORTS_OPT_IN, ConfigError
from .catalogue import MethodInfo

OPT_IN = METHOD_IMPORTS_OPT_IN
ALL_KINDS = ("gpt", "mlp")  # a label's supports: its runs say what it trained
SCAN_BYTES = 1 << 20  # how much of a file is searched for the name, to say which file named it


@dataclass(frozen=True)
class ImportRule:
    typed: frozenset[str] | None  # the names that may be imported besides installed ones; None: any
    refuse: bool  # True: a name that may not be imported is refused; False: it is a label
    sources: tuple[str, ...] = ()  # the files the command reads names from, for the message
    typeable: bool = True  # the command takes KEY=VALUE settings, where a name can be typed


@dataclass(frozen=True)
class Label(MethodInfo):
    """A method known only by the name a folder records: never imported, any setting kept as given."""


_rule = ImportRule(None, refuse=False)


@contextlib.contextmanager
def import_rule(rule: ImportRule):
    """`rule` for the duration of one command; the previous rule afterwards."""
    global _rule
    old, _rule = _rule, rule
    try:
        yield rule
    finally:
        _rule = old


def may_import(path: str, installed: set[str]) -> bool:
    """Whether `package.module:Class` may be imported now (installed: the entry points' and
    built-in methods' own paths)."""
    return _rule.typed is None or path in _rule.typed or path in installed


def label(path: str) -> Label:
    module, _, class_name = path.partition(":")
    return Label(path, "a method named by a file (not imported)", ALL_KINDS, (), module, class_name)


def refusal(path: str, key: str) -> ConfigError:
    """The one line refusing to import `path`: the file that named it, the module, the opt-in."""
    module = path.partition(":")[0]
    source = next((s for s in _rule.sources if _mentions(s, path)), None)
    where = f"{source}: " if source else ""
    how = f"type it there or add {OPT_IN}" if _rule.typeable else f"add {OPT_IN}"
    return ConfigError(f"{where}{key}: {path!r} would import module {module!r}, named in "
                       f"{'this file' if source else 'a file'} rather than on the command line; {how} to import "
                       f"it (importing runs its code)")


def refuses() -> bool:
    return _rule.refuse


def _mentions(source: str, path: str) -> bool:
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)  # a FIFO must not block the message
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and path.encode() in os.read(fd, SCAN_BYTES)
    except OSError:
        return False
    finally:
        os.close(fd)
