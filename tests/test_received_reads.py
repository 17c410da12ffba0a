"""Received folders are data, never code: bounded, checked reads (issue 27: reads, YAML, records, fit inputs)."""
from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import pytest

from beyondbp.cli.main import main
from beyondbp.config import ConfigError, build_config, dump_yaml
from helpers import planned_study


def cli(capsys, *args) -> tuple[int, list[str]]:
    code = main([str(a) for a in args])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# --- reads: bounded, checked reads of what a folder or file holds -------------------------------------
READS_SPEC = {"name": "reads", "methods": ["bp"], "sizes": {"s1": {"n_layer": 1, "d_model": 8, "n_head": 2}},
              "tokens": [20480, 40960], "seeds": [0], "base": {"model": {"context": 32}}}


def reads_study(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A study folder whose two runs finished (metrics rows and summaries as beyondbp writes them)."""
    plan, study = planned_study(tmp_path, READS_SPEC)
    dirs = []
    for k, run in enumerate(plan.runs):
        run_dir = study / "runs" / run.name
        run_dir.mkdir(parents=True)
        rows = [{"step": s, "tokens": s * 1024, "compute_pf_days": s * 1e-12, "val_loss": 4.0 - s / 10 - k / 5}
                for s in range(0, 6)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run_dir / "summary.json").write_text(json.dumps({"status": "completed", "final_val_loss": rows[-1]["val_loss"],
                                                          "elapsed_s": 1.0}))
        dirs.append(run_dir)
    return study, dirs


def study_args(command: str, study: Path) -> list:
    return ["study", command, study, *(["--bootstrap", "0"] if command == "report" else [])]


def refused_fast(capsys, *args, names=(), seconds: float = 5.0) -> str:
    """Run the CLI: exit 2, exactly one error line naming every `names`, within `seconds`."""
    start = time.monotonic()
    code, err = cli(capsys, *args)
    assert time.monotonic() - start < seconds
    assert code == 2 and len(err) == 1 and "error:" in err[0], err
    for name in names:
        assert name in err[0], err
    return err[0]


def test_reads_a_healthy_study_reports(tmp_path, capsys):
    study, _ = reads_study(tmp_path)
    code, err = cli(capsys, *study_args("report", study))
    assert code == 0 and not [e for e in err if "Warning" in e], err


@pytest.mark.parametrize("name", ["summary.json", "metrics.jsonl", "spec.yaml"])
@pytest.mark.parametrize("special", ["fifo", "link-to-dev-zero"])
def test_reads_special_files_in_a_study_stop_at_once(tmp_path, capsys, name, special):
    study, dirs = reads_study(tmp_path)
    path = study / name if name == "spec.yaml" else dirs[0] / name
    path.unlink()
    os.mkfifo(path) if special == "fifo" else path.symlink_to("/dev/zero")
    command = "status" if name == "summary.json" else "report"
    line = refused_fast(capsys, *study_args(command, study), names=[str(path)])
    assert ("link" if special != "fifo" else "not a regular file") in line


def test_reads_a_huge_sparse_summary_or_metrics_is_refused_by_its_size(tmp_path, capsys):
    study, dirs = reads_study(tmp_path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name, command in (("metrics.jsonl", "report"), ("summary.json", "status")):
        os.truncate(dirs[1] / name, 1 << 30)  # 1 GiB: its rows, then a hole of zeros
        line = refused_fast(capsys, *study_args(command, study), names=[str(dirs[1] / name)])
        assert "1024.0 MiB, more than the" in line
        os.truncate(dirs[1] / name, 0)
        (dirs[1] / name).unlink()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200 * 1024  # KiB


def test_reads_a_metrics_file_of_endless_tiny_rows_stops_at_its_row_limit(tmp_path, capsys):
    study, dirs = reads_study(tmp_path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    path = dirs[0] / "metrics.jsonl"
    path.write_text('{"step": 1}\n' * 150_000)  # 1.8 MB, far below the size limit
    refused_fast(capsys, *study_args("report", study), names=[f"{path}:100001", "more than 100,000 rows"])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200 * 1024  # KiB


def test_reads_a_metrics_line_too_long_is_named_and_a_cut_last_line_still_ends_the_rows(tmp_path, capsys):
    from beyondbp.runs.folder import read_metrics
    study, dirs = reads_study(tmp_path)
    path = dirs[0] / "metrics.jsonl"
    text = path.read_text()
    path.write_text(text + '{"step": 6, "val_lo')  # a kill cut the last row
    assert [r["step"] for r in read_metrics(path)] == [0, 1, 2, 3, 4, 5]
    path.write_text(text + "x" * (2 << 20) + "\n")
    refused_fast(capsys, *study_args("report", study), names=[f"{path}:7", "longer than 1.0 MiB"])


@pytest.mark.parametrize("row, key", [
    ({"tokens": 5}, "'step'"), ([1, 2], "must be a JSON object"), ({"step": "3"}, "'step'"),
    ({"step": True}, "'step'"), ({"step": 6, "val_loss": "abc"}, "'val_loss'"),
    ({"step": 6, "compute_pf_days": [1]}, "'compute_pf_days'"), ({"step": 6, "alignment": {"b0": "x"}}, "'alignment'"),
])
def test_reads_metrics_rows_are_checked_naming_file_line_and_key(tmp_path, capsys, row, key):
    study, dirs = reads_study(tmp_path)
    path = dirs[0] / "metrics.jsonl"
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    before = path.read_bytes()
    refused_fast(capsys, *study_args("report", study), names=[f"{path}:7", key])
    assert path.read_bytes() == before


@pytest.mark.parametrize("value", ['"abc"', "[3.0]", "-5", "0", "NaN", "Infinity", "true"])
def test_reads_a_summary_final_loss_must_be_a_finite_number_above_zero(tmp_path, capsys, value):
    study, dirs = reads_study(tmp_path)
    (dirs[1] / "summary.json").write_text('{"status": "completed", "final_val_loss": ' + value + "}")
    for command in ("status", "report"):
        refused_fast(capsys, *study_args(command, study),
                     names=[str(dirs[1] / "summary.json"), "'final_val_loss'"])


def test_reads_a_summary_status_or_error_of_the_wrong_kind_is_named(tmp_path, capsys):
    study, dirs = reads_study(tmp_path)
    for summary, key in (({"status": "won"}, "'status'"), ({"status": "failed", "error": ["x"]}, "'error'")):
        (dirs[1] / "summary.json").write_text(json.dumps(summary))
        refused_fast(capsys, *study_args("status", study), names=[str(dirs[1] / "summary.json"), key])


def _laughs(indent: str = "") -> str:
    """A "billion laughs": nine levels of nine aliases, 9^9 strings once expanded."""
    rows = [f'{indent}- &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    rows += [f"{indent}- &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join(rows)


def test_reads_billion_laughs_in_a_received_spec_is_one_line_at_once(tmp_path, capsys):
    study, _ = reads_study(tmp_path)
    spec = study / "spec.yaml"
    spec.write_text(spec.read_text() + "description:\n" + _laughs("  ") + "\n")
    for command in ("report", "status"):
        refused_fast(capsys, *study_args(command, study), names=[f"{spec}:", "anchors and aliases"])


def test_reads_billion_laughs_in_a_command_line_value_is_one_line_at_once(tmp_path, capsys):
    value = "[" + _laughs().replace("\n", ",").replace("- ", "") + "]"
    refused_fast(capsys, "study", "plan", "--preset", "smoke", f"description={value}",
                 names=["description:", "anchors and aliases"])
    refused_fast(capsys, "train", "--out", tmp_path / "R", f"data.corpus={value}", names=["data.corpus:"])
    assert not (tmp_path / "R").exists()


def test_reads_yaml_numbers_are_never_octal_or_base_60(tmp_path, capsys):
    assert build_config(overrides=["seed=010"]).seed == 10  # decimal, as YAML 1.2 reads it; never 8
    (tmp_path / "c.yaml").write_text("seed: 010\ntrain:\n  lr: 0.01\n")
    assert build_config(tmp_path / "c.yaml").seed == 10
    refused_fast(capsys, "train", "--out", tmp_path / "R", "train.tokens=5:33:20",
                 names=["train.tokens", "'5:33:20'"])  # never 20000
    (tmp_path / "t.yaml").write_text("train:\n  tokens: 5:33:20\n")
    refused_fast(capsys, "train", "--out", tmp_path / "R", "--config", tmp_path / "t.yaml", names=["train.tokens"])
    assert not (tmp_path / "R").exists()


def test_reads_a_key_given_twice_in_a_config_file_is_named(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("seed: 1\ntrain:\n  lr: 0.01\n  tokens: 20480\n  lr: 0.02\n")
    refused_fast(capsys, "train", "--out", tmp_path / "R", "--config", tmp_path / "c.yaml",
                 names=[f"{tmp_path / 'c.yaml'}:5", "'lr' is given twice (first on line 3)"])
    with pytest.raises(ConfigError, match="seed: key 'a' is given twice"):
        build_config(overrides=["seed={a: 1, a: 2}"])
    assert not (tmp_path / "R").exists()


# --- reads: what `beyondbp fit` takes ---------------------------------------------------------------
POINTS = "method,compute_pf_days,loss\n" + "".join(f"bp,{c:g},{3.0 * c ** -0.05:.5f}\n"
                                                   for c in (1e-9, 3e-9, 1e-8, 3e-8, 1e-7, 3e-7))


def fit_lines(capsys, path, *args) -> tuple[int, str, list[str]]:
    start = time.monotonic()
    code = main(["fit", str(path), "--bootstrap", "0", *args])
    assert time.monotonic() - start < 5
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


@pytest.mark.parametrize("special", ["/dev/zero", "fifo", "link", "folder"])
def test_reads_fit_refuses_anything_but_a_regular_file_at_once(tmp_path, capsys, special):
    (tmp_path / "good.csv").write_text(POINTS)
    path = {"/dev/zero": Path("/dev/zero"), "fifo": tmp_path / "p.csv", "link": tmp_path / "l.csv",
            "folder": tmp_path}[special]
    if special == "fifo":
        os.mkfifo(path)
    elif special == "link":
        path.symlink_to(tmp_path / "good.csv")
    code, out, err = fit_lines(capsys, path)
    assert code == 2 and out == "" and len(err) == 1 and str(path) in err[0], err


def test_reads_fit_strips_a_byte_order_mark_and_refuses_a_column_given_twice(tmp_path, capsys):
    path = tmp_path / "points.csv"
    path.write_bytes(b"\xef\xbb\xbf" + POINTS.encode())
    code, out, err = fit_lines(capsys, path)
    assert code == 0 and json.loads(out)["fits"]["bp"]["alpha_C"] == pytest.approx(-0.05, abs=1e-3), err
    path.write_text(POINTS.replace("loss\n", "loss,loss\n", 1).replace("\n", ",9\n").replace("loss,9", "loss"))
    code, out, err = fit_lines(capsys, path)
    assert code == 2 and len(err) == 1 and f"{path}:1: column 'loss' is given twice" in err[0], err
    runs = tmp_path / "runs.csv"
    runs.write_text("method,n_params,tokens,loss,tokens\nbp,1e4,2e5,2.0,3e5\n")
    code, out, err = fit_lines(capsys, runs)
    assert code == 2 and len(err) == 1 and f"{runs}:1: column 'tokens' is given twice" in err[0], err


@pytest.mark.parametrize("kind, row, column", [
    ("points", "bp,1e-300,3.0", "compute_pf_days"), ("points", "bp,1e200,3.0", "compute_pf_days"),
    ("points", "bp,1e-3,1e-300", "loss"), ("points", "bp,1e-3,250", "loss"),
    ("runs", "bp,1e300,2e5,2.0", "n_params"), ("runs", "bp,1e4,1e30,2.0", "tokens"), ("runs", "bp,1e4,2e5,1e-300", "loss"),
])
def test_reads_fit_refuses_implausible_numbers_naming_file_row_and_column(tmp_path, capsys, kind, row, column):
    path = tmp_path / f"{kind}.csv"
    head = POINTS if kind == "points" else "method,n_params,tokens,loss\n" + "bp,1e4,2e5,2.0\n" * 6
    path.write_text(head + row + "\n")
    code, out, err = fit_lines(capsys, path)
    assert code == 2 and out == "" and len(err) == 1, err
    assert f"{path}:{head.count(chr(10)) + 1}: column '{column}' must be" in err[0] and "plausible" in err[0], err


def test_reads_fit_says_a_skipped_row_in_one_line_and_no_numpy_warnings(tmp_path, capsys):
    path = tmp_path / "points.csv"
    path.write_text(POINTS + "bp,nan,3.0\n")
    code, out, err = fit_lines(capsys, path)
    assert code == 0 and json.loads(out)["fits"]["bp"]["n_points"] == 6
    assert err == [f"beyondbp fit: warning: {path}: skipped 1 rows with NaN, infinite or non-positive compute/loss"]


# --- reads: the environment torchrun sets ------------------------------------------------------------
@pytest.mark.parametrize("env, name", [({"WORLD_SIZE": "abc"}, "WORLD_SIZE"), ({"WORLD_SIZE": "2"}, "RANK"),
                                       ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK"),
                                       ({"LOCAL_WORLD_SIZE": "x"}, "LOCAL_WORLD_SIZE")])
def test_reads_a_bad_distributed_environment_is_named(tmp_path, capsys, monkeypatch, env, name):
    from conftest import TINY
    monkeypatch.delenv("RANK", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    refused_fast(capsys, "train", "--out", tmp_path / "R", *TINY, names=[f"{name}:"], seconds=60)
    assert not (tmp_path / "R").exists()


def test_reads_a_checkpoint_that_is_a_fifo_or_link_is_refused_not_waited_on(tmp_path, capsys):
    from conftest import TINY
    out = tmp_path / "R"
    out.mkdir()
    os.mkfifo(out / "checkpoint.pt")
    refused_fast(capsys, "train", "--out", out, *TINY, names=[str(out / "checkpoint.pt"), "not a regular file"],
                 seconds=60)
    (out / "checkpoint.pt").unlink()
    (out / "config.yaml").write_text(dump_yaml(build_config(overrides=TINY)))
    (out / "checkpoint.pt").symlink_to("/dev/zero")
    refused_fast(capsys, "sample", "--run", out, names=[str(out / "checkpoint.pt"), "link"], seconds=60)
