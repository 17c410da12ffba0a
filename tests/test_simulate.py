"""The calibration's simulated studies (beyondbp.fit.simulate): true letters within the horizon
and at infinity computed from the true laws, the bending law, per-method noise, the mid-run and
under-tuning excesses. None of this runs a fit or a verdict."""
import math

import numpy as np
import pytest

from beyondbp.fit.frontier import late_points
from beyondbp.fit.simulate import (BP_BENT, BP_FLOOR, C_MIN, Design, crossing_floor_law, final_points, horizon,
                                   learning_curves, scenario_named, scenarios, study_range, study_rows,
                                   true_delta_alpha, true_letter_at_infinity, true_letter_within, true_log_gap,
                                   true_log_multiplier)

SMALL, CPU = Design(4, 1.0, 0.004), Design(5, 1.5, 0.004)


@pytest.mark.parametrize("name, within, at_infinity", [
    ("floors, crossing at 4 decades", "D", "B"),
    ("floors, crossing at 8 decades", "D", "B"),
    ("floors, crossing at 1.5 decades", "B", "B"),
    ("equal exponents, 3% worse", "D", "D"),
    ("equal exponents, 3% worse, unequal noise", "D", "D"),
    ("curved BP, straight alt", "D", "D"),
    ("curved, both 10% apart", "D", "D"),
    ("mid-run excess 8% vs 3%, D subtle", "D", "D"),
    ("under-tuned alt, excess shrinking 3% to 0", "D", "D"),
    ("under-tuned alt, excess growing 0 to 3%", "D", "D"),
    ("B crossing beyond", "B", "B"),  # the laws cross 1.67 decades on: inside both designs' horizons
    ("floor, alt steeper", "B", "B"),
])
def test_simulate_true_letters_of_the_scenarios(name, within, at_infinity):
    scenario = scenario_named(name)
    for design in (SMALL, CPU):
        assert true_letter_within(scenario, design) == within
        assert true_letter_at_infinity(scenario, design) == at_infinity


def test_simulate_per_method_floors_cross_where_stated_and_the_horizon_decides_the_letter():
    for decades in (4.0, 8.0):
        alt = crossing_floor_law(1.05, -0.15, decades)
        assert alt.floor < BP_FLOOR.floor and float(alt.loss(C_MIN)) == pytest.approx(1.05 * 2.5)
        assert float(alt.loss(C_MIN * 10 ** decades)) == pytest.approx(float(BP_FLOOR.loss(C_MIN * 10 ** decades)))
    scenario = scenario_named("floors, crossing at 4 decades")
    assert true_log_gap(scenario, C_MIN * 10 ** 3.9) > 0 > true_log_gap(scenario, C_MIN * 10 ** 4.1)
    # the small design's largest compute is 1 decade on: a horizon of 10x reaches 2 decades (D);
    # one of 10^3.5 x reaches 4.5 decades, past the crossing (B)
    assert horizon(scenario, SMALL) == pytest.approx(C_MIN * 100)
    assert true_letter_within(scenario, SMALL, horizon_factor=10 ** 3.5) == "B"
    assert true_letter_within(scenario, SMALL, horizon_factor=10 ** 2.9) == "D"


def test_simulate_letters_follow_the_laws_not_labels():
    # every scenario has a letter within and at infinity; pure laws that cross inside agree on both
    for scenario in scenarios():
        for design in (SMALL, CPU):
            assert true_letter_within(scenario, design) in "ABCD"
            assert true_letter_at_infinity(scenario, design) in "ABCD"
    expected = {"A clear": "A", "B crossing inside": "B", "C crossing inside": "C", "D clear": "D",
                "curves A": "A", "curves B": "B", "curves C": "C", "curves D": "D"}
    for name, letter in expected.items():
        assert true_letter_within(scenario_named(name), SMALL) == letter
        assert true_letter_at_infinity(scenario_named(name)) == letter


def test_simulate_bent_law_has_the_measured_slopes_and_inverts():
    def slope(decades):
        c = C_MIN * 10 ** decades
        return float(np.log(BP_BENT.loss(c * 1.01) / BP_BENT.loss(c)) / math.log(1.01))
    assert float(BP_BENT.loss(C_MIN)) == pytest.approx(2.5)
    assert slope(-1.0) == pytest.approx(-0.05, abs=0.002)
    assert slope(3.0) == pytest.approx(-0.11, abs=0.002)
    assert slope(math.log10(5e-9 / C_MIN)) == pytest.approx(-0.08, abs=0.001)  # half way at the bend
    for decades in (0.0, 0.7, 2.5):
        c = C_MIN * 10 ** decades
        assert BP_BENT.log_compute(float(BP_BENT.loss(c))) == pytest.approx(math.log(c), abs=1e-9)
    floor, alpha, coefficient = BP_BENT.tail()
    far = C_MIN * 1e12
    assert (floor, alpha) == (0.0, -0.11)
    assert coefficient + alpha * math.log(far / C_MIN) == pytest.approx(float(np.log(BP_BENT.loss(far))), abs=1e-9)
    scenario = scenario_named("curved, both 10% apart")  # the same law 10% higher: far past the bend,
    assert true_log_multiplier(scenario, 1.0) == pytest.approx(math.log(1.1) / 0.11, rel=1e-3)  # ln 1.1 / 0.11
    assert math.isnan(true_delta_alpha(scenario)) and math.isnan(true_delta_alpha(scenario_named("floor, alt flatter")))
    assert true_delta_alpha(scenario_named("D subtle")) == pytest.approx(0.01)


