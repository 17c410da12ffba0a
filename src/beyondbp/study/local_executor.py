"""The local executor: train every run of a plan with a pool of worker processes, resumably.

`run_study` trains the plan's runs (`plan`) with local worker processes (`python -m beyondbp
train` or `mlp`, the run's track's command, one per run), each in DIR/runs/<run name>/. It is
resumable: finished runs are skipped, interrupted ones resume from their checkpoints. Before
any worker starts, every run's memory is checked (a CPU host's share per run), each corpus is
prepared once (`tracks.prepare_data`) and DIR/spec.yaml is written (`folder`).
"""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic_write import make_folder, open_append
from ..config import ConfigError, LockHeld
from ..data.child_processes import child_env, die_with_parent, python_command
from ..methods.import_policy import OPT_IN
from ..reads import read_tail
from ..train.memory import check_memory
from ..runs.folder import FINISHED, HELD_LOCKS, lock_run, read_summary, record_failure, run_state
from ..runs.schedule import step_schedule
from ..train.tracking import check_trackers, join_study
from .chain import Chain, group_jobs, write_chain, write_run_yaml
from .folder import (check_method_records, check_study_dir, prepare_study_dir, refuse_linked_folders, runs_to_retrain,
                     study_counts)
from .plan import PlannedRun, StudyPlan
from .tracks import prepare_data, track_of


