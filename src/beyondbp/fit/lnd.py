"""Parametric fit of L(N, D) = E + A / N^a + B / D^b (Chinchilla's approach 3) with bootstrap
intervals, and the compute-optimal allocation it implies.

The law is fitted in log-sum-exp form, log L = LSE(e, alpha - a log N, beta - b log D) with
e = log E, A = exp(alpha), B = exp(beta), by a Huber loss (delta 1e-3) on log L, minimised by
L-BFGS-B with an analytic gradient, as in Hoffmann et al. 2022 and Besiroglu et al. 2024
(Epoch AI's replication). Two lessons from the replication are built in: the objective is
scaled (mean Huber / delta, about the mean absolute log residual) so that L-BFGS does not stop
before it converges, and the starting points are many. They come from a grid over the
exponents (a, b): for fixed exponents the law is linear in (E, A, B), so each grid point gets
its best (E, A, B) from a non-negative least-squares fit of relative errors (variable
projection), and L-BFGS starts from the local minima of that profile (`StartGrid`).

Intervals: a bootstrap over runs (runs resampled with replacement, refitted), percentile 95%
intervals, one random stream per method (`method_rng`). Each refit starts from the full fit
(warm start, which keeps 200 refits of 250 runs within a few seconds); benchmarks/LND.md
shows that starting each refit from the whole grid instead gives the same coverage.

Everything here takes and returns numbers: no torch, nothing from the training side.
`beyondbp.fit.lnd_alloc` turns a fit into the compute-optimal allocation, `beyondbp.fit.lnd_isoflop`
does Chinchilla's approach 2 and `beyondbp.fit.lnd_runs` reads runs from a CSV.
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize, nnls

from ..config import ConfigError, TooFewPoints
from .defaults import LND_BOOTSTRAP
from .strict_json import jsonable

from threadpoolctl import threadpool_limits

HUBER_DELTA = 1e-3
DEFAULT_BOOTSTRAP = LND_BOOTSTRAP
PARAMS = ("E", "A", "B", "a", "b")
MAX_EXPONENT = 5.0
MIN_RUNS = 6
_LBFGS_OPTIONS = {"maxiter": 3000, "ftol": 1e-15, "gtol": 1e-10, "maxcor": 20}


@dataclass(frozen=True)
class StartGrid:
    """Starting points: every (a, b) in exponents x exponents gets its least-squares (E, A, B);
    L-BFGS is run from the `n_polish` best local minima of that profile."""
    exponents: tuple[float, ...]
    n_polish: int


DEFAULT_GRID = StartGrid(tuple(np.geomspace(0.05, 3.0, 16)), 4)
DENSE_GRID = StartGrid(tuple(np.geomspace(0.02, 4.5, 48)), 12)


@dataclass
class LNDFit:
    """One method's fitted law. `samples` holds bootstrap refits as rows (E, A, B, a, b);
    `log_residuals` are log(observed) - log(fitted), one per run, in the input order."""
    method: str
    E: float
    A: float
    B: float
    a: float
    b: float
    n_params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    objective: float
    log_residuals: np.ndarray
    runs: list[str] | None = None
    samples: np.ndarray | None = None
    shared_E: bool = False
    at_bounds: list[str] = field(default_factory=list)
    failed_refits: int = 0  # bootstrap refits whose L-BFGS-B did not converge: dropped, counted
    samples_at_bounds: dict[str, int] = field(default_factory=dict)  # kept refits with E, a or b at a bound

    @property
    def params(self) -> np.ndarray:
        return np.array([self.E, self.A, self.B, self.a, self.b])

    def predict(self, n_params, tokens) -> np.ndarray:
        return law(self.params, n_params, tokens)

    def interval(self, name: str) -> tuple[float, float] | None:
        """95% percentile interval of a parameter (E, A, B, a or b) over the bootstrap."""
        if self.samples is None or len(self.samples) == 0:
            return None
        return percentile_interval(self.samples[:, PARAMS.index(name)])

    def to_dict(self) -> dict:
        """Strict-JSON-friendly: floats and lists only, None for a missing or non-finite value."""
        out = {"method": self.method, "n_runs": int(len(self.loss)), "shared_E": self.shared_E}
        for name in PARAMS:
            out[name] = getattr(self, name)
            out[f"{name}_ci"] = self.interval(name)
        exps = exponents(self.params)
        for name, value in exps.items():
            out[name] = value
            out[f"{name}_ci"] = (percentile_interval(exponents(self.samples.T)[name])
                                 if self.samples is not None and len(self.samples) else None)
        out.update({"bootstrap": 0 if self.samples is None else int(len(self.samples)),
                    "huber_delta": HUBER_DELTA, "objective": self.objective,
                    "residual_rms": float(np.sqrt(np.mean(self.log_residuals ** 2))),
                    "residual_max": float(np.max(np.abs(self.log_residuals))),
                    "log_residuals": self.log_residuals.tolist(), "runs": self.runs,
                    "at_bounds": list(self.at_bounds), "failed_refits": self.failed_refits,
                    "samples_at_bounds": dict(self.samples_at_bounds)})
        return jsonable(out)


def law(params, n_params, tokens) -> np.ndarray:
    """E + A / N^a + B / D^b, evaluated directly; params = (E, A, B, a, b), each a scalar or
    an array that broadcasts against n_params and tokens."""
    e_, a_, b_, alpha, beta = (np.asarray(p, dtype=float) for p in params)
    return e_ + a_ / np.asarray(n_params, float) ** alpha + b_ / np.asarray(tokens, float) ** beta


def exponents(params) -> dict[str, np.ndarray | float]:
    """Allocation exponents: N_opt ~ C^(b/(a+b)), D_opt ~ C^(a/(a+b)), L* - E ~ C^-(ab/(a+b))."""
    a, b = np.asarray(params[3], float), np.asarray(params[4], float)
    total = a + b
    out = {"n_exponent": b / total, "d_exponent": a / total, "loss_exponent": a * b / total}
    return {k: float(v) if np.ndim(v) == 0 else v for k, v in out.items()}


def percentile_interval(values) -> tuple[float, float] | None:
    """95% percentile interval of the finite values, None when there are none."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def method_rng(method: str, seed: int) -> np.random.Generator:
    """A random stream per method: the user seed and a stable hash of the method's name (Python's
    hash() changes between processes)."""
    if int(seed) < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    digest = int.from_bytes(hashlib.sha256(method.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed), digest])


