"""A study's report: frontier fits with their quality, Table 1, verdicts, figures, HTML page.

From the study folder: for each (method, size, budget) the learning rate with the lowest mean
final validation loss (over seeds) is kept. The frontier's candidate points are, by the spec's
`frontier_points`, each kept run's final evaluation (default: the only point of a decayed
schedule that is near-optimal for its length) or every evaluation from half of the run's tokens
on (`frontier.RUN_FRACTION`). Each method's frontier is fitted and checked
(`beyondbp.frontier`); each alternative is judged against BP (`beyondbp.verdict`) under four
compute accountings: the paper's, the optimistic one, the exact FLOP count and measured
wall-clock seconds. Diverged and failed runs are left out and listed.

Writes DIR/report/: table1.{md,csv,tex}, verdict.md, runs.md, best_by_size.md, results.json,
frontier.{png,svg}, alignment.png (when runs measured alignment) and report.html.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..fit.bootstrap import DEFAULT_BOOTSTRAP
from ..config import ConfigError
from ..fit.points import dumps, fit_json
from ..fit.frontier import (MAX_ABS_LOG_RESIDUAL, MAX_RMS_LOG_RESIDUAL, MIN_DECADES, MIN_SIZES, PAPER_TABLE1,
                       RUN_FRACTION, PowerLawFit, fit_frontier)
from ..study.plan import PlannedRun
from .verdict_text import LEGEND, TABLE_HEADER, answer_line, fmt as _fmt, notes, table_cells
from ..study.local import load_study, run_state
from ..train.run_folder import PF_DAY, read_metrics, read_summary
from ..fit.verdict import judge_all

REFERENCE = "bp"
# name -> (metrics column, factor to the reported unit, unit, description)
ACCOUNTINGS = {
    "paper": ("compute_pf_days", 1.0, "PF-days", "the paper's count (BP 6N, DFA 4N, shallow 2N FLOPs per token)"),
    "optimistic": ("compute_flops_optimistic", 1.0 / PF_DAY, "PF-days",
                   "optimistic count (a free feedback projection, e.g. on an optical co-processor)"),
    "exact": ("compute_flops_exact", 1.0 / PF_DAY, "PF-days", "exact FLOP count, attention and feedback included"),
    "wall_clock": ("elapsed_s", 1.0, "s", "measured training wall-clock seconds on this study's hardware"),
}
# At or above this `residual_common`, every position carries (nearly) the same vector into the
# final LayerNorm, so the model predicts one distribution everywhere: the unigram plateau.
COLLAPSED = 0.999


@dataclass
class RunResult:
    run: PlannedRun
    state: str
    summary: dict | None
    metrics: list[dict]

    @property
    def final_loss(self) -> float | None:
        value = (self.summary or {}).get("final_val_loss")
        return float(value) if value is not None and math.isfinite(value) else None

    def last(self, key: str):
        """The value of `key` at the run's last evaluation that logged it (None if none did)."""
        values = [m[key] for m in self.metrics if m.get(key) is not None]
        return values[-1] if values else None

    @property
    def final_residual_common(self) -> float | None:
        """`residual_common` at the run's last evaluation (Transformer runs; see train.residual_stats)."""
        return self.last("residual_common")

    @property
    def final_alignment(self) -> dict[str, float] | None:
        return self.last("alignment")


@dataclass
class AccountingFits:
    fits: dict[str, PowerLawFit] = field(default_factory=dict)
    unfitted: dict[str, str] = field(default_factory=dict)  # method -> why
    verdicts: dict[str, dict] = field(default_factory=dict)
    c_range: tuple[float, float] | None = None

    @property
    def reference_compute(self) -> float | None:
        """Where Table 1 gives each law's loss: the geometric middle of the compute studied."""
        return math.sqrt(self.c_range[0] * self.c_range[1]) if self.c_range else None


# --- results -------------------------------------------------------------------------------

