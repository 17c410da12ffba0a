"""The report's allocation section on synthetic study folders (run folders written directly, no
training): a study with several budgets per size gets L(N, D) fits that recover the law, the
allocation, L*(C) verdicts and the isoFLOP figure; a study with one budget per size gets none."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest


from beyondbp.report.verdict_text import fmt
from beyondbp.report.write import write_report
from beyondbp.study.folder import load_study
from beyondbp.runs.folder import PF_DAY
from helpers import planned_study, strict_loads

# (E, A, B, a, b): dfa_block has a higher floor and is flatter in N and D, so worse at every compute
TRUTH = {"bp": (1.5, 60.0, 105.0, 0.5, 0.4), "dfa_block": (1.8, 60.0, 105.0, 0.45, 0.35)}
K = {"bp": 6.0, "dfa_block": 4.0}  # the paper's count: FLOPs per parameter and token
BUDGETS = [10, 20, 40, 80, 160, 320]
SPEC = {
    "name": "allocation-synthetic", "methods": ["bp", "dfa_block"],
    "sizes": {f"d{d}": {"n_layer": 2, "d_model": d, "n_head": 2} for d in (8, 12, 16, 20, 24, 32)},
    "tokens_per_param": BUDGETS, "lrs": {"bp": [1e-3], "dfa_block": [1e-3]}, "seeds": [0],
    "base": {"model": {"context": 32}, "train": {"batch_tokens": 256}},
}
BASE_KEYS = {"frontier_points", "accountings", "best_runs", "excluded"}


def law(params, n, d):
    e, big_a, big_b, a, b = params
    return e + big_a / n ** a + big_b / d ** b


def write_study(tmp_path: Path, spec: dict, noise: float = 0.003) -> Path:
    """Run folders whose final validation loss is the method's law at (N, D) times log-normal noise."""
    plan, out = planned_study(tmp_path, spec)
    rng = np.random.default_rng(0)
    for run in plan.runs:
        n, total = run.n_params, run.tokens
        rows = [{"step": 0, "tokens": 0, "compute_pf_days": 0.0, "val_loss": 6.0, "elapsed_s": 0.0}]
        for k in (1, 2):
            tokens = total * k // 2
            flops = K[run.method] * n * tokens
            loss = law(TRUTH[run.method], n, tokens) * math.exp(noise * rng.standard_normal())
            rows.append({"step": k, "tokens": tokens, "compute_pf_days": flops / PF_DAY, "val_loss": loss,
                         "compute_flops_optimistic": flops / 2, "compute_flops_exact": flops * 1.1,
                         "elapsed_s": tokens * n * 1e-9})
        folder = out / "runs" / run.name
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "summary.json").write_text(json.dumps({"status": "completed", "final_val_loss": rows[-1]["val_loss"],
                                                         "elapsed_s": rows[-1]["elapsed_s"]}))
    return out


def optimal_tokens_per_param(params, compute, k):
    """Hand computation (Hoffmann et al. 2022, D.2): N_opt = G (C/k)^(b/(a+b)), D_opt = (C/k) / N_opt."""
    _, big_a, big_b, a, b = params
    g = (a * big_a / (b * big_b)) ** (1 / (a + b))
    n_opt = g * (compute / k) ** (b / (a + b))
    return compute / k / n_opt ** 2


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return write_report(write_study(tmp_path_factory.mktemp("alloc"), SPEC), bootstrap=100)


def test_the_fits_recover_each_methods_law_with_intervals(report):
    section = strict_loads((report / "results.json").read_text())["allocation"]
    assert section["bootstrap"] == 100 and section["unfitted"] == {}
    for method, truth in TRUTH.items():
        fit = section["fits"][method]["lnd_fit"]
        assert fit["n_runs"] == 36
        assert fit["E"] == pytest.approx(truth[0], rel=0.03) and fit["E_ci"][0] <= truth[0] <= fit["E_ci"][1]
        assert fit["a"] == pytest.approx(truth[3], abs=0.05) and fit["b"] == pytest.approx(truth[4], abs=0.05)
        assert fit["residual_rms"] < 0.006 and len(fit["log_residuals"]) == 36  # 0.3% noise


