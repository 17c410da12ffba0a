"""Verdicts: letters on known laws, crossovers and compute multipliers, undetermined letters, the
shared floor, no letter without two power laws, the measured gap; the points CSV and the
`beyondbp fit` command with strict JSON."""
import csv
from dataclasses import replace
import math

import numpy as np
import pytest

from beyondbp.config import ConfigError, TooFewPoints
from beyondbp.cli.main import main
from beyondbp.fit.points import fit_points_table, read_points_csv
from beyondbp.fit.frontier import PAPER_TABLE1, fit_frontier
from beyondbp.fit.multiplier import crossover
from beyondbp.fit.simulate import Design, scenarios, study_rows
from beyondbp.fit.verdict import _apply_floor, judge, measured_gap
from beyondbp.fit.verdict_types import Decision, FloorVerdict, Verdict
from helpers import strict_loads

ALPHA, C_C = -0.07, 3.8e3
C_LO, C_HI = 1e-6, 1e-2


def law_through(alpha, compute, loss):
    """C_c of the law with slope alpha passing through (compute, loss)."""
    return math.exp(math.log(compute) - math.log(loss) / alpha)


def make_fit(alpha, c_c, points=None, bootstrap=0, name="m"):
    """A fit of points exactly on (C / c_c)^alpha (zero residuals: every bootstrap sample is the law)."""
    c = np.geomspace(C_LO, C_HI, 5) if points is None else points
    return fit_frontier(c, (c / c_c) ** alpha, [f"r{i}" for i in range(len(c))], [f"s{i}" for i in range(len(c))],
                        bootstrap=bootstrap, name=name)


def test_crossover_matches_analytic_value():
    a1, c1, a2, c2 = -0.09, 50.0, -0.05, 1e6
    # a1 (x - ln c1) = a2 (x - ln c2)
    expected = (a1 * math.log(c1) - a2 * math.log(c2)) / (a1 - a2)
    got, _ = crossover(make_fit(a1, c1), make_fit(a2, c2))
    assert got == pytest.approx(expected, rel=1e-9)
    assert (math.exp(got) / c1) ** a1 == pytest.approx((math.exp(got) / c2) ** a2, rel=1e-7)
    assert abs(crossover(make_fit(a1, c1), make_fit(a1, c2))[0]) > 1e6  # parallel laws: nowhere in floats


# alternative laws through a given loss at C_LO (reference there: about 4.68)
REF_AT_LO = (C_LO / C_C) ** ALPHA
CASES = {"A": (-0.09, 0.94 * REF_AT_LO), "B": (-0.09, 1.06 * REF_AT_LO),
         "C": (-0.05, 0.94 * REF_AT_LO), "D": (-0.05, 1.06 * REF_AT_LO)}


@pytest.mark.parametrize("letter", "ABCD")
def test_verdict_on_known_laws(letter):
    alpha, loss_lo = CASES[letter]
    alt = make_fit(alpha, law_through(alpha, C_LO, loss_lo), bootstrap=100, name="alt")
    ref = make_fit(ALPHA, C_C, bootstrap=100, name="bp")
    out = judge(alt, ref, C_LO, C_HI, "alt")
    assert out.scenario == letter and out.bootstrap_share == 1.0
    assert out.letter_shares == {k: float(k == letter) for k in "ABCD"}
    assert out.delta_alpha == pytest.approx(alpha - ALPHA, abs=1e-9)
    assert out.delta_log_loss_at_c_min == pytest.approx(math.log(loss_lo / REF_AT_LO), abs=1e-9)
    if letter in "AD":
        assert out.crossover is None
    else:
        # gap at C_LO is ln(1.06) or ln(0.94); it closes at rate |alpha - ALPHA| per ln C
        expected = C_LO * math.exp(abs(math.log(loss_lo / REF_AT_LO)) / 0.02)
        assert out.crossover.value == pytest.approx(expected, rel=1e-6)
        assert out.crossover.inside_measured_range == (expected <= C_HI)
    # the compute multiplier: on two exact laws, C_alt(L) / C_ref(L) at the shared losses
    for entry in out.compute_multiplier:
        log_l = math.log(entry.loss)
        log_c_alt = math.log(law_through(alpha, C_LO, loss_lo)) + log_l / alpha
        log_c_ref = math.log(C_C) + log_l / ALPHA
        assert entry.value == pytest.approx(math.exp(log_c_alt - log_c_ref), rel=1e-6)


