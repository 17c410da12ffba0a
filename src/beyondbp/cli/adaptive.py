"""`study run --until-decided --budget B` and `--executor simulated --truth TRUTH.yaml`: the glue
between the planner (`beyondbp.study.adaptive`), its executors and the report."""
from __future__ import annotations

import sys
from pathlib import Path

from ..config import ConfigError


def _executor(args, plan):
    """A function that finishes every unfinished run of a plan, by the chosen executor."""
    if args.executor == "simulated":
        from ..study.simulated import load_truth, run_simulated
        if args.truth is None:
            raise ConfigError("--truth: --executor simulated needs TRUTH.yaml (each method's law)")
        truth = load_truth(args.truth, plan.spec.methods)
        return lambda p: run_simulated(p, args.out, truth)
    if args.truth is not None:
        raise ConfigError("--truth: applies to --executor simulated only")
    if args.executor != "local":
        raise ConfigError(f"--until-decided: runs with --executor local or simulated, not {args.executor}")
    from ..study.local_executor import run_study
    return lambda p: run_study(p, args.out, workers=args.workers)


def run_adaptive(args, plan, counts_line) -> int:
    """Simulate the grid, or plan until decided; then the report. plan: the spec's grid."""
    from ..report.decisions import observe
    from ..report.write import write_report
    from ..study.adaptive import MAX_ROUNDS, Planner, parse_budget
    from ..study.folder import study_counts
    if args.until_decided and args.budget is None:
        raise ConfigError("--budget: --until-decided needs a budget (PF-days, e.g. 1e-6, or wall time, e.g. 30min)")
    if args.budget is not None and not args.until_decided:
        raise ConfigError("--budget: applies with --until-decided only")
    execute = _executor(args, plan)
    if args.until_decided:
        planner = Planner(plan, Path(args.out), execute, observe, parse_budget(args.budget), args.bootstrap,
                          max_rounds=args.max_rounds or MAX_ROUNDS)
        planner.run()
        from ..study.folder import load_study
        plan = load_study(args.out)
    else:
        execute(plan)
    counts = study_counts(plan, args.out)
    print(counts_line(counts), file=sys.stderr)
    out = write_report(args.out, bootstrap=args.bootstrap)
    print(f"report: {out / 'report.html'}", file=sys.stderr)
    return 0 if counts.get("failed", 0) == 0 else 1
