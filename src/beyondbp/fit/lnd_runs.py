"""Runs from a CSV (`method, n_params, tokens, loss[, run]`) and the L(N, D) report over them:
per method the parametric fit, its compute-optimal allocation, the isoFLOP cross-check and the
edge warnings, as strict JSON."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..config import PF_DAY, ConfigError
from ..reads import open_regular, read_bytes
from .plausible import check_header, check_plausible, check_width
from .lnd import DEFAULT_BOOTSTRAP, LNDFit, fit_lnd, fit_lnd_shared_e, jsonable
from .lnd_alloc import (BP_FLOPS_PER_PARAM_TOKEN, allocation, bracketing, edge_warnings, optimal_loss_law,
                        run_span)
from .lnd_isoflop import MIN_SIZES, isoflop_exponent, isoflop_minima, isoflop_warnings
from .lnd_verdict import judge_fits

RUN_COLUMNS = ("method", "n_params", "tokens", "loss")
NUMBER_COLUMNS = ("n_params", "tokens", "loss")


class Runs(NamedTuple):
    """One method's runs: arrays of N (non-embedding parameters), D (tokens) and final loss,
    and the run names (None when the CSV has no `run` column)."""
    n_params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    run: list[str] | None


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_start = raw.rfind(b"\n", 0, err.start) + 1
        line = raw[:err.start].count(b"\n") + 1
        header = next(csv.reader([raw.split(b"\n", 1)[0].decode("utf-8", "replace")]), [])
        field = len(next(csv.reader([raw[line_start:err.start].decode("utf-8", "replace")]), [""])) - 1
        column = header[field] if 0 <= field < len(header) else f"#{field + 1}"
        raise ConfigError(f"{path}:{line}: column {column!r} is not UTF-8 text "
                          f"(byte 0x{raw[err.start]:02x})") from None


def _positive(text, path: Path, line: int, column: str) -> float:
    if text is None or text.strip() == "":
        raise ConfigError(f"{path}:{line}: column {column!r} is empty")
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{path}:{line}: column {column!r} is not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{path}:{line}: column {column!r} must be positive and finite, got {text!r}")
    return check_plausible(path, line, column, value)


def is_runs_csv(path) -> bool:
    """Whether a CSV's header names the runs columns n_params and tokens (an L(N, D) runs file),
    not a points file; False for a file that cannot be read (its reader then says why)."""
    try:  # a regular file of at most a CSV's size: never a FIFO or /dev/zero read without end
        with open(open_regular(path, "runs file", "csv"), newline="", encoding="utf-8-sig", errors="replace") as handle:
            header = next(csv.reader([handle.readline(1 << 16)]), [])
    except (OSError, ConfigError):
        return False
    return {"n_params", "tokens"} <= {h.strip() for h in header}


def read_runs_csv(path) -> dict[str, Runs]:
    """Runs per method, in file order. Any bad row is a ConfigError naming the file, line and
    column; nothing is skipped silently."""
    path = Path(path)
    try:
        raw = read_bytes(path, "runs file", "csv")  # a regular file of bounded size, or one line naming it
    except FileNotFoundError:
        raise ConfigError(f"runs file not found: {path}") from None
    reader = csv.DictReader(io.StringIO(check_width(path, _decode(path, raw)), newline=""))
    header = check_header(path, [h.strip() for h in reader.fieldnames or []])
    reader.fieldnames = header
    missing = [c for c in RUN_COLUMNS if c not in header]
    if missing:
        raise ConfigError(f"{path}:1: missing column {missing[0]!r} (have: {', '.join(header) or 'nothing'})")
    rows: dict[str, list] = {}
    for raw in reader:
        line = reader.line_num
        if None in raw:
            raise ConfigError(f"{path}:{line}: more values than the {len(header)} columns of the header")
        method = (raw["method"] or "").strip()
        if not method:
            raise ConfigError(f"{path}:{line}: column 'method' is empty")
        values = [_positive(raw[c], path, line, c) for c in NUMBER_COLUMNS]
        rows.setdefault(method, []).append((*values, (raw.get("run") or "").strip()))
    if not rows:
        raise ConfigError(f"{path}: no runs (a header and no rows)")
    out = {}
    for method, items in rows.items():
        n, d, loss, names = zip(*items)
        out[method] = Runs(np.array(n), np.array(d), np.array(loss),
                           list(names) if "run" in header else None)
    return out


def method_summary(fit: LNDFit, k: float = BP_FLOPS_PER_PARAM_TOKEN, computes=None) -> dict:
    """One fitted method's {"allocation", "bracketing", "optimal_loss", "isoflop", "warnings"} as
    strict JSON: the allocation at `computes` (default: its smallest and largest run compute,
    C = k N D in FLOP), whether its tokens per parameter lie inside the runs' (`bracketing`), L*(C),
    the isoFLOP minima with their exponent, and the edge and fit warnings."""
    method = fit.method
    at = list(run_span(fit, k)) if computes is None else computes
    minima = isoflop_minima(fit.n_params, fit.tokens, fit.loss, k=k)
    warnings = edge_warnings(fit, k, at) + isoflop_warnings(minima, method)
    if not minima:
        warnings.append(f"{method}: isoFLOP cross-check impossible: at no compute do "
                        f"{MIN_SIZES} sizes have runs on both sides")
    if fit.at_bounds:
        warnings.append(f"{method}: {', '.join(fit.at_bounds)} at the bound of the fit "
                        "(the runs do not determine it)")
    alloc = allocation(fit, at, k)
    return jsonable({"allocation": alloc.to_dict(), "bracketing": bracketing(alloc, fit),
                     "optimal_loss": optimal_loss_law(fit, k).to_dict(),
                     "isoflop": {"minima": [m.to_dict() for m in minima], "exponent": isoflop_exponent(minima)},
                     "warnings": warnings})


def lnd_report(groups: dict[str, Runs], *, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
               shared_e: bool = False, flops_per_param_token: float | dict = BP_FLOPS_PER_PARAM_TOKEN,
               computes=None, reference: str | None = None) -> dict:
    """{"lnd_fits": {method: fit}, "allocation": {method: ...}, "bracketing": {method: ...} (whether
    the optimal tokens per parameter lie inside the runs'), "optimal_loss": {method: law},
    "isoflop": {method: {"minima", "exponent"}}, "warnings": [...]} as strict JSON, and, when
    `reference` names one of several methods, "optimal_loss_verdicts": each other method's
    L*(C) judged against the reference's (`lnd_verdict.judge_optimal_loss`, C in PF-days).

    flops_per_param_token: k in C = k N D, one number or {method: k}; computes: where to give
    the allocation (default: each method's smallest and largest run compute)."""
    def k_of(method):
        if isinstance(flops_per_param_token, dict):
            return float(flops_per_param_token.get(method, BP_FLOPS_PER_PARAM_TOKEN))
        return float(flops_per_param_token)

    if shared_e:
        fits = fit_lnd_shared_e(dict(groups), bootstrap=bootstrap, seed=seed)
    else:
        fits = {m: fit_lnd(g.n_params, g.tokens, g.loss, method=m, runs=g.run, bootstrap=bootstrap, seed=seed)
                for m, g in groups.items()}
    out = {"lnd_fits": {}, "allocation": {}, "bracketing": {}, "optimal_loss": {}, "isoflop": {}, "warnings": []}
    for method, fit in fits.items():
        out["lnd_fits"][method] = fit.to_dict()
        summary = method_summary(fit, k_of(method), computes)
        for key in ("allocation", "bracketing", "optimal_loss", "isoflop"):
            out[key][method] = summary[key]
        out["warnings"] += summary["warnings"]
    if reference is not None and reference not in fits and len(fits) > 1:
        out["warnings"].append(f"no verdicts on L*(C): the reference {reference!r} has no runs")
    if reference in fits and len(fits) > 1:
        out["optimal_loss_verdicts"] = judge_fits(fits, {m: k_of(m) for m in fits}, reference, PF_DAY)[2]
    return jsonable(out)
