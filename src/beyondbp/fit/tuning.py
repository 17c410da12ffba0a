"""Which learning rate each (method, size) keeps, whether it lies inside its sweep, and seed noise.

Numbers in, numbers out: a trial is one finished run as a dict {method, size, budget, lr, seed,
loss, select_loss}; `loss` is its final validation loss (what the frontier fits), `select_loss`
the loss the rate is chosen on, or None.

The winner's curse. Picking the best of k rates on the very loss that is then fitted keeps the
rate whose validation loss came out luckiest, and biases the kept point low. The rate is chosen
on another estimate instead: the run's training loss over its last evaluation interval (the mean
of the batch losses since the previous evaluation, each measured before the step that trains on
that batch), averaged over seeds in log space. While a run reads under one epoch of its training
split, as the `quick` and `cpu` presets do (d32 of `cpu` reads 1.01 epochs), every one of those
batches is text the model has not trained on, a sample of the same distribution disjoint from
the validation tokens, so the validation loss's sampling noise plays no part in the choice. The
part of the curse that comes from the training run itself (its initialisation and data order,
which both losses share) remains; it is as large as the seed noise the `seed_sizes` runs measure
(`seed_sd`), and the report's runner-up sensitivity shows what the choice moves. Where a cell's
runs lack a training loss (runs of other tools; the MLP track, whose epochs revisit every
example, gives none) the choice falls back to the validation loss, and `choose_rates` says so (`on`).

Edges and noise. A best rate at an end of its sweep is an edge (`lr_edges`), and every edge is
listed. Where the method's seed noise is measured, an edge also says whether the edge rate wins
by more than that noise (`beyond_noise`): its mean ln loss must lie below its inner neighbour's by
more than 1.96 sd x sqrt(1/seeds of one + 1/seeds of the other). An edge within that margin is
flat: the best rate may as well lie between the two, and widening the sweep would only move a
coin toss to another cell. `beyond_noise` is null where the noise is not measured or one rate ran.

Seed noise. Where several seeds ran for a (method, size, rate), their sample standard deviation
of ln(final loss) measures the run-to-run noise; `seed_sd` pools it over the rates of a size,
`pooled_seed_noise` over a method's sizes, with the degrees of freedom (seeds - 1, summed).
"""
from __future__ import annotations

import math

import numpy as np

EDGES = ("low", "high", "single")
EDGE_Z = 1.96  # an edge rate beats its inner neighbour beyond noise when by more than EDGE_Z sd of the difference


def _cells(trials: list[dict]) -> dict[tuple[str, str, str], dict[float, list[dict]]]:
    """{(method, size, budget): {lr: [trials of its seeds]}}."""
    cells: dict[tuple[str, str, str], dict[float, list[dict]]] = {}
    for t in trials:
        cells.setdefault((t["method"], t["size"], t.get("budget", "")), {}).setdefault(float(t["lr"]), []).append(t)
    return cells


def _usable(value) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def _scores(by_lr: dict[float, list[dict]], column: str) -> dict[float, float]:
    """The mean over seeds of ln(column) per rate."""
    return {lr: float(np.mean([math.log(t[column]) for t in runs])) for lr, runs in by_lr.items()}


def _ranked(by_lr: dict[float, list[dict]], column: str) -> list[float]:
    """Rates by the mean over seeds of ln(column), ties to the smaller rate."""
    score = _scores(by_lr, column)
    return sorted(by_lr, key=lambda lr: (score[lr], lr))


def choose_rates(trials: list[dict]) -> dict[tuple[str, str, str], dict]:
    """Per (method, size, budget): {best, runner_up (None with one rate), tried (sorted), on,
    val_best}. Rates are ranked by the mean over seeds of ln(select_loss) (`on`: "train_loss"),
    or of ln(loss) where any run of the cell lacks a select_loss (`on`: "val_loss"); ties go to
    the smaller rate. `val_best` is the rate the fitted loss itself would have kept. Also
    `scores` ({lr: mean ln loss ranked on}) and `seeds` ({lr: runs}), which `lr_edges` reads."""
    out = {}
    for key, by_lr in _cells(trials).items():
        on_train = all(_usable(t.get("select_loss")) for runs in by_lr.values() for t in runs)
        column = "select_loss" if on_train else "loss"
        ranked = _ranked(by_lr, column)
        out[key] = {"best": ranked[0], "runner_up": ranked[1] if len(ranked) > 1 else None,
                    "tried": sorted(by_lr), "on": "train_loss" if on_train else "val_loss",
                    "val_best": _ranked(by_lr, "loss")[0], "scores": _scores(by_lr, column),
                    "seeds": {lr: len(runs) for lr, runs in by_lr.items()}}
    return out


