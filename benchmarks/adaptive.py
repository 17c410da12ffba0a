"""The adaptive planner (`study run --until-decided`) against known answers, on the simulated executor.

Each scenario gives BP and one alternative an L(N, D) law (`beyondbp.study.simulated`); each
replicate draws every run's noise anew (`noise_seed`) and jitters the alternative's A by 2%. A
study starts from a small design of the `quick` preset's shape: 4 sizes (1-4 blocks of width 16,
40 tokens per parameter; 4 points, so each law can be backtested), the second size swept at 3
rates per method and the others at its middle rate only, one seed (12 runs); it plans until
decided, until its budget (2e-7 PF-days, about 40 times that design) is spent, until no run
helps, or until the round cap (20 rounds). Where a scenario names a crossing, it lies where the
name says against this design: "one size on" between the largest size (N = 17,248) and the next
(20,528), "far beyond" near 41,000, about the horizon's N. The true letter is read off the true laws
along the study's design (D = 40 N, C = 6 N D) at the verdict's own smallest compute and horizon.

Per scenario: the share of studies decided, the share of decided letters that are right, and
the planner's compute against the full grid its largest choices span: the product design a user
would have had to run by hand for the same information, every size on the ladder from the
smallest to the largest the study reached, every rate the planner tried for a method at every
size, and the most seeds it ran in any (size, rate) at every point. A second ratio counts that
grid at one seed (what a grid without the planner's extra seeds costs). Deciding fits use 300
bootstrap samples, candidate refits 100 (`--bootstrap 2000 --score-bootstrap 200`: what
`study run --until-decided` uses by default).

    PYTHONPATH=src python benchmarks/adaptive.py [--replicates 20] [--workers 2] [--bootstrap 300] [--score-bootstrap 100]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from beyondbp.fit.candidates import pair_verdict
from beyondbp.fit.simulate import LETTERS
from beyondbp.report.decisions import observe
from beyondbp.study.adaptive import Budget, Planner
from beyondbp.study.additions import read_decisions
from beyondbp.study.folder import load_study
from beyondbp.study.plan import plan_study
from beyondbp.study.simulated import Truth, run_simulated
from beyondbp.study.spec import normalise_spec
from beyondbp.config import PF_DAY

TPP = 40
RATES = [4e-3, 1e-2, 2.5e-2]  # the middle size's sweep; the others start at its middle rate
SIZES = {f"L{n}d16": {"n_layer": n, "d_model": 16, "n_head": 1} for n in (1, 2, 3, 4)}
SPEC = {"name": "bench", "methods": ["bp", "alt"], "variants": {"alt": {"method": "dfa_block"}}, "sizes": SIZES,
        "tokens_per_param": TPP,
        "lrs": {m: {s: RATES if s == "L2d16" else [1e-2] for s in SIZES} for m in ("bp", "alt")},
        "seeds": [0], "base": {"data": {"corpus": "shakespeare", "tokenizer": "byte"}, "model": {"context": 64},
                               "train": {"batch_tokens": 512, "n_evals": 2, "eval_tokens": 1024}}}
BP = dict(E=1.0, A=20.0, a=0.30, B=30.0, b=0.30, lr_opt=1e-2, lr_sensitivity=0.1, seed_sd=0.003)
SCENARIOS = {  # the alternative's law (what differs from BP's)
    "A: better, steeper": dict(A=16.0, a=0.32),
    "B: crossing one size on": dict(A=36.1, a=0.36),  # crosses BP at N = (A / 20)^(1 / (a - 0.3)), 19,000
    "B/D: crossing far beyond": dict(A=27.5, a=0.33),  # 41,000
    "C: better small, flatter": dict(A=13.7, a=0.26),
    "D: worse, flatter": dict(A=30.0, a=0.28),
    "per-method floors: lower floor, crossing": dict(E=0.85, A=26.0, a=0.27),
    "per-method floors: higher floor": dict(E=1.1, A=20.0, a=0.31),
    "under-tuned A (lr_opt above the sweep)": dict(A=16.0, a=0.32, lr_opt=0.12),
    "under-tuned D (lr_opt below the sweep)": dict(A=30.0, a=0.28, lr_opt=1.5e-3),
    "noisy B (seed sd 1.2%)": dict(A=36.1, a=0.36, seed_sd=0.012),
}


def _law_along_design(truth: Truth, compute: float) -> float:
    """The law's loss at the best rate along D = TPP N, at compute C = 6 N D (PF-days)."""
    n = math.sqrt(compute * PF_DAY / (truth.flops_per_param_token * TPP))
    return float(truth.loss(n, TPP * n, truth.lr_opt))


