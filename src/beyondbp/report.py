"""A study's report: frontier fits, Table 1, Figure 3, alignment figure, verdicts, HTML page.

From the study folder: for each (method, size) the learning rate with the lowest mean final
validation loss (over seeds) is kept; every evaluation point of those runs (step > 0) goes
into the method's frontier fit (`beyondbp.frontier`). Diverged and failed runs are left out
and listed. Verdicts of each alternative against BP are given under four compute accountings:
the paper's, the optimistic one, the exact FLOP count and measured wall-clock seconds.
Writes DIR/report/: table1.{md,csv,tex}, verdict.md, results.json, frontier.{png,svg},
alignment.png (when runs measured alignment) and report.html (self-contained).
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import ConfigError
from .frontier import PAPER_TABLE1, PowerLawFit, fit_frontier, verdict
from .study import FINISHED, PlannedRun, load_study, read_summary, run_state
from .train import PF_DAY, read_metrics

REFERENCE = "bp"
# name -> (metrics column, factor to the reported unit, unit, description)
ACCOUNTINGS = {
    "paper": ("compute_pf_days", 1.0, "PF-days", "the paper's count (BP 6N, DFA 4N, shallow 2N FLOPs per token)"),
    "optimistic": ("compute_flops_optimistic", 1.0 / PF_DAY, "PF-days",
                   "optimistic count (a free feedback projection, e.g. on an optical co-processor)"),
    "exact": ("compute_flops_exact", 1.0 / PF_DAY, "PF-days", "exact FLOP count, attention and feedback included"),
    "wall_clock": ("elapsed_s", 1.0, "s", "measured training wall-clock seconds on this study's hardware"),
}
SCENARIO_WORDS = {
    "A": "{alt} is better than BP at every compute studied and stays better as compute grows",
    "B": "{alt} is worse than BP at small compute but better at scale",
    "C": "{alt} is better than BP at small compute only; BP overtakes it as compute grows",
    "D": "BP is better than {alt} at every compute studied and stays better as compute grows",
}
COLORS = {"bp": "#1f77b4", "dfa": "#d62728", "dfa_block": "#ff7f0e", "shallow": "#2ca02c", "fa": "#9467bd"}


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

    @property
    def final_residual_common(self) -> float | None:
        """`residual_common` at the run's last evaluation (Transformer runs; see train.residual_stats)."""
        values = [m["residual_common"] for m in self.metrics if m.get("residual_common") is not None]
        return values[-1] if values else None


@dataclass
class AccountingFits:
    fits: dict[str, PowerLawFit] = field(default_factory=dict)
    unfitted: dict[str, str] = field(default_factory=dict)  # method -> why
    verdicts: dict[str, dict] = field(default_factory=dict)
    c_range: tuple[float, float] | None = None


# --- results -------------------------------------------------------------------------------

def collect(study_dir: str | Path) -> tuple[dict, list[RunResult]]:
    plan = load_study(study_dir)
    runs_dir = Path(study_dir) / "runs"
    results = [RunResult(r, run_state(runs_dir / r.name), read_summary(runs_dir / r.name),
                         read_metrics(runs_dir / r.name / "metrics.jsonl")) for r in plan.runs]
    return plan.spec, results


def best_lr_runs(results: list[RunResult]) -> list[RunResult]:
    """For each (method, size): the completed runs of the learning rate with the lowest mean final loss."""
    by_cell: dict[tuple[str, str], dict[float, list[RunResult]]] = {}
    for r in results:
        if r.state == "completed" and r.final_loss is not None:
            by_cell.setdefault((r.run.method, r.run.size), {}).setdefault(r.run.lr, []).append(r)
    kept = []
    for lrs in by_cell.values():
        best = min(lrs, key=lambda lr: (np.mean([r.final_loss for r in lrs[lr]]), lr))
        kept.extend(lrs[best])
    return kept


# Evaluations from the first tenth of a run's tokens are left out of the fits: there the loss
# still sits on the initial plateau (warm-up, unigram statistics), a transient that is not part
# of the power law. In the paper's runs it spans a negligible share of the compute; in small
# CPU studies it spans a decade and, left in, dominates the envelope at low compute.
MIN_RUN_FRACTION = 0.1


