"""Compute-efficient frontiers, power-law fits, bootstrap intervals and verdicts.

For one training method, every evaluation point of every run is a pair (compute C in
PF-days, loss L). The *frontier* is the lower envelope of loss against compute: sorted by
compute, the points where the running minimum of the loss strictly decreases. A power law

    L(C) = (C / C_c) ** alpha_C            (alpha_C < 0, C and C_c in PF-days)

is fitted to the frontier in log space, log L = alpha_C * (log C - log C_c), with a Huber
loss (robust to the odd noisy envelope point) from several starting points, keeping the
best. With ``irreducible=True`` the form is L(C) = E + (C / C_c) ** alpha_C.

Form note: the paper prints L(C) = (C_c C) ** alpha_C with C_c in PF-days^-1, but its
Table 1 values (BP alpha=-0.071, C_c=3.8e3; DFA -0.040, 5.1e10; shallow -0.019, 6.2e32)
only give sensible losses (BP ~2.1, DFA ~2.9, shallow ~4.4 at 0.12 PF-days) in Kaplan's
form L = (C / C_c) ** alpha_C with C_c in PF-days. We fit and report in Kaplan's form;
``PAPER_TABLE1`` holds the paper's numbers read that way.

Uncertainty comes from a bootstrap over *runs* (a run's points are correlated, so runs
are the independent units): resample runs with replacement, rebuild the envelope, refit,
and take 95% percentile intervals. Without run ids, points are resampled instead.

Verdict of an alternative method against the reference (BP), paper section 2:
A alternative always better; B better at scale only (worse at the smallest compute
studied, better as C -> infinity); C better at small compute only; D BP always better.
Two pure power laws are lines in log-log space, so they cross at most once; the letter is
the sign of the gap at the smallest compute studied and as C -> infinity, and the
crossover compute C* is reported for B and C. Confidence is the share of paired bootstrap
samples (sample i of one method with sample i of the other) that give the same letter.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import brentq, least_squares

from .config import ConfigError

PAPER_TABLE1 = {"bp": (-0.071, 3.8e3), "dfa_block": (-0.040, 5.1e10), "shallow": (-0.019, 6.2e32)}
MIN_FRONTIER_POINTS = 3
HUBER_SCALE = 1e-3  # in log-loss units: residuals above ~0.1% count linearly, not squared
CSV_COLUMNS = ("method", "compute_pf_days", "loss")


@dataclass
class PowerLawFit:
    """L(C) = [E +] (C / C_c) ** alpha_C, fitted on `envelope` (k x 2: compute, loss)."""
    alpha_C: float
    C_c: float
    E: float | None
    alpha_C_ci: tuple[float, float] | None
    C_c_ci: tuple[float, float] | None
    n_points: int
    envelope: np.ndarray
    samples: np.ndarray | None  # bootstrap rows (alpha_C, log10 C_c[, E])

    def predict(self, compute) -> np.ndarray:
        return _predict(self.params(), np.asarray(compute, dtype=float))

    def params(self) -> tuple[float, float, float]:
        """(alpha_C, ln C_c, E) with E = 0 for the pure power law."""
        return self.alpha_C, math.log(self.C_c), self.E or 0.0


def _predict(params, compute: np.ndarray) -> np.ndarray:
    alpha, log_cc, e = params
    return e + np.exp(alpha * (np.log(compute) - log_cc))


# ----------------------------------------------------------------------------- envelope

def envelope(compute, loss) -> tuple[np.ndarray, np.ndarray]:
    """Points where the running minimum of loss (ordered by compute) strictly decreases."""
    compute, loss = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    order = np.lexsort((loss, compute))  # by compute, ties by loss
    c, l = compute[order], loss[order]
    prior_min = np.concatenate(([np.inf], np.minimum.accumulate(l)[:-1]))
    keep = l < prior_min
    return c[keep], l[keep]


# ----------------------------------------------------------------------------- fitting

def _fit_pure(x: np.ndarray, y: np.ndarray, n_starts: int) -> tuple[float, float]:
    """Huber fit of y = alpha * x + b (x, y: centred log compute, log loss)."""
    slope, intercept = np.polyfit(x, y, 1) if len(x) > 1 else (0.0, float(y[0]))
    starts = [(slope, intercept)]
    for alpha in np.linspace(-0.3, 0.0, max(n_starts - 1, 0)):
        starts.append((alpha, float(np.median(y - alpha * x))))
    best = None
    for start in starts:
        res = least_squares(lambda p: p[0] * x + p[1] - y, start, loss="huber", f_scale=HUBER_SCALE)
        if best is None or res.cost < best.cost:
            best = res
    return float(best.x[0]), float(best.x[1])


def _fit_irreducible(x: np.ndarray, y: np.ndarray, n_starts: int) -> tuple[float, float, float]:
    """Huber fit of y = log(E + exp(alpha * x + b)); returns (alpha, b, E)."""
    e_max = float(np.exp(y.min())) * (1 - 1e-6)

    def residual(p):
        return np.log(p[2] + np.exp(p[0] * x + p[1])) - y

    best = None
    for frac in np.linspace(0.0, 0.95, max(n_starts, 1)):
        e0 = frac * e_max
        alpha0, b0 = np.polyfit(x, np.log(np.exp(y) - e0), 1)
        start = (min(alpha0, -1e-4), b0, e0)
        res = least_squares(residual, start, loss="huber", f_scale=HUBER_SCALE,
                            bounds=([-5.0, -np.inf, 0.0], [0.0, np.inf, e_max]))
        if best is None or res.cost < best.cost:
            best = res
    return float(best.x[0]), float(best.x[1]), float(best.x[2])


def fit_power_law(compute, loss, irreducible: bool = False,
                  n_starts: int = 8) -> tuple[float, float, float | None]:
    """Fit L = [E +] (C / C_c) ** alpha to the given points; returns (alpha, C_c, E or None)."""
    log_c = np.log(np.asarray(compute, dtype=float))
    y = np.log(np.asarray(loss, dtype=float))
    centre = float(log_c.mean())
    x = log_c - centre  # centring keeps slope and intercept uncorrelated
    if irreducible:
        alpha, b, e = _fit_irreducible(x, y, n_starts)
    else:
        (alpha, b), e = _fit_pure(x, y, n_starts), None
    # y = alpha * (log C - centre) + b = alpha * (log C - log C_c)
    log_cc = centre - b / alpha if alpha != 0 else math.inf
    return alpha, _safe_exp(log_cc), e


def _safe_exp(v: float) -> float:
    return math.exp(v) if v < 709 else math.inf


def fit_frontier(compute, loss, runs=None, bootstrap: int = 200, seed: int = 0,
                 irreducible: bool = False, name: str = "points") -> PowerLawFit:
    """Envelope + power-law fit + bootstrap for one method.

    compute, loss: 1-D arrays of every evaluation point (PF-days, loss); runs: optional
    array of run ids, one per point (bootstrap resamples runs; without them, points).
    `name` only labels error messages. bootstrap=0 gives no intervals and no samples.
    """
    compute, loss = np.asarray(compute, dtype=float), np.asarray(loss, dtype=float)
    env_c, env_l = envelope(compute, loss)
    if len(env_c) < MIN_FRONTIER_POINTS:
        raise ConfigError(f"method {name}: only {len(env_c)} frontier points, "
                          f"need at least {MIN_FRONTIER_POINTS}")
    alpha, c_c, e = fit_power_law(env_c, env_l, irreducible=irreducible)
    samples = _bootstrap(compute, loss, runs, bootstrap, seed, irreducible) if bootstrap else None
    alpha_ci = c_c_ci = None
    if samples is not None and len(samples):
        alpha_ci = _percentile_ci(samples[:, 0])
        lo, hi = _percentile_ci(samples[:, 1])
        c_c_ci = (10.0 ** lo, 10.0 ** hi)
    return PowerLawFit(alpha, c_c, e, alpha_ci, c_c_ci, len(env_c),
                       np.column_stack([env_c, env_l]), samples)


def _percentile_ci(values: np.ndarray) -> tuple[float, float]:
    """95% percentile interval, without interpolating: a flat frontier's C_c is +inf in some
    samples, and inf - inf would turn the bound into nan."""
    lo = np.percentile(values, 2.5, method="lower")
    hi = np.percentile(values, 97.5, method="higher")
    return float(lo), float(hi)


def _bootstrap(compute, loss, runs, n: int, seed: int, irreducible: bool) -> np.ndarray:
    """Rows (alpha, log10 C_c[, E]) from refits on resampled runs (or points)."""
    rng = np.random.default_rng(seed)
    units = np.arange(len(compute)) if runs is None else np.asarray(runs)
    labels, inverse = np.unique(units, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(labels))]
    rows = []
    for _ in range(n):
        picked = rng.integers(0, len(labels), size=len(labels))
        idx = np.concatenate([members[k] for k in picked])
        env_c, env_l = envelope(compute[idx], loss[idx])
        if len(env_c) < MIN_FRONTIER_POINTS:
            continue
        alpha, c_c, e = fit_power_law(env_c, env_l, irreducible=irreducible, n_starts=3)
        row = [alpha, math.log10(c_c) if c_c > 0 else -math.inf]
        rows.append(row + [e] if irreducible else row)
    return np.array(rows, dtype=float).reshape(-1, 3 if irreducible else 2)


# ----------------------------------------------------------------------------- verdicts

def _crossover_params(a, b, c_min: float | None) -> float | None:
    """Compute where two laws (alpha, ln C_c, E) meet, above c_min when given."""
    (alpha_a, lcc_a, e_a), (alpha_b, lcc_b, e_b) = a, b
    if e_a == 0 and e_b == 0:
        if alpha_a == alpha_b:
            return None
        # alpha_a (x - lcc_a) = alpha_b (x - lcc_b)  =>  x = (alpha_a lcc_a - alpha_b lcc_b) / (alpha_a - alpha_b)
        log_cross = (alpha_a * lcc_a - alpha_b * lcc_b) / (alpha_a - alpha_b)
        cross = _safe_exp(log_cross)
        return cross if c_min is None or cross > c_min else None
    # with an irreducible term the curves may cross twice: report the first crossing
    def gap(log_c):
        return float(np.log(_predict(a, np.exp(log_c))) - np.log(_predict(b, np.exp(log_c))))
    lo = math.log(c_min) if c_min else -70.0
    grid = np.linspace(lo, lo + 140.0, 2001)
    gaps = np.array([gap(g) for g in grid])
    change = np.flatnonzero(np.sign(gaps[:-1]) * np.sign(gaps[1:]) < 0)
    return math.exp(brentq(gap, grid[change[0]], grid[change[0] + 1])) if len(change) else None


def crossover(fit_a: PowerLawFit, fit_b: PowerLawFit, c_min: float | None = None) -> float | None:
    """Compute (PF-days) where the two fitted laws give equal loss; None if they never do
    (or, with c_min, not above c_min)."""
    return _crossover_params(fit_a.params(), fit_b.params(), c_min)


def _better_at_infinity(alt, ref) -> bool:
    (alpha_a, lcc_a, e_a), (alpha_r, lcc_r, e_r) = alt, ref
    if e_a != e_r and (alpha_a < 0 and alpha_r < 0):
        return e_a < e_r  # both power terms vanish; the floors decide
    if alpha_a != alpha_r:
        return alpha_a < alpha_r
    return -alpha_a * lcc_a < -alpha_r * lcc_r  # equal slopes: lower log-loss at C = 1


def _scenario(alt, ref, c_min: float) -> str:
    at_min = _predict(alt, np.array(c_min)) < _predict(ref, np.array(c_min))
    at_inf = _better_at_infinity(alt, ref)
    return {(True, True): "A", (False, True): "B", (True, False): "C", (False, False): "D"}[
        (bool(at_min), at_inf)]


def _sample_params(samples: np.ndarray) -> list[tuple[float, float, float]]:
    e = samples[:, 2] if samples.shape[1] > 2 else np.zeros(len(samples))
    return list(zip(samples[:, 0], samples[:, 1] * math.log(10.0), e))


def verdict(alt: PowerLawFit, ref: PowerLawFit, c_min: float) -> dict:
    """Scenario letter of `alt` against `ref`, crossover (B/C only) and bootstrap confidence
    (None without bootstrap samples)."""
    letter = _scenario(alt.params(), ref.params(), c_min)
    cross = crossover(alt, ref, c_min) if letter in ("B", "C") else None
    confidence = None
    if alt.samples is not None and ref.samples is not None:
        pairs = list(zip(_sample_params(alt.samples), _sample_params(ref.samples)))
        if pairs:
            confidence = float(np.mean([_scenario(a, r, c_min) == letter for a, r in pairs]))
    return {"scenario": letter, "crossover_pf_days": cross, "confidence": confidence}


# ----------------------------------------------------------------------------- tables

def _group_by_method(rows: list[dict]) -> dict[str, dict[str, np.ndarray | None]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(str(row["method"]), []).append(row)
    out = {}
    for method, items in grouped.items():
        runs = [r.get("run") for r in items]
        out[method] = {
            "compute": np.array([float(r["compute_pf_days"]) for r in items]),
            "loss": np.array([float(r["loss"]) for r in items]),
            "runs": None if any(v in (None, "") for v in runs) else np.array([str(v) for v in runs]),
        }
    return out


def _fit_json(fit: PowerLawFit) -> dict:
    out = {"alpha_C": fit.alpha_C, "C_c": fit.C_c,
           "alpha_C_ci": list(fit.alpha_C_ci) if fit.alpha_C_ci else None,
           "C_c_ci": list(fit.C_c_ci) if fit.C_c_ci else None,
           "n_points": fit.n_points}
    if fit.E is not None:
        out["E"] = fit.E
    return out


def fit_points_table(rows: list[dict], reference: str = "bp", bootstrap: int = 200,
                     seed: int = 0, irreducible: bool = False) -> dict:
    """Fit every method's frontier and judge each non-reference method against `reference`.

    rows: dicts with method, compute_pf_days, loss and optionally run (as from
    read_points_csv). Returns {"fits": {method: {...}}, "verdicts": {method: {...}}};
    fits gain an "E" key only when irreducible=True.
    """
    groups = _group_by_method(rows)
    if reference not in groups:
        raise ConfigError(f"reference method {reference!r} has no points "
                          f"(methods present: {', '.join(sorted(groups)) or 'none'})")
    fits = {m: fit_frontier(g["compute"], g["loss"], g["runs"], bootstrap=bootstrap, seed=seed,
                            irreducible=irreducible, name=m) for m, g in groups.items()}
    verdicts = {}
    for method in groups:
        if method == reference:
            continue
        c_min = float(min(groups[method]["compute"].min(), groups[reference]["compute"].min()))
        verdicts[method] = verdict(fits[method], fits[reference], c_min)
    return {"fits": {m: _fit_json(f) for m, f in fits.items()}, "verdicts": verdicts}


def _parse_float(text: str, path, line: int, column: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}:{line}: column {column!r} is not a number: {text!r}") from None


def read_points_csv(path) -> list[dict]:
    """Rows of a points CSV (columns method, compute_pf_days, loss[, run]); rows whose
    compute or loss is NaN, infinite or non-positive are skipped with one warning."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"points file not found: {path}")
    with path.open(newline="") as handle:
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
            if "run" in header:
                row["run"] = raw["run"]
            rows.append(row)
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} rows with NaN, infinite or non-positive "
                      "compute/loss", stacklevel=2)
    return rows


def fit_cli(argv) -> int:
    """`beyondbp fit POINTS.csv [--reference bp] [--bootstrap N] [--seed S] [--irreducible]`."""
    parser = argparse.ArgumentParser(prog="beyondbp fit",
                                     description="Fit compute-efficient frontiers and verdicts.")
    parser.add_argument("points", help="CSV with columns method,compute_pf_days,loss[,run]")
    parser.add_argument("--reference", default="bp", help="method to compare against")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--irreducible", action="store_true", help="fit L = E + (C/C_c)^alpha")
    args = parser.parse_args(argv)
    try:
        if args.bootstrap < 0:
            raise ConfigError(f"--bootstrap must be >= 0, got {args.bootstrap}")
        table = fit_points_table(read_points_csv(args.points), reference=args.reference,
                                 bootstrap=args.bootstrap, seed=args.seed,
                                 irreducible=args.irreducible)
    except ConfigError as err:
        print(f"beyondbp fit: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(table, indent=2))
    return 0