def collect(study_dir: str | Path) -> tuple[dict, list[RunResult]]:
    plan = load_study(study_dir)
    runs_dir = Path(study_dir) / "runs"
    results = [RunResult(r, run_state(runs_dir / r.name), read_summary(runs_dir / r.name),
                         read_metrics(runs_dir / r.name / "metrics.jsonl")) for r in plan.runs]
    return plan.spec, results


def best_lr_runs(results: list[RunResult]) -> list[RunResult]:
    """For each (method, size, budget): the completed runs of the learning rate with the lowest
    mean final loss."""
    by_cell: dict[tuple[str, str, str], dict[float, list[RunResult]]] = {}
    for r in results:
        if r.state == "completed" and r.final_loss is not None:
            by_cell.setdefault((r.run.method, r.run.size, r.run.budget), {}).setdefault(r.run.lr, []).append(r)
    kept = []
    for lrs in by_cell.values():
        best = min(lrs, key=lambda lr: (np.mean([r.final_loss for r in lrs[lr]]), lr))
        kept.extend(lrs[best])
    return kept


def _usable(m: dict, column: str) -> bool:
    value, loss = m.get(column), m.get("val_loss")
    return bool(m.get("step", 0) > 0 and value and value > 0 and loss is not None and math.isfinite(loss))


def _chosen_rows(r: RunResult, column: str, mode: str) -> list[dict]:
    """A run's evaluations that count: its final one (mode `final`; none if the run ended early),
    or every one from RUN_FRACTION of its tokens on (mode `all`: earlier points lie above the
    frontier, see `beyondbp.frontier`)."""
    usable = [m for m in r.metrics if _usable(m, column)]
    if not usable:
        return []
    run_tokens = max(m.get("tokens", 0) for m in r.metrics)
    if mode == "final":
        return [usable[-1]] if usable[-1].get("tokens") == run_tokens else []
    return [m for m in usable if m.get("tokens", 0) >= RUN_FRACTION * run_tokens]


def frontier_points(runs: list[RunResult], accounting: str, mode: str = "final") -> list[dict]:
    """Rows (method, compute, loss, run, size) of the frontier's candidate points (`_chosen_rows`).
    The seeds of one configuration are averaged step by step into one point: the envelope of
    several seeds would otherwise pick the luckiest one."""
    column, factor = ACCOUNTINGS[accounting][:2]
    by_config: dict[tuple, list[RunResult]] = {}
    for r in runs:
        by_config.setdefault((r.run.method, r.run.size, r.run.budget, r.run.lr), []).append(r)
    rows = []
    for seeds in by_config.values():
        per_step: dict[int, list[dict]] = {}
        for r in seeds:
            for m in _chosen_rows(r, column, mode):
                per_step.setdefault(m["step"], []).append(m)
        name = seeds[0].run.name if len(seeds) == 1 else seeds[0].run.name.rsplit("_s", 1)[0] + "_seeds"
        rows += [{"method": seeds[0].run.method, "compute_pf_days": float(np.mean([m[column] for m in ms])) * factor,
                  "loss": float(np.mean([m["val_loss"] for m in ms])), "run": name, "size": seeds[0].run.size}
                 for step, ms in sorted(per_step.items()) if len(ms) == len(seeds)]
    return rows


