"""The verdict in words: the quotable answer, one compact table per accounting, notes, and
verdict.md.

Shared by verdict.md and report.html, which render the same lines and cells.
"""
from __future__ import annotations

import math

from .markdown import markdown_table
from .results import ACCOUNTINGS, COLLAPSED, REFERENCE, AccountingFits, RunResult

SCENARIO_WORDS = {
    "A": "better than BP at every compute studied and at scale",
    "B": "worse than BP at small compute, better at scale",
    "C": "better than BP at small compute only",
    "D": "BP better at every compute studied and at scale",
}
LEGEND = ("Letters (paper, section 2): A the alternative always better, B better at scale, C better at small "
          "compute only, D BP always better. A letter is given only where the 95% intervals of Δalpha (the "
          "alternative's exponent minus BP's) and of Δ ln L at the smallest compute studied both exclude 0, "
          "and a fit with one loss floor E shared by all methods does not contradict it; confidence is the "
          "bootstrap probability of that letter. The compute multiplier is how much compute the alternative "
          "needs for the same loss as BP, read from both fitted laws.")
TABLE_HEADER = ["method", "verdict", "confidence", "compute multiplier [95%]", "highest → lowest loss (trend)",
                "Δalpha [95%]", "Δ ln L at smallest compute [95%]", "shared floor"]


def fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.{digits}g}"


def times(v) -> str:
    """A multiplier: 0.85x, 7.5x, 230x, 1.2e+04x."""
    if v is None:
        return "-"
    if math.isinf(v):
        return "∞"
    if v < 1:
        return f"{v:.2g}x"
    if v < 10:
        return f"{v:.1f}x"
    return f"{v:.0f}x" if v < 1000 else f"{v:.1e}x"


def _signed(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:+.{digits}g}"


def interval(ci, render=fmt) -> str:
    """The interval as "[lo, hi]" (each end rendered by `render`); "" when there is none."""
    return "" if not ci else f"[{render(ci[0])}, {render(ci[1])}]"


def letter_text(v: dict) -> str:
    if v.get("scenario"):
        return v["scenario"]
    if v.get("letter_shares") is None:
        return "no letter"
    return f"undetermined ({' or '.join(v['possible_letters'])})"


