"""The `slurm:` section of a study spec and the command-line flags on top of it.

Kept apart from `beyondbp.study.slurm` (submission, jobs, status) so that a spec can be validated
without importing the executor, and the executor can import the spec without a cycle.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..config import CHOICES, ConfigError, check_choice, coerce

SLURM_KEYS = ("cluster", "partition", "account", "gpus_per_run", "nodes", "cpus_per_task", "mem_gb",
              "timeout_min", "setup", "extra", "prepare_data")
CLUSTERS = CHOICES["slurm.cluster"][0]


@dataclass(frozen=True)
class SlurmSettings:
    """What the Slurm executor submits with: the spec's `slurm:` section (`normalise_slurm`) with
    the command-line flags on top (`resolve_settings`). Attribute names are the section's keys."""
    cluster: str = "slurm"  # slurm: the Slurm scheduler; local: submitit's local cluster (one machine)
    partition: str | None = None
    account: str | None = None
    gpus_per_run: int = 1
    nodes: int = 1
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int = 24 * 60
    setup: list[str] = field(default_factory=list)  # shell lines run before each job
    extra: dict = field(default_factory=dict)  # further sbatch options
    prepare_data: bool = True
    cpu_only: bool = False  # the study trains on CPUs: its jobs ask for no GPU (set by `submit_study`)


def normalise_slurm(raw) -> dict:
    """The spec's `slurm:` section in canonical form; raises ConfigError naming the bad key."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"slurm: expected a mapping of {', '.join(SLURM_KEYS)}, got {raw!r}")
    unknown = [k for k in raw if k not in SLURM_KEYS]
    if unknown:
        raise ConfigError(f"slurm.{unknown[0]}: unknown key (valid: {', '.join(SLURM_KEYS)})")
    cluster = str(raw.get("cluster") or "slurm")
    check_choice("slurm.cluster", cluster, CLUSTERS, "cluster")
    out = {"cluster": cluster,
           "partition": None if raw.get("partition") is None else str(raw["partition"]),
           "account": None if raw.get("account") is None else str(raw["account"])}
    for key, typ, default in (("gpus_per_run", int, 1), ("nodes", int, 1), ("cpus_per_task", int, None),
                              ("mem_gb", float, None), ("timeout_min", int, 24 * 60)):
        value = raw.get(key, default)
        if key == "timeout_min" and isinstance(value, str):
            value = parse_time_minutes(value, "slurm.timeout_min")
        value = None if value is None else coerce(value, typ, f"slurm.{key}")
        if value is not None and value <= 0:
            raise ConfigError(f"slurm.{key}: must be positive, got {value}")
        out[key] = value
    if out["gpus_per_run"] % out["nodes"]:
        raise ConfigError(f"slurm.gpus_per_run: {out['gpus_per_run']} GPUs do not split over "
                          f"slurm.nodes={out['nodes']} nodes; make gpus_per_run a multiple of nodes")
    setup = raw.get("setup") or []
    setup = [setup] if isinstance(setup, str) else setup
    if not isinstance(setup, list) or not all(isinstance(s, str) for s in setup):
        raise ConfigError(f"slurm.setup: expected shell lines run before each job, got {setup!r}")
    extra = raw.get("extra") or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"slurm.extra: expected a mapping of sbatch options (e.g. {{qos: high}}), got {extra!r}")
    out["setup"], out["extra"] = list(setup), dict(extra)
    out["prepare_data"] = bool(coerce(raw.get("prepare_data", True), bool, "slurm.prepare_data"))
    return out


def parse_time_minutes(text: str, key: str = "--time") -> int:
    """Slurm time formats -> whole minutes: MM, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    text = str(text).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise ConfigError(f"{key}: {text!r} is not a Slurm time (MM, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = (int(g) if g else None for g in match.groups())
    if days is None and b is None:  # MM
        minutes = a
    elif days is None and c is None:  # MM:SS
        minutes = a + (b > 0)
    elif days is None:  # HH:MM:SS
        minutes = a * 60 + b + (c > 0)
    else:  # D-HH[:MM[:SS]]
        minutes = days * 1440 + a * 60 + (b or 0) + ((c or 0) > 0)
    if minutes <= 0:
        raise ConfigError(f"{key}: {text!r} must be positive")
    return minutes


def resolve_settings(section: dict | None, cli: dict) -> SlurmSettings:
    """The spec's slurm section (`Spec.slurm`) with command-line values on top; checks what Slurm needs."""
    merged = dict(section or {})
    merged.update({k: v for k, v in cli.items() if v is not None})
    settings = SlurmSettings(**normalise_slurm(merged))
    if settings.cluster == "slurm" and not settings.partition:
        raise ConfigError("--partition: the Slurm executor needs a partition; pass --partition NAME "
                          "or set slurm.partition in the spec")
    return settings


