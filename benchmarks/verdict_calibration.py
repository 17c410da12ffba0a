"""Calibration of the verdict on simulated studies with known answers.

    python benchmarks/verdict_calibration.py [--replicates 200] [--bootstrap 2000] [--designs small,cpu]

For every scenario of `beyondbp.simulate` (pure power laws for A-D, laws with a shared floor E,
learning curves like the paper's) and every design (small: 4 sizes over 1 decade, 0.4% noise;
cpu: 5 sizes over 1.5 decades, 0.4% noise; noisy: 4 sizes over 1 decade, 0.5% noise), draws
replicates, runs them through `beyondbp fit`'s code path (`fit_points_table`) and prints:

- right: share of replicates whose letter is the true one;
- conf>=0.9: share given the true letter with confidence >= 0.9;
- wrong: share given a wrong letter; confident wrong: with confidence >= 0.9;
- undet.: share undetermined (no letter); floor: of those, how many because the floor decided;
- Δα cov.: coverage of the Δalpha interval (pure laws and learning curves: the truth is Δalpha of
  the frontiers; with a floor there is no single true Δalpha of the pure form, so "-");
- mult. cov.: coverage of the compute-multiplier intervals (all entries, true laws);
- |alpha err|: mean and largest |alpha_C - truth| of the alternative (learning curves and pure).
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np

from beyondbp.fit.points import fit_points_table
from beyondbp.fit.simulate import Design, scenarios, study_rows, true_delta_alpha, true_log_multiplier

DESIGNS = {"small": Design(4, 1.0, 0.004), "cpu": Design(5, 1.5, 0.004), "noisy": Design(4, 1.0, 0.005)}


def replicate(scenario, design, seed: int, bootstrap: int) -> dict:
    rng = np.random.default_rng([seed, hash_name(scenario.name), hash_name(str(design))])
    table = fit_points_table(study_rows(scenario, design, rng), bootstrap=bootstrap, seed=seed)
    v, fit = table["verdicts"]["alt"], table["fits"]["alt"]
    out = {"letter": v["scenario"], "confidence": v["confidence"], "floor": "floor decides" in (v.get("reason") or ""),
           "alpha": fit["alpha_C"], "delta_ci": v["delta_alpha_ci"], "multiplier": v["compute_multiplier"] or []}
    return out


def hash_name(text: str) -> int:
    import zlib
    return zlib.crc32(text.encode())


def summarise(scenario, results: list[dict]) -> dict:
    n = len(results)
    letters = [r["letter"] for r in results]
    confident = [r["letter"] is not None and (r["confidence"] or 0) >= 0.9 for r in results]
    right = [letter == scenario.truth for letter in letters]
    wrong = [letter is not None and letter != scenario.truth for letter in letters]
    out = {"n": n, "right": np.mean(right), "right_confident": np.mean([a and b for a, b in zip(right, confident)]),
           "wrong": np.mean(wrong), "confident_wrong": np.mean([a and b for a, b in zip(wrong, confident)]),
           "undetermined": np.mean([letter is None for letter in letters]),
           "floor": np.mean([r["floor"] for r in results])}
    if scenario.kind != "floor":
        truth = true_delta_alpha(scenario)
        cis = [r["delta_ci"] for r in results if r["delta_ci"]]
        out["delta_coverage"] = np.mean([lo <= truth <= hi for lo, hi in cis]) if cis else math.nan
        errors = np.abs(np.array([r["alpha"] for r in results]) - scenario.alt.alpha)
        out["alpha_error"] = (float(errors.mean()), float(errors.max()))
    covered = []
    for r in results:
        for entry in r["multiplier"]:
            truth = true_log_multiplier(scenario, entry["loss"])
            lo, hi = entry["ci"]
            if math.isfinite(truth):
                covered.append(math.log(lo or 1e-300) <= truth <= (math.log(hi) if hi else math.inf))
    out["multiplier_coverage"] = np.mean(covered) if covered else math.nan
    return out


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.0f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--designs", default="small,cpu")
    parser.add_argument("--scenarios", default="", help="names separated by semicolons (default: all)")
    args = parser.parse_args()
    wanted = [s.strip() for s in args.scenarios.split(";") if s.strip()]
    chosen = [s for s in scenarios() if not wanted or s.name in wanted]
    header = ("| design | scenario | truth | right | right, conf>=0.9 | wrong | confident wrong | undet. "
              "(floor) | Δα cov. | mult. cov. | abs. alpha err, mean / max |")
    for design_name in args.designs.split(","):
        design = DESIGNS[design_name]
        start = time.perf_counter()
        print(f"\n{design_name}: {design.sizes} sizes over {design.decades} decades, {100 * design.noise:.1f}% noise, "
              f"{args.replicates} replicates, {args.bootstrap} bootstrap samples\n")
        print(header)
        print("|" + "---|" * 11)
        totals = {"given_confident": 0, "confident_wrong": 0}
        for scenario in chosen:
            results = [replicate(scenario, design, seed, args.bootstrap) for seed in range(args.replicates)]
            s = summarise(scenario, results)
            totals["given_confident"] += sum(r["letter"] is not None and (r["confidence"] or 0) >= 0.9 for r in results)
            totals["confident_wrong"] += round(s["confident_wrong"] * s["n"])
            err = s.get("alpha_error")
            print(f"| {design_name} | {scenario.name} | {scenario.truth} | {_pct(s['right'])} | "
                  f"{_pct(s['right_confident'])} | {_pct(s['wrong'])} | {_pct(s['confident_wrong'])} | "
                  f"{_pct(s['undetermined'])} ({_pct(s['floor'])}) | {_pct(s.get('delta_coverage'))} | "
                  f"{_pct(s['multiplier_coverage'])} | "
                  f"{'-' if not err else f'{err[0]:.4f} / {err[1]:.4f}'} |", flush=True)
        given = totals["given_confident"]
        print(f"\nletters given with confidence >= 0.9: {given}, wrong: {totals['confident_wrong']} "
              f"({_pct(totals['confident_wrong'] / given if given else math.nan)}); "
              f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
