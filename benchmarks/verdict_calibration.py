"""Calibration of the verdict on simulated studies with known answers.

    python benchmarks/verdict_calibration.py [--replicates 200] [--bootstrap 1000] [--designs small,cpu]
                                             [--scenarios NAME;NAME] [--quick]

For every scenario of `beyondbp.fit.simulate` (pure power laws for A-D, a shared floor, a floor
per method crossing 4 or 8 decades on, equal exponents 3% apart with equal or unequal noise, a
bending frontier, learning curves with the paper's or a larger mid-run excess, an under-tuned
alternative, whose sweep's best rate then sits at an edge: `simulate.sweep_trials`) and every design (small: 4 sizes over 1 decade, 0.4% noise; cpu: 5 sizes over 1.5
decades; noisy: 4 sizes over 1 decade, 0.5% noise), draws replicates, runs them through
`beyondbp fit`'s code path (`fit_points_table`) and prints one Markdown row per scenario:

- truth: the letter of the true laws within the horizon (10x the study's largest compute),
  and in brackets at infinity (`simulate.true_letter_within`, `true_letter_at_infinity`);
- right: share of replicates printing the true letter within the horizon the verdict states
  (a failed backtest cuts it to the measured compute: "horizon cut" counts those; their truth is
  the true laws' letter through the cut horizon);
- wrong/printed: wrong letters among those printed (the headline: at most 5%), with the wrong
  letters counted; undet.: share with no letter;
- mult. cov.: coverage of the compute multiplier's intervals among those given (with how many
  were read more than 0.3 decades outside a method's measured compute: their coverage apart);
  withheld: share of multiplier entries given without an interval;
- Δα cov.: coverage of the trend's Δalpha interval where the true laws have a Δalpha (pure);
- ∞ right / wrong: the trend's letter at infinity against the true one (informational);
- floor degen.: share of replicates whose per-pair floor fit is flagged degenerate;
- share: median bootstrap share of the printed letters.

`--quick` (4 replicates, 200 bootstrap samples, the small design) is a smoke test.
Fields read from each verdict: `scenario`, `bootstrap_share` (before it existed: `confidence`),
`horizon_pf_days`, `trend` {delta_alpha, delta_alpha_ci, letter_at_infinity} (before: the
verdict's own delta_alpha_ci and pure_scenario), `floor` (before: `shared_floor`) and
`compute_multiplier` entries {loss, value, ci, extrapolated_decades}.
"""
from __future__ import annotations

import argparse
import math
import time
import zlib
from collections import Counter

import numpy as np

from beyondbp.fit.points import fit_points_table
from beyondbp.fit.simulate import (HORIZON_FACTOR, Design, horizon, scenario_design, scenarios, study_range,
                                   study_rows, study_sweeps, true_delta_alpha, true_letter_at_infinity, true_letter_within, true_log_gap,
                                   true_log_multiplier)
from beyondbp.fit.tuning import choose_rates, lr_edges
from beyondbp.report.markdown import markdown_table

DESIGNS = {"small": Design(4, 1.0, 0.004), "cpu": Design(5, 1.5, 0.004), "noisy": Design(4, 1.0, 0.005)}
EXTRAPOLATED = 0.3  # decades outside a method's measured compute: the line for a multiplier interval
HEADER = ["design", "scenario", "truth (∞)", "right", "wrong/printed", "undet.", "horizon cut",
          "mult. cov. (>0.3 dec.)", "withheld", "Δα cov.", "∞ right / wrong", "floor degen.", "share"]


def seed_of(*parts: str) -> int:
    return zlib.crc32("/".join(parts).encode())


def _trend(v: dict) -> dict:
    trend = v.get("trend")
    if trend:
        return trend
    return {"delta_alpha": v.get("delta_alpha"), "delta_alpha_ci": v.get("delta_alpha_ci"),
            "letter_at_infinity": v.get("pure_scenario")}


def _multiplier_entries(v: dict) -> list[dict]:
    out = []
    for entry in v.get("compute_multiplier") or []:
        decades = entry.get("extrapolated_decades") or {}
        out.append({"loss": entry["loss"], "ci": entry.get("ci"),
                    "outside": max(decades.values()) if decades else 0.0})
    return out