def edge_of(best: float, tried: list[float]) -> str | None:
    """"single" (one rate tried), "low" / "high" (the best is the sweep's smallest / largest), else None."""
    if len(tried) < 2:
        return "single"
    if best == min(tried):
        return "low"
    if best == max(tried):
        return "high"
    return None


def edge_margin(choice: dict, edge: str, noise: tuple[float, int] | None) -> dict:
    """{gap, margin, beyond_noise} of an edge: gap = the inner neighbour's mean ln loss minus the edge
    rate's, margin = EDGE_Z x sd x sqrt(1/seeds + 1/seeds) (None without noise or scores)."""
    scores = choice.get("scores")
    if edge == "single" or not scores:
        return {"gap": None, "margin": None, "beyond_noise": None}
    tried, best = choice["tried"], choice["best"]
    inner = tried[1] if edge == "low" else tried[-2]
    gap = scores[inner] - scores[best]
    if noise is None:
        return {"gap": gap, "margin": None, "beyond_noise": None}
    margin = EDGE_Z * noise[0] * math.sqrt(1 / choice["seeds"][best] + 1 / choice["seeds"][inner])
    return {"gap": gap, "margin": margin, "beyond_noise": bool(gap > margin)}


def lr_edges(choices: dict[tuple[str, str, str], dict],
             noise: dict[str, tuple[float, int]] | None = None) -> list[dict]:
    """{method, size, best_lr, tried, edge, beyond_noise, gap, margin} (and budget, where a study has
    several) for every cell whose best rate is not strictly inside its sweep, in the order of
    `choices`; noise: {method: (sd of ln loss, dof)} (`pooled_seed_noise`), for `edge_margin`."""
    out = []
    for (method, size, budget), choice in choices.items():
        edge = edge_of(choice["best"], choice["tried"])
        if edge is not None:
            entry = {"method": method, "size": size, "best_lr": choice["best"], "tried": list(choice["tried"]),
                     "edge": edge, **edge_margin(choice, edge, (noise or {}).get(method))}
            out.append({**entry, "budget": budget} if budget else entry)
    return out


def unresolved_edges(edges: list[dict]) -> list[dict]:
    """The edges that may bias a method's points: low or high, and not shown flat within seed noise
    (`beyond_noise` true, or null where the noise is not measured). A single rate is named in the
    report but not counted here: it was never swept."""
    return [e for e in edges if e["edge"] in ("low", "high") and e.get("beyond_noise") is not False]


def mean_log_loss(losses: list[float]) -> float:
    """The loss whose log is the mean of the seeds' log losses (their geometric mean): one
    frontier point per configuration, not the luckiest seed."""
    return float(math.exp(np.mean([math.log(v) for v in losses])))


def seed_sd(trials: list[dict]) -> dict[str, dict[str, dict]]:
    """{method: {size: {sd, seeds, dof}}} where some rate of the size ran several seeds: the sample
    sd of ln(loss) across seeds, pooled over such rates (and budgets) by their degrees of freedom;
    `seeds` is the most seeds any one rate ran, `dof` the sum of (seeds - 1)."""
    out: dict[str, dict[str, dict]] = {}
    for (method, size, _budget), by_lr in _cells(trials).items():
        for runs in by_lr.values():
            logs = [math.log(t["loss"]) for t in runs if _usable(t.get("loss"))]
            if len(logs) < 2:
                continue
            entry = out.setdefault(method, {}).setdefault(size, {"ss": 0.0, "seeds": 0, "dof": 0})
            entry["ss"] += float(np.var(logs, ddof=1)) * (len(logs) - 1)
            entry["seeds"] = max(entry["seeds"], len(logs))
            entry["dof"] += len(logs) - 1
    return {m: {s: {"sd": math.sqrt(e["ss"] / e["dof"]), "seeds": e["seeds"], "dof": e["dof"]}
                for s, e in sizes.items()} for m, sizes in out.items()}


def pooled_seed_noise(sds: dict[str, dict[str, dict]]) -> dict[str, tuple[float, int]]:
    """{method: (sd, dof)} from `seed_sd`'s table: each method's log-sd pooled over its sizes,
    sqrt(sum(dof_i sd_i^2) / sum(dof_i)), with dof = sum(dof_i) (sum over sizes of seeds - 1)."""
    out = {}
    for method, sizes in sds.items():
        dof = sum(e["dof"] for e in sizes.values())
        if dof > 0:
            out[method] = (math.sqrt(sum(e["dof"] * e["sd"] ** 2 for e in sizes.values()) / dof), dof)
    return out