def fit_accounting(rows: list[dict], bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> AccountingFits:
    """Fit each method's frontier (methods with too few points are reported, not fatal)
    and judge each alternative against BP."""
    out = AccountingFits()
    if rows:
        computes = [r["compute_pf_days"] for r in rows]
        out.c_range = (min(computes), max(computes))
    spans = {}
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        computes = [r["compute_pf_days"] for r in mine]
        spans[method] = (min(computes), max(computes))
        try:
            out.fits[method] = fit_frontier(computes, [r["loss"] for r in mine], [r["run"] for r in mine],
                                            [r["size"] for r in mine], bootstrap=bootstrap, seed=seed, name=method)
        except ConfigError as exc:
            out.unfitted[method] = str(exc)
    out.verdicts = judge_all(out.fits, REFERENCE, spans, bootstrap, seed)
    return out


# --- Table 1 -------------------------------------------------------------------------------

def _interval(ci) -> str:
    return "" if not ci else f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def table1_rows(fits: AccountingFits, methods: list[str], track: str = "transformer") -> list[dict]:
    """Table 1's rows; the paper's columns only for the Transformer track (its Table 1 is about GPTs)."""
    rows = []
    for m in methods:
        fit, paper = fits.fits.get(m), PAPER_TABLE1.get(m) if track == "transformer" else None
        quality = fit.quality() if fit else None
        at_reference = fit.loss_at(fits.reference_compute) if fit else None
        rows.append({
            "method": m,
            "alpha_C": fit.alpha_C if fit else None, "alpha_C_ci": fit.alpha_C_ci if fit else None,
            "C_c": fit.C_c if fit else None, "reference_compute": fits.reference_compute,
            "loss_at_reference": at_reference["value"] if fit else None,
            "loss_at_reference_ci": at_reference["ci"] if fit else None,
            "frontier_points": fit.n_points if fit else 0,
            "sizes_on_frontier": quality["sizes_on_frontier"] if quality else [],
            "fit_range_pf_days": quality["fit_range_pf_days"] if quality else None,
            "rms_log_residual": quality["rms_log_residual"] if quality else None,
            "max_abs_log_residual": quality["max_abs_log_residual"] if quality else None,
            "power_law_ok": quality["power_law_ok"] if quality else False,
            "paper_alpha_C": paper[0] if paper else None, "paper_C_c": paper[1] if paper else None,
            "note": fits.unfitted.get(m) or ("; ".join(quality["problems"]) if quality else ""),
        })
    return rows


def _range(r) -> str:
    return "-" if not r["fit_range_pf_days"] else f"{_fmt(r['fit_range_pf_days'][0])} to {_fmt(r['fit_range_pf_days'][1])}"


def _power_law_cell(r) -> str:
    return "yes" if r["power_law_ok"] else "**not a power law**"


def table1_cells(r: dict) -> list[str]:
    loss = _fmt(r["loss_at_reference"], 4)
    if r["loss_at_reference_ci"]:
        loss += f" [{_fmt(r['loss_at_reference_ci'][0], 4)}, {_fmt(r['loss_at_reference_ci'][1], 4)}]"
    return [r["method"], _fmt(r["alpha_C"]), _interval(r["alpha_C_ci"]), _fmt(r["C_c"]), loss,
            str(len(r["sizes_on_frontier"])), _range(r),
            f"{_fmt(r['rms_log_residual'], 2)} / {_fmt(r['max_abs_log_residual'], 2)}", _power_law_cell(r),
            _fmt(r["paper_alpha_C"]), _fmt(r["paper_C_c"])]


TABLE1_HEADER = ["method", "alpha_C", "95% interval", "C_c (PF-days)", "loss at C_ref [95%]", "sizes on frontier",
                 "fit range (PF-days)", "rms / max log residual", "power law", "paper alpha_C", "paper C_c"]


def table1_markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(TABLE1_HEADER) + " |", "|" + "---|" * len(TABLE1_HEADER)]
    lines += ["| " + " | ".join(table1_cells(r)) + " |" for r in rows]
    notes = [f"- {r['method']}: not a power law: {r['note']}." for r in rows if r["note"]]
    legend = (f"Power law: at least {MIN_SIZES} model sizes on the frontier, at least {MIN_DECADES} decades "
              f"of compute, rms log residual <= {MAX_RMS_LOG_RESIDUAL} and worst <= {MAX_ABS_LOG_RESIDUAL}. "
              "Intervals: residual bootstrap over the frontier points. C_c is where a law reaches loss 1, far "
              "outside the data; the loss at C_ref = "
              f"{_fmt(next((r['reference_compute'] for r in rows if r['reference_compute']), None))} PF-days, the "
              "geometric middle of the compute studied, is what the data pin down.")
    return "\n".join(lines + [""] + notes + ([""] if notes else []) + [legend]) + "\n"


