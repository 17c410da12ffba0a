"""The runs the adaptive planner weighs for one open letter (`beyondbp.study.adaptive`), each with
its cost and its expected effect on the study's frontier rows (scored by `beyondbp.fit.candidates`).

- `rate`: a learning rate one step (the spec's ratio between neighbouring rates) beyond the best
  rate of a (method, size) whose best lies at an edge of its sweep;
- `size`: one step above the largest size (or below the smallest) on the spec's size ladder,
  for the pair's methods, each at the best rate of its nearest size (rates move little between
  neighbouring sizes; `lr_edges` in the report lists such cells as single-rate);
- `seed`: another seed at the size whose point lies farthest off its method's law. The new seed
  is expected on the law where the offset is within two standard errors of the point's mean over
  its k seeds (the method's pooled seed noise; without it, always), else two standard errors
  nearer the law than the point (the rest of the offset is the law's, and seeds will not move
  it); the mean of the k + 1 seeds moves by 1/(k + 1) of that;
- `budget` (studies of several budgets per size, `budget_steps`): a budget beyond the range the
  runs trained where the fitted L(N, D) puts the optimal tokens per parameter outside it.

In a study of several budgets per size, a new size trains at every budget its neighbour trained,
each expected on the method's L(N, D) (on its frontier law where the L(N, D) cannot be fitted).

A (method, size) of the spec swept at one rate takes the best rate of the nearest size whose
sweep brackets its best: where it ran a different rate, that best rate is its candidate; while
another size's sweep is still being extended, it waits; where the method has no sweep of two or
more rates at all, a step either side.

The ladder extends the spec's shapes the way the presets grow them: every model key that changes
between the two outermost sizes changes again by the same ratio (d_model kept a multiple of
n_head); named sizes step to the next one in `beyondbp.model.shape.NAMED_SIZES`. A run's cost is
its planned FLOPs times its method's measured compute per planned FLOP (paper's count, or
training seconds), from the study's finished runs. Torch-free.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..fit.candidates import law_loss, log_residuals, rate_loss
from ..fit.tuning import choose_rates, edge_of
from ..model.shape import NAMED_SIZES
from .additions import Observation, spec_with_sizes
from .budget_steps import budget_brackets, lnd_fits
from .grid import budgets as _budgets
from .plan import StudyPlan, planned_run
from .spec_types import Spec
from .tracks import get_track

DEFAULT_STEP = 2.5  # a sweep's ratio where a (method, size) tried one rate only


@dataclass
class Candidate:
    kind: str  # rate, size, seed or budget
    label: str  # what it runs, in a few words
    runs: list[dict]  # {method, size, lr, seed, budget}
    cost: dict[str, float]  # pf_days and seconds
    rows: list[dict]  # the frontier rows it is expected to leave
    noise: dict[str, tuple[float, int]]
    new_sizes: dict[str, dict] = field(default_factory=dict)
    edge: bool = False  # it brackets a best rate at an edge of its sweep
    gain: float = 0.0
    score: float = 0.0
    expected: dict = field(default_factory=dict)  # the refit's letter and share
    new_budgets: dict = field(default_factory=dict)  # {label: [value, per_param]} beyond the study's

    def record(self, unit: str) -> dict:
        return {"kind": self.kind, "label": self.label, "cost": self.cost[unit], "gain": round(self.gain, 4),
                "score": self.score, "expected": self.expected, "runs": self.runs}


def _model_keys(spec: Spec, size: str) -> dict:
    keys = dict(spec.sizes[size])
    if "size" in keys and keys["size"] in NAMED_SIZES:
        n_layer, d_model, n_head, context = NAMED_SIZES[keys.pop("size")]
        keys = {"n_layer": n_layer, "d_model": d_model, "n_head": n_head, **keys}
    return keys


def ladder_step(spec: Spec, ordered: list[str], up: bool) -> tuple[str, dict] | None:
    """(name, model keys) of the size one step beyond the end of `ordered` (sizes by N), or None."""
    if len(ordered) < 2:
        return None
    outer, inner = (ordered[-1], ordered[-2]) if up else (ordered[0], ordered[1])
    entry = spec.sizes[outer]
    if set(entry) == {"size"}:  # a named size: the next of the same family
        names = [n for n in NAMED_SIZES if n.split("-")[0] == entry["size"].split("-")[0]]
        i = names.index(entry["size"]) + (1 if up else -1)
        return (names[i], {"size": names[i]}) if 0 <= i < len(names) else None
    a, b = _model_keys(spec, outer), _model_keys(spec, inner)
    new = dict(a)
    for key, value in a.items():
        if isinstance(value, int) and not isinstance(value, bool) and isinstance(b.get(key), int) and b[key] != value:
            new[key] = max(1, round(value * value / b[key]))
    if "d_model" in new and new.get("n_head"):
        new["d_model"] = max(new["n_head"], round(new["d_model"] / new["n_head"]) * new["n_head"])
    if new == a:
        return None
    name = get_track(spec.track).size_name(new)
    return None if spec.sizes.get(name, new) != new else (name, new)


class Proposer:
    """Candidates for one pair (alternative, reference) of a study, given its observation."""

    def __init__(self, plan: StudyPlan, obs: Observation, new_sizes: dict[str, dict],
                 new_budgets: dict[str, tuple[str, float, bool]] | None = None):
        self.plan, self.obs = plan, obs
        self.spec = spec_with_sizes(plan.spec, new_sizes)
        self.budgets = {label: (label, value, per) for label, value, per in _budgets(self.spec)}
        self.budgets.update({k: v for k, v in (new_budgets or {}).items() if k not in self.budgets})
        self.known_budgets = set(self.budgets)  # the spec's and the logged ones (candidates add to budgets)
        self.choices = choose_rates(obs.trials)
        self.planned = {r.name for r in plan.runs}
        n_of = {r.size: r.n_params for r in plan.runs}
        self.ordered = sorted(n_of, key=lambda s: n_of[s])
        self.lnd_cache: dict = {}  # method -> its L(N, D) point fit or None (`budget_steps.lnd_fits`)

    def _run(self, method, size, lr, seed, budget):
        return planned_run(self.spec, method, size, lr, seed, self.budgets[budget])

    def _cost(self, runs) -> dict[str, float]:
        """pf_days, seconds (training) and wall: its training seconds, exact with one worker."""
        cost = {unit: sum(r.cost * self.obs.per_flop(r.method, unit) for r in runs) for unit in ("pf_days", "seconds")}
        return {**cost, "wall": cost["seconds"]}

    def _candidate(self, kind, label, runs, rows, new_sizes=None, noise=None, edge=False) -> Candidate | None:
        runs = [r for r in runs if r.name not in self.planned]
        if not runs:
            return None
        return Candidate(kind, label, [{"method": r.method, "size": r.size, "lr": r.lr, "seed": r.seed,
                                        "budget": r.budget} for r in runs],
                         self._cost(runs), rows, noise or self.obs.noise, new_sizes or {}, edge)

    def rates(self, methods) -> list[Candidate]:
        out = []
        for (method, size, budget), choice in self.choices.items():
            edge = edge_of(choice["best"], choice["tried"])
            follows = self._follows(method, size, budget, choice["tried"])
            if method not in methods or (edge is None and follows is None) or follows == "settled":
                continue
            tried = choice["tried"]
            if follows:
                lrs, why = [follows[1]], f"the best rate of {follows[0]}, whose sweep brackets it"
            else:
                step = self._method_step(method)
                lrs = [float(f"{choice['best'] * (step if up else 1 / step):.6g}")
                       for up in ((True, False) if edge == "single" else (edge == "high",))]
                why = (f"{choice['best']:g} is its only rate" if edge == "single" else
                       f"best {choice['best']:g} is the sweep's {'highest' if edge == 'high' else 'lowest'}")
            for lr in lrs:
                loss = rate_loss(tried, [self._cell_loss(method, size, budget, x) for x in tried], lr)
                runs = [self._run(method, size, lr, s, budget) for s in self.spec.seeds]
                label = f"{method} {size}{' ' + budget if budget else ''} at lr {lr:g} ({why})"
                out.append(self._candidate("rate", label, runs, self._replace(method, size, budget, loss), edge=True))
        return [c for c in out if c is not None]

    def _follows(self, method: str, size: str, budget: str, tried: list[float]):
        """For a size that takes its rate from a neighbour (one the planner added, or one the spec
        tries at one rate where it sweeps another): "settled" where it trains that rate (or must
        wait for it), else (neighbour, rate) to run; None for a size with a sweep of its own. A
        budget the planner added is settled: it trains the rate of its size's nearest budget."""
        if budget not in {label for label, _, _ in _budgets(self.plan.spec)}:
            return "settled"  # a budget the planner added trains the rate it was given
        spec_lrs = self.plan.spec.lrs.get(method, {})
        spec_lrs = spec_lrs if isinstance(spec_lrs, dict) else {}
        if size in self.plan.spec.sizes and (len(spec_lrs.get(size, [])) != 1
                                                or all(len(r) < 2 for r in spec_lrs.values())):
            return None
        if size not in self.plan.spec.sizes:
            return "settled"
        carried = self._carried_rate(method, size, budget)
        return carried if carried and carried[1] not in tried else "settled"

    def _carried_rate(self, method: str, size: str, budget: str) -> tuple[str, float] | None:
        """(size, best rate) of the nearest size on the ladder whose sweep brackets its best, or None."""
        swept = [(abs(self.ordered.index(s) - self.ordered.index(size)), self.ordered.index(s), s, c["best"])
                 for (m, s, b), c in self.choices.items()
                 if (m, b) == (method, budget) and s != size and edge_of(c["best"], c["tried"]) is None]
        if not swept:
            return None
        return min(swept)[2:]

    def _method_step(self, method: str) -> float:
        """The spec's ratio between neighbouring rates of the method's sweeps (median), else DEFAULT_STEP."""
        lrs = self.plan.spec.lrs.get(method, {})
        steps = [b / a for rates in (lrs.values() if isinstance(lrs, dict) else [lrs])
                 for a, b in zip(sorted(rates), sorted(rates)[1:]) if b > a]
        return float(np.median(steps)) if steps else DEFAULT_STEP

    def _cell_loss(self, method, size, budget, lr) -> float:
        losses = [t["loss"] for t in self.obs.trials
                  if (t["method"], t["size"], t.get("budget", ""), float(t["lr"])) == (method, size, budget, lr)]
        return float(math.exp(np.mean(np.log(losses))))

    def _replace(self, method: str, size: str, budget: str, loss: float) -> list[dict]:
        """The rows with `method`'s point at `size` and `budget` lowered to `loss` where that is lower."""
        return [{**r, "loss": min(r["loss"], loss)}
                if (r["method"], r["size"]) == (method, size) and self._row_budget(r) == budget else r
                for r in self.obs.rows]

    def sizes(self, methods) -> list[Candidate]:
        out = []
        for up in (True, False):
            had = {m: [s for s in self.ordered if any(r["method"] == m and r["size"] == s for r in self.obs.rows)]
                   for m in methods}
            if not all(had.values()):
                continue
            ends = {m: (s[-1] if up else s[0]) for m, s in had.items()}
            edge = max(ends.values(), key=self.ordered.index) if up else min(ends.values(), key=self.ordered.index)
            lagging = [m for m in methods if ends[m] != edge]
            if lagging:  # one method has a size the other lacks: that is the step
                target, new = edge, {}
            else:
                step = ladder_step(self.spec, self.ordered, up)
                if step is None:
                    continue
                target, new = step[0], {step[0]: step[1]}
                self.spec.sizes.setdefault(target, step[1])
            out.append(self._size_candidate(lagging or list(methods), ends, target, new, up))
        return [c for c in out if c is not None]

    def budget_brackets(self, methods) -> list[Candidate]:
        return budget_brackets(self, methods)

    def expected_loss(self, method: str, run, compute: float, fits: dict | None = None) -> float | None:
        """A new run's loss: on the method's L(N, D) where `fits` has it, else on its frontier law."""
        fit = (fits or {}).get(method)
        return float(fit.predict(run.n_params, run.tokens)) if fit is not None else law_loss(self.obs.rows, method,
                                                                                              compute)

    def _size_candidate(self, methods, ends, target, new, up) -> Candidate | None:
        rows, runs = list(self.obs.rows), []
        fits = lnd_fits(self, methods) if len(self.budgets) > 1 else {}
        for m in methods:
            trained = [(b, self.choices[(m, ends[m], b)]["best"]) for b in self.budgets
                       if (m, ends[m], b) in self.choices]
            if not trained:
                return None
            for budget, lr in trained:
                mine = [self._run(m, target, lr, s, budget) for s in self.spec.seeds]
                compute = mine[0].cost * self.obs.per_flop(m, "pf_days")
                loss = self.expected_loss(m, mine[0], compute, fits)
                if loss is None or not compute:
                    return None
                rows.append({"method": m, "compute": compute, "loss": loss, "run": mine[0].name, "size": target,
                             "budget": budget})
                runs += mine
        label = f"{' and '.join(methods)} at {target} (one size {'up' if up else 'down'})"
        return self._candidate("size", label, runs, rows, new)

    def _row_budget(self, row: dict) -> str:
        """The budget label of a frontier row (its run's, or its seeds' where it averages several)."""
        if "budget" in row:
            return row["budget"]
        for r in self.obs.runs:
            if row["run"] in (r["name"], r["name"].rsplit("_s", 1)[0] + "_seeds"):
                return r["budget"]
        return next(iter(self.budgets))

    def seeds(self, methods) -> list[Candidate]:
        out = []
        for m in methods:
            residuals = log_residuals(self.obs.rows, m)
            if not residuals:
                continue
            run = max(sorted(residuals), key=lambda k: abs(residuals[k]))
            row = next(r for r in self.obs.rows if r["run"] == run)
            budget = self._row_budget(row)
            choice = self.choices.get((m, row["size"], budget))
            if choice is None:
                continue
            cell = [t for t in self.obs.trials
                    if (t["method"], t["size"], t.get("budget", "")) == (m, row["size"], budget)]
            k = sum(1 for t in cell if float(t["lr"]) == choice["best"])
            sd, dof = self.obs.noise.get(m, (abs(residuals[run]), 0))
            offset = residuals[run]
            moved = math.copysign(min(abs(offset), 2 * sd / math.sqrt(max(k, 1))), offset) if dof else offset
            seed = max([*(t["seed"] for t in cell), *self.spec.seeds]) + 1
            loss = row["loss"] * math.exp(-moved / (k + 1))  # the mean of k + 1 seeds, the new one `moved` nearer
            rows = [{**r, "loss": loss} if r is row else r for r in self.obs.rows]
            label = f"{m} {row['size']} seed {seed} (its point lies {residuals[run]:+.3f} in ln L off the law)"
            out.append(self._candidate("seed", label, [self._run(m, row["size"], choice["best"], seed, budget)], rows,
                                       noise={**self.obs.noise, m: (sd, dof + 1)}))
        return [c for c in out if c is not None]