def true_letter(truth: dict[str, Truth], c_min: float, horizon: float) -> str:
    gap = [math.log(_law_along_design(truth["alt"], c)) - math.log(_law_along_design(truth["bp"], c))
           for c in (c_min, horizon)]
    return LETTERS[gap[0] > 0, gap[1] > 0]


def full_grid_compute(study_dir: Path, truth: dict[str, Truth], one_seed: bool = False) -> float:
    """The grid the planner's largest choices span (module docstring), in PF-days."""
    plan = load_study(study_dir)
    n_of = {r.size: r.n_params for r in plan.runs}
    total = 0.0
    for method in ("bp", "alt"):
        mine = [r for r in plan.runs if r.method == method]
        rates = {r.lr for r in mine}
        seeds = 1 if one_seed else max(sum(1 for q in mine if (q.size, q.lr) == (r.size, r.lr)) for r in mine)
        total += sum(truth[method].compute_pf_days(n_of[s], TPP * n_of[s]) for s in n_of) * len(rates) * seeds
    return total


def one_study(job: tuple[str, int, int, int]) -> dict:
    name, replicate, bootstrap, score_bootstrap = job
    rng = np.random.default_rng(replicate)
    alt = {**BP, **SCENARIOS[name]}
    alt["A"] *= math.exp(0.02 * rng.standard_normal())
    truth = {"bp": Truth(**BP, noise_seed=replicate + 1), "alt": Truth(**alt, noise_seed=replicate + 1)}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s"
        plan = plan_study(normalise_spec(SPEC))
        planner = Planner(plan, out, lambda p: run_simulated(p, out, truth), observe, Budget(2e-7, "pf_days"),
                          bootstrap, score_bootstrap, say=lambda line: None)
        last = planner.run()
        obs = observe(out)
        verdict = pair_verdict(obs.rows, "alt", "bp", bootstrap, 0, obs.noise)
        decided = last["stop"] == "decided"
        right = decided and verdict["scenario"] == true_letter(truth, verdict["c_min_pf_days"],
                                                                verdict["horizon_pf_days"])
        return {"scenario": name, "decided": decided, "right": right, "letter": verdict["scenario"],
                "rounds": len(read_decisions(out)), "stop": last["stop"], "ratio": obs.spent("pf_days") / full_grid_compute(out, truth),
                "ratio_one_seed": obs.spent("pf_days") / full_grid_compute(out, truth, one_seed=True)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bootstrap", type=int, default=300, help="the deciding fits' samples")
    parser.add_argument("--score-bootstrap", type=int, default=100, help="each candidate refit's samples")
    args = parser.parse_args()
    jobs = [(name, r, args.bootstrap, args.score_bootstrap) for r in range(args.replicates) for name in SCENARIOS]
    results = []
    with Pool(args.workers) as pool:
        for result in pool.imap_unordered(one_study, jobs, chunksize=1):
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)  # progress; a cut run keeps its studies
    print(f"{len(results)} simulated studies, {args.replicates} per scenario\n")
    print("| scenario | decided | right of decided | compute / full grid (median) | the same, grid at one seed "
          "| rounds (median, max) | undecided: no run helps / budget / round cap |")
    print("|---|---|---|---|---|---|---|")
    for name in SCENARIOS:
        mine = [r for r in results if r["scenario"] == name]
        decided = [r for r in mine if r["decided"]]
        right = f"{sum(r['right'] for r in decided) / len(decided):.0%}" if decided else "-"
        print(f"| {name} | {len(decided) / len(mine):.0%} | {right} | {np.median([r['ratio'] for r in mine]):.2f} "
              f"| {np.median([r['ratio_one_seed'] for r in mine]):.2f} | {np.median([r['rounds'] for r in mine]):.0f}, "
              f"{max(r['rounds'] for r in mine)} | "
              + " / ".join(str(sum(r["stop"] == k for r in mine)) for k in ("no-candidate", "budget", "rounds")) + " |")
    decided = [r for r in results if r["decided"]]
    print(f"\nall: decided {len(decided) / len(results):.0%}, right {sum(r['right'] for r in decided) / max(1, len(decided)):.1%}"
          f" of decided, median compute ratio {np.median([r['ratio'] for r in results]):.2f} "
          f"({np.median([r['ratio_one_seed'] for r in results]):.2f} against the grid at one seed; "
          f"{np.median([r['ratio'] for r in decided] or [math.nan]):.2f} over the decided studies)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
