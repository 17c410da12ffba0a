"""A study across a Slurm cluster: one submitit job per run, resumable, preemption-safe.

`beyondbp study run SPEC --executor slurm` submits each unfinished run of the plan as its own
job and exits (or waits with --wait). Everything a run writes lives in its own folder on the
shared filesystem, DIR/runs/NAME/:
  run.yaml          its RunConfig (written by the submitter, before the job exists)
  slurm_job.json    the job id, cluster and earlier job ids (written by the submitter only)
  slurm/            submitit's pickles and logs (%j_0_log.out, ...)
  slurm_task.json   host, pid and job id of the attempt now training (written by rank 0)
  worker.lock       held (flock) by rank 0 while it trains: a second job for the same run
                    refuses to start instead of writing the same files
  config.yaml, metrics.jsonl, checkpoint.pt, summary.json   as for any run (beyondbp.runs.folder)

A run that needs K GPUs is one job with K tasks (submitit `tasks_per_node` x `nodes`); each
task is one torch.distributed rank that trains the run in-process (its track's runner,
`beyondbp.train.loop.train` for the Transformer track), with RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT taken from submitit's JobEnvironment.
In-process ranks (rather than torchrun inside one task) keep submitit's signal handling, its
requeue, and its per-task logs working on every rank; every task sees all GPUs of its node
(submitit's default) and picks GPU LOCAL_RANK.

Preemption and time limits: Slurm sends USR2 `signal_delay_s` before the limit (and on
preemption); the job turns it into the SIGTERM that `train` already handles (finish the
step, write checkpoint.pt, stop), then hands over to submitit, which calls
`TrainJob.checkpoint()` and requeues the job; the requeued job resumes from checkpoint.pt.
A plain SIGTERM (scancel) checkpoints and stops without a requeue. A job killed outright
(SIGKILL, node failure) loses at most `train.checkpoint_every_s` of work: resubmitting the
study resumes it, and never retrains a finished run.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path


from ..atomic_write import atomic_write
from ..config import ConfigError
from ..methods.run_builder import load_run_file
from ..data.child_processes import python_command, safe_path_env
from ..reads import read_text
from ..runs.chain import CHAIN_FILE, read_chain_file
from ..runs.folder import FINISHED, RunState, lock_file, lock_run, read_summary, record_failure, run_state
from ..runs.schedule import step_schedule
from ..train.tracking import join_study
from .chain import group_jobs, write_chain, write_run_yaml
from .plan import PlannedRun, StudyPlan, plan_study
from .preamble import open_study, ready_study
from .slurm_settings import SlurmSettings
from .spec_types import Spec

# Slurm job states (sacct/squeue) grouped into what `study status` shows
QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESIZING", "SUSPENDED"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
JOB_FILE = "slurm_job.json"
TASK_FILE = "slurm_task.json"


def require_submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("--executor slurm: submitit is not installed; pip install beyondbp[slurm]") from None
    return submitit


def plan_for_slurm(spec: Spec, settings: SlurmSettings) -> StudyPlan:
    """The plan, each run checked to split its batch over gpus_per_run processes."""
    plan = plan_study(spec)
    world = settings.gpus_per_run
    if world > 1:
        for run in plan.runs:
            try:
                step_schedule(run.cfg, world)
            except ConfigError as exc:
                raise ConfigError(f"--gpus-per-run: {world} processes cannot train {run.name}: {exc}") from None
    return plan


# --- the job -----------------------------------------------------------------------------------

def _preempt_signal() -> int:
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


class TrainJob:
    """What each task of a run's job executes (pickled by submitit; checkpointable)."""

    def __init__(self, run_dir: str):
        self.run_dir = str(run_dir)

    def checkpoint(self, *args, **kwargs):
        # train has written checkpoint.pt before submitit calls this; the same call resumes from it
        from submitit.helpers import DelayedSubmission
        return DelayedSubmission(TrainJob(self.run_dir))

    def __call__(self) -> dict:
        import submitit
        from ..runs.folder import Interrupted
        from ..train.start import start_folder  # the job's one way to train (declared in pyproject.toml)
        job_env = submitit.JobEnvironment()
        if job_env.num_tasks > 1:
            _export_torch_distributed(job_env)
        run_dir = Path(self.run_dir)
        cfg = load_run_file(run_dir / "run.yaml")
        is_main = job_env.global_rank == 0
        # a chain's job (run_dir is its trunk's folder) holds its branches' folders too
        chain = read_chain_file(run_dir) if (run_dir / CHAIN_FILE).exists() else []
        lock_fds = [lock_run(d, wait=False) for d in [run_dir, *(d for d, _ in chain)]] if is_main else []
        if is_main:
            atomic_write(run_dir / TASK_FILE, json.dumps({
                "job_id": job_env.job_id, "host": socket.gethostname(), "pid": os.getpid(),
                "tasks": job_env.num_tasks, "started": time.time()}) + "\n")
        preempted = []

        def on_preempt(signum, frame):
            preempted.append(signum)
            os.kill(os.getpid(), signal.SIGTERM)  # train's own stop: finish the step, checkpoint

        submitit_handler = signal.signal(_preempt_signal(), on_preempt)
        try:
            summaries = start_folder(run_dir)
            summary = {"status": RunState.COMPLETED, "runs": summaries} if chain else summaries[str(run_dir)]
        except Interrupted:
            signal.signal(_preempt_signal(), submitit_handler)
            if preempted and callable(submitit_handler):
                submitit_handler(preempted[0], None)  # checkpoint() + requeue + exit (rank 0)
            raise
        except BaseException as exc:
            if is_main and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                for folder in [d for d, _ in chain] or [run_dir]:
                    _record_failure(folder, cfg, exc)
            raise
        finally:
            signal.signal(_preempt_signal(), submitit_handler)
            for fd in lock_fds:
                if fd is not None:
                    os.close(fd)
        return {k: (summary or {}).get(k) for k in ("status", "final_val_loss", "tokens", "runs")}


