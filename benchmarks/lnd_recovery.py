"""Recovery and interval coverage of the L(N, D) fit on simulated runs from known laws.

    python benchmarks/lnd_recovery.py                      # the table in benchmarks/LND.md
    python benchmarks/lnd_recovery.py --replicates 20 --bootstrap 100   # a quick look

For each law set and grid: `--replicates` simulated studies (multiplicative log-normal noise),
each fitted with `--bootstrap` refits; prints the recovery error of a, b and E (median, 90th
percentile, share within the issue's targets: 0.02 for a and b, 2% for E) and the share of
replicates whose 95% interval covers the truth, for E, A, B, a, b and the allocation exponent
b / (a + b). Then the same coverage with every bootstrap refit started from the whole grid
instead of the full fit (does the warm start bias the intervals?), and the time of one fit of
250 runs with and without its bootstrap. Markdown table with --markdown.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from table_print import print_table

from beyondbp.fit.lnd import PARAMS, budget_grid, exponents, fit_lnd, law, method_rng, percentile_interval, simulate_losses

LAWS = {  # (E, A, B, a, b)
    "cpu-1": (1.5, 60.0, 105.0, 0.5, 0.4),
    "cpu-2": (1.2, 25.0, 30.0, 0.35, 0.3),
    "cpu-3": (1.7, 300.0, 1000.0, 0.7, 0.6),
    "chinchilla": (1.69, 406.4, 410.7, 0.34, 0.28),
    "epoch": (1.82, 482.0, 2085.0, 0.35, 0.37),
}
CPU_SIZES = (1e4, 2e5)  # non-embedding parameters of the tiny byte-level models
GRIDS = {  # name: (sizes, tokens per parameter)
    "cpu 4x4": (np.geomspace(*CPU_SIZES, 4), np.geomspace(20, 320, 4)),
    "cpu 5x5": (np.geomspace(*CPU_SIZES, 5), np.geomspace(20, 320, 5)),
    "chin 5x3": (np.geomspace(1e7, 1e10, 5), np.geomspace(5, 160, 3)),
    "chin 9x8": (np.geomspace(1e7, 1e10, 9), np.geomspace(5, 160, 8)),
}
CONFIGS = [(law, grid) for law in ("cpu-1", "cpu-2", "cpu-3") for grid in ("cpu 4x4", "cpu 5x5")] + \
          [(law, grid) for law in ("chinchilla", "epoch") for grid in ("chin 5x3", "chin 9x8")]
DESIGNS = {  # CPU-range grid variants for the information table (--designs)
    "5 sizes 1e4-2e5 x 5 budgets 20-320": (np.geomspace(1e4, 2e5, 5), np.geomspace(20, 320, 5)),
    "8 sizes 1e4-2e5 x 5 budgets 20-320": (np.geomspace(1e4, 2e5, 8), np.geomspace(20, 320, 5)),
    "5 sizes 1e4-2e5 x 8 budgets 10-1280": (np.geomspace(1e4, 2e5, 5), np.geomspace(10, 1280, 8)),
    "5 sizes 1e4-2e5 x 5 budgets, 2 seeds": (np.repeat(np.geomspace(1e4, 2e5, 5), 2), np.geomspace(20, 320, 5)),
    "5 sizes 3e3-2e5 x 5 budgets 20-320": (np.geomspace(3e3, 2e5, 5), np.geomspace(20, 320, 5)),
    "5 sizes 1e4-1e6 x 5 budgets 20-320": (np.geomspace(1e4, 1e6, 5), np.geomspace(20, 320, 5)),
    "7 sizes 3e3-1e6 x 5 budgets 20-320": (np.geomspace(3e3, 1e6, 7), np.geomspace(20, 320, 5)),
}
COLD_CONFIGS = [("cpu-1", "cpu 4x4"), ("chinchilla", "chin 5x3")]


def covered(interval, value) -> bool:
    return interval is not None and interval[0] <= value <= interval[1]


def replicate(params, grid, noise, bootstrap, rng, seed, starts="warm") -> dict:
    """Fit one simulated study; errors of a, b, E and which intervals cover the truth."""
    n, d = budget_grid(*GRIDS[grid])
    fit = fit_lnd(n, d, simulate_losses(params, n, d, noise, rng), bootstrap=bootstrap, seed=seed,
                  bootstrap_starts=starts)
    truth = dict(zip(PARAMS, params))
    out = {"da": abs(fit.a - truth["a"]), "db": abs(fit.b - truth["b"]), "dE": abs(fit.E / truth["E"] - 1),
           "dnexp": abs(fit.b / (fit.a + fit.b) - exponents(params)["n_exponent"])}
    for name in PARAMS:
        out[f"cov_{name}"] = covered(fit.interval(name), truth[name])
    ci = percentile_interval(exponents(fit.samples.T)["n_exponent"])
    out["cov_nexp"] = covered(ci, exponents(params)["n_exponent"])
    return out


def run_config(law, grid, noise, replicates, bootstrap, starts="warm") -> dict:
    rng = method_rng(f"{law} {grid} {noise}", replicates)
    rows = [replicate(LAWS[law], grid, noise, bootstrap, rng, seed=i, starts=starts) for i in range(replicates)]
    summary = {"law": law, "grid": grid, "runs": len(budget_grid(*GRIDS[grid])[0]), "noise": noise}
    for key, target in (("da", 0.02), ("db", 0.02), ("dE", 0.02), ("dnexp", 0.02)):
        values = np.array([r[key] for r in rows])
        summary[key] = (np.median(values), np.percentile(values, 90), np.mean(values <= target))
    summary["bound"] = information_bound(LAWS[law], grid, noise)
    for key in [k for k in rows[0] if k.startswith("cov_")]:
        summary[key] = np.mean([r[key] for r in rows])
    return summary


def design_rows(noise: float) -> list[list[str]]:
    """Cramer-Rao sd of a, b, E / E and b / (a + b) for each CPU law on each design variant."""
    rows = []
    for name, grid in DESIGNS.items():
        GRIDS[name] = grid
        for law_name in ("cpu-1", "cpu-2", "cpu-3"):
            bound = information_bound(LAWS[law_name], name, noise)
            rows.append([name, law_name, str(len(budget_grid(*grid)[0]))] +
                        [f"{bound[0]:.3f}", f"{bound[1]:.3f}", f"{bound[2]:.2%}", f"{bound[3]:.3f}"])
    return rows


def information_bound(params, grid, noise) -> np.ndarray:
    """Standard deviations of a, b, E / E and b / (a + b) that the best unbiased estimator
    reaches with Gaussian log-noise of sd `noise` (Cramer-Rao: noise^2 (J^T J)^-1, J the
    Jacobian of log L in (E, A, B, a, b)): what the grid itself allows, whatever the fit."""
    n, d = budget_grid(*GRIDS[grid])
    e, big_a, big_b, a, b = params
    loss = law(params, n, d)
    jac = np.column_stack([1.0 / loss, n ** -a / loss, d ** -b / loss,
                           -big_a * n ** -a * np.log(n) / loss, -big_b * d ** -b * np.log(d) / loss])
    cov = noise ** 2 * np.linalg.inv(jac.T @ jac)
    grad_nexp = np.array([0.0, 0.0, 0.0, -b / (a + b) ** 2, a / (a + b) ** 2])
    return np.array([np.sqrt(cov[3, 3]), np.sqrt(cov[4, 4]), np.sqrt(cov[0, 0]) / e,
                     np.sqrt(grad_nexp @ cov @ grad_nexp)])


def timing(bootstrap: int) -> list[tuple[float, float]]:
    """(wall, process CPU) seconds of one fit of 250 runs (10 sizes x 25 budgets), without and
    with its bootstrap: on a shared machine the CPU time is the steadier figure."""
    n, d = budget_grid(np.geomspace(1e7, 1e10, 10), np.geomspace(5, 320, 25))
    loss = simulate_losses(LAWS["chinchilla"], n, d, 0.005, np.random.default_rng(0))
    out = []
    for refits in (0, bootstrap):
        wall, cpu = time.perf_counter(), time.process_time()
        fit_lnd(n, d, loss, bootstrap=refits)
        out.append((time.perf_counter() - wall, time.process_time() - cpu))
    return out


RECOVERY_HEADER = ["law", "grid", "runs", "noise", "|da| med/p90/<=.02", "sd(a) bound",
                   "|db| med/p90/<=.02", "sd(b) bound", "|dE|/E med/p90/<=2%", "sd(E)/E bound",
                   "|d b/(a+b)| med/p90/<=.02", "sd bound"]
COVERAGE_HEADER = ["law", "grid", "runs", "noise", "cov E", "cov A", "cov B", "cov a", "cov b", "cov b/(a+b)"]


def recovery_row(s: dict) -> list[str]:
    def err(key, pct=False):
        med, p90, share = s[key]
        scale, unit = (100, "%") if pct else (1, "")
        return f"{med * scale:.3g}{unit} / {p90 * scale:.3g}{unit} / {share:.0%}"
    a, b, e, nexp = s["bound"]
    return [s["law"], s["grid"], str(s["runs"]), f"{s['noise']:.1%}", err("da"), f"{a:.3f}", err("db"),
            f"{b:.3f}", err("dE", pct=True), f"{e:.2%}", err("dnexp"), f"{nexp:.3f}"]


def coverage_row(s: dict) -> list[str]:
    return [s["law"], s["grid"], str(s["runs"]), f"{s['noise']:.1%}"] + \
           [f"{s[f'cov_{k}']:.0%}" for k in ("E", "A", "B", "a", "b", "nexp")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--cold-replicates", type=int, default=40,
                        help="replicates of the warm-versus-grid-start comparison (0: skip)")
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.003, 0.005])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--designs", action="store_true",
                        help="only print the information bound of CPU grid variants (instant)")
    args = parser.parse_args(argv)
    if args.designs:
        noise = max(args.noise)
        print(f"Cramer-Rao sd at {noise:.1%} noise (runs: every size at every budget)\n")
        print_table(["grid", "law", "runs", "sd(a)", "sd(b)", "sd(E)/E", "sd(b/(a+b))"], design_rows(noise),
                    args.markdown)
        return 0
    start = time.perf_counter()
    summaries = []
    for noise in args.noise:
        for law, grid in CONFIGS:
            summaries.append(run_config(law, grid, noise, args.replicates, args.bootstrap))
            print(f"  done {law} {grid} noise {noise:.1%} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    print(f"Recovery: {args.replicates} replicates per row; error median / 90th percentile / share "
          "within target; bound: sd of the best unbiased estimator (Cramer-Rao, Gaussian noise)\n")
    print_table(RECOVERY_HEADER, [recovery_row(s) for s in summaries], args.markdown)
    print(f"\nCoverage of the 95% intervals ({args.bootstrap} bootstrap refits, warm start)\n")
    print_table(COVERAGE_HEADER, [coverage_row(s) for s in summaries], args.markdown)
    if args.cold_replicates:
        cold = []
        for law, grid in COLD_CONFIGS:
            for starts in ("warm", "grid"):
                s = run_config(law, grid, max(args.noise), args.cold_replicates, args.bootstrap, starts)
                cold.append([starts] + coverage_row(s))
        print(f"\nWarm start against grid start of each bootstrap refit, {args.cold_replicates} replicates "
              "(the same simulated studies in both rows of a pair)\n")
        print_table(["refit start"] + COVERAGE_HEADER, cold, args.markdown)
    (plain, plain_cpu), (full, full_cpu) = timing(args.bootstrap)
    print(f"\nfit of 250 runs: {plain:.2f} s wall ({plain_cpu:.2f} s CPU); with {args.bootstrap} bootstrap "
          f"refits: {full:.2f} s wall ({full_cpu:.2f} s CPU); load average {os.getloadavg()[0]:.1f}")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
