"""`study run --until-decided --budget B`: a study that chooses its own next runs.

It runs the spec's grid, then repeats: fit, list what keeps each alternative's letter open (no
letter, a bootstrap share under `fit.candidates.SHARE`, the per-method floors disagreeing), weigh
the candidate runs (`proposals`), run the chosen ones, refit. It stops when every letter is
decided, when the budget is spent, when no affordable candidate changes a letter, or when
`max_rounds` rounds have chosen runs (`--max-rounds`, default `MAX_ROUNDS`: a letter that many
rounds of the best run per unit of compute did not close is one the point predictions misjudge,
and the user, not the planner, should decide whether to spend more); then it says, in one line,
which run would decide each open letter and what it would cost. A candidate counts as changing a
letter only when its expected gain exceeds the scoring refit's own noise (`noise_gain`): three
standard errors of a bootstrap share of `SHARE` at the refit's samples.

Every round is one line of DIR/decisions.jsonl (`additions`): what was open, the candidates with
their scores and costs, what was chosen and why, the compute spent so far. The chosen runs are
written there before any starts, so a kill while they train resumes them; a kill before the line
is written replans from the same finished runs to the same choice (the fits are seeded). While a
letter is open, rate brackets come first (a best rate at an edge of its sweep, for BP or an
alternative): a point read off an untuned rate would mislead the rest; in a study of several
budgets per size, so do budgets that bracket an optimal tokens per parameter the runs do not
(`budget_steps`). Otherwise the candidate
that removes the most openness per unit of compute is chosen; where none removes more than the
refit's noise but a path of up to `LOOK_AHEAD` sizes would decide a letter within the budget,
that path's first step. The budget counts the paper's
PF-days over every run of the study, the grid included; or, with a time (`30min`, `2h`, `90s`),
the study's wall time on this machine: every command that planned it, from its start to each
round's line, summed across resumes (a killed command's time after its last line is lost), the
grid and the planning included; or, with `-train` (`30min-train`), the runs' summed training
seconds (device time, what the `wall_clock` accounting counts). A candidate's cost in wall time
is its training seconds (exact with one worker, an upper bound with several). With a wall-time
budget a resumed study may stop a round earlier or later than an uninterrupted one: its clock
runs differently. While a letter is open, and after, the best rates are bracketed: a study stops
"decided" only when no best rate sits at an edge of its sweep. A
branched study (budgets branched from one trunk) is refused before its grid runs: a run the
planner adds would need a trunk of its own.
"""
from __future__ import annotations

import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import ConfigError
from ..fit.candidates import SCORE_BOOTSTRAP, SHARE, is_decided, openness, pair_verdict, score, top_letter
from .additions import added, added_budgets, read_decisions, write_decisions
from .plan import StudyPlan, extend_plan
from .proposals import Candidate, Observation, Proposer

REFERENCE = "bp"
UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0}
LOOK_AHEAD = 4  # size steps the stop message looks through for the run that would decide a letter
MAX_ROUNDS = 20  # rounds that choose runs before the planner stops and says what is still open


def noise_gain(samples: int) -> float:
    """The smallest expected gain in openness that counts: 3 standard errors of a share of SHARE
    estimated from `samples` bootstrap samples (below it the refit cannot tell a gain from noise)."""
    return 3.0 * math.sqrt(SHARE * (1.0 - SHARE) / max(1, samples))


@dataclass(frozen=True)
class Budget:
    value: float
    unit: str  # pf_days, wall (the study's wall time, seconds) or seconds (summed training seconds)

    def show(self, amount: float) -> str:
        if self.unit == "pf_days":
            return f"{amount:.3g} PF-days"
        text = f"{amount:.0f} s" if abs(amount) < 90 else f"{amount / 60:.1f} min"
        return text + (" of training" if self.unit == "seconds" else "")


def parse_budget(text: str) -> Budget:
    """'1e-6' (PF-days, the paper's count), '30min' / '2h' / '90s' (the study's wall time on this
    machine) or '30min-train' (the runs' summed training seconds)."""
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(s|sec|min|h)?(-train)?\s*", str(text))
    try:
        value = float(match.group(1)) if match and (match.group(2) or not match.group(3)) else math.nan
    except ValueError:
        value = math.nan
    if not value > 0 or value == math.inf:
        raise ConfigError(f"--budget: expected PF-days (1e-6), wall time (30min, 2h, 90s) or training time "
                          f"(30min-train), got {text!r}")
    unit = match.group(2)
    if not unit:
        return Budget(value, "pf_days")
    return Budget(value * UNITS[unit], "seconds" if match.group(3) else "wall")


