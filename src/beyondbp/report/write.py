"""Write a study's report, DIR/report/: table1.{md,csv,tex}, verdict.md (with the tuning section,
`report.tuning`), runs.md,
best_by_size.md, results.json, frontier.{png,svg}, alignment.png (when runs measured
alignment) and report.html. Diverged and failed runs are left out of the fits and listed.
A study with several budgets per size also gets the allocation section (`report.allocation`):
allocation.md, isoflop.{png,svg}, its part of report.html and results.json's "allocation".
"""
from __future__ import annotations

from pathlib import Path

from ..fit.defaults import DEFAULT_BOOTSTRAP
from ..fit.numerics import quiet_numerics
from ..fit.strict_json import dumps
from ..study.tracks import get_track
from .allocation import allocation_json, allocation_section, has_several_budgets
from .allocation_text import allocation_blocks, blocks_html, blocks_markdown
from .figures import alignment_figure, frontier_figure, png_bytes
from .lnd_figure import isoflop_figure
from .html import report_html
from .results import (ACCOUNTINGS, accounting_json, best_lr_runs, collect, fit_accounting, frontier_kind,
                      frontier_points)
from .tuning import tuning_markdown, tuning_section
from .tables import best_by_size_markdown, runs_markdown, table1_csv, table1_markdown, table1_rows, table1_tex
from .verdict_text import verdict_markdown


@quiet_numerics()  # NumPy's and Matplotlib's RuntimeWarnings: the fits' quality checks say what held
def write_report(study_dir: str | Path, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Path:
    """Fit, judge and write DIR/report/; return the report folder."""
    spec, results = collect(study_dir)
    track = get_track(spec.get("track"))
    methods = spec["methods"]
    kept = best_lr_runs(results)
    excluded = [r for r in results if r.state in ("diverged", "failed")]
    mode = spec.get("frontier_points", "final")
    tuning = tuning_section(results, mode, bootstrap, seed)
    noise = {m: (v["sd"], v["dof"]) for m, v in tuning["seed_noise"].items()}
    all_fits = {name: fit_accounting(frontier_points(kept, name, mode), bootstrap, seed, noise) for name in ACCOUNTINGS}
    out = Path(study_dir) / "report"
    out.mkdir(exist_ok=True)
    t1 = table1_rows(all_fits["paper"], methods, track.paper_columns)
    (out / "table1.md").write_text(table1_markdown(t1))
    (out / "table1.csv").write_text(table1_csv(t1))
    (out / "table1.tex").write_text(table1_tex(t1))
    kind = frontier_kind(spec)
    extra = [f"The frontier's points: {kind['kind']}: {kind['note']}.", ""] if kind["note"] else []
    extra += tuning_markdown(tuning).splitlines() + [""]
    (out / "verdict.md").write_text(verdict_markdown(spec, all_fits, excluded, kept, extra))
    (out / "runs.md").write_text(runs_markdown(results))
    (out / "best_by_size.md").write_text(best_by_size_markdown(kept, methods, list(spec["sizes"])))
    results_json = {
        "frontier_points": mode,
        "frontier_kind": kind,
        "accountings": {name: accounting_json(f) for name, f in all_fits.items()},
        "best_runs": sorted(r.run.name for r in kept),
        "excluded": {r.run.name: r.state for r in excluded},
        **tuning,
    }
    images = _write_figures(out, results, all_fits["paper"], methods, track.loss_label)
    allocation_html = ""
    if has_several_budgets(results):
        section = allocation_section(kept, methods, bootstrap, seed)
        results_json["allocation"] = allocation_json(section)
        blocks = allocation_blocks(section, all_fits)
        (out / "allocation.md").write_text(blocks_markdown(blocks))
        allocation_html = blocks_html(blocks)
        images.update(_write_isoflop_figure(out, section))
    (out / "results.json").write_text(dumps(results_json) + "\n")
    (out / "report.html").write_text(report_html(spec, t1, all_fits, results, images, allocation_html, tuning))
    return out


def _save(fig, out: Path, stem: str, caption: str, svg: bool = True) -> dict[str, bytes]:
    """STEM.png (and STEM.svg) in `out`; {caption: PNG} for the page, {} when there is no figure."""
    if fig is None:
        return {}
    if svg:
        fig.savefig(out / f"{stem}.svg")
    png = png_bytes(fig)
    (out / f"{stem}.png").write_bytes(png)
    return {caption: png}


def _write_isoflop_figure(out: Path, section) -> dict[str, bytes]:
    return _save(isoflop_figure(section), out, "isoflop",
                 "isoFLOP curves: loss against N at fixed computes, runs and the L(N, D) fit")


def _write_figures(out: Path, results, paper_fits, methods: list[str], loss_label: str) -> dict[str, bytes]:
    """frontier.{svg,png} and (when runs measured it) alignment.png; {caption: PNG} for the page."""
    return {**_save(frontier_figure(results, paper_fits, methods, loss_label), out, "frontier",
                    "Figure 3: loss against compute, fitted frontiers"),
            **_save(alignment_figure(results), out, "alignment", "Alignment per block over training", svg=False)}