def frontier_points(runs: list[RunResult], accounting: str) -> list[dict]:
    """Rows (method, compute, loss, run) of every evaluation past the first tenth of its run."""
    column, factor = ACCOUNTINGS[accounting][:2]
    rows = []
    for r in runs:
        run_tokens = max((m.get("tokens", 0) for m in r.metrics), default=0)
        for m in r.metrics:
            value, loss = m.get(column), m.get("val_loss")
            if m.get("tokens", 0) < MIN_RUN_FRACTION * run_tokens:
                continue
            if m.get("step", 0) > 0 and value and value > 0 and loss is not None and math.isfinite(loss):
                rows.append({"method": r.run.method, "compute_pf_days": value * factor, "loss": loss,
                             "run": r.run.name})
    return rows


def fit_accounting(rows: list[dict], bootstrap: int = 200, seed: int = 0) -> AccountingFits:
    """Fit each method's frontier (methods with too few points are reported, not fatal)
    and judge each alternative against BP."""
    out = AccountingFits()
    methods = sorted({r["method"] for r in rows})
    if rows:
        computes = [r["compute_pf_days"] for r in rows]
        out.c_range = (min(computes), max(computes))
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        try:
            out.fits[method] = fit_frontier([r["compute_pf_days"] for r in mine], [r["loss"] for r in mine],
                                            [r["run"] for r in mine], bootstrap=bootstrap, seed=seed, name=method)
        except ConfigError as exc:
            out.unfitted[method] = str(exc)
    if REFERENCE in out.fits:
        ref_min = min(r["compute_pf_days"] for r in rows if r["method"] == REFERENCE)
        for method, fit in out.fits.items():
            if method != REFERENCE:
                alt_min = min(r["compute_pf_days"] for r in rows if r["method"] == method)
                out.verdicts[method] = verdict(fit, out.fits[REFERENCE], min(alt_min, ref_min))
    return out


# --- text outputs --------------------------------------------------------------------------

def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _interval(ci) -> str:
    return "" if not ci else f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def table1_rows(fits: AccountingFits, methods: list[str], track: str = "transformer") -> list[dict]:
    """Table 1's rows; the paper's columns only for the Transformer track (its Table 1 is about GPTs)."""
    rows = []
    for m in methods:
        fit, paper = fits.fits.get(m), PAPER_TABLE1.get(m) if track == "transformer" else None
        rows.append({
            "method": m,
            "alpha_C": fit.alpha_C if fit else None, "alpha_C_ci": fit.alpha_C_ci if fit else None,
            "C_c": fit.C_c if fit else None, "C_c_ci": fit.C_c_ci if fit else None,
            "frontier_points": fit.n_points if fit else 0,
            "paper_alpha_C": paper[0] if paper else None, "paper_C_c": paper[1] if paper else None,
            "note": fits.unfitted.get(m, ""),
        })
    return rows