def table1_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "alpha_C", "alpha_C_lo", "alpha_C_hi", "C_c_pf_days", "reference_compute_pf_days",
                     "loss_at_reference", "loss_at_reference_lo", "loss_at_reference_hi",
                     "frontier_points", "paper_alpha_C", "paper_C_c", "sizes_on_frontier", "fit_lo_pf_days",
                     "fit_hi_pf_days", "rms_log_residual", "max_abs_log_residual", "power_law_ok"])

    def cell(v):
        return "" if v is None else repr(float(v))

    for r in rows:
        a_ci, l_ci = r["alpha_C_ci"] or (None, None), r["loss_at_reference_ci"] or (None, None)
        fit_range = r["fit_range_pf_days"] or (None, None)
        writer.writerow([r["method"], *map(cell, [r["alpha_C"], *a_ci, r["C_c"], r["reference_compute"],
                                                  r["loss_at_reference"], *l_ci]), r["frontier_points"],
                         "" if r["paper_alpha_C"] is None else r["paper_alpha_C"],
                         "" if r["paper_C_c"] is None else r["paper_C_c"],
                         " ".join(r["sizes_on_frontier"]), *map(cell, fit_range),
                         cell(r["rms_log_residual"]), cell(r["max_abs_log_residual"]), r["power_law_ok"]])
    return buf.getvalue()


