"""Fingerprints that follow the data: of a corpus's files, and of the tokens prepared from them.

* **Source digests** name a cache entry by what its files hold, not by their modification times.
  A file's digest is SHA-256 over the SHA-256 of its 16 MiB chunks (hashed by a few threads at
  once). It is remembered in a memo beside the token cache, with the file's size, mtime, ctime,
  inode and device; while all five are unchanged the memo answers (a `stat` per file), and any
  change re-hashes the file. An edit that keeps the size and puts the old mtime back still moves
  the ctime, which no user-space call can set back, so it is caught, and the edited file gets a
  new entry (it is re-tokenized); a copy or a `touch` re-hashes, finds the same content and
  keeps the entry.
* **Token fingerprints** are SHA-256 chained over the blocks a prepare writes: each block's
  digest (taken by the worker that tokenized it, so no extra pass) with the token ranges kept
  from it. A block's digest is the SHA-256 of its token arrays; for bytes split by hash (a large
  corpus), whose tokens are the documents' own bytes, it is the SHA-256 of the documents'
  SHA-256 digests (computed for the split anyway) and their split, which costs nothing more. A prepared entry records its fingerprint in meta.json; a run records the fingerprint
  of the tokens it trains on, and a resumed run compares it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

CHUNK_BYTES = 16 << 20
HASH_THREADS = 4


def _stat_record(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _chunk_digest(item: tuple[str, int, int]) -> bytes:
    path, offset, size = item
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        while size > 0:
            data = os.pread(fd, min(size, 1 << 20), offset)
            if not data:
                break
            h.update(data)
            offset, size = offset + len(data), size - len(data)
    finally:
        os.close(fd)
    return h.digest()


def hash_files(paths: list[Path]) -> list[str]:
    """Each file's digest: SHA-256 of its chunks' SHA-256 digests, chunks hashed in parallel."""
    items, owners = [], []
    for i, path in enumerate(paths):
        size = path.stat().st_size
        for offset in range(0, max(size, 1), CHUNK_BYTES):
            items.append((str(path), offset, min(CHUNK_BYTES, size - offset)))
            owners.append(i)
    threads = max(1, min(HASH_THREADS, os.cpu_count() or 1, len(items)))
    with ThreadPoolExecutor(threads) as pool:  # hashlib and pread release the GIL
        digests = list(pool.map(_chunk_digest, items))
    joined = [hashlib.sha256() for _ in paths]
    for owner, digest in zip(owners, digests):
        joined[owner].update(digest)
    return [h.hexdigest() for h in joined]


def content_digest(raw: bytes) -> str:
    """The digest `hash_files` gives a file holding exactly `raw` (bytes already read, hashed as read)."""
    view, joined = memoryview(raw), hashlib.sha256()
    for offset in range(0, max(len(raw), 1), CHUNK_BYTES):
        joined.update(hashlib.sha256(view[offset:offset + CHUNK_BYTES]).digest())
    return joined.hexdigest()


@contextmanager
def _memo_lock(memo: Path):
    """One process hashes a corpus while the others (ranks, study workers) wait for its memo."""
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        f = open(memo.with_name(memo.name + ".lock"), "a")
    except OSError:  # a read-only cache: hash without a memo
        yield False
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield True


def source_digests(paths: list[Path], memo: Path | None) -> list[str]:
    """Content digests of `paths`, from the memo where a file's stat is unchanged, else hashed."""
    if memo is None:
        return hash_files(paths)
    from ..atomic_write import atomic_write
    from ..config import ConfigError
    with _memo_lock(memo) as writable:
        try:
            known = json.loads(memo.read_text()).get("files", {})
        except (OSError, ValueError, AttributeError):
            known = {}
        stats = {str(p): _stat_record(p) for p in paths}
        stale = [p for p in paths if (known.get(str(p)) or [None])[:-1] != stats[str(p)]]
        if stale:
            for path, digest in zip(stale, hash_files(stale)):
                known[str(path)] = stats[str(path)] + [digest]
            if writable:
                try:
                    atomic_write(memo, json.dumps({"files": known}), durable=False)
                except (OSError, ConfigError):  # a failed memo write only costs time
                    pass
        return [known[str(p)][-1] for p in paths]


def block_digest(*arrays) -> str:
    """Digest of a tokenized block's arrays (train, val), taken where they are made."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(len(a).to_bytes(8, "little"))
        h.update(a.data if a.flags.c_contiguous else a.tobytes())
    return h.hexdigest()


def chain(fingerprint: str, digest: str, kept: list[int]) -> str:
    """The running fingerprint after one more block: its digest and the token ranges kept from it."""
    h = hashlib.sha256(bytes.fromhex(fingerprint))
    h.update(bytes.fromhex(digest))
    h.update(json.dumps(kept).encode())
    return h.hexdigest()