class _Problem:
    """Runs of one or more methods in centred log coordinates, with one shared e.

    theta = (e, then per method: alpha_c, beta_c, a, b), where alpha_c = alpha - a x0 and
    beta_c = beta - b y0 are the log terms at the centre (x0, y0) = mean (log N, log D);
    centring decorrelates alpha from a, which L-BFGS needs.
    """

    def __init__(self, groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
        self.n_methods = len(groups)
        self.sizes = [len(g[0]) for g in groups]
        self.group = np.repeat(np.arange(self.n_methods), self.sizes)
        log_n = np.concatenate([np.log(g[0]) for g in groups])
        log_d = np.concatenate([np.log(g[1]) for g in groups])
        self.t = np.concatenate([np.log(g[2]) for g in groups])
        self.x0 = np.array([np.log(g[0]).mean() for g in groups])
        self.y0 = np.array([np.log(g[1]).mean() for g in groups])
        self.x = log_n - self.x0[self.group]
        self.y = log_d - self.y0[self.group]
        self.uniform = np.full(len(self.t), 1.0 / len(self.t))
        lo, hi = float(self.t.min()), float(self.t.max())
        per_method = [(-40.0, hi + 5.0), (-40.0, hi + 5.0), (0.0, MAX_EXPONENT), (0.0, MAX_EXPONENT)]
        self.bounds = [(lo - 15.0, hi)] + per_method * self.n_methods

    def split(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        return theta[0], theta[1:].reshape(self.n_methods, 4)

    def objective(self, theta: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
        """Weighted mean Huber(log fit - log L) / delta, and its gradient."""
        e, per = self.split(theta)
        if self.n_methods == 1:  # the bootstrap's hot path: no per-run gather
            al, be, a, b = per[0]
        else:
            per_run = per[self.group]
            al, be, a, b = per_run.T
        u1 = al - a * self.x
        u2 = be - b * self.y
        top = np.maximum(np.maximum(u1, u2), e)
        p0, p1, p2 = np.exp(e - top), np.exp(u1 - top), np.exp(u2 - top)
        total = p0 + p1 + p2
        r = top + np.log(total) - self.t
        absr = np.abs(r)
        value = float(weights @ _huber(r, absr))
        g = weights * (r / np.maximum(absr, HUBER_DELTA)) / total  # Huber' / delta, chain rule through LSE
        g1, g2 = g * p1, g * p2
        if self.n_methods == 1:
            grad_per = [g1.sum(), g2.sum(), -(g1 @ self.x), -(g2 @ self.y)]
        else:
            grad_per = np.stack([np.bincount(self.group, weights=c, minlength=self.n_methods)
                                 for c in (g1, g2, -g1 * self.x, -g2 * self.y)], axis=1).ravel()
        return value, np.concatenate([[g @ p0], grad_per])

    def minimise(self, theta0: np.ndarray, weights: np.ndarray):
        return minimize(self.objective, theta0, args=(weights,), jac=True, method="L-BFGS-B",
                        bounds=self.bounds, options=_LBFGS_OPTIONS)

    def to_params(self, theta: np.ndarray) -> np.ndarray:
        """Rows (E, A, B, a, b) per method from theta."""
        e, per = self.split(theta)
        alpha = per[:, 0] + per[:, 2] * self.x0
        beta = per[:, 1] + per[:, 3] * self.y0
        return np.column_stack([np.full(self.n_methods, math.exp(e)), np.exp(alpha), np.exp(beta),
                                per[:, 2], per[:, 3]])

    def residuals(self, theta: np.ndarray) -> np.ndarray:
        """log(observed) - log(fitted) per run."""
        e, per = self.split(theta)
        per_run = per[self.group]
        fit = np.logaddexp(np.logaddexp(e, per_run[:, 0] - per_run[:, 2] * self.x),
                           per_run[:, 1] - per_run[:, 3] * self.y)
        return self.t - fit

    def names_at_bounds(self, theta: np.ndarray, method: int) -> list[str]:
        """Which of e, a, b sit on their bounds (E ~ 0, an exponent at 0 or MAX_EXPONENT)."""
        out = []
        e_lo, e_hi = self.bounds[0]
        if theta[0] <= e_lo + 1e-6 or theta[0] >= e_hi - 1e-6:
            out.append("E")
        for name, col in (("a", 2), ("b", 3)):
            value = theta[1 + 4 * method + col]
            if value <= 1e-6 or value >= MAX_EXPONENT - 1e-6:
                out.append(name)
        return out


def _huber(r: np.ndarray, absr: np.ndarray | None = None) -> np.ndarray:
    """Huber(r) / delta: r^2 / (2 delta) inside delta, |r| - delta / 2 outside."""
    absr = np.abs(r) if absr is None else absr
    inside = np.minimum(absr, HUBER_DELTA)
    return inside * (absr - 0.5 * inside) / HUBER_DELTA


def _profile_starts(prob: _Problem, weights: np.ndarray, grid: StartGrid,
                    fixed_e: float | None = None) -> np.ndarray:
    """Single-method starting points: for each (a, b) on the grid, the (E, A, B) >= 0 that
    minimise the weighted squared relative error (E fixed when fixed_e is given), then the
    grid's local minima of the Huber objective, best first, at most grid.n_polish."""
    exps = np.asarray(grid.exponents, dtype=float)
    level = np.exp(prob.t)
    sw = np.sqrt(weights) / level  # relative errors: (L - fit) / L ~ log L - log fit
    thetas = np.empty((len(exps), len(exps), 5))
    floor = 1e-9 * float(level.mean())
    for i, a in enumerate(exps):
        col_n = np.exp(-a * prob.x)
        for j, b in enumerate(exps):
            col_d = np.exp(-b * prob.y)
            if fixed_e is None:
                coef, _ = nnls(np.column_stack([np.ones_like(col_n), col_n, col_d]) * sw[:, None], level * sw)
            else:
                rest, _ = nnls(np.column_stack([col_n, col_d]) * sw[:, None],
                               (level - math.exp(fixed_e)) * sw)
                coef = np.concatenate([[math.exp(fixed_e)], rest])
            thetas[i, j] = [*np.log(np.maximum(coef, floor)), a, b]
    values = _batch_objective(prob, thetas.reshape(-1, 5), weights).reshape(len(exps), len(exps))
    padded = np.pad(values, 1, constant_values=np.inf)
    neighbours = np.stack([padded[1 + di:1 + di + len(exps), 1 + dj:1 + dj + len(exps)]
                           for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)])
    minima = np.flatnonzero((values <= neighbours.min(axis=0)).ravel())
    order = minima[np.argsort(values.ravel()[minima])][:grid.n_polish]
    starts = thetas.reshape(-1, 5)[order]
    lo, hi = zip(*prob.bounds)
    return np.clip(starts, lo, hi)


def _batch_objective(prob: _Problem, thetas: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Objective (no gradient) of one method for many theta rows at once."""
    e, al, be, a, b = (thetas[:, i:i + 1] for i in range(5))
    fit = np.logaddexp(np.logaddexp(e, al - a * prob.x), be - b * prob.y)
    return _huber(fit - prob.t) @ weights


def _one_blas_thread(fn):
    """Run fn with BLAS on one thread. scipy's L-BFGS-B calls BLAS on its tiny (5-20 parameter)
    matrices; OpenBLAS threads then only contend and slow the bootstrap many times over
    (measured: docs/benchmarks.md, "Fits")."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        limit = threadpool_limits(1, user_api="blas")
        with limit:
            return fn(*args, **kwargs)
    return wrapper


def _check_runs(method: str, n_params, tokens, loss, bootstrap: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if bootstrap < 0:
        raise ConfigError(f"bootstrap must be >= 0, got {bootstrap}")
    arrays = [np.asarray(v, dtype=float).ravel() for v in (n_params, tokens, loss)]
    if len({len(v) for v in arrays}) != 1:
        raise ConfigError(f"method {method}: n_params, tokens and loss differ in length")
    for name, values in zip(("n_params", "tokens", "loss"), arrays):
        if not np.all(np.isfinite(values) & (values > 0)):
            raise ConfigError(f"method {method}: {name} must be positive and finite")
    n, d, loss = arrays
    if len(n) < MIN_RUNS:
        raise TooFewPoints(f"method {method}: {len(n)} runs, the L(N, D) fit needs at least {MIN_RUNS}")
    if len(np.unique(n)) < 3 or len(np.unique(d)) < 3:  # 2 sizes cannot tell A from a
        raise TooFewPoints(f"method {method}: the L(N, D) fit needs at least 3 sizes and 3 token counts "
                          f"(have {len(np.unique(n))} and {len(np.unique(d))})")
    log_n, log_d = np.log(n), np.log(d)
    slope, intercept = np.polyfit(log_n, log_d, 1)
    if np.std(log_d - slope * log_n - intercept) < 1e-3:
        raise TooFewPoints(f"method {method}: tokens are a fixed power of n_params (one budget per "
                          "size); the L(N, D) fit needs several budgets per size")
    return n, d, loss


@_one_blas_thread
def fit_lnd(n_params, tokens, loss, *, method: str = "runs", runs=None,
            bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0, grid: StartGrid = DEFAULT_GRID,
            bootstrap_starts: str = "warm") -> LNDFit:
    """Fit L(N, D) = E + A / N^a + B / D^b to one method's runs (N non-embedding parameters,
    D training tokens, L final loss). bootstrap=0: no intervals. bootstrap_starts="grid" starts
    every bootstrap refit from the whole grid instead of the full fit (slow; for checks)."""
    n, d, loss_ = _check_runs(method, n_params, tokens, loss, bootstrap)
    if runs is not None and len(runs) != len(n):
        raise ConfigError(f"method {method}: {len(runs)} run names for {len(n)} runs")
    prob = _Problem([(n, d, loss_)])
    theta = _best_fit(prob, prob.uniform, grid)
    fit = _make_fit(prob, theta, 0, method, (n, d, loss_), runs, shared=False)
    if bootstrap:
        rng = method_rng(method, seed)
        thetas = []
        for _ in range(bootstrap):
            weights = _resample_weights(rng, len(n))
            start = theta if bootstrap_starts == "warm" else None
            thetas.append(_best_fit(prob, weights, grid, start, converged_only=True))
        _keep_converged(fit, prob, thetas, 0)
    return fit


def _keep_converged(fit: LNDFit, prob: _Problem, thetas: list, index: int) -> None:
    """The bootstrap rows of the refits that converged (None: did not); failures and rows at a
    parameter bound are counted, never silently kept or dropped."""
    kept = [t for t in thetas if t is not None]
    fit.failed_refits = len(thetas) - len(kept)
    fit.samples = np.array([prob.to_params(t)[index] for t in kept]).reshape(len(kept), len(PARAMS))
    counts: dict[str, int] = {}
    for t in kept:
        for name in prob.names_at_bounds(t, index):
            counts[name] = counts.get(name, 0) + 1
    fit.samples_at_bounds = counts


def _resample_weights(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.bincount(rng.integers(0, n, size=n), minlength=n) / n


def _best_fit(prob: _Problem, weights: np.ndarray, grid: StartGrid, start: np.ndarray | None = None,
              converged_only: bool = False) -> np.ndarray | None:
    """theta of the lowest objective over L-BFGS runs from the grid's starts (or from `start`);
    converged_only: among runs that report success only (None when none did)."""
    starts = [start] if start is not None else _profile_starts(prob, weights, grid)
    results = [prob.minimise(s, weights) for s in starts]
    if converged_only:
        results = [res for res in results if converged(prob, res)]
        if not results:
            return None
    return min(results, key=lambda res: res.fun).x


GRADIENT_TOL = 1e-6  # the objective is ~1e-3: a projected gradient this small is a stationary point


def converged(prob: _Problem, res) -> bool:
    """L-BFGS-B's success, or (its ABNORMAL line-search exit, common at the optimum) a projected
    gradient of at most GRADIENT_TOL: a refit that ended anywhere else is not an estimate."""
    if res.success:
        return True
    lo = np.array([b[0] if b[0] is not None else -np.inf for b in prob.bounds])
    hi = np.array([b[1] if b[1] is not None else np.inf for b in prob.bounds])
    grad = np.where((res.x <= lo + 1e-10) & (res.jac > 0), 0.0, res.jac)
    grad = np.where((res.x >= hi - 1e-10) & (grad < 0), 0.0, grad)
    return bool(np.all(np.isfinite(grad)) and np.max(np.abs(grad)) <= GRADIENT_TOL)


def _make_fit(prob: _Problem, theta: np.ndarray, index: int, method: str, data, runs, shared: bool) -> LNDFit:
    params = prob.to_params(theta)[index]
    residuals = prob.residuals(theta)[prob.group == index]
    n, d, loss = data
    weights = (prob.group == index) / max(prob.sizes[index], 1)
    return LNDFit(method, *map(float, params), n_params=n, tokens=d, loss=loss,
                  objective=float(prob.objective(theta, weights)[0]), log_residuals=residuals,
                  runs=None if runs is None else [str(r) for r in runs], shared_E=shared,
                  at_bounds=prob.names_at_bounds(theta, index))


@_one_blas_thread
def fit_lnd_shared_e(groups: dict[str, tuple], *, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                     grid: StartGrid = DEFAULT_GRID) -> dict[str, LNDFit]:
    """One E for all methods, per-method A, B, a, b. groups: {method: (n_params, tokens, loss)
    or (n_params, tokens, loss, runs)}. Bootstrap refits resample each method's runs with that
    method's own stream, so sample i of every method comes from the same refit."""
    if len(groups) < 2:
        raise ConfigError("a shared-E fit needs at least 2 methods")
    methods = list(groups)
    data = [_check_runs(m, *groups[m][:3], bootstrap) for m in methods]
    prob = _Problem(data)
    singles = [_Problem([g]) for g in data]
    separate = [_best_fit(single, single.uniform, grid) for single in singles]
    per = np.concatenate([s[1:] for s in separate])
    candidates = sorted({float(s[0]) for s in separate} | {float(np.mean([s[0] for s in separate]))})
    results = [prob.minimise(np.concatenate([[e], per]), prob.uniform) for e in candidates]
    theta = min(results, key=lambda res: res.fun).x
    fits = {m: _make_fit(prob, theta, i, m, data[i], groups[m][3] if len(groups[m]) > 3 else None, True)
            for i, m in enumerate(methods)}
    if bootstrap:
        rngs = [method_rng(m, seed) for m in methods]
        thetas = []
        total = sum(prob.sizes)
        for _ in range(bootstrap):
            weights = np.concatenate([_resample_weights(r, k) * k / total for r, k in zip(rngs, prob.sizes)])
            res = prob.minimise(theta, weights)
            thetas.append(res.x if converged(prob, res) else None)
        for i, m in enumerate(methods):
            _keep_converged(fits[m], prob, thetas, i)
    return fits


def budget_grid(sizes, tokens_per_param) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) of every size trained at every tokens-per-parameter budget, size-major."""
    sizes = np.asarray(sizes, dtype=float)
    tpp = np.asarray(tokens_per_param, dtype=float)
    return np.repeat(sizes, len(tpp)), np.repeat(sizes, len(tpp)) * np.tile(tpp, len(sizes))


def simulate_losses(params, n_params, tokens, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Losses from the law `params` = (E, A, B, a, b) with multiplicative log-normal noise of
    relative size `noise` (0.004: 0.4%), for tests and benchmarks of the fit."""
    clean = law(params, n_params, tokens)
    return clean * np.exp(noise * rng.standard_normal(clean.shape))
