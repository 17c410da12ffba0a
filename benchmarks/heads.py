"""One attention head against two at the CPU presets' sizes: final loss, wall-clock, loss per second.

    python benchmarks/heads.py                                   # quick + cpu sizes, bp and dfa_block
    python benchmarks/heads.py --preset quick --methods bp dfa_block --markdown
    python benchmarks/heads.py --preset cpu --sizes L4d24 L4d32 --methods bp --heads 1 2 4
    python benchmarks/heads.py --preset quick cpu --report       # tables from the runs already made

Every run is a preset's run (its config from the preset's plan: size, 80 tokens per non-embedding
parameter, batch, learning rates, evaluations, per-method switches) with `model.n_head` set to
each of `--heads`, trained by the CLI (`beyondbp train --config ... --out ...`) in its own process
on one torch thread (`train.threads=1`), one process at a time. The head counts of a cell (size,
method, learning rate, seed) run back to back, in ABBA order across cells and repeats, so that the
machine's drift hits each head count alike; time ratios are taken within a cell only.

Prints three tables. Runs: final validation loss, training seconds (summary.json `elapsed_s`: the
steps only, evaluations excluded), tokens/s, the process's wall-clock and CPU seconds, and each
head count's times as ratios of the reference head count's (`--reference`, default 2) in the same
cell. Per size: the best learning rate's loss per head count (as a study keeps it), the loss
difference per seed and the time ratios pooled over the size's cells (median [min, max]).
Loss per second: along the reference's frontier (best-lr loss of each size, all at the same tokens
per parameter) log loss is fitted linear in log training tokens; its slope k prices time in loss,
as a run's time is its tokens over a throughput that hardly changes with width at these sizes
(issue 20: ~50k tokens/s at d_model 12-32; tokens, unlike seconds, do not carry the machine's load
between sizes trained at different times). For head count h at a size with loss L_h, reference
loss L_ref and time ratio r (training seconds, or process CPU seconds, measured in the cell): the
reference needs (L_h / L_ref)^(1/k) / r times h's time to reach L_h (> 1: h buys more loss per
second). Ranges span the loss differences of every seed and cell (a learning rate's paired
difference included) and the cells' time ratios. Runs already in `--work` are not trained
again. Reported, never asserted.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from beyondbp.config import dump_yaml
from beyondbp.study.plan import plan_study
from beyondbp.study.spec import load_spec
from table_print import print_table


@dataclass
class Cell:
    """One preset run (size, method, lr, seed); trained once per head count and repeat."""
    size: str
    method: str
    lr: float
    seed: int
    n_params: int
    tokens: int
    cfg: object
    loss: dict = field(default_factory=dict)  # heads -> final validation loss (the same every repeat)
    seconds: dict = field(default_factory=dict)  # heads -> [training seconds per repeat]
    wall: dict = field(default_factory=dict)  # heads -> [process wall seconds per repeat]
    cpu: dict = field(default_factory=dict)  # heads -> [process CPU seconds per repeat]


def gather_cells(presets, sizes, methods, seeds, overrides) -> list[Cell]:
    """The preset runs to measure, one cell per distinct (size shape, method, lr, seed)."""
    cells, seen = [], set()
    for preset in presets:
        spec = load_spec(preset=preset, overrides=[f"seeds={list(seeds)}", *overrides])
        for run in plan_study(spec).runs:
            if run.method not in methods or (sizes and run.size not in sizes):
                continue
            key = (dump_yaml(run.cfg), run.size)
            if key not in seen:
                seen.add(key)
                cells.append(Cell(run.size, run.method, run.lr, run.seed, run.n_params, run.tokens, run.cfg))
    cells.sort(key=lambda c: (c.n_params, c.method, c.lr, c.seed))
    return cells


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train_once(cell: Cell, heads: int, repeat: int, work: Path, report_only: bool = False) -> None:
    """One `beyondbp train` process (none when its summary exists); records its loss and seconds in the cell."""
    name = f"{cell.method}_{cell.size}_lr{cell.lr:g}_s{cell.seed}_h{heads}_r{repeat}"
    out, config, times_file = work / name, work / "configs" / f"{name}.yaml", work / "wall" / f"{name}.json"
    done = (out / "summary.json").exists()
    if report_only and not done:
        return
    if not done and out.exists():
        # a run killed part way resumes from its checkpoint: its training seconds add up across the
        # two processes, but this process's wall and CPU time would cover only the rest
        print(f"  {name}: resuming an interrupted run; its process times are not recorded", file=sys.stderr)
        times_file.unlink(missing_ok=True)
        resumed = True
    else:
        resumed = False
    if not done:
        config.parent.mkdir(parents=True, exist_ok=True)
        times_file.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(dump_yaml(cell.cfg))
        start, start_cpu = time.perf_counter(), children_cpu_s()
        subprocess.run([sys.executable, "-m", "beyondbp", "train", "--config", str(config), f"model.n_head={heads}",
                        "train.threads=1", "train.progress=off", "--out", str(out)], check=True)
        if not resumed:
            times_file.write_text(json.dumps({"wall_s": time.perf_counter() - start,
                                              "cpu_s": children_cpu_s() - start_cpu}))
    summary = json.loads((out / "summary.json").read_text())
    if summary.get("status") != "completed":
        raise SystemExit(f"{out}: run {summary.get('status')}; see its files")
    times = json.loads(times_file.read_text()) if times_file.exists() else {}
    if heads in cell.loss and cell.loss[heads] != summary["final_val_loss"]:
        print(f"  {name}: final loss {summary['final_val_loss']:.6f} differs from the earlier repeat's "
              f"{cell.loss[heads]:.6f} (training is not deterministic here); the last is kept", file=sys.stderr)
    cell.loss[heads] = summary["final_val_loss"]
    cell.seconds.setdefault(heads, []).append(summary["elapsed_s"])
    cell.wall.setdefault(heads, []).append(times.get("wall_s", float("nan")))
    cell.cpu.setdefault(heads, []).append(times.get("cpu_s", float("nan")))
    print(f"  {name}: loss {summary['final_val_loss']:.4f}, {summary['elapsed_s']:.1f} s training, "
          f"{cell.wall[heads][-1]:.1f} s process{' (earlier run)' if done else ''}", file=sys.stderr, flush=True)


def abba_orders(heads: list[int], n_cells: int, repeats: int):
    """Head orders per (cell, repeat), repeats innermost: forward, reversed, reversed, forward, ... (ABBA)."""
    k = 0
    for cell in range(n_cells):
        for repeat in range(repeats):
            yield cell, repeat, (heads if k % 4 in (0, 3) else heads[::-1])
            k += 1


def finite(values) -> list[float]:
    return [v for v in values if np.isfinite(v)]


def spread(values, fmt: str = ".3f", centre=statistics.fmean) -> str:
    """Centre (mean by default) and [min, max] of repeated measurements; the value alone for one."""
    values = finite(values)
    if not values:
        return "-"
    mid = format(centre(values), fmt)
    return mid if len(values) == 1 else f"{mid} [{format(min(values), fmt)}, {format(max(values), fmt)}]"


def ratios(cell: Cell, kind: str, heads: int, reference: int) -> list[float]:
    """In-cell ratios of a time (seconds, wall or cpu) of `heads` to the reference's, repeat by repeat."""
    times = getattr(cell, kind)
    return [a / b for a, b in zip(times.get(heads, []), times.get(reference, []))]