def noisy_frontier(alpha, c_c, seed, n=8, noise=0.003, c_hi=C_HI):
    c = np.geomspace(C_LO, c_hi, n)
    loss = (c / c_c) ** alpha * np.exp(noise * np.random.default_rng(seed).standard_normal(n))
    loss = np.minimum.accumulate(loss)  # keep every point on the envelope
    return c, loss, [f"r{i}" for i in range(n)], [f"s{i}" for i in range(n)]


def test_judge_gives_each_letter_with_confidence_from_residual_bootstraps():
    ref = fit_frontier(*noisy_frontier(ALPHA, C_C, 0), name="bp")
    for i, letter in enumerate("ABCD"):
        alpha, loss_lo = CASES[letter]
        alt = fit_frontier(*noisy_frontier(alpha, law_through(alpha, C_LO, loss_lo), i + 1), name=f"alt_{letter}")
        out = judge(alt, ref, C_LO, C_HI, f"alt_{letter}")
        assert out.scenario == letter and out.bootstrap_share >= 0.95  # both intervals exclude 0
        assert out.delta_alpha_ci[0] <= out.delta_alpha <= out.delta_alpha_ci[1]
        assert (out.crossover is None) == (letter in "AD")


def test_nearly_parallel_laws_give_a_letter_through_the_horizon_and_leave_infinity_open():
    # 4 sizes over one decade, 0.4% noise, as the quick preset
    ref = fit_frontier(*noisy_frontier(ALPHA, C_C, 0, n=4, noise=0.004, c_hi=10 * C_LO), name="bp")
    alpha = ALPHA + 0.002  # 6% above BP at C_LO, nearly parallel: worse through any horizon near the data
    alt = fit_frontier(*noisy_frontier(alpha, law_through(alpha, C_LO, 1.06 * REF_AT_LO), 5, n=4, noise=0.004,
                                       c_hi=10 * C_LO), name="alt")
    out = judge(alt, ref, C_LO, 10 * C_LO, "alt")
    assert out.scenario == "D" and out.horizon == pytest.approx(100 * C_LO)
    assert out.delta_log_loss_at_horizon_ci[0] > 0 and out.crossover is None
    trend = out.trend  # as C -> infinity the pure laws cannot tell: B or D, labelled as extrapolation
    assert trend.letter_at_infinity is None and trend.possible_letters_at_infinity == ["B", "D"]
    assert trend.extrapolation and trend.delta_alpha_ci[0] < 0 < trend.delta_alpha_ci[1]
    shares = out.letter_shares
    assert sum(shares.values()) == pytest.approx(1.0) and out.bootstrap_share == shares["D"] >= 0.975
    # through a horizon of 10^12 x the data the extrapolated gap is no longer resolved
    far = judge(alt, ref, C_LO, 10 * C_LO, "alt", horizon_factor=1e12)
    assert far.scenario is None and far.possible_letters == ["B", "D"]
    assert far.reason.startswith("the interval of Δ ln L at the horizon, [") and far.reason.endswith("includes 0")


