"""Simulated studies with known answers, to calibrate the verdict (benchmarks/verdict_calibration.py).

Every scenario gives each method a true compute-efficient frontier; a replicate draws a study's
points from those frontiers with noise, at a design like the presets' (4-5 model sizes over
1-1.5 decades of compute, 0.3-0.5% noise per point, which is what our runs show). The true
letters follow from the true laws, never from a label (`true_letter_within`,
`true_letter_at_infinity`). Kinds of truth:

- `pure`: L(C) = L_min (C / c_min)^alpha for each method;
- `floor`: L(C) = E + R_min (C / c_min)^alpha_r with one floor E for every method;
- `floors`: a floor per method, the alternative's lower: worse at the smallest compute, it
  crosses BP's law 4 or 8 decades later (D within the horizon, B at infinity) or 1.5 decades
  later (B within the horizon, while its apparent slope over the data is close to BP's);
- `curved`: BP's law bends (`BentLaw`: the local slope -0.05 below 5e-9 PF-days, -0.11 above,
  as MEASUREMENTS.md found for BP at 20 tokens per parameter);
- `curves`: learning curves like the paper's Figure 3: each model size is trained past its
  compute-optimal budget, and its curve touches the frontier near its own compute and lies above
  it elsewhere (a Chinchilla-like L(N, D) = A N^-a + B D^-b with a = b, whose compute-optimal
  frontier is exactly L_min (C / c_min)^alpha with alpha = -a / 2), plus an initial plateau and
  a decaying schedule's mid-run excess (per method: `Scenario.schedule_excess`). Every
  evaluation of every run is a point, with a per-run offset (the seed) and a smaller
  per-evaluation noise.

Besides the laws a scenario may set each method's noise (`Scenario.noise`, replacing the
design's) and an under-tuned alternative (`Scenario.tuning_excess`: its points lie above its law
by a share that moves linearly from the smallest size to the largest, as a learning rate set
for one end of the range would); the truth stays the laws, what a well-tuned run would reach.
Such a study also swept rates (`sweep_trials`): 3 per size a factor 2.5 apart, as the presets,
each rate's ln loss above the size's optimum by LR_CURVATURE x (ln of its distance)^2, the sweep
centred where the excess is 0 and, where it is not, the optimum placed beyond the sweep's end so
that the best rate lies that share above the law; or, with `Scenario.tuning_inside`, the optimum
between the middle rate and the high one, so that the middle rate, the best, lies that share
above the law (at most LR_CURVATURE x (ln 2.5 / 2)^2 = 1.3%): under-tuned, but at no edge.

Rows are dicts {method, compute_pf_days, loss, run, size}, the input of `beyondbp fit`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .defaults import HORIZON_FACTOR, RUN_FRACTION

REFERENCE_LOSS = 2.5  # BP's loss at the smallest compute, as in the quick and cpu presets
C_MIN = 6.3e-10  # PF-days: the smallest run of the quick and cpu presets
LETTERS = {(False, False): "A", (True, False): "B", (False, True): "C", (True, True): "D"}

# learning curves
OVERTRAIN = 1.5  # each run's budget: 1.5x the compute-optimal tokens of its size
EVALS = 24  # log-spaced evaluations per run, as train.n_evals
FIRST_EVAL = 1 / 200  # of the run's tokens
PLATEAU = 0.8  # nats above the law at the start, decaying over the first 5% of the run
SCHEDULE_EXCESS = 0.03  # mid-run points lie up to 3% above a run of that length (decaying LR)
EVAL_NOISE_SHARE = 0.25  # per-evaluation noise, as a share of the per-run noise

# learning-rate sweeps
SWEEP_STEP = math.log(2.5)  # the presets' rates are a factor 2.5 apart
LR_CURVATURE = 0.06  # ln loss per (ln lr off the best)^2: BP d16 a factor 2 off its best lost 1-3% (README)


@dataclass(frozen=True)
class Design:
    sizes: int = 4
    decades: float = 1.0
    noise: float = 0.004
    alt_noise: float | None = None  # the alternative's noise per point, where it differs from BP's

    @property
    def compute(self) -> np.ndarray:
        return C_MIN * np.logspace(0.0, self.decades, self.sizes)

    def noise_of(self, method: str) -> float:
        return self.noise if method == "bp" or self.alt_noise is None else self.alt_noise


@dataclass(frozen=True)
class Law:
    """L(C) = E + R_min (C / C_MIN)^alpha."""
    alpha: float
    reducible_at_min: float
    floor: float = 0.0

    def loss(self, compute) -> np.ndarray:
        return self.floor + self.reducible_at_min * (np.asarray(compute) / C_MIN) ** self.alpha

    def log_compute(self, loss: float) -> float:
        """ln C where the law reaches `loss` (nan where it never does)."""
        reducible = loss - self.floor
        if reducible <= 0:
            return math.nan
        return math.log(C_MIN) + math.log(reducible / self.reducible_at_min) / self.alpha

    def tail(self) -> tuple[float, float, float]:
        """As C -> inf, L ~ E + exp(c) (C / C_MIN)^alpha: (E, alpha, c)."""
        return self.floor, self.alpha, math.log(self.reducible_at_min)


@dataclass(frozen=True)
class BentLaw:
    """A pure law whose local log-log slope moves from `alpha_low` to `alpha_high` around
    `bend_pf_days` (a logistic step `width` wide in ln C), with loss `loss_at_min` at C_MIN."""
    alpha_low: float
    alpha_high: float
    bend_pf_days: float
    loss_at_min: float
    width: float = 0.5

    def _log_loss(self, u) -> np.ndarray:  # u = ln(C / C_MIN)
        ub = math.log(self.bend_pf_days / C_MIN)
        step = self.width * (np.logaddexp(0.0, (np.asarray(u) - ub) / self.width)
                             - np.logaddexp(0.0, -ub / self.width))
        return math.log(self.loss_at_min) + self.alpha_low * np.asarray(u) + (self.alpha_high - self.alpha_low) * step

    def loss(self, compute) -> np.ndarray:
        return np.exp(self._log_loss(np.log(np.asarray(compute) / C_MIN)))

    def log_compute(self, loss: float) -> float:
        """ln C where the law reaches `loss`, by bisection (it falls monotonically)."""
        lo, hi = -200.0, 2000.0
        if not float(self._log_loss(hi)) < math.log(loss) < float(self._log_loss(lo)):
            return math.nan
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if float(self._log_loss(mid)) > math.log(loss) else (lo, mid)
        return math.log(C_MIN) + 0.5 * (lo + hi)

    def tail(self) -> tuple[float, float, float]:
        ub = math.log(self.bend_pf_days / C_MIN)
        c = (math.log(self.loss_at_min) - (self.alpha_high - self.alpha_low) * ub
             - (self.alpha_high - self.alpha_low) * self.width * math.log1p(math.exp(-ub / self.width)))
        return 0.0, self.alpha_high, c


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # pure, floor, floors, curved or curves (module docstring)
    bp: Law | BentLaw
    alt: Law | BentLaw
    noise: tuple[float, float] | None = None  # (bp, alt) per point, replacing the design's
    schedule_excess: tuple[float, float] = (SCHEDULE_EXCESS, SCHEDULE_EXCESS)  # (bp, alt), curves only
    tuning_excess: tuple[float, float] = (0.0, 0.0)  # the alternative's points above its law: smallest, largest size
    tuning_inside: bool = False  # the under-tuned rate is inside its sweep (no edge) rather than at its end


def _pure(alpha: float, ratio: float) -> Law:
    return Law(alpha, ratio * REFERENCE_LOSS)


BP_PURE = _pure(-0.08, 1.0)
BP_FLOOR = Law(-0.2, 1.0, 1.5)  # apparent slope at the smallest compute: -0.2 x 1.0 / 2.5 = -0.08
BP_BENT = BentLaw(-0.05, -0.11, 5e-9, REFERENCE_LOSS)  # MEASUREMENTS.md: BP at 20 tokens per parameter


def crossing_floor_law(ratio: float, alpha: float, decades: float, bp: Law = BP_FLOOR) -> Law:
    """A law with its own floor, `ratio` times BP's loss at C_MIN, reducible exponent `alpha`,
    that meets `bp` at 10^decades C_MIN (so a lower floor than BP's where ratio > 1)."""
    meet = float(bp.loss(C_MIN * 10.0 ** decades))
    start = ratio * float(bp.loss(C_MIN))
    reducible = (start - meet) / (1.0 - 10.0 ** (decades * alpha))
    return Law(alpha, reducible, start - reducible)


D_SUBTLE = _pure(-0.07, 1.05)
PURE = {  # Δalpha and the gap at the smallest compute
    "A clear": _pure(-0.136, 0.83),
    "A subtle": _pure(-0.09, 0.95),
    "B crossing inside": _pure(-0.11, 1.05),
    "B crossing beyond": _pure(-0.10, 1.08),
    "C crossing inside": _pure(-0.05, 0.95),
    "D clear": _pure(-0.024, 1.17),  # 17% above BP at the smallest compute, 33% a decade later
    "D subtle": D_SUBTLE,
    "equal exponents, 3% worse": _pure(-0.08, 1.03),
}
FLOOR = {
    "floor, same exponent": Law(-0.2, 1.15, 1.5),  # reducible loss 15% higher: worse everywhere
    "floor, alt flatter": Law(-0.12, 1.15, 1.5),
    "floor, alt steeper": Law(-0.3, 1.1, 1.5),
}
FLOORS = {  # 5% worse at the smallest compute, a lower floor, BP's law met 1.5, 4 or 8 decades on
    "floors, crossing at 1.5 decades": crossing_floor_law(1.05, -0.15, 1.5),  # inside the horizon: B
    "floors, crossing at 4 decades": crossing_floor_law(1.05, -0.15, 4.0),
    "floors, crossing at 8 decades": crossing_floor_law(1.05, -0.15, 8.0),
}
CURVED = {  # BP bends from -0.05 to -0.11 at 5e-9 PF-days (0.9 decades past C_MIN)
    "curved BP, straight alt": _pure(-0.065, 1.05),
    "curved, both 10% apart": replace(BP_BENT, loss_at_min=1.10 * REFERENCE_LOSS),
}
CURVES = {f"curves {letter}": PURE[name] for letter, name in
          (("A", "A clear"), ("B", "B crossing inside"), ("C", "C crossing inside"), ("D", "D clear"))}


def scenarios() -> list[Scenario]:
    out = [Scenario(n, "pure", BP_PURE, alt) for n, alt in PURE.items()]
    out += [Scenario(n, "floor", BP_FLOOR, alt) for n, alt in FLOOR.items()]
    out += [Scenario(n, "curves", BP_PURE, alt) for n, alt in CURVES.items()]
    out += [Scenario(n, "floors", BP_FLOOR, alt) for n, alt in FLOORS.items()]
    out += [Scenario("equal exponents, 3% worse, unequal noise", "pure", BP_PURE, PURE["equal exponents, 3% worse"],
                     noise=(0.003, 0.012))]
    out += [Scenario(n, "curved", BP_BENT, alt) for n, alt in CURVED.items()]
    out += [Scenario("mid-run excess 8% vs 3%, D subtle", "curves", BP_PURE, D_SUBTLE, schedule_excess=(0.03, 0.08)),
            Scenario("under-tuned alt, excess shrinking 3% to 0", "pure", BP_PURE, D_SUBTLE, tuning_excess=(0.03, 0.0)),
            Scenario("under-tuned alt, excess growing 0 to 3%", "pure", BP_PURE, D_SUBTLE, tuning_excess=(0.0, 0.03)),
            Scenario("under-tuned alt inside its sweep, excess 1% shrinking to 0", "pure", BP_PURE, D_SUBTLE,
                     tuning_excess=(0.01, 0.0), tuning_inside=True)]
    return out


def scenario_named(name: str) -> Scenario:
    for scenario in scenarios():
        if scenario.name == name:
            return scenario
    raise KeyError(name)


def final_points(method: str, law, design: Design, rng: np.random.Generator,
                 excess: tuple[float, float] = (0.0, 0.0)) -> list[dict]:
    """One point per model size, on the law times log-normal noise (and times 1 + the tuning
    excess, moving linearly over the sizes from excess[0] to excess[1])."""
    compute = design.compute
    shares = np.linspace(excess[0], excess[1], len(compute))
    loss = law.loss(compute) * (1 + shares) * np.exp(design.noise_of(method) * rng.standard_normal(len(compute)))
    return [{"method": method, "compute_pf_days": float(c), "loss": float(l), "run": f"{method}_s{i}",
             "size": f"s{i}"} for i, (c, l) in enumerate(zip(compute, loss))]


def sweep_trials(method: str, design: Design, rng: np.random.Generator,
                 excess: tuple[float, float] = (0.0, 0.0), inside: bool = False) -> list[dict]:
    """Trials (`fit.tuning`'s dicts) of a 3-rate sweep per size (module docstring): the best rate's
    ln loss lies ln(1 + excess) above the optimum, which sits beyond the sweep's high end where
    the excess is above 0 (inside: between the middle and the high rate, the middle one best).
    Losses are relative (1 at a size's optimum) with the design's noise."""
    shares = np.linspace(excess[0], excess[1], design.sizes)
    noise = design.noise_of(method)
    out = []
    for i, share in enumerate(shares):
        off = math.sqrt(math.log1p(share) / LR_CURVATURE)
        if inside and off >= SWEEP_STEP / 2:
            raise ValueError(f"a {share:.1%} excess cannot lie inside a sweep of step {math.exp(SWEEP_STEP):g}")
        best_at = off if inside else SWEEP_STEP + off if share > 0 else 0.0
        for k in (-1, 0, 1):
            log_loss = LR_CURVATURE * (best_at - k * SWEEP_STEP) ** 2 + noise * rng.standard_normal()
            out.append({"method": method, "size": f"s{i}", "budget": "", "lr": math.exp(k * SWEEP_STEP), "seed": 0,
                        "loss": math.exp(log_loss), "select_loss": math.exp(log_loss)})
    return out


def _eval_tokens(budget: float) -> np.ndarray:
    return budget * np.geomspace(FIRST_EVAL, 1.0, EVALS)


def learning_curves(method: str, law: Law, design: Design, rng: np.random.Generator,
                    schedule_excess: float = SCHEDULE_EXCESS) -> list[dict]:
    """Every evaluation of one run per size (module docstring). In units where C = N D and the
    smallest size is compute-optimal at C = 1: A = B, N_opt(C) = sqrt(C), L*(C) = 2 A C^(-a/2)."""
    a = -2.0 * law.alpha
    big_a = law.reducible_at_min / 2.0
    noise = design.noise_of(method)
    rows = []
    for i, c_touch in enumerate(design.compute / C_MIN):
        n = math.sqrt(c_touch)
        budget = OVERTRAIN * c_touch / n
        tokens = _eval_tokens(budget)
        loss = big_a * n ** -a + big_a * tokens ** -a
        loss = loss * (1 + schedule_excess * (1 - tokens / budget)) + PLATEAU * np.exp(-tokens / (0.05 * budget))
        run_offset = noise * rng.standard_normal()
        loss = loss * np.exp(run_offset + EVAL_NOISE_SHARE * noise * rng.standard_normal(EVALS))
        rows += [{"method": method, "compute_pf_days": float(C_MIN * n * t), "loss": float(l),
                  "run": f"{method}_s{i}", "size": f"s{i}"} for t, l in zip(tokens, loss)]
    return rows


def scenario_design(scenario: Scenario, design: Design) -> Design:
    """The design with the scenario's noise per method, where it sets one."""
    if scenario.noise is None:
        return design
    return replace(design, noise=scenario.noise[0], alt_noise=scenario.noise[1])


def study_rows(scenario: Scenario, design: Design, rng: np.random.Generator) -> list[dict]:
    """One replicate: the points of bp and of the alternative `alt`."""
    design = scenario_design(scenario, design)
    if scenario.kind == "curves":
        return (learning_curves("bp", scenario.bp, design, rng, scenario.schedule_excess[0])
                + learning_curves("alt", scenario.alt, design, rng, scenario.schedule_excess[1]))
    return final_points("bp", scenario.bp, design, rng) + final_points("alt", scenario.alt, design, rng,
                                                                       scenario.tuning_excess)


def study_sweeps(scenario: Scenario, design: Design, rng: np.random.Generator) -> list[dict]:
    """The rate sweeps behind one replicate's points (`sweep_trials`): BP's tuned, the alternative's
    with the scenario's tuning excess."""
    design = scenario_design(scenario, design)
    return sweep_trials("bp", design, rng) + sweep_trials("alt", design, rng, scenario.tuning_excess,
                                                          scenario.tuning_inside)


def study_range(scenario: Scenario, design: Design, run_fraction: float = RUN_FRACTION) -> tuple[float, float]:
    """The smallest and largest compute of the points a study's verdict reads (`beyondbp fit`
    keeps a learning curve's points from `run_fraction` of its run's compute on)."""
    compute = design.compute
    if scenario.kind != "curves":
        return float(compute[0]), float(compute[-1])
    shares = _eval_tokens(1.0)
    first = shares[shares >= run_fraction * shares[-1]][0]
    return float(OVERTRAIN * first * compute[0]), float(OVERTRAIN * compute[-1])


def true_log_gap(scenario: Scenario, compute: float) -> float:
    """Δ ln L of the true laws at `compute` (alternative minus BP; < 0: the alternative is better)."""
    return float(np.log(scenario.alt.loss(compute)) - np.log(scenario.bp.loss(compute)))


def horizon(scenario: Scenario, design: Design, horizon_factor: float = HORIZON_FACTOR) -> float:
    """The compute through which a letter is claimed: horizon_factor x the study's largest."""
    return horizon_factor * study_range(scenario, design)[1]


def true_letter_within(scenario: Scenario, design: Design, horizon_factor: float = HORIZON_FACTOR) -> str:
    """The letter of the true laws through the horizon: from the signs of Δ ln L at the
    study's smallest compute and at the horizon (A: <0, <0; B: >0, <0; C: <0, >0; D: >0, >0)."""
    c_min = study_range(scenario, design)[0]
    small = true_log_gap(scenario, c_min) > 0
    return LETTERS[small, true_log_gap(scenario, horizon(scenario, design, horizon_factor)) > 0]


def true_letter_at_infinity(scenario: Scenario, design: Design | None = None) -> str:
    """The letter of the true laws with Δ ln L at the smallest compute (the design's, else C_MIN)
    and its sign as C -> inf, read from the laws' tails: the lower floor wins, then the steeper
    exponent, then the smaller coefficient."""
    c_min = C_MIN if design is None else study_range(scenario, design)[0]
    alt, bp = scenario.alt.tail(), scenario.bp.tail()
    scale = next(((a > b) for a, b in zip(alt, bp) if not math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)), None)
    if scale is None:
        raise ValueError(f"scenario {scenario.name!r}: the two laws have the same tail")
    return LETTERS[true_log_gap(scenario, c_min) > 0, scale]


def true_delta_alpha(scenario: Scenario) -> float:
    """The alternative's exponent minus BP's, where both true laws are pure power laws (nan otherwise)."""
    laws = (scenario.alt, scenario.bp)
    if not all(isinstance(law, Law) and law.floor == 0 for law in laws):
        return math.nan
    return scenario.alt.alpha - scenario.bp.alpha


def true_log_multiplier(scenario: Scenario, loss: float) -> float:
    """ln(C_alt(L) / C_bp(L)) of the true laws (nan where one never reaches L)."""
    return scenario.alt.log_compute(loss) - scenario.bp.log_compute(loss)
