"""`beyondbp fit FILE.csv`: frontiers, quality checks and verdicts for anyone's results, or the
L(N, D) fit for anyone's runs. The CSV's header decides: columns n_params and tokens make it a
runs file (`fit.lnd_runs`), otherwise it is a points file (`fit.points`)."""
from __future__ import annotations

import argparse
import sys
import warnings

from ..config import BOOTSTRAP, FRACTION, POSITIVE, RANGES, ConfigError, Range, check_number
from ..fit.defaults import BP_FLOPS_PER_PARAM_TOKEN, DEFAULT_BOOTSTRAP, HORIZON_FACTOR, LND_BOOTSTRAP, RUN_FRACTION

HORIZON = Range(1.0, 1e6)  # --horizon-factor: from the measured compute itself to six decades past it


def flops_per_param_token(text: str) -> float | dict[str, float]:
    """`6` (every method) or `bp=6,dfa=4` (per method; others get 6), each checked positive."""
    def number(key: str, value: str) -> float:
        try:
            out = float(value)
        except ValueError:
            raise ConfigError(f"{key}: must be a number, got {value!r}") from None
        check_number(key, out, POSITIVE)
        return out

    if "=" not in text:
        return number("--flops-per-param-token", text.strip())
    out = {}
    for item in text.split(","):
        method, _, value = item.partition("=")
        if not method.strip() or not value.strip():
            raise ConfigError(f"--flops-per-param-token: expected METHOD=K, got {item.strip()!r}")
        out[method.strip()] = number(f"--flops-per-param-token {method.strip()}", value.strip())
    return out


def _fit_runs(args) -> dict:
    from ..fit.lnd_runs import lnd_report, read_runs_csv
    bootstrap = LND_BOOTSTRAP if args.bootstrap is None else args.bootstrap
    k = flops_per_param_token(args.flops_per_param_token)
    groups = read_runs_csv(args.points)
    try:
        return lnd_report(groups, bootstrap=bootstrap, seed=args.seed, shared_e=args.shared_e,
                          flops_per_param_token=k, reference=args.reference)
    except ConfigError as err:  # too few runs of one method, one budget per size, ...: name the file
        raise ConfigError(f"{args.points}: {err}") from None


def _fit_points(args) -> dict:
    from ..fit.points import fit_points_table, read_points_csv
    if args.shared_e:
        raise ConfigError("--shared-e: applies to a runs CSV (columns method,n_params,tokens,loss), "
                          f"and {args.points} has no n_params and tokens columns")
    return fit_points_table(read_points_csv(args.points), reference=args.reference,
                            bootstrap=DEFAULT_BOOTSTRAP if args.bootstrap is None else args.bootstrap,
                            seed=args.seed, irreducible=args.irreducible, run_fraction=args.run_fraction,
                            horizon_factor=args.horizon_factor)


def cmd_fit(args) -> int:
    """Errors here are `beyondbp fit: error: ...` lines (exit 2), as they always were; a warning
    (rows skipped, ...) is one `beyondbp fit: warning: ...` line each, NumPy's RuntimeWarnings none."""
    from ..fit.lnd_runs import is_runs_csv
    from ..fit.numerics import quiet_numerics
    from ..fit.strict_json import dumps
    try:
        if args.bootstrap is not None:
            check_number("--bootstrap", args.bootstrap, BOOTSTRAP, integer=True)
        check_number("--seed", args.seed, RANGES["seed"], integer=True)
        check_number("--run-fraction", args.run_fraction, FRACTION)
        check_number("--horizon-factor", args.horizon_factor, HORIZON)
        with quiet_numerics(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            warnings.simplefilter("ignore", RuntimeWarning)
            table = _fit_runs(args) if is_runs_csv(args.points) else _fit_points(args)
    except ConfigError as err:
        print(f"beyondbp fit: error: {err}", file=sys.stderr)
        return 2
    for warning in caught:
        print(f"beyondbp fit: warning: {str(warning.message).splitlines()[0]}", file=sys.stderr)
    print(dumps(table))
    return 0


DESCRIPTION = """\
Two kinds of CSV, told apart by their header:
  points file (method,compute_pf_days,loss[,run][,size]): each method's compute-efficient
    frontier (lower envelope, power law), its quality checks and verdicts against --reference;
  runs file (method,n_params,tokens,loss[,run]; any file whose header has n_params and tokens):
    per method the fit L(N, D) = E + A/N^a + B/D^b (N non-embedding parameters, D training
    tokens, loss the run's final loss) with bootstrap intervals over runs, the compute-optimal
    allocation, L*(C), the isoFLOP cross-check, edge warnings and residuals, and each method's
    L*(C) judged against --reference's. Output: strict JSON on stdout."""


def add_parser(sub) -> None:
    p = sub.add_parser("fit", help="fit frontiers (points CSV) or L(N, D) (runs CSV) to anyone's results",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("points", metavar="CSV", help="a points file or a runs file (see above)")
    p.add_argument("--reference", default="bp", help="method to compare against (default: bp)")
    p.add_argument("--bootstrap", type=int, default=None,
                   help=f"bootstrap resamples, 0: none (default: {DEFAULT_BOOTSTRAP} for a points file, "
                        f"{LND_BOOTSTRAP} refits for a runs file)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--irreducible", action="store_true",
                   help="points file: fit L = E + (C/C_c)^alpha (5 points or more)")
    p.add_argument("--run-fraction", type=float, default=RUN_FRACTION,
                   help="points file, learning curves: a run's points count from this fraction of its largest compute")
    p.add_argument("--horizon-factor", type=float, default=HORIZON_FACTOR, metavar="H",
                   help="points file: claim each letter through H x the largest compute measured; beyond it "
                        f"only the trend is given (default: {HORIZON_FACTOR:g})")
    p.add_argument("--shared-e", action="store_true", help="runs file: one floor E shared by all methods")
    p.add_argument("--flops-per-param-token", default=f"{BP_FLOPS_PER_PARAM_TOKEN:g}",
                   metavar="K", help="runs file: compute C = K N D, for the allocation and L*(C); one number "
                                     "or per method, e.g. bp=6,dfa=4,shallow=2 (others: 6; default: 6)")
    p.set_defaults(func=cmd_fit)
