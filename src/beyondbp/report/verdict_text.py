"""The verdict in words: the quotable answer, one compact table per accounting, notes, and
verdict.md.

Shared by verdict.md and report.html, which render the same lines and cells.
"""
from __future__ import annotations

import math

from ..fit.verdict_types import FloorVerdict, MultiplierEntry, PerMethodFloors, Verdict
from ..study.spec_types import Spec
from .markdown import markdown_table
from .results import ACCOUNTINGS, COLLAPSED, REFERENCE, AccountingFits, RunResult

SCENARIO_WORDS = {
    "A": "better than BP from the smallest compute studied through the horizon",
    "B": "worse than BP at the smallest compute studied, better by the horizon",
    "C": "better than BP at the smallest compute studied, worse by the horizon",
    "D": "BP better from the smallest compute studied through the horizon",
}
LEGEND = ("Letters (paper, section 2): A the alternative always better, B better at scale, C better at small "
          "compute only, D BP always better. Each letter is claimed through a horizon (by default 10x the largest "
          "compute measured), where the 95% intervals of Δ ln L (the alternative's log loss minus BP's) at the "
          "smallest compute studied and at the horizon both exclude 0, and the pair's fit with one shared loss floor "
          "E does not contradict it. Beyond the horizon only the trend is given (Δalpha, the alternative's exponent "
          "minus BP's, and the letter pure power laws give at infinity): an extrapolation. The bootstrap share is "
          "the share of bootstrap samples that give the letter under the fitted model, not the probability that "
          "it is right. The compute multiplier is how much compute the alternative needs for the same loss as BP, "
          "read from both fitted laws; read far outside the measured compute, its interval includes the floor "
          "fit's or is withheld.")
TABLE_HEADER = ["method", "letter (through the horizon)", "bootstrap share", "compute multiplier [95%]",
                "highest → lowest loss (trend)", "beyond the horizon (extrapolation)", "pair floor", "backtest"]
OTHER_HEADER = ["method", "accounting", "letter (through the horizon)", "compute multiplier [95%]"]


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


def ratio_interval(entry: MultiplierEntry) -> str:
    """A multiplier's interval: "[lo, hi]", one-sided "(≥ lo)" where it has no upper end, or why none."""
    ci = entry.ci
    if not ci:
        if not entry.ci_reason:
            return ""
        return "(no 95% interval: " + ("learning rate at a sweep edge)" if "learning rate" in entry.ci_reason
                                       else "extrapolated)")
    lo, hi = ci
    if hi is None or math.isinf(hi):
        return f"(≥ {times(lo)})"
    if not lo:
        return f"(≤ {times(hi)})"
    return f"[{times(lo)}, {times(hi)}]"


def letter_text(v: Verdict | FloorVerdict | PerMethodFloors) -> str:
    if v.scenario:
        return v.scenario
    if v.letter_shares is None:
        return "no letter"
    return f"undetermined ({' or '.join(v.possible_letters)})"


