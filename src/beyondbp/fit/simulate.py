"""Simulated studies with known answers, to calibrate the verdict (benchmarks/verdict_calibration.py).

Every scenario gives each method a true compute-efficient frontier and a letter that follows
from it; a replicate draws a study's points from those frontiers with noise, at a design like
the presets' (4-5 model sizes over 1-1.5 decades of compute, 0.3-0.5% noise per point, which is
what our runs show). Three kinds of truth:

- `pure`: L(C) = L_min (C / c_min)^alpha for each method;
- `floor`: L(C) = E + R_min (C / c_min)^alpha_r with one floor E for every method;
- `curves`: learning curves like the paper's Figure 3: each model size is trained past its
  compute-optimal budget, and its curve touches the frontier near its own compute and lies above
  it elsewhere (a Chinchilla-like L(N, D) = A N^-a + B D^-b with a = b, whose compute-optimal
  frontier is exactly L_min (C / c_min)^alpha with alpha = -a / 2), plus an initial plateau and
  a decaying schedule's mid-run excess. Every evaluation of every run is a point, with a per-run
  offset (the seed) and a smaller per-evaluation noise.

Rows are dicts {method, compute_pf_days, loss, run, size}, the input of `beyondbp fit`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

REFERENCE_LOSS = 2.5  # BP's loss at the smallest compute, as in the quick and cpu presets
C_MIN = 6.3e-10  # PF-days: the smallest run of the quick and cpu presets


@dataclass(frozen=True)
class Design:
    sizes: int = 4
    decades: float = 1.0
    noise: float = 0.004

    @property
    def compute(self) -> np.ndarray:
        return C_MIN * np.logspace(0.0, self.decades, self.sizes)


@dataclass(frozen=True)
class Law:
    """L(C) = E + R_min (C / C_MIN)^alpha."""
    alpha: float
    reducible_at_min: float
    floor: float = 0.0

    def loss(self, compute) -> np.ndarray:
        return self.floor + self.reducible_at_min * (np.asarray(compute) / C_MIN) ** self.alpha


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # pure, floor or curves
    truth: str  # the true letter of `alt` against bp
    bp: Law
    alt: Law


def _pure(alpha: float, ratio: float) -> Law:
    return Law(alpha, ratio * REFERENCE_LOSS)


BP_PURE = _pure(-0.08, 1.0)
BP_FLOOR = Law(-0.2, 1.0, 1.5)  # apparent slope at the smallest compute: -0.2 x 1.0 / 2.5 = -0.08
PURE = {  # name: (truth, alternative); Δalpha and the gap at the smallest compute
    "A clear": ("A", _pure(-0.136, 0.83)),
    "A subtle": ("A", _pure(-0.09, 0.95)),
    "B crossing inside": ("B", _pure(-0.11, 1.05)),
    "B crossing beyond": ("B", _pure(-0.10, 1.08)),
    "C crossing inside": ("C", _pure(-0.05, 0.95)),
    "D clear": ("D", _pure(-0.024, 1.17)),  # 17% above BP at the smallest compute, 33% a decade later
    "D subtle": ("D", _pure(-0.07, 1.05)),
}
FLOOR = {
    "floor, same exponent": ("D", Law(-0.2, 1.15, 1.5)),  # reducible loss 15% higher: worse everywhere
    "floor, alt flatter": ("D", Law(-0.12, 1.15, 1.5)),
    "floor, alt steeper": ("B", Law(-0.3, 1.1, 1.5)),
}
CURVES = {f"curves {letter}": (letter, alt) for letter, alt in
          (("A", PURE["A clear"][1]), ("B", PURE["B crossing inside"][1]),
           ("C", PURE["C crossing inside"][1]), ("D", PURE["D clear"][1]))}


def scenarios() -> list[Scenario]:
    out = [Scenario(n, "pure", t, BP_PURE, alt) for n, (t, alt) in PURE.items()]
    out += [Scenario(n, "floor", t, BP_FLOOR, alt) for n, (t, alt) in FLOOR.items()]
    out += [Scenario(n, "curves", t, BP_PURE, alt) for n, (t, alt) in CURVES.items()]
    return out


def final_points(method: str, law: Law, design: Design, rng: np.random.Generator) -> list[dict]:
    """One point per model size, on the law times log-normal noise."""
    compute = design.compute
    loss = law.loss(compute) * np.exp(design.noise * rng.standard_normal(len(compute)))
    return [{"method": method, "compute_pf_days": float(c), "loss": float(l), "run": f"{method}_s{i}",
             "size": f"s{i}"} for i, (c, l) in enumerate(zip(compute, loss))]


# learning curves
OVERTRAIN = 1.5  # each run's budget: 1.5x the compute-optimal tokens of its size
EVALS = 24  # log-spaced evaluations per run, as train.n_evals
FIRST_EVAL = 1 / 200  # of the run's tokens
PLATEAU = 0.8  # nats above the law at the start, decaying over the first 5% of the run
SCHEDULE_EXCESS = 0.03  # mid-run points lie up to 3% above a run of that length (decaying LR)
EVAL_NOISE_SHARE = 0.25  # per-evaluation noise, as a share of the per-run noise


def learning_curves(method: str, law: Law, design: Design, rng: np.random.Generator) -> list[dict]:
    """Every evaluation of one run per size (module docstring). In units where C = N D and the
    smallest size is compute-optimal at C = 1: A = B, N_opt(C) = sqrt(C), L*(C) = 2 A C^(-a/2)."""
    a = -2.0 * law.alpha
    big_a = law.reducible_at_min / 2.0
    rows = []
    for i, c_touch in enumerate(design.compute / C_MIN):
        n = math.sqrt(c_touch)
        budget = OVERTRAIN * c_touch / n
        tokens = budget * np.geomspace(FIRST_EVAL, 1.0, EVALS)
        loss = big_a * n ** -a + big_a * tokens ** -a
        loss = loss * (1 + SCHEDULE_EXCESS * (1 - tokens / budget)) + PLATEAU * np.exp(-tokens / (0.05 * budget))
        run_offset = design.noise * rng.standard_normal()
        loss = loss * np.exp(run_offset + EVAL_NOISE_SHARE * design.noise * rng.standard_normal(EVALS))
        rows += [{"method": method, "compute_pf_days": float(C_MIN * n * t), "loss": float(l),
                  "run": f"{method}_s{i}", "size": f"s{i}"} for t, l in zip(tokens, loss)]
    return rows


def study_rows(scenario: Scenario, design: Design, rng: np.random.Generator) -> list[dict]:
    """One replicate: the points of bp and of the alternative `alt`."""
    draw = learning_curves if scenario.kind == "curves" else final_points
    return draw("bp", scenario.bp, design, rng) + draw("alt", scenario.alt, design, rng)


def true_delta_alpha(scenario: Scenario) -> float:
    return scenario.alt.alpha - scenario.bp.alpha


def true_log_multiplier(scenario: Scenario, loss: float) -> float:
    """ln(C_alt(L) / C_bp(L)) of the true laws (nan where one never reaches L)."""
    def log_c(law: Law) -> float:
        reducible = loss - law.floor
        if reducible <= 0:
            return math.nan
        return math.log(C_MIN) + math.log(reducible / law.reducible_at_min) / law.alpha
    return log_c(scenario.alt) - log_c(scenario.bp)
