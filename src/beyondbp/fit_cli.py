"""`beyondbp fit POINTS.csv`: frontiers, quality checks and verdicts for anyone's results."""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np

from .config import BOOTSTRAP, RANGES, ConfigError, check_number, read_text_file
from .frontier import fit_frontier
from .verdict import judge

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


def fit_json(fit) -> dict:
    """A fit as JSON: the law, its intervals and its quality (`PowerLawFit.quality`)."""
    out = {"alpha_C": fit.alpha_C, "C_c": fit.C_c,
           "alpha_C_ci": list(fit.alpha_C_ci) if fit.alpha_C_ci else None,
           "C_c_ci": list(fit.C_c_ci) if fit.C_c_ci else None,
           "n_points": fit.n_points, **fit.quality()}
    if fit.E is not None:
        out["E"] = fit.E
    return out


def fit_points_table(rows: list[dict], reference: str = "bp", bootstrap: int = 200,
                     seed: int = 0, irreducible: bool = False) -> dict:
    """Fit every method's frontier and judge each non-reference method against `reference`.

    rows: dicts with method, compute_pf_days, loss and optionally run and size (as from
    read_points_csv). Sizes are counted from `size`, else from `run`. Returns
    {"fits": {method: {...}}, "verdicts": {method: {...}}}; fits gain "E" only when
    irreducible=True.
    """
    groups = _group_by_method(rows)
    if reference not in groups:
        raise ConfigError(f"reference method {reference!r} has no points "
                          f"(methods present: {', '.join(sorted(groups)) or 'none'})")
    fits = {m: fit_frontier(g["compute"], g["loss"], g["run"], g["size"] if g["size"] is not None else g["run"],
                            bootstrap=bootstrap, seed=seed, irreducible=irreducible, name=m)
            for m, g in groups.items()}
    verdicts = {}
    for method in groups:
        if method == reference:
            continue
        c_min = float(min(groups[method]["compute"].min(), groups[reference]["compute"].min()))
        verdicts[method] = judge(fits[method], fits[reference], c_min, method, reference)
    return {"fits": {m: fit_json(f) for m, f in fits.items()}, "verdicts": verdicts}


def _parse_float(text: str, path, line: int, column: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}:{line}: column {column!r} is not a number: {text!r}") from None


def read_points_csv(path) -> list[dict]:
    """Rows of a points CSV (columns method, compute_pf_days, loss[, run][, size]); rows whose
    compute or loss is NaN, infinite or non-positive are skipped with one warning."""
    path = Path(path)
    text = read_text_file(path, "points file")  # missing, unreadable or binary: one line naming it
    try:
        return _points_rows(path, text)
    except csv.Error as exc:
        raise ConfigError(f"points file {path} is not a CSV file ({exc})") from None


def _points_rows(path: Path, text: str) -> list[dict]:
    if "\0" in text:
        raise ConfigError(f"points file {path} is not a CSV file (it holds NUL bytes)")
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
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
            row = {"method": raw["method"], "compute_pf_days": compute, "loss": loss}
            row.update({c: raw[c] for c in LABEL_COLUMNS if c in header})
            rows.append(row)
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} rows with NaN, infinite or non-positive "
                      "compute/loss", stacklevel=3)
    return rows


def fit_cli(argv) -> int:
    """`beyondbp fit POINTS.csv [--reference bp] [--bootstrap N] [--seed S] [--irreducible]`."""
    parser = argparse.ArgumentParser(prog="beyondbp fit",
                                     description="Fit compute-efficient frontiers and verdicts.")
    parser.add_argument("points", help="CSV with columns method,compute_pf_days,loss[,run][,size]")
    parser.add_argument("--reference", default="bp", help="method to compare against")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--irreducible", action="store_true", help="fit L = E + (C/C_c)^alpha")
    args = parser.parse_args(argv)
    try:
        check_number("--bootstrap", args.bootstrap, BOOTSTRAP, integer=True)
        check_number("--seed", args.seed, RANGES["seed"], integer=True)
        table = fit_points_table(read_points_csv(args.points), reference=args.reference,
                                 bootstrap=args.bootstrap, seed=args.seed,
                                 irreducible=args.irreducible)
    except ConfigError as err:
        print(f"beyondbp fit: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(table, indent=2))
    return 0