def run_table(cells: list[Cell], heads: list[int], reference: int) -> list[list[str]]:
    rows = []
    for c in cells:
        for h in heads:
            if h not in c.loss:
                continue
            secs = c.seconds[h]
            rows.append([c.size, f"{c.n_params:,}", f"{c.tokens:,}", c.method, f"{c.lr:g}", str(c.seed), str(h),
                         f"{c.loss[h]:.4f}", f"{c.loss[h] - c.loss[reference]:+.4f}" if reference in c.loss else "-",
                         spread(secs, ".1f"), spread([c.tokens / s for s in secs], ",.0f"), spread(c.wall[h], ".1f"),
                         spread(c.cpu[h], ".1f"), spread(ratios(c, "seconds", h, reference)),
                         spread(ratios(c, "cpu", h, reference))])
    return rows


RUN_HEADER = ["size", "N", "tokens", "method", "lr", "seed", "heads", "final loss", "loss - ref", "train s",
              "tok/s", "process s", "process CPU s", "train s / ref", "CPU s / ref"]


@dataclass
class SizeSummary:
    """One (method, size, head count) against the reference head count, pooled over lrs, seeds, repeats."""
    method: str
    size: str
    heads: int
    loss: float  # best lr per seed, averaged over seeds
    delta_per_seed: list  # best-lr loss minus the reference's best-lr loss, per seed
    cell_deltas: list  # loss minus the reference's in every cell (lr, seed): the paired differences' spread
    time_ratios: list  # training seconds / the reference's, every in-cell pair
    cpu_ratios: list
    ref_seconds: float  # median training seconds of the reference runs of this size
    ref_cpu: float  # median process CPU seconds of the reference runs of this size
    ref_loss: float
    tokens: int


def best_loss(cells: list[Cell], heads: int, seed: int) -> float:
    return min(c.loss[heads] for c in cells if c.seed == seed and heads in c.loss)


