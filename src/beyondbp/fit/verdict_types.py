"""The verdict as typed records (`verdict.judge` makes them): the letter's deciding quantities
(`Decision`), the trend past the horizon (`Trend`), the pair's shared-floor check (`FloorVerdict`),
the per-method-floor sensitivity check (`PerMethodFloors`), the crossover, the measured gap, the
compute multiplier's entries and trend, and the `Verdict` that holds them.

Compute is in the accounting's unit (PF-days, or seconds under the wall-clock accounting); the
fields say `compute`, `c_min`, `horizon`. `to_dict()` gives the verdict as results.json and
`beyondbp fit` write it: the keys and their order of the format's first version, whose compute
keys end in `_pf_days` under every accounting.
"""
from __future__ import annotations

from dataclasses import dataclass, field

LETTERS = ("A", "B", "C", "D")

# Δ-quantity name -> its symbol in the reasons
SYMBOL = {"delta_alpha": "Δalpha", "delta_E": "ΔE", "delta_log_loss_at_horizon": "Δ ln L at the horizon"}


@dataclass
class Decision:
    """A letter from Δ ln L at the smallest compute (`gap`) and one quantity at scale (`scale`,
    named `scale_name`: Δ ln L at the horizon, Δalpha or ΔE), with their intervals."""
    scenario: str | None
    possible_letters: list[str]
    point_scenario: str
    bootstrap_share: float | None
    letter_shares: dict[str, float]
    scale_name: str
    scale: float
    scale_ci: list[float]
    gap: float
    gap_ci: list[float]
    nan_samples_dropped: int
    reason: str | None

    def to_dict(self) -> dict:
        """The decision as the verdict writes it, without `point_scenario`."""
        return {"scenario": self.scenario, "possible_letters": self.possible_letters,
                "bootstrap_share": self.bootstrap_share, "letter_shares": self.letter_shares,
                self.scale_name: self.scale, f"{self.scale_name}_ci": self.scale_ci,
                "delta_log_loss_at_c_min": self.gap, "delta_log_loss_at_c_min_ci": self.gap_ci,
                "nan_samples_dropped": self.nan_samples_dropped, "reason": self.reason}


@dataclass
class Trend:
    """Past the horizon, labelled as extrapolation: Δalpha and the letter pure power laws give as
    C -> infinity (ΔE decides instead where a method has a floor; then delta_E is set)."""
    delta_alpha: float
    delta_alpha_ci: list[float]
    letter_at_infinity: str | None
    possible_letters_at_infinity: list[str]
    bootstrap_share_at_infinity: float | None
    delta_E: float | None = None
    delta_E_ci: list[float] | None = None
    extrapolation: bool = True

    def to_dict(self) -> dict:
        out = {"delta_alpha": self.delta_alpha, "delta_alpha_ci": self.delta_alpha_ci,
               "letter_at_infinity": self.letter_at_infinity,
               "possible_letters_at_infinity": self.possible_letters_at_infinity,
               "bootstrap_share_at_infinity": self.bootstrap_share_at_infinity, "extrapolation": self.extrapolation}
        if self.delta_E is not None:
            out.update(delta_E=self.delta_E, delta_E_ci=self.delta_E_ci)
        return out


@dataclass
class FloorVerdict:
    """The letter under the pair's fit with one shared floor E, through the same horizon."""
    decision: Decision
    delta_alpha: float
    delta_alpha_ci: list[float]
    E: float
    E_ci: list[float] | None
    E_upper_bound: float
    degenerate: bool
    E_ci_open_ends: list[str]
    E_samples_at_bound: float | None
    methods: list[str]

    @property
    def scenario(self) -> str | None:
        return self.decision.scenario

    @property
    def possible_letters(self) -> list[str]:
        return self.decision.possible_letters

    @property
    def letter_shares(self) -> dict[str, float]:
        return self.decision.letter_shares

    def to_dict(self) -> dict:
        return {**self.decision.to_dict(), "delta_alpha": self.delta_alpha, "delta_alpha_ci": self.delta_alpha_ci,
                "E": self.E, "E_ci": self.E_ci, "E_upper_bound": self.E_upper_bound, "degenerate": self.degenerate,
                "E_ci_open_ends": self.E_ci_open_ends, "E_samples_at_bound": self.E_samples_at_bound,
                "methods": self.methods}


@dataclass
class PerMethodFloors:
    """Sensitivity: each method with a floor of its own; unfitted (`possible_letters` None) with
    the reason where a method has too few points."""
    scenario: str | None
    reason: str | None
    possible_letters: list[str] | None = None
    letter_shares: dict[str, float] | None = None
    bootstrap_share: float | None = None
    E: dict[str, float | None] | None = None

    def to_dict(self) -> dict:
        if self.possible_letters is None:
            return {"scenario": self.scenario, "reason": self.reason}
        return {"scenario": self.scenario, "possible_letters": self.possible_letters,
                "letter_shares": self.letter_shares, "bootstrap_share": self.bootstrap_share, "E": self.E,
                "reason": self.reason}


