"""The report on a synthetic study folder: best learning rate, fits that recover known
exponents, excluded runs, Table 1 files, and the HTML page in a real headless browser."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from beyondbp import report
from beyondbp.study import load_spec, plan_study, prepare_study_dir
from beyondbp.train import PF_DAY

CHROMIUM = Path("/usr/bin/chromium")
# synthetic truth: loss = (C / C_c)^alpha along each run, the bigger model reaching further
TRUTH = {"bp": (-0.07, 4e3), "dfa_block": (-0.04, 5e10)}
SPEC = {
    "name": "synthetic", "methods": ["bp", "dfa_block"],
    "sizes": {f"s{k}": {"n_layer": 2, "d_model": 8 * k, "n_head": 2} for k in (1, 2, 3)},
    "tokens": 65536, "lrs": {"bp": [1e-3, 1e-2], "dfa_block": [1e-3]}, "seeds": [0],
    "base": {"model": {"context": 32}, "train": {"batch_tokens": 1024}},
}


def _write_run(run_dir: Path, method: str, scale: float, status: str, lr_penalty: float, per_token: float) -> None:
    alpha, c_c = TRUTH[method]
    run_dir.mkdir(parents=True)
    rows = []
    for i, tokens in enumerate(1024 * 2 ** k for k in range(7)):
        compute = tokens * per_token * scale
        loss = (compute / PF_DAY / c_c) ** alpha * (1 + lr_penalty)
        rows.append({"step": tokens // 1024, "tokens": tokens, "compute_pf_days": compute / PF_DAY,
                     "compute_flops_optimistic": compute * (0.5 if method == "dfa_block" else 1.0),
                     "compute_flops_exact": compute * 1.1, "val_loss": loss, "elapsed_s": tokens * 1e-4 * scale,
                     "alignment": {"block0": 0.1 * i, "block1": 1.0} if method == "dfa_block" else None})
    rows.insert(0, dict(rows[0], step=0, tokens=0, compute_pf_days=0.0, val_loss=5.6))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"status": status, "final_val_loss": rows[-1]["val_loss"] if status == "completed" else None,
               "elapsed_s": rows[-1]["elapsed_s"]}
    if status == "failed":
        summary["error"] = "RuntimeError: boom"
    (run_dir / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def study(tmp_path) -> Path:
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    plan = plan_study(load_spec(spec_path))
    out = prepare_study_dir(tmp_path / "study", plan.spec)
    for run in plan.runs:
        scale = {"s1": 1.0, "s2": 10.0, "s3": 100.0}[run.size]
        status = "completed"
        if run.name == "bp_s3_lr0.001_s0":
            status = "diverged"
        if run.name == "dfa_block_s2_lr0.001_s0":
            status = "failed"
        penalty = 0.2 if run.lr == 1e-3 and run.method == "bp" else 0.0  # lr 1e-2 is best for bp
        _write_run(out / "runs" / run.name, run.method, scale, status, penalty, 6e12)  # the paper's compute range
    return out


def test_best_lr_and_excluded_runs(study):
    _, results = report.collect(study)
    kept = {r.run.name for r in report.best_lr_runs(results)}
    assert kept == {"bp_s1_lr0.01_s0", "bp_s2_lr0.01_s0", "bp_s3_lr0.01_s0",
                    "dfa_block_s1_lr0.001_s0", "dfa_block_s3_lr0.001_s0"}


def test_fits_recover_the_synthetic_exponents(study):
    _, results = report.collect(study)
    fits = report.fit_accounting(report.frontier_points(report.best_lr_runs(results), "paper"), bootstrap=0)
    for method, (alpha, c_c) in TRUTH.items():
        assert fits.fits[method].alpha_C == pytest.approx(alpha, rel=1e-3)
        assert fits.fits[method].C_c == pytest.approx(c_c, rel=1e-2)
    assert fits.verdicts["dfa_block"]["scenario"] == "D"  # as in the paper: DFA worse at every compute studied


def test_report_files(study):
    out = report.write_report(study, bootstrap=20)
    for name in ("table1.md", "table1.csv", "table1.tex", "verdict.md", "results.json", "frontier.png",
                 "frontier.svg", "alignment.png", "report.html"):
        assert (out / name).stat().st_size > 0, name
    rows = (out / "table1.csv").read_text().splitlines()
    assert rows[0].startswith("method,alpha_C,alpha_C_lo,alpha_C_hi,C_c_pf_days")
    bp = rows[1].split(",")
    assert bp[0] == "bp" and float(bp[1]) == pytest.approx(-0.07, rel=1e-3)
    assert float(bp[2]) <= float(bp[1]) <= float(bp[3])
    assert float(bp[8]) == -0.071  # the paper's value beside ours
    verdict = (out / "verdict.md").read_text()
    assert "BP is better than dfa_block" in verdict and "wall-clock" in verdict
    assert "bp_s3_lr0.001_s0: diverged" in verdict and "dfa_block_s2_lr0.001_s0: failed (RuntimeError: boom)" in verdict
    results = json.loads((out / "results.json").read_text())
    assert set(results["accountings"]) == {"paper", "optimistic", "exact", "wall_clock"}
    # optimistic accounting halves DFA's compute: C_c halves, alpha unchanged
    opt = results["accountings"]["optimistic"]["fits"]["dfa_block"]
    assert opt["alpha_C"] == pytest.approx(-0.04, rel=1e-3) and opt["C_c"] == pytest.approx(2.5e10, rel=1e-2)
    assert r"\begin{tabular}" in (out / "table1.tex").read_text()


_CHECK_SCRIPT = """<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message || e.type)); }, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.map.call(document.images, function (i) {
    return {data: i.src.indexOf('data:image/png;base64,') === 0, complete: i.complete,
            w: i.naturalWidth, h: i.naturalHeight};
  });
  var cells = Array.prototype.map.call(document.querySelectorAll('table')[0].querySelectorAll('td'),
                                       function (td) { return td.textContent; });
  var out = document.createElement('pre');
  out.id = 'check';
  out.textContent = JSON.stringify({imgs: imgs, table1: cells, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)")
def test_html_report_renders_in_headless_chromium(study, tmp_path):
    out = report.write_report(study, bootstrap=0)
    page = (out / "report.html").read_text()
    assert "<script" not in page and "http" not in page.split("</head>")[0]  # self-contained, no remote assets
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + _CHECK_SCRIPT, 1))
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=60)
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
    match = re.search(r'<pre id="check">(.*?)</pre>', proc.stdout, re.S)
    assert match, proc.stderr[-2000:]
    check = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert check["errors"] == []
    assert len(check["imgs"]) == 2  # Figure 3 and the alignment figure
    for img in check["imgs"]:
        assert img["data"] and img["complete"] and img["w"] > 100 and img["h"] > 100
    assert check["table1"][0] == "bp" and check["table1"][1] == "-0.07"


