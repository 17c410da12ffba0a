"""Frontier fits: envelopes, exact and noisy laws, a known L(N, D), transients, bootstrap coverage."""
import math

import numpy as np
import pytest

from beyondbp.config import ConfigError
from beyondbp.frontier import envelope, fit_frontier, fit_power_law, huber_line, small_sample_factor

ALPHA, C_C = -0.07, 3.8e3
PF_DAY = 8.64e19


def test_envelope_is_running_minimum():
    c, l = envelope([3, 1, 2, 4, 2, 5], [2.0, 3.0, 2.5, 2.2, 2.4, 1.0])
    assert c.tolist() == [1, 2, 3, 5]
    assert l.tolist() == [3.0, 2.4, 2.0, 1.0]


def test_pure_fit_on_exact_law():
    c = np.logspace(-6, -2, 20)
    alpha, c_c, e = fit_power_law(c, (c / C_C) ** ALPHA)
    assert alpha == pytest.approx(ALPHA, abs=1e-9)
    assert c_c == pytest.approx(C_C, rel=1e-6)
    assert e is None


def test_huber_line_resists_one_outlier_where_least_squares_does_not():
    x = np.linspace(-2, 2, 9)
    y = -0.1 * x + 1.0 + 0.002 * np.sin(7 * x)
    y[4] += 0.3  # one wild point
    slope, intercept = huber_line(x, y)
    assert slope == pytest.approx(-0.1, abs=0.003) and intercept == pytest.approx(1.0, abs=0.01)
    ls_intercept = np.polyfit(x, y, 1)[1]
    assert abs(ls_intercept - 1.0) > 0.03  # least squares is pulled a third of the way to the outlier
    # vectorised: each row of y is its own regression
    slopes, _ = huber_line(x, np.stack([y, 2 * x]))
    assert slopes[1] == pytest.approx(2.0, abs=1e-12)


def ld_law(n, d, a=0.34, b=0.28, big_a=40.0, big_b=60.0):
    """A Chinchilla-style loss without floor: A N^-a + B D^-b."""
    return big_a * n ** -a + big_b * d ** -b


def synthetic_grid(noise=0.003, seed=0, sizes=np.geomspace(2e4, 2e6, 9), ratios=(10, 20, 40, 80)):
    """Final points of runs on a grid of sizes x tokens-per-parameter, from ld_law plus noise.

    The budgets bracket the optimum, as a study's should: with ratios from 4 to 160 the
    envelope also takes far-from-optimal points (a large model on a few tokens just below a
    small one on many), 4% above the law, and the fit still finds alpha but fails the checks."""
    rng = np.random.default_rng(seed)
    compute, loss, runs, size_names = [], [], [], []
    for i, n in enumerate(sizes):
        for j, r in enumerate(ratios):
            d = r * n
            compute.append(6 * n * d / PF_DAY)
            loss.append(ld_law(n, d) * math.exp(noise * rng.standard_normal()))
            runs.append(f"s{i}_r{j}")
            size_names.append(f"s{i}")
    return np.array(compute), np.array(loss), runs, size_names


def test_a_known_l_n_d_gives_its_compute_optimal_exponent():
    # minimising A N^-a + B D^-b at fixed C = 6ND gives L*(C) proportional to C^(-ab/(a+b))
    a, b = 0.34, 0.28
    truth = -a * b / (a + b)
    compute, loss, runs, sizes = synthetic_grid()
    fit = fit_frontier(compute, loss, runs, sizes, bootstrap=400, seed=0)
    assert fit.alpha_C == pytest.approx(truth, abs=0.006)
    assert fit.alpha_C_ci[0] <= fit.alpha_C <= fit.alpha_C_ci[1]
    assert fit.alpha_C_ci[0] <= truth <= fit.alpha_C_ci[1]
    q = fit.quality()
    assert q["power_law_ok"], q["problems"]
    assert len(q["sizes_on_frontier"]) >= 6 and q["rms_log_residual"] < 0.01
    assert q["frontier"][0][2] == fit.runs[0] and len(q["frontier"]) == fit.n_points
    lo, hi = q["fit_range_pf_days"]
    assert (lo, hi) == (fit.envelope[0, 0], fit.envelope[-1, 0]) and math.log10(hi / lo) > 2


