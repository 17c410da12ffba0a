"""The characters a spec's names may hold: labels name run folders (DIR/runs/LABEL_SIZE_...), go
into train.log lines, Markdown, HTML and LaTeX tables, so a received spec.yaml must not smuggle a
newline, NUL, slash, backslash or TeX control sequence into any of them.

A label (method, variant or size) is letters, digits and `_ . + -`, starting with a letter or digit,
at most 100 characters; a method may also be `package.module:Class` (Python identifiers joined by
dots, one colon); the study's name may also hold spaces.
"""
from __future__ import annotations

import re

from ..config import ConfigError

MAX_LENGTH = 100
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+ -]*")
_IDENTIFIERS = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
METHOD_REFERENCE = re.compile(f"{_IDENTIFIERS}:{_IDENTIFIERS}")


def check_label(key: str, value, method: bool = False) -> str:
    """`value` as a label, or one ConfigError naming the spec key and the value (repr)."""
    text = str(value)
    if len(text) <= MAX_LENGTH and (LABEL.fullmatch(text) or (method and METHOD_REFERENCE.fullmatch(text))):
        return text
    also = " (or package.module:Class)" if method else ""
    raise ConfigError(f"{key}: {text!r} is not a safe label: use letters, digits and _ . + -{also}, starting with a "
                      f"letter or digit, at most {MAX_LENGTH} characters (labels name run folders and table rows)")


def check_study_name(value) -> str:
    text = str(value)
    if len(text) <= MAX_LENGTH and STUDY_NAME.fullmatch(text):
        return text
    raise ConfigError(f"name: {text!r} is not a safe study name: use letters, digits, spaces and _ . + -, starting "
                      f"with a letter or digit, at most {MAX_LENGTH} characters")