def _export_torch_distributed(job_env) -> None:
    from submitit.helpers import TorchDistributedEnvironment
    dist_env = TorchDistributedEnvironment()
    # every task sees the node's GPUs and picks GPU LOCAL_RANK itself (beyondbp.train.distributed)
    dist_env.export(set_cuda_visible_devices=False, overwrite=True)
    if os.environ.get("SUBMITIT_EXECUTOR") == "local":
        os.environ["MASTER_ADDR"] = "127.0.0.1"  # one machine: no name resolution needed


def _record_failure(run_dir: Path, cfg, exc: BaseException) -> None:
    summary = read_summary(run_dir)
    if summary and summary.get("status") in FINISHED:
        return
    record_failure(run_dir, cfg.method.name, cfg.seed, f"{type(exc).__name__}: {exc}".splitlines()[0][:500])


# --- submission ------------------------------------------------------------------------------

def make_executor(run_dir: Path, settings: SlurmSettings, name: str):
    submitit = require_submitit()
    cluster = settings.cluster
    python = " ".join(shlex.quote(part) for part in python_command())  # the job's Python: off the current folder
    executor = submitit.AutoExecutor(folder=run_dir / "slurm", cluster=cluster, **{f"{cluster}_python": python})
    tasks = settings.gpus_per_run // settings.nodes
    params = {"name": name, "timeout_min": settings.timeout_min, "tasks_per_node": tasks,
              "gpus_per_node": 0 if settings.cpu_only else tasks}
    if settings.cpus_per_task:
        params["cpus_per_task"] = settings.cpus_per_task
    if cluster == "slurm":
        params.update(nodes=settings.nodes, slurm_partition=settings.partition)
        if settings.mem_gb:
            params["mem_gb"] = settings.mem_gb
        if settings.account:
            params["slurm_account"] = settings.account
        if settings.setup:
            params["slurm_setup"] = settings.setup
        if settings.extra:
            params["slurm_additional_parameters"] = settings.extra
    elif settings.nodes > 1:
        raise ConfigError("slurm.nodes: the local cluster has one node; set slurm.nodes=1 with --cluster local")
    executor.update_parameters(**params)
    return executor


