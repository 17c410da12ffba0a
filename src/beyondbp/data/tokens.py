"""Tokenizers, the token cache, and `TokenData`: what training reads.

`load_token_data(cfg)` returns a corpus's two splits as token arrays. The first call for a
corpus/tokenizer pair prepares them (`data_prepare`: streamed, sharded, resumable); later ones
only open the cache entry's shards as memory maps (`data_shards`). Corpora and the
train/validation split live in `data_sources`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol

import numpy as np

from ..config import ConfigError, DataConfig, check_choice, validate_config
from .prepare import prepare_corpus
from .shards import ShardedTokens, WindowOrder
from .sources import (BUILTIN, BUILTIN_SOURCE, corpus_identity, markdown_to_text,  # noqa: F401 (re-exported)
                           read_documents, split_documents)

if TYPE_CHECKING:  # torch is imported where batches are made, not to read or prepare a corpus
    import torch

FORMAT_VERSION = 3  # bump when the cached layout or the text cleaning changes (2: sharded, streamed; 3: keyed by content, token fingerprint)
DEFAULT_BPE_VOCAB = 4096
TOKENIZERS = ("byte", "bpe", "gpt2")


class Tokenizer(Protocol):
    """Text <-> token ids (`data_prepare` tokenizes whole corpora in worker processes)."""
    name: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes; vocabulary of 256."""
    name, vocab_size = "byte", 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class HFTokenizer:
    """A byte-level BPE `tokenizers.Tokenizer` (our trained `bpe`, or GPT-2's vocabulary)."""

    def __init__(self, tk, name: str):
        self._tk, self.name, self.vocab_size = tk, name, tk.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tk.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self._tk.decode([int(i) for i in ids])

    def save(self, path: Path) -> None:
        self._tk.save(str(path))

    def to_json(self) -> str:
        return self._tk.to_str()


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


def cache_root(cfg: DataConfig) -> Path:
    """data.cache_dir, else $BEYONDBP_CACHE, else ~/.cache/beyondbp; token shards live in tokens/."""
    base = cfg.cache_dir or os.environ.get("BEYONDBP_CACHE") or "~/.cache/beyondbp"
    return Path(base).expanduser() / "tokens"


def cache_setting(cfg: DataConfig) -> str:
    """Where the cache folder was set, for error messages."""
    return "data.cache_dir" if cfg.cache_dir else "BEYONDBP_CACHE" if os.environ.get("BEYONDBP_CACHE") else "data.cache_dir"


def cache_key(cfg: DataConfig) -> dict:
    """Everything a prepared entry's bytes depend on (not data.workers or data.cache_dir): the
    settings, and the content of the corpus's files (by digest; `data_fingerprint`)."""
    _check_tokenizer_name(cfg)
    check_prepare_keys(cfg)
    bpe = cfg.tokenizer == "bpe"
    identity = corpus_identity(cfg, cache_root(cfg).parent / "sources")
    return {"format": FORMAT_VERSION, "corpus": identity, "tokenizer": cfg.tokenizer,
            "vocab_size": bpe_vocab_size(cfg) if bpe else None, "val_fraction": cfg.val_fraction,
            "max_tokens": cfg.max_tokens, "shard_tokens": cfg.shard_tokens,
            "bpe_sample_mb": cfg.bpe_sample_mb if bpe else None}


def check_prepare_keys(cfg: DataConfig) -> None:
    """The data section's ranges (`config.validate_config`), for a DataConfig built directly."""
    validate_config(cfg, prefix="data.", section="data")


def cache_entry(cfg: DataConfig) -> Path:
    """The folder of `cfg`'s prepared corpus: slug, tokenizer and a digest of `cache_key`."""
    digest = hashlib.sha256(json.dumps(cache_key(cfg), sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(cfg.corpus.rstrip("/\\")).name).strip("-")[:40] or "corpus"
    return cache_root(cfg) / f"{slug}-{cfg.tokenizer}-{digest}"


def entry_tokenizer(entry: Path, name: str) -> Tokenizer:
    """The tokenizer `name` of a cache entry (or its `.partial` folder): bpe's from its tokenizer.json."""
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        return load_gpt2()
    from tokenizers import Tokenizer as HFTk
    return HFTokenizer(HFTk.from_file(str(entry / "tokenizer.json")), "bpe")


def load_token_data(cfg: DataConfig, quiet: bool = False) -> "TokenData":
    """Token arrays for `cfg`'s corpus and tokenizer: from the cache, or prepared and cached now."""
    entry = prepare_corpus(cfg, quiet=quiet)
    try:
        meta = json.loads((entry / "meta.json").read_text())
        tok = entry_tokenizer(entry, meta["tokenizer"])
        return TokenData(train=ShardedTokens.open(entry, "train"), val=ShardedTokens.open(entry, "val"),
                         tokenizer=tok, vocab_size=tok.vocab_size, meta=meta)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ConfigError(f"data.cache_dir: the prepared corpus {entry} is damaged ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); delete that folder and rerun to "
                          f"prepare it again") from None


@dataclass
class TokenData:
    train: ShardedTokens  # 1-D token ids over memory-mapped shards
    val: ShardedTokens
    tokenizer: Tokenizer
    vocab_size: int
    meta: dict = field(default_factory=dict)
    _order: WindowOrder = field(default_factory=WindowOrder, repr=False, compare=False)

    def check(self, n_seqs: int, context: int) -> None:
        """Raise ConfigError unless train holds one batch and val one window; call before training."""
        if len(self.train) < n_seqs * (context + 1):
            raise ConfigError(f"data.corpus: training split has {len(self.train):,} tokens, "
                              f"fewer than one batch ({n_seqs * (context + 1):,})")
        if len(self.val) < context + 1:
            raise ConfigError(f"data.corpus: validation split has {len(self.val):,} tokens, "
                              f"fewer than one window ({context + 1:,})")

    def train_batch(self, step: int, n_seqs: int, context: int, seed: int) -> tuple["torch.Tensor", "torch.Tensor"]:
        """Global batch `step`: int64 x, y of shape [n_seqs, context], y = x shifted by one.

        A pure function of its arguments. The training split is cut into non-overlapping
        windows of context+1 tokens; epoch e visits them in the order of a permutation
        seeded by (seed, e), batch k taking entries [k*n_seqs, (k+1)*n_seqs) of the run of
        permutations (`data_shards.WindowOrder`: memory per batch, not per corpus).
        """
        import torch
        width = context + 1
        self.check(n_seqs, context)
        n_windows = len(self.train) // width
        g = step * n_seqs + np.arange(n_seqs)
        epochs, pos = g // n_windows, g % n_windows
        windows = np.empty(n_seqs, dtype=np.int64)
        for e in np.unique(epochs):
            mask = epochs == e
            windows[mask] = self._order(seed, int(e), n_windows, pos[mask])
        idx = windows[:, None] * width + np.arange(width)
        xy = torch.from_numpy(np.asarray(self.train[idx], dtype=np.int64))
        return xy[:, :-1].contiguous(), xy[:, 1:].contiguous()

    def val_batches(self, n_seqs: int, context: int, max_tokens: int) -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
        """Contiguous non-overlapping windows from the start of val, at most `max_tokens`
        predicted tokens in all, in batches of up to `n_seqs`."""
        import torch
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

    @property
    def fingerprint(self) -> str:
        """SHA-256 chained over the prepared blocks' tokens (`data_fingerprint`)."""
        return self.meta["fingerprint"]