def test_a_shared_floor_no_longer_makes_a_b_through_the_horizon():
    """Two methods share a floor E = 1.5 with the same reducible exponent, the alternative's
    reducible loss 15% higher: worse everywhere (D). Its pure power law looks steeper (the log-log
    slope is alpha R / L), so pure laws say B at infinity; through the horizon they say D, and so
    does the pair's floor fit, which finds the floor."""
    c = np.geomspace(1e-9, 1e-8, 8)  # 8 sizes over one decade, 0.1% noise: the pure fits are precise
    rng = np.random.default_rng(0)
    rows = []
    for method, reducible in (("bp", 1.0), ("alt", 1.15)):
        loss = (1.5 + reducible * (c / c[0]) ** -0.2) * np.exp(0.001 * rng.standard_normal(8))
        rows += table_rows(method, c, loss, [f"{method}{i}" for i in range(8)], [f"s{i}" for i in range(8)])
    v = fit_points_table(rows, bootstrap=1000)["verdicts"]["alt"]
    assert v["trend"]["letter_at_infinity"] == "B" and v["delta_alpha_ci"][1] < 0  # the apparent slope difference
    assert v["scenario"] == "D" and v["pure_scenario"] == "D"
    floor = v["floor"]
    assert floor["E"] == pytest.approx(1.5, abs=0.15) and floor["delta_alpha_ci"][0] < 0 < floor["delta_alpha_ci"][1]
    assert floor["scenario"] == "D" and not floor["degenerate"] and floor["methods"] == ["alt", "bp"]
    assert v["per_method_floors"]["scenario"] == "D"  # 8 points each: a floor of its own per method


def decision(letter: str) -> Decision:
    return Decision(letter, [letter], letter, 0.99, {letter: 0.99}, "delta_log_loss_at_horizon", 0.1, [0.05, 0.15],
                    0.1, [0.05, 0.15], 0, None)


def test_an_identified_floor_that_disagrees_decides_and_a_degenerate_one_does_not():
    pure = decision("B")
    floor = FloorVerdict(decision("D"), 0.0, [-0.1, 0.1], 1.5, [1.4, 1.6], 2.0, False, [], 0.0, ["alt", "bp"])
    out = Verdict(scenario="B", bootstrap_share=0.99)
    _apply_floor(out, pure, floor)
    assert out.scenario is None and out.bootstrap_share is None and out.possible_letters == ["B", "D"]
    assert out.reason == "the floor decides: pure power laws give B, one floor E shared by the pair gives D"
    out = Verdict(scenario="B", bootstrap_share=0.99)
    _apply_floor(out, pure, replace(floor, degenerate=True))  # a floor at its bound is not identified
    assert out == Verdict(scenario="B", bootstrap_share=0.99)


def test_no_letter_unless_both_frontiers_are_power_laws():
    ref = make_fit(ALPHA, C_C, bootstrap=50)
    flat = make_fit(-0.001, 1e300, points=np.geomspace(1e-4, 2e-4, 3), bootstrap=50)  # 0.3 decades, under 0.5
    out = judge(flat, ref, C_LO, C_HI, "dfa_block")
    assert out.scenario is None and out.bootstrap_share is None and out.crossover is None
    assert out.letter_shares is None and out.compute_multiplier is None
    assert out.reason == ("dfa_block's frontier is not a power law (spans 0.30 decades of compute, under 0.5)")
    out = judge(ref, flat, C_LO, C_HI, "dfa", "bp")
    assert out.reason.startswith("bp's frontier is not a power law")
    no_samples = judge(ref, make_fit(ALPHA, C_C), C_LO, C_HI)
    assert no_samples.reason == "no bootstrap samples, so no intervals and no letter"


def test_measured_gap_interpolates_the_reference_between_its_points():
    ref = make_fit(ALPHA, C_C, points=np.array([1e-6, 1e-4, 1e-2]))
    alt_c = np.array([1e-7, 1e-5, 1e-3])  # the first lies below the reference's range
    alt = fit_frontier(alt_c, 1.10 * (alt_c / C_C) ** ALPHA, bootstrap=0)
    gap = measured_gap(alt, ref)
    # the reference's points lie on a power law, so log-linear interpolation is exact: 10% above
    assert gap.compute == [1e-5, 1e-3] and gap.n_points == 2
    assert gap.min == pytest.approx(0.10, rel=1e-9) and gap.max == pytest.approx(0.10, rel=1e-9)
    assert measured_gap(make_fit(ALPHA, C_C, points=np.array([1.0, 2.0, 3.0])), ref) is None


