"""The report says what study was run (methods with their rates, sizes with their shapes), not only
the spec's description, and shows each method's declared compute per token beside the measured
exact count, and the scalars a method logged."""
from __future__ import annotations

import html
import json
import math

import numpy as np
import pytest

from beyondbp.report.write import write_report
from helpers import planned_study
from test_report import SPEC, _write_run

QUICK_TEXT = "BP, the paper's block-wise DFA and the shallow baseline; block-wise DFA at two learning rates"


@pytest.mark.slow
def test_the_report_describes_the_runs_and_their_declared_and_measured_compute(tmp_path):
    spec = {**SPEC, "description": QUICK_TEXT, "sizes": {k: v for k, v in SPEC["sizes"].items() if k != "s8"}}
    plan, out = planned_study(tmp_path, spec)
    rng = np.random.default_rng(0)
    for run in plan.runs:
        run_dir = out / "runs" / run.name
        _write_run(run_dir, run, "completed", 0.0, math.exp(0.002 * rng.standard_normal()))
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["flops_per_token"] = {"paper": 6.0 * run.n_params, "optimistic": 6.0 * run.n_params,
                                      "exact": 7.5 * run.n_params, "measured_exact": 7.25 * run.n_params}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        if run.method == "dfa_block":
            rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            rows[-1]["method"] = {"feedback_alignment": 0.875}
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = html.unescape((write_report(out, bootstrap=50) / "report.html").read_text())
    study = page.split("<h2>The study</h2>")[1].split("<h2>")[0]
    assert "Methods run, with their learning rates: bp (0.001, 0.01); dfa_block (0.001)." in study
    s1 = next(r for r in plan.runs if r.size == "s1")
    assert f"Sizes: s1 (2 blocks, d_model 8, N = {s1.n_params:,});" in study
    assert f"{len(plan.runs)} runs, {len(plan.runs)} completed." in study
    assert f"The spec's description: {QUICK_TEXT}" in study
    compute = page.split('<table id="compute">')[1].split("</table>")[0]
    n = s1.n_params
    assert (f"<tr><td>bp</td><td>s1</td><td>{6 * n:,}</td><td>{6 * n:,}</td><td>{7.5 * n:,.0f}</td>"
            f"<td>{7.25 * n:,.0f}</td></tr>") in compute
    metrics = page.split('<table id="method-metrics">')[1].split("</table>")[0]
    assert "feedback_alignment 0.875" in metrics and "bp_" not in metrics
