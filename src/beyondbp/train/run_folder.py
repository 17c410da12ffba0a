"""A run directory's files: config.yaml, data.json, metrics.jsonl, summary.json, checkpoint.pt.

Whole files are replaced atomically (`atomic_write`) so a kill never leaves half a file;
metrics.jsonl is append-only, and a line cut by a kill is ignored when read back (a resumed
run restores its rows from the checkpoint). `data.json` records the tokens a run trains on
(cache entry and fingerprint) so that a resume on other tokens is refused. A summary.json or
data.json that is not what beyondbp writes stops with one line naming it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..config import ConfigError, RunConfig, load_yaml, to_dict

PF_DAY = 8.64e19  # FLOPs in one petaflop/s-day
# settings that may differ when a run is resumed: they change how it runs, not what it computes
EXECUTION_KEYS = ("progress", "threads", "checkpoint_every_s", "memory_check", "on_data_change")
DATA_RECORD = "data.json"


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
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            break
        if not isinstance(row, dict) or "step" not in row:
            break
        rows.append(row)
    return rows


def _read_json_object(path: Path, what: str) -> dict | None:
    """A JSON object beyondbp wrote, None when absent; anything else is one line naming the file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what} ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: {what} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                          f"move it aside to resume the run from its checkpoint") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {what} holds a {type(value).__name__}, not the object beyondbp writes; "
                          f"move it aside to resume the run from its checkpoint")
    return value


def read_summary(out: Path) -> dict | None:
    return _read_json_object(Path(out) / "summary.json", "the run's summary")


def read_data_record(out: Path) -> dict | None:
    record = _read_json_object(Path(out) / DATA_RECORD, "the record of the run's tokens")
    if record is not None and not all(isinstance(record.get(k), str) for k in ("entry", "fingerprint")):
        raise ConfigError(f"{Path(out) / DATA_RECORD}: no entry or fingerprint; move it aside to resume the run")
    return record


def has_progress(out: Path) -> bool:
    """Whether a run folder holds training that a resume would continue (or a finished run)."""
    from .checkpoint import checkpoint_files
    summary = read_summary(out)
    return bool(checkpoint_files(out)) or bool(summary and summary.get("status") in ("completed", "diverged"))


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


def set_aside(out: Path, files=("checkpoint.pt", "checkpoint.prev.pt", "metrics.jsonl", "summary.json",
                                DATA_RECORD)) -> Path:
    """Move a run's results into out/replaced-N/ (N = 1, 2, ...) before it is trained again."""
    n = 1
    while (out / f"replaced-{n}").exists():
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
    old, new = load_yaml(old_path, "the run's config"), to_dict(cfg)
    for section, values in new.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if key in EXECUTION_KEYS:
                    continue
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
