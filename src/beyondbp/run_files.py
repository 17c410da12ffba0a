"""A run directory's files: config.yaml, metrics.jsonl, summary.json, checkpoint.pt.

Writes are atomic (a temporary file renamed into place) so a kill never leaves half a file;
metrics.jsonl is append-only, and a line cut by a kill is ignored when read back.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from .config import ConfigError, RunConfig, to_dict

PF_DAY = 8.64e19  # FLOPs in one petaflop/s-day
# settings that may differ when a run is resumed: they change how it runs, not what it computes
EXECUTION_KEYS = ("progress", "threads", "checkpoint_every_s")


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out: cannot write to {out} ({exc.strerror or exc})") from None


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_torch_save(obj, path: Path) -> None:
    import torch  # here, not at the top: the report reads run files and needs no torch (2 s to import)

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            break
    return rows


def read_summary(out: Path) -> dict | None:
    try:
        return json.loads((out / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def check_same_config(out: Path, cfg: RunConfig) -> None:
    """A run directory belongs to one config: refuse to resume it with another."""
    old_path = out / "config.yaml"
    if not old_path.exists():
        return
    old, new = yaml.safe_load(old_path.read_text()), to_dict(cfg)
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
