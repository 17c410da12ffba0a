"""Training runs of the fully-connected track: epochs over a small in-memory dataset.

The same method objects as the Transformer track make the updates (`methods.build_method`,
kind "mlp"); AdamW (`train.make_optimizer`: decay on weight matrices only) at a constant
learning rate applies them, without clipping. `mlp_base_config` holds the track's
defaults (lr, beta2, weight decay). A run directory holds
`config.yaml`, `metrics.jsonl` (one row per epoch, epoch 0 before any training),
`summary.json` (both also in the Transformer track's columns: step, tokens = examples,
val_loss = test loss, compute_*; so `beyondbp study` sweeps MLPs too), `angles.png` and
`comparison.md` (this run beside its sibling runs).

Alignment, per epoch, on a fixed batch of test examples (as in Lillicrap et al.'s figure):
- `angle_hidden[layerK]`: angle between the signal the method delivers to hidden layer K's
  output (B e for DFA, the FA-propagated gradient for FA, the true gradient for BP) and the
  true BP gradient there, averaged over the examples;
- `angle_weights[layerK|output]`: angle between the method's weight update and the BP gradient.
Both are measured on a float64 copy of the method, with the RNG state restored, so training
is not disturbed.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import sys
import time
from pathlib import Path

import torch

from ..atomic_write import append_line, atomic_write
from ..config import ConfigError, RunConfig, build_config, dump_yaml, validate_config
from ..methods.registry import build_method
from ..model.mlp import load_image_data, resolve_mlp_config
from ..model.gpt import build_model
from .run_folder import PF_DAY, check_out_path, check_same_config, check_writable, read_metrics, read_summary

ANGLE_EXAMPLES = 256
COMPARED_METHODS = ("bp", "fa", "dfa")

# The MLP track's optimizer defaults (AdamW; the Transformer track's defaults are its own).
# The strong decoupled weight decay makes the forward weights forget their random
# initialisation; without it the first hidden layer of a 3-layer DFA/FA net stays ~70 degrees
# from BP on digits (layers 2-3 align either way) at the same test error.
MLP_LR = 1e-3
MLP_BETA2 = 0.999
MLP_WEIGHT_DECAY = 3.0


def mlp_base_config() -> RunConfig:
    """The RunConfig defaults of the MLP track, before a config file and overrides apply."""
    cfg = RunConfig()
    cfg.model.kind = "mlp"
    cfg.train.lr, cfg.train.beta2, cfg.train.weight_decay = MLP_LR, MLP_BETA2, MLP_WEIGHT_DECAY
    return cfg


def build_mlp_config(config_file=None, overrides=None) -> RunConfig:
    cfg = build_config(config_file, overrides, base=mlp_base_config())
    cfg.model.kind = "mlp"
    return cfg


def run_mlp(cfg: RunConfig, out: str | Path, quiet: bool = False) -> dict:
    """Train one MLP run into `out` (or, with method=all, BP, FA and DFA into out/<method>)."""
    if cfg.method.name == "all":
        return run_mlp_all(cfg, out, quiet)
    from .memory import check_memory
    from .loop import make_optimizer, pick_device
    out = check_out_path(out)
    validate_config(cfg)
    check_writable(out)
    cfg.model.kind = "mlp"
    data = load_image_data(cfg.data)
    resolve_mlp_config(cfg.model, data.n_inputs, data.n_classes)
    summary_path = out / "summary.json"
    check_same_config(out, cfg)
    done = read_summary(out)
    if done and done.get("status") in ("completed", "diverged"):
        if not quiet:
            print(f"{out}: run already done; nothing to do", file=sys.stderr)
        return done
    device = pick_device(cfg)
    check_memory(cfg, cfg.train.batch_examples, device)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(device)
    method = build_method(model, cfg.method, cfg.seed, "mlp").to(device)
    optimizer = make_optimizer(cfg, method.trainable_parameters())  # AdamW, decay on matrices only
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    test_x, test_y = data.test_x.to(device), data.test_y.to(device)
    probe_x, probe_y = test_x[:ANGLE_EXAMPLES], test_y[:ANGLE_EXAMPLES]
    shuffle = torch.Generator().manual_seed(cfg.seed)
    atomic_write(out / "config.yaml", dump_yaml(cfg))
    atomic_write(out / "metrics.jsonl", "")  # an MLP run restarts from epoch 0: no checkpoints

    per_example = method.compute_per_token()  # one "token" is one example
    steps_per_epoch = math.ceil(len(train_x) / cfg.train.batch_examples)
    rows, elapsed, status = [], 0.0, "completed"
    bar = _progress(cfg, quiet)
    for epoch in range(cfg.train.epochs + 1):
        train_loss = None
        if epoch > 0:
            t0 = time.perf_counter()
            train_loss = train_epoch(method, optimizer, train_x, train_y, cfg.train.batch_examples, shuffle)
            elapsed += time.perf_counter() - t0
            if not math.isfinite(train_loss):
                status = "diverged"
                break
        angle_hidden, angle_weights = measure_angles(method, probe_x, probe_y)
        test_error, test_loss = evaluate(model, test_x, test_y)
        examples = epoch * len(train_x)
        rows.append({"epoch": epoch, "examples": examples, "train_loss": train_loss,
                     "test_loss": test_loss, "test_error": test_error, "angle_hidden": angle_hidden,
                     "angle_weights": angle_weights, "elapsed_s": elapsed,
                     # the Transformer track's columns, so studies and reports read MLP runs alike
                     "step": epoch * steps_per_epoch, "tokens": examples, "val_loss": test_loss,
                     "compute_flops": examples * per_example["paper"],
                     "compute_pf_days": examples * per_example["paper"] / PF_DAY,
                     "compute_flops_optimistic": examples * per_example["optimistic"],
                     "compute_flops_exact": examples * per_example["exact"]})
        append_line(out / "metrics.jsonl", json.dumps(rows[-1]))
        if epoch > 0:
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}", test_error=f"{test_error:.3f}", refresh=False)
    bar.close()

    examples = rows[-1]["examples"]
    summary = {
        "method": cfg.method.name, "seed": cfg.seed, "dataset": cfg.data.dataset,
        "depth": cfg.model.depth, "width": cfg.model.width, "activation": cfg.model.activation,
        "n_params": model.n_params(), "epochs": rows[-1]["epoch"], "examples": examples,
        "tokens": examples, "steps": rows[-1]["step"],
        "compute_flops": examples * per_example["paper"],
        "compute_pf_days": examples * per_example["paper"] / PF_DAY,
        "compute_flops_optimistic": examples * per_example["optimistic"],
        "compute_flops_exact": examples * per_example["exact"],
        "test_error": rows[-1]["test_error"] if status == "completed" else None,
        "final_val_loss": rows[-1]["test_loss"] if status == "completed" else None,
        "train_loss": rows[-1]["train_loss"], "angle_hidden": rows[-1]["angle_hidden"],
        "angle_weights": rows[-1]["angle_weights"], "elapsed_s": elapsed, "status": status,
    }
    atomic_write(summary_path, json.dumps(summary, indent=2) + "\n")
    plot_angles(out / "angles.png", [(cfg.method.name, rows)])
    runs = sibling_runs(out)
    atomic_write(out / "comparison.md", comparison_table(runs))
    if not quiet:
        err = f"test error {summary['test_error']:.4f}" if status == "completed" else "diverged"
        print(f"{out}: {status}: {err} after {summary['epochs']} epochs in {elapsed:.1f}s", file=sys.stderr)
    return summary


def run_mlp_all(cfg: RunConfig, out: str | Path, quiet: bool = False) -> dict:
    """BP, FA and DFA with the same settings into out/bp, out/fa, out/dfa; table and figure in out."""
    out = check_out_path(out)
    summaries = {}
    for name in COMPARED_METHODS:
        run_cfg = copy.deepcopy(cfg)
        run_cfg.method.name = name
        summaries[name] = run_mlp(run_cfg, out / name, quiet)
    runs = [(out / name, summaries[name]) for name in COMPARED_METHODS]
    atomic_write(out / "comparison.md", comparison_table(runs))
    plot_angles(out / "angles.png", [(name, read_rows(out / name)) for name in COMPARED_METHODS])
    return {"method": "all", "status": "completed" if all(s["status"] == "completed" for s in summaries.values())
            else "diverged", "runs": summaries}


def plan_mlp_run(cfg: RunConfig) -> tuple[int, float]:
    """For a study plan: resolve the model shape from the dataset and set cfg.train.tokens to
    epochs x training examples; (N, exact BP FLOPs) of the run."""
    from ..study.plan import counts_of
    cfg.model.kind = "mlp"
    n_inputs, n_classes, n_train = image_data_shape(cfg.data)
    resolve_mlp_config(cfg.model, n_inputs, n_classes)
    n_params, forward_flops = counts_of(cfg.model)
    cfg.train.tokens = cfg.train.epochs * n_train
    return n_params, 3.0 * forward_flops * cfg.train.tokens


def image_data_shape(data_cfg) -> tuple[int, int, int]:
    """(inputs, classes, training examples) of a dataset, loaded once per process."""
    return _image_data_shape(json.dumps(dataclasses.asdict(data_cfg), sort_keys=True))


@functools.lru_cache(maxsize=None)
def _image_data_shape(data_key: str) -> tuple[int, int, int]:
    from ..config import DataConfig
    data = load_image_data(DataConfig(**json.loads(data_key)))
    return data.n_inputs, data.n_classes, len(data.train_x)


def train_epoch(method, optimizer, x, y, batch_size: int, shuffle: torch.Generator) -> float:
    """One pass over the training set in shuffled minibatches; the mean training loss."""
    method.train()
    order = torch.randperm(len(x), generator=shuffle).to(x.device)
    total = torch.zeros((), device=x.device)
    for batch in order.split(batch_size):
        loss, objective = method(x[batch], y[batch])
        objective.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total += loss.detach() * len(batch)
    return (total / len(x)).item()


@torch.no_grad()
def evaluate(model, x, y) -> tuple[float, float]:
    """(test error, test loss) over the whole split."""
    logits, loss = model(x, y)
    return (logits.argmax(-1) != y).float().mean().item(), loss.item()


# --- alignment angles ---------------------------------------------------------------------
def measure_angles(method, x, y) -> tuple[dict, dict]:
    """Per layer: angle (degrees) of the method's hidden signal and weight update to BP's.

    Measured on a float64 copy of the method: the training state is not touched, and examples
    with a tiny error do not turn float32 rounding into spurious angles.
    """
    probe = copy.deepcopy(method).double()
    model, x = probe.model, x.double()
    rng = torch.get_rng_state()
    try:
        true_hidden, true_weights = _signals(model, lambda: model(x, y)[1])
        torch.set_rng_state(rng)
        method_hidden, method_weights = _signals(model, lambda: probe(x, y)[1])
    finally:
        torch.set_rng_state(rng)
    angle_hidden = {k: _mean_row_angle(method_hidden[k], true_hidden[k]) for k in true_hidden}
    angle_weights = {k: _angle(method_weights[k], true_weights[k]) for k in true_weights}
    return angle_hidden, angle_weights


def _signals(model, objective_fn) -> tuple[dict, dict]:
    """Gradients at each hidden layer's output and of each layer's weight after one backward."""
    hidden: dict[str, torch.Tensor | None] = {f"layer{i + 1}": None for i in range(len(model.blocks))}

    def capture(name):
        def store(grad):
            hidden[name] = grad.detach().clone()
        return store

    def on_output(name):
        def hook(module, inputs, output):
            if output.requires_grad:
                output.register_hook(capture(name))
        return hook

    handles = [b.register_forward_hook(on_output(f"layer{i + 1}")) for i, b in enumerate(model.blocks)]
    for p in model.parameters():
        p.grad = None
    try:
        objective_fn().backward()
    finally:
        for h in handles:
            h.remove()
    layers = {f"layer{i + 1}": b.linear.weight for i, b in enumerate(model.blocks)}
    layers["output"] = model.output.weight
    weights = {k: None if w.grad is None else w.grad.detach().clone() for k, w in layers.items()}
    for p in model.parameters():
        p.grad = None
    return hidden, weights


def _angle(a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
    if a is None or b is None:
        return None  # no signal reaches this layer (e.g. frozen by the shallow baseline)
    cos = torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0, eps=1e-30)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos.item()))))


def _mean_row_angle(a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
    if a is None or b is None:
        return None
    a, b = a.flatten(1).double(), b.flatten(1).double()
    keep = (a.norm(dim=1) > 0) & (b.norm(dim=1) > 0)  # examples with no error carry no direction
    if not keep.any():
        return None
    cos = torch.nn.functional.cosine_similarity(a[keep], b[keep], dim=1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos)).mean().item()


# --- outputs ------------------------------------------------------------------------------
def read_rows(run_dir: Path) -> list[dict]:
    return read_metrics(Path(run_dir) / "metrics.jsonl")


def sibling_runs(run_dir: Path) -> list[tuple[Path, dict]]:
    """This run and the finished MLP runs beside it (folders of the same parent), BP first."""
    import yaml
    runs = []
    for folder in sorted(p for p in Path(run_dir).parent.iterdir() if p.is_dir()):
        summary, config = folder / "summary.json", folder / "config.yaml"
        if not (summary.exists() and config.exists()):
            continue
        try:  # a sibling folder's unreadable files are its own business
            kind = (yaml.safe_load(config.read_text()) or {}).get("model", {}).get("kind")
            done = read_summary(folder)
        except (ConfigError, OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
            continue
        if kind == "mlp" and done is not None:
            runs.append((folder, done))
    order = {name: i for i, name in enumerate(COMPARED_METHODS)}
    return sorted(runs, key=lambda r: (order.get(r[1].get("method"), len(order)), r[0].name))


def comparison_table(runs: list[tuple[Path, dict]]) -> str:
    """Markdown: test error of each run, its gap to the BP run, its final hidden-layer angles."""
    bp = next((s for _, s in runs if s.get("method") == "bp" and s.get("test_error") is not None), None)
    lines = ["| run | method | test error (%) | vs BP (pp) | hidden-signal angle to BP (deg, per layer) |",
             "|---|---|---|---|---|"]
    for folder, s in runs:
        err = s.get("test_error")
        err_txt = "diverged" if err is None else f"{100 * err:.2f}"
        gap = "" if err is None or bp is None else f"{100 * (err - bp['test_error']):+.2f}"
        angles = ", ".join("-" if v is None else f"{v:.0f}" for v in (s.get("angle_hidden") or {}).values())
        lines.append(f"| {folder.name} | {s.get('method')} | {err_txt} | {gap} | {angles} |")
    return "\n".join(lines) + "\n"


def plot_angles(path: Path, runs: list[tuple[str, list[dict]]]) -> None:
    """One panel per run: hidden-signal angle (solid) and weight-update angle (dashed) per layer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3.2), squeeze=False, sharey=True)
    for ax, (label, rows) in zip(axes[0], runs):
        layers = list(rows[0]["angle_hidden"]) if rows else []
        for i, layer in enumerate(layers):
            for key, style in (("angle_hidden", "-"), ("angle_weights", "--")):
                pts = [(r["epoch"], r[key].get(layer)) for r in rows if r[key].get(layer) is not None]
                if pts:
                    ax.plot(*zip(*pts), style, color=f"C{i}", label=f"{layer} ({key.split('_')[1]})")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 100)
        ax.axhline(90, color="grey", lw=0.5)
    axes[0][0].set_ylabel("angle to BP (degrees)")
    if runs and runs[0][1]:
        axes[0][-1].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _progress(cfg: RunConfig, quiet: bool):
    from tqdm import tqdm
    mode = cfg.train.progress
    disable = quiet or mode == "off" or (mode == "auto" and not sys.stderr.isatty())
    return tqdm(total=cfg.train.epochs, unit="epoch", disable=disable, dynamic_ncols=True, leave=False)
