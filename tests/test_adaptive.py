"""The adaptive planner (`study run --until-decided`) on the simulated executor: it brackets an
under-tuned sweep, decides a letter by adding the size its crossover needs, names the run a too
small budget lacks, and a kill in any round ends in the same decisions and runs."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml

from beyondbp.cli.main import main
from beyondbp.config import ConfigError
from beyondbp.fit.tuning import choose_rates, lr_edges
from beyondbp.report.decisions import observe
from beyondbp.study.adaptive import Budget, Planner, parse_budget
from beyondbp.fit.candidates import unbracketed_optima
from beyondbp.study.additions import added_budgets, read_decisions
from beyondbp.study.budget_steps import lnd_fits, method_k
from beyondbp.study.proposals import Proposer
from beyondbp.study.folder import load_study
from beyondbp.study.plan import StudyPlan, plan_study
from beyondbp.study.simulated import load_truth, run_noise, run_simulated
from beyondbp.study.spec import load_spec
from beyondbp.runs.folder import read_metrics, read_summary

SPEC = {"name": "tiny", "methods": ["bp", "dfa_block"],
        "sizes": {f"L{n}d16": {"n_layer": n, "d_model": 16, "n_head": 1} for n in (1, 2, 3, 4)},
        "tokens_per_param": 40, "lrs": {"bp": [4e-3, 1e-2, 2.5e-2], "dfa_block": [6e-3, 1.5e-2, 3.75e-2]},
        "seeds": [0], "base": {"data": {"corpus": "shakespeare", "tokenizer": "byte"}, "model": {"context": 64},
                               "train": {"batch_tokens": 512, "n_evals": 3, "eval_tokens": 1024}}}
BP = {"E": 1.0, "A": 20.0, "a": 0.30, "B": 30.0, "b": 0.30, "lr_opt": 1e-2, "lr_sensitivity": 0.1, "seed_sd": 0.003}
CROSSING_ONE_SIZE_ON = {**BP, "A": 35.7, "a": 0.36, "lr_opt": 1.5e-2}  # crosses BP near L5d16's N


def _write(tmp_path: Path, alt: dict) -> tuple[Path, Path]:
    spec, truth = tmp_path / "spec.yaml", tmp_path / "truth.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    truth.write_text(yaml.safe_dump({"bp": BP, "dfa_block": alt}))
    return spec, truth


def _run(tmp_path: Path, alt: dict, budget: str, out: str = "s") -> tuple[int, list[dict]]:
    spec, truth = _write(tmp_path, alt)
    rc = main(["study", "run", str(spec), "--out", str(tmp_path / out), "--executor", "simulated", "--truth",
               str(truth), "--until-decided", "--budget", budget, "--bootstrap", "300"])
    return rc, read_decisions(tmp_path / out)


def test_simulated_runs_follow_the_law_and_read_as_run_folders(tmp_path):
    spec, truth = _write(tmp_path, {**BP, "seed_sd": 0.0, "lr_opt": 1.5e-2})
    plan = plan_study(load_spec(spec))
    laws = load_truth(truth, plan.spec.methods)
    run_simulated(plan, tmp_path / "s", laws)
    run = next(r for r in plan.runs if r.name == "bp_L2d16_lr0.025_s0")
    summary = read_summary(tmp_path / "s" / "runs" / run.name)
    law = laws["bp"]
    expected = (1 + 20 / run.n_params ** 0.3 + 30 / summary["tokens"] ** 0.3) * (1 + 0.1 * math.log10(2.5) ** 2)
    assert summary["final_val_loss"] == pytest.approx(expected * math.exp(0.003 * run_noise(run.name)), rel=1e-12)
    assert summary["compute_pf_days"] == pytest.approx(6 * run.n_params * summary["tokens"] / 8.64e19)
    assert law.seed_sd == 0.003 and summary["status"] == "completed"
    rows = read_metrics(tmp_path / "s" / "runs" / run.name / "metrics.jsonl")
    assert [r["step"] for r in rows][0] == 0 and rows[-1]["val_loss"] == summary["final_val_loss"]
    assert all(a["val_loss"] > b["val_loss"] for a, b in zip(rows[1:], rows[2:]))  # more tokens, lower loss
    assert main(["study", "report", str(tmp_path / "s"), "--bootstrap", "50"]) == 0


def test_an_under_tuned_sweep_is_extended_until_bracketed(tmp_path):
    rc, rounds = _run(tmp_path, {**CROSSING_ONE_SIZE_ON, "lr_opt": 0.12}, "1e-6")
    assert rc == 0
    first = [r for r in rounds if r.get("runs")][0]
    assert all(r["method"] == "dfa_block" and r["lr"] == pytest.approx(3.75e-2 * 2.5) for r in first["runs"])
    assert "bracket" in first["why"]
    choices = choose_rates(observe(tmp_path / "s").trials)
    assert [e for e in lr_edges(choices) if e["size"] in SPEC["sizes"]] == []
    for size in SPEC["sizes"]:  # the truth's 0.12 lies between the tried 0.0938 and 0.234
        assert choices[("dfa_block", size, "")]["best"] == pytest.approx(0.09375)


def test_a_crossing_one_size_beyond_the_grid_is_decided_by_adding_that_size(tmp_path):
    rc, rounds = _run(tmp_path, CROSSING_ONE_SIZE_ON, "1e-6")
    assert rc == 0
    assert rounds[0]["letters"]["dfa_block"]["scenario"] is None
    assert rounds[0]["letters"]["dfa_block"]["possible"] == ["B", "D"]
    assert rounds[0]["chosen"] == ["dfa_block and bp at L5d16 (one size up)"]
    assert {(r["method"], r["size"]) for r in rounds[0]["runs"]} == {("dfa_block", "L5d16"), ("bp", "L5d16")}
    assert rounds[-1]["stop"] == "decided" and rounds[-1]["letters"]["dfa_block"]["scenario"] == "B"
    assert len(rounds) == 2
    report = (tmp_path / "s" / "report" / "verdict.md").read_text()
    assert "How this study chose its runs" in report and (tmp_path / "s" / "report" / "decisions.png").exists()
    assert "L5d16" in {r.size for r in load_study(tmp_path / "s").runs}


def test_a_budget_too_small_names_the_run_that_would_decide(tmp_path, capsys):
    rc, rounds = _run(tmp_path, CROSSING_ONE_SIZE_ON, "1.2e-8")  # the grid spends 1.1e-8
    assert rc == 0
    assert [r.get("stop") for r in rounds] == ["budget"]
    line = rounds[-1]["why"]
    assert line.startswith("stopped: no candidate run within the budget")
    # the expected refit puts the new points on the current laws: one more size is needed there
    assert "dfa_block and bp at L5d16 (one size up), then L6d16 would decide it (expected B), cost 5.8" in line
    assert "\n" not in line and line in capsys.readouterr().err


def test_decided_letters_with_a_rate_at_an_edge_stop_saying_what_would_bracket_it(tmp_path):
    """An alternative clearly better (A) whose best rate lies above its sweep: the letter is decided
    on the grid, but the study is not done until the rate is bracketed; with a budget too small for
    that, the stop line says so and what bracketing would cost."""
    rc, rounds = _run(tmp_path, {**BP, "A": 16.0, "a": 0.32, "lr_opt": 0.12}, "1.105e-8")  # the grid: 1.102e-8
    assert rc == 0 and [r.get("stop") for r in rounds] == ["budget"]
    assert rounds[0]["letters"]["dfa_block"]["scenario"] == "A" and rounds[0]["letters"]["dfa_block"]["decided"]
    line = rounds[0]["why"]
    assert line.startswith("stopped: no candidate run within the budget") and "brackets the best rates: every " \
        "letter is decided (dfa_block A (A in 100% of the bootstrap)), but best rates sit at an edge of their " \
        "sweeps: dfa_block L1d16 at lr 0.09375 (best 0.0375 is the sweep's highest)" in line
    assert re.search(r"would bracket them, cost [0-9.e-]+ PF-days$", line), line


def test_a_letter_no_size_decides_says_what_four_sizes_up_would_leave(tmp_path):
    """An alternative on BP's own law (never better, never worse): no run decides it, and the stop
    line says what four more sizes, each on the current laws, would leave the letter at and cost."""
    rc, rounds = _run(tmp_path, {**BP, "lr_opt": 1.5e-2}, "1e-6")
    assert rc == 0 and rounds[-1]["stop"] == "no-candidate"
    line = rounds[-1]["why"]
    assert "dfa_block undetermined" in line
    found = re.search(r"; no run decides it: 4 sizes up \(dfa_block and bp at L(\d+)d16 \(one size up\), then "
                      r"L(\d+)d16, then L(\d+)d16, then L(\d+)d16\), each on the current laws, would leave it "
                      r"undetermined \([A-D or]+\)( \([A-D] in \d+% of the bootstrap\))?, "
                      r"cost ([0-9.e-]+) PF-days$", line)
    assert found, line
    largest = max(int(r["size"][1:-3]) for r in observe(tmp_path / "s").runs)
    assert [int(found.group(i)) for i in range(1, 5)] == [largest + 1, largest + 2, largest + 3, largest + 4]


@pytest.mark.parametrize("kill_at", [("execute", 2), pytest.param(("execute", 3), marks=pytest.mark.slow),
                                     pytest.param(("observe", 2), marks=pytest.mark.slow)])
def test_a_killed_round_replans_to_the_same_choice(tmp_path, kill_at):
    """A kill while a round's runs train (one run left unfinished), or before its line is written,
    then the same command: the same decision log and the same runs as an uninterrupted study."""
    alt = {**CROSSING_ONE_SIZE_ON, "lr_opt": 0.12}
    _run(tmp_path, alt, "1e-6", out="whole")
    spec, truth = _write(tmp_path, alt)
    base = plan_study(load_spec(spec))
    laws = load_truth(truth)
    calls = {"execute": 0, "observe": 0}

    def execute(plan):
        calls["execute"] += 1
        if kill_at == ("execute", calls["execute"]):
            run_simulated(StudyPlan(plan.spec, plan.runs[:-1]), tmp_path / "cut", laws)
            raise KeyboardInterrupt
        return run_simulated(plan, tmp_path / "cut", laws)

    def look(study_dir):
        calls["observe"] += 1
        if kill_at == ("observe", calls["observe"]):
            raise KeyboardInterrupt
        return observe(study_dir)

    planner = Planner(base, tmp_path / "cut", execute, look, Budget(1e-6, "pf_days"), 300)
    with pytest.raises(KeyboardInterrupt):
        planner.run()
    _run(tmp_path, alt, "1e-6", out="cut")
    assert _unclocked(read_decisions(tmp_path / "cut")) == _unclocked(read_decisions(tmp_path / "whole"))
    assert sorted(p.name for p in (tmp_path / "cut" / "runs").iterdir()) == \
        sorted(p.name for p in (tmp_path / "whole" / "runs").iterdir())


def _unclocked(rounds: list[dict]) -> list[dict]:
    """The decision log without the wall time each line records (it differs between two runs)."""
    return [{**r, "spent": {k: v for k, v in r["spent"].items() if k != "wall"}} for r in rounds]


def test_a_wall_time_budget_counts_the_study_s_clock_across_resumes(tmp_path):
    """`--budget 150s` is the study's wall time: every command's time from its start to each round's
    line, the logged time carried over when the study is run again (here each execution takes 100 s
    of a fake clock)."""
    spec, truth = _write(tmp_path, {**CROSSING_ONE_SIZE_ON, "lr_opt": 0.12})
    base, laws, now = plan_study(load_spec(spec)), load_truth(truth), [0.0]

    def execute(plan):
        now[0] += 100.0
        return run_simulated(plan, tmp_path / "s", laws)

    def planner(budget):
        return Planner(base, tmp_path / "s", execute, observe, parse_budget(budget), 300, say=lambda line: None,
                       clock=lambda: now[0])

    last = planner("150s").run()
    rounds = read_decisions(tmp_path / "s")
    assert [r["spent"]["wall"] for r in rounds] == [100.0, 200.0] and rounds[0].get("chosen")
    assert last["stop"] == "budget" and last["why"].startswith("stopped: budget spent (3.3 min of 2.5 min)")
    now[0] = 5000.0  # another command, later: only the time it spends is added to the logged 200 s
    last = planner("350s").run()
    rounds = read_decisions(tmp_path / "s")
    assert [r["spent"]["wall"] for r in rounds] == [100.0, 200.0, 300.0, 400.0]
    assert last["stop"] == "budget" and last["why"].startswith("stopped: budget spent (6.7 min of 5.8 min)")


@pytest.mark.parametrize("entry, named", [
    ({"new_sizes": {"../../../evil": {"n_layer": 1, "d_model": 16, "n_head": 1}},
      "runs": [{"method": "bp", "size": "../../../evil", "lr": 0.01, "seed": 0, "budget": ""}]}, "new_sizes"),
    ({"runs": [{"method": "bp", "size": "L1d16", "lr": 0.01, "seed": 0, "budget": "../x"}]}, "an added run's budget"),
    ({"new_budgets": {"tpp81": [80.0, True]},
      "runs": [{"method": "bp", "size": "L1d16", "lr": 0.01, "seed": 0, "budget": "tpp81"}]},
     "new_budgets: 'tpp81' is not the label of [80.0, True] (expected 'tpp80')"),
])
def test_a_received_decision_log_cannot_name_folders_outside_the_study(tmp_path, capsys, entry, named):
    """The log's names become run folders' names: a label that is not safe (or a budget label that
    is not its value's) is one line naming the file, and nothing is written outside the study."""
    rc, _ = _run(tmp_path, CROSSING_ONE_SIZE_ON, "1e-6")
    log = tmp_path / "s" / "decisions.jsonl"
    log.write_text(json.dumps({"round": 1, "spent": {"pf_days": 0, "seconds": 0}, **entry}) + "\n")
    capsys.readouterr()
    assert main(["study", "status", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert str(log) in err and named in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s", "spec.yaml", "truth.yaml"]


def test_budget_and_truth_errors_are_one_line(tmp_path, capsys):
    assert parse_budget("30min") == Budget(1800.0, "wall") and parse_budget("2e-7") == Budget(2e-7, "pf_days")
    assert parse_budget("30min-train") == Budget(1800.0, "seconds") and parse_budget("2h") == Budget(7200.0, "wall")
    for bad in ("-1", "soon", "5 parsecs", "2e-7-train", "-train"):
        with pytest.raises(ConfigError, match="--budget"):
            parse_budget(bad)
    spec, truth = _write(tmp_path, {**BP, "a": -0.3})
    assert main(["study", "run", str(spec), "--out", str(tmp_path / "s"), "--executor", "simulated",
                 "--truth", str(truth)]) == 2
    assert "dfa_block.a: must be > 0, got -0.3" in capsys.readouterr().err
    truth.write_text(json.dumps({"bp": BP}))
    assert main(["study", "run", str(spec), "--out", str(tmp_path / "s"), "--executor", "simulated",
                 "--truth", str(truth)]) == 2
    assert "no law for method 'dfa_block'" in capsys.readouterr().err
    assert main(["study", "run", str(spec), "--out", str(tmp_path / "s"), "--until-decided"]) == 2
    assert "--budget: --until-decided needs a budget" in capsys.readouterr().err


def test_the_round_cap_stops_with_the_run_that_would_decide(tmp_path, capsys):
    spec, truth = _write(tmp_path, {**CROSSING_ONE_SIZE_ON, "lr_opt": 0.12})
    args = ["study", "run", str(spec), "--out", str(tmp_path / "s"), "--executor", "simulated", "--truth", str(truth),
            "--until-decided", "--budget", "1e-6", "--bootstrap", "300"]
    assert main([*args, "--max-rounds", "1"]) == 0
    rounds = read_decisions(tmp_path / "s")
    assert [r.get("stop") for r in rounds] == [None, "rounds"] and "bracket" in rounds[0]["why"]
    line = rounds[-1]["why"]
    assert line.startswith("stopped: the round cap is reached (--max-rounds 1; 1.29e-08 PF-days of 1e-06")
    assert line.endswith("dfa_block and bp at L5d16 (one size up) would decide it (expected B), cost 2.48e-09 PF-days")
    assert "\n" not in line and line in capsys.readouterr().err
    assert main([*args, "--max-rounds", "0"]) == 2
    assert "--max-rounds: expected a positive number of rounds with --until-decided, got 0" in capsys.readouterr().err


def test_a_single_rate_size_takes_the_rate_its_neighbour_brackets(tmp_path):
    """The benchmark's small design: only the middle size swept; the others start at its middle
    rate and move to the rate the middle size's extended sweep brackets."""
    spec = {**SPEC, "lrs": {m: {"L1d16": [r[1]], "L2d16": r, "L3d16": [r[1]], "L4d16": [r[1]]}
                            for m, r in SPEC["lrs"].items()}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    truth = {"bp": BP, "dfa_block": {**CROSSING_ONE_SIZE_ON, "lr_opt": 0.12}}
    (tmp_path / "truth.yaml").write_text(yaml.safe_dump(truth))
    assert main(["study", "run", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "s"), "--executor", "simulated",
                 "--truth", str(tmp_path / "truth.yaml"), "--until-decided", "--budget", "1e-6",
                 "--bootstrap", "300"]) == 0
    rounds = read_decisions(tmp_path / "s")
    added_runs = [(r["method"], r["size"], r["lr"]) for x in rounds for r in x.get("runs") or []]
    assert added_runs[:3] == [("dfa_block", "L2d16", 0.09375), ("dfa_block", "L2d16", 0.234375),
                              ("dfa_block", "L1d16", 0.09375)]
    assert {a for a in added_runs if a[1] in ("L3d16", "L4d16")} == {("dfa_block", "L3d16", 0.09375),
                                                                    ("dfa_block", "L4d16", 0.09375)}
    assert not any(m == "bp" and lr != 1e-2 for m, _, lr in added_runs)  # BP's sweep brackets at 1e-2
    assert rounds[-1]["stop"] == "decided"


def test_a_branched_study_is_refused_in_one_line(tmp_path, capsys):
    spec, truth = _write(tmp_path, CROSSING_ONE_SIZE_ON)
    spec.write_text(yaml.safe_dump({**SPEC, "tokens_per_param": [20, 40], "budgets": "branched"}))
    assert main(["study", "run", str(spec), "--out", str(tmp_path / "s"), "--executor", "simulated", "--truth",
                 str(truth), "--until-decided", "--budget", "1e-6"]) == 2
    assert "--until-decided: the planner adds runs to studies whose budgets train on their own; this spec " \
           "branches them from one trunk (set budgets: independent)" in capsys.readouterr().err
    assert not (tmp_path / "s" / "runs").exists()


def test_an_unbracketed_optimal_budget_gets_a_budget_beyond_the_runs(tmp_path):
    """Budgets of 10-40 tokens per parameter where the true optimum lies near 60 (B/A = 3.4, a = b):
    the first round adds 80 tokens per parameter at the sizes next to the optimal N, for both methods,
    and afterwards each method's fitted optimum lies inside the budgets its runs trained."""
    lrs = {m: {s: ([r / 2.5, r, r * 2.5] if s == "L2d16" else [r]) for s in SPEC["sizes"]}
           for m, r in (("bp", 1e-2), ("dfa_block", 1.5e-2))}
    spec, truth = tmp_path / "spec.yaml", tmp_path / "truth.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "tokens_per_param": [10, 20, 40], "budgets": "independent", "lrs": lrs}))
    truth.write_text(yaml.safe_dump({"bp": {**BP, "B": 68.0}, "dfa_block": {**CROSSING_ONE_SIZE_ON, "B": 68.0}}))
    assert main(["study", "run", str(spec), "--out", str(tmp_path / "s"), "--executor", "simulated", "--truth",
                 str(truth), "--until-decided", "--budget", "1e-6", "--bootstrap", "300"]) == 0
    rounds = read_decisions(tmp_path / "s")
    first = rounds[0]
    assert first["new_budgets"] == {"tpp80": [80.0, True]} and "bracket the optimal budgets first" in first["why"]
    assert {(r["method"], r["budget"]) for r in first["runs"]} == {("bp", "tpp80"), ("dfa_block", "tpp80")}
    assert {r["size"] for r in first["runs"]} <= {"L2d16", "L3d16"}
    assert all(c["kind"] != "budget" for r in rounds[1:] for c in r.get("candidates", []))
    plan = load_study(tmp_path / "s")
    obs = observe(tmp_path / "s")
    proposer = Proposer(plan, obs, {}, added_budgets(rounds))
    for method, fit in lnd_fits(proposer, ["bp", "dfa_block"]).items():
        computes = [r["compute"] * 8.64e19 for r in obs.rows if r["method"] == method]
        assert unbracketed_optima(fit, [min(computes), max(computes)], method_k(proposer, method)) == []
    runs_md = (tmp_path / "s" / "report" / "runs.md").read_text()
    assert "bp_L2d16_tpp80_lr0.01_s0" in runs_md or "bp_L3d16_tpp80_lr0.01_s0" in runs_md

    # on the grid alone: every candidate at a budget the study lacks carries it, however often asked
    grid = plan_study(load_spec(spec))
    run_simulated(grid, tmp_path / "g", load_truth(truth))
    proposer = Proposer(grid, observe(tmp_path / "g"), {}, {})
    for _ in range(2):
        found = proposer.budget_brackets(["dfa_block", "bp"])
        assert len(found) == 2 and all(c.new_budgets == {"tpp80": [80.0, True]} for c in found)


@pytest.mark.slow
def test_the_local_executor_trains_the_runs_the_planner_adds(tmp_path):
    """Real training, not the simulated executor: the runs a round adds (here at a budget beyond
    the spec's) are trained by the local workers and read back by `study status`."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "real", "methods": ["bp", "dfa_block"],
        "sizes": {f"L1d{d}": {"n_layer": 1, "d_model": d, "n_head": 1} for d in (8, 12, 16)},
        "tokens_per_param": [2, 4, 8], "budgets": "independent", "lrs": {"bp": [1e-2], "dfa_block": [1e-2]},
        "seeds": [0], "base": {"data": {"corpus": "shakespeare", "tokenizer": "byte"}, "model": {"context": 16},
                               "train": {"batch_tokens": 256, "n_evals": 2, "eval_tokens": 512,
                                         "checkpoint_every_s": 0}}}))
    out = tmp_path / "s"
    assert main(["study", "run", str(spec), "--out", str(out), "--until-decided", "--budget", "10min",
                 "--max-rounds", "1", "--workers", "2", "--bootstrap", "100"]) == 0
    rounds = read_decisions(out)
    added = [r for r in rounds[0]["runs"]]
    assert added and rounds[-1]["stop"] == "rounds"
    assert rounds[0]["new_budgets"] and {r["budget"] for r in added} - {"tpp2", "tpp4", "tpp8"}
    plan = {r.name: r for r in load_study(out).runs}
    assert len(plan) == 18 + len({(r["method"], r["size"], r["lr"], r["seed"], r["budget"]) for r in added})
    for run in plan.values():
        summary = read_summary(out / "runs" / run.name)
        assert summary["status"] == "completed" and summary["tokens"] == run.tokens