def table1_markdown(rows: list[dict]) -> str:
    lines = ["| method | alpha_C | 95% interval | C_c (PF-days) | 95% interval | frontier points "
             "| paper alpha_C | paper C_c |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {_fmt(r['alpha_C'])} | {_interval(r['alpha_C_ci'])} | {_fmt(r['C_c'])} "
                     f"| {_interval(r['C_c_ci'])} | {r['frontier_points']} | {_fmt(r['paper_alpha_C'])} "
                     f"| {_fmt(r['paper_C_c'])} |")
    notes = [f"- {r['method']}: not fitted ({r['note']})" for r in rows if r["note"]]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def table1_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "alpha_C", "alpha_C_lo", "alpha_C_hi", "C_c_pf_days", "C_c_lo", "C_c_hi",
                     "frontier_points", "paper_alpha_C", "paper_C_c"])
    for r in rows:
        a_ci, c_ci = r["alpha_C_ci"] or (None, None), r["C_c_ci"] or (None, None)
        cells = [r["alpha_C"], *a_ci, r["C_c"], *c_ci]
        writer.writerow([r["method"], *("" if v is None else repr(float(v)) for v in cells), r["frontier_points"],
                         "" if r["paper_alpha_C"] is None else r["paper_alpha_C"],
                         "" if r["paper_C_c"] is None else r["paper_C_c"]])
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
    lines = [r"\begin{tabular}{lllll}", r"\toprule",
             r"Method & $\alpha_C$ & $C_c$ (PF-days) & paper $\alpha_C$ & paper $C_c$ \\", r"\midrule"]
    for r in rows:
        alpha = "--" if r["alpha_C"] is None else f"${r['alpha_C']:.3f}$"
        if r["alpha_C_ci"]:
            alpha += f" [${r['alpha_C_ci'][0]:.3f}$, ${r['alpha_C_ci'][1]:.3f}$]"
        c_c = _tex_number(r["C_c"])
        if r["C_c_ci"]:
            c_c += f" [{_tex_number(r['C_c_ci'][0])}, {_tex_number(r['C_c_ci'][1])}]"
        paper_alpha = "--" if r["paper_alpha_C"] is None else f"${r['paper_alpha_C']:.3f}$"
        name = r["method"].replace("_", r"\_")
        lines.append(f"{name} & {alpha} & {c_c} & {paper_alpha} & {_tex_number(r['paper_C_c'])} \\\\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def verdict_sentence(method: str, v: dict, unit: str, c_range: tuple[float, float] | None = None) -> str:
    text = SCENARIO_WORDS[v["scenario"]].format(alt=method)
    if v.get("crossover_pf_days") is not None:
        text += f"; the frontiers cross at {v['crossover_pf_days']:.3g} {unit}"
        if c_range is not None and v["crossover_pf_days"] > c_range[1]:
            text += (f", {v['crossover_pf_days'] / c_range[1]:.3g}x beyond the largest compute studied "
                     f"({c_range[1]:.3g} {unit}): an extrapolation of the fits")
    if v.get("confidence") is not None:
        text += f" (scenario {v['scenario']}, confidence {100 * v['confidence']:.0f}% over bootstrap samples)"
    else:
        text += f" (scenario {v['scenario']})"
    return text + "."


# At or above this `residual_common`, every position carries (nearly) the same vector into the
# final LayerNorm, so the model predicts one distribution everywhere: the unigram plateau.
COLLAPSED = 0.999


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


def verdict_markdown(spec: dict, all_fits: dict[str, AccountingFits], excluded: list[RunResult],
                     kept: list[RunResult] | None = None) -> str:
    lines = [f"# Verdict: {spec['name']}", "",
             "Each alternative's compute-efficient frontier L(C) = (C / C_c)^alpha_C is compared with "
             "backpropagation's (scenarios of the paper, section 2: A always better, B better at scale, "
             "C better at small compute only, D never better).", ""]
    for name, fits in all_fits.items():
        unit, description = ACCOUNTINGS[name][2], ACCOUNTINGS[name][3]
        lines += [f"## Compute as {description}", ""]
        if REFERENCE not in fits.fits:
            lines += [f"No verdict: BP has no fitted frontier ({fits.unfitted.get(REFERENCE, 'no completed runs')}).", ""]
            continue
        for method, v in fits.verdicts.items():
            lines.append(f"- {verdict_sentence(method, v, unit, fits.c_range)}")
        for method, why in fits.unfitted.items():
            lines.append(f"- {method}: no verdict ({why}).")
        lines.append("")
    lines += diagnostics_markdown(kept or [])
    if excluded:
        lines += ["## Runs left out of the fits", ""]
        lines += [f"- {r.run.name}: {r.state}" + (f" ({r.summary['error']})" if (r.summary or {}).get("error") else "")
                  for r in excluded]
        lines.append("")
    return "\n".join(lines)


# --- figures ----------------------------------------------------------------------------------

def _color(method: str, index: int) -> str:
    import matplotlib
    return COLORS.get(method) or matplotlib.colormaps["tab10"](index % 10)


def frontier_figure(results: list[RunResult], fits: AccountingFits, methods: list[str],
                    ylabel: str = "validation loss"):
    """The paper's Figure 3: every run's loss against compute (thin), fitted frontiers (bold),
    the compute range where each method's frontier is lowest shaded."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for i, method in enumerate(methods):
        for r in results:
            if r.run.method != method or r.state not in FINISHED:
                continue
            pts = [(m["compute_pf_days"], m["val_loss"]) for m in r.metrics
                   if m.get("step", 0) > 0 and m.get("val_loss") is not None and math.isfinite(m["val_loss"])]
            if pts:
                c, l = zip(*pts)
                ax.plot(c, l, color=_color(method, i), lw=0.7, alpha=0.35)
    if fits.c_range:
        lo, hi = fits.c_range
        grid = np.geomspace(lo, hi, 400)
        fitted = [m for m in methods if m in fits.fits]
        for i, method in enumerate(methods):
            if method in fits.fits:
                fit = fits.fits[method]
                ax.plot(grid, fit.predict(grid), color=_color(method, i), lw=2.5,
                        label=f"{method}: L = (C / {fit.C_c:.2g})^{fit.alpha_C:.3f}")
        if fitted:
            preds = np.array([fits.fits[m].predict(grid) for m in fitted])
            best = preds.argmin(axis=0)
            start = 0
            for k in range(1, len(grid) + 1):
                if k == len(grid) or best[k] != best[start]:
                    method = fitted[best[start]]
                    ax.axvspan(grid[start], grid[min(k, len(grid) - 1)], color=_color(method, methods.index(method)),
                               alpha=0.08, lw=0)
                    start = k
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compute (PF-days, the paper's accounting)")
    ax.set_ylabel(ylabel)
    ax.set_title("Compute-efficient frontiers (shaded: where each method's frontier is lowest)")
    if any(m in fits.fits for m in methods):
        ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    return fig


def alignment_figure(results: list[RunResult]):
    """Alignment per block over training: for each method that measured it, the largest
    model's best run (per block) and every kept run's mean over blocks."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    by_method: dict[str, list[RunResult]] = {}
    for r in results:
        if any(m.get("alignment") for m in r.metrics):
            by_method.setdefault(r.run.method, []).append(r)
    if not by_method:
        return None
    fig, axes = plt.subplots(len(by_method), 2, figsize=(10, 3.4 * len(by_method)), squeeze=False)
    for row, (method, runs) in enumerate(sorted(by_method.items())):
        largest = max(runs, key=lambda r: (r.run.n_params, -(r.final_loss or math.inf)))
        rows = [m for m in largest.metrics if m.get("alignment")]
        blocks = list(rows[0]["alignment"])
        cmap = matplotlib.colormaps["viridis"]
        ax = axes[row][0]
        for k, block in enumerate(blocks):
            ax.plot([m["tokens"] for m in rows], [m["alignment"].get(block, np.nan) for m in rows], marker="o", ms=3,
                    color=cmap(k / max(1, len(blocks) - 1)), label=block)
        ax.set_title(f"{method}: {largest.run.name}, per block", fontsize=9)
        ax.set_xlabel("tokens")
        ax.set_ylabel("cosine(update, BP gradient)")
        ax.legend(fontsize=6, ncol=2)
        ax = axes[row][1]
        for r in sorted(runs, key=lambda r: r.run.n_params):
            pts = [(m["tokens"], np.mean(list(m["alignment"].values()))) for m in r.metrics if m.get("alignment")]
            ax.plot(*zip(*pts), marker="o", ms=3, lw=1, label=r.run.name)
        ax.set_title(f"{method}: mean over blocks, every run", fontsize=9)
        ax.set_xlabel("tokens")
        ax.legend(fontsize=6)
        for a in axes[row]:
            a.set_xscale("log")  # evaluations are spaced geometrically in steps
            a.axhline(0, color="grey", lw=0.5)
            a.grid(True, alpha=0.2)
    fig.tight_layout()
    return fig


def _png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


# --- HTML -------------------------------------------------------------------------------------

def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def report_html(spec: dict, t1: list[dict], verdict_md: str, results: list[RunResult],
                images: dict[str, bytes]) -> str:
    t1_table = _html_table(
        ["method", "alpha_C", "95% interval", "C_c (PF-days)", "95% interval", "frontier points",
         "paper alpha_C", "paper C_c"],
        [[r["method"], _fmt(r["alpha_C"]), _interval(r["alpha_C_ci"]), _fmt(r["C_c"]), _interval(r["C_c_ci"]),
          r["frontier_points"], _fmt(r["paper_alpha_C"]), _fmt(r["paper_C_c"])] for r in t1])
    runs_table = _html_table(
        ["run", "status", "parameters (non-embedding)", "tokens", "final val loss", "residual common", "seconds"],
        [[r.run.name, r.state, f"{r.run.n_params:,}", f"{r.run.tokens:,}", _fmt(r.final_loss, 4),
          _fmt(r.final_residual_common, 4), _fmt((r.summary or {}).get("elapsed_s"))] for r in results])
    verdict_html = ""
    for line in verdict_md.splitlines()[2:]:
        if line.startswith("## "):
            verdict_html += f"<h3>{html.escape(line[3:])}</h3>"
        elif line.startswith("- "):
            verdict_html += f"<li>{html.escape(line[2:])}</li>"
        elif line.strip():
            verdict_html += f"<p>{html.escape(line)}</p>"
    figures = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, png in images.items())
    title = html.escape(f"beyondbp study: {spec['name']}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em; color: #222; }}
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
lower envelope of every evaluation of the best learning rate per size.</p>
<h2>Table 1</h2>
{t1_table}
<h2>Verdict</h2>
<ul>{verdict_html}</ul>
<h2>Figures</h2>
{figures}
<h2>Runs</h2>
{runs_table}
</body></html>
"""


# --- entry point ------------------------------------------------------------------------------

def _fit_json(fits: AccountingFits) -> dict:
    return {
        "fits": {m: {"alpha_C": f.alpha_C, "C_c": f.C_c, "alpha_C_ci": f.alpha_C_ci, "C_c_ci": f.C_c_ci,
                     "n_points": f.n_points} for m, f in fits.fits.items()},
        "unfitted": fits.unfitted, "verdicts": fits.verdicts,
    }


def write_report(study_dir: str | Path, bootstrap: int = 200, seed: int = 0) -> Path:
    """Fit, judge and write DIR/report/; return the report folder."""
    spec, results = collect(study_dir)
    methods = spec["methods"]
    kept = best_lr_runs(results)
    excluded = [r for r in results if r.state in ("diverged", "failed")]
    all_fits = {name: fit_accounting(frontier_points(kept, name), bootstrap, seed) for name in ACCOUNTINGS}
    out = Path(study_dir) / "report"
    out.mkdir(exist_ok=True)
    t1 = table1_rows(all_fits["paper"], methods, spec.get("track", "transformer"))
    (out / "table1.md").write_text(table1_markdown(t1))
    (out / "table1.csv").write_text(table1_csv(t1))
    (out / "table1.tex").write_text(table1_tex(t1))
    verdict_md = verdict_markdown(spec, all_fits, excluded, kept)
    (out / "verdict.md").write_text(verdict_md)
    (out / "results.json").write_text(json.dumps({
        "accountings": {name: _fit_json(f) for name, f in all_fits.items()},
        "best_runs": sorted(r.run.name for r in kept),
        "excluded": {r.run.name: r.state for r in excluded},
    }, indent=2, default=float) + "\n")

    import matplotlib.pyplot as plt
    images = {}
    fig = frontier_figure(results, all_fits["paper"], methods,
                          "test loss" if spec.get("track") == "mlp" else "validation loss")
    fig.savefig(out / "frontier.svg")
    images["Figure 3: loss against compute, fitted frontiers"] = _png_bytes(fig)
    (out / "frontier.png").write_bytes(images["Figure 3: loss against compute, fitted frontiers"])
    plt.close(fig)
    fig = alignment_figure(results)
    if fig is not None:
        images["Alignment per block over training"] = _png_bytes(fig)
        (out / "alignment.png").write_bytes(images["Alignment per block over training"])
        plt.close(fig)
    (out / "report.html").write_text(report_html(spec, t1, verdict_md, results, images))
    return out
