"""The report's figures: validation curves per row, and the critical-difference diagram of a
cross-dataset table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def plot_curves(curves: dict[str, list[np.ndarray]], path: str | Path, title: str = "") -> Path:
    """Validation accuracy per epoch: mean over a group's runs with a ±1 std band (ddof=1).

    Uses ``matplotlib.figure.Figure`` directly (Agg canvas, no pyplot global state), so it is safe
    in headless jobs and never changes the caller's backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, histories in curves.items():
        length = max(len(h) for h in histories)
        grid = np.full((len(histories), length), np.nan)
        for i, h in enumerate(histories):
            grid[i, : len(h)] = h
        count = np.sum(~np.isnan(grid), axis=0)
        mean = np.nanmean(grid, axis=0)
        deviation = np.where(count > 1, np.nansum((grid - mean) ** 2, axis=0), 0.0)
        std = np.sqrt(deviation / np.maximum(count - 1, 1))
        x = np.arange(1, length + 1)
        (line,) = ax.plot(
            x,
            100 * mean,
            marker="o" if length <= 30 else None,
            ms=3,
            label=f"{label} (n={len(histories)})",
        )
        ax.fill_between(
            x, 100 * (mean - std), 100 * (mean + std), color=line.get_color(), alpha=0.2, lw=0
        )
    if not curves:
        ax.text(
            0.5,
            0.5,
            "no val/acc history in the selected runs",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    else:
        ax.legend(fontsize="small")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def plot_cd_diagram(
    average_rank: pd.Series, p_values: pd.DataFrame | None, path: str | Path, title: str = ""
) -> Path:
    """The critical-difference diagram (``scikit_posthocs.critical_difference_diagram``): each
    model at its average rank (1 = best, left), and a bar joining models whose pairwise test
    finds no difference. Without a pairwise test (``p_values`` None: too few datasets) every
    pair counts as not different, so one bar joins them all; the caller's title says why."""
    import scikit_posthocs as sp
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ranks = average_rank.dropna()
    fig = Figure(figsize=(7, 1.2 + 0.35 * max(len(ranks), 2)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if len(ranks) >= 2:
        labels = list(ranks.index)
        if p_values is None:
            p_values = pd.DataFrame(1.0, index=labels, columns=labels)
        sp.critical_difference_diagram(ranks, p_values.loc[labels, labels], ax=ax)
        ax.set_xlim(min(1.0, ranks.min()), max(float(len(ranks)), ranks.max()))  # ranks 1..k
    else:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "fewer than 2 models with ranks", ha="center", va="center")
    ax.set_title(title, fontsize="small", pad=24)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
