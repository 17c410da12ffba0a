"""Learning-rate choice, sweep edges and seed noise (`beyondbp.fit.tuning`), and the spec's `seed_sizes`."""
from __future__ import annotations

import math

import pytest

from beyondbp.config import ConfigError
from beyondbp.fit.tuning import (choose_rates, edge_of, lr_edges, mean_log_loss, pooled_seed_noise, seed_sd,
                                 unresolved_edges)
from beyondbp.study.plan import plan_study
from beyondbp.study.spec import load_spec
from helpers import planned_study


def trial(method, size, lr, loss, select=None, seed=0, budget=""):
    return {"method": method, "size": size, "budget": budget, "lr": lr, "seed": seed, "loss": loss,
            "select_loss": select}


def test_tuning_lr_edges_name_low_high_and_single_and_leave_inside_out():
    trials = [  # validation losses; no training loss, so the choice falls back to them
        trial("bp", "a", 1e-3, 2.0), trial("bp", "a", 3e-3, 2.1), trial("bp", "a", 1e-2, 2.2),  # low
        trial("bp", "b", 1e-3, 2.2), trial("bp", "b", 3e-3, 2.1), trial("bp", "b", 1e-2, 2.0),  # high
        trial("bp", "c", 1e-3, 2.2), trial("bp", "c", 3e-3, 2.0), trial("bp", "c", 1e-2, 2.1),  # inside
        trial("dfa", "a", 1e-2, 2.5)]  # single
    choices = choose_rates(trials)
    c = choices[("bp", "c", "")]
    assert {k: c[k] for k in ("best", "runner_up", "tried", "on", "val_best")} == {
        "best": 3e-3, "runner_up": 1e-2, "tried": [1e-3, 3e-3, 1e-2], "on": "val_loss", "val_best": 3e-3}
    unmeasured = {"beyond_noise": None, "margin": None}
    assert lr_edges(choices) == [
        {"method": "bp", "size": "a", "best_lr": 1e-3, "tried": [1e-3, 3e-3, 1e-2], "edge": "low",
         "gap": pytest.approx(math.log(2.1 / 2.0)), **unmeasured},
        {"method": "bp", "size": "b", "best_lr": 1e-2, "tried": [1e-3, 3e-3, 1e-2], "edge": "high",
         "gap": pytest.approx(math.log(2.1 / 2.0)), **unmeasured},
        {"method": "dfa", "size": "a", "best_lr": 1e-2, "tried": [1e-2], "edge": "single", "gap": None, **unmeasured}]
    assert choices[("dfa", "a", "")]["runner_up"] is None
    assert edge_of(3e-3, [1e-3, 3e-3, 1e-2]) is None


def test_tuning_rate_is_chosen_on_the_training_loss_not_on_the_fitted_one():
    """Rate 1e-2's validation losses came out lucky, but its training losses, a separate estimate,
    rank 3e-3 first: the kept rate is 3e-3, so the fitted point is not the winner of a draw on its
    own noise. Both are averaged over seeds in log space."""
    trials = [trial("bp", "a", 3e-3, 2.05, 2.10, seed=0), trial("bp", "a", 3e-3, 2.06, 2.12, seed=1),
              trial("bp", "a", 1e-2, 2.00, 2.20, seed=0), trial("bp", "a", 1e-2, 2.09, 2.30, seed=1),
              trial("bp", "a", 1e-3, 2.30, 2.30)]
    # mean ln train loss: 3e-3 ln(2.10 * 2.12) / 2 = 0.7467 < 1e-2 ln(2.20 * 2.30) / 2 = 0.8163,
    # mean ln val loss: 1e-2 ln(2.00 * 2.09) / 2 = 0.7151 < 3e-3 ln(2.05 * 2.06) / 2 = 0.7205
    choice = choose_rates(trials)[("bp", "a", "")]
    assert (choice["best"], choice["runner_up"], choice["on"], choice["val_best"]) == (3e-3, 1e-2, "train_loss", 1e-2)
    trials[3]["select_loss"] = 2.00  # 1e-2's training losses now average ln(2.20 * 2.00) / 2 = 0.7408
    assert choose_rates(trials)[("bp", "a", "")]["best"] == 1e-2
    trials[3]["select_loss"] = None  # a run without a training loss: the cell falls back to validation
    fallback = choose_rates(trials)[("bp", "a", "")]
    assert (fallback["best"], fallback["on"]) == (1e-2, "val_loss")


