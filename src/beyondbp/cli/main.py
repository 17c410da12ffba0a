"""Command line: parse, then call the modules that do the work.

`COMMANDS` is the one table from sub-command to the front-end that adds its parser (whose
`func` does the work); a front-end imports what it calls only when its command runs, so
`beyondbp --help` and the torch-free commands (`study plan|status|report`, `fit`, `methods`)
never load torch. Every user-facing failure prints one line `beyondbp: error: ...` naming the bad
field, file or value, and exits with status 2; an interrupted run exits with 130 after
checkpointing.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..config import ConfigError
from . import bench, data, fit, mlp, study, train
from .method_imports import rule_for

COMMANDS = {  # sub-command -> the function that adds its parser, in the order --help lists them
    "train": train.add_train_parser,
    "chain": train.add_chain_parser,
    "sample": train.add_sample_parser,
    "methods": train.add_methods_parser,
    "fit": fit.add_parser,
    "study": study.add_parser,
    "mlp": mlp.add_parser,
    "bench": bench.add_parser,
    "data": data.add_parser,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="beyondbp", description="Scaling laws beyond backpropagation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parser in COMMANDS.values():
        add_parser(sub)
    return parser


def say(message: str) -> None:
    """Print one line to stderr in a single write, so lines from several ranks never interleave."""
    sys.stderr.flush()
    data = (message + "\n").encode("utf-8", "replace")
    try:
        os.write(sys.stderr.fileno(), data)
    except (AttributeError, OSError, ValueError):  # stderr replaced (pytest capsys, notebooks)
        sys.stderr.write(message + "\n")


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def drop_bad_thread_variables() -> None:
    """OMP_NUM_THREADS or MKL_NUM_THREADS that is not a whole number > 0 (`abc`) is dropped with one
    note before torch loads, rather than left to libgomp's own warning line."""
    for name in THREAD_VARIABLES:
        text = os.environ.get(name)
        if text is not None and not (text.strip().isdigit() and int(text) > 0):
            say(f"beyondbp: note: {name}={text[:40]!r} is not a whole number > 0; ignored")
            del os.environ[name]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    drop_bad_thread_variables()
    try:
        from ..methods.import_policy import import_rule
        with import_rule(rule_for(args)):  # which package.module:Class methods it may import
            return args.func(args)
    except ConfigError as exc:
        say(f"beyondbp: error: {exc}")
        return 2
    except KeyboardInterrupt:
        say("beyondbp: interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - last-resort one-liner; tracebacks with BEYONDBP_DEBUG=1
        from ..runs.folder import Interrupted
        if isinstance(exc, Interrupted):
            say(f"beyondbp: {exc}")
            return 130
        if os.environ.get("BEYONDBP_DEBUG"):
            raise
        say(f"beyondbp: error: {type(exc).__name__}: {exc} (set BEYONDBP_DEBUG=1 for a traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
