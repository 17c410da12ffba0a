"""The allocation section in words and tables, as allocation.md and as a part of report.html.

Both render the same blocks (`allocation_blocks`): ("h2" | "h3" | "p", text),
("table", header, rows) and ("ul", items).
"""
from __future__ import annotations

import html

import numpy as np

from ..runs.folder import PF_DAY
from .lnd import AllocationSection
from .html import _bold, _html_table
from .markdown import markdown_table
from .results import ACCOUNTINGS, REFERENCE, AccountingFits
from .verdict_text import fmt, letter_text, multiplier_text, notes, share_text

FIT_HEADER = ["method", "runs", "E [95%]", "A [95%]", "B [95%]", "a [95%]", "b [95%]",
              "log residual rms / max"]
ALLOCATION_HEADER = ["method", "N_opt ∝ C^ [95%]", "D_opt ∝ C^ [95%]", "L* - E ∝ C^- [95%]",
                     "tokens per parameter at the smallest compute [95%]",
                     "tokens per parameter at the largest compute [95%]", "isoFLOP: N_opt ∝ C^ [95%]"]
LAW_HEADER = ["method", "L*(C) exponent a·b/(a+b) [95%]", "E [95%]", "C_c", "verdict on L*(C)", "bootstrap share",
              "compute multiplier on L*(C) [95%]", "envelope verdict", "envelope compute multiplier [95%]"]
RESIDUAL_HEADER = ["run", "N", "D", "tokens per parameter", "loss", "log residual"]
INTRO = ("L(N, D) = E + A / N^a + B / D^b fitted per method to the final validation loss of every "
         "best-learning-rate run (N: non-embedding parameters, D: training tokens), in log-sum-exp form "
         "with a Huber loss (delta 1e-3) on log L, L-BFGS from a grid of starts; 95% percentile intervals "
         "from {bootstrap} refits on runs resampled with replacement. The compute-optimal allocation follows: "
         "N_opt ∝ C^(b/(a+b)), D_opt ∝ C^(a/(a+b)) and L*(C) = E + (C / C_c)^-(a·b/(a+b)), with C = k N D.")


def _value(value, ci, digits: int = 3) -> str:
    text = fmt(value, digits)
    return text + (f" [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]" if ci else "")


def _fit_rows(section: AllocationSection) -> list[list[str]]:
    rows = []
    for method, fit in section.fits.items():
        d = fit.to_dict()
        rows.append([method, str(d["n_runs"]), *(_value(d[p], d[f"{p}_ci"]) for p in ("E", "A", "B", "a", "b")),
                     f"{d['residual_rms']:.4f} / {d['residual_max']:.4f}"])
    return rows


def _allocation_rows(section: AllocationSection) -> tuple[list[list[str]], list[str]]:
    rows, computes = [], []
    for method, summary in section.summaries.items():
        alloc, iso = summary["allocation"], summary["isoflop"]["exponent"]
        tpp, tpp_ci = alloc["tokens_per_param"], alloc["tokens_per_param_ci"] or [None, None]
        rows.append([method, *(_value(alloc[e], alloc[f"{e}_ci"]) for e in ("n_exponent", "d_exponent", "loss_exponent")),
                     _value(tpp[0], tpp_ci[0]), _value(tpp[-1], tpp_ci[-1]),
                     _value(iso["n_exponent"], iso["n_exponent_ci"]) + f" ({iso['n_points']} bracketed minima)"])
        lo, hi = (c / PF_DAY for c in (alloc["compute"][0], alloc["compute"][-1]))
        computes.append(f"{method} {fmt(lo)} to {fmt(hi)}")
    return rows, computes


def bracketing_text(method: str, summary: dict) -> str:
    """One line: whether the method's optimal tokens per parameter from its L(N, D) law (estimate and
    interval) lie inside the range its runs trained, at each compute of the allocation table; and
    the tokens per parameter at the isoFLOP minima the sizes bracket (no law assumed)."""
    b, k = summary["bracketing"], summary["allocation"]["flops_per_param_token"]
    lo, hi = b["run_range"]
    verdict = {True: "bracketed", False: "not bracketed", None: "no interval, so not known"}[b["bracketed"]]
    at = "; ".join(f"{fmt(a['compute'] / PF_DAY)} PF-days {_value(a['tokens_per_param'], a['ci'])}" for a in b["at"])
    minima = [m for m in summary["isoflop"]["minima"] if m["bracketed"]]
    iso = ("; isoFLOP minima bracketed by the sizes at " + ", ".join(
        f"{fmt(m['compute'] / PF_DAY)} PF-days: {fmt(m['compute'] / (k * m['n_opt'] ** 2))}" for m in minima)
        if minima else "; no isoFLOP minimum bracketed by the sizes")
    return (f"{method}: L(N, D) law {verdict}: optimal tokens per parameter {at}, against runs at {fmt(lo)} to "
            f"{fmt(hi)}{iso} tokens per parameter.")


