"""`beyondbp fit RUNS.csv`: the L(N, D) fit of anyone's runs as strict JSON, and its bad inputs."""
import subprocess
import sys

import numpy as np
import pytest

from beyondbp.cli.main import main
from beyondbp.fit.lnd import budget_grid, simulate_losses
from helpers import strict_loads

BP = (1.5, 60.0, 105.0, 0.5, 0.4)
ALT = (1.7, 60.0, 105.0, 0.45, 0.35)  # a higher floor, flatter in both N and D
GRID = (np.geomspace(1e4, 2e5, 5), [20, 40, 80, 160, 320])


def write_runs(path, laws: dict, noise: float = 0.003, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = ["method,n_params,tokens,loss,run"]
    for method, params in laws.items():
        n, d = budget_grid(*GRID)
        loss = simulate_losses(params, n, d, noise, rng)
        rows += [f"{method},{a:.8g},{b:.8g},{c:.8f},{method}-{i}" for i, (a, b, c) in enumerate(zip(n, d, loss))]
    path.write_text("\n".join(rows) + "\n")
    return path


def run_fit(capsys, *args) -> tuple[int, str, str]:
    code = main(["fit", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_runs_csv_from_known_laws_gives_them_back_with_intervals(tmp_path, capsys):
    path = write_runs(tmp_path / "runs.csv", {"bp": BP, "dfa": ALT})
    code, out, _ = run_fit(capsys, path, "--bootstrap", "60", "--flops-per-param-token", "bp=6,dfa=4")
    assert code == 0
    table = strict_loads(out)  # strict: no Infinity, no NaN
    for method, truth in (("bp", BP), ("dfa", ALT)):
        fit = table["lnd_fits"][method]
        for name, value in zip(("E", "A", "B", "a", "b"), truth):
            ci = fit[f"{name}_ci"]
            assert len(ci) == 2 and ci[0] <= fit[name] <= ci[1], (method, name)
        assert fit["E"] == pytest.approx(truth[0], rel=0.03) and fit["E_ci"][0] <= truth[0] <= fit["E_ci"][1]
        assert fit["a"] == pytest.approx(truth[3], abs=0.06) and fit["b"] == pytest.approx(truth[4], abs=0.06)
        assert fit["loss_exponent"] == pytest.approx(fit["a"] * fit["b"] / (fit["a"] + fit["b"]))
        assert len(fit["log_residuals"]) == 25 and fit["residual_rms"] < 0.006  # 0.3% noise
        alloc = table["allocation"][method]
        assert alloc["n_exponent"] == pytest.approx(fit["b"] / (fit["a"] + fit["b"]))
        assert len(alloc["tokens_per_param"]) == 2 and len(alloc["tokens_per_param_ci"]) == 2
    # C = k N D with the given k: the allocation's computes are the runs' smallest and largest
    assert table["allocation"]["dfa"]["compute"] == pytest.approx([4 * 1e4 * 2e5, 4 * 2e5 * 320 * 2e5])
    assert table["allocation"]["bp"]["flops_per_param_token"] == 6.0
    verdict = table["optimal_loss_verdicts"]["dfa"]
    assert verdict["scenario"] == "D"  # a higher floor and a higher L*(C) at every compute studied
    assert all(entry["value"] > 1 for entry in verdict["compute_multiplier"])
    assert "isoflop" in table and isinstance(table["warnings"], list)


def test_a_shared_e_fit_gives_one_floor(tmp_path, capsys):
    path = write_runs(tmp_path / "runs.csv", {"bp": BP, "dfa": (1.5, 80.0, 150.0, 0.45, 0.35)})
    code, out, _ = run_fit(capsys, path, "--bootstrap", "0", "--shared-e")
    table = strict_loads(out)
    assert code == 0 and table["lnd_fits"]["bp"]["E"] == table["lnd_fits"]["dfa"]["E"]
    assert table["lnd_fits"]["bp"]["E"] == pytest.approx(1.5, rel=0.03) and table["lnd_fits"]["bp"]["shared_E"]


def test_the_help_says_how_the_csv_is_told_apart(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    assert "n_params" in text and "compute_pf_days" in text and "--shared-e" in text


ROWS = "method,n_params,tokens,loss\n"


@pytest.mark.parametrize("text, args, message", [
    ("method,n_params,tokens\nbp,1e4,2e5\n", [], "runs.csv:1: missing column 'loss'"),
    (ROWS + "bp,1e4,2e5,2.0\nbp,1e4,lots,2.0\n", [], "runs.csv:3: column 'tokens' is not a number: 'lots'"),
    (ROWS + "bp,1e4,-2e5,2.0\n", [], "runs.csv:2: column 'tokens' must be positive and finite, got '-2e5'"),
    (ROWS + "".join(f"bp,{n},{n * t},2.0\n" for n in (1e4, 2e4) for t in (20, 40)),
     [], "runs.csv: method bp: 4 runs, the L(N, D) fit needs at least 6"),
    (ROWS + "bp,1e4,2e5,2.0\n", ["--bootstrap", "-1"], "--bootstrap: must be"),
    (ROWS + "bp,1e4,2e5,2.0\n", ["--seed", "-1"], "--seed: must be"),
    (ROWS + "bp,1e4,2e5,2.0\n", ["--flops-per-param-token", "0"], "--flops-per-param-token: must be"),
    (ROWS + "bp,1e4,2e5,2.0\n", ["--flops-per-param-token", "bp=six"], "--flops-per-param-token bp: must be a number"),
    (ROWS + "bp,1e4,2e5,2.0\n", ["--flops-per-param-token", "bp"], "--flops-per-param-token: must be a number"),
    ("method,compute_pf_days,loss\nbp,1e-9,3.0\n", ["--shared-e"], "--shared-e: applies to a runs CSV"),
])
def test_bad_runs_files_and_options_fail_in_one_line(tmp_path, capsys, text, args, message):
    path = tmp_path / "runs.csv"
    path.write_text(text)
    code, out, err = run_fit(capsys, path, *args)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, lines
    assert lines[0].startswith("beyondbp fit: error: ") and message in lines[0], lines[0]


def test_the_command_line_starts_without_scipy_or_torch():
    """Every study run is its own `python -m beyondbp train` process: the parser, `fit`'s help
    included, must not load SciPy (0.45 s), NumPy, torch or the method catalogue before a command
    needs them."""
    code = ("import sys; import beyondbp.cli.main as m; m.build_parser();"
            "print(sorted(x for x in ('scipy', 'numpy', 'torch', 'matplotlib', 'beyondbp.methods') if x in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
