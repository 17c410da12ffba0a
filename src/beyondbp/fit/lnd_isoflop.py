"""isoFLOP analysis (Chinchilla's approach 2), a cross-check of the parametric L(N, D) fit.

At each fixed compute C, take one loss per model size: the run of that size at compute C, or,
when no run sits exactly there, the loss interpolated linearly in (log C, log L) between the
two runs of that size whose computes bracket C (never extrapolated). Fit a parabola to loss
against ln N and take its vertex as the compute-optimal size N_opt(C). The minimum is
`bracketed` only when the parabola opens upwards, its vertex lies inside the sampled sizes and
the lowest sampled loss is not at the smallest or largest size. A line through ln N_opt
against ln C over the bracketed minima gives the exponent of N_opt ~ C^s, to compare with
b / (a + b) from the parametric fit.

The parabola is a second-order approximation of the isoFLOP curve, biased when the sampled
sizes span a wide range or sit off-centre (Open Athena 2025, "Problems with Chinchilla
Approach 2"); it is a cross-check, not the estimate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from .lnd import jsonable

MIN_SIZES = 3


@dataclass
class IsoFlopMinimum:
    """The isoFLOP curve at one compute: the sizes and losses used, the parabola
    loss = c2 u^2 + c1 u + c0 in u = ln N, its vertex and whether the data bracket it."""
    compute: float
    n_params: np.ndarray
    loss: np.ndarray
    coefficients: tuple[float, float, float]
    n_opt: float | None
    loss_opt: float | None
    bracketed: bool
    note: str

    def to_dict(self) -> dict:
        return jsonable({"compute": self.compute, "n_params": self.n_params, "loss": self.loss,
                         "parabola": list(self.coefficients), "n_opt": self.n_opt,
                         "loss_opt": self.loss_opt, "bracketed": self.bracketed, "note": self.note})


def _size_curves(n_params, loss, compute) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """Per size: (ln C, ln L) sorted by compute, runs with equal compute averaged (seeds)."""
    out = {}
    for size in np.unique(n_params):
        mask = n_params == size
        log_c, inverse = np.unique(np.round(np.log(compute[mask]), 9), return_inverse=True)
        log_l = np.bincount(inverse, weights=np.log(loss[mask])) / np.bincount(inverse)
        out[float(size)] = (log_c, log_l)
    return out


def _loss_at(curve: tuple[np.ndarray, np.ndarray], log_c: float) -> float | None:
    xs, ys = curve
    if not xs[0] - 1e-9 <= log_c <= xs[-1] + 1e-9:
        return None
    return float(np.exp(np.interp(log_c, xs, ys)))


def default_computes(n_params, compute, n_levels: int = 5) -> np.ndarray:
    """n_levels computes, log-spaced over the range where at least 3 sizes have runs on both
    sides (or exactly at) the compute; empty when there is no such range."""
    curves = _size_curves(np.asarray(n_params, float), np.ones(len(compute)), np.asarray(compute, float))
    spans = np.array([(c[0][0], c[0][-1]) for c in curves.values()])
    probe = np.linspace(spans[:, 0].min(), spans[:, 1].max(), 400)
    covered = ((spans[:, :1] - 1e-9 <= probe) & (probe <= spans[:, 1:] + 1e-9)).sum(axis=0) >= MIN_SIZES
    if not covered.any():
        return np.array([])
    lo, hi = probe[covered][0], probe[covered][-1]
    return np.exp(np.linspace(lo, hi, n_levels)) if hi > lo else np.exp(np.array([lo]))


def isoflop_minima(n_params, tokens, loss, computes=None, k: float = 6.0, compute=None,
                   n_levels: int = 5) -> list[IsoFlopMinimum]:
    """One `IsoFlopMinimum` per compute with at least 3 sizes. compute: per-run FLOP (default
    k N D); computes: the isoFLOP levels (default: `default_computes`)."""
    n_params, tokens, loss = (np.asarray(v, dtype=float) for v in (n_params, tokens, loss))
    compute = k * n_params * tokens if compute is None else np.asarray(compute, dtype=float)
    if computes is None:
        computes = default_computes(n_params, compute, n_levels)
    curves = _size_curves(n_params, loss, compute)
    out = []
    for c in np.atleast_1d(np.asarray(computes, dtype=float)):
        points = [(size, _loss_at(curve, float(np.log(c)))) for size, curve in curves.items()]
        points = [(size, value) for size, value in points if value is not None]
        if len(points) >= MIN_SIZES:
            sizes, values = map(np.array, zip(*points))
            out.append(_parabola_minimum(float(c), sizes, values))
    return out


def _parabola_minimum(compute: float, sizes: np.ndarray, values: np.ndarray) -> IsoFlopMinimum:
    u = np.log(sizes)
    c2, c1, c0 = np.polyfit(u, values, 2)
    lowest = int(np.argmin(values))
    if c2 <= 0:
        return IsoFlopMinimum(compute, sizes, values, (c2, c1, c0), None, None, False,
                              "the parabola opens downwards: no minimum")
    vertex = -c1 / (2.0 * c2)
    loss_opt = float(np.polyval([c2, c1, c0], vertex))
    if not u.min() < vertex < u.max():
        note = "the vertex lies beyond the sampled sizes"
    elif lowest in (0, len(u) - 1):
        note = f"the lowest loss is at the {'smallest' if lowest == 0 else 'largest'} size sampled"
    else:
        note = ""
    return IsoFlopMinimum(compute, sizes, values, (c2, c1, c0), float(np.exp(vertex)), loss_opt,
                          note == "", note)


def isoflop_exponent(minima: list[IsoFlopMinimum]) -> dict:
    """Least-squares line ln N_opt = s ln C + c over the bracketed minima: s (the exponent of
    N_opt ~ C^s) with its 95% t-interval (needs 3 minima; 2 give s without an interval)."""
    used = [m for m in minima if m.bracketed]
    out = {"n_exponent": None, "n_exponent_ci": None, "n_points": len(used), "computes": [m.compute for m in used]}
    if len(used) < 2:
        return jsonable(out)
    x = np.log([m.compute for m in used])
    y = np.log([m.n_opt for m in used])
    res = stats.linregress(x, y)
    out["n_exponent"] = res.slope
    out["intercept"] = res.intercept
    if len(used) >= 3:
        half = stats.t.ppf(0.975, len(used) - 2) * res.stderr
        out["n_exponent_ci"] = [res.slope - half, res.slope + half]
    return jsonable(out)


def isoflop_warnings(minima: list[IsoFlopMinimum], method: str) -> list[str]:
    return [f"{method}: isoFLOP minimum at C={m.compute:.3g} FLOP not bracketed ({m.note})"
            for m in minima if not m.bracketed]
