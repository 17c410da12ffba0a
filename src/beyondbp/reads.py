"""Reading what a folder or file holds, as data: regular files only, of a bounded size, and YAML
without anchors, aliases, duplicate keys or YAML 1.1's surprising numbers.

Every file beyondbp reads from a run folder, a study folder, a config or a CSV goes through
`open_regular`: it is opened with O_NOFOLLOW | O_NONBLOCK (a link is refused, a FIFO never
blocks), fstat-ed, and refused unless it is a regular file no larger than its kind's limit
(`LIMITS`), all in one line naming the file. `read_text` reads a whole file; `iter_lines` streams
one line at a time with a bound per line (metrics.jsonl); `read_tail` reads a file's last bytes;
`is_regular_file` checks a file something else opens (a checkpoint, for PyTorch).

`parse_yaml` is PyYAML's SafeLoader (no tags that build objects) minus four things a received
file could abuse: anchors and aliases (a "billion laughs" document expands to gigabytes), values
nested deeper than MAX_DEPTH (composing them recurses past Python's stack), a key given twice (the
last would win unseen), and YAML 1.1's octal and base-60 numbers: `010` reads as
the decimal 10 (as in YAML 1.2), `5:33:20` as the string it looks like (which a number key then
refuses, naming it), never 8 or 20000.

`ConfigError` lives here, in the lowest room, so that these readers raise the one error every
command prints as `beyondbp: error: ...`; `beyondbp.config` re-exports it.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Iterator

import yaml


class ConfigError(ValueError):
    """A user-facing configuration problem; the message names the bad field."""


# Two cases a caller may expect and handle: distinct types, so that catching one never swallows a
# real configuration error. Uncaught, each is still a ConfigError: one line, exit status 2.

class TooFewPoints(ConfigError):
    """The points (or runs) cannot determine a fit: too few of them, or too few distinct sizes or
    budgets. The report names the method unfitted and goes on."""


class LockHeld(ConfigError):
    """Another process holds a lock this one needs: a run's worker.lock (it trains the run) or a
    study's submit.lock (it submits the study)."""


MiB = 1 << 20
LIMITS = {  # the largest file of each kind that is read (a real one is far smaller)
    "yaml": 4 * MiB,  # spec.yaml, config.yaml, run.yaml, --config files, chain files
    "json": 4 * MiB,  # summary.json, data.json and the other small records of a run folder
    "csv": 64 * MiB,  # `beyondbp fit` points and runs files
    "metrics": 64 * MiB,  # metrics.jsonl: at most 10,000 evaluations of a few hundred bytes
}
LINE_LIMIT = 1 * MiB  # the longest metrics.jsonl line (a row with every alignment layer is ~10 KB)


def shown(value, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters: a received 4,000-digit number stays a short line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}... ({len(text):,} characters)"


def _size(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n:,} bytes"


def open_regular(path: str | Path, what: str, kind: str | None) -> int:
    """A read-only descriptor of `path`, refused in one ConfigError naming it unless it is a
    regular file (not a link, FIFO, device or socket) of at most LIMITS[kind] bytes (any size
    when kind is None: the caller reads a bounded part).
    FileNotFoundError passes through: whether a missing file is an error is the caller's call."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if os.path.islink(path):
            raise ConfigError(f"{what} {path} is a link; beyondbp reads only regular files here "
                              f"(give the file it points to, if you trust it)") from None
        raise ConfigError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind_of = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, device or socket)"
            raise ConfigError(f"{what} {path} is {kind_of}; beyondbp reads only regular files")
        if kind is not None and info.st_size > LIMITS[kind]:
            raise ConfigError(f"{what} {path} is {_size(info.st_size)}, more than the {_size(LIMITS[kind])} "
                              f"such a file may hold; not read")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_regular_file(path: str | Path, what: str) -> bool:
    """Whether `path` exists (False when it does not); a link, FIFO, device or socket there is
    refused in one ConfigError naming it (for files too large for a size limit: checkpoints)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(f"{what} {path} is a link; beyondbp reads only regular files here")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} {path} is not a regular file (a folder, FIFO, device or socket)")
    return True