def test_transients_alone_are_not_a_power_law():
    """Every run is caught on its descent from a plateau (a logistic in log tokens): the envelope
    of their final points bends, and the check says so."""
    compute, loss, runs, sizes = [], [], [], []
    rng = np.random.default_rng(0)
    for i, n in enumerate(np.geomspace(2e4, 2e5, 5)):
        for j, d in enumerate(np.geomspace(1e5, 3e6, 6)):
            # the plateau at 3.3 gives way to 2.2 around 1M tokens, whatever the size
            progress = 1.0 / (1.0 + math.exp(-3.0 * (math.log(d) - math.log(1e6))))
            compute.append(6 * n * d / PF_DAY)
            loss.append((3.3 - 1.1 * progress - 0.02 * math.log(n / 2e4)) * math.exp(0.002 * rng.standard_normal()))
            runs.append(f"s{i}_d{j}")
            sizes.append(f"s{i}")
    fit = fit_frontier(np.array(compute), np.array(loss), runs, sizes, bootstrap=50)
    q = fit.quality()
    assert not q["power_law_ok"]
    assert q["rms_log_residual"] > 0.015 or q["max_abs_log_residual"] > 0.04
    assert any("log residual" in p for p in q["problems"])


def test_one_size_alone_is_not_a_frontier():
    c = np.logspace(-8, -6, 8)
    fit = fit_frontier(c, (c / C_C) ** ALPHA, [f"r{i}" for i in range(8)], ["only"] * 8, bootstrap=0)
    assert fit.quality()["problems"] == ["made by 1 model size, fewer than 3"]
    assert not fit.power_law_ok


def test_residual_bootstrap_intervals_cover_the_truth_and_contain_the_estimate():
    """95% intervals from noisy 6-point frontiers of a known law: the estimate always inside,
    the true exponent inside in roughly 95% of the repetitions."""
    c = np.geomspace(1e-9, 1e-7, 6)
    fits = covered = contained = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        loss = (c / C_C) ** ALPHA * np.exp(0.01 * rng.standard_normal(len(c)))
        if np.any(np.diff(loss) >= 0):  # noise lifted a point above its predecessor: off the envelope
            continue
        fit = fit_frontier(c, loss, [f"r{i}" for i in range(6)], [f"s{i}" for i in range(6)],
                           bootstrap=200, seed=seed)
        lo, hi = fit.alpha_C_ci
        fits += 1
        contained += lo <= fit.alpha_C <= hi
        covered += lo <= ALPHA <= hi
    assert fits >= 100
    assert contained == fits
    assert 0.90 <= covered / fits <= 0.99  # measured: 187 of 200 (93.5%); 175 (87.5%) without the t widening


def test_small_sample_widening_is_students_t_over_the_normal():
    assert small_sample_factor(6) == pytest.approx(2.7764 / 1.9600, rel=1e-4)  # t(0.975, 4 dof) / z(0.975)
    assert 1.0 < small_sample_factor(50) < 1.03


def test_too_few_frontier_points_names_method():
    with pytest.raises(ConfigError, match="method dfa: only 2 frontier points, need at least 3"):
        fit_frontier([1e-5, 1e-4], [3.0, 2.5], name="dfa")


def test_irreducible_fit_recovers_floor():
    c = np.geomspace(1e-8, 1e-2, 25)
    loss = 1.5 + (c / 0.1) ** -0.2 * np.exp(0.002 * np.random.default_rng(0).standard_normal(25))
    fit = fit_frontier(c, np.minimum.accumulate(loss), bootstrap=20, seed=0, irreducible=True)
    assert fit.E == pytest.approx(1.5, abs=0.05)
    assert fit.alpha_C == pytest.approx(-0.2, abs=0.01)
    assert fit.samples.shape[1] == 3
