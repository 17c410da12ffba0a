"""What a finished pass over a corpus must show before it is stored as a cache entry.

**The entry holds the tokens of the content its name was computed from.** An entry is named
before its corpus is read (`cache.cache_key`: a digest of each file), so a file edited while
`data prepare` reads it would leave the edited tokens under the original content's name, where
a restored original would meet them. So, before a pass is stored (`changed_file`):

* a corpus read whole (small, up to `sources.SMALL_CORPUS_BYTES`): the bytes actually tokenized
  were hashed as they were read (`fingerprint.content_digest`, the digest the name uses) and must
  equal the digest in the name;
* a streamed corpus: every file's size, mtime, ctime, inode and device must be the ones recorded
  when the pass began (`file_stats`, kept in the pass's state.json, so a pass resumed after a kill
  also sees an edit made in between), and its content, hashed again, the digest in the name.
  ctime cannot be set back, so an edit undone before the pass ends is still seen; only an edit and
  its undoing inside one tick of the file system's clock could pass unseen.

A file that changed is refused in one line; the pass's folder is removed (its tokens are of no
one content) and the corpus's remembered digests are forgotten, so the next run hashes its files
again and names the entry after what they then hold.

**There is something to train on.** A pass with no training tokens is refused, with the reason:
an empty corpus, or one whose every document went to validation (a streamed corpus splits by a
hash of each document, so one huge line is one document); its folder is removed too.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..config import ConfigError, DataConfig
from .cache import cache_root
from .fingerprint import hash_files
from .sources import forget_digests


def keyed_files(key: dict) -> list[tuple[str, str]]:
    """(path, digest) of every file a cache key names (none for the built-in corpus)."""
    return [(str(path), str(digest)) for path, digest in key.get("corpus", {}).get("files", [])]


def file_stats(key: dict) -> dict[str, list[int] | None]:
    """Size, mtime, ctime, inode and device of each keyed file (None: it cannot be stat-ed)."""
    stats = {}
    for path, _ in keyed_files(key):
        try:
            st = Path(path).stat()
            stats[path] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
        except OSError:
            stats[path] = None
    return stats


def changed_file(key: dict, stats_before: dict, read_digests: dict[str, str] | None) -> str | None:
    """The first keyed file that is not, or was not while read, the content its digest names."""
    now = file_stats(key)
    for path, digest in keyed_files(key):
        if read_digests is not None and path in read_digests:
            if read_digests[path] != digest:
                return path
        elif now[path] is None or now[path] != stats_before.get(path) or hash_files([Path(path)])[0] != digest:
            return path
    return None


def check_pass(cfg: DataConfig, state: dict, source, partial: Path) -> None:
    """Refuse (removing `partial`) a pass whose files changed while read, or with nothing to train on."""
    changed = changed_file(state["key"], state.get("stats") or {}, getattr(source, "read_digests", None))
    if changed is not None:
        shutil.rmtree(partial, ignore_errors=True)
        forget_digests(cfg, cache_root(cfg).parent / "sources")
        raise ConfigError(f"data.corpus: {changed} changed while it was being read (its content is not the one the "
                          f"cache entry was to be named after); nothing was cached: rerun once it no longer changes")
    if state["tokens"]["train"] > 0:
        return
    shutil.rmtree(partial, ignore_errors=True)
    if state["documents"]["val"]:
        raise ConfigError(f"data.corpus: all {state['documents']['val']:,} document(s) of {cfg.corpus} went to the "
                          f"validation split, none is left to train on (a streamed corpus splits by a hash of each "
                          f"document's text): give it more documents (lines of a .jsonl, or files)")
    raise ConfigError(f"data.corpus: corpus {cfg.corpus} is empty (no non-blank training documents)")