def read_bytes(path: str | Path, what: str, kind: str) -> bytes:
    """A whole regular file of bounded size (`open_regular`); a file that grows while it is read
    is refused rather than read without end."""
    fd = open_regular(path, what, kind)
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(LIMITS[kind] + 1)
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > LIMITS[kind]:
        raise ConfigError(f"{what} {path} grew past {_size(LIMITS[kind])} while it was read; not read")
    return data


def decode_utf8(data: bytes, path: str | Path, what: str) -> str:
    """UTF-8 text (a leading byte-order mark dropped), or one ConfigError naming the file."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.start:,})") from None


def read_text(path: str | Path, what: str, kind: str) -> str:
    return decode_utf8(read_bytes(path, what, kind), path, what)


def iter_lines(path: str | Path, what: str, kind: str = "metrics") -> Iterator[tuple[int, str]]:
    """(line number, line) of a regular file, streamed as text (undecodable bytes replaced): at
    most LIMITS[kind] bytes in all and LINE_LIMIT per line, else one ConfigError naming the file
    and line. Only the current line is held, never the whole file."""
    fd = open_regular(path, what, kind)
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            total = 0
            for number, raw in enumerate(iter(lambda: handle.readline(LINE_LIMIT + 1), b""), start=1):
                total += len(raw)
                if len(raw) > LINE_LIMIT:
                    raise ConfigError(f"{what} {path}:{number}: a line longer than {_size(LINE_LIMIT)}; not read")
                if total > LIMITS[kind]:
                    raise ConfigError(f"{what} {path} grew past {_size(LIMITS[kind])} while it was read; not read")
                yield number, raw.decode("utf-8", "replace")
    finally:
        os.close(fd)


def read_tail(path: str | Path, what: str, nbytes: int = 64 * 1024) -> str:
    """The last `nbytes` of a regular file as text (undecodable bytes replaced): for a progress
    line or a log's last words, whatever the file's size."""
    fd = open_regular(path, what, None)
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, nbytes, max(0, size - nbytes)).decode("utf-8", "replace")
    finally:
        os.close(fd)


# --- YAML as data ----------------------------------------------------------------------------------
INT_TAG, FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
# PyYAML's (YAML 1.1) int and float patterns without base 60, and 0-led digits read as decimal (as
# in YAML 1.2): every plain scalar that yaml.safe_dump writes for a string still reads as that string
_INT = re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$")
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)


MAX_DEPTH = 64  # nesting levels of a YAML or JSON value (a spec needs 5)


class YAMLRefused(ConfigError):
    """What the strict loader refuses, with the line it found it on (the caller names the file)."""

    def __init__(self, line: int, why: str):
        super().__init__(f"line {line}: {why}")
        self.line, self.why = line, why


class _StrictLoader(yaml.SafeLoader):
    yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag not in (INT_TAG, FLOAT_TAG)]
                               for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise YAMLRefused(event.start_mark.line + 1, "YAML anchors and aliases (&NAME, *NAME) are not read "
                                                         "here; write the values out")
        if self.depth >= MAX_DEPTH:  # composing recurses: 20,000 "[" would exhaust Python's stack
            raise YAMLRefused(event.start_mark.line + 1, f"values nested more than {MAX_DEPTH} levels deep are not "
                                                         f"read here")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True) if key_node.tag != "tag:yaml.org,2002:merge" else None
                if key is None or not isinstance(key, (str, int, float, bool)):
                    continue
                if key in seen:
                    raise YAMLRefused(key_node.start_mark.line + 1,
                                      f"key {key!r} is given twice (first on line {seen[key]})")
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    base = {"0b": 2, "0x": 16}.get(text[:2], 10)
    try:
        return sign * int(text[2:] if base != 10 else text, base)
    except ValueError:
        shown = node.value if len(node.value) <= 40 else f"{node.value[:37]}... ({len(node.value):,} digits)"
        raise YAMLRefused(node.start_mark.line + 1, f"{shown!r} is not a number") from None


_StrictLoader.add_implicit_resolver(INT_TAG, _INT, list("-+0123456789"))
_StrictLoader.add_implicit_resolver(FLOAT_TAG, _FLOAT, list("-+0123456789."))
_StrictLoader.add_constructor(INT_TAG, _construct_int)


def parse_yaml(text: str):
    """`text` as YAML data (`_StrictLoader`); raises YAMLRefused or yaml.YAMLError."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