def _middle_multiplier(v: Verdict) -> MultiplierEntry | None:
    entries = v.compute_multiplier or []
    return entries[len(entries) // 2] if entries else None


def _extrapolation(v: Verdict) -> str:
    decades = {}
    for entry in v.compute_multiplier or []:
        for method, d in entry.extrapolated_decades.items():
            decades[method] = max(decades.get(method, 0.0), d)
    return "; ".join(f"{m}'s law extrapolated up to {d:.2g} decades outside its runs' compute"
                     for m, d in decades.items())


def multiplier_text(v: Verdict, loss_digits: int = 3) -> str:
    mid = _middle_multiplier(v)
    if mid is None:
        return "-"
    spread = " (interval incl. the floor fit's)" if mid.ci_includes_model_spread else ""
    return f"{times(mid.value)} {ratio_interval(mid)} at loss {mid.loss:.{loss_digits}g}{spread}".replace("  ", " ")


def trend_text(v: Verdict) -> str:
    entries = v.compute_multiplier or []
    if len(entries) < 2:
        return "-"
    first, last = entries[0], entries[-1]
    text = f"{times(first.value)} at {first.loss:.3g} → {times(last.value)} at {last.loss:.3g}"
    direction = v.compute_multiplier_trend.direction if v.compute_multiplier_trend else None
    return text + (f" ({direction})" if direction else "")


def beyond_text(v: Verdict) -> str:
    """The trend past the horizon: Δalpha (or ΔE) with its interval and the letter at infinity."""
    trend = v.trend
    if not trend:
        return "-"
    if trend.delta_E is not None:
        head = f"ΔE {_signed(trend.delta_E)} {interval(trend.delta_E_ci, _signed)}"
    else:
        head = f"Δalpha {_signed(trend.delta_alpha)} {interval(trend.delta_alpha_ci, _signed)}"
    letter = trend.letter_at_infinity or f"{' or '.join(trend.possible_letters_at_infinity)}"
    return f"{head}; at infinity {letter}"


def floor_text(v: Verdict) -> str:
    floor = v.floor
    if not floor:
        return "-"
    if floor.degenerate:
        return f"not identified (E = {fmt(floor.E)} at its bound)"
    return f"{letter_text(floor)} (E = {fmt(floor.E)} {e_interval(floor)})".replace("  ", " ")


def e_interval(floor: FloorVerdict) -> str:
    """E's interval, one-sided where an end is a bound (0 or the pair's smallest loss)."""
    ci, ends = floor.E_ci, floor.E_ci_open_ends or []
    if not ci:
        return ""
    if len(ends) == 2:
        return "(interval spans both bounds)"
    if "lower" in ends:
        return f"(≤ {fmt(ci[1])})"
    if "upper" in ends:
        return f"(≥ {fmt(ci[0])})"
    return interval(ci)


def backtest_text(fit_backtest: dict | None) -> str:
    if not fit_backtest:
        return "-"
    if fit_backtest.get("inside") is None:
        return f"not run ({fit_backtest.get('reason')})"
    word = "passed" if fit_backtest["inside"] else "FAILED"
    return (f"{word}: {fit_backtest['held_out']} predicted {fmt(fit_backtest['predicted'], 4)} "
            f"{interval(fit_backtest['ci'], lambda x: fmt(x, 4))}, measured {fmt(fit_backtest['measured'], 4)}")


def answer_line(method: str, v: Verdict, unit: str) -> str:
    """One quotable line: the letter through its horizon (or why none), the compute multiplier with
    its interval, and the trend beyond the horizon, labelled as extrapolation."""
    if v.letter_shares is None:
        return f"{method}: no letter ({v.reason})." + _gap_sentence(v, unit)
    through = f"through {fmt(v.horizon)} {unit} ({v.horizon_factor:.3g}x the largest compute measured)"
    if v.scenario:
        head = (f"{method}: **{v.scenario}** {through}: {SCENARIO_WORDS[v.scenario]} (bootstrap share "
                f"{100 * v.bootstrap_share:.1f}%).")
    else:
        head = f"{method}: **{letter_text(v)}** {through}: {v.reason}."
    mid = _middle_multiplier(v)
    if mid is not None:
        text = f" To reach loss {mid.loss:.3g} it needs {times(mid.value)} {ratio_interval(mid)} BP's compute"
        trend = v.compute_multiplier_trend.direction if v.compute_multiplier_trend else None
        spread = "its interval includes the floor fit's" if mid.ci_includes_model_spread else ""
        extra = [x for x in (trend, _extrapolation(v), spread) if x]
        head += text.replace("  ", " ") + (f" ({'; '.join(extra)})" if extra else "") + "."
    return head + f" Beyond the horizon (extrapolation): {beyond_text(v)}."


def _gap_sentence(v: Verdict, unit: str) -> str:
    gap = v.measured_gap if v.measured else None
    if not gap:
        return ""
    lo, hi = 100 * gap.min, 100 * gap.max

    def side(x):
        return f"{abs(x):.1f}% {'above' if x > 0 else 'below'}"
    lo_c, hi_c = gap.compute
    span = f"at {fmt(lo_c)} {unit}" if lo_c == hi_c else f"{fmt(lo_c)} to {fmt(hi_c)} {unit}"
    spread = side(lo) if abs(hi - lo) < 0.05 else f"{side(lo)} to {side(hi)}"
    return f" Where both were measured ({span}) its frontier points lie {spread} BP's frontier."


def share_text(v: Verdict) -> str:
    return "-" if v.bootstrap_share is None else f"{100 * v.bootstrap_share:.1f}%"


def table_cells(method: str, v: Verdict, backtests: dict | None = None) -> list[str]:
    tests = backtests or {}
    checks = "; ".join(f"{m} {backtest_text(tests.get(m))}" for m in (method, REFERENCE) if tests.get(m))
    return [method, letter_text(v), share_text(v), multiplier_text(v), trend_text(v), beyond_text(v),
            floor_text(v), checks or "-"]


def notes(method: str, v: Verdict, unit: str) -> list[str]:
    """What the table cannot say: why undetermined, the crossover, the floors, extrapolations, the gap."""
    out = []
    if v.letter_shares is None and v.reason:
        out.append(f"{method}: no letter ({v.reason}).")
    if v.letter_shares is not None and not v.scenario:
        shares = ", ".join(f"{k} {100 * s:.0f}%" for k, s in v.letter_shares.items() if s >= 0.005)
        out.append(f"{method}: undetermined: {v.reason} (bootstrap shares: {shares}).")
    if v.horizon_reason:
        out.append(f"{method}: {v.horizon_reason}.")
    cross = v.crossover
    if cross:
        where = ("inside the compute range both measured" if cross.inside_measured_range else
                 f"{cross.times_largest_compute:.3g}x the largest compute studied: an extrapolation")
        out.append(f"{method}: the fitted frontiers cross at {fmt(cross.value)} {interval(cross.ci)} {unit}, "
                   f"{where}.")
    out += _floor_notes(method, v)
    read = v.c_min_extrapolated_decades or {}
    if read:
        out.append(f"{method}: Δ ln L at the smallest compute reads " + ", ".join(
            f"{m}'s law {d:.2g} decades outside its runs" for m, d in read.items()) + ".")
    withheld = [e for e in v.compute_multiplier or [] if e.ci_reason]
    if withheld:
        losses = ", ".join(f"{e.loss:.3g}" for e in withheld)
        out.append(f"{method}: no 95% interval for the multiplier at loss {losses}: {withheld[0].ci_reason}.")
    extrapolated = _extrapolation(v)
    if extrapolated:
        out.append(f"{method}: the losses of both frontiers do not overlap, so the multiplier is read at "
                   f"{v.compute_multiplier_losses_from}'s losses, {extrapolated}.")
    gap = _gap_sentence(v, unit)
    if gap:
        out.append(f"{method}:{gap}")
    return out


def _floor_notes(method: str, v: Verdict) -> list[str]:
    out = []
    floor = v.floor
    if floor:
        if floor.degenerate:
            out.append(f"{method}: the floor E shared with BP is not identified (fitted at {fmt(floor.E)}, at a "
                       f"bound of [0, {fmt(floor.E_upper_bound)}]), so it decides nothing.")
        else:
            out.append(f"{method}: with one floor E = {fmt(floor.E)} {e_interval(floor)} shared with BP: "
                       f"{letter_text(floor)} (Δalpha of the reducible losses {_signed(floor.delta_alpha)} "
                       f"{interval(floor.delta_alpha_ci, _signed)}; {100 * floor.E_samples_at_bound:.0f}% of "
                       "bootstrap floors at a bound).")
    own = v.per_method_floors
    if own:
        out.append(f"{method}: sensitivity, a floor per method: " + (
            letter_text(own) if own.possible_letters else f"not fitted ({own.reason})") + ".")
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


def answer_lines(fits: AccountingFits, unit: str = "PF-days") -> list[str]:
    """The quotable answer under one accounting: one line per alternative."""
    if REFERENCE not in fits.fits:
        return [f"No verdict: BP has no fitted frontier ({fits.unfitted.get(REFERENCE, 'no completed runs')})."]
    lines = [answer_line(m, v, unit) for m, v in fits.verdicts.items()]
    return lines + [f"{m}: no verdict ({why})." for m, why in fits.unfitted.items() if m != REFERENCE]


def backtests_of(fits: AccountingFits) -> dict:
    return {m: f.backtest for m, f in fits.fits.items() if f.backtest}


def verdict_rows(fits: AccountingFits) -> list[list[str]]:
    tests = backtests_of(fits)
    return [table_cells(m, v, tests) for m, v in fits.verdicts.items()]


def other_rows(all_fits: dict[str, AccountingFits]) -> list[list[str]]:
    """One row per alternative and accounting other than the paper's: the letter and the multiplier."""
    rows = []
    for name, fits in all_fits.items():
        if name == "paper":
            continue
        if REFERENCE not in fits.fits:
            rows.append(["-", name, "no verdict: BP has no fitted frontier", "-"])
            continue
        rows += [[m, name, letter_text(v) + (f" ({v.reason})" if v.letter_shares is None and v.reason
                                            else ""), multiplier_text(v)] for m, v in fits.verdicts.items()]
    return rows


def verdict_notes(fits: AccountingFits, unit: str) -> list[str]:
    out = [n for m, v in fits.verdicts.items() for n in notes(m, v, unit)]
    out += [f"{m}: no verdict ({why})." for m, why in fits.unfitted.items()]
    failed = [f"{m}'s law failed its backtest ({backtest_text(t)})" for m, t in backtests_of(fits).items()
              if t.get("inside") is False]
    dropped = [f"{m}: {', '.join(f.dropped_sizes)}" for m, f in fits.fits.items() if f.dropped_sizes]
    if dropped:
        out.append("Sizes with no point on their method's frontier (a smaller size was better at lower compute): "
                   + "; ".join(dropped) + ".")
    return out + [f"{line}." for line in failed]


def verdict_markdown(spec: Spec, all_fits: dict[str, AccountingFits], excluded: list[RunResult],
                     kept: list[RunResult] | None = None, extra: list[str] | None = None) -> str:
    """verdict.md: the figure and the answer first, one compact table (the paper's count), the other
    accountings in one small table, the notes once; `extra`: further sections (Markdown lines)."""
    paper = all_fits["paper"]
    lines = [f"# Verdict: {spec.name}", "", "![The compute-efficient frontiers](frontier.png)", "",
             f"## The answer, under {ACCOUNTINGS['paper'].description}", ""]
    lines += [f"- {line}" for line in answer_lines(paper)] + ["", LEGEND, ""]
    if REFERENCE in paper.fits and paper.verdicts:
        lines += markdown_table(TABLE_HEADER, verdict_rows(paper)) + [""]
    lines += [f"- {n}" for n in verdict_notes(paper, ACCOUNTINGS["paper"].unit)] + [""]
    others = other_rows(all_fits)
    if others:
        lines += ["## The other accountings", "", "; ".join(f"{name}: {ACCOUNTINGS[name].description}" for name in all_fits
                                                            if name != "paper") + ".", ""]
        lines += markdown_table(OTHER_HEADER, others) + [""]
    lines += extra or []
    lines += diagnostics_markdown(kept or [])
    if excluded:
        lines += ["## Runs left out of the fits", ""]
        lines += [f"- {r.run.name}: {r.state}" + (f" ({r.summary['error']})" if (r.summary or {}).get("error") else "")
                  for r in excluded]
        lines.append("")
    return "\n".join(lines)
