"""`beyondbp fit POINTS.csv`: frontiers, quality checks and verdicts for anyone's results."""
from __future__ import annotations

import sys

from ..config import BOOTSTRAP, FRACTION, RANGES, ConfigError, check_number
from ..fit.bootstrap import DEFAULT_BOOTSTRAP
from ..fit.frontier import RUN_FRACTION


def cmd_fit(args) -> int:
    """Errors here are `beyondbp fit: error: ...` lines (exit 2), as they always were."""
    from ..fit.points import dumps, fit_points_table, read_points_csv
    try:
        check_number("--bootstrap", args.bootstrap, BOOTSTRAP, integer=True)
        check_number("--seed", args.seed, RANGES["seed"], integer=True)
        check_number("--run-fraction", args.run_fraction, FRACTION)
        table = fit_points_table(read_points_csv(args.points), reference=args.reference,
                                 bootstrap=args.bootstrap, seed=args.seed,
                                 irreducible=args.irreducible, run_fraction=args.run_fraction)
    except ConfigError as err:
        print(f"beyondbp fit: error: {err}", file=sys.stderr)
        return 2
    print(dumps(table))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("fit", help="fit compute-optimal frontiers to a CSV of points",
                       description="Fit compute-efficient frontiers and verdicts.")
    p.add_argument("points", help="CSV with columns method,compute_pf_days,loss[,run][,size]")
    p.add_argument("--reference", default="bp", help="method to compare against")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--irreducible", action="store_true", help="fit L = E + (C/C_c)^alpha (5 points or more)")
    p.add_argument("--run-fraction", type=float, default=RUN_FRACTION,
                   help="learning curves: a run's points count from this fraction of its largest compute")
    p.set_defaults(func=cmd_fit)