def size_summaries(cells: list[Cell], methods, heads: list[int], reference: int) -> list[SizeSummary]:
    out = []
    for method in methods:
        sizes = dict.fromkeys(c.size for c in cells if c.method == method)
        for size in sizes:
            group = [c for c in cells if c.method == method and c.size == size and reference in c.loss]
            seeds = sorted({c.seed for c in group})
            ref_loss = statistics.fmean(best_loss(group, reference, s) for s in seeds)
            ref_seconds = statistics.median(t for c in group for t in c.seconds[reference])
            ref_cpu = statistics.median(finite(t for c in group for t in c.cpu[reference]) or [float("nan")])
            for h in heads:
                with_h = [s for s in seeds if any(c.seed == s and h in c.loss for c in group)]
                if not with_h:
                    continue
                out.append(SizeSummary(
                    method, size, h, statistics.fmean(best_loss(group, h, s) for s in with_h),
                    [best_loss(group, h, s) - best_loss(group, reference, s) for s in with_h],
                    [c.loss[h] - c.loss[reference] for c in group if h in c.loss],
                    [r for c in group for r in ratios(c, "seconds", h, reference)],
                    finite(r for c in group for r in ratios(c, "cpu", h, reference)), ref_seconds, ref_cpu, ref_loss,
                    group[0].tokens))
    return out


def size_table(summaries: list[SizeSummary], reference: int) -> list[list[str]]:
    return [[s.method, s.size, str(s.heads), f"{s.loss:.4f}", spread(s.delta_per_seed, "+.4f"),
             spread(s.cell_deltas, "+.4f"),
             spread(s.time_ratios, ".3f", statistics.median), spread(s.cpu_ratios, ".3f", statistics.median),
             f"{s.ref_seconds:.1f}"] for s in summaries if s.heads != reference]


def frontier_slope(summaries: list[SizeSummary], method: str, reference: int, axis: str = "tokens"):
    """(k, residuals by size) of log loss = c + k log x over the reference's sizes; None under 2 sizes.

    x is the training tokens (axis "tokens"), or the reference's median training or process CPU
    seconds ("seconds", "cpu"). Tokens are load-free; seconds of sizes trained at different times
    carry the machine's load between them."""
    ref = [s for s in summaries if s.method == method and s.heads == reference]
    if len(ref) < 2:
        return None
    xs = {"tokens": [s.tokens for s in ref], "seconds": [s.ref_seconds for s in ref], "cpu": [s.ref_cpu for s in ref]}
    x, y = np.log(xs[axis]), np.log([s.ref_loss for s in ref])
    k, c = np.polyfit(x, y, 1)
    return float(k), {s.size: float(r) for s, r in zip(ref, y - (c + k * x))}


def equal_loss_factor(s: SizeSummary, k: float, time_ratios: list) -> str:
    """The reference's time to reach h's loss over h's time, (L_h / L_ref)^(1/k) / r, with its range.

    > 1: h buys more loss per second. The range spans the loss differences (best-lr per seed and
    every cell's paired one) and the cells' time ratios (every corner of the two)."""
    if not time_ratios:
        return "-"
    factor = lambda delta, r: ((s.ref_loss + delta) / s.ref_loss) ** (1 / k) / r  # noqa: E731
    deltas = s.delta_per_seed + s.cell_deltas
    corners = [factor(d, r) for d in (min(deltas), max(deltas))
               for r in (min(time_ratios), max(time_ratios))]
    mid = factor(statistics.fmean(s.delta_per_seed), statistics.median(time_ratios))
    return f"{mid:.2f} [{min(corners):.2f}, {max(corners):.2f}]"


def loss_per_second(summaries: list[SizeSummary], methods, reference: int) -> tuple[list[str], list[list[str]]]:
    """Lines on each method's frontier slope, and a row per (method, size, non-reference head count).

    Time is priced in loss by the slope k of log loss in log training tokens along the reference's
    frontier (every size at the same tokens per parameter): with the same tokens/s at every size
    (issue 20: ~50k tokens/s at d_model 12-32), a run r times as long reaches r^k times the loss. The seconds-based
    slopes are printed beside it as a check."""
    lines, rows = [], []
    for method in methods:
        fit = frontier_slope(summaries, method, reference)
        if fit is None:
            lines.append(f"{method}: fewer than 2 sizes; no frontier slope")
            continue
        k, residuals = fit
        others = {axis: frontier_slope(summaries, method, reference, axis)[0] for axis in ("seconds", "cpu")}
        lines.append(f"{method}: k = {k:.4f} (log loss per log training token along the {reference}-head frontier; "
                     f"per log training second {others['seconds']:.4f}, per log process CPU second "
                     f"{others['cpu']:.4f}); residuals "
                     + ", ".join(f"{size} {r:+.4f}" for size, r in residuals.items()))
        if k >= 0:
            lines.append(f"{method}: loss does not fall along the frontier, so time cannot be priced in loss")
            continue
        for s in summaries:
            if s.method != method or s.heads == reference:
                continue
            rows.append([method, s.size, str(s.heads), f"{s.loss:.4f}", spread(s.delta_per_seed, "+.4f"),
                         spread(s.time_ratios, ".3f", statistics.median), equal_loss_factor(s, k, s.time_ratios),
                         spread(s.cpu_ratios, ".3f", statistics.median), equal_loss_factor(s, k, s.cpu_ratios)])
    return lines, rows