def test_tuning_seed_sd_and_pooled_noise_on_known_numbers():
    e = math.exp
    trials = [trial("bp", "a", 1e-2, 2 * e(0.01), seed=0), trial("bp", "a", 1e-2, 2 * e(-0.01), seed=1),
              trial("bp", "b", 1e-2, 3 * e(0.03), seed=0), trial("bp", "b", 1e-2, 3, seed=1),
              trial("bp", "b", 1e-2, 3 * e(-0.03), seed=2),
              trial("bp", "c", 1e-2, 2.5, seed=0),  # one seed: no entry
              trial("dfa", "a", 1e-3, 2.8, seed=0), trial("dfa", "a", 1e-3, 2.8 * e(0.02), seed=1),
              trial("dfa", "a", 3e-3, 2.7, seed=0), trial("dfa", "a", 3e-3, 2.7 * e(0.04), seed=1)]
    sds = seed_sd(trials)
    assert sds["bp"]["a"] == {"sd": pytest.approx(0.02 / math.sqrt(2)), "seeds": 2, "dof": 1}
    assert sds["bp"]["b"] == {"sd": pytest.approx(0.03), "seeds": 3, "dof": 2}
    assert "c" not in sds["bp"]
    # two rates with two seeds each pool: variances 0.0002 and 0.0008, one dof each
    assert sds["dfa"]["a"] == {"sd": pytest.approx(math.sqrt(0.0005)), "seeds": 2, "dof": 2}
    pooled = pooled_seed_noise(sds)
    assert pooled["bp"][1] == 3 and pooled["bp"][0] == pytest.approx(math.sqrt((1 * 0.0002 + 2 * 0.0009) / 3))
    assert pooled["dfa"] == (pytest.approx(math.sqrt(0.0005)), 2)
    assert pooled_seed_noise({}) == {}


def test_tuning_mean_log_loss_is_the_geometric_mean():
    assert mean_log_loss([2.0, 8.0]) == pytest.approx(4.0)
    assert mean_log_loss([2.5]) == pytest.approx(2.5)


SPEC = {"name": "t", "methods": ["bp", "dfa_block"],
        "sizes": {"a": {"n_layer": 2, "d_model": 8, "n_head": 2}, "b": {"n_layer": 2, "d_model": 16, "n_head": 2},
                  "c": {"n_layer": 2, "d_model": 24, "n_head": 2}},
        "tokens": 4096, "lrs": {"bp": [1e-3, 3e-3, 1e-2], "dfa_block": [1e-3, 3e-3]}, "seeds": [0],
        "base": {"model": {"context": 32}, "train": {"batch_tokens": 512}}}


def test_tuning_seed_sizes_plan_extra_seeds_at_the_listed_sizes(tmp_path):
    plan, _ = planned_study(tmp_path, dict(SPEC, seed_sizes={"seeds": [1, 2], "sizes": ["a", "c"]}))
    names = {r.name for r in plan.runs}
    assert len(plan.runs) == 3 * 5 + 2 * 2 * 5  # every rate once per size; seeds 1, 2 at a and c
    assert {"bp_a_lr0.003_s2", "dfa_block_c_lr0.001_s1", "bp_c_lr0.01_s2"} <= names
    assert not any(n.startswith(("bp_b", "dfa_block_b")) and not n.endswith("_s0") for n in names)
    middle = plan_study(load_spec(tmp_path / "spec.yaml", overrides=["seed_sizes.rates=middle"]))
    extra = sorted(r.name for r in middle.runs if r.seed != 0)
    # the middle of bp's three rates; of dfa_block's two, the lower
    assert extra == ["bp_a_lr0.003_s1", "bp_a_lr0.003_s2", "bp_c_lr0.003_s1", "bp_c_lr0.003_s2",
                     "dfa_block_a_lr0.001_s1", "dfa_block_a_lr0.001_s2", "dfa_block_c_lr0.001_s1",
                     "dfa_block_c_lr0.001_s2"]


