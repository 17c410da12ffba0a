"""Where prepared corpora live: the cache folder and the address of one corpus's entry.

An entry's folder name is the corpus's slug, the tokenizer and a digest of everything its bytes
depend on (`cache_key`: the settings and the content of the corpus's files), so an edited corpus
gets a new entry and an unchanged one is found again. The MLP track's image data sets download
under the same root (`cache_base`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from ..config import DataConfig, validate_config
from .sources import corpus_identity
from .tokenizers import bpe_vocab_size, check_tokenizer_name

FORMAT_VERSION = 3  # bump when the cached layout or the text cleaning changes (2: sharded, streamed; 3: keyed by content, token fingerprint)


def cache_base(cfg: DataConfig) -> Path:
    """data.cache_dir, else $BEYONDBP_CACHE, else ~/.cache/beyondbp, with ~ expanded."""
    base = cfg.cache_dir or os.environ.get("BEYONDBP_CACHE") or "~/.cache/beyondbp"
    return Path(base).expanduser()


def cache_root(cfg: DataConfig) -> Path:
    """The folder of token shards: tokens/ under `cache_base`."""
    return cache_base(cfg) / "tokens"


def cache_setting(cfg: DataConfig) -> str:
    """Where the cache folder was set, for error messages."""
    return "data.cache_dir" if cfg.cache_dir else "BEYONDBP_CACHE" if os.environ.get("BEYONDBP_CACHE") else "data.cache_dir"


def cache_key(cfg: DataConfig) -> dict:
    """Everything a prepared entry's bytes depend on (not data.workers or data.cache_dir): the
    settings, and the content of the corpus's files (by digest; `data_fingerprint`)."""
    check_tokenizer_name(cfg)
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