def _law_rows(section: AllocationSection, accounting: str, envelope: AccountingFits | None) -> list[list[str]]:
    rows = []
    for method, law in section.laws[accounting].items():
        d = law.to_dict()
        head = [method, _value(d["gamma"], d["gamma_ci"]), _value(d["E"], d["E_ci"]), fmt(d["C_c"])]
        if method == REFERENCE:
            rows.append(head + ["reference"] + ["-"] * 4)
            continue
        v = section.verdicts[accounting].get(method)
        env = (envelope.verdicts if envelope else {}).get(method)
        rows.append(head + ([letter_text(v), share_text(v), multiplier_text(v)] if v else ["no BP law", "-", "-"])
                    + ([letter_text(env), multiplier_text(env)] if env else ["-", "-"]))
    return rows


def _residual_rows(fit) -> list[list[str]]:
    order = np.lexsort((fit.tokens, fit.n_params))
    names = fit.runs or [""] * len(fit.loss)
    return [[names[i], f"{fit.n_params[i]:.4g}", f"{fit.tokens[i]:.4g}", f"{fit.tokens[i] / fit.n_params[i]:.3g}",
             f"{fit.loss[i]:.4f}", f"{fit.log_residuals[i]:+.4f}"] for i in order]


def allocation_blocks(section: AllocationSection, envelopes: dict[str, AccountingFits]) -> list[tuple]:
    """The section as blocks: fits, allocation, L*(C) with verdicts per accounting, warnings,
    residuals."""
    blocks = [("h2", "Allocation: L(N, D)"), ("p", INTRO.format(bootstrap=section.bootstrap))]
    if section.unfitted:
        blocks.append(("ul", [f"{m}: no L(N, D) fit ({why})." for m, why in section.unfitted.items()]))
    if not section.fits:
        return blocks
    rows, computes = _allocation_rows(section)
    blocks += [("h3", "Fits"), ("table", FIT_HEADER, _fit_rows(section)),
               ("h3", f"Compute-optimal allocation ({ACCOUNTINGS['paper'].description})"),
               ("table", ALLOCATION_HEADER, rows),
               ("p", "Smallest and largest compute of each method's runs, in PF-days: " + "; ".join(computes)
                + ". The isoFLOP column is Chinchilla's approach 2 (a parabola per fixed compute), a cross-check of "
                "N_opt's exponent."),
               ("p", "Is the optimum bracketed (estimate and 95% interval inside the tokens per parameter the runs "
                "trained)?"), ("ul", [bracketing_text(m, s) for m, s in section.summaries.items()])]
    for accounting, counted in ACCOUNTINGS.items():
        unit, description = counted.unit, counted.description
        if not section.laws[accounting]:
            continue
        blocks += [("h3", f"L*(C) and its verdict, compute as {description}"),
                   ("p", f"C in {unit}; k = median compute / (N D) of each method's runs: "
                    + ", ".join(f"{m} {fmt(k)}" for m, k in section.k[accounting].items())
                    + ". Beside it, the verdict on the envelope frontier of the same runs."),
                   ("table", LAW_HEADER, _law_rows(section, accounting, envelopes.get(accounting)))]
        items = [n for m, v in section.verdicts[accounting].items() for n in notes(m, v, unit)]
        if items:
            blocks.append(("ul", items))
    blocks += [("h3", "Warnings"), ("ul", section.warnings or ["none: every optimum lies inside the grid studied."])]
    for method, fit in section.fits.items():
        blocks += [("h3", f"Residuals: {method}"), ("p", "log(observed loss) - log(fitted loss), by size and budget."),
                   ("table", RESIDUAL_HEADER, _residual_rows(fit))]
    return blocks


def blocks_markdown(blocks: list[tuple]) -> str:
    lines = []
    for kind, *rest in blocks:
        if kind in ("h2", "h3"):
            lines += [f"{'#' * int(kind[1])} {rest[0]}", ""]
        elif kind == "p":
            lines += [rest[0], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in rest[0]] + [""]
        else:
            header, rows = rest
            lines += markdown_table(header, rows) + [""]
    return "\n".join(lines)


def blocks_html(blocks: list[tuple]) -> str:
    out = []
    for kind, *rest in blocks:
        if kind in ("h2", "h3"):
            out.append(f"<{kind}>{html.escape(rest[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_bold(rest[0])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in rest[0]) + "</ul>")
        else:
            out.append(_html_table(*rest))
    return "\n".join(out)
