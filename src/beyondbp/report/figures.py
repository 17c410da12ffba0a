"""The report's figures: Figure 3 (loss against compute, fitted frontiers) and alignment."""
from __future__ import annotations

import io
import math

import numpy as np

from ..runs.folder import FINISHED

COLORS = {"bp": "#1f77b4", "dfa": "#d62728", "dfa_block": "#ff7f0e", "shallow": "#2ca02c", "fa": "#9467bd"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _color(method: str, index: int) -> str:
    import matplotlib
    return COLORS.get(method) or matplotlib.colormaps["tab10"](index % 10)


def _run_curve(r) -> list[tuple[float, float]]:
    return [(m["compute_pf_days"], m["val_loss"]) for m in r.metrics
            if m.get("step", 0) > 0 and m.get("val_loss") is not None and math.isfinite(m["val_loss"])
            and m.get("compute_pf_days")]


def frontier_figure(results, fits, methods: list[str], ylabel: str = "validation loss"):
    """The paper's Figure 3: every run's loss against compute (thin lines), each method's
    frontier points (markers) and fitted law: solid over the compute range it was fitted on,
    dashed beyond it, and labelled "not a power law" where it fails the checks."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for i, method in enumerate(methods):
        for r in results:
            if r.run.method == method and r.state in FINISHED and _run_curve(r):
                ax.plot(*zip(*_run_curve(r)), color=_color(method, i), lw=0.7, alpha=0.3)
    if fits.c_range:
        grid = np.geomspace(*fits.c_range, 400)
        for i, method in enumerate(methods):
            fit = fits.fits.get(method)
            if fit is None:
                continue
            color, (lo, hi) = _color(method, i), fit.fit_range
            inside = (grid >= lo) & (grid <= hi)
            label = f"{method}: alpha_C = {fit.alpha_C:.3f}"
            if not fit.power_law_ok:
                label += " (not a power law)"
            ax.plot(grid[inside], fit.predict(grid[inside]), color=color, lw=2.2, label=label)
            for part in (grid <= lo, grid >= hi):
                if part.sum() > 1:
                    ax.plot(grid[part], fit.predict(grid[part]), color=color, lw=1.4, ls="--")
            ax.plot(fit.envelope[:, 0], fit.envelope[:, 1], ls="none", marker="o", ms=6, mfc="white",
                    mec=color, mew=1.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_loss_ticks(ax)
    ax.set_xlabel("compute (PF-days, the paper's accounting)")
    ax.set_ylabel(ylabel)
    ax.set_title("Compute-efficient frontiers (circles: fitted frontier points; dashed: extrapolation)")
    if fits.fits:
        ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    return fig


def _plain_loss_ticks(ax) -> None:
    """Loss ticks as plain numbers (2, 3, 4; halves where the range is narrow), not 2x10^0."""
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter
    lo, hi = ax.get_ylim()
    for step in (1.0, 0.5, 0.25, 0.1, 0.05):
        ticks = [t for t in np.arange(math.floor(lo), math.ceil(hi) + step, step) if lo <= t <= hi and t > 0]
        if len(ticks) >= 3:
            break
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def alignment_figure(results):
    """Alignment per block over training: for each method that measured it, the largest
    model's best run (per block) and every run's mean over blocks."""
    import matplotlib
    plt = _pyplot()
    by_method: dict[str, list] = {}
    for r in results:
        if any(m.get("alignment") for m in r.metrics):
            by_method.setdefault(r.run.method, []).append(r)
    if not by_method:
        return None
    fig, axes = plt.subplots(len(by_method), 2, figsize=(10, 3.4 * len(by_method)), squeeze=False)
    for row, (method, runs) in enumerate(sorted(by_method.items())):
        largest = max(runs, key=lambda r: (r.run.n_params, -(r.final_loss or math.inf)))
        rows = [m for m in largest.metrics if m.get("alignment")]
        blocks = list(rows[0]["alignment"])
        cmap = matplotlib.colormaps["viridis"]
        ax = axes[row][0]
        for k, block in enumerate(blocks):
            ax.plot([m["tokens"] for m in rows], [m["alignment"].get(block, np.nan) for m in rows], marker="o", ms=3,
                    color=cmap(k / max(1, len(blocks) - 1)), label=block)
        ax.set_title(f"{method}: {largest.run.name}, per block", fontsize=9)
        ax.set_xlabel("tokens")
        ax.set_ylabel("cosine(update, BP gradient)")
        ax.legend(fontsize=6, ncol=2)
        ax = axes[row][1]
        for r in sorted(runs, key=lambda r: r.run.n_params):
            pts = [(m["tokens"], np.mean(list(m["alignment"].values()))) for m in r.metrics if m.get("alignment")]
            ax.plot(*zip(*pts), marker="o", ms=3, lw=1, label=r.run.name)
        ax.set_title(f"{method}: mean over blocks, every run", fontsize=9)
        ax.set_xlabel("tokens")
        ax.legend(fontsize=6)
        for a in axes[row]:
            a.set_xscale("log")  # evaluations are spaced geometrically in steps
            a.axhline(0, color="grey", lw=0.5)
            a.grid(True, alpha=0.2)
    fig.tight_layout()
    return fig


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    _pyplot().close(fig)
    return buf.getvalue()