@pytest.mark.parametrize("value, message", [
    ([1], "seed_sizes: expected a mapping with seeds, sizes (and rates), got [1]"),
    ({"seeds": [1], "sizes": ["a"], "extra": 1}, "seed_sizes.extra: unknown key (valid: seeds, sizes, rates)"),
    ({"seeds": [0], "sizes": ["a"]}, "seed_sizes.seeds: seed 0 is in seeds already (every size trains it)"),
    ({"seeds": [], "sizes": ["a"]}, "seed_sizes.seeds: must list at least one seed"),
    ({"seeds": [1, 1], "sizes": ["a"]}, "seed_sizes.seeds: a seed is listed twice: [1, 1]"),
    ({"seeds": [-1], "sizes": ["a"]}, "seed_sizes.seeds: must be"),
    ({"seeds": [1]}, "seed_sizes.sizes: must list at least one of the study's sizes, got None"),
    ({"seeds": [1], "sizes": ["z"]}, "seed_sizes.sizes: size 'z' is not one of the study's sizes (a, b, c)"),
    ({"seeds": [1], "sizes": ["a", "a"]}, "seed_sizes.sizes: a size is listed twice: ['a', 'a']"),
    ({"seeds": [1], "sizes": ["a"], "rates": "best"}, "seed_sizes.rates: unknown value 'best' (valid: all, middle)"),
])
def test_tuning_seed_sizes_errors_name_the_key(tmp_path, value, message):
    with pytest.raises(ConfigError) as err:
        planned_study(tmp_path, dict(SPEC, seed_sizes=value))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not (tmp_path / "study").exists()  # refused before the study folder is written


def test_tuning_an_edge_within_seed_noise_is_listed_as_flat_and_one_beyond_it_is_not():
    """Issue 26: every edge is listed, with whether it wins beyond the measured seed noise. BP's
    edge at size a wins by ln(2.1 / 2.0) = 0.0488; with seed sd 0.02 and one seed per rate the
    margin is 1.96 x 0.02 x sqrt(2) = 0.0554, so it is flat; with sd 0.01 (margin 0.0277) it is
    beyond noise. Size b's edge rate ran two seeds: margin 1.96 x 0.02 x sqrt(1/2 + 1) = 0.0480."""
    trials = [trial("bp", "a", 1e-3, 2.0), trial("bp", "a", 3e-3, 2.1), trial("bp", "a", 1e-2, 2.2),
              trial("bp", "b", 1e-3, 2.2), trial("bp", "b", 3e-3, 2.1), trial("bp", "b", 1e-2, 2.0),
              trial("bp", "b", 1e-2, 2.0, seed=1)]
    flat = lr_edges(choose_rates(trials), {"bp": (0.02, 4)})
    assert [(e["size"], e["beyond_noise"]) for e in flat] == [("a", False), ("b", True)]
    assert flat[0]["margin"] == pytest.approx(1.96 * 0.02 * math.sqrt(2))
    assert flat[1]["margin"] == pytest.approx(1.96 * 0.02 * math.sqrt(1.5))
    sharp = lr_edges(choose_rates(trials), {"bp": (0.01, 4)})
    assert [e["beyond_noise"] for e in sharp] == [True, True]
    assert [e["size"] for e in unresolved_edges(flat)] == ["b"]
    assert [e["size"] for e in unresolved_edges(lr_edges(choose_rates(trials)))] == ["a", "b"]  # noise unmeasured


def test_tuning_lines_list_flat_edges_apart_from_real_ones():
    """A flat edge is still listed (never hidden), on its own line, with its gap and noise margin."""
    from beyondbp.report.tuning import tuning_lines
    edge = {"method": "bp", "size": "L4d12", "best_lr": 0.025, "tried": [0.004, 0.01, 0.025], "edge": "high"}
    section = {"rate_chosen_on": ["train_loss"], "val_loss_would_choose": [], "best_lrs": {"bp": {"L4d12": 0.025}},
               "seed_sd": {}, "seed_noise": {}, "sensitivity": {"runner_up": {}},
               "lr_edges": [{**edge, "gap": 0.0015, "margin": 0.0098, "beyond_noise": False},
                            {**edge, "size": "L4d18", "gap": 0.05, "margin": 0.0098, "beyond_noise": True},
                            {**edge, "method": "dfa", "tried": [0.025], "edge": "single", "gap": None, "margin": None,
                             "beyond_noise": None}]}
    lines = tuning_lines(section)
    real = next(line for line in lines if line.startswith("Best rate at an edge of its sweep (widen"))
    flat = next(line for line in lines if line.startswith("Best rate at an edge but flat within seed noise"))
    assert "bp L4d18 0.025 of 0.004, 0.01, 0.025 (high; wins by 0.0500 in ln loss against a noise margin of " \
           "0.0098)" in real and "L4d12" not in real
    assert "bp L4d12 0.025 of 0.004, 0.01, 0.025 (high; wins by 0.0015 in ln loss against a noise margin of " \
           "0.0098)" in flat and "L4d18" not in flat
    assert "dfa" not in real and "One rate tried, so not checked (no sweep): dfa L4d12 0.025." in lines
