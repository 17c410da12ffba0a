"""The report as one self-contained HTML page (figures inlined, no scripts, no remote assets)."""
from __future__ import annotations

import base64
import html

from .report import RUNS_HEADER, TABLE1_HEADER, runs_rows, table1_cells


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c).replace('**', ''))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdict_html(verdict_md: str) -> str:
    out = ""
    for line in verdict_md.splitlines()[2:]:
        if line.startswith("## "):
            out += f"<h3>{html.escape(line[3:])}</h3>"
        elif line.startswith("- "):
            out += f"<li>{html.escape(line[2:])}</li>"
        elif line.strip():
            out += f"<p>{html.escape(line)}</p>"
    return out


def report_html(spec: dict, t1: list[dict], verdict_md: str, results: list, images: dict[str, bytes]) -> str:
    figures = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, png in images.items())
    title = html.escape(f"beyondbp study: {spec['name']}")
    points = ("each run's final evaluation" if spec.get("frontier_points", "final") == "final"
              else "every evaluation past the first tenth of each run")
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
<p>{html.escape(spec.get('description') or '')}</p>
<p>Methods: {html.escape(', '.join(spec['methods']))}; sizes: {html.escape(', '.join(spec['sizes']))};
{len(results)} runs. Frontiers are fitted as L(C) = (C / C_c)^alpha_C (Kaplan's form, C_c in PF-days) on the
lower envelope of {points} at the best learning rate per size and budget.</p>
<h2>Table 1</h2>
{_html_table(TABLE1_HEADER, [table1_cells(r) for r in t1])}
<h2>Verdict</h2>
<ul>{_verdict_html(verdict_md)}</ul>
<h2>Figures</h2>
{figures}
<h2>Runs</h2>
{_html_table(RUNS_HEADER, runs_rows(results))}
</body></html>
"""
