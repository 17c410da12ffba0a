"""What a run folder's records may hold, checked as they are read: a received folder's
metrics.jsonl and summary.json are data that the report, `study status` and a resume compute with,
so a value of the wrong kind stops with one line naming the file, the line or key and the value,
instead of a TypeError deep in a fit. Torch-free."""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..reads import ConfigError, iter_lines, shown
from .states import RunState

# the columns of a metrics row that the report and the trainers compute with
ROW_NUMBERS = ("tokens", "val_loss", "train_loss", "lr", "elapsed_s", "compute_pf_days", "compute_flops",
               "compute_flops_optimistic", "compute_flops_exact", "residual_common")
ROW_MAPPINGS = ("alignment",)  # {block: number}
# rows kept in memory: 10x a Transformer run's most evaluations (train.n_evals <= 10,000); an MLP
# run logs one per epoch. With the file's size limit this bounds what a received file costs.
MAX_ROWS = 100_000
SUMMARY_STATES = (RunState.COMPLETED, RunState.DIVERGED, RunState.FAILED)
SUMMARY_NUMBERS = ("final_val_loss", "elapsed_s", "tokens", "steps", "n_params", "n_params_nonembedding",
                   "compute_pf_days", "compute_flops", "compute_flops_optimistic", "compute_flops_exact",
                   "tokens_per_s", "test_error", "seed", "returncode")
SUMMARY_TEXTS = ("status", "method", "error")


def _is_number(value) -> bool:
    return type(value) in (int, float)  # JSON gives exactly these; a bool is not a number here


def is_text(value, source: str) -> bool:
    """Whether every string in `value`, parsed from the JSON text `source`, is text: `\\ud800` alone
    (a lone surrogate) parses, but no file, page or terminal can take it. Only an escape makes
    one (the text was decoded), so `source` without one is not searched further."""
    if "\\ud" not in source and "\\uD" not in source:
        return True
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def record_problem(exc: BaseException) -> str:
    """What json.loads refused beyond syntax, in a few words."""
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0][:80]


def row_problem(row) -> str | None:
    """What keeps `row` from being a metrics row as beyondbp writes it (None: nothing)."""
    if type(row) is not dict:
        return f"a metrics row must be a JSON object, got {shown(row)}"
    step = row.get("step")
    if type(step) is not int or step < 0:
        return f"'step' must be a whole number >= 0, got {shown(step)}"
    for key in ROW_NUMBERS:
        value = row.get(key)
        if value is not None and type(value) not in (int, float):
            return f"{key!r} must be a number, got {shown(value)}"
    for key in ROW_MAPPINGS:
        value = row.get(key)
        if value is not None and not (type(value) is dict and all(v is None or _is_number(v) for v in value.values())):
            return f"{key!r} must map names to numbers, got {shown(value)}"
    return None


def read_metrics_rows(path: Path) -> list[dict]:
    """metrics.jsonl's rows (`reads.iter_lines`: a regular file, bounded in size and per line).
    A line that is not JSON ends the rows (a kill cut it); a JSON line that is not a row beyondbp
    writes is one ConfigError naming the file and line."""
    rows = []
    try:
        for number, line in iter_lines(path, "metrics file", "metrics"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                break
            except (ValueError, RecursionError) as exc:  # a 5,000-digit number; arrays nested 100,000 deep
                raise ConfigError(f"{path}:{number}: not a metrics row ({record_problem(exc)})") from None
            problem = row_problem(row) if number <= MAX_ROWS else f"more than {MAX_ROWS:,} rows; not read"
            if problem is None and not is_text(row, line):
                problem = "a lone surrogate (an escape such as \\ud800 alone) is not text"
            if problem:
                raise ConfigError(f"{path}:{number}: {problem}")
            rows.append(row)
    except FileNotFoundError:
        return []
    return rows


def check_summary(summary: dict, path: Path) -> dict:
    """A summary.json as beyondbp writes it: known status, numbers where numbers go, and a final
    loss that is a finite number > 0 (or null); anything else is one line naming file and key."""
    def bad(key: str, must: str) -> ConfigError:
        return ConfigError(f"{path}: {key!r} must be {must}, got {shown(summary[key])}; "
                           f"move it aside to resume the run from its checkpoint")

    for key in SUMMARY_TEXTS:
        if summary.get(key) is not None and not isinstance(summary[key], str):
            raise bad(key, "a string")
    if summary.get("status") is not None and summary["status"] not in SUMMARY_STATES:
        raise bad("status", f"one of {', '.join(SUMMARY_STATES)}")
    for key in SUMMARY_NUMBERS:
        if summary.get(key) is not None and not _is_number(summary[key]):
            raise bad(key, "a number")
    loss = summary.get("final_val_loss")
    if loss is not None and not (math.isfinite(loss) and loss > 0):
        raise bad("final_val_loss", "a finite number > 0 (or null)")
    return summary
