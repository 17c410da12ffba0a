"""MkDocs hook: the configuration reference, generated from config.py when the docs are built.

The page docs/configuration.md holds the marker `<!-- config-reference -->`; this hook replaces
it with one table per config section: every key `config.describe_keys()` lists, its default, the
values `config.RANGES` / `config.CHOICES` allow, and what it means (the field's comment in
config.py, or the note in config_notes.yaml beside this file). The key list is never copied by
hand, so a key added, renamed or removed in config.py shows up in the next build; a note for a key
that config.py does not have stops the build, naming it.
"""
from __future__ import annotations

import dataclasses
import inspect
import io
import sys
import tokenize
import typing
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- config-reference -->"
SIZES_MARKER = "<!-- named-sizes -->"


def _config():
    """This checkout's config module (not whichever beyondbp happens to be installed)."""
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    from beyondbp import config
    return config


def _field_comments(cls) -> dict[str, str]:
    """{field: its trailing comment} from a dataclass's source."""
    comments, fields = {}, {f.name for f in dataclasses.fields(cls)}
    lines = inspect.getsource(cls)
    for tok in tokenize.generate_tokens(io.StringIO(lines).readline):
        if tok.type == tokenize.COMMENT:
            code = tok.line[:tok.start[1]].strip()
            name = code.split(":")[0].strip()
            if name in fields and code:
                comments[name] = tok.string.lstrip("# ").strip()
    return comments


def _sections(config) -> dict[str, type]:
    """{section name: its dataclass} of RunConfig ('' for the top-level keys)."""
    default = config.RunConfig()
    sections = {"": type(default)}
    for f in dataclasses.fields(default):
        if dataclasses.is_dataclass(getattr(default, f.name)):
            sections[f.name] = type(getattr(default, f.name))
    return sections


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _is_int(cls, field: str) -> bool:
    hint = typing.get_type_hints(cls).get(field)
    return hint is int or int in typing.get_args(hint)


def _allowed(config, key: str, default, integer: bool) -> str:
    if key in config.CHOICES:
        return ", ".join(f"`{c}`" for c in config.CHOICES[key][0])
    if key in config.RANGES:
        return config.RANGES[key].describe(integer)
    if isinstance(default, bool):
        return "`true`, `false`"
    return ""


def reference_tables() -> str:
    """The Markdown tables: one per section of RunConfig, every key in describe_keys() order."""
    config = _config()
    notes = yaml.safe_load((Path(__file__).parent / "config_notes.yaml").read_text(encoding="utf-8"))
    keys = dict(config.describe_keys())
    unknown = sorted(set(notes) - set(keys))
    if unknown:
        raise ValueError(f"docs/hooks/config_notes.yaml: notes for keys config.py does not have: {', '.join(unknown)}")
    sections = _sections(config)
    comments = {name: _field_comments(cls) for name, cls in sections.items()}
    out, current = [], None
    for key, default in keys.items():
        section, _, field = key.rpartition(".") if key.count(".") == 1 and not key.startswith("method.") else ("", "", key)
        if section != current:
            current = section
            out += ["", f"### `{section}`" if section else "### Top level", "",
                    "| key | default | allowed | meaning |", "|---|---|---|---|"]
        meaning = notes.get(key) or comments.get(section, {}).get(field, "")
        integer = _is_int(sections[section], field)
        out.append(f"| `{key}` | {_shown(default)} | {_allowed(config, key, default, integer)} "
                   f"| {meaning.replace('|', '&#124;')} |")
    return "\n".join(out).strip() + "\n"


def named_sizes_table() -> str:
    """`model.size` names with their shape and parameter counts (model/shape.py, torch-free)."""
    config = _config()
    from beyondbp.model import shape
    out = ["| `model.size` | blocks | d_model | heads | context | vocabulary | non-embedding parameters |",
           "|---|---|---|---|---|---|---|"]
    for name in shape.NAMED_SIZES:
        vocab = shape.PAPER_VOCAB if name.startswith("paper") else 256
        cfg = shape.resolve_model_config(config.ModelConfig(size=name), vocab)
        out.append(f"| `{name}` | {cfg.n_layer} | {cfg.d_model} | {cfg.n_head} | {cfg.context} | {cfg.vocab_size:,} "
                   f"| {shape.n_params(cfg)[1]:,} |")
    return "\n".join(out) + "\n"


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, reference_tables())
    if SIZES_MARKER in markdown:
        markdown = markdown.replace(SIZES_MARKER, named_sizes_table())
    return markdown
