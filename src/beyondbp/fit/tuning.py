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

Seed noise. Where several seeds ran for a (method, size, rate), their sample standard deviation
of ln(final loss) measures the run-to-run noise; `seed_sd` pools it over the rates of a size,
`pooled_seed_noise` over a method's sizes, with the degrees of freedom (seeds - 1, summed).
"""
from __future__ import annotations

import math

import numpy as np

EDGES = ("low", "high", "single")


def _cells(trials: list[dict]) -> dict[tuple[str, str, str], dict[float, list[dict]]]:
    """{(method, size, budget): {lr: [trials of its seeds]}}."""
    cells: dict[tuple[str, str, str], dict[float, list[dict]]] = {}
    for t in trials:
        cells.setdefault((t["method"], t["size"], t.get("budget", "")), {}).setdefault(float(t["lr"]), []).append(t)
    return cells


def _usable(value) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def _ranked(by_lr: dict[float, list[dict]], column: str) -> list[float]:
    """Rates by the mean over seeds of ln(column), ties to the smaller rate."""
    score = {lr: float(np.mean([math.log(t[column]) for t in runs])) for lr, runs in by_lr.items()}
    return sorted(by_lr, key=lambda lr: (score[lr], lr))


def choose_rates(trials: list[dict]) -> dict[tuple[str, str, str], dict]:
    """Per (method, size, budget): {best, runner_up (None with one rate), tried (sorted), on,
    val_best}. Rates are ranked by the mean over seeds of ln(select_loss) (`on`: "train_loss"),
    or of ln(loss) where any run of the cell lacks a select_loss (`on`: "val_loss"); ties go to
    the smaller rate. `val_best` is the rate the fitted loss itself would have kept."""
    out = {}
    for key, by_lr in _cells(trials).items():
        on_train = all(_usable(t.get("select_loss")) for runs in by_lr.values() for t in runs)
        ranked = _ranked(by_lr, "select_loss" if on_train else "loss")
        out[key] = {"best": ranked[0], "runner_up": ranked[1] if len(ranked) > 1 else None,
                    "tried": sorted(by_lr), "on": "train_loss" if on_train else "val_loss",
                    "val_best": _ranked(by_lr, "loss")[0]}
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


def lr_edges(choices: dict[tuple[str, str, str], dict]) -> list[dict]:
    """{method, size, best_lr, tried, edge} (and budget, where a study has several) for every cell
    whose best rate is not strictly inside its sweep, in the order of `choices`."""
    out = []
    for (method, size, budget), choice in choices.items():
        edge = edge_of(choice["best"], choice["tried"])
        if edge is not None:
            entry = {"method": method, "size": size, "best_lr": choice["best"], "tried": list(choice["tried"]),
                     "edge": edge}
            out.append({**entry, "budget": budget} if budget else entry)
    return out


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