def test_simulate_noise_per_method():
    scenario = scenario_named("equal exponents, 3% worse, unequal noise")
    residuals = {"bp": [], "alt": []}
    for seed in range(300):
        for row in study_rows(scenario, SMALL, np.random.default_rng(seed)):
            law = scenario.bp if row["method"] == "bp" else scenario.alt
            residuals[row["method"]].append(math.log(row["loss"] / float(law.loss(row["compute_pf_days"]))))
    assert np.std(residuals["bp"]) == pytest.approx(0.003, rel=0.1)
    assert np.std(residuals["alt"]) == pytest.approx(0.012, rel=0.1)
    design = Design(4, 1.0, 0.004, alt_noise=0.01)
    assert (design.noise_of("bp"), design.noise_of("alt")) == (0.004, 0.01)


def test_simulate_tuning_and_mid_run_excess():
    noiseless = Design(4, 1.0, 0.0)
    scenario = scenario_named("under-tuned alt, excess shrinking 3% to 0")
    alt = [r for r in study_rows(scenario, noiseless, np.random.default_rng(0)) if r["method"] == "alt"]
    ratios = [r["loss"] / float(scenario.alt.loss(r["compute_pf_days"])) for r in alt]
    assert ratios == pytest.approx([1.03, 1.02, 1.01, 1.0])
    bp = final_points("bp", scenario.bp, noiseless, np.random.default_rng(0))
    assert [r["loss"] for r in bp] == pytest.approx(list(scenario.bp.loss(noiseless.compute)))
    scenario = scenario_named("mid-run excess 8% vs 3%, D subtle")
    alt = [r for r in study_rows(scenario, noiseless, np.random.default_rng(0)) if r["method"] == "alt"]
    usual = learning_curves("alt", scenario.alt, noiseless, np.random.default_rng(0))
    ratio = np.array([a["loss"] / b["loss"] for a, b in zip(alt, usual)])[:24]  # the smallest run
    assert ratio[-1] == pytest.approx(1.0) and ratio[12] > 1.02  # more excess mid-run, none at the end


def test_simulate_study_range_is_what_the_fit_keeps():
    scenario = scenario_named("curves D")
    rows = study_rows(scenario, SMALL, np.random.default_rng(1))
    compute = np.array([r["compute_pf_days"] for r in rows])
    kept = compute[late_points(compute, np.array([r["run"] for r in rows]))]
    assert study_range(scenario, SMALL) == pytest.approx((kept.min(), kept.max()))
    assert study_range(scenario_named("D clear"), CPU) == pytest.approx((C_MIN, C_MIN * 10 ** 1.5))


def test_simulate_an_under_tuned_sweep_has_its_best_rate_at_an_edge_beyond_noise():
    """The sweeps behind the points: 3 rates a factor 2.5 apart; a tuned size's best is the middle
    one; where the tuning excess is above 0, the best is the high end, LR_CURVATURE x (distance)^2
    of the optimum puts it that share above the law, and its inner neighbour is far worse."""
    from beyondbp.fit.simulate import LR_CURVATURE, SWEEP_STEP, study_sweeps, sweep_trials
    from beyondbp.fit.tuning import choose_rates, lr_edges
    quiet = Design(4, 1.0, 0.0)
    trials = sweep_trials("alt", quiet, np.random.default_rng(0), (0.03, 0.0))
    best = {t["size"]: t for t in trials if t["lr"] == pytest.approx(math.exp(SWEEP_STEP))}
    assert [best[f"s{i}"]["loss"] for i in range(3)] == pytest.approx([1.03, 1.02, 1.01])
    assert best["s3"]["loss"] == pytest.approx(math.exp(LR_CURVATURE * SWEEP_STEP ** 2))  # tuned: the middle is best
    scenario = scenario_named("under-tuned alt, excess shrinking 3% to 0")
    edges = lr_edges(choose_rates(study_sweeps(scenario, SMALL, np.random.default_rng(1))),
                     {"bp": (0.004, 100), "alt": (0.004, 100)})
    assert [(e["method"], e["size"], e["edge"], e["beyond_noise"]) for e in edges] == [
        ("alt", "s0", "high", True), ("alt", "s1", "high", True), ("alt", "s2", "high", True)]
    tuned = study_sweeps(scenario_named("D subtle"), SMALL, np.random.default_rng(1))
    assert lr_edges(choose_rates(tuned)) == []