def table_rows(method, compute, loss, runs, sizes):
    return [{"method": method, "compute_pf_days": c, "loss": l, "run": r, "size": s}
            for c, l, r, s in zip(compute, loss, runs, sizes)]


def test_points_table_judges_every_method():
    rows = table_rows("bp", *noisy_frontier(ALPHA, C_C, 0))
    for i, letter in enumerate("AD"):
        alpha, loss_lo = CASES[letter]
        rows += table_rows(f"alt_{letter}", *noisy_frontier(alpha, law_through(alpha, C_LO, loss_lo), i + 1))
    table = fit_points_table(rows, reference="bp", bootstrap=500, seed=0)
    assert set(table["verdicts"]) == {"alt_A", "alt_D"}
    assert table["verdicts"]["alt_A"]["scenario"] == "A" and table["verdicts"]["alt_D"]["scenario"] == "D"
    assert table["fits"]["bp"]["power_law_ok"] and table["fits"]["bp"]["sizes_on_frontier"][0] == "s0"


def test_missing_reference_is_an_error():
    rows = table_rows("dfa", *noisy_frontier(ALPHA, C_C, 0))
    with pytest.raises(ConfigError, match="--reference: method 'bp' has no points"):
        fit_points_table(rows, bootstrap=0)


def write_csv(path, header, rows):
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_csv_skips_bad_rows_with_one_counting_warning(tmp_path):
    path = tmp_path / "points.csv"
    write_csv(path, ["method", "compute_pf_days", "loss", "run"],
              [["bp", 1e-5, 3.0, "a"], ["bp", "nan", 3.0, "a"], ["bp", 1e-4, "inf", "a"],
               ["bp", 0, 2.0, "b"], ["bp", 1e-3, 2.2, "b"]])
    with pytest.warns(UserWarning, match="skipped 3 rows") as record:
        rows = read_points_csv(path)
    assert len(record) == 1
    assert rows == [{"method": "bp", "compute_pf_days": 1e-5, "loss": 3.0, "run": "a"},
                    {"method": "bp", "compute_pf_days": 1e-3, "loss": 2.2, "run": "b"}]


def test_csv_missing_column_is_named(tmp_path):
    path = tmp_path / "points.csv"
    write_csv(path, ["method", "compute_pf_days"], [["bp", 1e-5]])
    with pytest.raises(ConfigError, match="missing column 'loss'"):
        read_points_csv(path)


VERDICT_KEYS = {"scenario", "possible_letters", "bootstrap_share", "letter_shares", "delta_alpha", "delta_alpha_ci",
                "delta_log_loss_at_c_min", "delta_log_loss_at_c_min_ci", "c_min_pf_days", "crossover",
                "compute_multiplier", "compute_multiplier_trend", "floor", "pure_scenario", "measured_gap"}


def test_fit_cli_prints_table_json(tmp_path, capsys):
    path = tmp_path / "points.csv"
    bp = table_rows("bp", *noisy_frontier(ALPHA, C_C, 0))
    alpha, loss_lo = CASES["D"]
    dfa = table_rows("dfa", *noisy_frontier(alpha, law_through(alpha, C_LO, loss_lo), 1))
    write_csv(path, ["method", "compute_pf_days", "loss", "run", "size"],
              [[r["method"], r["compute_pf_days"], r["loss"], r["run"], r["size"]] for r in bp + dfa])
    assert main(["fit", str(path), "--bootstrap", "500", "--seed", "1"]) == 0
    table = strict_loads(capsys.readouterr().out)
    assert set(table) == {"fits", "verdicts", "unfitted"}
    assert {"alpha_C", "C_c", "alpha_C_ci", "loss_at_reference", "n_points", "frontier", "sizes_on_frontier",
            "fit_range_pf_days", "rms_log_residual", "max_abs_log_residual", "power_law_ok"} <= set(table["fits"]["bp"])
    assert table["fits"]["bp"]["alpha_C"] == pytest.approx(ALPHA, abs=0.005)
    assert table["fits"]["dfa"]["alpha_C"] == pytest.approx(alpha, abs=0.005)
    at = table["fits"]["bp"]["loss_at_reference"]
    assert at["compute_pf_days"] == pytest.approx(math.sqrt(C_LO * C_HI)) and at["ci"][0] < at["value"] < at["ci"][1]
    v = table["verdicts"]["dfa"]
    assert VERDICT_KEYS <= set(v)
    assert v["scenario"] == "D" and v["crossover"] is None and v["bootstrap_share"] >= 0.95
    assert v["floor"]["scenario"] == "D"
    assert v["measured_gap"]["min"] > 0
    assert len(v["compute_multiplier"]) == 3 and all(set(e) >= {"loss", "value", "ci"} for e in v["compute_multiplier"])
    m = v["compute_multiplier"][1]
    assert m["ci"][0] < m["value"] < m["ci"][1] and m["value"] > 1  # dfa needs more compute than bp


