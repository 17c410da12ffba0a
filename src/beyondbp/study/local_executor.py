"""The local executor: train every run of a plan with a pool of worker processes, resumably.

`run_study` trains the plan's runs (`plan`) with one long-lived worker process per slot
(`beyondbp.train.worker`, started through `multiprocessing` with a real import), each run in
DIR/runs/<run name>/ with its own train.log. A worker trains the jobs it is sent one after
another, each through `beyondbp.train.start.start_folder`, so a process starts once per slot,
not once per run. It is resumable: finished runs are skipped, interrupted ones resume from their
checkpoints; a run that fails is recorded and the others go on; a worker that dies is started
again for the next job. Before any worker starts, every run's memory is checked (a CPU host's
share per run) and the executor preamble runs (`preamble`: checks, data prepared once,
DIR/spec.yaml and DIR/plan.json).
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

from ..atomic_write import make_folder
from ..config import ConfigError, LockHeld
from ..data.child_processes import safe_path_env
from ..reads import read_tail
from ..runs.folder import FINISHED, RunState, read_summary, record_failure, run_state
from ..runs.schedule import step_schedule
from ..train.memory import check_memory
from ..train.tracking import join_study
from ..train.worker import serve
from .chain import Chain, group_jobs, write_chain, write_run_yaml
from .folder import study_counts
from .plan import PlannedRun, StudyPlan
from .preamble import open_study, ready_study
from .tracks import track_of


def worker_layout(plan: StudyPlan, workers: int | None) -> tuple[int, int, list[str] | None]:
    """(workers, threads per run, GPU ids per worker slot or None)."""
    cores = os.cpu_count() or 1
    device = plan.spec.base["train"]["device"]
    gpus = 0
    if device in ("auto", "cuda"):
        import torch
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if workers is None:
        workers = gpus if gpus else cores
    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    workers = min(workers, max(1, len(plan.chains or plan.runs)))  # a chain is one worker's job
    threads = plan.spec.base["train"]["threads"] or max(1, cores // workers)
    slots = [str(i % gpus) for i in range(workers)] if gpus else None
    return workers, threads, slots


@dataclass
class _Job:
    """What one worker trains in one go: one run, or a chain of branched budgets (its trunk, then its
    branches). `folder` holds its run.yaml (and a chain's chain.yaml) and its train.log."""
    runs: list[PlannedRun]  # the runs it finishes (a chain's finished branches are left out)
    chain: Chain | None = None
    folder: Path | None = None  # once written


def _prepared(threads: int, study_dir: Path):
    def prepare(cfg):
        cfg.train.threads, cfg.train.progress = threads, "off"
        join_study(cfg, study_dir)
        return cfg
    return prepare


def _write_job(job: _Job, study_dir: Path, threads: int) -> tuple[str, list[str]]:
    """Write the job's folders (run.yaml; a chain's chain.yaml); what its worker is sent."""
    run_dirs = [study_dir / "runs" / r.name for r in job.runs]
    if job.chain is not None:
        job.folder = write_chain(job.chain, study_dir, _prepared(threads, study_dir))
    else:
        job.folder = run_dirs[0]
        write_run_yaml(job.folder, job.runs[0].cfg, _prepared(threads, study_dir))
    for folder in dict.fromkeys([job.folder, *run_dirs]):
        make_folder(folder, inside=study_dir)  # a folder that turned into a link is refused here
    return str(job.folder), [str(d) for d in run_dirs]


class _Worker:
    """One worker slot's long-lived process (`train.worker.serve`): started when the slot first gets
    a job and again after its process died; it trains the jobs it is sent one after another."""

    def __init__(self, threads: int, gpu: str | None):
        self.threads, self.gpu = threads, gpu
        self.proc = self.conn = self.job = None

    def start(self) -> None:
        context = mp.get_context("spawn")  # a fresh interpreter: no state of this process is inherited
        self.conn, theirs = context.Pipe()
        extra = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if self.gpu is not None:
            extra["CUDA_VISIBLE_DEVICES"] = self.gpu
        with safe_path_env(), _environment(extra):  # the child's environment is this one at its start
            # not a daemon: a worker may start processes of its own (tokenizer workers); stop() joins it
            self.proc = context.Process(target=serve, args=(theirs, os.getpid()), daemon=False)
            self.proc.start()
        theirs.close()

    def send(self, job: _Job, message: tuple) -> None:
        if self.proc is None or not self.proc.is_alive():
            self.start()
        self.job = job
        self.conn.send(message)

    def answer(self) -> tuple[str, str | None] | None:
        """The worker's answer for its job, ("killed", exit status) if it died first, or None."""
        alive = self.proc.is_alive()  # before the poll: an answer sent just before exiting is read
        if self.conn.poll():
            try:
                return self.conn.recv()
            except (EOFError, OSError):
                pass
        elif alive:
            return None
        self.proc.join()
        code, self.proc = self.proc.exitcode, None
        return "killed", str(code if code is not None else -9)

    def stop(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


@contextlib.contextmanager
def _environment(extra: dict[str, str]):
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _last_log_line(run_dir: Path) -> str:
    try:
        lines = [ln for ln in read_tail(run_dir / "train.log", "the run's log").splitlines() if ln.strip()]
    except (OSError, ConfigError):  # no log, or not a regular file: the exit status says what is known
        return ""
    return lines[-1][:500] if lines else ""


def _finish(run: PlannedRun, run_dir: Path, answer: tuple[str, str | None], log_dir: Path) -> RunState:
    """Record a run's outcome from its worker's answer; a crash becomes summary status `failed`
    with its error, the other runs go on."""
    kind, detail = answer
    summary = read_summary(run_dir)
    if summary and summary.get("status") in FINISHED and kind in ("done", "failed"):
        return RunState(summary["status"])
    if kind == "interrupted":
        return RunState.INTERRUPTED
    if kind == "killed":
        code = int(detail)
        reason = _last_log_line(log_dir) or f"exit status {code}"
        record_failure(run_dir, run.method, run.seed, f"killed by signal {-code}: {reason}" if code < 0 else reason,
                       code)
    else:  # the job raised (detail: its error), or returned with this run unfinished
        record_failure(run_dir, run.method, run.seed, detail or _last_log_line(log_dir) or "did not finish", 1)
    return RunState.FAILED


class _Progress:
    """Runs done / running / left and an ETA weighted by each run's planned FLOPs."""

    def __init__(self, plan: StudyPlan, study_dir: Path, todo: list[PlannedRun], quiet: bool):
        from tqdm import tqdm
        self.study_dir, self.todo_cost = study_dir, sum(r.cost for r in todo) or 1.0
        self.n_total, self.n_done = len(plan.runs), len(plan.runs) - len(todo)
        self.start, self.finished_cost = time.monotonic(), 0.0
        self.state = ""
        self.bar = tqdm(total=self.n_total, initial=self.n_done, unit="run", dynamic_ncols=True,
                        disable=quiet or not sys.stderr.isatty(),
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} runs {postfix}")
        self.quiet = quiet

    def _partial(self, running: list[PlannedRun]) -> float:
        done = 0.0
        for run in running:
            path = self.study_dir / "runs" / run.name / "metrics.jsonl"
            try:
                last = read_tail(path, "metrics file", 1 << 16).strip().splitlines()[-1]
                done += run.cost * min(1.0, json.loads(last)["tokens"] / run.tokens)
            except (OSError, IndexError, ValueError, KeyError, TypeError):  # ConfigError is a ValueError
                pass
        return done

    def refresh(self, running: list[PlannedRun], n_left: int) -> None:
        done_cost = self.finished_cost + self._partial(running)
        elapsed = time.monotonic() - self.start
        eta = "?" if done_cost <= 0 else _fmt_seconds(elapsed * (self.todo_cost - done_cost) / done_cost)
        self.state = f"running {len(running)}, left {n_left}, ETA {eta}"
        self.bar.set_postfix_str(self.state)

    def finished(self, run: PlannedRun, status: str, running: list[PlannedRun], n_left: int) -> None:
        self.finished_cost += run.cost
        self.n_done += 1
        self.bar.update(1)
        self.refresh(running, n_left)
        if not self.quiet:
            summary = read_summary(self.study_dir / "runs" / run.name) or {}
            detail = (f"val loss {summary['final_val_loss']:.4f}" if summary.get("final_val_loss") is not None
                      else summary.get("error", ""))
            self.bar.write(f"[{self.n_done}/{self.n_total}] {run.name}: {status} {detail}".rstrip()
                           + f" ({_fmt_seconds(time.monotonic() - self.start)} elapsed; {self.state})", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _fmt_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def check_study_memory(runs: list[PlannedRun], workers: int) -> None:
    """On a CPU host, each run must fit in its share of the memory (K runs train at once)."""
    for run in runs:
        if not track_of(run.cfg).memory_preflight:
            continue
        schedule = step_schedule(run.cfg)
        try:
            check_memory(run.cfg, schedule.n_seqs // schedule.accum, "cpu", share=workers)
        except ConfigError as exc:
            hint = "; or fewer --workers" if workers > 1 else ""
            raise ConfigError(f"{run.name}: {exc}{hint}") from None


def _todo(plan: StudyPlan, study_dir: Path, again: set[str]) -> list[PlannedRun]:
    """The runs to train: unfinished or retrained ones; refused while another process trains one."""
    states = {r.name: run_state(study_dir / "runs" / r.name) for r in plan.runs}
    busy = [name for name, state in states.items() if state == RunState.RUNNING]
    if busy:
        raise LockHeld(f"--out: run {busy[0]} in {study_dir} is being trained by another process; "
                          f"wait for it or stop it first")
    return [r for r in plan.runs if states[r.name] not in FINISHED or r.name in again]


def run_study(plan: StudyPlan, study_dir: str | Path, workers: int | None = None, quiet: bool = False) -> dict:
    """Train every unfinished run of the plan; return {status: count}. Resumable and killable."""
    study_dir, again = open_study(plan, study_dir)
    n_workers, threads, gpus = worker_layout(plan, workers)
    todo = _todo(plan, study_dir, again)
    if not gpus:
        check_study_memory(todo, n_workers)
    study_dir = ready_study(plan, study_dir, [r.cfg for r in todo])
    if not quiet:
        print(f"study {plan.spec.name}: {len(plan.runs)} runs, {len(plan.runs) - len(todo)} already done; "
              f"{n_workers} workers x {threads} threads", file=sys.stderr)
    slots = [_Worker(threads, gpus[slot] if gpus else None) for slot in range(n_workers)]
    _drive(slots, [_Job(runs, chain) for chain, runs in group_jobs(plan, todo)], study_dir,
           _Progress(plan, study_dir, todo, quiet))
    return study_counts(plan, study_dir)


def _drive(slots: list[_Worker], queue: list[_Job], study_dir: Path, progress: _Progress) -> None:
    """Hand the jobs to the worker slots as they free up, record each run's outcome; on SIGTERM or
    Ctrl-C the workers checkpoint their runs and stop (the same command resumes them)."""
    def running_runs() -> list[PlannedRun]:
        return [r for w in slots if w.job is not None for r in w.job.runs]

    def stop_workers(signum, frame):
        for worker in slots:
            if worker.proc is not None and worker.proc.is_alive():
                worker.proc.terminate()  # SIGTERM: a training worker checkpoints, then exits
        raise KeyboardInterrupt

    old_handler = signal.signal(signal.SIGTERM, stop_workers)
    try:
        while queue or running_runs():
            for worker in slots:
                if worker.job is None and queue:
                    job = queue.pop(0)
                    worker.send(job, _write_job(job, study_dir, worker.threads))
            for worker in slots:
                answer = worker.answer() if worker.job is not None else None
                if answer is not None:
                    job, worker.job = worker.job, None
                    for run in job.runs:
                        status = _finish(run, study_dir / "runs" / run.name, answer, job.folder)
                        progress.finished(run, status, running_runs(), len(queue))
            progress.refresh(running_runs(), len(queue))
            wait([w.conn for w in slots if w.job is not None] + [w.proc.sentinel for w in slots if w.job is not None],
                 timeout=0.2)
    finally:
        signal.signal(signal.SIGTERM, old_handler)
        for worker in slots:
            worker.stop(60)  # Ctrl-C reaches the workers too; let them checkpoint
        progress.close()
