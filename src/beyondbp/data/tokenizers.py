"""Tokenizers: bytes, a byte-level BPE trained on the corpus, and GPT-2's vocabulary.

Torch-free (planning a study asks `planned_vocab_size` without tokenizing anything); the
`tokenizers` library loads only when a BPE tokenizer is made.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from ..config import ConfigError, DataConfig, RunConfig, check_choice

DEFAULT_BPE_VOCAB = 4096
TOKENIZERS = ("byte", "bpe", "gpt2")
VOCAB_SIZES = {"byte": 256, "gpt2": 50_257}  # bpe: data.vocab_size (`bpe_vocab_size`)


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


def check_tokenizer_name(cfg: DataConfig) -> None:
    check_choice("data.tokenizer", cfg.tokenizer, TOKENIZERS, "tokenizer")


def planned_vocab_size(cfg: RunConfig) -> int:
    """The vocabulary a run will have, without tokenizing the corpus."""
    if cfg.model.vocab_size is not None:
        return cfg.model.vocab_size
    if cfg.data.tokenizer in VOCAB_SIZES:
        return VOCAB_SIZES[cfg.data.tokenizer]
    return bpe_vocab_size(cfg.data)


def entry_tokenizer(entry: Path, name: str) -> Tokenizer:
    """The tokenizer `name` of a cache entry (or its `.partial` folder): bpe's from its tokenizer.json."""
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        return load_gpt2()
    from tokenizers import Tokenizer as HFTk
    return HFTokenizer(HFTk.from_file(str(entry / "tokenizer.json")), "bpe")
