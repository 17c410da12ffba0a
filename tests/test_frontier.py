"""Frontier fits recover known laws; verdicts, crossovers, CSV input and the fit CLI."""
import csv
import json
import math

import numpy as np
import pytest

from beyondbp.config import ConfigError
from beyondbp.frontier import (PAPER_TABLE1, PowerLawFit, crossover, envelope, fit_cli,
                               fit_frontier, fit_points_table, fit_power_law, read_points_csv,
                               verdict)

ALPHA, C_C = -0.07, 3.8e3
C_LO, C_HI = 1e-6, 1e-2


def synthetic_runs(alpha=ALPHA, c_c=C_C, e=0.0, n_runs=40, points=30, noise=0.005, seed=0):
    """Runs whose curves lie above the frontier e + (C/c_c)^alpha and touch it at their own
    optimum: L_i(C) = frontier(C) * (1 + k ln(C/C_i*)^2), noise multiplicative. Optima span
    a bit more than [C_LO, C_HI] and only points inside it are kept, so every compute in the
    studied range has a run near its optimum (no edge runs far above the frontier)."""
    rng = np.random.default_rng(seed)
    optima = np.exp(np.linspace(math.log(C_LO) - 0.5, math.log(C_HI) + 3.0, n_runs))
    compute, loss, runs = [], [], []
    for i, c_opt in enumerate(optima):
        c = c_opt * np.exp(np.linspace(-3.0, 0.5, points))
        penalty = 1 + 0.03 * np.log(c / c_opt) ** 2
        l = (e + (c / c_c) ** alpha) * penalty * np.exp(noise * rng.standard_normal(points))
        keep = (c >= C_LO) & (c <= C_HI)
        compute += list(c[keep]); loss += list(l[keep]); runs += [f"run{i}"] * int(keep.sum())
    return np.array(compute), np.array(loss), np.array(runs)


def law_through(alpha, compute, loss):
    """C_c of the law with slope alpha passing through (compute, loss)."""
    return math.exp(math.log(compute) - math.log(loss) / alpha)


def table_rows(method, compute, loss, runs):
    return [{"method": method, "compute_pf_days": c, "loss": l, "run": r}
            for c, l, r in zip(compute, loss, runs)]


def test_envelope_is_running_minimum():
    c, l = envelope([3, 1, 2, 4, 2, 5], [2.0, 3.0, 2.5, 2.2, 2.4, 1.0])
    assert c.tolist() == [1, 2, 3, 5]
    assert l.tolist() == [3.0, 2.4, 2.0, 1.0]


def test_pure_fit_on_exact_law():
    c = np.logspace(-6, -2, 20)
    alpha, c_c, e = fit_power_law(c, (c / C_C) ** ALPHA)
    assert alpha == pytest.approx(ALPHA, abs=1e-6)
    assert c_c == pytest.approx(C_C, rel=1e-4)
    assert e is None


def test_frontier_recovers_known_law_with_intervals():
    compute, loss, runs = synthetic_runs()
    fit = fit_frontier(compute, loss, runs, bootstrap=200, seed=0)
    assert abs(fit.alpha_C - ALPHA) < 0.005
    mid = 1e-4
    assert fit.predict(mid) == pytest.approx((mid / C_C) ** ALPHA, rel=0.01)
    assert fit.alpha_C_ci[0] <= ALPHA <= fit.alpha_C_ci[1]
    assert fit.C_c_ci[0] <= C_C <= fit.C_c_ci[1]
    assert fit.n_points == len(fit.envelope) >= 3
    assert fit.samples.shape[1] == 2 and len(fit.samples) > 150
    assert fit.alpha_C_ci[1] - fit.alpha_C_ci[0] < 0.005


def test_irreducible_fit_recovers_floor():
    compute, loss, runs = synthetic_runs(alpha=-0.2, c_c=0.1, e=1.5, noise=0.003)
    fit = fit_frontier(compute, loss, runs, bootstrap=20, seed=0, irreducible=True)
    assert fit.E == pytest.approx(1.5, abs=0.05)
    assert fit.alpha_C == pytest.approx(-0.2, abs=0.01)
    assert fit.samples.shape[1] == 3


def test_bootstrap_without_runs_resamples_points():
    c = np.logspace(-6, -2, 30)
    loss = (c / C_C) ** ALPHA * np.exp(0.002 * np.random.default_rng(1).standard_normal(30))
    fit = fit_frontier(c, loss, bootstrap=50, seed=3)
    assert fit.alpha_C_ci[0] < fit.alpha_C < fit.alpha_C_ci[1]


def make_fit(alpha, c_c, samples=None):
    return PowerLawFit(alpha, c_c, None, None, None, 3, np.zeros((3, 2)), samples)


def test_crossover_matches_analytic_value():
    a1, c1, a2, c2 = -0.09, 50.0, -0.05, 1e6
    # a1 (x - ln c1) = a2 (x - ln c2)
    expected = math.exp((a1 * math.log(c1) - a2 * math.log(c2)) / (a1 - a2))
    got = crossover(make_fit(a1, c1), make_fit(a2, c2))
    assert got == pytest.approx(expected, rel=1e-9)
    assert (got / c1) ** a1 == pytest.approx((got / c2) ** a2, rel=1e-9)
    assert crossover(make_fit(a1, c1), make_fit(a1, c2)) is None