def test_table1_tex_writes_a_flat_frontiers_infinite_c_c():
    from beyondbp.report import table1_tex
    row = {"method": "dfa_block", "alpha_C": -0.001, "alpha_C_ci": (-0.006, -0.001), "C_c": math.inf,
           "C_c_ci": (3.07e70, math.inf), "frontier_points": 9, "paper_alpha_C": -0.04, "paper_C_c": 5.1e10,
           "note": ""}
    tex = table1_tex([row])
    assert r"dfa\_block & $-0.001$ [$-0.006$, $-0.001$] & $\infty$ [$3.07\times10^{70}$, $\infty$]" in tex
    assert "nan" not in tex


def test_diagnostics_flag_runs_whose_positions_collapse_to_one_vector():
    from beyondbp.config import RunConfig
    from beyondbp.report import RunResult, diagnostics_markdown
    from beyondbp.study import PlannedRun

    def result(method, size, commons):
        run = PlannedRun(f"{method}_{size}_lr0.01_s0", method, size, 0.01, 0, RunConfig(), 1000, 1.0)
        return RunResult(run, "completed", {"final_val_loss": 3.0},
                         [{"step": i, "residual_common": c} for i, c in enumerate(commons)])

    lines = diagnostics_markdown([result("bp", "a", [0.4, 0.99, 0.65]), result("bp", "b", [0.5, 0.7]),
                                  result("dfa_block", "a", [0.4, 1.0]), result("dfa_block", "b", [0.3, 0.9995])])
    text = "\n".join(lines)
    assert "- bp: final residual_common 0.6500 to 0.7000 over 2 runs." in text
    assert ("- dfa_block: final residual_common 0.9995 to 1.0000 over 2 runs; 2 collapsed (>= 0.999: every "
            "position gets the same prediction): dfa_block_a_lr0.01_s0, dfa_block_b_lr0.01_s0.") in text
    assert diagnostics_markdown([result("bp", "a", [])]) == []  # runs from before the diagnostic
