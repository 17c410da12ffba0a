"""A study folder and its local executor: train every run of a plan, resumably.

`prepare_study_dir` writes DIR/spec.yaml (or checks that DIR holds this very spec), after every
check has passed;
`run_study` trains the plan's runs (`beyondbp.plan`) with a pool of local worker processes
(`python -m beyondbp train`, one per run), each in DIR/runs/<run name>/. It is resumable:
completed runs are skipped, interrupted ones resume from their checkpoints. `run_state`
tells what a run folder holds, whichever executor trained it.
"""
from __future__ import annotations

import copy
import ctypes
import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..atomic_write import atomic_write
from ..config import ConfigError, load_yaml, to_dict
from .plan import PlannedRun, StudyPlan, plan_study
from ..train.run_folder import EXECUTION_KEYS, read_summary  # settings that may change between invocations
from .spec import normalise_spec

FINISHED = ("completed", "diverged")


# --- study folder ---------------------------------------------------------------------------

def _comparable(spec: dict) -> dict:
    spec = normalise_spec(copy.deepcopy(spec))  # folders written by earlier versions hold older forms
    spec.pop("slurm", None)
    for key in EXECUTION_KEYS:
        spec["base"]["train"].pop(key, None)
    return spec


def _first_difference(old, new, path: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            diff = _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
            if diff:
                return diff
        return None
    return None if old == new else f"{path or 'spec'} ({old!r} there, {new!r} now)"


def check_study_dir(out: str | Path, spec: dict) -> Path:
    """DIR as a Path, refused when it holds a study with another spec; writes nothing."""
    from ..train.run_folder import check_out_path
    out = check_out_path(out)
    spec_path = out / "spec.yaml"
    if spec_path.exists():
        old = load_yaml(spec_path, "the study's spec")
        diff = _first_difference(_comparable(old), _comparable(spec))
        if diff:
            raise ConfigError(f"--out: {out} holds a study with a different spec: {diff}; use another --out")
    return out


def prepare_study_dir(out: str | Path, spec: dict) -> Path:
    """Create DIR with spec.yaml, or check that DIR holds this very spec. Executors call it once
    every check has passed, so that a refused study leaves nothing that blocks the corrected one."""
    out = check_study_dir(out, spec)
    spec_path = out / "spec.yaml"
    if spec_path.exists():
        return out
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out: cannot create {out} ({exc.strerror or exc})") from None
    atomic_write(spec_path, yaml.safe_dump(spec, sort_keys=False))
    return out


def load_study(study_dir: str | Path) -> StudyPlan:
    path = Path(study_dir) / "spec.yaml"
    if not path.exists():
        raise ConfigError(f"DIR: {study_dir} is not a study folder (no spec.yaml)")
    return plan_study(normalise_spec(load_yaml(path, "the study's spec")))


def _is_locked(lock_path: Path) -> bool:
    """Whether a live process holds the run's lock (a dead or zombie one has released it)."""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's own lock
    return False


def run_state(run_dir: Path) -> str:
    """completed | diverged | failed | running | interrupted | pending."""
    if _is_locked(run_dir / "worker.lock"):  # before the summary: a failed run may be retried
        return "running"
    summary = read_summary(run_dir)
    if summary and summary.get("status") in (*FINISHED, "failed"):
        return summary["status"]
    if (run_dir / "checkpoint.pt").exists() or (run_dir / "metrics.jsonl").exists():
        return "interrupted"
    return "pending"


# --- execution -------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """In the child: get SIGKILL when the study process dies, so no run outlives its study."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


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
    workers = min(workers, max(1, len(plan.runs)))
    threads = plan.spec["base"]["train"]["threads"] or max(1, cores // workers)
    slots = [str(i % gpus) for i in range(workers)] if gpus else None
    return workers, threads, slots


def _launch(run: PlannedRun, run_dir: Path, threads: int, gpu: str | None) -> subprocess.Popen:
    cfg = copy.deepcopy(run.cfg)
    cfg.train.threads, cfg.train.progress = threads, "off"
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "run.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    # the child inherits a locked descriptor: the run counts as running while it lives
    lock_fd = os.open(run_dir / "worker.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    log = open(run_dir / "train.log", "a")
    command = "mlp" if cfg.model.kind == "mlp" else "train"
    cmd = [sys.executable, "-m", "beyondbp", command, "--config", str(run_dir / "run.yaml"), "--out", str(run_dir)]
    try:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL,
                                pass_fds=(lock_fd,),
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    finally:
        log.close()
        os.close(lock_fd)
    return proc


def _last_log_line(run_dir: Path) -> str:
    try:
        lines = [ln for ln in (run_dir / "train.log").read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:500] if lines else ""


def _finish(run: PlannedRun, run_dir: Path, returncode: int) -> str:
    """Record a run's outcome; a crash becomes summary status `failed` with its error."""
    summary = read_summary(run_dir)
    if summary and summary.get("status") in FINISHED and returncode == 0:
        return summary["status"]
    if returncode == 130:
        return "interrupted"
    reason = _last_log_line(run_dir) or f"exit status {returncode}"
    if returncode < 0:
        reason = f"killed by signal {-returncode}: {reason}"
    failed = {"method": run.method, "seed": run.seed, "status": "failed", "error": reason, "returncode": returncode}
    atomic_write(run_dir / "summary.json", json.dumps(failed, indent=2) + "\n")
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
                last = path.read_text().strip().splitlines()[-1]
                done += run.cost * min(1.0, json.loads(last)["tokens"] / run.tokens)
            except (OSError, IndexError, ValueError, KeyError):
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


def prepare_data(runs: list[PlannedRun]) -> None:
    """Tokenize and cache each corpus once, before the workers start: a bad corpus fails here
    with one line, and K workers do not tokenize the same corpus K times."""
    from ..data.tokens import load_token_data
    seen = set()
    for run in runs:
        key = json.dumps(dataclasses.asdict(run.cfg.data), sort_keys=True)
        if key not in seen:
            seen.add(key)
            if run.cfg.model.kind == "mlp":
                from ..train.mlp_loop import image_data_shape
                image_data_shape(run.cfg.data)
            else:
                load_token_data(run.cfg.data)


def runs_to_retrain(plan: StudyPlan, study_dir: str | Path) -> list[PlannedRun]:
    """Runs whose recorded tokens (DIR/runs/NAME/data.json) are not what their corpus gives now.

    A study whose corpus changed under it is refused in one line (its runs would mix corpora),
    unless its runs ask for train.on_data_change=restart: those are then returned, to be trained
    again (their earlier results are set aside in the run folder)."""
    from ..data.tokens import cache_entry
    from ..train.run_folder import DATA_RECORD, data_change
    entries: dict[str, str] = {}
    changed = []
    for run in plan.runs:
        run_dir = Path(study_dir) / "runs" / run.name
        if not (run_dir / DATA_RECORD).exists():
            continue
        key = json.dumps(dataclasses.asdict(run.cfg.data), sort_keys=True)
        if key not in entries:
            entries[key] = cache_entry(run.cfg.data).name
        reason = data_change(run_dir, run.cfg.data.corpus, entries[key])
        if reason:
            changed.append((run, reason))
    refused = [(run, reason) for run, reason in changed if run.cfg.train.on_data_change != "restart"]
    if refused:
        raise ConfigError(f"data.corpus: {len(refused)} run(s) of {study_dir} were trained on other tokens: "
                          f"{refused[0][1]}; going on would mix corpora in one study. Restore the corpus, use "
                          f"another --out, or add base.train.on_data_change=restart to train them again")
    return [run for run, _ in changed]


def check_study_memory(runs: list[PlannedRun], workers: int) -> None:
    """On a CPU host, each run must fit in its share of the memory (K runs train at once)."""
    from ..train.memory import check_memory
    from ..train.loop import make_plan
    for run in runs:
        if run.cfg.model.kind != "gpt":
            continue
        plan = make_plan(run.cfg)
        try:
            check_memory(run.cfg, plan.n_seqs // plan.accum, "cpu", share=workers)
        except ConfigError as exc:
            hint = "; or fewer --workers" if workers > 1 else ""
            raise ConfigError(f"{run.name}: {exc}{hint}") from None


def run_study(plan: StudyPlan, study_dir: str | Path, workers: int | None = None, quiet: bool = False) -> dict:
    """Train every unfinished run of the plan; return {status: count}. Resumable and killable."""
    study_dir = check_study_dir(study_dir, plan.spec)
    n_workers, threads, gpus = worker_layout(plan, workers)
    runs_dir = study_dir / "runs"
    states = {r.name: run_state(runs_dir / r.name) for r in plan.runs}
    busy = [name for name, state in states.items() if state == "running"]
    if busy:
        raise ConfigError(f"--out: run {busy[0]} in {study_dir} is being trained by another process; "
                          f"wait for it or stop it first")
    again = {r.name for r in runs_to_retrain(plan, study_dir)}
    todo = [r for r in plan.runs if states[r.name] not in FINISHED or r.name in again]
    if not gpus:
        check_study_memory(todo, n_workers)
    prepare_data(todo)
    prepare_study_dir(study_dir, plan.spec)
    todo.sort(key=lambda r: -r.cost)  # longest first: the last runs to finish are short ones
    if not quiet:
        print(f"study {plan.spec['name']}: {len(plan.runs)} runs, {len(plan.runs) - len(todo)} already done; "
              f"{n_workers} workers x {threads} threads", file=sys.stderr)
    progress = _Progress(plan, study_dir, todo, quiet)
    running: dict[int, tuple[PlannedRun, subprocess.Popen]] = {}  # worker slot -> run
    queue = list(todo)

    def stop_children(signum, frame):
        for _, proc in running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # train checkpoints, then exits
        raise KeyboardInterrupt

    old_handler = signal.signal(signal.SIGTERM, stop_children)
    try:
        while queue or running:
            for slot in range(n_workers):
                if slot not in running and queue:
                    run = queue.pop(0)
                    running[slot] = (run, _launch(run, runs_dir / run.name, threads, gpus[slot] if gpus else None))
            for slot, (run, proc) in list(running.items()):
                if proc.poll() is not None:
                    del running[slot]
                    status = _finish(run, runs_dir / run.name, proc.returncode)
                    progress.finished(run, status, [r for r, _ in running.values()], len(queue))
            progress.refresh([r for r, _ in running.values()], len(queue))
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


def study_counts(plan: StudyPlan, study_dir: str | Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in plan.runs:
        state = run_state(Path(study_dir) / "runs" / run.name)
        counts[state] = counts.get(state, 0) + 1
    return counts
