"""What the report says about the study that was run, read from its runs, not from the spec's text.

`study_lines`: the methods with the learning rates they ran at, the sizes with their shapes, how
many runs finished. `compute_rows`: each method's declared training FLOPs per token under every
accounting (summary.json's `flops_per_token`, else the compute columns over the tokens) beside
the exact count measured on its final weights. `metric_rows`: the scalars a method logged
(`method/NAME`), at each run's last evaluation.
"""
from __future__ import annotations

from ..study.spec_types import Spec

COMPUTE_HEADER = ["method", "size", "paper FLOPs/token", "optimistic FLOPs/token", "exact FLOPs/token (declared)",
                  "exact FLOPs/token (measured)"]
METRICS_HEADER = ["run", "method metrics at the last evaluation"]


def _rates(results, label: str) -> str:
    return ", ".join(f"{lr:g}" for lr in sorted({r.run.lr for r in results if r.run.method == label}))


def study_lines(spec: Spec, results: list) -> list[str]:
    """One line each: the methods run (with their rates), the sizes (with their shapes), the runs."""
    methods = [m for m in spec.methods if any(r.run.method == m for r in results)] or list(spec.methods)
    shapes = {}
    counted = set()
    for r in results:  # a size's first run that recorded its N (none: a folder whose runs never started)
        model, n = r.run.model, "" if r.run.n_params is None else f"N = {r.run.n_params:,}"
        if r.run.size not in counted and (n or r.run.size not in shapes):
            counted.update([r.run.size] if n else [])
            shapes[r.run.size] = (f"{r.run.size} ({model.n_layer} blocks, d_model {model.d_model}{', ' if n else ''}{n})"
                                  if model.kind == "gpt" else f"{r.run.size} ({n or 'N not recorded'})")
    done = sum(1 for r in results if r.state == "completed")
    return [f"Methods run, with their learning rates: "
            + "; ".join(f"{m} ({_rates(results, m) or 'no runs'})" for m in methods) + ".",
            "Sizes: " + "; ".join(shapes.get(s, s) for s in spec.sizes) + ".",
            f"{len(results)} runs, {done} completed."]


def _declared(r) -> dict | None:
    summary = r.summary or {}
    record = summary.get("flops_per_token")
    if isinstance(record, dict):
        return record
    tokens = summary.get("tokens")
    if not tokens or summary.get("compute_flops") is None:
        return None
    return {"paper": summary["compute_flops"] / tokens, "optimistic": summary["compute_flops_optimistic"] / tokens,
            "exact": summary["compute_flops_exact"] / tokens}


def _count(value) -> str:
    return f"{value:,.0f}" if isinstance(value, (int, float)) else "not measured"


def compute_rows(results: list) -> list[list[str]]:
    """One row per method and size (its first run with a summary)."""
    rows, seen = [], set()
    for r in results:
        key = (r.run.method, r.run.size)
        record = _declared(r)
        if key in seen or record is None:
            continue
        seen.add(key)
        rows.append([r.run.method, r.run.size, _count(record.get("paper")), _count(record.get("optimistic")),
                     _count(record.get("exact")), _count(record.get("measured_exact"))])
    return rows


def metric_rows(results: list) -> list[list[str]]:
    """Runs whose method logged scalars: their values at the run's last evaluation."""
    rows = []
    for r in results:
        logged = r.last("method")
        if isinstance(logged, dict) and logged:
            rows.append([r.run.name, ", ".join(f"{k} {v:.4g}" for k, v in sorted(logged.items())
                                               if isinstance(v, (int, float)))])
    return rows
