"""The run folder's contract: its files, the states they spell, and the one way to read and write each.

Every trainer (the Transformer loop, the MLP loop), every executor (local, Slurm), the report
and the CLI read a run folder through this module:

  config.yaml      the resolved RunConfig (`check_same_config`; EXECUTION_KEYS may change)
  run.yaml         the config an executor hands to the worker it starts
  data.json        the tokens it trains on: cache entry and fingerprint (`data_change`)
  metrics.jsonl    one JSON object per evaluation, append-only (`read_metrics`; compute columns
                   from `compute_columns`)
  summary.json     the outcome, with `status` (`read_summary`; `record_failure`)
  checkpoint.pt    and checkpoint.prev.pt (`checkpoint`; `checkpoint_files` here)
  branch-STEP.pt   a trunk's state at a branch point (`snapshot_path`; `branches`, `chain`)
  worker.lock      flock-ed by the process training the run (`lock_run`, `is_locked`; a standalone
                   `train` too, `hold_run_lock`)

A run's state (`run_state`): completed | diverged (FINISHED: never trained again) | failed |
running | interrupted | pending. Whole files are replaced atomically (`atomic_write`) so a kill
never leaves half a file; a metrics line cut by a kill is ignored when read back (a resumed run
restores its rows from the checkpoint). A summary.json or data.json that is not what beyondbp
writes stops with one line naming it. Torch-free: the report and `study status` read folders.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from pathlib import Path

from ..atomic_write import atomic_write, link_refused, write_error
from ..config_mlp import NOT_COMPARED, record_names
from ..config import OLD_KEYS, PF_DAY, ConfigError, LockHeld, MethodConfig, RunConfig, load_yaml, to_dict
from ..reads import is_regular_file, read_text, shown
from .dist_env import ranks
from .states import RunState
from .records import check_summary, is_text, read_metrics_rows, record_problem


class Interrupted(Exception):
    """Raised after a checkpoint was written because the process got SIGTERM/SIGINT: the run
    folder then holds an interrupted run that the same command resumes."""


FINISHED = (RunState.COMPLETED, RunState.DIVERGED)  # a run with this summary status is never trained again
# settings that may differ when a run is resumed: they change how it runs, not what it computes
# (the tracker is a view of metrics.jsonl)
EXECUTION_KEYS = ("progress", "threads", "checkpoint_every_s", "memory_check", "on_data_change", "tracker",
                  "tracker_group")
DATA_RECORD = "data.json"
CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"  # the checkpoint kept back when a new one is written
LOCK = "worker.lock"


def check_out_path(out) -> Path:
    """--out as a Path; an empty value would train into the current folder."""
    if out is None or not str(out).strip():
        raise ConfigError(f"--out: must name a folder, got {str(out)!r}")
    return Path(out)


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write_probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"--out: cannot write to {out} ({exc.strerror or exc})") from None


def read_metrics(path: Path) -> list[dict]:
    return read_metrics_rows(path)  # bounded and checked row by row (`records`)


def _read_json_object(path: Path, what: str) -> dict | None:
    """A JSON object beyondbp wrote, None when absent; anything else is one line naming the file."""
    try:
        text = read_text(path, what, "json")  # a regular file, not a link, at most a few MiB
    except FileNotFoundError:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: {what} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                          f"move it aside to resume the run from its checkpoint") from None
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number; arrays nested 100,000 deep
        raise ConfigError(f"{path}: {what} is not JSON beyondbp writes ({record_problem(exc)}); "
                          f"move it aside to resume the run from its checkpoint") from None
    if not is_text(value, text):
        raise ConfigError(f"{path}: {what} holds a lone surrogate (an escape such as \\ud800 alone), which "
                          f"is not text; move it aside to resume the run from its checkpoint")
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {what} holds a {type(value).__name__}, not the object beyondbp writes; "
                          f"move it aside to resume the run from its checkpoint")
    return value


def read_summary(out: Path) -> dict | None:
    summary = _read_json_object(Path(out) / "summary.json", "the run's summary")
    return summary if summary is None else check_summary(summary, Path(out) / "summary.json")


def read_data_record(out: Path) -> dict | None:
    record = _read_json_object(Path(out) / DATA_RECORD, "the record of the run's tokens")
    if record is not None and not all(isinstance(record.get(k), str) for k in ("entry", "fingerprint")):
        raise ConfigError(f"{Path(out) / DATA_RECORD}: no entry or fingerprint; move it aside to resume the run")
    return record


def checkpoint_files(out: Path) -> list[Path]:
    """The run's checkpoints on disk, newest first."""
    return [p for p in (Path(out) / CHECKPOINT, Path(out) / PREVIOUS) if is_regular_file(p, "checkpoint")]


def snapshot_path(out: Path, step: int) -> Path:
    """Where a run keeps its state at `step` (a trunk's branch point, `branches`), beside its checkpoint."""
    return Path(out) / f"branch-{step}.pt"


def has_progress(out: Path) -> bool:
    """Whether a run folder holds training that a resume would continue (or a finished run)."""
    summary = read_summary(out)
    return bool(checkpoint_files(out)) or bool(summary and summary.get("status") in FINISHED)


def data_change(out: Path, corpus: str, entry: str, fingerprint: str | None = None) -> str | None:
    """Why `out`'s recorded tokens differ from the cache entry (and fingerprint) the corpus gives
    now, or None when they agree, nothing was recorded, or nothing was trained yet (a run stopped
    before its first checkpoint starts over anyway)."""
    record = read_data_record(out)
    if record is None or not has_progress(out):
        return None
    if record["entry"] != entry:
        return (f"{corpus} gives other tokens than the ones {out} was trained on (cache entry {record['entry']} "
                f"then, {entry} now: the corpus or its files changed)")
    if fingerprint is not None and record["fingerprint"] != fingerprint:
        return (f"the prepared tokens of {corpus} are not the ones {out} was trained on (fingerprint "
                f"{record['fingerprint'][:12]} then, {fingerprint[:12]} now: the cache entry was prepared again)")
    return None


