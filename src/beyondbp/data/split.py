"""The train/validation split of a corpus: a streamed corpus splits each document by a hash of
its text (`hash_split`); a small corpus is split exactly, whole documents taken in hash order
until ~val_fraction of the characters are held out (`split_documents`)."""
from __future__ import annotations

import hashlib

from ..config import ConfigError


def hash_split(data, val_fraction: float) -> bool:
    """True when a document (its UTF-8 bytes, or a buffer of them) belongs to the validation split:
    when the first 8 bytes of its SHA-256, as a fraction of 2^64, fall under `val_fraction`."""
    return digest_split(hashlib.sha256(data).digest(), val_fraction)


def digest_split(digest: bytes, val_fraction: float) -> bool:
    """`hash_split` from a document's SHA-256 digest already at hand."""
    return int.from_bytes(digest[:8], "little") < val_fraction * 2.0**64


def check_val_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction: must be between 0 and 1 (exclusive), got {val_fraction}")


def _doc_hash(text: str, index: int) -> tuple[str, int]:
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), index


def split_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val) holding out whole documents, ~`val_fraction` of the characters.

    Documents are visited in the order of a hash of their text (index breaks ties) and
    taken for validation until the target is met, skipping any that would overshoot it by
    half; each split gets at least one document. A corpus of a single document is instead
    cut at the character `(1 - val_fraction) * len`, the tail becoming validation.
    """
    docs, labels = label_documents(docs, val_fraction)
    return [d for d, v in zip(docs, labels) if not v], [d for d, v in zip(docs, labels) if v]


def label_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[bool]]:
    """`split_documents` as (documents in corpus order, is-validation flags)."""
    check_val_fraction(val_fraction)
    if len(docs) == 1:
        cut = int(len(docs[0]) * (1.0 - val_fraction))
        return [docs[0][:cut], docs[0][cut:]], [False, True]
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
    return list(docs), [i in chosen for i in range(len(docs))]