def replicate(scenario, design_name: str, seed: int, bootstrap: int) -> dict:
    """One simulated study through `fit_points_table`: what the calibration reads of its verdict."""
    design = DESIGNS[design_name]
    rng = np.random.default_rng([seed, seed_of(scenario.name), seed_of(_design_key(design))])
    rows = study_rows(scenario, design, rng)
    sweep_rng = np.random.default_rng([seed, seed_of(scenario.name), seed_of(_design_key(design)), 1])
    noisy = scenario_design(scenario, design)  # the seed noise a study measures: the points' own
    edges = lr_edges(choose_rates(study_sweeps(scenario, design, sweep_rng)),
                     {m: (noisy.noise_of(m), 1000) for m in ("bp", "alt")})
    table = fit_points_table(rows, bootstrap=bootstrap, seed=seed, lr_edges=edges)
    v = table["verdicts"]["alt"]
    floor = v.get("floor") or v.get("shared_floor") or {}
    share = v.get("bootstrap_share", v.get("confidence"))
    factor = v.get("horizon_factor") or HORIZON_FACTOR  # a failed backtest cuts it to the measured compute
    return {"letter": v.get("scenario"), "share": share, "trend": _trend(v), "horizon": v.get("horizon_pf_days"),
            "factor": factor, "truth": true_letter_within(scenario, design, factor),
            "degenerate": bool(floor.get("degenerate")), "multiplier": _multiplier_entries(v),
            "alpha": table["fits"]["alt"]["alpha_C"], "floor_letter": floor.get("scenario"),
            "own_floors_letter": (v.get("per_method_floors") or {}).get("scenario"),
            "gaps": [(v.get(f"delta_log_loss_at_{at}"), v.get(f"delta_log_loss_at_{at}_ci"))
                     for at in ("c_min", "horizon")]}


def _design_key(design: Design) -> str:
    """The design as the benchmark seeded it before designs had a per-method noise (same draws)."""
    return f"Design(sizes={design.sizes}, decades={design.decades}, noise={design.noise})"


def _share(flags) -> float:
    flags = list(flags)
    return float(np.mean(flags)) if flags else math.nan


def _covers(ci, truth: float) -> bool:
    lo, hi = ci
    return (math.log(lo) if lo and lo > 0 else -math.inf) <= truth <= (math.log(hi) if hi else math.inf)


def multiplier_summary(scenario, results: list[dict]) -> dict:
    """Coverage of the multiplier intervals given (all, and those read > 0.3 decades outside a
    method's measured compute) and the share of entries withheld."""
    covered, far, withheld = [], [], []
    for r in results:
        for entry in r["multiplier"]:
            truth = true_log_multiplier(scenario, entry["loss"])
            withheld.append(entry["ci"] is None)
            if entry["ci"] is None or not math.isfinite(truth):
                continue
            covered.append(_covers(entry["ci"], truth))
            if entry["outside"] > EXTRAPOLATED:
                far.append(covered[-1])
    return {"coverage": _share(covered), "far_coverage": _share(far), "far": len(far), "given": len(covered),
            "withheld": _share(withheld)}


def summarise(scenario, design_name: str, results: list[dict]) -> dict:
    design = DESIGNS[design_name]
    truth, at_infinity = true_letter_within(scenario, design), true_letter_at_infinity(scenario, design)
    letters = [r["letter"] for r in results]
    printed = [letter for letter in letters if letter is not None]
    wrong = Counter(r["letter"] for r in results if r["letter"] is not None and r["letter"] != r["truth"])
    trend_letters = [r["trend"].get("letter_at_infinity") for r in results]
    out = {"truth": truth, "at_infinity": at_infinity, "n": len(results), "printed": len(printed),
           "wrong": sum(wrong.values()), "wrong_letters": wrong,
           "right": _share(r["letter"] == r["truth"] for r in results),
           "undetermined": _share(x is None for x in letters),
           "cut": _share(r["factor"] < 0.999 * HORIZON_FACTOR for r in results),
           "wrong_share": sum(wrong.values()) / len(printed) if printed else math.nan,
           "infinity_right": _share(x == at_infinity for x in trend_letters),
           "infinity_wrong": _share(x is not None and x != at_infinity for x in trend_letters),
           "degenerate": _share(r["degenerate"] for r in results),
           "share": float(np.median([r["share"] for r in results if r["letter"] is not None and r["share"] is not None]
                                    or [math.nan])),
           "horizon_mismatch": sum(r["horizon"] is not None and
                                   not math.isclose(r["horizon"], horizon(scenario, design, r["factor"]), rel_tol=0.01)
                                   for r in results)}
    delta = true_delta_alpha(scenario)
    cis = [r["trend"].get("delta_alpha_ci") for r in results]
    out["delta_coverage"] = (_share(ci[0] <= delta <= ci[1] for ci in cis if ci and None not in ci)
                             if math.isfinite(delta) else math.nan)
    out["multiplier"] = multiplier_summary(scenario, results)
    return out