def read_job_record(run_dir: Path) -> dict | None:
    try:
        return json.loads(read_text(run_dir / JOB_FILE, "the Slurm job record", "json"))
    except (OSError, ValueError):  # missing, not JSON, or refused by the reader (ConfigError)
        return None


def _job_config(cfg, settings: SlurmSettings, study_dir: Path):
    cfg.train.progress = "off"
    join_study(cfg, study_dir)
    if not cfg.train.threads and settings.cpus_per_task:
        cfg.train.threads = settings.cpus_per_task
    return cfg


def _jobs(plan: StudyPlan, todo: list[PlannedRun], study_dir: Path, settings: SlurmSettings) -> list[tuple[Path, list]]:
    """(the job's folder, the runs it finishes), `chains.group_jobs`' order, with their run.yaml (and a
    chain's chain.yaml) written: a chain's job works in its trunk's folder."""
    def prepare(cfg):
        return _job_config(cfg, settings, study_dir)
    jobs = []
    for chain, runs in group_jobs(plan, todo):
        if chain is not None:
            jobs.append((write_chain(chain, study_dir, prepare), runs))
        else:
            folder = study_dir / "runs" / runs[0].name
            write_run_yaml(folder, runs[0].cfg, prepare)
            jobs.append((folder, runs))
    return jobs


def _write_job_record(run_dir: Path, job, settings: SlurmSettings) -> None:
    old = read_job_record(run_dir) or {}
    history = old.get("previous_job_ids", []) + ([old["job_id"]] if old.get("job_id") else [])
    atomic_write(run_dir / JOB_FILE, json.dumps({
        "job_id": str(job.job_id), "cluster": settings.cluster, "host": socket.gethostname(),
        "submitted": time.time(), "gpus": settings.gpus_per_run, "previous_job_ids": history},
        indent=2) + "\n")


def submit_study(plan: StudyPlan, study_dir: str | Path, settings: SlurmSettings,
                 quiet: bool = False) -> dict[str, object]:
    """Submit one job per run that is neither finished nor queued/running; return {run name: job}."""
    require_submitit()
    if settings.cluster == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("--executor slurm: sbatch is not on PATH; submit from a Slurm login node "
                          "(or test with --cluster local)")
    study_dir, again = open_study(plan, study_dir, retrain=settings.prepare_data)
    runs_dir = study_dir / "runs"
    # a bad corpus fails here with one line, before the folder is written
    data_of = [r.cfg for r in plan.runs if run_state(runs_dir / r.name) not in FINISHED or r.name in again]
    study_dir = ready_study(plan, study_dir, data_of if settings.prepare_data else None)
    # two submitters at once would queue each run twice
    lock_fd = lock_file(study_dir / "submit.lock", False,
                        f"--out: another `study run` is submitting {study_dir}; wait for it")
    try:
        settings = replace(settings, cpu_only=plan.spec.base["train"]["device"] == "cpu")
        statuses = {r.name: run_status(runs_dir / r.name) for r in plan.runs}
        todo = [r for r in plan.runs
                if statuses[r.name][0] not in (*FINISHED, RunState.QUEUED, RunState.RUNNING) or r.name in again]
        jobs = {}
        for job_dir, runs in _jobs(plan, todo, study_dir, settings):
            executor = make_executor(job_dir, settings, f"{plan.spec.name}/{job_dir.name}")
            with safe_path_env():  # inherited by the job (sbatch exports it; the local cluster's controller)
                job = executor.submit(TrainJob(str(job_dir)))
            for run in runs:  # each run folder names its job, so `study status` asks the scheduler
                _write_job_record(runs_dir / run.name, job, settings)
                jobs[run.name] = job
        if not quiet:
            active = [n for n, (s, _) in statuses.items() if s in (RunState.QUEUED, RunState.RUNNING)]
            print(f"study {plan.spec.name}: {len(plan.runs)} runs, "
                  f"{sum(s in FINISHED for s, _ in statuses.values())} already done, "
                  f"{len(active)} already queued or running, {len(jobs)} submitted", file=sys.stderr)
        return jobs
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def wait_for(jobs: dict, study_dir: str | Path, poll_s: float | None = None) -> None:
    """Block until every submitted job has ended (requeued jobs included)."""
    runs_dir = Path(study_dir) / "runs"
    if poll_s is None:  # a Slurm poll asks sacct once per job: spare the controller
        poll_s = 1.0 if all(job.__class__.__name__ == "LocalJob" for job in jobs.values()) else 60.0
    pending = dict(jobs)
    while pending:
        for name, job in list(pending.items()):
            if _job_ended(job, runs_dir / name):
                del pending[name]
        if pending:
            time.sleep(poll_s)


