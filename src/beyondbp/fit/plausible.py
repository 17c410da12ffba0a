"""What `beyondbp fit` accepts from a CSV: one column of each name, and numbers in a physically
plausible range, so that a row of 1e-300 or 1e200 is refused (one line naming file, row and
column) instead of dominating a fit in log space with a residual of 138.

The bounds are wide on purpose, far outside any training run there is:
  compute_pf_days  [1e-30, 1e15]  (1e-30 PF-days is about 1e-10 FLOPs; 1e15 is 8.6e34 FLOPs)
  loss             [1e-6, 100]     (nats per token or example; ln(50,257) = 10.8)
  n_params         [1, 1e15]       (non-embedding parameters)
  tokens           [1, 1e18]       (training tokens of one run)
Rows whose compute or loss is NaN, infinite or non-positive are the points file's own business
(skipped with one warning, as documented in `fit.points`); the runs file refuses them.
"""
from __future__ import annotations

from pathlib import Path

from ..config import ConfigError, Range

PLAUSIBLE = {
    "compute_pf_days": Range(1e-30, 1e15),
    "loss": Range(1e-6, 100.0),
    "n_params": Range(1.0, 1e15),
    "tokens": Range(1.0, 1e18),
}


def check_plausible(path: Path, line: int, column: str, value: float) -> float:
    """value, or one ConfigError `FILE:LINE: column 'C' must be ... (PLAUSIBLE), got V`."""
    bounds = PLAUSIBLE[column]
    if not bounds.holds(value):
        raise ConfigError(f"{path}:{line}: column {column!r} must be {bounds.describe(integer=False)} "
                          f"to be plausible, got {value:g}")
    return value


MAX_COLUMNS = 1_000  # a points or runs file has a handful


def check_width(path: Path, text: str) -> str:
    """text, refused in one line naming the file and line when a line holds more than MAX_COLUMNS
    fields (counted as commas, before the csv module reads it): a header of a million columns
    makes a dict of a million keys for every row, hundreds of MB from an 8 MB file."""
    start, line = 0, 1
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        if text.count(",", start, end) >= MAX_COLUMNS:
            raise ConfigError(f"{path}:{line}: more than {MAX_COLUMNS:,} columns; a points or runs file has a "
                              f"few (method, compute or size and tokens, loss)")
        start, line = end + 1, line + 1
    return text


def check_header(path: Path, header: list[str]) -> list[str]:
    """The header's column names, refused in one line when one is given twice (which of the two
    would count is a guess)."""
    seen = set()
    for name in header:
        if name.strip() in seen:
            raise ConfigError(f"{path}:1: column {name.strip()!r} is given twice in the header")
        seen.add(name.strip())
    return header