def test_fit_cli_writes_a_flat_frontiers_infinite_values_as_null(tmp_path, capsys):
    path = tmp_path / "points.csv"
    c = np.geomspace(C_LO, C_HI, 5)
    rows = [["bp", ci, (ci / C_C) ** ALPHA * (1 + 0.002 * (-1) ** i)] for i, ci in enumerate(c)]
    rows += [["dfa", ci, 3.0 * (ci / C_LO) ** -1e-5] for ci in c]  # flat: C_c = exp(ln 3 / 1e-5), past floats
    write_csv(path, ["method", "compute_pf_days", "loss"], rows)
    assert main(["fit", str(path), "--bootstrap", "200"]) == 0
    table = strict_loads(capsys.readouterr().out)
    assert table["fits"]["dfa"]["C_c"] is None  # inf in Python, null in JSON


def test_learning_curves_count_from_half_of_each_runs_budget():
    """The paper's envelope of every evaluation: each run touches the frontier near its own
    compute and lies above it elsewhere. With every point the envelope's left edge is the
    smallest run's early points and the exponent comes out 0.006-0.009 too steep (4 sizes over a
    decade); from half of each run's budget on, within 0.003, with the right letter. (With 0.4%
    noise per run: benchmarks/verdict_calibration.py.)"""
    design = Design(4, 1.0, 0.0)  # noise-free: the error is the method's own
    for letter in "ABCD":
        scenario = next(s for s in scenarios() if s.name == f"curves {letter}")
        rows = study_rows(scenario, design, np.random.default_rng(0))
        table = fit_points_table(rows, bootstrap=500)
        for method, law in (("bp", scenario.bp), ("alt", scenario.alt)):
            assert table["fits"][method]["alpha_C"] == pytest.approx(law.alpha, abs=0.003), (letter, method)
            assert table["fits"][method]["power_law_ok"]
        assert table["verdicts"]["alt"]["scenario"] == letter
        assert len([r for r in rows if r["method"] == "alt"]) == 4 * 24  # every evaluation of 4 runs
        early = fit_points_table(rows, bootstrap=0, run_fraction=0.1)["fits"]["alt"]["alpha_C"]
        assert early - scenario.alt.alpha < -0.005, letter


