"""Fits with a loss floor: L = E + (C / C_c)^alpha, one E for one method or shared by several.

In log space each method's law is y = ln(E + exp(a x + b)) with x = ln C - (its centre) and
b the log of the reducible loss at the centre. For a fixed E the problem per method is almost
a straight line (ln(L - E) against x, weighted by ((L - E) / L)^2 so that residuals count in
ln L), polished by Gauss-Newton steps with Huber weights in ln L; the floor is then found by
profiling: a grid of E between 0 and just under the smallest loss, refined by golden-section
search. Everything is vectorised over rows, so a bootstrap's thousands of refits are one call.
"""
from __future__ import annotations

import numpy as np

GRID = 1.0 - np.geomspace(1.0, 1e-4, 30)  # E / E_max: 0 ... 0.9999, dense near the top
GOLDEN_STEPS = 18
GAUSS_NEWTON_STEPS = 2


def huber_cost(residual: np.ndarray, scale: float) -> np.ndarray:
    a = np.abs(residual)
    return np.where(a <= scale, 0.5 * residual ** 2, scale * (a - 0.5 * scale))


def _line_at_floor(x: np.ndarray, y: np.ndarray, loss: np.ndarray, floor: np.ndarray, scale: float,
                   steps: int = GAUSS_NEWTON_STEPS):
    """Per row: the (a, b) of y = ln(E + exp(a x + b)) for the given E (rows x 1; loss = exp(y)),
    and the Huber cost of its residuals."""
    reducible = np.maximum(loss - floor, 1e-300)
    share = reducible / loss  # d ln L / d ln(L - E): a residual in ln(L - E) times this is one in ln L
    z = np.log(reducible)
    a, b = _weighted_line(x, z, share * share)
    if steps == 0:  # the cost to first order, without the exp and log of the exact residuals
        return a, b, huber_cost((z - a[:, None] * x - b[:, None]) * share, scale).sum(1)
    for _ in range(steps):
        power = np.exp(a[:, None] * x + b[:, None])
        r = np.log(floor + power) - y
        s = power / (floor + power)
        hw = np.where(np.abs(r) <= scale, 1.0, scale / np.maximum(np.abs(r), 1e-300)) * s * s
        sxx, sx, s0 = (hw * x * x).sum(1), (hw * x).sum(1), hw.sum(1)
        gx, g0 = (hw * x * r / s).sum(1), (hw * r / s).sum(1)
        det = sxx * s0 - sx * sx
        ok = det > 1e-300
        det = np.where(ok, det, 1.0)
        a = a - np.where(ok, (s0 * gx - sx * g0) / det, 0.0)
        b = b - np.where(ok, (sxx * g0 - sx * gx) / det, 0.0)
    r = np.log(floor + np.exp(a[:, None] * x + b[:, None])) - y
    return a, b, huber_cost(r, scale).sum(1)


def _weighted_line(x: np.ndarray, z: np.ndarray, w: np.ndarray):
    ws = w.sum(1)
    xm, zm = (w * x).sum(1) / ws, (w * z).sum(1) / ws
    dx = x - xm[:, None]
    sxx = (w * dx * dx).sum(1)
    a = (w * dx * (z - zm[:, None])).sum(1) / np.where(sxx > 0, sxx, 1.0)
    return a, zm - a * xm


def _profile(groups, floor: np.ndarray, scale: float, steps: int = GAUSS_NEWTON_STEPS):
    """Total cost and per-group (a, b) at floors E (one per row); groups: (x, y, exp(y))."""
    total, params = 0.0, []
    for x, y, loss in groups:
        a, b, cost = _line_at_floor(x, y, loss, floor[:, None], scale, steps)
        total = total + cost
        params.append((a, b))
    return total, params


def fit_floor(groups: list[tuple[np.ndarray, np.ndarray]], scale: float):
    """Least-Huber fit of y = ln(E + exp(a_m x + b_m)) for every row, with one E per row shared by
    all groups. groups: (x [k_m], y [rows, k_m]) per method. Returns (E [rows], a [rows, M],
    b [rows, M]); 0 <= E < the row's smallest loss."""
    groups = [(x, y, np.exp(y)) for x, y in groups]
    e_max = np.min([loss.min(1) for _, _, loss in groups], axis=0) * (1 - 1e-9)
    # the grid is scored with the exact cost: a first-order cost weights the nearest point by
    # (L - E) / L, which vanishes as E nears the smallest loss, so it would pick that bound
    costs = np.stack([_profile(groups, u * e_max, scale)[0] for u in GRID])  # [grid, rows]
    best = np.argmin(costs, axis=0)
    lo, hi = GRID[np.maximum(best - 1, 0)], GRID[np.minimum(best + 1, len(GRID) - 1)]
    ratio = (np.sqrt(5.0) - 1) / 2
    u1, u2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    c1, c2 = _profile(groups, u1 * e_max, scale)[0], _profile(groups, u2 * e_max, scale)[0]
    for _ in range(GOLDEN_STEPS):  # one new evaluation per step: the other inner point is kept
        left = c1 <= c2  # the minimum lies in [lo, u2]
        hi, lo = np.where(left, u2, hi), np.where(left, lo, u1)
        new = np.where(left, hi - ratio * (hi - lo), lo + ratio * (hi - lo))
        c_new = _profile(groups, new * e_max, scale)[0]
        u1, u2 = np.where(left, new, u2), np.where(left, u1, new)
        c1, c2 = np.where(left, c_new, c2), np.where(left, c1, c_new)
    u = np.where(c1 <= c2, u1, u2)
    grid_best = GRID[best]
    final_cost = np.where(c1 <= c2, c1, c2)  # the cost at u, already evaluated
    grid_cost = _profile(groups, grid_best * e_max, scale)[0]
    u = np.where(final_cost <= grid_cost, u, grid_best)  # the refinement never makes it worse
    _, params = _profile(groups, u * e_max, scale, GAUSS_NEWTON_STEPS + 2)
    return u * e_max, np.stack([a for a, _ in params], 1), np.stack([b for _, b in params], 1)
