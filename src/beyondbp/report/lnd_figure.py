"""The isoFLOP figure of the allocation section: loss against N at fixed computes, one panel per
method. Solid: the runs' losses at that compute (interpolated along each size's budgets,
`fit.lnd_isoflop`) with their parabola and its vertex (a star; hollow where not bracketed).
Dashed: the fitted L(N, D) along the same isoFLOP, with its minimum N_opt(C) (a diamond);
where no 3 sizes share a compute, the dashed curves are drawn at computes across the runs'."""
from __future__ import annotations

import numpy as np

from ..fit.lnd_alloc import optimal_allocation, run_span
from ..runs.folder import PF_DAY
from .lnd import AllocationSection
from .figures import _pyplot

LAW_LEVELS = 5


def _levels(summary: dict, fit) -> np.ndarray:
    minima = summary["isoflop"]["minima"]
    if minima:
        return np.array([m["compute"] for m in minima])
    return np.geomspace(*run_span(fit, summary["allocation"]["flops_per_param_token"]), LAW_LEVELS + 2)[1:-1]


def _draw_method(ax, method: str, fit, summary: dict) -> None:
    import matplotlib
    from matplotlib.ticker import NullFormatter
    cmap = matplotlib.colormaps["viridis"]
    k = summary["allocation"]["flops_per_param_token"]
    minima = {round(np.log(m["compute"]), 6): m for m in summary["isoflop"]["minima"]}
    levels = _levels(summary, fit)
    sizes = np.geomspace(fit.n_params.min() / 1.5, fit.n_params.max() * 1.5, 120)
    for i, c in enumerate(levels):
        color = cmap(i / max(1, len(levels) - 1))
        label = f"C = {c / PF_DAY:.2g} PF-days"
        ax.plot(sizes, fit.predict(sizes, c / (k * sizes)), color=color, lw=1, ls="--")
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # a or b = 0: no optimum
            n_opt = optimal_allocation(fit.params, [c], k)[0][0, 0]
        if np.isfinite(n_opt) and n_opt > 0:
            ax.plot([n_opt], fit.predict(n_opt, c / (k * n_opt)), marker="D", ms=5, color=color, ls="none")
        m = minima.get(round(np.log(c), 6))
        if m is None:
            ax.plot([], [], color=color, ls="--", label=label)
            continue
        ax.plot(m["n_params"], m["loss"], marker="o", ms=4, color=color, ls="none", label=label)
        u = np.linspace(np.log(min(m["n_params"])), np.log(max(m["n_params"])), 60)
        ax.plot(np.exp(u), np.polyval(m["parabola"], u), color=color, lw=1.6)
        if m["n_opt"] is not None:
            ax.plot([m["n_opt"]], [m["loss_opt"]], marker="*", ms=12, color=color, ls="none",
                    mfc=color if m["bracketed"] else "white")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow range labels minor ticks, which overlap
    ax.set_title(f"{method}", fontsize=10)
    ax.set_xlabel("N (non-embedding parameters)")
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7)


def isoflop_figure(section: AllocationSection):
    """One panel per fitted method; None when no method has a fit."""
    if not section.fits:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(section.fits), figsize=(5.5 * len(section.fits), 4.5), squeeze=False)
    for ax, (method, fit) in zip(axes[0], section.fits.items()):
        _draw_method(ax, method, fit, section.summaries[method])
    axes[0][0].set_ylabel("final validation loss")
    fig.suptitle("isoFLOP curves (solid: runs and parabola, star its vertex; dashed: L(N, D) fit, diamond N_opt)",
                 fontsize=10)
    fig.tight_layout()
    return fig
