"""Corpus -> sharded token files, streaming, in parallel, with bounded memory, resumable.

`prepare_corpus(cfg)` is what `beyondbp data prepare`, `train`, `study` and the executors'
`study.preamble.prepare_data` all call. It reads the source block by block (`data_sources`), hands blocks to
tokenizer worker processes (parsing `.jsonl` there too), and appends each split's tokens in
corpus order to fixed-size shard files (`data.shard_tokens` tokens each, uint16 or uint32).
At most 2 x workers blocks are in flight, so memory does not grow with the corpus.

Everything is written into ``<entry>.partial/``. After each block the shards are flushed and
``state.json`` records the source position and each split's token count; a rerun after a kill
truncates the shards to those counts and reads on from that position, so its shards come out
byte-identical to an uninterrupted pass. The finished folder is renamed into place, and a file
lock keeps two processes (DDP ranks, study workers) from preparing the same entry at once.

`bpe` is trained first, on the first `data.bpe_sample_mb` MiB of training-split text in corpus
order (the whole training split of a small corpus), and saved, so a resume reuses it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic_write import FileWriteError, atomic_write, os_error_in
from ..config import ConfigError, DataConfig
from .cache import cache_entry, cache_key, cache_setting
from .fingerprint import block_digest, chain
from .pass_check import check_pass, file_stats
from .shards import INDEX
from .sources import BadRow, Block, block_bytes, digest_split, hash_split, open_source, parse_jsonl
from .tokenizers import bpe_vocab_size, entry_tokenizer, train_bpe

DOC_SEPARATOR = "\n\n"  # precedes every document but a split's first
STATE = "state.json"
MAX_WORKERS = 8


def token_dtype(vocab_size: int):
    """The narrowest unsigned type for the vocabulary: uint8 for bytes, uint16 up to 65,536."""
    return np.uint8 if vocab_size <= 2**8 else np.uint16 if vocab_size <= 2**16 else np.uint32


# --- the tokenizer worker -------------------------------------------------------------------
_W: dict = {}


def _init_worker(tokenizer_json: str | None, text_field: str, val_fraction: float, dtype: str,
                 one_thread: bool) -> None:
    """Set up a worker (or this process, for workers=1): its tokenizer and split settings."""
    if one_thread:  # parallelism comes from processes; a worker uses one core
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tk = None
    if tokenizer_json is not None:
        from tokenizers import Tokenizer
        tk = Tokenizer.from_str(tokenizer_json)
    sep = DOC_SEPARATOR.encode() if tk is None else tk.encode(DOC_SEPARATOR).ids
    _W.update(tk=tk, field=text_field, val_fraction=val_fraction, dtype=np.dtype(dtype),
              sep=np.frombuffer(sep, np.uint8) if tk is None else np.asarray(sep, np.int64))


@dataclass
class BlockTokens:
    """A tokenized block: each split's tokens, every document preceded by the separator."""
    train: np.ndarray
    val: np.ndarray
    is_val: np.ndarray  # per document
    doc_tokens: np.ndarray  # per document, separator included
    chars: np.ndarray  # per document
    nbytes: int
    lines: int = 0  # newlines in a .jsonl block
    digest: str = ""  # of the train and val arrays (data_fingerprint.block_digest)


def _encode(docs: list[str]) -> list[np.ndarray]:
    tk = _W["tk"]
    if tk is None:
        return [np.frombuffer(d.encode("utf-8"), np.uint8) for d in docs]
    encode = getattr(tk, "encode_batch_fast", tk.encode_batch)  # fast: no offsets (tokenizers >= 0.21)
    out = []
    for start in range(0, len(docs), 256):  # a few Encodings alive at a time
        out += [np.asarray(e.ids, dtype=np.int64) for e in encode(docs[start:start + 256])]
    return out