def _job_ended(job, run_dir: Path) -> bool:
    if job.__class__.__name__ == "LocalJob":
        # polls (and reaps) the controller this process started; its task may outlive it
        return job.done() and run_state(run_dir) != RunState.RUNNING
    state, _ = run_status(run_dir)
    return state not in (RunState.QUEUED, RunState.RUNNING)


# --- status --------------------------------------------------------------------------------------

def scheduler_state(record: dict, run_dir: Path) -> str | None:
    """The job's scheduler state (PENDING, RUNNING, FAILED, ... or ENDED), None when unknowable."""
    job_id = str(record.get("job_id", ""))
    if record.get("cluster") == "local":
        if record.get("host") != socket.gethostname() or not job_id.isdigit():
            return None
        return "RUNNING" if _pid_alive(int(job_id)) else "ENDED"
    if shutil.which("sacct"):
        try:
            import submitit
            state = submitit.SlurmJob(folder=run_dir / "slurm", job_id=job_id).state
        except Exception:  # noqa: BLE001 - sacct failing is "unknown", not an error of the study
            state = None
        if state and state.upper() != "UNKNOWN":
            return state.split()[0].upper()  # "CANCELLED by 123" -> CANCELLED
    if shutil.which("squeue"):
        import subprocess
        try:
            out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                                 timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
        return out.split()[0].upper() if out else "ENDED"  # squeue forgets ended jobs
    return None


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state != "Z" and b"submitit" in cmdline  # a zombie or a reused pid is not the job


def run_status(run_dir: Path) -> tuple[RunState, str]:
    """(state, detail) of a run trained by the Slurm executor, or by any executor.

    States: completed | diverged | failed | running | queued | interrupted | pending.
    """
    state = run_state(run_dir)
    record = read_job_record(run_dir)
    if record is None or state in FINISHED:
        return state, ""
    job = f"job {record.get('job_id')}"
    if state == RunState.RUNNING:
        return RunState.RUNNING, job
    sched = scheduler_state(record, run_dir)
    if sched is None:  # no sacct/squeue: what the files say; a fresh submission counts as queued
        if state == RunState.PENDING and not (run_dir / "summary.json").exists():
            return RunState.QUEUED, f"{job} (scheduler state unknown)"
        return state, f"{job} (scheduler state unknown)"
    if sched in QUEUED_STATES:
        return RunState.QUEUED, f"{job} {sched}"
    if sched in RUNNING_STATES:
        return RunState.RUNNING, job
    if state == RunState.FAILED:
        return RunState.FAILED, job
    # the job ended and the run is unfinished: killed, out of time, cancelled, node failure
    return RunState.FAILED, f"{job} {sched} before the run finished; `study run` again resumes it"


def run_study_slurm(plan: StudyPlan, study_dir: str | Path, settings: SlurmSettings, wait: bool = False,
                    quiet: bool = False) -> dict:
    """Submit, print job ids; with wait, block until every job ends. Returns {run name: job id}."""
    jobs = submit_study(plan, study_dir, settings, quiet=quiet)
    for name, job in jobs.items():
        print(f"{job.job_id}\t{name}")
    if wait and jobs:
        wait_for(jobs, study_dir)
    return {name: str(job.job_id) for name, job in jobs.items()}


__all__ = ["require_submitit", "plan_for_slurm", "TrainJob", "submit_study", "wait_for", "run_status", "run_study_slurm",
           "scheduler_state"]