def test_allocation_and_optimal_loss_follow_from_the_fit(report):
    section = strict_loads((report / "results.json").read_text())["allocation"]
    for method in TRUTH:
        fit, alloc = section["fits"][method]["lnd_fit"], section["fits"][method]["allocation"]
        params = [fit[p] for p in ("E", "A", "B", "a", "b")]
        # given at the smallest and largest compute k N D of the method's runs
        assert alloc["flops_per_param_token"] == pytest.approx(K[method])
        n_d = [r.n_params * r.tokens for r in load_study(report.parent).runs if r.method == method]
        assert alloc["compute"] == pytest.approx([K[method] * min(n_d), K[method] * max(n_d)], rel=1e-9)
        for i in (0, -1):
            assert alloc["tokens_per_param"][i] == pytest.approx(
                optimal_tokens_per_param(params, alloc["compute"][i], K[method]), rel=1e-6)
            lo, hi = alloc["tokens_per_param_ci"][i]
            assert lo <= alloc["tokens_per_param"][i] <= hi
        assert alloc["n_exponent"] == pytest.approx(fit["b"] / (fit["a"] + fit["b"]))
        brackets = section["fits"][method]["bracketing"]  # the same numbers, against the runs' ratios
        ratios = [r.tokens / r.n_params for r in load_study(report.parent).runs if r.method == method]
        assert brackets["run_range"] == pytest.approx([min(ratios), max(ratios)], rel=1e-6)
        assert [a["tokens_per_param"] for a in brackets["at"]] == pytest.approx(alloc["tokens_per_param"])
        assert brackets["bracketed"] == all(min(ratios) <= lo and hi <= max(ratios)
                                            for lo, hi in alloc["tokens_per_param_ci"]) and \
            all(min(ratios) <= t <= max(ratios) for t in alloc["tokens_per_param"])
        line = next(x for x in (report / "allocation.md").read_text().splitlines() if x.startswith(f"- {method}: L("))
        assert line.startswith(f"- {method}: L(N, D) law {'bracketed' if brackets['bracketed'] else 'not bracketed'}: "
                               "optimal tokens per parameter")
        minima = [m for m in section["fits"][method]["isoflop"]["minima"] if m["bracketed"]]
        assert minima and "isoFLOP minima bracketed by the sizes at" in line
        assert f"{fmt(minima[0]['compute'] / (K[method] * minima[0]['n_opt'] ** 2))} tokens" in line or \
            f"{fmt(minima[0]['compute'] / (K[method] * minima[0]['n_opt'] ** 2))}, " in line
        law_paper = section["accountings"]["paper"]["optimal_loss"][method]
        assert law_paper["gamma"] == pytest.approx(fit["a"] * fit["b"] / (fit["a"] + fit["b"]))
        assert law_paper["E"] == pytest.approx(fit["E"])
    verdict = section["accountings"]["paper"]["verdicts"]["dfa_block"]
    assert verdict["scenario"] == "D"  # a higher floor and a higher L*(C) wherever measured
    assert all(entry["value"] > 1 for entry in verdict["compute_multiplier"])


def test_isoflop_cross_check_brackets_minima_near_the_fitted_optimum(report):
    section = strict_loads((report / "results.json").read_text())["allocation"]
    for method in TRUTH:
        fit = section["fits"][method]["lnd_fit"]
        iso = section["fits"][method]["isoflop"]
        bracketed = [m for m in iso["minima"] if m["bracketed"]]
        assert len(bracketed) >= 2, method
        for m in bracketed:  # the parabola's vertex near the fitted law's N_opt at that compute
            g = (fit["a"] * fit["A"] / (fit["b"] * fit["B"])) ** (1 / (fit["a"] + fit["b"]))
            n_opt = g * (m["compute"] / K[method]) ** (fit["b"] / (fit["a"] + fit["b"]))
            assert abs(math.log(m["n_opt"] / n_opt)) < math.log(1.6), (method, m["compute"])


def test_markdown_html_and_figure(report):
    text = (report / "allocation.md").read_text()
    assert text.startswith("## Allocation: L(N, D)")
    for heading in ("### Fits", "### Compute-optimal allocation", "### L*(C) and its verdict, compute as the paper's",
                    "### Warnings", "### Residuals: bp", "### Residuals: dfa_block"):
        assert heading in text, heading
    section = strict_loads((report / "results.json").read_text())["allocation"]
    bp = section["fits"]["bp"]["lnd_fit"]
    assert f"| bp | 36 | {bp['E']:.3g} [{bp['E_ci'][0]:.3g}, {bp['E_ci'][1]:.3g}] |" in text
    assert "| dfa_block | " in text and "| D | " in text  # the envelope's letter beside L*'s
    page = (report / "report.html").read_text()
    assert "<h2>Allocation: L(N, D)</h2>" in page and 'alt="isoFLOP curves' in page
    assert (report / "isoflop.png").stat().st_size > 10_000 and (report / "isoflop.svg").exists()


def test_a_study_with_one_budget_per_size_gets_no_allocation_section(tmp_path):
    spec = {**SPEC, "tokens_per_param": 20}
    out = write_report(write_study(tmp_path, spec), bootstrap=50)
    keys = set(strict_loads((out / "results.json").read_text()))
    assert BASE_KEYS <= keys and "allocation" not in keys
    assert not (out / "allocation.md").exists() and not (out / "isoflop.png").exists()
    page = (out / "report.html").read_text()
    assert "Allocation" not in page and "isoFLOP" not in page
    assert page.index('<table id="table1">') < page.index("<h2>Tuning and seed noise</h2>") < page.index(
        "<h2>Figures</h2>")  # Table 1, the tuning section, then the figures


def test_a_method_with_too_few_runs_is_named_not_fatal(tmp_path):
    spec = {**SPEC, "sizes": {k: v for k, v in list(SPEC["sizes"].items())[:2]}, "tokens_per_param": [20, 40, 80]}
    out = write_report(write_study(tmp_path, spec), bootstrap=0)
    section = strict_loads((out / "results.json").read_text())["allocation"]
    assert section["fits"] == {}
    assert "at least 3 sizes" in section["unfitted"]["bp"]
    assert "- bp: no L(N, D) fit (" in (out / "allocation.md").read_text()