def _tex_number(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "--"
    if math.isinf(x):  # a flat frontier (alpha_C ~ 0) puts C_c beyond floating point
        return r"$\infty$" if x > 0 else r"$-\infty$"
    mantissa, exponent = f"{x:.2e}".split("e")
    exponent = int(exponent)
    return f"${mantissa}$" if exponent == 0 else f"${mantissa}\\times10^{{{exponent}}}$"


def table1_tex(rows: list[dict]) -> str:
    lines = [r"\begin{tabular}{lllllll}", r"\toprule",
             r"Method & $\alpha_C$ & $C_c$ (PF-days) & $L(C_\mathrm{ref})$ & rms residual & paper $\alpha_C$ & paper $C_c$ \\",
             r"\midrule"]
    for r in rows:
        alpha = "--" if r["alpha_C"] is None else f"${r['alpha_C']:.3f}$"
        if r["alpha_C_ci"]:
            alpha += f" [${r['alpha_C_ci'][0]:.3f}$, ${r['alpha_C_ci'][1]:.3f}$]"
        c_c = _tex_number(r["C_c"])
        loss = "--" if r["loss_at_reference"] is None else f"${r['loss_at_reference']:.3f}$"
        if r["loss_at_reference_ci"]:
            loss += f" [${r['loss_at_reference_ci'][0]:.3f}$, ${r['loss_at_reference_ci'][1]:.3f}$]"
        rms = "--" if r.get("rms_log_residual") is None else f"${r['rms_log_residual']:.3f}$"
        if r.get("alpha_C") is not None and not r.get("power_law_ok", True):
            rms += r" (not a power law)"
        paper_alpha = "--" if r["paper_alpha_C"] is None else f"${r['paper_alpha_C']:.3f}$"
        name = r["method"].replace("_", r"\_")
        lines.append(f"{name} & {alpha} & {c_c} & {loss} & {rms} & {paper_alpha} & {_tex_number(r['paper_C_c'])} \\\\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


# --- verdicts and diagnostics -----------------------------------------------------------------

def diagnostics_markdown(kept: list[RunResult]) -> list[str]:
    """Per method: the final residual_common of its best-learning-rate runs, collapses flagged."""
    lines = []
    for method in dict.fromkeys(r.run.method for r in kept):
        values = [(r.final_residual_common, r.run.name) for r in kept
                  if r.run.method == method and r.final_residual_common is not None]
        if not values:
            continue
        low, high = min(v for v, _ in values), max(v for v, _ in values)
        collapsed = [name for v, name in values if v >= COLLAPSED]
        text = f"- {method}: final residual_common {low:.4f} to {high:.4f} over {len(values)} runs"
        if collapsed:
            text += (f"; {len(collapsed)} collapsed (>= {COLLAPSED}: every position gets the same "
                     f"prediction): {', '.join(collapsed)}")
        lines.append(text + ".")
    if not lines:
        return []
    return ["## Diagnostics: the residual stream entering the final LayerNorm", "",
            "residual_common = norm of the positions' mean vector / their mean norm, at each best run's "
            "last evaluation (1 = one vector for every position).", "", *lines, ""]


def answer_lines(fits: AccountingFits) -> list[str]:
    """The quotable answer under one accounting: one line per alternative."""
    unit = "PF-days"
    if REFERENCE not in fits.fits:
        return [f"No verdict: BP has no fitted frontier ({fits.unfitted.get(REFERENCE, 'no completed runs')})."]
    lines = [answer_line(m, v, unit) for m, v in fits.verdicts.items()]
    return lines + [f"{m}: no verdict ({why})." for m, why in fits.unfitted.items() if m != REFERENCE]


def verdict_rows(fits: AccountingFits) -> list[list[str]]:
    return [table_cells(m, v) for m, v in fits.verdicts.items()]


def verdict_notes(fits: AccountingFits, unit: str) -> list[str]:
    out = [n for m, v in fits.verdicts.items() for n in notes(m, v, unit)]
    return out + [f"{m}: no verdict ({why})." for m, why in fits.unfitted.items()]


def verdict_markdown(spec: dict, all_fits: dict[str, AccountingFits], excluded: list[RunResult],
                     kept: list[RunResult] | None = None) -> str:
    lines = [f"# Verdict: {spec['name']}", "", f"## The answer, under {ACCOUNTINGS['paper'][3]}", ""]
    lines += [f"- {line}" for line in answer_lines(all_fits["paper"])] + ["", LEGEND, ""]
    for name, fits in all_fits.items():
        unit, description = ACCOUNTINGS[name][2], ACCOUNTINGS[name][3]
        lines += [f"## Compute as {description}", ""]
        if REFERENCE not in fits.fits:
            lines += [f"No verdict: BP has no fitted frontier ({fits.unfitted.get(REFERENCE, 'no completed runs')}).", ""]
            continue
        if fits.verdicts:
            lines += ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
            lines += ["| " + " | ".join(row) + " |" for row in verdict_rows(fits)] + [""]
        lines += [f"- {n}" for n in verdict_notes(fits, unit)] + [""]
    lines += diagnostics_markdown(kept or [])
    if excluded:
        lines += ["## Runs left out of the fits", ""]
        lines += [f"- {r.run.name}: {r.state}" + (f" ({r.summary['error']})" if (r.summary or {}).get("error") else "")
                  for r in excluded]
        lines.append("")
    return "\n".join(lines)


RUNS_HEADER = ["run", "status", "non-embedding parameters", "tokens", "final val loss", "residual common",
               "residual rms", "alignment (last, per block)", "seconds"]


def runs_rows(results: list[RunResult]) -> list[list[str]]:
    rows = []
    for r in results:
        align = r.final_alignment
        align_text = " ".join(f"{v:.2f}" for v in align.values()) if align else ""
        rows.append([r.run.name, r.state, f"{r.run.n_params:,}", f"{r.run.tokens:,}", _fmt(r.final_loss, 4),
                     _fmt(r.final_residual_common, 3), _fmt(r.last("residual_rms"), 3), align_text,
                     _fmt((r.summary or {}).get("elapsed_s"))])
    return rows


def runs_markdown(results: list[RunResult]) -> str:
    lines = ["| " + " | ".join(RUNS_HEADER) + " |", "|" + "---|" * len(RUNS_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in runs_rows(results)]
    return "\n".join(lines) + "\n"


def best_by_size_markdown(kept: list[RunResult], methods: list[str], sizes: list[str]) -> str:
    """Methods x sizes: each size's best final validation loss (over budgets and kept learning
    rates), with that run's final residual_common and mean alignment of the DFA-trained blocks."""
    lines = ["| method | " + " | ".join(sizes) + " |", "|---|" + "---|" * len(sizes)]
    for method in methods:
        cells = []
        for size in sizes:
            runs = [r for r in kept if r.run.method == method and r.run.size == size]
            if not runs:
                cells.append("-")
                continue
            best = min(runs, key=lambda r: r.final_loss)
            cell = f"{best.final_loss:.3f}"
            if best.final_residual_common is not None:
                cell += f" (common {best.final_residual_common:.2f}"
                align = best.final_alignment
                lower = [v for v in list(align.values())[:-1]] if align else []
                cell += f", alignment {np.mean(lower):+.2f})" if lower else ")"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    legend = ("Final validation loss of each size's best run; common: residual_common at its end (1 = every "
              "position carries the same vector); alignment: mean cosine between the update and the BP "
              "gradient over the blocks below the last, at its last measurement.")
    return "\n".join(lines + ["", legend]) + "\n"


# --- entry point ------------------------------------------------------------------------------

def _accounting_json(fits: AccountingFits) -> dict:
    return {"reference_compute": fits.reference_compute,
            "fits": {m: fit_json(f, fits.reference_compute) for m, f in fits.fits.items()},
            "unfitted": fits.unfitted, "verdicts": fits.verdicts}


def write_report(study_dir: str | Path, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Path:
    """Fit, judge and write DIR/report/; return the report folder."""
    from .figures import alignment_figure, frontier_figure, png_bytes
    from .html import report_html
    spec, results = collect(study_dir)
    methods = spec["methods"]
    kept = best_lr_runs(results)
    excluded = [r for r in results if r.state in ("diverged", "failed")]
    mode = spec.get("frontier_points", "final")
    all_fits = {name: fit_accounting(frontier_points(kept, name, mode), bootstrap, seed) for name in ACCOUNTINGS}
    out = Path(study_dir) / "report"
    out.mkdir(exist_ok=True)
    t1 = table1_rows(all_fits["paper"], methods, spec.get("track", "transformer"))
    (out / "table1.md").write_text(table1_markdown(t1))
    (out / "table1.csv").write_text(table1_csv(t1))
    (out / "table1.tex").write_text(table1_tex(t1))
    verdict_md = verdict_markdown(spec, all_fits, excluded, kept)
    (out / "verdict.md").write_text(verdict_md)
    (out / "runs.md").write_text(runs_markdown(results))
    (out / "best_by_size.md").write_text(best_by_size_markdown(kept, methods, list(spec["sizes"])))
    (out / "results.json").write_text(dumps({
        "frontier_points": mode,
        "accountings": {name: _accounting_json(f) for name, f in all_fits.items()},
        "best_runs": sorted(r.run.name for r in kept),
        "excluded": {r.run.name: r.state for r in excluded},
    }) + "\n")

    images = {}
    fig = frontier_figure(results, all_fits["paper"], methods,
                          "test loss" if spec.get("track") == "mlp" else "validation loss")
    fig.savefig(out / "frontier.svg")
    images["Figure 3: loss against compute, fitted frontiers"] = png_bytes(fig)
    (out / "frontier.png").write_bytes(images["Figure 3: loss against compute, fitted frontiers"])
    fig = alignment_figure(results)
    if fig is not None:
        images["Alignment per block over training"] = png_bytes(fig)
        (out / "alignment.png").write_bytes(images["Alignment per block over training"])
    (out / "report.html").write_text(report_html(spec, t1, all_fits, results, images))
    return out