@dataclass
class Planner:
    base: StudyPlan  # the spec's grid
    study_dir: Path
    execute: Callable[[StudyPlan], object]  # trains (or simulates) every unfinished run of a plan
    observe: Callable[[Path], Observation]
    budget: Budget
    bootstrap: int  # the deciding fits' samples (the report's)
    score_bootstrap: int = SCORE_BOOTSTRAP
    max_rounds: int = MAX_ROUNDS
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)
    clock: Callable[[], float] = time.monotonic  # the wall-time budget's clock
    _wall: tuple[float, float] = (0.0, 0.0)  # (wall seconds logged before this command, its start)
    _spent: dict = field(default_factory=dict)  # the round's spent {pf_days, seconds, wall}

    def alternatives(self) -> list[str]:
        if REFERENCE not in self.base.spec.methods:
            raise ConfigError(f"--until-decided: the study must train {REFERENCE} (every letter is against it)")
        if self.base.chains:
            raise ConfigError("--until-decided: the planner adds runs to studies whose budgets train on their own; "
                              "this spec branches them from one trunk (set budgets: independent)")
        return [m for m in self.base.spec.methods if m != REFERENCE]

    def run(self) -> dict:
        """Rounds until a stop; returns the last line of the decision log."""
        alternatives = self.alternatives()
        logged = read_decisions(self.study_dir)
        self._wall = (float(logged[-1]["spent"].get("wall", 0.0)) if logged else 0.0, self.clock())
        while True:
            rounds = read_decisions(self.study_dir)
            plan = extend_plan(self.base, self.study_dir, rounds)
            self.execute(plan)
            line = self.plan_round(plan, rounds, alternatives)
            if "stop" in line:
                if not rounds or _without_round(rounds[-1]) != _without_round(line):
                    write_decisions(self.study_dir, [*rounds, line])
                self.say(line["why"])
                return line
            write_decisions(self.study_dir, [*rounds, line])
            self.say(f"round {line['round']}: {line['why']}")

    def plan_round(self, plan: StudyPlan, rounds: list[dict], alternatives: list[str]) -> dict:
        """One round's line: the choice, or the stop and why."""
        obs = self.observe(self.study_dir)
        verdicts = {m: pair_verdict(obs.rows, m, REFERENCE, self.bootstrap, 0, obs.noise) for m in alternatives}
        proposer = Proposer(plan, obs, added(rounds)[0], added_budgets(rounds))
        spent = {"pf_days": obs.spent("pf_days"), "seconds": obs.spent("seconds"),
                 "wall": self._wall[0] + self.clock() - self._wall[1]}
        self._spent = spent
        line = {"round": len([r for r in rounds if "stop" not in r]) + 1, "spent": spent,
                "budget_unit": self.budget.unit, "letters": {m: _letter(v) for m, v in verdicts.items()}}
        open_ = [m for m, v in verdicts.items() if not is_decided(v)]
        edges = proposer.rates([REFERENCE, *alternatives])
        for m in open_:
            edges += [c for c in proposer.budget_brackets([m, REFERENCE]) if all(c.label != o.label for o in edges)]
        if not open_ and not edges:
            return {**line, "stop": "decided", "why": "every letter is decided: " + _letters(line["letters"])}
        if line["round"] > self.max_rounds:
            return {**line, "stop": "rounds", "why": self._stop_line(open_, verdicts, proposer, obs, None, edges)}
        candidates = self._weigh(edges, proposer, open_, verdicts, obs)
        line["candidates"] = [c.record(self.budget.unit) for c in candidates]
        left = self.budget.value - spent[self.budget.unit]
        chosen, why = self._choose(candidates, left)
        if not chosen and left > 0:
            chosen, why = self._first_step(open_, proposer, obs, left)
        if not chosen:
            least = noise_gain(self.score_bootstrap)
            over = any((c.edge or c.gain >= least) and c.cost[self.budget.unit] > left for c in candidates)
            return {**line, "stop": "budget" if left <= 0 or over else "no-candidate",
                    "why": self._stop_line(open_, verdicts, proposer, obs, left, edges)}
        runs = [r for c in chosen for r in c.runs]
        sizes = {k: v for c in chosen for k, v in c.new_sizes.items()}
        budgets = {k: v for c in chosen for k, v in c.new_budgets.items()}
        return {**line, "chosen": [c.label for c in chosen], "why": why, "runs": runs, "new_sizes": sizes,
                **({"new_budgets": budgets} if budgets else {})}

    def _weigh(self, edges, proposer: Proposer, open_, verdicts, obs) -> list[Candidate]:
        """Every candidate with its expected effect on the letter it serves."""
        out = list(edges)
        for m in open_:
            out += [c for c in proposer.sizes([m, REFERENCE]) + proposer.seeds([m, REFERENCE])
                    if all(c.label != o.label for o in out)]
        for c in out:
            served = [m for m in verdicts if any(r["method"] in (m, REFERENCE) for r in c.runs)]
            gains = []
            for m in served:
                after = pair_verdict(c.rows, m, REFERENCE, self.score_bootstrap, 0, c.noise)
                gains.append(score(verdicts[m], after, c.cost[self.budget.unit]))
                c.expected[m] = _letter(after)
            c.gain = max((g for g, _ in gains), default=0.0)
            c.score = max((s for _, s in gains), default=0.0)
        return out

    def _choose(self, candidates: list[Candidate], left: float) -> tuple[list[Candidate], str]:
        affordable = [c for c in candidates if c.cost[self.budget.unit] <= left]
        edges, total = [], 0.0
        for c in (c for c in affordable if c.edge):  # in order, while their sum fits the budget
            if total + c.cost[self.budget.unit] <= left:
                edges.append(c)
                total += c.cost[self.budget.unit]
        if edges:
            what = " and ".join(dict.fromkeys("the optimal budgets" if c.kind == "budget" else "the best rates"
                                              for c in edges))
            return edges, (f"bracket {what} first, a letter read off an untuned point does not count: "
                           + "; ".join(c.label for c in edges))
        least = noise_gain(self.score_bootstrap)
        useful = sorted((c for c in affordable if c.gain >= least), key=lambda c: (-c.score, c.label))
        if useful:
            c = useful[0]
            return [c], (f"{c.label}: expected {_letters(c.expected)}, the most openness removed per unit of "
                         f"compute ({c.gain:.2f} for {self.budget.show(c.cost[self.budget.unit])})")
        return [], ""

    def _first_step(self, open_, proposer: Proposer, obs: Observation, left: float) -> tuple[list[Candidate], str]:
        """Where no one candidate removes openness beyond the refit's noise but a path of sizes
        (`_would_decide`) would decide a letter within the budget: that path's first step."""
        for m in open_:
            found = self._would_decide(m, proposer, obs)
            if found and found[3] and found[2] <= left:
                first, text = found[:2]
                return [first], (f"{first.label}: the first step of the runs that would decide {m} ({text}); "
                                 f"no one candidate removes openness beyond the refit's noise")
        return [], ""

    def _stop_line(self, open_, verdicts, proposer: Proposer, obs: Observation, left: float | None,
                   edges: list[Candidate]) -> str:
        """One line: why the planner stops (left None: the round cap), the letters still open, and
        the run that would decide them; with every letter decided, the best rates still at an edge."""
        spent = self._spent[self.budget.unit]
        head = (f"the round cap is reached (--max-rounds {self.max_rounds}; "
                f"{self.budget.show(spent)} of {self.budget.show(self.budget.value)} spent)" if left is None else
                f"budget spent ({self.budget.show(spent)} of {self.budget.show(self.budget.value)})" if left <= 0
                else f"no candidate run within the budget ({self.budget.show(left)} left) "
                     f"{'changes a letter' if open_ else 'brackets the best rates'}")
        if not open_:
            cost = sum(c.cost[self.budget.unit] for c in edges)
            return (f"stopped: {head}: every letter is "
                    f"decided ({_letters({m: _letter(v) for m, v in verdicts.items()})}), but best rates sit at an "
                    f"edge of their sweeps: {'; '.join(c.label for c in edges)} would bracket them, cost "
                    f"{self.budget.show(cost)}")
        parts = []
        for m in open_:
            would = self._would_decide(m, proposer, obs)
            parts.append(f"{_letters({m: _letter(verdicts[m])})}; " + (would[1] if would else
                                                                     "no size up the ladder can be planned"))
        return f"stopped: {head}: " + "; ".join(parts)

    def _would_decide(self, alt: str, proposer: Proposer, obs: Observation
                      ) -> tuple[Candidate, str, float, bool] | None:
        """The first candidate (rates, seeds, then sizes up to LOOK_AHEAD steps) whose expected refit
        decides `alt`'s letter: (its first step, 'X would decide it (expected L), cost C', C, True);
        where none does, (the first size step, what the LOOK_AHEAD sizes up would leave, their
        cost, False); None where no size up can be planned."""
        ahead = Proposer(proposer.plan, obs, {})
        ahead.spec, ahead.budgets = proposer.spec, dict(proposer.budgets)
        ahead.lnd_cache = proposer.lnd_cache  # the same observation, the same fits
        for c in ahead.rates([alt, REFERENCE]) + ahead.seeds([alt, REFERENCE]):
            after = pair_verdict(c.rows, alt, REFERENCE, self.score_bootstrap, 0, c.noise)
            if is_decided(after):
                cost = c.cost[self.budget.unit]
                return c, (f"{c.label} would decide it (expected {after['scenario']}), "
                           f"cost {self.budget.show(cost)}"), cost, True
        cost, labels, first, after = 0.0, [], None, None
        for _ in range(LOOK_AHEAD):
            steps = [c for c in ahead.sizes([alt, REFERENCE]) if "up" in c.label]
            if not steps:
                break
            c = steps[0]
            first = first or c
            cost += c.cost[self.budget.unit]
            labels.append(c.label if not labels else c.runs[0]["size"])
            after = pair_verdict(c.rows, alt, REFERENCE, self.score_bootstrap, 0, c.noise)
            if is_decided(after):
                return first, (f"{', then '.join(labels)} would decide it (expected {after['scenario']}), "
                               f"cost {self.budget.show(cost)}"), cost, True
            ahead = _advanced(ahead, c)
        if first is None:
            return None
        left_at = _letters({alt: _letter(after)}).split(" ", 1)[1]
        return first, (f"no run decides it: {len(labels)} size{'s' if len(labels) > 1 else ''} up ("
                       f"{', then '.join(labels)}), each on the current laws, would leave it {left_at}, "
                       f"cost {self.budget.show(cost)}"), cost, False