def tokenize_block(block: Block) -> BlockTokens:
    docs, lines = block.docs, 0
    if docs is None:
        raw = block_bytes(block)
        docs, lines = parse_jsonl(raw, block.where, block.first_line or 1, _W["field"]), raw.count(b"\n")
    ids, digest = _encode(docs), None
    if block.labels is not None:
        is_val = np.asarray(block.labels, dtype=bool)
    elif _W["tk"] is None:  # bytes are at hand: hash them once, for the split and the fingerprint
        doc_digests = [hashlib.sha256(a.data).digest() for a in ids]
        is_val = np.asarray([digest_split(d, _W["val_fraction"]) for d in doc_digests], dtype=bool)
        # byte tokens are the documents' bytes: their digests and the split fix the block's tokens
        digest = hashlib.sha256(b"".join(doc_digests) + is_val.tobytes()).hexdigest()
    else:
        is_val = np.asarray([hash_split(d.encode("utf-8"), _W["val_fraction"]) for d in docs], dtype=bool)
    sep, dtype = _W["sep"], _W["dtype"]

    def joined(flag: bool) -> np.ndarray:
        parts = [p for a, v in zip(ids, is_val) if v == flag for p in (sep, a)]
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

    train, val = joined(False), joined(True)
    return BlockTokens(train=train, val=val, is_val=is_val,
                       doc_tokens=np.asarray([len(a) + len(sep) for a in ids], dtype=np.int64),
                       chars=np.asarray([len(d) for d in docs], dtype=np.int64), nbytes=block.nbytes, lines=lines,
                       digest=digest or block_digest(train, val))


def tokenize_to_files(block: Block, stem: str) -> BlockTokens:
    """`tokenize_block` in a worker process: the token arrays go to `stem`.train/.val files,
    which the main process appends to its shards, instead of through a pipe."""
    out = tokenize_block(block)
    for split in ("train", "val"):
        getattr(out, split).tofile(f"{stem}.{split}")
        setattr(out, split, f"{stem}.{split}")
    return out


def _with_block(block: Block, fn, *args):
    """fn(*args), a BadRow from it told which block it came from."""
    try:
        return fn(*args)
    except BadRow as exc:
        exc.block = block
        raise


def _tokenized(blocks, workers: int, init_args: tuple, scratch: Path):
    """Tokenized blocks in corpus order: in this process (workers=1), or by that many worker
    processes with at most 2 x workers blocks in flight."""
    if workers <= 1:
        _init_worker(*init_args[:-1], one_thread=False)
        for block in blocks:
            yield block, _with_block(block, tokenize_block, block)
        return
    from concurrent.futures.process import BrokenProcessPool

    from .child_processes import WorkerPool  # off the current folder, and they die with this process
    for leftover in scratch.glob(".block-*"):
        leftover.unlink()
    pool = WorkerPool(workers, initializer=_init_worker, initargs=init_args)
    pending: deque = deque()
    try:
        for i, block in enumerate(blocks):
            stem = str(scratch / f".block-{i % (4 * workers)}")
            pending.append((block, pool.submit(tokenize_to_files, block, stem)))
            if len(pending) >= 2 * workers:
                b, result = pending.popleft()
                yield b, _with_block(b, result.result)
        while pending:
            b, result = pending.popleft()
            yield b, _with_block(b, result.result)
    except BrokenProcessPool:
        raise ConfigError("data.workers: a tokenizer worker process died (out of memory, killed, or unable to "
                          "start); rerun to continue from the last block, or set data.workers=1") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --- shards -----------------------------------------------------------------------------------