def diagnosis(scenario, design_name: str, results: list[dict]) -> str | None:
    """Where the wrong letters come from: the estimated Δ ln L at the smallest compute and at the
    horizon against the true ones (median, and how often the interval misses the truth), and
    what the pair's floor fit and the per-method floors said."""
    design = DESIGNS[design_name]
    truth = true_letter_within(scenario, design)
    wrong = [r for r in results if r["letter"] is not None and r["letter"] != r["truth"]]
    if not wrong:
        return None
    parts = []
    for i, (name, compute) in enumerate((("smallest compute", study_range(scenario, design)[0]),
                                         ("horizon", None))):
        true_gaps = [true_log_gap(scenario, compute or horizon(scenario, design, r["factor"])) for r in wrong]
        found = [(r["gaps"][i], t) for r, t in zip(wrong, true_gaps) if r["gaps"][i][0] is not None]
        if not found:
            continue
        true_gap = float(np.median(true_gaps))
        missed = _share(not ci[0] <= t <= ci[1] for (_, ci), t in found)
        parts.append(f"Δ ln L at the {name}: true {true_gap:+.3f}, estimated median "
                     f"{float(np.median([g for (g, _), _ in found])):+.3f}, interval misses the truth in {_pct(missed)}")
    for key, label in (("floor_letter", "pair's floor fit"), ("own_floors_letter", "per-method floors")):
        said = Counter(str(r[key]) for r in wrong)
        parts.append(f"{label}: " + ", ".join(f"{k} {n}" for k, n in sorted(said.items())))
    degenerate, cut = sum(r["degenerate"] for r in wrong), sum(r["factor"] < 0.999 * HORIZON_FACTOR for r in wrong)
    return (f"- {design_name}, {scenario.name} (truth {truth}; horizon cut by a backtest in {cut}): "
            f"{len(wrong)} wrong "
            f"({', '.join(f'{k} {n}' for k, n in sorted(Counter(r['letter'] for r in wrong).items()))}); "
            + "; ".join(parts) + f"; floor degenerate in {degenerate}")


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.0f}%"


def table_row(design_name: str, scenario, s: dict) -> list[str]:
    m = s["multiplier"]
    wrong = ", ".join(f"{k} {n}" for k, n in sorted(s["wrong_letters"].items()))
    far = f"{_pct(m['far_coverage'])} of {m['far']}" if m["far"] else "none"
    return [design_name, scenario.name, f"{s['truth']} ({s['at_infinity']})", _pct(s["right"]),
            f"{_pct(s['wrong_share'])} ({s['wrong']} of {s['printed']}{': ' + wrong if wrong else ''})",
            _pct(s["undetermined"]), _pct(s["cut"]), f"{_pct(m['coverage'])} ({far})", _pct(m["withheld"]),
            _pct(s["delta_coverage"]), f"{_pct(s['infinity_right'])} / {_pct(s['infinity_wrong'])}",
            _pct(s["degenerate"]), "-" if math.isnan(s["share"]) else f"{s['share']:.3f}"]


def run_design(design_name: str, chosen, replicates: int, bootstrap: int) -> None:
    design = DESIGNS[design_name]
    start = time.perf_counter()
    print(f"\n{design_name}: {design.sizes} sizes over {design.decades} decades, {100 * design.noise:.1f}% noise, "
          f"{replicates} replicates, {bootstrap} bootstrap samples\n")
    print("\n".join(markdown_table(HEADER, [])), flush=True)
    printed = wrong = 0
    over, mismatched, notes = [], 0, []
    for scenario in chosen:
        results = [replicate(scenario, design_name, seed, bootstrap) for seed in range(replicates)]
        s = summarise(scenario, design_name, results)
        notes.append(diagnosis(scenario, design_name, results))
        printed, wrong, mismatched = printed + s["printed"], wrong + s["wrong"], mismatched + s["horizon_mismatch"]
        if s["printed"] and s["wrong_share"] > 0.05:
            over.append(f"{scenario.name} ({_pct(s['wrong_share'])})")
        print(markdown_table(HEADER, [table_row(design_name, scenario, s)])[-1], flush=True)
    print(f"\nletters printed: {printed}, wrong: {wrong} ({_pct(wrong / printed if printed else math.nan)}); "
          f"scenarios with more than 5% wrong among printed: {', '.join(over) or 'none'}; "
          f"{time.perf_counter() - start:.0f} s")
    notes = [n for n in notes if n]
    if notes:
        print("\nWrong letters, where they come from:\n\n" + "\n".join(notes))
    if mismatched:
        print(f"warning: {mismatched} verdicts state a horizon other than their factor x the study's largest compute")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=None, help="per scenario and design (default 200)")
    parser.add_argument("--bootstrap", type=int, default=None, help="samples per fit (default 1000)")
    parser.add_argument("--designs", default=None, help="of small, cpu, noisy (default small,cpu)")
    parser.add_argument("--scenarios", default="", help="names separated by semicolons (default: all)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 4 replicates, 200 bootstrap samples, small")
    args = parser.parse_args()
    quick = args.quick
    replicates = args.replicates or (4 if quick else 200)
    bootstrap = args.bootstrap or (200 if quick else 1000)
    designs = (args.designs or ("small" if quick else "small,cpu")).split(",")
    unknown = [d for d in designs if d not in DESIGNS]
    wanted = [s.strip() for s in args.scenarios.split(";") if s.strip()]
    names = {s.name for s in scenarios()}
    unknown += [w for w in wanted if w not in names]
    if unknown:
        parser.error(f"unknown design or scenario: {', '.join(unknown)}")
    chosen = [s for s in scenarios() if not wanted or s.name in wanted]
    for design_name in designs:
        run_design(design_name, chosen, replicates, bootstrap)


if __name__ == "__main__":
    main()
