"""`TokenData`: what training reads, the two splits of a prepared corpus as token arrays.

`load_token_data(cfg)` returns them. The first call for a corpus/tokenizer pair prepares them
(`prepare`: streamed, sharded, resumable); later ones only open the cache entry's shards as
memory maps (`shards`). Tokenizers live in `tokenizers`, the cache's addressing in `cache`,
corpora and the train/validation split in `sources`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ..config import ConfigError, DataConfig
from .prepare import prepare_corpus
from .shards import ShardedTokens, WindowOrder
from .tokenizers import ByteTokenizer, Tokenizer, bpe_vocab_size, check_tokenizer_name, entry_tokenizer, load_gpt2, train_bpe

if TYPE_CHECKING:  # torch is imported where batches are made, not to read or prepare a corpus
    import torch


def get_tokenizer(cfg: DataConfig, train_texts: list[str] | None = None) -> Tokenizer:
    """The tokenizer `cfg` names. `bpe` is trained on `train_texts`; without them it comes
    from the token cache (tokenizing the corpus first if needed)."""
    check_tokenizer_name(cfg)
    if cfg.tokenizer == "byte":
        return ByteTokenizer()
    if cfg.tokenizer == "gpt2":
        return load_gpt2()
    if train_texts is None:
        return load_token_data(cfg).tokenizer
    return train_bpe(train_texts, bpe_vocab_size(cfg))


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
