"""`beyondbp study run|status|report|plan`: a grid of runs, its progress and its report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import CHOICES
from ..fit.defaults import DEFAULT_BOOTSTRAP
from ..runs.states import RunState
from .method_imports import add_opt_in

STATE_ORDER = tuple(RunState)
SLURM_FLAGS = (("cluster", "--cluster"), ("partition", "--partition"), ("account", "--account"),
               ("gpus_per_run", "--gpus-per-run"), ("time", "--time"), ("wait", "--wait"))

SPEC_HELP = """spec keys (dotted KEY=VALUE overrides, values as YAML):
  methods=[bp,dfa_block]          training methods or variant labels
  variants.literal={method: dfa_block, method.feedback_point: output}   a labelled configuration
  sizes=[cpu-20k,cpu-60k]         named sizes, or sizes.NAME.n_layer=... for custom shapes
  tokens=2e6 | tokens_per_param=80  training tokens per run (fixed, or x non-embedding parameters);
                                  a list trains every size once per budget: tokens_per_param=[40,80]
  lrs.bp=[1e-3,3e-3]              learning rates swept per method (the best per size and budget is kept);
                                  per size: lrs.bp={L4d16: [1e-2], L4d32: [6e-3]}
  seeds=[0,1]                     seeds (averaged into one frontier point)
  frontier_points=final|all       each run's final evaluation (default) or every evaluation
  per_method.dfa.train.alignment_every_evals=4   a RunConfig key for one method only
  base.train.batch_tokens=8192    any RunConfig key for every run (see `beyondbp train --help`)
  track=mlp                       the fully-connected track: sizes.NAME.width=..., base.mlp.epochs=...
                                  (see --preset mlp)
"""


def _spec_source(args) -> tuple[str | None, str | None]:
    spec = args.spec
    if spec is not None and "=" in spec:  # `study run --preset X KEY=VALUE`: argparse took an override as SPEC
        args.overrides.insert(0, spec)
        spec = None
    return spec, args.preset


def _load_plan(args):
    from ..study.plan import plan_study
    from ..study.spec import load_spec
    spec_file, preset = _spec_source(args)
    return plan_study(load_spec(spec_file, preset, args.overrides))


def check_flags(args) -> None:
    """The study commands' numeric flags, checked before any work, in the KEY=VALUE message form."""
    from ..config import AT_LEAST_1, BOOTSTRAP, check_number
    if getattr(args, "bootstrap", None) is not None:
        check_number("--bootstrap", args.bootstrap, BOOTSTRAP, integer=True)
    for attr, flag in (("workers", "--workers"), ("gpus_per_run", "--gpus-per-run")):
        if getattr(args, attr, None) is not None:
            check_number(flag, getattr(args, attr), AT_LEAST_1, integer=True)


def cmd_run(args) -> int:
    from ..config import ConfigError
    from ..report.write import write_report
    from ..study.local_executor import run_study
    check_flags(args)
    if args.max_rounds is not None and (not args.until_decided or args.max_rounds < 1):
        raise ConfigError(f"--max-rounds: expected a positive number of rounds with --until-decided, "
                          f"got {args.max_rounds}")
    if args.executor == "simulated" or args.until_decided:
        from .adaptive import run_adaptive
        return run_adaptive(args, _load_plan(args), _counts_line)
    if args.executor == "slurm":
        return _run_slurm(args)
    for attr, flag in SLURM_FLAGS:
        if getattr(args, attr) not in (None, False):
            raise ConfigError(f"{flag}: applies to --executor slurm only")
    plan = _load_plan(args)
    counts = run_study(plan, args.out, workers=args.workers)
    print(_counts_line(counts), file=sys.stderr)
    out = write_report(args.out, bootstrap=args.bootstrap)
    print(f"report: {out / 'report.html'}", file=sys.stderr)
    return 0 if counts.get(RunState.FAILED, 0) == 0 else 1