class ShardWriter:
    """Appends one split's tokens to `<split>-NNNNN.bin` files of `shard_tokens` tokens each."""

    def __init__(self, folder: Path, split: str, shard_tokens: int, dtype, written: int):
        self.folder, self.split, self.shard_tokens = folder, split, shard_tokens
        self.dtype, self.written = np.dtype(dtype), written
        self._truncate()

    def name(self, i: int) -> str:
        return f"{self.split}-{i:05d}.bin"

    def _truncate(self) -> None:
        """Drop whatever a killed pass wrote after the last recorded block."""
        full, rest = divmod(self.written, self.shard_tokens)
        for path in self.folder.glob(f"{self.split}-*.bin"):
            i = int(path.stem.rsplit("-", 1)[1])
            if i > full or (i == full and rest == 0):
                path.unlink()
            elif i == full:
                os.truncate(path, rest * self.dtype.itemsize)

    def write(self, tokens: np.ndarray | str, start: int = 0, stop: int | None = None) -> None:
        """Append tokens[start:stop]: an array, or a worker's token file (copied by the kernel)."""
        if isinstance(tokens, str):
            with open(tokens, "rb") as src:
                self._copy(src, start, os.fstat(src.fileno()).st_size // self.dtype.itemsize if stop is None else stop)
            os.unlink(tokens)
            return
        tokens = np.ascontiguousarray(tokens[start:stop], dtype=self.dtype)
        done = 0
        for i, _, take in self._spans(len(tokens)):
            with open(self.folder / self.name(i), "ab") as f:
                f.write(tokens[done:done + take].tobytes())
            done += take

    def _copy(self, src, start: int, stop: int) -> None:
        size = self.dtype.itemsize
        for i, used, take in self._spans(stop - start):
            fd = os.open(self.folder / self.name(i), os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                _copy_range(src.fileno(), fd, take * size, start * size, used * size)
            finally:
                os.close(fd)
            start += take

    def _spans(self, n: int):
        """(shard, tokens already in it, tokens to add) for the next n tokens, in order; each
        span counts as written once the caller has written it and asks for the next."""
        while n:
            i, used = divmod(self.written, self.shard_tokens)
            take = min(n, self.shard_tokens - used)
            yield i, used, take
            self.written, n = self.written + take, n - take

    def shards(self) -> list[dict]:
        full, rest = divmod(self.written, self.shard_tokens)
        sizes = [self.shard_tokens] * full + ([rest] if rest else [])
        return [{"file": self.name(i), "tokens": n} for i, n in enumerate(sizes)]


def _copy_range(src: int, dst: int, n: int, src_off: int, dst_off: int) -> None:
    """Copy n bytes between file descriptors, inside the kernel where it can."""
    while n:
        try:
            done = os.copy_file_range(src, dst, n, src_off, dst_off)
        except (AttributeError, OSError):  # not Linux, or across file systems
            done = os.pwrite(dst, os.pread(src, min(n, 1 << 24), src_off), dst_off)
        if done <= 0:
            raise OSError(f"short copy of token data ({n} bytes left)")
        n, src_off, dst_off = n - done, src_off + done, dst_off + done


# --- the pass ---------------------------------------------------------------------------------
def bpe_sample(texts, limit_chars: int) -> list[str]:
    """The first `limit_chars` characters of `texts` (documents, the last one cut)."""
    sample, size = [], 0
    for text in texts:
        if size >= limit_chars:
            break
        sample.append(text[:limit_chars - size])
        size += len(sample[-1])
    return sample


def _tokenizer(cfg: DataConfig, source, partial: Path, say):
    """The tokenizer for this entry: fixed for byte/gpt2, trained once (and saved) for bpe."""
    saved = partial / "tokenizer.json"
    if cfg.tokenizer != "bpe" or saved.exists():
        return entry_tokenizer(partial, cfg.tokenizer)
    t0 = time.perf_counter()
    sample = bpe_sample(source.train_texts(), cfg.bpe_sample_mb << 20)
    tok = train_bpe(sample, bpe_vocab_size(cfg))
    tok.save(saved)
    say(f"trained bpe ({tok.vocab_size:,} tokens) on {sum(map(len, sample)) / 2**20:.1f} MiB of training text "
        f"in {time.perf_counter() - t0:.1f} s")
    return tok


class _Pass:
    """One (possibly resumed) pass over a corpus into `partial`."""

    def __init__(self, cfg: DataConfig, partial: Path, key: dict, say):
        self.cfg, self.partial, self.say = cfg, partial, say
        partial.mkdir(parents=True, exist_ok=True)
        state_file = partial / STATE
        key = json.loads(json.dumps(key))  # as it reads back from state.json (tuples become lists)
        self.state = json.loads(state_file.read_text()) if state_file.exists() else None
        stats = file_stats(key)
        if self.state is not None and (self.state.get("key") != key or self.state.get("stats") != stats):
            self.state = None  # a leftover from other settings, or files touched since: start over
        if self.state is None:
            for path in partial.glob("*"):
                path.unlink()
            self.state = {"key": key, "position": None, "bytes": 0, "tokens": {"train": 0, "val": 0}, "fingerprint": "",
                          "documents": {"train": 0, "val": 0}, "characters": {"train": 0, "val": 0},
                          "seconds": 0.0, "passes_started_at_bytes": [], "stats": stats}
        self.source = open_source(cfg)
        self.tok = _tokenizer(cfg, self.source, partial, say)
        dtype = token_dtype(self.tok.vocab_size)
        self.sep_len = len(self.tok.encode(DOC_SEPARATOR))
        self.writers = {s: ShardWriter(partial, s, cfg.shard_tokens, dtype, self.state["tokens"][s])
                        for s in ("train", "val")}

    def _save(self) -> None:
        # not fsynced: the shards are not either; a kill leaves both in the page cache, and a
        # fsync per 4 MiB block would cost more than tokenizing bytes does
        atomic_write(self.partial / STATE, json.dumps(self.state), durable=False)

    def _add(self, out: BlockTokens) -> bool:
        """Write a block's tokens; False once the training split reaches data.max_tokens.

        Each document's tokens come after a separator; a split's very first document drops it.
        """
        st, cap = self.state, self.cfg.max_tokens
        skip = {s: self.sep_len if st["tokens"][s] == 0 else 0 for s in ("train", "val")}
        keep = len(out.is_val)
        if cap is not None:
            train_ends = st["tokens"]["train"] - skip["train"] + np.cumsum(np.where(out.is_val, 0, out.doc_tokens))
            over = np.flatnonzero(train_ends >= cap)
            keep = int(over[0]) + 1 if len(over) else keep
        is_val, kept = out.is_val[:keep], []
        for split, flag, tokens in (("train", False, out.train), ("val", True, out.val)):
            mask = is_val == flag
            end = int(out.doc_tokens[:keep][mask].sum())
            if split == "train" and cap is not None:
                end = min(end, skip[split] + cap - st["tokens"]["train"])
            start = skip[split] if mask.any() else 0
            self.writers[split].write(tokens, start, end)
            kept += [start, end]
            st["tokens"][split] = self.writers[split].written
            st["documents"][split] += int(mask.sum())
            st["characters"][split] += int(out.chars[:keep][mask].sum())
        st["fingerprint"] = chain(st["fingerprint"], out.digest, kept)
        return keep == len(out.is_val) and (cap is None or st["tokens"]["train"] < cap)

    def _first_line(self, block: Block) -> int:
        """The line number a .jsonl block starts at: 1, or where the last processed block ended."""
        pos = self.state["position"]
        return block.first_line or (1 if block.offset == 0 or not pos else pos.get("line") or 1)

    def run(self, workers: int, quiet: bool) -> dict:
        st = self.state
        if st.get("finished"):
            return st
        from tqdm import tqdm
        init = (self.tok.to_json() if hasattr(self.tok, "to_json") else None, self.cfg.text_field,
                self.cfg.val_fraction, np.dtype(token_dtype(self.tok.vocab_size)).name, True)
        bar = tqdm(total=self.source.total_bytes, initial=st["bytes"], unit="B", unit_scale=True,
                   unit_divisor=1024, dynamic_ncols=True, disable=quiet, desc="prepare", file=sys.stderr)
        t0, seconds0 = time.perf_counter(), st["seconds"]
        st["passes_started_at_bytes"].append(st["bytes"])
        try:
            for block, out in _tokenized(self.source.blocks(st["position"]), workers, init, self.partial):
                going = self._add(out)
                end = dict(block.end)
                if "line" in end and end["line"] is None:  # a .jsonl block: its lines were counted by the worker
                    end["line"] = self._first_line(block) + out.lines
                st["position"], st["bytes"] = end, st["bytes"] + block.nbytes
                st["seconds"] = seconds0 + time.perf_counter() - t0
                self._save()
                bar.update(block.nbytes)
                bar.set_postfix(docs=f"{sum(st['documents'].values()):,}",
                                tokens=f"{sum(st['tokens'].values()):,}", refresh=False)
                if not going:
                    break
        except BadRow as exc:
            if exc.block is None or exc.block.first_line is not None:
                raise
            raise exc.shifted(self._first_line(exc.block)) from None
        finally:
            bar.close()
        check_pass(self.cfg, st, self.source, self.partial)
        st["finished"] = True
        self._save()
        return st

    def finish(self, entry: Path) -> None:
        st, tok = self.state, self.tok
        index = {"dtype": np.dtype(token_dtype(tok.vocab_size)).name,
                 "splits": {s: {"tokens": w.written, "shards": w.shards()} for s, w in self.writers.items()}}
        (self.partial / INDEX).write_text(json.dumps(index, indent=1))
        meta = {"corpus": self.cfg.corpus, "tokenizer": tok.name, "vocab_size": tok.vocab_size,
                "mode": self.source.mode, "documents": st["documents"], "characters": st["characters"],
                "tokens": st["tokens"], "source_bytes": st["bytes"], "seconds": round(st["seconds"], 2),
                "passes_started_at_bytes": st["passes_started_at_bytes"], "fingerprint": st["fingerprint"]}
        (self.partial / "meta.json").write_text(json.dumps(meta, indent=1))
        (self.partial / STATE).unlink()
        os.rename(self.partial, entry)


@contextmanager
def _locked(entry: Path):
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.parent / f".{entry.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cache_write_error(cfg: DataConfig, entry: Path, exc: Exception) -> ConfigError:
    cause = exc if isinstance(exc, OSError) else os_error_in(exc.__context__)
    reason = (cause.strerror or str(cause)) if cause is not None else str(exc)
    setting = cache_setting(cfg)
    return ConfigError(f"{setting}: cannot write the token cache in {entry.parent} ({reason}); free space or "
                       f"set {setting} to a writable folder, then rerun: blocks already prepared are kept")


def default_workers(cfg: DataConfig, mode: str) -> int:
    """data.workers, else 1 (this process) for a small corpus, else one process per core."""
    if cfg.workers:
        return cfg.workers
    if mode == "small":
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def prepare_corpus(cfg: DataConfig, quiet: bool = False, workers: int | None = None, summary: bool = False) -> Path:
    """The finished cache entry of `cfg`'s corpus and tokenizer, preparing (or resuming) it first.

    Large (streamed) corpora show a progress bar and end with a summary line unless `quiet`;
    small ones prepare silently in about a second unless `summary` asks for the line.
    """
    entry = cache_entry(cfg)
    if (entry / "meta.json").exists():
        return entry
    say = (lambda text: None) if quiet else (lambda text: print(text, file=sys.stderr))
    try:
        with _locked(entry):
            if (entry / "meta.json").exists():  # another process finished it while we waited
                return entry
            work = _Pass(cfg, entry.with_name(entry.name + ".partial"), cache_key(cfg), say)
            n = workers or default_workers(cfg, work.source.mode)
            st = work.run(n, quiet=quiet or work.source.mode == "small")
            work.finish(entry)
    except (OSError, FileWriteError) as exc:  # the corpus's own read errors are ConfigErrors already
        raise _cache_write_error(cfg, entry, exc) from None
    if work.source.mode == "small" and not summary:
        return entry
    on_disk = sum(p.stat().st_size for p in entry.iterdir())
    how = f"{n} worker processes" if n > 1 else "tokenized in this process"
    say(f"prepared {cfg.corpus} ({cfg.tokenizer}): train {st['tokens']['train']:,} tokens, "
        f"val {st['tokens']['val']:,} tokens ({st['documents']['val']:,} document{'s' * (st['documents']['val'] != 1)}), "
        f"{on_disk / 2**20:,.1f} MiB on disk, {st['seconds']:.1f} s, {how} -> {entry}")
    return entry

