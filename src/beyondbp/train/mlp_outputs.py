"""What an MLP run writes beside its metrics: `comparison.md` (this run and its sibling runs) and
`angles.png` (the alignment angles over training, one panel per run)."""
from __future__ import annotations

from pathlib import Path

from ..atomic_write import stream_atomically
from ..config import ConfigError, load_yaml
from ..runs.folder import read_summary

COMPARED_METHODS = ("bp", "fa", "dfa")  # `beyondbp mlp method=all`, in this order


def sibling_runs(run_dir: Path) -> list[tuple[Path, dict]]:
    """This run and the finished MLP runs beside it (folders of the same parent), BP first."""
    runs = []
    for folder in sorted(p for p in Path(run_dir).parent.iterdir() if p.is_dir()):
        summary, config = folder / "summary.json", folder / "config.yaml"
        if not (summary.exists() and config.exists()):
            continue
        try:  # a sibling folder's unreadable files are its own business
            kind = load_yaml(config, "the run's config").get("model", {}).get("kind")
            done = read_summary(folder)
        except (ConfigError, OSError, AttributeError):
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
    stream_atomically(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