def worker_layout(plan: StudyPlan, workers: int | None) -> tuple[int, int, list[str] | None]:
    """(workers, threads per run, GPU ids per worker slot or None)."""
    cores = os.cpu_count() or 1
    device = plan.spec["base"]["train"]["device"]
    gpus = 0
    if device in ("auto", "cuda"):
        import torch
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if workers is None:
        workers = gpus if gpus else cores
    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    workers = min(workers, max(1, len(plan.chains or plan.runs)))  # a chain is one worker's job
    threads = plan.spec["base"]["train"]["threads"] or max(1, cores // workers)
    slots = [str(i % gpus) for i in range(workers)] if gpus else None
    return workers, threads, slots


@dataclass
class _Job:
    """What one worker process trains: one run, or a chain of branched budgets (its trunk, then its
    branches, `beyondbp chain`). `log_dir` holds its train.log."""
    runs: list[PlannedRun]  # the runs it finishes (a chain's finished branches are left out)
    chain: Chain | None = None
    log_dir: Path | None = None  # where its train.log goes, once launched


def _prepared(threads: int, study_dir: Path):
    def prepare(cfg):
        cfg.train.threads, cfg.train.progress = threads, "off"
        join_study(cfg, study_dir)
        return cfg
    return prepare


def _launch(job: _Job, study_dir: Path, threads: int, gpu: str | None) -> subprocess.Popen:
    run_dirs = [study_dir / "runs" / r.name for r in job.runs]
    if job.chain is not None:
        log_dir = write_chain(job.chain, study_dir, _prepared(threads, study_dir))
        cmd = python_command("-m", "beyondbp", "chain", str(log_dir), OPT_IN)
    else:
        log_dir = run_dirs[0]
        cfg = write_run_yaml(log_dir, job.runs[0].cfg, _prepared(threads, study_dir))
        cmd = python_command("-m", "beyondbp", track_of(cfg).command, "--config", str(log_dir / "run.yaml"),
                             "--out", str(log_dir), OPT_IN)
    env = child_env(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    # the child inherits locked descriptors: its runs count as running while it lives
    lock_fds = []
    try:  # a folder refused half-way (a link) releases the locks already taken
        for folder in dict.fromkeys([log_dir, *run_dirs]):
            make_folder(folder, inside=study_dir)
            fd = lock_run(folder)
            if fd is not None:
                lock_fds.append(fd)
        env[HELD_LOCKS] = ",".join(map(str, lock_fds))  # `train` then knows its run is locked for it
        log = open_append(log_dir / "train.log")
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                                    pass_fds=tuple(lock_fds),
                                    preexec_fn=functools.partial(die_with_parent, os.getpid()))
        finally:
            os.close(log)
    finally:
        for fd in lock_fds:
            os.close(fd)
    job.log_dir = log_dir
    return proc


def _last_log_line(run_dir: Path) -> str:
    try:
        lines = [ln for ln in read_tail(run_dir / "train.log", "the run's log").splitlines() if ln.strip()]
    except (OSError, ConfigError):  # no log, or not a regular file: the exit status says what is known
        return ""
    return lines[-1][:500] if lines else ""


def _finish(run: PlannedRun, run_dir: Path, returncode: int, log_dir: Path | None = None) -> str:
    """Record a run's outcome; a crash becomes summary status `failed` with its error."""
    summary = read_summary(run_dir)
    if summary and summary.get("status") in FINISHED and returncode in (0, 1):  # a chain with a diverged run: 1
        return summary["status"]
    if returncode == 130:
        return "interrupted"
    reason = _last_log_line(log_dir or run_dir) or f"exit status {returncode}"
    if returncode < 0:
        reason = f"killed by signal {-returncode}: {reason}"
    record_failure(run_dir, run.method, run.seed, reason, returncode)
    return "failed"


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


def run_study(plan: StudyPlan, study_dir: str | Path, workers: int | None = None, quiet: bool = False) -> dict:
    """Train every unfinished run of the plan; return {status: count}. Resumable and killable."""
    study_dir = check_study_dir(study_dir, plan.spec)
    refuse_linked_folders(plan, study_dir)
    check_trackers(r.cfg for r in plan.runs)
    check_method_records(plan, study_dir)
    n_workers, threads, gpus = worker_layout(plan, workers)
    runs_dir = study_dir / "runs"
    states = {r.name: run_state(runs_dir / r.name) for r in plan.runs}
    busy = [name for name, state in states.items() if state == "running"]
    if busy:
        raise LockHeld(f"--out: run {busy[0]} in {study_dir} is being trained by another process; "
                          f"wait for it or stop it first")
    again = {r.name for r in runs_to_retrain(plan, study_dir)}
    todo = [r for r in plan.runs if states[r.name] not in FINISHED or r.name in again]
    if not gpus:
        check_study_memory(todo, n_workers)
    prepare_data([r.cfg for r in todo])
    prepare_study_dir(study_dir, plan.spec)
    queue = [_Job(runs, chain) for chain, runs in group_jobs(plan, todo)]
    if not quiet:
        print(f"study {plan.spec['name']}: {len(plan.runs)} runs, {len(plan.runs) - len(todo)} already done; "
              f"{n_workers} workers x {threads} threads", file=sys.stderr)
    progress = _Progress(plan, study_dir, todo, quiet)
    running: dict[int, tuple[_Job, subprocess.Popen]] = {}  # worker slot -> job

    def stop_children(signum, frame):
        for _, proc in running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # train checkpoints, then exits
        raise KeyboardInterrupt

    def running_runs() -> list[PlannedRun]:
        return [r for job, _ in running.values() for r in job.runs]

    old_handler = signal.signal(signal.SIGTERM, stop_children)
    try:
        while queue or running:
            for slot in range(n_workers):
                if slot not in running and queue:
                    job = queue.pop(0)
                    running[slot] = (job, _launch(job, study_dir, threads, gpus[slot] if gpus else None))
            for slot, (job, proc) in list(running.items()):
                if proc.poll() is not None:
                    del running[slot]
                    for run in job.runs:
                        status = _finish(run, runs_dir / run.name, proc.returncode, job.log_dir)
                        progress.finished(run, status, running_runs(), len(queue))
            progress.refresh(running_runs(), len(queue))
            time.sleep(0.2)
    except KeyboardInterrupt:
        for _, proc in running.values():
            try:
                proc.wait(timeout=60)  # Ctrl-C reaches the children too; let them checkpoint
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    finally:
        signal.signal(signal.SIGTERM, old_handler)
        progress.close()
    return study_counts(plan, study_dir)