# alternative laws through a given loss at C_LO (reference there: about 4.68)
REF_AT_LO = (C_LO / C_C) ** ALPHA
CASES = {"A": (-0.09, 0.94 * REF_AT_LO), "B": (-0.09, 1.06 * REF_AT_LO),
         "C": (-0.05, 0.94 * REF_AT_LO), "D": (-0.05, 1.06 * REF_AT_LO)}


@pytest.mark.parametrize("letter", "ABCD")
def test_verdict_on_known_laws(letter):
    alpha, loss_lo = CASES[letter]
    alt, ref = make_fit(alpha, law_through(alpha, C_LO, loss_lo)), make_fit(ALPHA, C_C)
    out = verdict(alt, ref, C_LO)
    assert out["scenario"] == letter
    if letter in "AD":
        assert out["crossover_pf_days"] is None
    else:
        # gap at C_LO is ln(1.06) or ln(0.94); it closes at rate |alpha - ALPHA| per ln C
        expected = C_LO * math.exp(abs(math.log(loss_lo / REF_AT_LO)) / 0.02)
        assert out["crossover_pf_days"] == pytest.approx(expected, rel=1e-6)
    assert out["confidence"] is None


def test_points_table_gives_each_letter_with_confidence():
    rows = table_rows("bp", *synthetic_runs(seed=0))
    for i, letter in enumerate("ABCD"):
        alpha, loss_lo = CASES[letter]
        c_c = law_through(alpha, C_LO, loss_lo)
        rows += table_rows(f"alt_{letter}", *synthetic_runs(alpha=alpha, c_c=c_c, seed=i + 1))
    table = fit_points_table(rows, reference="bp", bootstrap=30, seed=0)
    assert set(table["fits"]) == {"bp", "alt_A", "alt_B", "alt_C", "alt_D"}
    assert set(table["verdicts"]) == {"alt_A", "alt_B", "alt_C", "alt_D"}
    for letter in "ABCD":
        v = table["verdicts"][f"alt_{letter}"]
        assert v["scenario"] == letter
        assert v["confidence"] >= 0.9
        assert (v["crossover_pf_days"] is None) == (letter in "AD")
    assert table["verdicts"]["alt_B"]["crossover_pf_days"] == pytest.approx(
        C_LO * math.exp(math.log(1.06) / 0.02), rel=0.3)


def test_too_few_frontier_points_names_method():
    rows = table_rows("bp", *synthetic_runs(n_runs=10, points=5))
    rows += [{"method": "dfa", "compute_pf_days": c, "loss": l} for c, l in [(1e-5, 3.0), (1e-4, 2.5)]]
    with pytest.raises(ConfigError, match="method dfa: only 2 frontier points, need at least 3"):
        fit_points_table(rows, bootstrap=0)


def test_missing_reference_is_an_error():
    rows = table_rows("dfa", *synthetic_runs(n_runs=10, points=5))
    with pytest.raises(ConfigError, match="reference method 'bp'"):
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


def test_fit_cli_prints_table_json(tmp_path, capsys):
    path = tmp_path / "points.csv"
    bp = table_rows("bp", *synthetic_runs(n_runs=15, points=10))
    alpha, loss_lo = CASES["D"]
    dfa = table_rows("dfa", *synthetic_runs(alpha=alpha, c_c=law_through(alpha, C_LO, loss_lo),
                                            n_runs=15, points=10))
    write_csv(path, ["method", "compute_pf_days", "loss", "run"],
              [[r["method"], r["compute_pf_days"], r["loss"], r["run"]] for r in bp + dfa])
    assert fit_cli([str(path), "--bootstrap", "20", "--seed", "1"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert set(table) == {"fits", "verdicts"}
    assert set(table["fits"]["bp"]) == {"alpha_C", "C_c", "alpha_C_ci", "C_c_ci", "n_points"}
    assert table["fits"]["bp"]["alpha_C"] == pytest.approx(ALPHA, abs=0.005)
    assert table["fits"]["dfa"]["alpha_C"] == pytest.approx(alpha, abs=0.005)
    assert len(table["fits"]["dfa"]["alpha_C_ci"]) == 2
    assert list(table["verdicts"]) == ["dfa"]
    assert set(table["verdicts"]["dfa"]) == {"scenario", "crossover_pf_days", "confidence"}
    assert table["verdicts"]["dfa"]["scenario"] == "D"
    assert table["verdicts"]["dfa"]["crossover_pf_days"] is None
    assert table["verdicts"]["dfa"]["confidence"] >= 0.9


def test_fit_cli_reports_errors_on_one_line(tmp_path, capsys):
    assert fit_cli([str(tmp_path / "absent.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("beyondbp fit: error: points file not found") and "\n" not in err


def test_paper_table1_in_kaplan_form_gives_sensible_losses():
    losses = {m: (0.12 / c_c) ** alpha for m, (alpha, c_c) in PAPER_TABLE1.items()}
    assert losses["bp"] == pytest.approx(2.1, abs=0.1)
    assert losses["dfa_block"] == pytest.approx(2.9, abs=0.1)
    assert losses["shallow"] == pytest.approx(4.4, abs=0.15)
    # read this way, the paper's DFA and BP laws cross at ~2.4e-6 PF-days, below its smallest
    # model: over the compute it studied BP is always better (scenario D)
    dfa, bp = make_fit(*PAPER_TABLE1["dfa_block"]), make_fit(*PAPER_TABLE1["bp"])
    assert crossover(dfa, bp) == pytest.approx(2.41e-6, rel=0.01)
    assert verdict(dfa, bp, c_min=1e-4)["scenario"] == "D"
    assert verdict(dfa, bp, c_min=1e-6)["scenario"] == "C"