def test_fit_cli_reports_errors_on_one_line(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "absent.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("beyondbp fit: error: points file not found") and "\n" not in err


def test_paper_table1_in_kaplan_form_gives_sensible_losses():
    losses = {m: (0.12 / c_c) ** alpha for m, (alpha, c_c) in PAPER_TABLE1.items()}
    assert losses["bp"] == pytest.approx(2.1, abs=0.1)
    assert losses["dfa_block"] == pytest.approx(2.9, abs=0.1)
    assert losses["shallow"] == pytest.approx(4.4, abs=0.15)
    # read this way, the paper's DFA and BP laws cross at ~2.4e-6 PF-days, below its smallest
    # model: over the compute it studied BP is always better (scenario D)
    dfa, bp = make_fit(*PAPER_TABLE1["dfa_block"], bootstrap=50), make_fit(*PAPER_TABLE1["bp"], bootstrap=50)
    assert math.exp(crossover(dfa, bp)[0]) == pytest.approx(2.41e-6, rel=0.01)
    assert judge(dfa, bp, c_min=1e-4).scenario == "D"
    assert judge(dfa, bp, c_min=1e-6).scenario == "C"


# --- calibration on simulated studies (the full version: benchmarks/verdict_calibration.py) ---

SMALL = Design(4, 1.0, 0.004)  # 4 sizes over one decade, 0.4% noise: the quick preset's design


def replicate_verdicts(name: str, replicates: int, bootstrap: int = 500) -> list[dict]:
    scenario = next(s for s in scenarios() if s.name == name)
    return [fit_points_table(study_rows(scenario, SMALL, np.random.default_rng([seed, 17])), bootstrap=bootstrap,
                             seed=seed)["verdicts"]["alt"] for seed in range(replicates)]


def test_delta_alpha_interval_covers_the_truth_95_percent_of_the_time():
    scenario = next(s for s in scenarios() if s.name == "D clear")
    truth, covered = scenario.alt.alpha - scenario.bp.alpha, 0
    for seed in range(200):
        rows = study_rows(scenario, SMALL, np.random.default_rng([seed, 17]))
        fits = {m: fit_frontier([r["compute_pf_days"] for r in rows if r["method"] == m],
                                [r["loss"] for r in rows if r["method"] == m], bootstrap=500, seed=seed, name=m)
                for m in ("alt", "bp")}
        lo, hi = judge(fits["alt"], fits["bp"], SMALL.compute[0], SMALL.compute[-1], "alt").delta_alpha_ci
        covered += lo <= truth <= hi
    # measured: 0.985 (0.975 with Welch-Satterthwaite degrees of freedom; the smaller side's is safer)
    assert 0.92 <= covered / 200 <= 0.995


@pytest.mark.slow
def test_clear_letters_are_given_with_confidence_and_a_shared_floor_does_not_make_a_b():
    for name, letter in (("D clear", "D"), ("A clear", "A")):
        verdicts = replicate_verdicts(name, 20)
        confident = [v["scenario"] == letter and v["bootstrap_share"] >= 0.9 for v in verdicts]
        assert np.mean(confident) >= 0.8, name  # measured: 18 (D) and 20 (A) of 20
        assert not any(v["scenario"] not in (None, letter) for v in verdicts)
    # same reducible exponent, the alternative's reducible loss 15% higher: worse everywhere
    verdicts = replicate_verdicts("floor, same exponent", 20)
    confident_a_or_b = [v["scenario"] in ("A", "B") and v["bootstrap_share"] >= 0.9 for v in verdicts]
    assert np.mean(confident_a_or_b) <= 0.1  # measured: 2 of 20


def test_floors_fitted_per_method_decide_at_scale_by_their_difference():
    """--irreducible: L = E + (C / C_c)^alpha per method; as C grows each loss tends to its own
    floor, so ΔE replaces Δalpha in the letter (here the alternative's floor is higher: D)."""
    c = np.geomspace(1e-9, 1e-7, 8)
    rng = np.random.default_rng(0)
    rows = []
    for method, floor, reducible, alpha in (("bp", 1.5, 1.0, -0.2), ("alt", 1.9, 1.0, -0.3)):
        loss = (floor + reducible * (c / c[0]) ** alpha) * np.exp(0.001 * rng.standard_normal(8))
        rows += table_rows(method, c, loss, [f"{method}{i}" for i in range(8)], [f"s{i}" for i in range(8)])
    table = fit_points_table(rows, bootstrap=500, irreducible=True)
    assert table["fits"]["alt"]["E"] == pytest.approx(1.9, abs=0.1)
    v = table["verdicts"]["alt"]
    assert v["scenario"] == "D" and v["delta_alpha"] < 0  # steeper, yet worse through the horizon
    assert v["trend"]["letter_at_infinity"] == "D" and v["trend"]["delta_E_ci"][0] > 0  # and at infinity
    assert v["floor"] is None and v["per_method_floors"] is None  # the floor checks are for pure laws


def test_fit_cli_takes_options_before_the_csv_and_has_help(tmp_path, capsys):
    # `beyondbp fit --help` and options before POINTS.csv used to fail ("unrecognized arguments")
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--help"])
    assert exc.value.code == 0
    assert "--run-fraction" in capsys.readouterr().out
    path = tmp_path / "points.csv"
    bp = table_rows("bp", *noisy_frontier(ALPHA, C_C, 0))
    write_csv(path, ["method", "compute_pf_days", "loss", "run", "size"],
              [[r["method"], r["compute_pf_days"], r["loss"], r["run"], r["size"]] for r in bp])
    assert main(["fit", "--bootstrap", "0", "--seed", "3", str(path)]) == 0
    table = strict_loads(capsys.readouterr().out)
    assert table["fits"]["bp"]["alpha_C"] == pytest.approx(ALPHA, abs=0.005)


FIRST_KEYS = ["scenario", "possible_letters", "bootstrap_share", "letter_shares", "pure_scenario", "horizon_pf_days",
              "horizon_factor", "horizon_reason", "delta_log_loss_at_horizon", "delta_log_loss_at_horizon_ci", "trend",
              "delta_alpha", "delta_alpha_ci", "delta_log_loss_at_c_min", "delta_log_loss_at_c_min_ci",
              "c_min_extrapolated_decades", "crossover", "compute_multiplier", "compute_multiplier_trend",
              "compute_multiplier_losses_from", "floor", "per_method_floors"]


def test_a_verdict_writes_the_keys_of_the_first_results_format_in_their_order():
    """results.json stays byte-identical: a letter, a withheld letter and an L*(C) verdict keep
    their keys and order (compute keys named _pf_days as before, whatever the accounting's unit)."""
    ref = make_fit(ALPHA, C_C, bootstrap=50)
    alt = make_fit(ALPHA - 0.02, C_C, bootstrap=50)
    full = judge(alt, ref, C_LO, C_HI, "alt").to_dict()
    assert list(full) == FIRST_KEYS + ["c_min_pf_days", "c_max_pf_days", "measured_gap", "nan_samples_dropped",
                                       "reason"]
    assert list(full["trend"]) == ["delta_alpha", "delta_alpha_ci", "letter_at_infinity",
                                   "possible_letters_at_infinity", "bootstrap_share_at_infinity", "extrapolation"]
    assert list(full["measured_gap"]) == ["compute_pf_days", "min", "max", "n_points"]
    assert list(full["compute_multiplier"][0]) == ["loss", "value", "ci", "extrapolated_decades", "ci_reason",
                                                   "ci_includes_model_spread"]
    withheld = judge(alt, make_fit(ALPHA, C_C), C_LO, C_HI).to_dict()
    assert list(withheld) == FIRST_KEYS + ["c_min_pf_days", "c_max_pf_days", "measured_gap", "reason"]
    assert withheld["c_min_pf_days"] == C_LO and withheld["reason"].startswith("no bootstrap samples")
    law = Verdict(reason="bp's L*(C) is no power law", measured=False).to_dict()
    assert list(law) == FIRST_KEYS + ["reason"] and law["possible_letters"] == ["A", "B", "C", "D"]


def test_too_few_points_is_its_own_error_with_the_one_line_message():
    with pytest.raises(TooFewPoints, match=r"^method bp: only 2 frontier points, need at least 3$"):
        fit_frontier([1e-5, 1e-4], [3.0, 2.5], name="bp")
    with pytest.raises(TooFewPoints, match=r"need at least 5 for a fit with a floor E$"):
        fit_frontier([1e-5, 1e-4, 1e-3], [3.0, 2.5, 2.2], irreducible=True, name="bp")
    assert issubclass(TooFewPoints, ConfigError)  # uncaught (`beyondbp fit`): one line, exit status 2
