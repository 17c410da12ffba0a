"""Studies with branched budgets: the plan counts the saved compute, the local and Slurm executors
train one chain per job, and every branch ends exactly where its standalone run ends."""
from __future__ import annotations

import copy
import json

import pytest
import yaml

from beyondbp.cli.main import main
from beyondbp.config import ConfigError
from beyondbp.study.chain import plan_totals
from beyondbp.study.local_executor import run_study
from beyondbp.study.plan import plan_study
from beyondbp.study.spec import load_spec, normalise_spec
from beyondbp.train.loop import train
from beyondbp.runs.folder import read_summary

SPEC = {
    "name": "branched",
    "methods": ["bp", "dfa_block"],
    "sizes": {"a": {"n_layer": 2, "d_model": 8, "n_head": 2}},
    "tokens": [5120, 10240],  # 10 and 20 steps: branch points 8 and 16
    "budgets": "branched",
    "lrs": {"bp": [1e-2], "dfa_block": [1e-2]},
    "seeds": [0],
    "base": {"model": {"context": 32},
             "train": {"batch_tokens": 512, "n_evals": 4, "eval_tokens": 1024, "checkpoint_every_s": 0,
                       "threads": 1, "device": "cpu", "progress": "off"}},
}


def _spec(**changes):
    spec = copy.deepcopy(SPEC)
    spec.update(changes)
    return normalise_spec(spec)


def test_plan_counts_the_saved_compute():
    """Budgets 20/40/80/160 (x 1,024-token steps) with a 20% cooldown: 188 units of training, not 300."""
    spec = _spec(tokens=[20 * 1024, 40 * 1024, 80 * 1024, 160 * 1024],
                 base={**SPEC["base"], "train": {**SPEC["base"]["train"], "batch_tokens": 1024}})
    plan = plan_study(spec)
    assert len(plan.runs) == 8 and len(plan.chains) == 2
    chain = plan.chains[0]
    assert chain.steps == [16, 32, 64, 128] and chain.trunk.train.tokens == 128 * 1024
    assert chain.tokens == 188 * 1024 and chain.standalone_tokens == 300 * 1024
    totals = plan_totals(plan, plan.chains)
    assert totals["cost"] / totals["standalone_cost"] == pytest.approx(188 / 300)
    assert sum(r.cost for r in plan.runs) == pytest.approx(totals["cost"])
    # each run is its budget's standalone constant_cooldown run with the chain's warm-up (5% of 20 steps)
    assert all(r.cfg.train.schedule == "constant_cooldown" and r.cfg.train.warmup_tokens == 1024 for r in plan.runs)
    independent = plan_study(_spec(tokens=spec.tokens, budgets="independent", base=spec.base))
    assert not independent.chains and all(r.cfg.train.schedule == "cosine" for r in independent.runs)
    assert plan_totals(independent, [])["cost"] == pytest.approx(totals["standalone_cost"])


@pytest.mark.parametrize("changes,match", [
    ({"budgets": "forked"}, "budgets"),
    ({"base": {"train": {"warmup_tokens": 8192, "batch_tokens": 512}, "model": {"context": 32}}},
     "train.warmup_tokens"),
])
def test_bad_branching_is_refused_in_one_line(changes, match):
    with pytest.raises(ConfigError, match=match):
        plan_study(_spec(**changes))


def test_mlp_track_cannot_branch():
    with pytest.raises(ConfigError, match="budgets"):
        normalise_spec({"track": "mlp", "methods": ["bp"], "sizes": {"s": {"depth": 2, "width": 8}},
                        "budgets": "branched"})


def test_study_plan_shows_chains_and_both_costs(tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    assert main(["study", "plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 chains" in out and "bp_a_lr0.01_s0" in out and "branches at 4,096, 8,192" in out
    # per chain a 16-step trunk and cooldowns of 2 and 4 steps: 22 steps of 512 tokens instead of 10 + 20
    assert "22,528 tokens; as independent runs" in out and "30,720 tokens (branching trains 0.73x)" in out


def _assert_branches_equal_standalone(plan, study, tmp_path):
    for run in plan.runs:
        summary = read_summary(study / "runs" / run.name)
        alone = train(copy.deepcopy(run.cfg), tmp_path / "alone" / run.name, quiet=True)
        assert summary["status"] == "completed" and summary["tokens"] == run.tokens
        assert summary["final_val_loss"] == alone["final_val_loss"]


@pytest.mark.slow
def test_local_executor_trains_one_chain_per_job(tmp_path):
    plan = plan_study(normalise_spec(copy.deepcopy(SPEC)))
    study = tmp_path / "study"
    counts = run_study(plan, study, workers=2, quiet=True)
    assert counts == {"completed": 4}
    for chain in plan.chains:
        trunk = chain.trunk_dir(study)
        assert read_summary(trunk)["tokens"] == 16 * 512 and (trunk / "branch-8.pt").exists()
    _assert_branches_equal_standalone(plan, study, tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in study.rglob("checkpoint.pt")}
    assert run_study(plan, study, workers=2, quiet=True) == {"completed": 4}  # nothing trained again
    assert {p: p.stat().st_mtime_ns for p in study.rglob("checkpoint.pt")} == mtimes
    # the report reads branches as ordinary runs: every one kept, none left out
    assert main(["study", "report", str(study), "--bootstrap", "0"]) == 0
    results = json.loads((study / "report" / "results.json").read_text())
    assert results["best_runs"] == sorted(r.name for r in plan.runs) and results["excluded"] == {}


@pytest.mark.slow
def test_slurm_executor_submits_one_job_per_chain(tmp_path):
    pytest.importorskip("submitit")
    from beyondbp.study.slurm import plan_for_slurm, run_status, submit_study, wait_for
    from beyondbp.study.slurm_settings import resolve_settings
    spec = normalise_spec({**copy.deepcopy(SPEC), "methods": ["bp"], "slurm": {"cluster": "local", "timeout_min": 10}})
    settings = resolve_settings(spec.slurm, {})
    plan = plan_for_slurm(spec, settings)
    study = tmp_path / "study"
    jobs = submit_study(plan, study, settings, quiet=True)
    assert set(jobs) == {r.name for r in plan.runs} and len({j.job_id for j in jobs.values()}) == 1
    wait_for(jobs, study, poll_s=0.2)
    assert all(run_status(study / "runs" / r.name)[0] == "completed" for r in plan.runs)
    _assert_branches_equal_standalone(plan, study, tmp_path)
    assert submit_study(plan, study, settings, quiet=True) == {}  # nothing left to submit
