"""Reading prepared token shards: one split as a virtual 1-D array, and window orders.

A prepared split is a list of raw shard files in native byte order (uint8 for the byte
tokenizer, uint16, or uint32 for vocabularies over 65,536) named in the entry's ``index.json``. `ShardedTokens` opens them as
memory maps and answers slices and fancy indexing across shard boundaries, so a training
window may span two shards and no split is ever read whole.

`window_order` gives the epoch's visiting order of a split's windows. Up to `EXACT_WINDOWS`
windows it is NumPy's permutation seeded by (seed, epoch), as beyondbp always used, so earlier
runs on small corpora reproduce. Beyond that (a 30B-token corpus has ~58M windows of 512) it
is a keyed Feistel permutation of the window index evaluated only at the positions a batch
needs: memory proportional to the batch, not to the corpus.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

INDEX = "index.json"
EXACT_WINDOWS = 1 << 22  # 4.2M windows (a 32 MiB permutation): above it, the Feistel order
_FEISTEL_ROUNDS = 6


class ShardedTokens:
    """A split's shards as one read-only 1-D token array (len, slices, integer-array indexing)."""

    def __init__(self, folder: Path, files: list[str], sizes: list[int], dtype: str):
        self.folder, self.files, self.dtype = Path(folder), list(files), np.dtype(dtype)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)])
        self._maps: dict[int, np.ndarray] = {}

    @classmethod
    def open(cls, entry: Path, split: str) -> "ShardedTokens":
        index = json.loads((Path(entry) / INDEX).read_text())
        shards = index["splits"][split]["shards"]
        return cls(entry, [s["file"] for s in shards], [s["tokens"] for s in shards], index["dtype"])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def _shard(self, i: int) -> np.ndarray:
        if i not in self._maps:
            self._maps[i] = np.memmap(self.folder / self.files[i], dtype=self.dtype, mode="r",
                                      shape=(int(self.sizes[i]),))
        return self._maps[i]

    def _range(self, start: int, stop: int) -> np.ndarray:
        out = np.empty(max(0, stop - start), dtype=self.dtype)
        if stop <= start:
            return out
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        last = int(np.searchsorted(self.starts, stop, side="left")) - 1
        for i in range(first, last + 1):
            lo, hi = max(start, self.starts[i]), min(stop, self.starts[i + 1])
            out[lo - start:hi - start] = self._shard(i)[lo - self.starts[i]:hi - self.starts[i]]
        return out

    def _take(self, idx: np.ndarray) -> np.ndarray:
        flat = np.asarray(idx, dtype=np.int64).ravel()
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"token index out of range for a split of {len(self):,} tokens")
        shard = np.searchsorted(self.starts, flat, side="right") - 1
        out = np.empty(flat.shape, dtype=self.dtype)
        for i in np.unique(shard):
            mask = shard == i
            out[mask] = self._shard(int(i))[flat[mask] - self.starts[i]]
        return out.reshape(np.shape(idx))

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._range(start, max(start, stop))
            return self._take(np.arange(start, stop, step, dtype=np.int64))
        if isinstance(key, (int, np.integer)):
            k = int(key) + (len(self) if key < 0 else 0)
            return self._take(np.asarray([k]))[0]
        return self._take(np.asarray(key))

    def __array__(self, dtype=None, copy=None):
        whole = self._range(0, len(self))
        return whole if dtype is None else whole.astype(dtype)

    def max(self) -> int:
        return max((int(self._shard(i).max()) for i in range(len(self.files)) if self.sizes[i]), default=0)


def _mix(x: np.ndarray, key: np.uint64) -> np.ndarray:
    """SplitMix64's finaliser of x ^ key: a well-mixed 64-bit round function."""
    z = x ^ key
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def feistel_permutation(positions: np.ndarray, n: int, seed: int, epoch: int) -> np.ndarray:
    """Images of `positions` (each in [0, n)) under a keyed bijection of [0, n).

    A balanced Feistel network on 2h bits (4^h >= n) is a bijection of [0, 4^h); values that
    land outside [0, n) are mapped again ("cycle walking") until they land inside, which keeps
    the map a bijection of [0, n). 4^h < 4n, so a value needs under 4 passes on average.
    """
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    keys = np.random.default_rng([seed, epoch, 0xFE157E1]).integers(0, 2**63, size=_FEISTEL_ROUNDS,
                                                                     dtype=np.uint64)
    out = np.asarray(positions, dtype=np.uint64).copy()
    todo = np.ones(out.shape, dtype=bool)
    with np.errstate(over="ignore"):
        while todo.any():
            v = out[todo]
            left, right = v >> np.uint64(half), v & mask
            for k in keys:
                left, right = right, left ^ (_mix(right, k) & mask)
            out[todo] = (left << np.uint64(half)) | right
            todo = out >= np.uint64(n)
    return out.astype(np.int64)


class WindowOrder:
    """Which window each position of each epoch visits: exact NumPy permutations for small
    splits (cached, a few at a time), the Feistel permutation for large ones."""

    def __init__(self, exact_limit: int = EXACT_WINDOWS):
        self.exact_limit = exact_limit
        self._perms: dict = {}

    def __call__(self, seed: int, epoch: int, n_windows: int, positions: np.ndarray) -> np.ndarray:
        if n_windows > self.exact_limit:
            return feistel_permutation(positions, n_windows, seed, epoch)
        key = (seed, epoch, n_windows)
        if key not in self._perms:
            if len(self._perms) >= 4:
                self._perms.pop(next(iter(self._perms)))
            self._perms[key] = np.random.default_rng([seed, epoch]).permutation(n_windows)
        return self._perms[key][positions]
