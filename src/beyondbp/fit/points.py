"""Anyone's points -> frontiers, quality checks and verdicts as JSON (what `beyondbp fit` prints).

`read_points_csv` reads a CSV of (method, compute, loss[, run][, size]) rows; `fit_points_table`
fits every method's frontier and judges each against the reference; `fit_json` renders a fit
for JSON (`strict_json.dumps` writes it, also the study report's results.json).
"""
from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path

import numpy as np

from .defaults import DEFAULT_BOOTSTRAP, HORIZON_FACTOR, RUN_FRACTION
from ..config import ConfigError, TooFewPoints, read_text_file
from .plausible import check_header, check_plausible, check_width
from .frontier import fit_frontier, late_points
from .multiplier import withhold_for_tuning
from .verdict import judge_all

CSV_COLUMNS = ("method", "compute_pf_days", "loss")
LABEL_COLUMNS = ("run", "size")  # optional: which run a point comes from, which model size


def _group_by_method(rows: list[dict]) -> dict[str, dict[str, np.ndarray | None]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(str(row["method"]), []).append(row)
    out = {}
    for method, items in grouped.items():
        group = {"compute": np.array([float(r["compute_pf_days"]) for r in items]),
                 "loss": np.array([float(r["loss"]) for r in items])}
        for column in LABEL_COLUMNS:
            values = [r.get(column) for r in items]
            group[column] = None if any(v in (None, "") for v in values) else np.array([str(v) for v in values])
        out[method] = group
    return out


def fit_json(fit, reference_compute: float | None = None) -> dict:
    """A fit as JSON: the law, its intervals, the loss at a reference compute (default: the
    geometric middle of its frontier) and its quality (`PowerLawFit.quality`)."""
    if reference_compute is None:
        reference_compute = float(np.sqrt(np.prod(fit.fit_range)))
    out = {"alpha_C": fit.alpha_C, "alpha_C_ci": list(fit.alpha_C_ci) if fit.alpha_C_ci else None,
           "C_c": fit.C_c, "loss_at_reference": fit.loss_at(reference_compute),
           "n_points": fit.n_points, **fit.quality(), "backtest": fit.backtest,
           "seed_noise": None if fit.seed_noise is None else {"sd": fit.seed_noise[0], "dof": fit.seed_noise[1]}}
    if fit.E is not None:
        out["E"] = fit.E
    return out


def fit_points_table(rows: list[dict], reference: str = "bp", bootstrap: int = DEFAULT_BOOTSTRAP,
                     seed: int = 0, irreducible: bool = False, run_fraction: float = RUN_FRACTION,
                     horizon_factor: float = HORIZON_FACTOR, lr_edges: list[dict] | None = None) -> dict:
    """Fit every method's frontier and judge each non-reference method against `reference`.

    rows: dicts with method, compute_pf_days, loss and optionally run and size (as from
    read_points_csv). Sizes are counted from `size`, else from `run`. A run with several points
    is a learning curve: only its points at or past `run_fraction` of its largest compute count
    (`frontier.late_points`). Returns {"fits": {method: {...}}, "verdicts": {method: {...}},
    "unfitted": {method: why}}: a method with too few frontier points is skipped with its reason
    while the others are fitted; fits gain "E" only when irreducible=True. lr_edges: the study's
    `fit.tuning.lr_edges`, where known (`multiplier.withhold_for_tuning`).
    """
    groups = _group_by_method(rows)
    if reference not in groups:
        raise ConfigError(f"--reference: method {reference!r} has no points "
                          f"(methods present: {', '.join(sorted(groups)) or 'none'})")
    fits, spans, unfitted = {}, {}, {}
    for m, g in groups.items():
        keep = late_points(g["compute"], g["run"], run_fraction)
        labels = {k: None if g[k] is None else g[k][keep] for k in LABEL_COLUMNS}
        spans[m] = (float(g["compute"][keep].min()), float(g["compute"][keep].max()))
        try:
            fits[m] = fit_frontier(g["compute"][keep], g["loss"][keep], labels["run"],
                                   labels["size"] if labels["size"] is not None else labels["run"],
                                   bootstrap=bootstrap, seed=seed, irreducible=irreducible, name=m)
        except TooFewPoints as exc:
            unfitted[m] = str(exc)
    if reference in unfitted:
        raise ConfigError(f"reference {unfitted[reference]}")
    reference_compute = float(np.sqrt(min(lo for lo, _ in spans.values()) * max(hi for _, hi in spans.values())))
    with np.errstate(all="ignore"):
        verdicts = withhold_for_tuning(judge_all(fits, reference, spans, bootstrap, seed, horizon_factor),
                                       lr_edges or [], reference)
    return {"fits": {m: fit_json(f, reference_compute) for m, f in fits.items()},
            "verdicts": {m: v.to_dict() for m, v in verdicts.items()}, "unfitted": unfitted}


def _parse_float(text: str, path, line: int, column: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}:{line}: column {column!r} is not a number: {text!r}") from None


def read_points_csv(path) -> list[dict]:
    """Rows of a points CSV (columns method, compute_pf_days, loss[, run][, size]); rows whose
    compute or loss is NaN, infinite or non-positive are skipped with one warning."""
    path = Path(path)
    text = read_text_file(path, "points file", "csv")  # missing, binary, special, too large: one line naming it
    try:
        return _points_rows(path, text)
    except csv.Error as exc:
        raise ConfigError(f"points file {path} is not a CSV file ({exc})") from None


def _points_rows(path: Path, text: str) -> list[dict]:
    if "\0" in text:
        raise ConfigError(f"points file {path} is not a CSV file (it holds NUL bytes)")
    with io.StringIO(check_width(path, text), newline="") as handle:
        reader = csv.DictReader(handle)
        header = check_header(path, reader.fieldnames or [])
        for column in CSV_COLUMNS:
            if column not in header:
                raise ConfigError(f"{path}: missing column {column!r} (have: {', '.join(header)})")
        rows, skipped = [], 0
        for line, raw in enumerate(reader, start=2):
            compute = _parse_float(raw["compute_pf_days"], path, line, "compute_pf_days")
            loss = _parse_float(raw["loss"], path, line, "loss")
            if not (math.isfinite(compute) and math.isfinite(loss) and compute > 0 and loss > 0):
                skipped += 1
                continue
            check_plausible(path, line, "compute_pf_days", compute)
            check_plausible(path, line, "loss", loss)
            row = {"method": raw["method"], "compute_pf_days": compute, "loss": loss}
            row.update({c: raw[c] for c in LABEL_COLUMNS if c in header})
            rows.append(row)
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} rows with NaN, infinite or non-positive "
                      "compute/loss", stacklevel=3)
    return rows
