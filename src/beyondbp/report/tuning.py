"""The report's tuning section: which rates were kept and on what, the (method, size)s whose best
rate lies at an edge of its sweep, the measured seed noise, and the verdicts under every method's
runner-up rate (`beyondbp.fit.tuning` does the arithmetic).

In results.json: `lr_edges` (a list of {method, size, best_lr, tried, edge, beyond_noise, gap,
margin}: `fit.tuning.lr_edges`; an edge within seed noise is flat, not hidden), `seed_sd`
({method: {size: {sd, seeds, dof}}}, where several seeds ran), `seed_noise` ({method: {sd, dof}},
pooled over sizes), `rate_chosen_on`, `best_lrs`, `val_loss_would_choose` (the cells where the
fitted loss would have kept another rate) and `sensitivity: {runner_up: {method: {scenario,
possible_letters}}}`.
"""
from __future__ import annotations

from ..fit.defaults import DEFAULT_BOOTSTRAP
from ..fit.tuning import lr_edges, pooled_seed_noise, seed_sd
from .results import RunResult, fit_accounting, frontier_points, rate_choices, runs_at_rate, trials


def runner_up_verdicts(results: list[RunResult], choices: dict, mode: str, bootstrap: int, seed: int,
                       noise: dict[str, tuple[float, int]] | None = None) -> dict[str, dict]:
    """{method: {scenario, possible_letters}} under the paper's count, with every (method, size)
    at its runner-up rate (its only rate where it tried one); {} when no cell tried two.
    choices: `rate_choices(results)`."""
    if all(c["runner_up"] is None for c in choices.values()):
        return {}
    verdicts = fit_accounting(frontier_points(runs_at_rate(results, "runner_up", choices), "paper", mode),
                              bootstrap, seed, noise).verdicts
    return {m: {"scenario": v.scenario, "possible_letters": v.possible_letters}
            for m, v in verdicts.items()}


def tuning_section(results: list[RunResult], mode: str = "final", bootstrap: int = DEFAULT_BOOTSTRAP,
                   seed: int = 0) -> dict:
    """What results.json holds about tuning and seeds (the module docstring lists the keys)."""
    choices = rate_choices(results)
    sds = seed_sd(trials(results))
    best: dict[str, dict[str, float]] = {}
    for (method, size, budget), choice in choices.items():
        best.setdefault(method, {})[f"{size} {budget}".strip()] = choice["best"]
    noise = pooled_seed_noise(sds)
    return {"lr_edges": lr_edges(choices, noise), "seed_sd": sds,
            "seed_noise": {m: {"sd": sd, "dof": dof} for m, (sd, dof) in noise.items()},
            "rate_chosen_on": sorted({c["on"] for c in choices.values()}), "best_lrs": best,
            "val_loss_would_choose": [{"method": m, "size": s, **({"budget": b} if b else {}), "best_lr": c["best"],
                                       "val_best_lr": c["val_best"]}
                                      for (m, s, b), c in choices.items() if c["val_best"] != c["best"]],
            "sensitivity": {"runner_up": runner_up_verdicts(results, choices, mode, bootstrap, seed, noise)}}


def _letter(v: dict) -> str:
    if v.get("scenario"):
        return v["scenario"]
    return f"undetermined ({' or '.join(v.get('possible_letters') or [])})"


def tuning_lines(section: dict) -> list[str]:
    """The section as a few plain lines (Markdown list items without the bullet)."""
    on = " or ".join("training loss at each run's last evaluation" if o == "train_loss"
                     else "final validation loss" for o in section["rate_chosen_on"]) or "-"
    other = section["val_loss_would_choose"]
    lines = [f"Each (method, size) keeps the rate with the lowest {on} (mean log over seeds), "
             "so the kept point's validation loss is not the one it was chosen on; the validation loss "
             f"would have kept another rate at {len(other)} of {sum(map(len, section['best_lrs'].values()))}"
             + (": " + ", ".join(f"{e['method']} {e['size']} {e['val_best_lr']:g} for {e['best_lr']:g}" for e in other)
                if other else "") + "."]
    lines += _edge_lines(section["lr_edges"])
    sds = section["seed_sd"]
    if sds:
        per_size = "; ".join(f"{m} " + ", ".join(f"{s} {e['sd']:.4f} ({e['seeds']} seeds)" for s, e in sizes.items())
                             for m, sizes in sds.items())
        pooled = ", ".join(f"{m} {e['sd']:.4f} ({e['dof']} dof)" for m, e in section["seed_noise"].items())
        lines.append(f"Seed noise, sd of ln(final loss) across seeds: {per_size}; pooled: {pooled}.")
    else:
        lines.append("Seed noise not measured: every configuration ran one seed.")
    runner_up = section["sensitivity"]["runner_up"]
    if runner_up:
        lines.append("With every method at its runner-up rate (paper's count): "
                     + ", ".join(f"{m} {_letter(v)}" for m, v in runner_up.items()) + ".")
    return lines


def _edge_text(e: dict) -> str:
    text = (f"{e['method']} {e['size']}{' ' + e['budget'] if e.get('budget') else ''} {e['best_lr']:g} of "
            f"{', '.join(f'{lr:g}' for lr in e['tried'])} ({e['edge']}")
    if e.get("margin") is not None:
        text += f"; wins by {e['gap']:.4f} in ln loss against a noise margin of {e['margin']:.4f}"
    elif e.get("gap") is not None:
        text += "; seed noise not measured"
    return text + ")"


def _edge_lines(edges: list[dict]) -> list[str]:
    """Every edge, those beyond seed noise (or of unmeasured noise) apart from the flat ones."""
    if not edges:
        return ["Every (method, size)'s best rate lies strictly inside its sweep."]
    real = [e for e in edges if e.get("beyond_noise") is not False and e["edge"] != "single"]
    flat = [e for e in edges if e.get("beyond_noise") is False]
    single = [e for e in edges if e["edge"] == "single"]
    lines = []
    if single:
        lines.append("One rate tried, so not checked (no sweep): " + "; ".join(
            f"{e['method']} {e['size']}{' ' + e['budget'] if e.get('budget') else ''} {e['best_lr']:g}" for e in single)
            + ".")
    if real:
        lines.append("Best rate at an edge of its sweep (widen the sweep; an alternative's compute multiplier "
                     "gets no interval while its own or BP's edge is not shown flat): "
                     + "; ".join(map(_edge_text, real)) + ".")
    if flat:
        lines.append("Best rate at an edge but flat within seed noise (the inner neighbour is as good, so the best "
                     "rate may lie between them): " + "; ".join(map(_edge_text, flat)) + ".")
    return lines


def tuning_markdown(section: dict) -> str:
    return "## Tuning and seed noise\n\n" + "\n".join(f"- {line}" for line in tuning_lines(section)) + "\n"
