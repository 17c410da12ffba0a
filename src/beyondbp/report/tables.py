"""The report's tables: Table 1 (Markdown, CSV, LaTeX), every run, each size's best loss."""
from __future__ import annotations

import csv
import io
import math

import numpy as np

from ..fit.frontier import MAX_ABS_LOG_RESIDUAL, MAX_RMS_LOG_RESIDUAL, MIN_DECADES, MIN_SIZES, PAPER_TABLE1
from .markdown import markdown_table
from .results import AccountingFits, RunResult
from .verdict_text import fmt as _fmt, interval


def table1_rows(fits: AccountingFits, methods: list[str], paper_columns: bool = True) -> list[dict]:
    """Table 1's rows; the paper's columns only where its Table 1 applies (about GPTs: `Track.paper_columns`)."""
    rows = []
    for m in methods:
        fit, paper = fits.fits.get(m), PAPER_TABLE1.get(m) if paper_columns else None
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
    return [r["method"], _fmt(r["alpha_C"]), interval(r["alpha_C_ci"]), _fmt(r["C_c"]), loss,
            str(len(r["sizes_on_frontier"])), _range(r),
            f"{_fmt(r['rms_log_residual'], 2)} / {_fmt(r['max_abs_log_residual'], 2)}", _power_law_cell(r),
            _fmt(r["paper_alpha_C"]), _fmt(r["paper_C_c"])]


TABLE1_HEADER = ["method", "alpha_C", "95% interval", "C_c (PF-days)", "loss at C_ref [95%]", "sizes on frontier",
                 "fit range (PF-days)", "rms / max log residual", "power law", "paper alpha_C", "paper C_c"]


def table1_markdown(rows: list[dict]) -> str:
    lines = markdown_table(TABLE1_HEADER, [table1_cells(r) for r in rows])
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


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
                "^": r"\textasciicircum{}", "_": r"\_", "%": r"\%", "~": r"\textasciitilde{}"}


def tex_text(text: str) -> str:
    """`text` as LaTeX prints it verbatim: every special character escaped, so that no label
    reaches TeX as a control sequence (\\write18 and the like)."""
    return "".join(_TEX_SPECIAL.get(c, c) for c in str(text))


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
        name = tex_text(r["method"])
        lines.append(f"{name} & {alpha} & {c_c} & {loss} & {rms} & {paper_alpha} & {_tex_number(r['paper_C_c'])} \\\\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


RUNS_HEADER = ["run", "status", "non-embedding parameters", "tokens", "final val loss", "residual common",
               "residual rms", "alignment (last, per block)", "seconds"]


def runs_rows(results: list[RunResult]) -> list[list[str]]:
    rows = []
    for r in results:
        align = r.final_alignment
        align_text = " ".join(f"{v:.2f}" for v in align.values()) if align else ""
        counts = [f"{n:,}" if n is not None else "?" for n in (r.run.n_params, r.run.tokens)]  # "?": never started
        rows.append([r.run.name, r.state, *counts, _fmt(r.final_loss, 4),
                     _fmt(r.final_residual_common, 3), _fmt(r.last("residual_rms"), 3), align_text,
                     _fmt((r.summary or {}).get("elapsed_s"))])
    return rows


def runs_markdown(results: list[RunResult]) -> str:
    lines = markdown_table(RUNS_HEADER, runs_rows(results))
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