def _advanced(proposer: Proposer, c: Candidate) -> Proposer:
    """A proposer that sees `c`'s expected rows as measured (to look one more size ahead)."""
    obs = proposer.obs
    out = Proposer(proposer.plan, Observation(c.rows, obs.trials + [
        {**r, "loss": next(x["loss"] for x in c.rows if x["size"] == r["size"] and x["method"] == r["method"]
                           and x.get("budget", r["budget"]) == r["budget"]),
         "select_loss": None} for r in c.runs], obs.noise, obs.runs), {})
    out.spec, out.budgets = proposer.spec, dict(proposer.budgets)
    n_of = {r.size: r.n_params for r in proposer.plan.runs}
    out.ordered = [*proposer.ordered, *[s for s in c.new_sizes if s not in n_of]]
    return out


def _letter(verdict: dict) -> dict:
    letter, share = top_letter(verdict)
    return {"scenario": verdict.get("scenario"), "possible": verdict.get("possible_letters"),
            "top": letter, "share": round(share, 4), "decided": is_decided(verdict),
            "openness": round(openness(verdict), 4), "open_because": open_because(verdict)}


def open_because(verdict: dict) -> str | None:
    """What keeps a letter open, in a few words (None when it is decided)."""
    if is_decided(verdict):
        return None
    if verdict.get("scenario") is None:
        possible = verdict.get("possible_letters")
        return (f"its intervals admit {' or '.join(possible)}" if possible
                else f"no letter: {verdict.get('reason') or 'the pair cannot be fitted'}")
    share = verdict.get("bootstrap_share") or 0.0
    if share < SHARE:
        return f"bootstrap share {share:.2f} < {SHARE}"
    return f"a floor per method gives {(verdict.get('per_method_floors') or {}).get('scenario')}"


def _letters(letters: dict) -> str:
    return ", ".join(f"{m} {v['scenario'] or 'undetermined (' + ' or '.join(v['possible'] or []) + ')'}"
                     + (f" ({v['top']} in {v['share']:.0%} of the bootstrap)" if v["top"] else "")
                     for m, v in letters.items())


def _without_round(line: dict) -> dict:
    """A stop line without what changes each time it is made again (its round, the time spent)."""
    return {k: v for k, v in line.items() if k not in ("round", "spent", "why")}

