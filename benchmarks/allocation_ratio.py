"""Is a fixed tokens-per-parameter ratio compute-optimal? Read from an allocation study's L(N, D) fits.

    python benchmarks/allocation_ratio.py STUDY_DIR [--ratio 80] [--presets quick,cpu] [--bootstrap 2000]

Fits each method's L(N, D) on the study's best-learning-rate runs as `study report` does
(`report.lnd.allocation_section`), then, at the compute of the smallest and the largest run
of each named preset (every size trained at its own ratio; C = 6 N D, the ratio does not depend
on the constant), prints per method:

- the compute-optimal tokens per parameter with its 95% interval, and whether it lies inside the
  study's runs (estimate and interval: `fit.lnd_alloc.bracketing`);
- the excess loss of training at `--ratio` tokens per parameter instead, L(N_r, r N_r) / L*(C) - 1;
- the extra compute that costs: C / C*(L(N_r, r N_r)) - 1, with C* the compute at which the
  optimal allocation reaches that loss.

Intervals are percentile intervals over the L(N, D) bootstrap refits.
"""
from __future__ import annotations

import argparse

import numpy as np

from beyondbp.fit.lnd import law, percentile_interval
from beyondbp.fit.lnd_alloc import _compute_for, optimal_allocation, optimal_loss, optimal_loss_law
from beyondbp.report.lnd import allocation_section
from beyondbp.report.results import best_lr_runs, collect
from beyondbp.study.plan import plan_study
from beyondbp.study.spec import load_spec

K = 6.0


def preset_computes(name: str) -> list[float]:
    """C = 6 N D of the preset's smallest and largest run (its own ratio)."""
    computes = [K * r.n_params * r.tokens for r in plan_study(load_spec(preset=name)).runs]
    return [min(computes), max(computes)]


def _text(value: float, ci) -> str:
    return f"{value:.3g} [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else f"{value:.3g}"


def ratio_rows(fit, compute: float, ratio: float) -> dict:
    """Optimal tokens per parameter, excess loss and extra compute at `ratio`, estimate and samples."""
    rows = np.vstack([fit.params, fit.samples]) if fit.samples is not None else np.atleast_2d(fit.params)
    n_opt, d_opt = optimal_allocation(rows, [compute], K)
    n_r = np.sqrt(compute / (K * ratio))
    at_ratio = law(tuple(rows[:, i] for i in range(5)), n_r, ratio * n_r)
    best = optimal_loss(rows, [compute], K)[:, 0]
    lstar = optimal_loss_law(fit, K)
    law_rows = np.vstack([[lstar.E, lstar.gamma, lstar.C_c]] + ([lstar.samples] if lstar.samples is not None else []))
    c_star = _compute_for(law_rows, at_ratio[:, None])[:, 0]  # where each row's optimum reaches its own loss at r
    values = {"tokens_per_param": (d_opt / n_opt)[:, 0], "excess_loss": at_ratio / best - 1,
              "extra_compute": compute / c_star - 1}
    return {k: (float(v[0]), percentile_interval(v[1:]) if len(v) > 1 else None) for k, v in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("--ratio", type=float, default=80.0)
    parser.add_argument("--presets", default="quick,cpu")
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    _, results = collect(args.study)
    kept = best_lr_runs(results)
    section = allocation_section(kept, sorted({r.run.method for r in kept}), args.bootstrap)
    for method, fit in section.fits.items():
        b = section.summaries[method]["bracketing"]
        print(f"{method}: runs at {b['run_range'][0]:.3g}-{b['run_range'][1]:.3g} tokens per parameter; "
              f"bracketed at its own smallest and largest compute: {b['bracketed']} ("
              + "; ".join(f"{a['compute']:.3g} FLOP {_text(a['tokens_per_param'], a['ci'])}" for a in b["at"]) + ")")
        for preset in args.presets.split(","):
            for compute in preset_computes(preset):
                with np.errstate(all="ignore"):
                    r = ratio_rows(fit, compute, args.ratio)
                print(f"  {preset} at {compute:.3g} FLOP: optimal tokens per parameter "
                      f"{_text(*r['tokens_per_param'])}; excess loss at {args.ratio:g}: {_pct(*r['excess_loss'])}; "
                      f"extra compute: {_pct(*r['extra_compute'])}")


def _pct(value: float, ci) -> str:
    return f"{100 * value:+.2f}%" + (f" [{100 * ci[0]:+.2f}%, {100 * ci[1]:+.2f}%]" if ci else "")


if __name__ == "__main__":
    main()
