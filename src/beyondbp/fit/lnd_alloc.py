"""Compute-optimal allocation from a fitted L(N, D) = E + A / N^a + B / D^b.

With compute C = k N D (k = 6 for BP's count, 4 for DFA's, ...), minimising L at fixed C gives
(Hoffmann et al. 2022, appendix D.2)
    N_opt = G (C / k)^(b / (a + b)),  D_opt = (C / k) / N_opt,  G = (a A / (b B))^(1 / (a + b)),
and the optimal loss L*(C) = E + K (C / k)^-(a b / (a + b)) with K = A G^-a + B G^b, i.e. a
power law with a floor, L*(C) = E + (C / C_c)^-gamma, C_c = k K^(1 / gamma). Every quantity is
computed for the estimate and for each bootstrap sample, and its interval is the percentile
interval over the samples. C is in FLOP.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import PF_DAY
from .defaults import BP_FLOPS_PER_PARAM_TOKEN
from .lnd import LNDFit, exponents, jsonable, law, percentile_interval



def _columns(params) -> tuple[np.ndarray, ...]:
    """(E, A, B, a, b) as columns that broadcast against a row of computes."""
    arr = np.atleast_2d(np.asarray(params, dtype=float))
    return tuple(arr[:, i:i + 1] for i in range(5))


def optimal_allocation(params, computes, k: float = BP_FLOPS_PER_PARAM_TOKEN) -> tuple[np.ndarray, np.ndarray]:
    """(N_opt, D_opt), each of shape (rows of params, len(computes)); params: (E, A, B, a, b)
    or rows of them."""
    _, big_a, big_b, a, b = _columns(params)
    g = (a * big_a / (b * big_b)) ** (1.0 / (a + b))
    scaled = np.atleast_1d(np.asarray(computes, dtype=float))[None, :] / k
    n_opt = g * scaled ** (b / (a + b))
    return n_opt, scaled / n_opt


def optimal_loss(params, computes, k: float = BP_FLOPS_PER_PARAM_TOKEN) -> np.ndarray:
    """L*(C): the law at (N_opt(C), D_opt(C)); shape (rows of params, len(computes))."""
    n_opt, d_opt = optimal_allocation(params, computes, k)
    return law(_columns(params), n_opt, d_opt)


def _intervals(samples: np.ndarray | None) -> list | None:
    """Per-column 95% intervals of (S, n) samples."""
    if samples is None or len(samples) == 0:
        return None
    return [percentile_interval(samples[:, j]) for j in range(samples.shape[1])]


@dataclass
class Allocation:
    """Compute-optimal N, D, tokens per parameter and loss at each compute, with intervals
    (lists of [lo, hi] per compute), and the exponents of N_opt, D_opt and L* - E."""
    method: str
    k: float
    compute: np.ndarray
    n_opt: np.ndarray
    d_opt: np.ndarray
    loss: np.ndarray
    n_opt_ci: list | None
    d_opt_ci: list | None
    tokens_per_param_ci: list | None
    loss_ci: list | None
    exponents: dict

    @property
    def tokens_per_param(self) -> np.ndarray:
        return self.d_opt / self.n_opt

    def to_dict(self) -> dict:
        return jsonable({"method": self.method, "flops_per_param_token": self.k, "compute": self.compute,
                         "n_opt": self.n_opt, "n_opt_ci": self.n_opt_ci, "d_opt": self.d_opt,
                         "d_opt_ci": self.d_opt_ci, "tokens_per_param": self.tokens_per_param,
                         "tokens_per_param_ci": self.tokens_per_param_ci, "loss": self.loss,
                         "loss_ci": self.loss_ci, **self.exponents})


def allocation(fit: LNDFit, computes, k: float = BP_FLOPS_PER_PARAM_TOKEN) -> Allocation:
    """The compute-optimal allocation of `fit` at each of `computes` (FLOP, C = k N D)."""
    computes = np.atleast_1d(np.asarray(computes, dtype=float))
    n_opt, d_opt = (v[0] for v in optimal_allocation(fit.params, computes, k))
    loss = optimal_loss(fit.params, computes, k)[0]
    exps = exponents(fit.params)
    out = dict(exps)
    cis = [None] * 4
    if fit.samples is not None and len(fit.samples):
        s_n, s_d = optimal_allocation(fit.samples, computes, k)
        cis = [_intervals(s_n), _intervals(s_d), _intervals(s_d / s_n), _intervals(optimal_loss(fit.samples, computes, k))]
    sample_exps = exponents(fit.samples.T) if fit.samples is not None and len(fit.samples) else None
    for name in exps:
        out[f"{name}_ci"] = percentile_interval(sample_exps[name]) if sample_exps else None
    return Allocation(fit.method, float(k), computes, n_opt, d_opt, loss, *cis, exponents=out)


@dataclass
class OptimalLossLaw:
    """L*(C) = E + (C / C_c)^-gamma (C in FLOP) for the estimate, and `samples` rows
    (E, gamma, C_c) for the bootstrap: the optimal-loss curve as a law, for verdicts and
    compute multipliers."""
    method: str
    E: float
    gamma: float
    C_c: float
    samples: np.ndarray | None

    def loss(self, computes) -> tuple[np.ndarray, np.ndarray | None]:
        """(estimate per compute, samples x computes or None)."""
        c = np.atleast_1d(np.asarray(computes, dtype=float))[None, :]
        est = (self.E + (c / self.C_c) ** -self.gamma)[0]
        if self.samples is None:
            return est, None
        e, gamma, c_c = (self.samples[:, i:i + 1] for i in range(3))
        return est, e + (c / c_c) ** -gamma

    def compute_for_loss(self, losses) -> tuple[np.ndarray, np.ndarray | None]:
        """The compute at which L* reaches each loss (inf at or below the floor E)."""
        return (_compute_for(np.array([[self.E, self.gamma, self.C_c]]), losses)[0],
                None if self.samples is None else _compute_for(self.samples, losses))

    def kaplan_form(self, flop_per_unit: float = PF_DAY) -> tuple[tuple[float, float, float], np.ndarray | None]:
        """L*(C) in the frontier's form L = E + (C / C_c)^alpha_C, C in units of flop_per_unit
        (default PF-days): ((alpha_C, ln C_c, E) as `PowerLawFit.params()` gives them, samples
        as rows (alpha_C, log10 C_c, E) like `PowerLawFit.samples`), so the verdict code can
        judge L*(C) beside the envelope."""
        est = (-self.gamma, math.log(self.C_c / flop_per_unit), self.E)
        if self.samples is None:
            return est, None
        e, gamma, c_c = self.samples.T
        return est, np.column_stack([-gamma, np.log10(c_c / flop_per_unit), e])

    def to_dict(self) -> dict:
        ci = _intervals(self.samples)
        return jsonable({"method": self.method, "E": self.E, "gamma": self.gamma, "C_c": self.C_c,
                         "E_ci": ci[0] if ci else None, "gamma_ci": ci[1] if ci else None,
                         "C_c_ci": ci[2] if ci else None})


def _compute_for(rows: np.ndarray, losses) -> np.ndarray:
    """C at which rows (E, gamma, C_c) reach `losses` (a row for all, or one row per law)."""
    e, gamma, c_c = (rows[:, i:i + 1] for i in range(3))
    losses = np.asarray(losses, dtype=float)
    excess = (losses if losses.ndim == 2 else np.atleast_1d(losses)[None, :]) - e
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(excess > 0, c_c * np.where(excess > 0, excess, 1.0) ** (-1.0 / gamma), np.inf)


def _law_rows(params, k: float) -> np.ndarray:
    """Rows (E, gamma, C_c) of L*(C) from rows (E, A, B, a, b)."""
    e, big_a, big_b, a, b = _columns(params)
    g = (a * big_a / (b * big_b)) ** (1.0 / (a + b))
    gamma = a * b / (a + b)
    scale = big_a * g ** -a + big_b * g ** b
    return np.column_stack([e[:, 0], gamma[:, 0], (k * scale ** (1.0 / gamma))[:, 0]])


def optimal_loss_law(fit: LNDFit, k: float = BP_FLOPS_PER_PARAM_TOKEN) -> OptimalLossLaw:
    """L*(C) of `fit` as a law, with one row per bootstrap sample."""
    est = _law_rows(fit.params, k)[0]
    samples = _law_rows(fit.samples, k) if fit.samples is not None and len(fit.samples) else None
    return OptimalLossLaw(fit.method, *map(float, est), samples=samples)


def compute_multiplier(alt: OptimalLossLaw, ref: OptimalLossLaw, computes) -> dict:
    """How many times the reference's compute the alternative needs to reach the loss the
    reference reaches at each compute: C_alt(L*_ref(C)) / C (inf where the alternative's floor
    is at or above that loss). Samples are paired by index (each method's own bootstrap)."""
    computes = np.atleast_1d(np.asarray(computes, dtype=float))
    ref_loss, ref_samples = ref.loss(computes)
    est = alt.compute_for_loss(ref_loss)[0] / computes
    ci = None
    if alt.samples is not None and ref_samples is not None:
        m = min(len(alt.samples), len(ref_samples))
        paired = _compute_for(alt.samples[:m], ref_samples[:m]) / computes[None, :]
        ci = [_inf_interval(paired[:, j]) for j in range(len(computes))]
    return jsonable({"method": alt.method, "reference": ref.method, "compute": computes,
                     "multiplier": est, "multiplier_ci": ci})


def _inf_interval(values: np.ndarray) -> list:
    """95% interval that keeps infinite samples (a bound is inf when over 2.5% are)."""
    lo, hi = np.percentile(values, [2.5, 97.5], method="nearest")
    return [float(lo), float(hi)]


def run_span(fit: LNDFit, k: float) -> tuple[float, float]:
    """The smallest and largest run compute k N D of a fit's runs."""
    compute = k * fit.n_params * fit.tokens
    return float(compute.min()), float(compute.max())


def bracketing(alloc: Allocation, fit: LNDFit) -> dict:
    """Whether the compute-optimal tokens per parameter at each of the allocation's computes lies
    inside the range of tokens per parameter the runs trained, its estimate and its 95% interval:
    {"run_range": [lo, hi], "at": [{compute, tokens_per_param, ci, estimate_inside, ci_inside}],
    "bracketed": all of them inside (null where the fit has no samples)}."""
    run_tpp = fit.tokens / fit.n_params
    lo, hi = float(run_tpp.min()), float(run_tpp.max())
    at = []
    for j, (c, r) in enumerate(zip(alloc.compute, alloc.tokens_per_param)):
        ci = alloc.tokens_per_param_ci[j] if alloc.tokens_per_param_ci else None
        at.append({"compute": float(c), "tokens_per_param": float(r), "ci": ci,
                   "estimate_inside": bool(lo <= r <= hi),
                   "ci_inside": None if ci is None else bool(lo <= ci[0] and ci[1] <= hi)})
    inside = [a["estimate_inside"] and a["ci_inside"] for a in at]
    return jsonable({"run_range": [lo, hi], "at": at,
                     "bracketed": None if any(a["ci_inside"] is None for a in at) else all(inside)})


def edge_warnings(fit: LNDFit, k: float = BP_FLOPS_PER_PARAM_TOKEN, computes=None) -> list[str]:
    """Warnings where the compute-optimal N or tokens per parameter at the smallest and largest
    compute (default: of the fit's runs, C = k N D) lies outside what the runs sampled: there
    the optimum is extrapolated, not bracketed."""
    computes = np.asarray(run_span(fit, k) if computes is None else computes, dtype=float)
    n_opt, d_opt = (v[0] for v in optimal_allocation(fit.params, computes, k))
    tpp = d_opt / n_opt
    run_tpp = fit.tokens / fit.n_params
    out = []
    for c, n, r in zip(computes, n_opt, tpp):
        if not fit.n_params.min() <= n <= fit.n_params.max():
            out.append(f"{fit.method}: compute-optimal N at C={c:.3g} FLOP is {n:.3g}, outside the sizes "
                       f"trained ({fit.n_params.min():.3g}-{fit.n_params.max():.3g}): not bracketed")
        if not run_tpp.min() <= r <= run_tpp.max():
            out.append(f"{fit.method}: optimal tokens per parameter at C={c:.3g} FLOP is {r:.3g}, outside "
                       f"the budgets trained ({run_tpp.min():.3g}-{run_tpp.max():.3g}): not bracketed")
    return out