@dataclass
class Crossover:
    """Where the two fitted laws cross, with its interval."""
    value: float
    ci: list[float]
    inside_measured_range: bool
    times_largest_compute: float

    def to_dict(self) -> dict:
        return {"value": self.value, "ci": self.ci, "inside_measured_range": self.inside_measured_range,
                "times_largest_compute": self.times_largest_compute}


@dataclass
class MeasuredGap:
    """The alternative's frontier points against the reference's frontier, where both were
    measured: the compute range compared and the smallest and largest relative gap."""
    compute: list[float]
    min: float
    max: float
    n_points: int

    def to_dict(self) -> dict:
        return {"compute_pf_days": self.compute, "min": self.min, "max": self.max, "n_points": self.n_points}


@dataclass
class MultiplierEntry:
    """How much compute the alternative needs for BP's compute at one loss (`fit.multiplier`)."""
    loss: float
    value: float
    ci: list[float] | None
    extrapolated_decades: dict[str, float]
    ci_reason: str | None
    ci_includes_model_spread: bool

    def to_dict(self) -> dict:
        return {"loss": self.loss, "value": self.value, "ci": self.ci,
                "extrapolated_decades": self.extrapolated_decades, "ci_reason": self.ci_reason,
                "ci_includes_model_spread": self.ci_includes_model_spread}


@dataclass
class MultiplierTrend:
    """The multiplier at the lowest loss over that at the highest, and whether it grows with scale."""
    value: float
    ci: list[float] | None
    direction: str | None

    def to_dict(self) -> dict:
        return {"value": self.value, "ci": self.ci, "direction": self.direction}


def _dict(part):
    return part.to_dict() if part is not None else None


@dataclass
class Verdict:
    """One alternative against the reference (`verdict` module docstring). Without a letter
    (`letter_shares` None), `reason` says why. `c_min`, `c_max` (None: not given) and `horizon`
    are in the accounting's compute unit; `measured`: False for a verdict on fitted laws only
    (L*(C)), which has no measured gap."""
    scenario: str | None = None
    possible_letters: list[str] = field(default_factory=lambda: list(LETTERS))
    bootstrap_share: float | None = None
    letter_shares: dict[str, float] | None = None
    pure_scenario: str | None = None
    horizon: float | None = None
    horizon_factor: float | None = None
    horizon_reason: str | None = None
    delta_log_loss_at_horizon: float | None = None
    delta_log_loss_at_horizon_ci: list[float] | None = None
    trend: Trend | None = None
    delta_alpha: float | None = None
    delta_alpha_ci: list[float] | None = None
    delta_log_loss_at_c_min: float | None = None
    delta_log_loss_at_c_min_ci: list[float] | None = None
    c_min_extrapolated_decades: dict[str, float] | None = None
    crossover: Crossover | None = None
    compute_multiplier: list[MultiplierEntry] | None = None
    compute_multiplier_trend: MultiplierTrend | None = None
    compute_multiplier_losses_from: str | None = None
    floor: FloorVerdict | None = None
    per_method_floors: PerMethodFloors | None = None
    c_min: float | None = None
    c_max: float | None = None
    measured_gap: MeasuredGap | None = None
    nan_samples_dropped: int | None = None
    reason: str | None = None
    measured: bool = True

    def to_dict(self) -> dict:
        """The verdict as results.json writes it (keys and order of the format's first version)."""
        multiplier = self.compute_multiplier
        out = {"scenario": self.scenario, "possible_letters": self.possible_letters,
               "bootstrap_share": self.bootstrap_share, "letter_shares": self.letter_shares,
               "pure_scenario": self.pure_scenario, "horizon_pf_days": self.horizon,
               "horizon_factor": self.horizon_factor, "horizon_reason": self.horizon_reason,
               "delta_log_loss_at_horizon": self.delta_log_loss_at_horizon,
               "delta_log_loss_at_horizon_ci": self.delta_log_loss_at_horizon_ci, "trend": _dict(self.trend),
               "delta_alpha": self.delta_alpha, "delta_alpha_ci": self.delta_alpha_ci,
               "delta_log_loss_at_c_min": self.delta_log_loss_at_c_min,
               "delta_log_loss_at_c_min_ci": self.delta_log_loss_at_c_min_ci,
               "c_min_extrapolated_decades": self.c_min_extrapolated_decades, "crossover": _dict(self.crossover),
               "compute_multiplier": None if multiplier is None else [e.to_dict() for e in multiplier],
               "compute_multiplier_trend": _dict(self.compute_multiplier_trend),
               "compute_multiplier_losses_from": self.compute_multiplier_losses_from,
               "floor": _dict(self.floor), "per_method_floors": _dict(self.per_method_floors)}
        if self.c_min is not None:
            out.update(c_min_pf_days=self.c_min, c_max_pf_days=self.c_max)
        if self.measured:
            out["measured_gap"] = _dict(self.measured_gap)
        if self.nan_samples_dropped is not None:
            out["nan_samples_dropped"] = self.nan_samples_dropped
        out["reason"] = self.reason
        return out
