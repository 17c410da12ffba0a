"""The report as one self-contained HTML page (figures inlined, no scripts, no remote assets)."""
from __future__ import annotations

import base64
import html

from ..study.spec_types import Spec
from .results import ACCOUNTINGS, REFERENCE, frontier_kind, frontier_sentence
from .study_text import COMPUTE_HEADER, METRICS_HEADER, compute_rows, metric_rows, study_lines
from .tuning import tuning_lines
from .tables import RUNS_HEADER, TABLE1_HEADER, runs_rows, table1_cells
from .verdict_text import LEGEND, OTHER_HEADER, TABLE_HEADER, answer_lines, other_rows, verdict_notes, verdict_rows


def _html_table(header: list[str], rows: list[list[str]], table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c).replace('**', ''))}</td>" for c in row) + "</tr>"
                   for row in rows)
    attribute = f' id="{table_id}"' if table_id else ""
    return f"<table{attribute}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _bold(text: str) -> str:
    """Markdown **x** as <strong>x</strong>, the rest escaped."""
    parts = html.escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def _verdicts_html(all_fits: dict) -> str:
    """The paper's count as one table and its notes; the other accountings collapsed below it."""
    paper = all_fits["paper"]
    out = ""
    if REFERENCE in paper.fits and paper.verdicts:
        out += _html_table(TABLE_HEADER, verdict_rows(paper))
    items = verdict_notes(paper, ACCOUNTINGS["paper"].unit)
    out += "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in items) + "</ul>" if items else ""
    others = other_rows(all_fits)
    if others:
        names = "; ".join(f"{name}: {ACCOUNTINGS[name].description}" for name in all_fits if name != "paper")
        out += (f"<details><summary>The other accountings</summary><p>{html.escape(names)}.</p>"
                f"{_html_table(OTHER_HEADER, others)}</details>")
    return out


def _method_tables(results: list) -> str:
    """Each method's declared compute per token beside its measured exact count; logged metrics."""
    out = ""
    compute = compute_rows(results)
    if compute:
        out += "<h2>Compute per token, declared and measured</h2>" + _html_table(COMPUTE_HEADER, compute, "compute")
    metrics = metric_rows(results)
    if metrics:
        out += "<h2>Method metrics</h2>" + _html_table(METRICS_HEADER, metrics, "method-metrics")
    return out


def report_html(spec: Spec, t1: list[dict], all_fits: dict, results: list, images: dict[str, bytes],
                allocation: str = "", tuning: dict | None = None) -> str:
    """The page: the frontier figure and the answer first (paper's count), its verdict table with the
    other accountings collapsed below it, Table 1,
    the allocation section (an HTML fragment; studies with several budgets per size), the
    tuning section (`report.tuning`), the figures, every run."""
    tuning_html = ("<h2>Tuning and seed noise</h2><ul>" + "".join(f"<li>{html.escape(line)}</li>"
                   for line in tuning_lines(tuning)) + "</ul>") if tuning else ""
    figure = {name: (f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
                     f'{base64.b64encode(png).decode()}"><figcaption>{html.escape(name)}</figcaption></figure>')
              for name, png in images.items()}
    lead = next(iter(figure), None)  # the frontier figure leads the page
    figures = "".join(f for name, f in figure.items() if name != lead)
    title = html.escape(f"beyondbp study: {spec.name}")
    points = ("each run's final evaluation" if spec.frontier_points == "final"
              else "every evaluation from half of each run's tokens on")
    answer = "".join(f"<li>{_bold(line)}</li>" for line in answer_lines(all_fits["paper"]))
    study = "".join(f"<li>{html.escape(line)}</li>" for line in study_lines(spec, results))
    description = html.escape(f"The spec's description: {spec.description} ") if spec.description else ""
    sentence = frontier_sentence(frontier_kind(spec))
    kind = html.escape(" " + sentence) if sentence else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; }}
figcaption {{ color: #666; font-size: 0.85em; }}
</style></head><body>
<h1>{title}</h1>
{figure.get(lead, "")}
<h2>The answer, under {html.escape(ACCOUNTINGS['paper'].description)}</h2>
<ul>{answer}</ul>
<p>{html.escape(LEGEND)}</p>
<h2>Verdicts</h2>
{_verdicts_html(all_fits)}
<h2>The study</h2>
<ul>{study}</ul>
<p>{description}Frontiers are fitted as L(C) = (C / C_c)^alpha_C (Kaplan's form, C_c in PF-days) on the
lower envelope of {points} at the best learning rate per size and budget.{kind}</p>
<h2>Table 1</h2>
{_html_table(TABLE1_HEADER, [table1_cells(r) for r in t1], "table1")}{allocation}{tuning_html}
<h2>Figures</h2>
{figures}
<h2>Runs</h2>
{_html_table(RUNS_HEADER, runs_rows(results))}{_method_tables(results)}
</body></html>
"""
