"""Write a study's report, DIR/report/: table1.{md,csv,tex}, verdict.md (with the tuning section,
`report.tuning`), runs.md,
best_by_size.md, results.json, frontier.{png,svg}, alignment.png (when runs measured
alignment) and report.html. Diverged and failed runs are left out of the fits and listed.
A study with several budgets per size also gets the allocation section (`report.lnd`):
allocation.md, isoflop.{png,svg}, its part of report.html and results.json's "allocation".
"""
from __future__ import annotations

import io
from pathlib import Path

from ..atomic_write import make_folder, refuse_links, write_files_atomically
from ..fit.defaults import DEFAULT_BOOTSTRAP
from ..fit.multiplier import withhold_for_tuning
from ..fit.numerics import quiet_numerics
from ..fit.strict_json import dumps
from ..runs.folder import RunState
from ..study.tracks import get_track
from .lnd import allocation_json, allocation_section, has_several_budgets
from .lnd_text import allocation_blocks, blocks_html, blocks_markdown
from .decisions import decisions_section
from .figures import alignment_figure, frontier_figure, png_bytes
from .lnd_figure import isoflop_figure
from .html import report_html
from .results import (ACCOUNTINGS, REFERENCE, accounting_json, best_lr_runs, collect, fit_accounting, frontier_kind,
                      frontier_points, frontier_sentence)
from .tuning import tuning_markdown, tuning_section
from .tables import best_by_size_markdown, runs_markdown, table1_csv, table1_markdown, table1_rows, table1_tex
from .verdict_text import verdict_markdown


@quiet_numerics()  # NumPy's and Matplotlib's RuntimeWarnings: the fits' quality checks say what held
def write_report(study_dir: str | Path, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Path:
    """Fit, judge and write DIR/report/; return the report folder. Every file is rendered first and
    then written all or none (`write_files_atomically`): a full disk leaves the old report whole, and
    a report folder or file that is a link is refused."""
    spec, results = collect(study_dir)
    track = get_track(spec.track)
    methods = spec.methods
    kept = best_lr_runs(results)
    excluded = [r for r in results if r.state in (RunState.DIVERGED, RunState.FAILED)]
    mode = spec.frontier_points
    tuning = tuning_section(results, mode, bootstrap, seed)
    noise = {m: (v["sd"], v["dof"]) for m, v in tuning["seed_noise"].items()}
    all_fits = {name: fit_accounting(frontier_points(kept, name, mode), bootstrap, seed, noise) for name in ACCOUNTINGS}
    for fits in all_fits.values():  # an under-tuned point is off its law: no multiplier interval
        withhold_for_tuning(fits.verdicts, tuning["lr_edges"], REFERENCE)
    out = Path(study_dir) / "report"
    refuse_links(out, inside=study_dir)
    t1 = table1_rows(all_fits["paper"], methods, track.paper_columns)
    kind = frontier_kind(spec)
    extra = [frontier_sentence(kind), ""] if kind["note"] else []
    extra += tuning_markdown(tuning).splitlines() + [""]
    files = {"table1.md": table1_markdown(t1), "table1.csv": table1_csv(t1), "table1.tex": table1_tex(t1),
             "verdict.md": verdict_markdown(spec, all_fits, excluded, kept, extra), "runs.md": runs_markdown(results),
             "best_by_size.md": best_by_size_markdown(kept, methods,
                                                      list(dict.fromkeys([*spec.sizes, *(r.run.size for r in results)])))}
    results_json = {
        "frontier_points": mode,
        "frontier_kind": kind,
        "accountings": {name: accounting_json(f) for name, f in all_fits.items()},
        "best_runs": sorted(r.run.name for r in kept),
        "excluded": {r.run.name: r.state for r in excluded},
        **tuning,
    }
    images = _write_figures(files, results, all_fits["paper"], methods, track.loss_label)
    allocation_html = ""
    if has_several_budgets(results):
        section = allocation_section(kept, methods, bootstrap, seed)
        results_json["allocation"] = allocation_json(section)
        blocks = allocation_blocks(section, all_fits)
        files["allocation.md"] = blocks_markdown(blocks)
        allocation_html = blocks_html(blocks)
        images.update(_write_isoflop_figure(files, section))
    rounds, decisions_md, decisions_html, decisions_fig = decisions_section(study_dir)  # `--until-decided`
    if rounds:
        files["decisions.md"] = decisions_md
        files["verdict.md"] += "\n" + decisions_md
        allocation_html += decisions_html
        images.update(_save(decisions_fig, files, "decisions", "Bootstrap shares of each letter against compute spent"))
    files["results.json"] = dumps(results_json) + "\n"
    files["report.html"] = report_html(spec, t1, all_fits, results, images, allocation_html, tuning)
    make_folder(out, inside=study_dir)
    write_files_atomically(out, {name: _encoded(content) for name, content in files.items()}, inside=study_dir)
    return out


def _encoded(content: str | bytes) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


def _save(fig, files: dict, stem: str, caption: str, svg: bool = True) -> dict[str, bytes]:
    """STEM.png (and STEM.svg) into `files`; {caption: PNG} for the page, {} when there is no figure."""
    if fig is None:
        return {}
    if svg:
        buf = io.BytesIO()
        fig.savefig(buf, format="svg")
        files[f"{stem}.svg"] = buf.getvalue()
    png = png_bytes(fig)
    files[f"{stem}.png"] = png
    return {caption: png}


def _write_isoflop_figure(files: dict, section) -> dict[str, bytes]:
    return _save(isoflop_figure(section), files, "isoflop",
                 "isoFLOP curves: loss against N at fixed computes, runs and the L(N, D) fit")


def _write_figures(files: dict, results, paper_fits, methods: list[str], loss_label: str) -> dict[str, bytes]:
    """frontier.{svg,png} and (when runs measured it) alignment.png; {caption: PNG} for the page."""
    return {**_save(frontier_figure(results, paper_fits, methods, loss_label), files, "frontier",
                    "Figure 3: loss against compute, fitted frontiers"),
            **_save(alignment_figure(results), files, "alignment", "Alignment per block over training", svg=False)}
