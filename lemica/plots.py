"""Pictures of an error graph: where skipping is cheap (heat map) and what each budget costs (frontier).

Uses matplotlib's object API (``Figure`` rendered by Agg), so no GUI backend or pyplot global state is
involved and plotting is safe in headless runs. Files are written atomically.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lemica._io import atomic_write_bytes
from lemica.graph import ErrorGraph
from lemica.planner import Plan, frontier

_DPI = 120


def skip_matrix(graph: ErrorGraph) -> np.ndarray:
    """errors[length - 2, i] = error of skip (i, i + length), for lengths 2..max_skip; NaN where missing.

    Length-1 skips reuse nothing (always 0), so they are left out of the picture.
    """
    T, L = graph.num_steps, graph.max_skip
    errors = np.full((max(L - 1, 0), T), np.nan)
    for (i, j), edge in graph.edges.items():
        if j - i >= 2:
            errors[j - i - 2, i] = edge.error
    return errors


def _shorten(text: str, width: int) -> str:
    """Keep the end of long names: model paths differ in their last components."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _title(graph: ErrorGraph, what: str) -> str:
    model = graph.meta.get("model")
    source = _shorten(str(model), 48) if model else "error graph"
    if graph.meta.get("synthetic"):
        source = "synthetic graph"
    title = f"{what} – {source} (T={graph.num_steps}, max skip={graph.max_skip})"
    metric = graph.meta.get("metric")
    return f"{title}\nerror = {_shorten(str(metric), 90)}" if metric else title


def heatmap_figure(graph: ErrorGraph) -> Figure:
    """Edge error by start step i (x) and skip length j - i (y), log colour scale; blank = no edge."""
    errors = skip_matrix(graph)
    fig = Figure(figsize=(9, 4.5), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(_title(graph, "Skip error"), fontsize=10)
    ax.set_xlabel("start step i (full compute; 0 = noisiest)")
    ax.set_ylabel("skip length j - i")
    if errors.size == 0 or np.isnan(errors).all():
        ax.text(0.5, 0.5, "no skips of length >= 2 in this graph", ha="center", va="center", transform=ax.transAxes)
        return fig
    shown = errors[~np.isnan(errors)]
    positive = shown[shown > 0]
    # Errors span orders of magnitude along a row; a log scale shows them. Exact zeros cannot sit on a log
    # scale, so a graph with zeros in it falls back to a linear scale.
    if positive.size == shown.size and positive.max() > positive.min():
        norm, label = LogNorm(positive.min(), positive.max()), "mean error (log scale)"
    else:
        norm, label = Normalize(shown.min(), max(shown.max(), shown.min() + 1e-12)), "mean error"
    cmap = "viridis"
    lengths = np.arange(2, graph.max_skip + 1)
    mesh = ax.pcolormesh(
        np.arange(graph.num_steps + 1) - 0.5, np.append(lengths, lengths[-1] + 1) - 0.5,
        np.ma.masked_invalid(errors), cmap=cmap, norm=norm, shading="flat",
    )
    ax.set_facecolor("white")  # masked (missing) edges stay blank
    ax.set_xlim(-0.5, graph.num_steps - 0.5)
    ax.set_ylim(1.5, graph.max_skip + 0.5)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(mesh, ax=ax, label=label)
    return fig


def frontier_figure(graph: ErrorGraph, objective: str = "lexminimax",
                    plans: dict[int, Plan] | None = None) -> Figure:
    """Budget B -> worst skip error (left, log) and total error (right) of the optimal plan; T/B on top."""
    plans = frontier(graph, objective) if plans is None else plans
    T = graph.num_steps
    budgets = np.array(sorted(plans))
    worst = np.array([plans[b].worst for b in budgets])
    total = np.array([plans[b].total for b in budgets])

    fig = Figure(figsize=(8, 4.5), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(_title(graph, f"Optimal plans ({objective})"), fontsize=10)
    ax.set_xlabel("budget B (full-compute steps)")
    log = bool((worst > 0).any())
    keep = worst > 0 if log else np.ones_like(worst, dtype=bool)  # error-free plans cannot sit on a log axis
    (worst_line,) = ax.plot(budgets[keep], worst[keep], "o-", color="tab:blue", markersize=3, label="worst skip error")
    if log:
        ax.set_yscale("log")
    ax.set_ylabel("worst skip error" + (" (log scale)" if log else ""), color="tab:blue")
    ax.tick_params(axis="y", colors="tab:blue")
    ax.grid(True, which="major", alpha=0.3)

    right = ax.twinx()
    (total_line,) = right.plot(budgets, total, "s--", color="tab:orange", markersize=2.5, linewidth=1,
                               label="total error (sum over skips)")
    right.set_ylabel("total error", color="tab:orange")
    right.tick_params(axis="y", colors="tab:orange")
    right.set_ylim(bottom=0)

    def to_speedup(b):
        return T / np.maximum(np.asarray(b, dtype=float), 1e-9)

    top = ax.secondary_xaxis("top", functions=(to_speedup, to_speedup))  # T/B is its own inverse
    top.set_xlabel("theoretical speed-up T/B")
    top.set_xticks([s for s in (1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 15, 20) if T / s >= budgets.min() - 1e-9])
    top.xaxis.set_major_formatter(lambda s, _pos: f"{s:g}x")
    ax.set_xlim(budgets.min() - 0.5, budgets.max() + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))

    handles = [worst_line, total_line]
    labels = [h.get_label() for h in handles]
    dropped = int((~keep).sum())
    if dropped:
        labels[0] += f" ({dropped} error-free budget{'s' if dropped > 1 else ''} not shown)"
    ax.legend(handles, labels, loc="upper right", fontsize=8)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Render to PNG and write atomically (a crash never leaves a truncated image)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


def plot_graph(graph: ErrorGraph, out_dir: str | os.PathLike, *, stem: str = "graph",
               objective: str = "lexminimax") -> dict[str, Path]:
    """Write ``{stem}_heatmap.png`` and ``{stem}_frontier.png`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    return {
        "heatmap": save_figure(heatmap_figure(graph), out_dir / f"{stem}_heatmap.png"),
        "frontier": save_figure(frontier_figure(graph, objective), out_dir / f"{stem}_frontier.png"),
    }


__all__ = ["skip_matrix", "heatmap_figure", "frontier_figure", "save_figure", "plot_graph"]
