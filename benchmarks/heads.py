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
Loss per second: along the reference's frontier (best-lr loss against the median training
seconds of each size) log loss is fitted linear in log seconds; its slope k prices time in loss.
For head count h at a size with loss L_h, reference loss L_ref and time ratio r: the reference's
loss in h's time is L_ref * r^k, and the reference needs (L_h / L_ref)^(1/k) / r times h's time
to reach L_h (> 1: h buys more loss per second). Ranges span the seeds' loss differences and
the cells' time ratios. Runs already in `--work` are not trained again. Reported, never asserted.
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
from beyondbp.plan import plan_study
from beyondbp.spec import load_spec


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
    time_ratios: list  # training seconds / the reference's, every in-cell pair
    cpu_ratios: list
    ref_seconds: float  # median training seconds of the reference runs of this size
    ref_loss: float


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
            for h in heads:
                with_h = [s for s in seeds if any(c.seed == s and h in c.loss for c in group)]
                if not with_h:
                    continue
                out.append(SizeSummary(
                    method, size, h, statistics.fmean(best_loss(group, h, s) for s in with_h),
                    [best_loss(group, h, s) - best_loss(group, reference, s) for s in with_h],
                    [r for c in group for r in ratios(c, "seconds", h, reference)],
                    finite(r for c in group for r in ratios(c, "cpu", h, reference)), ref_seconds, ref_loss))
    return out


def size_table(summaries: list[SizeSummary], reference: int) -> list[list[str]]:
    return [[s.method, s.size, str(s.heads), f"{s.loss:.4f}", spread(s.delta_per_seed, "+.4f"),
             spread(s.time_ratios, ".3f", statistics.median), spread(s.cpu_ratios, ".3f", statistics.median),
             f"{s.ref_seconds:.1f}"] for s in summaries if s.heads != reference]


def frontier_slope(summaries: list[SizeSummary], method: str, reference: int):
    """(k, residuals by size) of log loss = c + k log seconds over the reference's sizes; None under 2 sizes."""
    ref = [s for s in summaries if s.method == method and s.heads == reference]
    if len(ref) < 2:
        return None
    x, y = np.log([s.ref_seconds for s in ref]), np.log([s.ref_loss for s in ref])
    k, c = np.polyfit(x, y, 1)
    return float(k), {s.size: float(r) for s, r in zip(ref, y - (c + k * x))}


def loss_per_second(summaries: list[SizeSummary], methods, reference: int) -> tuple[list[str], list[list[str]]]:
    """Lines on each method's frontier slope, and a row per (method, size, non-reference head count)."""
    lines, rows = [], []
    for method in methods:
        fit = frontier_slope(summaries, method, reference)
        if fit is None:
            lines.append(f"{method}: fewer than 2 sizes; no frontier slope")
            continue
        k, residuals = fit
        if k >= 0:
            lines.append(f"{method}: k = {k:.4f}: loss does not fall with training time along the {reference}-head "
                         "frontier, so time cannot be priced in loss")
            continue
        lines.append(f"{method}: k = {k:.4f} (log loss per log training second along the {reference}-head frontier); "
                     "residuals " + ", ".join(f"{size} {r:+.4f}" for size, r in residuals.items()))
        for s in summaries:
            if s.method != method or s.heads == reference:
                continue
            deltas = s.delta_per_seed
            r_mid = statistics.median(s.time_ratios)
            corners = [(s.ref_loss + d, r) for d in (min(deltas), max(deltas)) for r in (min(s.time_ratios), max(s.time_ratios))]
            gap = lambda l, r: l - s.ref_loss * r ** k  # noqa: E731 - h's loss minus the reference's in h's time
            factor = lambda l, r: (l / s.ref_loss) ** (1 / k) / r  # noqa: E731
            loss_h = s.ref_loss + statistics.fmean(deltas)
            rows.append([method, s.size, str(s.heads), f"{loss_h:.4f}", f"{s.ref_loss * r_mid ** k:.4f}",
                         f"{gap(loss_h, r_mid):+.4f} [{min(gap(*c) for c in corners):+.4f}, {max(gap(*c) for c in corners):+.4f}]",
                         f"{factor(loss_h, r_mid):.2f} [{min(factor(*c) for c in corners):.2f}, "
                         f"{max(factor(*c) for c in corners):.2f}]"])
    return lines, rows


def print_table(header, rows, markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def counts_by_heads(cells: list[Cell], heads: list[int]) -> str:
    """Non-embedding parameters and exact FLOPs per token of each size under every head count."""
    import torch

    from beyondbp.model import build_model
    from beyondbp.model_shape import forward_flops, resolve_model_config
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
    print(f"\nPer size: best-lr loss (mean over seeds), its difference from {args.reference} heads per seed, "
          "time ratios pooled over the size's cells (median [min, max]):")
    print_table(["method", "size", "heads", "loss", "loss - ref", "train s / ref", "CPU s / ref", "ref train s"],
                size_table(summaries, args.reference), args.markdown)
    lines, rows = loss_per_second(summaries, args.methods, args.reference)
    print("\nLoss per second:\n" + "\n".join(lines))
    print_table(["method", "size", "heads", "loss", "ref's loss in this time", "loss - that",
                 "ref time / this time at equal loss"], rows, args.markdown)


if __name__ == "__main__":
    main()