def _middle_multiplier(v: dict) -> dict | None:
    entries = v.get("compute_multiplier") or []
    return entries[len(entries) // 2] if entries else None


def _extrapolation(v: dict) -> str:
    decades = {}
    for entry in v.get("compute_multiplier") or []:
        for method, d in entry["extrapolated_decades"].items():
            decades[method] = max(decades.get(method, 0.0), d)
    return "; ".join(f"{m}'s law extrapolated up to {d:.2g} decades outside its runs' compute"
                     for m, d in decades.items())


def multiplier_text(v: dict, loss_digits: int = 3) -> str:
    mid = _middle_multiplier(v)
    if mid is None:
        return "-"
    return f"{times(mid['value'])} {interval(mid['ci'], times)} at loss {mid['loss']:.{loss_digits}g}"


def trend_text(v: dict) -> str:
    entries = v.get("compute_multiplier") or []
    if len(entries) < 2:
        return "-"
    first, last = entries[0], entries[-1]
    text = f"{times(first['value'])} at {first['loss']:.3g} → {times(last['value'])} at {last['loss']:.3g}"
    trend = v.get("compute_multiplier_trend") or {}
    return text + (f" ({trend['direction']})" if trend.get("direction") else "")


def answer_line(method: str, v: dict, unit: str) -> str:
    """One quotable line: the letter (or why none) and the compute multiplier with its interval."""
    if v.get("letter_shares") is None:
        return f"{method}: no letter ({v.get('reason')})." + _gap_sentence(v, unit)
    if v.get("scenario"):
        head = (f"{method}: **{v['scenario']}** ({SCENARIO_WORDS[v['scenario']]}; confidence "
                f"{100 * v['confidence']:.0f}%).")
    else:
        head = f"{method}: **{letter_text(v)}**: {v['reason']}."
    mid = _middle_multiplier(v)
    if mid is None:
        return head
    text = (f"{head} To reach loss {mid['loss']:.3g} it needs {times(mid['value'])} "
            f"{interval(mid['ci'], times)} BP's compute")
    trend = (v.get("compute_multiplier_trend") or {}).get("direction")
    extra = [x for x in (trend, _extrapolation(v)) if x]
    return text + (f" ({'; '.join(extra)})" if extra else "") + "."


def _gap_sentence(v: dict, unit: str) -> str:
    gap = v.get("measured_gap")
    if not gap:
        return ""
    lo, hi = 100 * gap["min"], 100 * gap["max"]

    def side(x):
        return f"{abs(x):.1f}% {'above' if x > 0 else 'below'}"
    lo_c, hi_c = gap["compute_pf_days"]
    span = f"at {fmt(lo_c)} {unit}" if lo_c == hi_c else f"{fmt(lo_c)} to {fmt(hi_c)} {unit}"
    spread = side(lo) if abs(hi - lo) < 0.05 else f"{side(lo)} to {side(hi)}"
    return f" Where both were measured ({span}) its frontier points lie {spread} BP's frontier."


def table_cells(method: str, v: dict) -> list[str]:
    floor = v.get("shared_floor")
    confidence = "-" if v.get("confidence") is None else f"{100 * v['confidence']:.0f}%"
    return [method, letter_text(v), confidence, multiplier_text(v), trend_text(v),
            f"{_signed(v.get('delta_alpha'))} {interval(v.get('delta_alpha_ci'), _signed)}".strip(),
            f"{_signed(v.get('delta_log_loss_at_c_min'))} {interval(v.get('delta_log_loss_at_c_min_ci'), _signed)}"
            .strip(), letter_text(floor) if floor else "-"]


def notes(method: str, v: dict, unit: str) -> list[str]:
    """What the table cannot say: why undetermined, the crossover, the floor, the measured gap."""
    out = []
    if v.get("letter_shares") is None and v.get("reason"):
        out.append(f"{method}: no letter ({v['reason']}).")
    if v.get("letter_shares") is not None and not v.get("scenario"):
        shares = ", ".join(f"{k} {100 * s:.0f}%" for k, s in v["letter_shares"].items() if s >= 0.005)
        out.append(f"{method}: undetermined: {v['reason']} (bootstrap shares: {shares}).")
    cross = v.get("crossover")
    if cross:
        where = ("inside the compute range both measured" if cross["inside_measured_range"] else
                 f"{cross['times_largest_compute']:.3g}x the largest compute studied: an extrapolation")
        out.append(f"{method}: the fitted frontiers cross at {fmt(cross['value'])} {interval(cross['ci'])} {unit}, "
                   f"{where}.")
    floor = v.get("shared_floor")
    if floor:
        out.append(f"{method}: with one floor E = {fmt(floor['E'])} {interval(floor['E_ci'])} shared by "
                   f"{', '.join(floor['methods'])}: {letter_text(floor)} (Δalpha of the reducible losses "
                   f"{_signed(floor['delta_alpha'])} {interval(floor['delta_alpha_ci'], _signed)}).")
    extrapolated = _extrapolation(v)
    if extrapolated:
        out.append(f"{method}: the losses of both frontiers do not overlap, so the multiplier is read at "
                   f"{v['compute_multiplier_losses_from']}'s losses, {extrapolated}.")
    gap = _gap_sentence(v, unit)
    if gap:
        out.append(f"{method}:{gap}")
    return out


# --- verdict.md ------------------------------------------------------------------------------

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


def answer_lines(fits: AccountingFits) -> list[str]:
    """The quotable answer under one accounting: one line per alternative."""
    unit = "PF-days"
    if REFERENCE not in fits.fits:
        return [f"No verdict: BP has no fitted frontier ({fits.unfitted.get(REFERENCE, 'no completed runs')})."]
    lines = [answer_line(m, v, unit) for m, v in fits.verdicts.items()]
    return lines + [f"{m}: no verdict ({why})." for m, why in fits.unfitted.items() if m != REFERENCE]


def verdict_rows(fits: AccountingFits) -> list[list[str]]:
    return [table_cells(m, v) for m, v in fits.verdicts.items()]


def verdict_notes(fits: AccountingFits, unit: str) -> list[str]:
    out = [n for m, v in fits.verdicts.items() for n in notes(m, v, unit)]
    return out + [f"{m}: no verdict ({why})." for m, why in fits.unfitted.items()]


def verdict_markdown(spec: dict, all_fits: dict[str, AccountingFits], excluded: list[RunResult],
                     kept: list[RunResult] | None = None) -> str:
    lines = [f"# Verdict: {spec['name']}", "", f"## The answer, under {ACCOUNTINGS['paper'][3]}", ""]
    lines += [f"- {line}" for line in answer_lines(all_fits["paper"])] + ["", LEGEND, ""]
    for name, fits in all_fits.items():
        unit, description = ACCOUNTINGS[name][2], ACCOUNTINGS[name][3]
        lines += [f"## Compute as {description}", ""]
        if REFERENCE not in fits.fits:
            lines += [f"No verdict: BP has no fitted frontier ({fits.unfitted.get(REFERENCE, 'no completed runs')}).", ""]
            continue
        if fits.verdicts:
            lines += markdown_table(TABLE_HEADER, verdict_rows(fits)) + [""]
        lines += [f"- {n}" for n in verdict_notes(fits, unit)] + [""]
    lines += diagnostics_markdown(kept or [])
    if excluded:
        lines += ["## Runs left out of the fits", ""]
        lines += [f"- {r.run.name}: {r.state}" + (f" ({r.summary['error']})" if (r.summary or {}).get("error") else "")
                  for r in excluded]
        lines.append("")
    return "\n".join(lines)
