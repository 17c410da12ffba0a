"""Verdicts: letters on known laws, crossovers, no letter without two power laws, the measured
gap; the points CSV and the `beyondbp fit` command."""
import csv
import json
import math

import numpy as np
import pytest

from beyondbp.config import ConfigError
from beyondbp.fit_cli import fit_cli, fit_points_table, read_points_csv
from beyondbp.frontier import PAPER_TABLE1, PowerLawFit, fit_frontier
from beyondbp.verdict import crossover, judge, measured_gap, verdict

ALPHA, C_C = -0.07, 3.8e3
C_LO, C_HI = 1e-6, 1e-2


def law_through(alpha, compute, loss):
    """C_c of the law with slope alpha passing through (compute, loss)."""
    return math.exp(math.log(compute) - math.log(loss) / alpha)


def make_fit(alpha, c_c, samples=None, points=None):
    c = np.geomspace(C_LO, C_HI, 5) if points is None else points
    env = np.column_stack([c, (c / c_c) ** alpha])
    return PowerLawFit(alpha, c_c, None, None, None, len(c), env, samples,
                       [f"r{i}" for i in range(len(c))], [f"s{i}" for i in range(len(c))])


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


def noisy_frontier(alpha, c_c, seed, n=8):
    c = np.geomspace(C_LO, C_HI, n)
    loss = (c / c_c) ** alpha * np.exp(0.003 * np.random.default_rng(seed).standard_normal(n))
    loss = np.minimum.accumulate(loss)  # keep every point on the envelope
    return c, loss, [f"r{i}" for i in range(n)], [f"s{i}" for i in range(n)]


def test_judge_gives_each_letter_with_confidence_from_residual_bootstraps():
    ref = fit_frontier(*noisy_frontier(ALPHA, C_C, 0), bootstrap=200, seed=0)
    for i, letter in enumerate("ABCD"):
        alpha, loss_lo = CASES[letter]
        alt = fit_frontier(*noisy_frontier(alpha, law_through(alpha, C_LO, loss_lo), i + 1), bootstrap=200, seed=i)
        out = judge(alt, ref, C_LO, f"alt_{letter}")
        assert out["scenario"] == letter
        assert out["confidence"] >= 0.9
        assert (out["crossover_pf_days"] is None) == (letter in "AD")


def test_no_letter_unless_both_frontiers_are_power_laws():
    ref = make_fit(ALPHA, C_C)
    flat = make_fit(-0.001, 1e300, points=np.geomspace(1e-4, 2e-4, 3))  # 0.3 decades, under the 0.5 required
    out = judge(flat, ref, C_LO, "dfa_block")
    assert out["scenario"] is None and out["confidence"] is None and out["crossover_pf_days"] is None
    assert out["reason"] == ("dfa_block's frontier is not a power law (spans 0.30 decades of compute, under 0.5)")
    out = judge(ref, flat, C_LO, "dfa", "bp")
    assert out["reason"].startswith("bp's frontier is not a power law")


def test_measured_gap_interpolates_the_reference_between_its_points():
    ref = make_fit(ALPHA, C_C, points=np.array([1e-6, 1e-4, 1e-2]))
    alt_c = np.array([1e-7, 1e-5, 1e-3])  # the first lies below the reference's range
    alt = PowerLawFit(ALPHA, C_C, None, None, None, 3,
                      np.column_stack([alt_c, 1.10 * (alt_c / C_C) ** ALPHA]), None, ["a", "b", "c"], ["x", "y", "z"])
    gap = measured_gap(alt, ref)
    # the reference's points lie on a power law, so log-linear interpolation is exact: 10% above
    assert gap["compute_pf_days"] == [1e-5, 1e-3] and gap["n_points"] == 2
    assert gap["min"] == pytest.approx(0.10, rel=1e-9) and gap["max"] == pytest.approx(0.10, rel=1e-9)
    assert measured_gap(make_fit(ALPHA, C_C, points=np.array([1.0, 2.0, 3.0])), ref) is None


def table_rows(method, compute, loss, runs, sizes):
    return [{"method": method, "compute_pf_days": c, "loss": l, "run": r, "size": s}
            for c, l, r, s in zip(compute, loss, runs, sizes)]


def test_points_table_judges_every_method():
    rows = table_rows("bp", *noisy_frontier(ALPHA, C_C, 0))
    for i, letter in enumerate("AD"):
        alpha, loss_lo = CASES[letter]
        rows += table_rows(f"alt_{letter}", *noisy_frontier(alpha, law_through(alpha, C_LO, loss_lo), i + 1))
    table = fit_points_table(rows, reference="bp", bootstrap=50, seed=0)
    assert set(table["verdicts"]) == {"alt_A", "alt_D"}
    assert table["verdicts"]["alt_A"]["scenario"] == "A" and table["verdicts"]["alt_D"]["scenario"] == "D"
    assert table["fits"]["bp"]["power_law_ok"] and table["fits"]["bp"]["sizes_on_frontier"][0] == "s0"


def test_missing_reference_is_an_error():
    rows = table_rows("dfa", *noisy_frontier(ALPHA, C_C, 0))
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
    bp = table_rows("bp", *noisy_frontier(ALPHA, C_C, 0))
    alpha, loss_lo = CASES["D"]
    dfa = table_rows("dfa", *noisy_frontier(alpha, law_through(alpha, C_LO, loss_lo), 1))
    write_csv(path, ["method", "compute_pf_days", "loss", "run", "size"],
              [[r["method"], r["compute_pf_days"], r["loss"], r["run"], r["size"]] for r in bp + dfa])
    assert fit_cli([str(path), "--bootstrap", "50", "--seed", "1"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert set(table) == {"fits", "verdicts"}
    assert {"alpha_C", "C_c", "alpha_C_ci", "C_c_ci", "n_points", "frontier", "sizes_on_frontier",
            "fit_range_pf_days", "rms_log_residual", "max_abs_log_residual", "power_law_ok"} <= set(table["fits"]["bp"])
    assert table["fits"]["bp"]["alpha_C"] == pytest.approx(ALPHA, abs=0.005)
    assert table["fits"]["dfa"]["alpha_C"] == pytest.approx(alpha, abs=0.005)
    v = table["verdicts"]["dfa"]
    assert v["scenario"] == "D" and v["crossover_pf_days"] is None and v["confidence"] >= 0.9
    assert v["measured_gap"]["min"] > 0


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
