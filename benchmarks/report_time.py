"""How long `beyondbp study report` takes on a study folder, stage by stage.

    python benchmarks/report_time.py STUDY_DIR [--bootstrap 2000]

Prints the seconds of each stage of `write_report` (reading and planning the study, the fits
of all four accountings, the figures, the whole report) and, on the same frontier points in the
same process, the fits by the vectorised residual bootstrap against a reference that refits
every bootstrap sample with scipy's least_squares (the way the report fitted before), as a
ratio. Reported, not asserted.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import least_squares

from beyondbp.report import results as report
from beyondbp.report.write import write_report
from beyondbp.fit.defaults import DEFAULT_BOOTSTRAP
from beyondbp.fit.frontier import HUBER_SCALE, envelope, fit_frontier


REFERENCE_SAMPLES = 200


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def reference_fit(compute, loss, bootstrap: int, seed: int = 0) -> float:
    """A per-sample least_squares Huber fit (3 starts) of each residual-bootstrap sample."""
    c, l = envelope(compute, loss)
    x = np.log(c) - np.log(c).mean()
    y = np.log(l)
    slope, intercept = np.polyfit(x, y, 1)
    fitted = slope * x + intercept
    residuals = y - fitted
    rng = np.random.default_rng(seed)
    for _ in range(bootstrap):
        ys = fitted + residuals[rng.integers(0, len(x), len(x))]
        for start in ((slope, intercept), (-0.1, ys.mean()), (0.0, ys.mean())):
            least_squares(lambda p: p[0] * x + p[1] - ys, start, loss="huber", f_scale=HUBER_SCALE)
    return slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="a study folder (DIR of `beyondbp study run --out DIR`)")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP)
    args = parser.parse_args()

    (spec, results), t_collect = _timed(lambda: report.collect(args.study))
    kept = report.best_lr_runs(results)
    mode = spec.get("frontier_points", "final")
    rows = {name: report.frontier_points(kept, name, mode) for name in report.ACCOUNTINGS}
    _, t_fits = _timed(lambda: [report.fit_accounting(r, args.bootstrap) for r in rows.values()])  # floor check too
    _, t_total = _timed(lambda: write_report(args.study, bootstrap=args.bootstrap))

    paper = rows["paper"]
    methods = sorted({r["method"] for r in paper})
    ours = ref = 0.0
    for method in methods:
        mine = [r for r in paper if r["method"] == method]
        compute, loss = [r["compute_pf_days"] for r in mine], [r["loss"] for r in mine]
        ours += _timed(lambda: fit_frontier(compute, loss, bootstrap=args.bootstrap))[1]
        # the reference costs ~0.1 s a sample: time REFERENCE_SAMPLES and scale to the same count
        ref += _timed(lambda: reference_fit(compute, loss, min(args.bootstrap, REFERENCE_SAMPLES)))[1]
    ref *= args.bootstrap / min(args.bootstrap, REFERENCE_SAMPLES)
    print(f"study {args.study}: {len(results)} runs, {len(methods)} methods, {args.bootstrap} bootstrap samples")
    print(f"read and plan the study       {t_collect:7.3f} s")
    print(f"fits, 4 accountings           {t_fits:7.3f} s")
    print(f"whole report (write_report)   {t_total:7.3f} s  (figures, tables, HTML included)")
    print(f"paper-accounting fits (floor check not included): ours {ours:.3f} s, per-sample least_squares "
          f"{ref:.3f} s (timed on {min(args.bootstrap, REFERENCE_SAMPLES)} samples, scaled), "
          f"ratio ours/reference {ours / ref:.4f}")


if __name__ == "__main__":
    main()
