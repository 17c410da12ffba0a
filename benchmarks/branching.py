"""Does a branched budget end where a cosine run of the same length ends? And what does branching save?

For each size, method and seed this trains, on one thread, the cosine runs of every budget (the
`cpu` preset's schedule: 5% warm-up, cosine to 10%) and one chain (`budgets: branched`: a trunk at
constant learning rate, a 20% linear cooldown branched at each budget), then prints per budget the
cosine and the branched final validation loss, their difference, and the seed spread (the two
seeds' difference between cosine runs, the noise a difference must be compared with). Last, the
wall-clock of both, and the saving branching brings to the `allocation` preset's plan, estimated
from the tokens it trains and the time per token measured here.

    python benchmarks/branching.py --out /tmp/branching   # 2 sizes x 2 methods x 2 seeds x budgets 20, 40: ~20 min on one core
    python benchmarks/branching.py --out /tmp/b --sizes L4d12 --seeds 0   # a quick look

Rerunning with the same --out reuses finished runs (and the times they took).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from beyondbp.report.markdown import markdown_table
from beyondbp.study.chain import plan_totals, write_chain
from beyondbp.study.plan import plan_study
from beyondbp.study.spec import load_spec, normalise_spec
from beyondbp.train.chain import train_chain
from beyondbp.train.loop import train
from beyondbp.runs.folder import read_summary

SIZES = {"L4d12": 12, "L4d16": 16, "L4d24": 24}
LRS = {"bp": 1e-2, "dfa_block": 3e-3}  # the cpu preset's best at d16 (docs/studies.md "Designing a CPU study")


def spec(sizes, methods, budgets, seeds, mode: str) -> dict:
    return normalise_spec({
        "name": f"branching-{mode}", "methods": methods, "budgets": mode, "seeds": seeds,
        "sizes": {s: {"n_layer": 4, "d_model": SIZES[s], "n_head": 2} for s in sizes},
        "tokens_per_param": budgets, "lrs": {m: [LRS[m]] for m in methods},
        "base": {"data": {"corpus": "shakespeare", "tokenizer": "byte"}, "model": {"context": 128},
                 "train": {"batch_tokens": 1024, "n_evals": 12, "eval_tokens": 16384, "warmup_frac": 0.05,
                           "schedule": "cosine", "threads": 1, "progress": "off"}}})


def timed(times: dict, key: str, work) -> None:
    """Run work() unless a finished result and its time are on record; keep its wall-clock seconds."""
    if key in times:
        return
    start = time.perf_counter()
    work()
    times[key] = time.perf_counter() - start


def run_all(out: Path, args) -> tuple[dict, dict, dict]:
    times_path = out / "times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    cosine = plan_study(spec(args.sizes, args.methods, args.budgets, args.seeds, "independent"))
    branched = plan_study(spec(args.sizes, args.methods, args.budgets, args.seeds, "branched"))
    losses = {}
    for run in cosine.runs:
        folder = out / "cosine" / "runs" / run.name
        timed(times, f"cosine/{run.name}", lambda: train(run.cfg, folder, quiet=True))
        losses[("cosine", run.name)] = read_summary(folder)["final_val_loss"]
        times_path.write_text(json.dumps(times, indent=1))
    for chain in branched.chains:
        study = out / "branched"
        trunk = write_chain(chain, study, lambda cfg: cfg)
        timed(times, f"branched/{chain.name}", lambda: train_chain(trunk, quiet=True))
        for run in chain.runs:
            losses[("branched", run.name)] = read_summary(study / "runs" / run.name)["final_val_loss"]
        times_path.write_text(json.dumps(times, indent=1))
    return losses, times, {"cosine": cosine, "branched": branched}


def table(losses: dict, plans: dict, seeds: list[int]) -> list[str]:
    header = ["size", "method", "tokens/param", "cosine final loss", "branched final loss", "branched - cosine",
              "seed spread (cosine)"]
    rows = []
    keys = sorted({(r.size, r.method, r.budget) for r in plans["cosine"].runs},
                  key=lambda k: (int(k[0][3:]), k[1], float(k[2][3:])))
    diffs, spreads = [], []
    for size, method, budget in keys:
        runs = [r for r in plans["cosine"].runs if (r.size, r.method, r.budget) == (size, method, budget)]
        cos = np.array([losses[("cosine", r.name)] for r in runs])
        br = np.array([losses[("branched", r.name)] for r in runs])
        diff = br - cos
        diffs.extend(diff)
        spread = abs(cos[1] - cos[0]) if len(seeds) > 1 else float("nan")
        spreads.append(spread)
        per_seed = " / ".join(f"{d:+.4f}" for d in diff)
        rows.append([size, method, budget[3:], " / ".join(f"{c:.4f}" for c in cos), " / ".join(f"{b:.4f}" for b in br),
                     per_seed, f"{spread:.4f}"])
    lines = markdown_table(header, rows)
    diffs = np.array(diffs)
    lines.append(f"\nbranched - cosine over all {len(diffs)} runs: mean {diffs.mean():+.4f}, "
                 f"sd {diffs.std(ddof=1) if len(diffs) > 1 else float('nan'):.4f}, min {diffs.min():+.4f}, "
                 f"max {diffs.max():+.4f}; mean seed spread of cosine runs {np.nanmean(spreads):.4f}")
    if len(diffs) > 1:
        half = 1.96 * diffs.std(ddof=1) / np.sqrt(len(diffs))
        lines.append(f"mean difference with a 95% interval: {diffs.mean():+.4f} "
                     f"[{diffs.mean() - half:+.4f}, {diffs.mean() + half:+.4f}]")
    return lines


def savings(times: dict, plans: dict) -> list[str]:
    cos_s = sum(v for k, v in times.items() if k.startswith("cosine/"))
    br_s = sum(v for k, v in times.items() if k.startswith("branched/"))
    cos_tok = plan_totals(plans["cosine"], [])["tokens"]
    br_tok = plan_totals(plans["branched"], plans["branched"].chains)["tokens"]
    lines = [f"\nwall-clock here (one thread): cosine runs {cos_s / 60:.1f} min for {cos_tok / 1e6:.1f}M tokens, "
             f"branched {br_s / 60:.1f} min for {br_tok / 1e6:.1f}M tokens: {br_s / cos_s:.2f}x the time "
             f"(planned tokens {br_tok / cos_tok:.2f}x)"]
    preset = plan_study(load_spec(preset="allocation"))
    indep = plan_study(load_spec(preset="allocation", overrides=["budgets=independent"]))
    t_branched = plan_totals(preset, preset.chains)["tokens"]
    t_indep = plan_totals(indep, [])["tokens"]
    s_per_token = br_s / br_tok  # measured with evaluations included, one thread
    lines.append(f"allocation preset: {len(preset.runs)} runs in {len(preset.chains)} chains, "
                 f"{t_branched / 1e6:.0f}M tokens branched against {t_indep / 1e6:.0f}M independent "
                 f"({t_branched / t_indep:.2f}x); at this benchmark's {1 / s_per_token / 1e3:.0f}k tokens/s "
                 f"per core, on 2 cores: ~{t_branched * s_per_token / 2 / 60:.0f} min branched against "
                 f"~{t_indep * s_per_token / 2 / 60:.0f} min independent")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", nargs="+", default=["L4d12", "L4d16"], choices=list(SIZES))
    parser.add_argument("--methods", nargs="+", default=list(LRS), choices=list(LRS))
    parser.add_argument("--budgets", nargs="+", type=float, default=[20.0, 40.0], help="tokens per parameter")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    args = parser.parse_args()
    losses, times, plans = run_all(args.out, args)
    print("\n".join(table(losses, plans, args.seeds) + savings(times, plans)))


if __name__ == "__main__":
    main()