def _run_slurm(args) -> int:
    """Submit one Slurm job per unfinished run; print the job ids; with --wait, then report."""
    from ..config import ConfigError
    from ..report.write import write_report
    from ..study.slurm import plan_for_slurm, require_submitit, run_study_slurm
    from ..study.slurm_settings import parse_time_minutes, resolve_settings
    from ..study.spec import load_spec
    if args.workers is not None:
        raise ConfigError("--workers: applies to --executor local only (Slurm runs one job per run)")
    require_submitit()
    spec_file, preset = _spec_source(args)
    spec = load_spec(spec_file, preset, args.overrides)
    cli = {"cluster": args.cluster, "partition": args.partition, "account": args.account,
           "gpus_per_run": args.gpus_per_run,
           "timeout_min": parse_time_minutes(args.time) if args.time is not None else None}
    settings = resolve_settings(spec.slurm, cli)
    plan = plan_for_slurm(spec, settings)
    job_ids = run_study_slurm(plan, args.out, settings, wait=args.wait)
    if not args.wait:
        print(f"{len(job_ids)} jobs submitted; follow them with `beyondbp study status {args.out}`, "
              f"then `beyondbp study report {args.out}`", file=sys.stderr)
        return 0
    counts = _print_status(plan, args.out, quiet=True)
    print(_counts_line(counts), file=sys.stderr)
    out = write_report(args.out, bootstrap=args.bootstrap)
    print(f"report: {out / 'report.html'}", file=sys.stderr)
    return 0 if counts.get(RunState.FAILED, 0) == 0 else 1


def cmd_plan(args) -> int:
    from ..study.tracks import get_track
    plan = _load_plan(args)
    total = 0.0
    unit = get_track(plan.spec.track).unit
    for run in plan.runs:
        total += run.cost
        print(f"{run.name:40s} {run.n_params:>12,} params {run.tokens:>14,} {unit} {run.cost:10.3g} FLOPs")
    print(f"{len(plan.runs)} runs, {total:.3g} FLOPs in all (exact BP count)")
    if plan.chains:
        _print_chains(plan, unit)
    return 0


def _print_chains(plan, unit: str) -> None:
    """Each chain's trunk and branch points, and what branching saves (`study.chain`)."""
    from ..study.chain import plan_totals
    print(f"\nbudgets: branched: {len(plan.chains)} chains (trunk at constant learning rate, then a "
          f"{plan.chains[0].runs[0].cfg.train.cooldown_frac:.0%} cooldown branched at each budget; a run's FLOPs "
          f"above are what it adds to its chain)")
    for chain in plan.chains:
        batch = chain.trunk.train.batch_tokens
        points = ", ".join(f"{s * batch:,}" for s in chain.steps)
        print(f"{chain.name:40s} trunk {chain.trunk.train.tokens:>14,} {unit}, warm-up "
              f"{chain.trunk.train.warmup_tokens:,}, branches at {points}")
    t = plan_totals(plan, plan.chains)
    print(f"branched: {t['cost']:.3g} FLOPs, {t['tokens']:,} {unit}; as independent runs: {t['standalone_cost']:.3g} "
          f"FLOPs, {t['standalone_tokens']:,} {unit} (branching trains {t['cost'] / t['standalone_cost']:.2f}x)")


def cmd_status(args) -> int:
    from ..study.folder import load_study
    plan = load_study(args.dir)
    print(_counts_line(_print_status(plan, args.dir)))
    return 0


def _print_status(plan, study_dir, quiet: bool = False) -> dict[str, int]:
    """One line per run (state, val loss or error, Slurm job); returns {state: count}."""
    from ..runs.folder import read_summary, run_state
    runs_dir = Path(study_dir) / "runs"
    slurm_runs = any((runs_dir / run.name / "slurm_job.json").exists() for run in plan.runs)
    if slurm_runs:
        from ..study.slurm import run_status  # queued/running from the scheduler (sacct), else from files
    counts: dict[str, int] = {}
    for run in plan.runs:
        run_dir = runs_dir / run.name
        state, job = run_status(run_dir) if slurm_runs else (run_state(run_dir), "")
        counts[state] = counts.get(state, 0) + 1
        summary = read_summary(run_dir) or {}
        detail = ""
        if summary.get("final_val_loss") is not None:
            detail = f"val loss {summary['final_val_loss']:.4f}"
        elif summary.get("error"):
            detail = summary["error"]
        detail = "; ".join(d for d in (detail, job) if d)
        if not quiet:
            print(f"{run.name:40s} {state:12s} {detail}".rstrip())
    return counts


