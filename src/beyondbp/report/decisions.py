"""What the adaptive planner reads from a study folder (`observe`), and the report's section "How
this study chose its runs": the decision log (DIR/decisions.jsonl, `beyondbp.study.adaptive`) as a
table, and a figure of each letter's bootstrap share against the compute spent.
"""
from __future__ import annotations

import html
from pathlib import Path

from ..fit.tuning import pooled_seed_noise, seed_sd
from ..study.additions import Observation, read_decisions
from .figures import _color, _pyplot
from .results import best_lr_runs, collect, frontier_points, trials

TITLE = "How this study chose its runs"
HEADER = ("round", "letters (share of the most common): what keeps them open", "candidates (expected gain, cost)",
          "chosen", "why", "spent (PF-days)", "spent (training s)", "wall (s)")
SHOWN_CANDIDATES = 6  # per round, by score; the rest are counted


def observe(study_dir: str | Path) -> Observation:
    """The frontier rows (paper's count), trials, seed noise and every run's compute so far."""
    spec, results = collect(study_dir)
    kept = best_lr_runs(results)
    found = trials(results)
    runs = [{"name": r.run.name, "method": r.run.method, "size": r.run.size, "budget": r.run.budget, "lr": r.run.lr,
             "seed": r.run.seed, "flops": r.run.cost, "state": r.state,
             "n_params": r.run.n_params, "tokens": (r.summary or {}).get("tokens") or r.run.tokens,
             "pf_days": (r.summary or {}).get("compute_pf_days"), "seconds": (r.summary or {}).get("elapsed_s")}
            for r in results]
    return Observation(frontier_points(kept, "paper", spec.frontier_points), found,
                       pooled_seed_noise(seed_sd(found)), runs)


def _letters_cell(letters: dict) -> str:
    return "; ".join(f"{m} {v['scenario'] or 'open (' + '/'.join(v['possible'] or []) + ')'}"
                     + (f" {v['top']} {v['share']:.2f}" if v.get("top") else "")
                     + (f": {v['open_because']}" if v.get("open_because") else "") for m, v in letters.items())


def _candidates_cell(r: dict) -> str:
    found = sorted(r.get("candidates") or [], key=lambda c: -(c.get("score") or 0.0))
    unit = {"pf_days": " PF-days", "wall": " s", "seconds": " s of training"}.get(r.get("budget_unit"), "")
    shown = [f"{c['label']} ({c.get('gain', 0.0):+.2f}, {c.get('cost', 0.0):.3g}{unit})"
             for c in found[:SHOWN_CANDIDATES]]
    more = len(found) - SHOWN_CANDIDATES
    return "; ".join(shown) + (f"; {more} more" if more > 0 else "")


def decision_rows(rounds: list[dict]) -> list[list[str]]:
    rows = []
    for r in rounds:
        chosen = "stop: " + r["stop"] if "stop" in r else ", ".join(r.get("chosen") or [])
        wall = r["spent"].get("wall")
        rows.append([str(r.get("round", "")), _letters_cell(r.get("letters") or {}), _candidates_cell(r), chosen,
                     r.get("why", ""), f"{r['spent']['pf_days']:.3g}", f"{r['spent']['seconds']:.0f}",
                     "-" if wall is None else f"{wall:.0f}"])
    return rows


def decisions_markdown(rounds: list[dict]) -> str:
    lines = [f"## {TITLE}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in decision_rows(rounds)]
    return "\n".join(lines) + "\n"


def decisions_html(rounds: list[dict]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in decision_rows(rounds))
    return f"<h2>{TITLE}</h2><table><tr>{head}</tr>{body}</table>"


def shares_figure(rounds: list[dict]):
    """Each alternative's most common letter's bootstrap share against the PF-days spent, per round."""
    if not rounds:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    methods = list(dict.fromkeys(m for r in rounds for m in r.get("letters") or {}))
    for i, method in enumerate(methods):
        points = [(r["spent"]["pf_days"], r["letters"][method]) for r in rounds if method in (r.get("letters") or {})]
        ax.plot([p for p, _ in points], [v["share"] for _, v in points], "o-", color=_color(method, i), label=method)
        for p, v in points:
            ax.annotate(v["scenario"] or "?", (p, v["share"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(0.9, color="#888", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("compute spent (PF-days, paper's count)")
    ax.set_ylabel("bootstrap share of the most common letter")
    ax.set_title("letters (the label: decided letter, ? where undetermined) as the study grew")
    ax.legend()
    fig.tight_layout()
    return fig


def decisions_section(study_dir: str | Path) -> tuple[list[dict], str, str, object]:
    """(rounds, Markdown, HTML, figure or None); no rounds where the study was not planned."""
    rounds = read_decisions(study_dir)
    if not rounds:
        return [], "", "", None
    return rounds, decisions_markdown(rounds), decisions_html(rounds), shares_figure(rounds)