def refuse_data_change(reason: str) -> ConfigError:
    return ConfigError(f"data.corpus: {reason}; resuming would mix corpora. Restore the corpus, use another --out, "
                       f"or set train.on_data_change=restart to train the run again from the start")


def set_aside(out: Path, files=(CHECKPOINT, PREVIOUS, "metrics.jsonl", "summary.json", DATA_RECORD)) -> Path:
    """Move a run's results into out/replaced-N/ (N = 1, 2, ...) before it is trained again."""
    n = 1
    while os.path.lexists(out / f"replaced-{n}"):
        n += 1
    folder = out / f"replaced-{n}"
    folder.mkdir()
    for name in files:
        if (out / name).exists():
            os.replace(out / name, folder / name)
    return folder


def check_same_config(out: Path, cfg: RunConfig) -> None:
    """A run directory belongs to one config: refuse to resume it with another."""
    old_path = out / "config.yaml"
    if not old_path.exists():
        return
    old, new = record_names(load_yaml(old_path, "the run's config")), to_dict(cfg)  # old names: config_mlp
    if isinstance(old.get("train"), dict):  # a key's old name (config.OLD_KEYS) reads as its name now
        old["train"] = {OLD_KEYS.get(k, k): v for k, v in old["train"].items()}
    for section, values in new.items():
        if isinstance(values, dict) and not isinstance(old.get(section, {}), dict):
            raise ConfigError(f"{old_path}: {section!r} must be a mapping, got {shown(old[section])}")
        if isinstance(values, dict):
            for key, value in values.items():
                if key in EXECUTION_KEYS or (section == "method" and key not in old.get(section, {})
                                             and key in MethodConfig.FIELDS):
                    continue  # a run written before methods recorded their origin and version
                if cfg.model.kind == "mlp" and (section, key) in NOT_COMPARED:
                    continue  # not the MLP track's length (train.tokens), or derived from mlp.epochs (examples)
                if old.get(section, {}).get(key) != value:
                    raise ConfigError(f"{section}.{key}: {out} holds a run with {section}.{key}="
                                      f"{old.get(section, {}).get(key)!r}, not {value!r}; use another --out")
        elif old.get(section) != values:
            raise ConfigError(f"{section}: {out} holds a run with {section}={old.get(section)!r}, "
                              f"not {values!r}; use another --out")


def compute_columns(tokens: int, per_token: dict[str, float]) -> dict[str, float]:
    """The compute of `tokens` training tokens under each accounting (metrics and summary columns)."""
    return {"compute_flops": tokens * per_token["paper"],
            "compute_pf_days": tokens * per_token["paper"] / PF_DAY,
            "compute_flops_optimistic": tokens * per_token["optimistic"],
            "compute_flops_exact": tokens * per_token["exact"]}


# --- states, locks and failures ---------------------------------------------------------------

def lock_run(run_dir: Path, wait: bool = True) -> int | None:
    """flock the run's worker.lock and return its descriptor: the run counts as running while it
    (or a child that inherits it) stays open. wait=False refuses, in one line, a run another
    process trains; None where the filesystem has no locks (the caller then trusts its own
    bookkeeping not to start a run twice)."""
    return lock_file(Path(run_dir) / LOCK, wait,
                     f"{run_dir}: this run is being trained by another process or job; not starting a second")


def lock_file(path: Path, wait: bool, busy: str) -> int | None:
    """The one flock of this package: an exclusive lock on `path` (`open_lock_file`), its descriptor
    held by the caller. wait=False raises ConfigError(busy) while another process holds it; None
    where the filesystem has no locks."""
    fd = open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockHeld(busy) from None
    except OSError:
        os.close(fd)
        return None
    return fd


def hold_run_lock(run_dir: Path) -> int | None:
    """What `beyondbp train` holds while it trains: the run's lock (an executor's worker locks the
    folders of its job itself, `beyondbp.train.worker`). A run another process trains is refused at
    once, in one line. Under torchrun only rank 0 locks."""
    if ranks()[0] != 0:
        return None
    return lock_run(run_dir, wait=False)


def open_lock_file(path: Path) -> int:
    """A descriptor of a lock file (worker.lock, submit.lock), created if missing; a link is refused."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_refused(path) from None
        raise write_error(path, exc, "nothing was started") from None


def is_locked(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock (a dead or zombie one has released it)."""
    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's own lock
    return False


def run_state(run_dir: Path) -> RunState:
    """completed | diverged | failed | running | interrupted | pending."""
    run_dir = Path(run_dir)
    if is_locked(run_dir):  # before the summary: a failed run may be retried
        return RunState.RUNNING
    summary = read_summary(run_dir)
    if summary and summary.get("status") in (*FINISHED, RunState.FAILED):
        return RunState(summary["status"])
    if (run_dir / CHECKPOINT).exists() or (run_dir / "metrics.jsonl").exists():
        return RunState.INTERRUPTED
    return RunState.PENDING


def record_failure(run_dir: Path, method: str, seed: int, error: str, returncode: int | None = None,
                   status: str = RunState.FAILED) -> None:
    """Write the summary.json of a run that did not complete (status `failed`, or `diverged` for a
    branch whose trunk diverged before it; its error; the worker's exit status when an executor saw
    one), so that `study status` and the report tell why."""
    failed = {"method": method, "seed": seed, "status": status, "error": error}
    if returncode is not None:
        failed["returncode"] = returncode
    atomic_write(Path(run_dir) / "summary.json", json.dumps(failed, indent=2) + "\n")