def cmd_report(args) -> int:
    from ..report.write import write_report
    check_flags(args)
    out = write_report(args.dir, bootstrap=args.bootstrap)
    print((out / "table1.md").read_text())
    print((out / "verdict.md").read_text())
    print(f"report: {out / 'report.html'}")
    return 0


def _counts_line(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    parts = [f"{counts[s]} {s}" for s in STATE_ORDER if counts.get(s)]
    return f"{total} runs: " + ", ".join(parts)


def _add_spec_args(p) -> None:
    p.add_argument("spec", nargs="?", metavar="SPEC", help="study spec (YAML file)")
    from ..study.presets import preset_names
    p.add_argument("--preset", help=f"a built-in spec: {', '.join(preset_names())}")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")


class _IntermixedParser(argparse.ArgumentParser):
    """Accepts `SPEC --out DIR KEY=VALUE`: positionals before and after options."""

    _parsing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._parsing:
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


def add_parser(subparsers) -> None:
    study = subparsers.add_parser("study", help="run a grid of runs, fit frontiers, write the report")
    sub = study.add_subparsers(dest="study_command", required=True, parser_class=_IntermixedParser)
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("run", help="train every run of a study (rerun the same command to resume)",
                       epilog=SPEC_HELP, formatter_class=fmt)
    _add_spec_args(p)
    p.add_argument("--out", required=True, help="study folder")
    p.add_argument("--workers", type=int, default=None,
                   help="runs trained at once (default: one per GPU, else one per CPU core)")
    p.add_argument("--executor", choices=CHOICES["study.executor"][0], default="local",
                   help="who trains the runs: local, a pool of worker processes on this machine (--workers); "
                        "slurm, one submitit job per run (spec section slurm:, --cluster); simulated, no "
                        "training: metrics from the known laws of --truth")
    p.add_argument("--truth", default=None, help="--executor simulated: TRUTH.yaml, each method's law")
    p.add_argument("--until-decided", action="store_true",
                   help="after the grid, add runs until every letter is decided (DIR/decisions.jsonl)")
    p.add_argument("--budget", default=None,
                   help="--until-decided: PF-days of the paper's count (1e-6), the study's wall time (30min, 2h), "
                        "or the runs' summed training time (30min-train)")
    p.add_argument("--max-rounds", type=int, default=None,
                   help="--until-decided: stop after this many rounds that chose runs (default 20), saying "
                        "which run would decide each open letter")
    p.add_argument("--cluster", choices=CHOICES["slurm.cluster"][0], default=None,
                   help="--executor slurm only: where its submitit jobs run: slurm (submitted to the Slurm "
                        "scheduler, the default) or local (submitit's local cluster: each job a process on this "
                        "machine, for tests and debugging; not --executor local's worker pool)")
    p.add_argument("--partition", default=None, help="Slurm partition (slurm.partition)")
    p.add_argument("--account", default=None, help="Slurm account (slurm.account)")
    p.add_argument("--gpus-per-run", type=int, default=None,
                   help="GPUs per run, one torch.distributed rank each (slurm.gpus_per_run, default 1)")
    p.add_argument("--time", default=None, help="time limit per job, e.g. 72:00:00 (slurm.timeout_min)")
    p.add_argument("--wait", action="store_true",
                   help="--executor slurm: wait for the jobs, then write the report (default: submit and exit)")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap samples for the intervals")
    add_opt_in(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("plan", help="list a study's runs without training", epilog=SPEC_HELP, formatter_class=fmt)
    _add_spec_args(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("status", help="state of every run of a study folder")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("report", help="fit frontiers and write DIR/report/")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap samples for the intervals")
    p.set_defaults(func=cmd_report)

