"""A long-lived worker of the local executor: one process per worker slot trains the jobs its
executor sends it, one after another, so the interpreter, torch and the first optimizer call
start once per slot instead of once per run.

`serve` is the process's target (a spawn-context `multiprocessing.Process`, started by
`beyondbp.study.local_executor`). Each job is a folder as `start.start_folder` takes it, with the
run folders it finishes. For each job the worker locks those folders (worker.lock: the runs count
as running while it trains them), sends its stdout and stderr to the job's train.log, trains, and
answers on its connection:

  ("done", None)              the job returned (its summaries say how each run ended)
  ("failed", "Type: why")     it raised; the executor records the runs it left unfinished
  ("interrupted", None)       SIGTERM/SIGINT: the run wrote its checkpoint; the worker exits

Every run seeds itself from its config (`loop`, `mlp_loop`), so a run trained after others in the
same worker gives the bits it gives in a fresh process. The worker dies with its executor
(`data.child_processes.die_with_parent`).
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from ..atomic_write import open_append
from ..config import ConfigError
from ..data.child_processes import die_with_parent
from ..runs.folder import Interrupted, lock_run

LOG = "train.log"


@contextlib.contextmanager
def output_to(log_path: Path):
    """This process's stdout and stderr (file descriptors 1 and 2 and Python's streams) appended to
    `log_path` for the duration; what they were afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    log = open_append(log_path)
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, target in zip(saved, (1, 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.close(log)


def run_job(folder: Path, run_dirs: list[Path]) -> tuple[str, str | None]:
    """Train one job (`start.start_folder`) holding its folders' locks, its output in
    FOLDER/train.log; the answer `serve` sends."""
    from .start import start_folder
    locks = []
    try:
        with output_to(folder / LOG):
            try:
                for path in dict.fromkeys([folder, *run_dirs]):
                    fd = lock_run(path)
                    if fd is not None:
                        locks.append(fd)
                start_folder(folder, quiet=False)
                return "done", None
            except (Interrupted, KeyboardInterrupt) as exc:
                print(f"beyondbp: {exc or 'interrupted'}", file=sys.stderr)
                return "interrupted", None
            except Exception as exc:  # noqa: BLE001 - one run's failure is recorded; the worker goes on
                what = f"{exc}" if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
                print(f"beyondbp: error: {what}", file=sys.stderr)
                return "failed", what.splitlines()[0][:500] if what else type(exc).__name__
    finally:
        for fd in locks:
            os.close(fd)


def serve(conn, parent_pid: int) -> None:
    """The worker process: take (folder, run folders) jobs from `conn` until it sends None or
    closes; answer each (`run_job`); exit after an interrupted one."""
    die_with_parent(parent_pid)
    while True:
        try:
            job = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if job is None:
            return
        folder, run_dirs = job
        answer = run_job(Path(folder), [Path(d) for d in run_dirs])
        try:
            conn.send(answer)
        except (BrokenPipeError, OSError):
            return
        if answer[0] == "interrupted":
            return
