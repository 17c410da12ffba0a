"""Hugging Face datasets as corpora (`data.corpus=hf:NAME[:CONFIG]`): their rows and text field.

The `datasets` package loads only when such a corpus is read (pip install 'beyondbp[hf]').
"""
from __future__ import annotations

import glob
import itertools
import logging
import os
from contextlib import contextmanager
from typing import Iterator

from ..config import ConfigError, DataConfig


def hf_local_files(cfg: DataConfig) -> list[str]:
    return sorted(glob.glob(os.path.expanduser(cfg.hf_data_files or ""), recursive=True))


def hf_rows(cfg: DataConfig) -> Iterator[dict]:
    """The dataset's rows, at most data.hf_max_docs of them."""
    try:
        import datasets
    except ImportError:
        raise ConfigError("data.corpus: hf: corpora need the datasets package (pip install 'beyondbp[hf]')") from None
    name, _, config = cfg.corpus[3:].partition(":")
    kwargs = {"split": cfg.hf_split, "streaming": cfg.hf_streaming}
    if cfg.hf_data_files:
        if "://" not in cfg.hf_data_files and not hf_local_files(cfg):
            raise ConfigError(f"data.hf_data_files: no files match {cfg.hf_data_files}")
        kwargs["data_files"] = os.path.expanduser(cfg.hf_data_files)
    try:
        with quiet_hub_logs():
            rows = datasets.load_dataset(name, config or None, **kwargs)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"data.corpus: cannot load Hugging Face dataset {cfg.corpus!r}: {first}") from None
    return itertools.islice(iter(rows), cfg.hf_max_docs)


@contextmanager
def quiet_hub_logs():
    """Hide the Hub client's per-retry warnings (a missing dataset or no network prints a dozen);
    what failed comes back as the exception, which becomes one line."""
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "datasets", "fsspec")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def hf_text(cfg: DataConfig, row: dict) -> str:
    if not isinstance(row.get(cfg.text_field), str):
        raise ConfigError(f"data.text_field: dataset {cfg.corpus!r} has no string field {cfg.text_field!r} "
                          f"(fields: {', '.join(row)})")
    return row[cfg.text_field]