LPS_HEADER = ["method", "size", "heads", "loss", "loss - ref", "train s / ref",
              "ref time / this at equal loss (train s)", "CPU s / ref", "ref time / this at equal loss (CPU s)"]


def counts_by_heads(cells: list[Cell], heads: list[int]) -> str:
    """Non-embedding parameters and exact FLOPs per token of each size under every head count."""
    import torch

    from beyondbp.model.build import build_model
    from beyondbp.model.shape import forward_flops, resolve_model_config
    lines = []
    for size, cell in {c.size: c for c in cells}.items():
        counts = set()
        for h in heads:
            if cell.cfg.model.d_model % h:
                continue
            model_cfg = copy.deepcopy(cell.cfg.model)
            model_cfg.n_head = h
            model_cfg = resolve_model_config(model_cfg, 256)
            with torch.device("meta"):
                model = build_model(model_cfg, init_weights=False)
            counts.add((model.n_params_nonembedding(), model.n_params(), forward_flops(model_cfg)))
        lines.append(f"{size}: " + ("the same under every head count: " if len(counts) == 1 else "DIFFER: ")
                     + "; ".join(f"N {n:,}, all {a:,}, {f:,} forward FLOPs/token" for n, a, f in sorted(counts)))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", nargs="+", default=["quick", "cpu"], help="presets whose runs to measure")
    parser.add_argument("--sizes", nargs="*", default=None, help="size labels (default: every size of the presets)")
    parser.add_argument("--methods", nargs="+", default=["bp", "dfa_block"])
    parser.add_argument("--heads", nargs="+", type=int, default=[1, 2], help="head counts (skipped where d_model "
                        "does not divide)")
    parser.add_argument("--reference", type=int, default=2, help="the head count the others are compared with")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--repeats", type=int, default=1, help="trainings of each run per head count (time noise)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="spec overrides for every preset, as `study run` takes them (e.g. tokens_per_param=5)")
    parser.add_argument("--work", default="runs/heads", help="folder for the runs (reused: finished runs are read)")
    parser.add_argument("--report", action="store_true", help="train nothing: tabulate the runs already in --work")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.reference not in args.heads:
        parser.error(f"--reference: {args.reference} is not among --heads {args.heads}")
    if args.repeats < 1:
        parser.error(f"--repeats: must be >= 1, got {args.repeats}")
    cells = gather_cells(args.preset, args.sizes, args.methods, args.seeds, args.set)
    if not cells:
        parser.error("no preset run matches --sizes/--methods")
    work = Path(args.work)
    start = time.perf_counter()
    for i, repeat, order in abba_orders(args.heads, len(cells), args.repeats):
        for h in order:
            if cells[i].cfg.model.d_model % h == 0:
                train_once(cells[i], h, repeat, work, args.report)
    cells = [c for c in cells if args.reference in c.loss]
    if not cells:
        raise SystemExit(f"{work}: no finished run of the reference head count to report")
    print(f"{len(cells)} runs x head counts {args.heads} x {args.repeats} repeat(s), one process at a time on one "
          f"thread; this call took {time.perf_counter() - start:.0f} s; reference: {args.reference} heads\n")
    print(counts_by_heads(cells, args.heads) + "\n")
    print_table(RUN_HEADER, run_table(cells, args.heads, args.reference), args.markdown)
    summaries = size_summaries(cells, args.methods, args.heads, args.reference)
    print(f"\nPer size: best-lr loss (mean over seeds), its difference from {args.reference} heads per seed and "
          "in every cell (lr, seed), time ratios pooled over the size's cells (median [min, max]):")
    print_table(["method", "size", "heads", "loss", "loss - ref", "loss - ref, every cell", "train s / ref",
                 "CPU s / ref", "ref train s"],
                size_table(summaries, args.reference), args.markdown)
    lines, rows = loss_per_second(summaries, args.methods, args.reference)
    print("\nLoss per second:\n" + "\n".join(lines))
    print_table(LPS_HEADER, rows, args.markdown)


if __name__ == "__main__":
    main()
