"""How this package starts child Python processes: off the current folder, and never outliving
their parent.

A study folder may be received from someone else, and commands run from inside it. A Python
started as `python -m ...` or `python -c ...` puts the current folder first on `sys.path`, so a
`yaml.py` planted there would be imported by the child. Every child interpreter this package
starts therefore runs with `-P` or `PYTHONSAFEPATH=1` (Python >= 3.11: neither the current
folder nor the script's folder goes on `sys.path`; PYTHONPATH still applies). The variable is
inherited, so the child's own children (multiprocessing's workers and resource tracker, torch's)
start the same way.

Worker processes ask the kernel for SIGKILL when their parent dies (Linux's PR_SET_PDEATHSIG),
and exit at once if the parent is already gone: a killed `data prepare` or `study run` leaves no
worker behind (a pool's resource tracker then reads end-of-file and exits too).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

SAFE_PATH = "PYTHONSAFEPATH"


def python_command(*args: str) -> list[str]:
    """The command line of a child interpreter that never imports from the current folder."""
    return [sys.executable, "-P", *args]


def child_env(base: dict | None = None, **extra: str) -> dict[str, str]:
    """`base` (default: this process's environment) with PYTHONSAFEPATH=1 and `extra`."""
    return {**(os.environ if base is None else base), SAFE_PATH: "1", **extra}


@contextlib.contextmanager
def safe_path_env():
    """PYTHONSAFEPATH=1 in this process's environment while children are started by code that
    takes no environment of its own (multiprocessing, submitit); the old value afterwards."""
    old = os.environ.get(SAFE_PATH)
    os.environ[SAFE_PATH] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(SAFE_PATH, None)
        else:
            os.environ[SAFE_PATH] = old


def die_with_parent(parent_pid: int | None = None) -> None:
    """In a child: SIGKILL when the parent dies; exit now if `parent_pid` is no longer the parent
    (it died before the request was made). A no-op where the kernel offers no such signal."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def _start_worker(parent_pid: int, initializer, initargs: tuple) -> None:
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


class WorkerPool(ProcessPoolExecutor):
    """A spawn-context process pool whose workers (and resource tracker) start with
    PYTHONSAFEPATH=1 and die with this process. Workers are spawned as tasks are submitted."""

    def __init__(self, workers: int, initializer=None, initargs: tuple = ()):
        import multiprocessing as mp
        with safe_path_env():  # the resource tracker starts here
            super().__init__(workers, mp_context=mp.get_context("spawn"), initializer=_start_worker,
                             initargs=(os.getpid(), initializer, initargs))

    def submit(self, fn, /, *args, **kwargs):
        with safe_path_env():  # a worker may be spawned here
            return super().submit(fn, *args, **kwargs)
