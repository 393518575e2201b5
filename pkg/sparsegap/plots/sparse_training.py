"""Figures of chapters 9-11 (Evci et al.): how sparse networks are found, their gradient flow and the
objective along paths between solutions."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .draw import band, density_ticks, sparsity_axis, sparsity_band
from .style import PAGE_WIDTH, legend_below, mark_zoom, use_book_style


SOLUTION_COLORS = {"P-S": "#1f77b4", "L-S": "#2ca02c", "S-S": "#ff7f0e", "sparse-init dense": "#9467bd",
                   "S-S unit": "#8c564b", "SET": "#e377c2", "RigL": "#17becf", "dense": "0.35"}


def _gap_panel(ax, gaps: pd.DataFrame, reference: str, keys: Sequence[str], x_of, offsets: bool = True) -> None:
    """Each solution's paired difference to ``reference`` (percentage points) with its 95% interval, and
    the zero line: the quantity the claims are about, on an axis that includes zero."""
    keys = [k for k in keys if k in set(gaps.key)]
    width = 0.04 if offsets else 0.0
    for i, k in enumerate(keys):
        d = gaps[gaps.key == k].sort_values("sparsity")
        x = x_of(d.sparsity) + (i - (len(keys) - 1) / 2) * width
        g, lo, hi = 100 * d.gap.to_numpy(float), 100 * d.lo.to_numpy(float), 100 * d.hi.to_numpy(float)
        err = np.vstack([np.where(np.isfinite(lo), g - lo, 0.0), np.where(np.isfinite(hi), hi - g, 0.0)])
        ax.errorbar(x, g, yerr=err, fmt="o", ms=4, capsize=3, lw=1.2, color=SOLUTION_COLORS.get(k, "k"),
                    label=k)
    ax.axhline(0, color="0.3", lw=1.0)
    lo, hi = ax.get_ylim()
    ax.set_ylim(min(lo, 0.0), max(hi, 0.0))  # zero stays in view: the gap is read against it
    ax.set_ylabel(f"test accuracy − {reference}\n(points, 95% interval)")
    ax.grid(alpha=0.3)


def figure_solutions(summary: pd.DataFrame, *, gaps: pd.DataFrame | None = None, reference: str = "P-S",
                     title: str = "", keys: Sequence[str] | None = None) -> plt.Figure:
    """E-F1: last-epoch test accuracy against sparsity per solution (seed means, one-std bands), the
    dense network as a horizontal line (with its std as a band); its axis is zoomed and says so.
    With ``gaps`` (:func:`sparsegap.studies.difficulty.paired_gaps`), a second panel shows each
    solution's paired difference to ``reference`` in percentage points with its 95% interval, on an
    axis that includes zero, so a gap is read at its true size."""
    use_book_style()
    ncols = 1 if gaps is None else 2
    fig, axes = plt.subplots(1, ncols, figsize=(PAGE_WIDTH * (0.8 if ncols == 1 else 1.0), 3.9),
                             squeeze=False, layout="constrained")
    ax = axes[0, 0]
    dense = summary[summary.key == "dense"]
    if len(dense):
        m, s = 100 * float(dense.test_acc.iloc[0]), 100 * float(dense.test_acc_std.fillna(0).iloc[0])
        ax.axhline(m, color=SOLUTION_COLORS["dense"], lw=1.2, label="dense")
        ax.axhspan(m - s, m + s, color=SOLUTION_COLORS["dense"], alpha=0.12, lw=0)
    keys = keys or [k for k in SOLUTION_COLORS if k != "dense" and k in set(summary.key)]
    shown = []
    for k in keys:
        d = summary[summary.key == k].sort_values("sparsity")
        d = d.assign(test_acc=100 * d.test_acc, test_acc_std=100 * d.test_acc_std)
        shown += list(d.test_acc)
        sparsity_band(ax, d, "test_acc", SOLUTION_COLORS.get(k, "k"), label=k)
    sparsities = summary[summary.key != "dense"].sparsity.unique()
    density_ticks(ax, sparsities)
    ax.set_ylabel("test accuracy (%, last epoch)")
    ax.grid(alpha=0.3)
    if len(dense):
        shown.append(100 * float(dense.test_acc.iloc[0]))
    mark_zoom(ax, shown, unit="%", fmt="{:.1f}")
    if gaps is not None:
        gx = axes[0, 1]
        _gap_panel(gx, gaps, reference, keys, sparsity_axis)
        density_ticks(gx, sparsities)
        gx.set_title(f"the gap to {reference}")
        ax.set_title("test accuracy")
    if title:
        fig.suptitle(title)
    legend_below(fig)
    return fig


def figure_solution_dots(summary: pd.DataFrame, gaps: pd.DataFrame, *, reference: str = "S-S",
                         keys: Sequence[str] | None = None) -> plt.Figure:
    """G-2 as a dot plot: one row per solution. Left, its last-epoch test accuracy (seed mean, one-std
    bar; the dense network as the vertical line); right, its paired difference to ``reference`` in
    percentage points with the 95% interval, on an axis that includes zero. Several sparsities are
    told apart by their marker."""
    use_book_style()
    keys = keys or [k for k in SOLUTION_COLORS if k != "dense" and k in set(summary.key)]
    sparsities = sorted(summary[summary.key != "dense"].sparsity.unique())
    markers = ["o", "s", "^", "D"]
    fig, (ax, gx) = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 0.42 * len(keys) + 1.6), sharey=True,
                                 layout="constrained")
    y = {k: len(keys) - 1 - i for i, k in enumerate(keys)}
    dense = summary[summary.key == "dense"]
    if len(dense):
        m, s = 100 * float(dense.test_acc.iloc[0]), 100 * float(dense.test_acc_std.fillna(0).iloc[0])
        ax.axvline(m, color=SOLUTION_COLORS["dense"], lw=1.2, label="dense (line: mean, band: one std)")
        ax.axvspan(m - s, m + s, color=SOLUTION_COLORS["dense"], alpha=0.12, lw=0)
    shown = [100 * float(dense.test_acc.iloc[0])] if len(dense) else []
    off = lambda j: (j - (len(sparsities) - 1) / 2) * 0.22
    for j, sp in enumerate(sparsities):
        for k in keys:
            d = summary[(summary.key == k) & (summary.sparsity == sp)]
            if not len(d):
                continue
            m, s = 100 * float(d.test_acc.iloc[0]), 100 * float(d.test_acc_std.fillna(0).iloc[0])
            shown.append(m)
            ax.errorbar(m, y[k] + off(j), xerr=s, fmt=markers[j % 4], ms=5, capsize=3,
                        color=SOLUTION_COLORS.get(k, "k"), label=f"_{k}, sparsity {sp:g}")
            g = gaps[(gaps.key == k) & (gaps.sparsity == sp)]
            if len(g):
                v, lo, hi = (100 * float(g[c].iloc[0]) for c in ("gap", "lo", "hi"))
                err = [[v - lo if np.isfinite(lo) else 0.0], [hi - v if np.isfinite(hi) else 0.0]]
                gx.errorbar(v, y[k] + off(j), xerr=err, fmt=markers[j % 4], ms=5, capsize=3,
                            color=SOLUTION_COLORS.get(k, "k"), label=f"_{k}, sparsity {sp:g}")
        if len(sparsities) > 1:
            ax.plot([], [], markers[j % 4], color="0.3", label=f"sparsity {sp:g}")
    ax.set_yticks(list(y.values()))
    ax.set_yticklabels(list(y.keys()))
    ax.set_ylim(-0.7, len(keys) - 0.3)
    ax.set_xlabel("test accuracy (%, last epoch)\nseed mean, one-std bar")
    ax.grid(alpha=0.3, axis="x")
    mark_zoom(ax, shown, unit="%", fmt="{:.1f}", axis="x")
    gx.axvline(0, color="0.3", lw=1.0)
    lo, hi = gx.get_xlim()
    gx.set_xlim(min(lo, 0.0), max(hi, 0.0))
    gx.set_xlabel(f"test accuracy − {reference}\n(points, 95% interval)")
    gx.grid(alpha=0.3, axis="x")
    legend_below(fig)
    return fig


def figure_zeroed_init(summary: pd.DataFrame) -> plt.Figure:
    """E-F5: test accuracy of dense training from an init with a random fraction of the weights zeroed."""
    use_book_style()
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH * 0.7, 3.6), layout="constrained")
    d = summary.sort_values("sparsity")
    d = d.assign(**{c: 100 * d[c] for c in ("test_acc", "test_acc_std", "train_acc", "train_acc_std") if c in d})
    sparsity_band(ax, d, "test_acc", "#9467bd", label="test")
    sparsity_band(ax, d, "train_acc", "#1f77b4", style="--", label="train")
    density_ticks(ax, d.sparsity.unique())
    ax.set_xlabel("fraction of the initial weights set to zero (%)")
    ax.set_ylabel("accuracy (%, last epoch)")
    ax.grid(alpha=0.3)
    mark_zoom(ax, list(d.test_acc) + list(d.train_acc), unit="%", fmt="{:.1f}")
    legend_below(fig)
    return fig


def figure_grad_norms(norms: pd.DataFrame, sparsities: Sequence[float]) -> plt.Figure:
    """G-1: the gradient norm on a fixed batch over training, one panel per sparsity, one line per
    solution (seed mean, one-std band), log scale."""
    use_book_style()
    fig, axes = plt.subplots(1, len(sparsities), figsize=(PAGE_WIDTH * (0.75 if len(sparsities) == 1 else 1.0), 3.6),
                             sharey=True, squeeze=False, layout="constrained")
    for ax, s in zip(axes[0], sparsities):
        d = norms[norms.sparsity == s]
        for sol in [k for k in SOLUTION_COLORS if k in set(d.solution)]:
            e = d[d.solution == sol].pivot_table(index="seed", columns="epochs", values="grad_norm")
            band(ax, e.columns.to_numpy(dtype=float), e.to_numpy(), SOLUTION_COLORS[sol], label=sol)
        ax.set_yscale("log")
        ax.set_title(f"sparsity {s:g}")
        ax.set_xlabel("epoch (0: at initialization)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("gradient norm (fixed batch, log scale)")
    legend_below(fig, ncol=min(4, len(set(norms.solution))))
    return fig


def figure_pairs(pairs: pd.DataFrame) -> plt.Figure:
    """G-3: L-S ↔ P-S against S-S ↔ P-S: L2 distance, test disagreement and two-model ensemble accuracy
    per sparsity (seed means, error bars one std; bars start at zero)."""
    use_book_style()
    cols = [("distance", "L2 distance", 1.0), ("disagreement", "test disagreement (%)", 100.0),
            ("ensemble_accuracy", "ensemble test\naccuracy (%)", 100.0)]
    fig, axes = plt.subplots(1, 3, figsize=(PAGE_WIDTH, 3.3), layout="constrained")
    sparsities = sorted(pairs.sparsity.unique())
    x = np.arange(len(sparsities))
    for ax, (col, label, unit) in zip(axes, cols):
        for i, (pair, color) in enumerate((("L-S ↔ P-S", SOLUTION_COLORS["L-S"]), ("S-S ↔ P-S", SOLUTION_COLORS["S-S"]))):
            g = pairs[pairs.pair == pair].groupby("sparsity")[col]
            ax.bar(x + (i - 0.5) * 0.38, unit * g.mean().reindex(sparsities), 0.38,
                   yerr=unit * g.std(ddof=1).reindex(sparsities).fillna(0), color=color, label=pair, capsize=3)
        ax.set_xticks(x)
        ax.set_xticklabels([f"{s:g}" for s in sparsities])
        ax.set_xlabel("sparsity")
        ax.set_title(label)
        ax.grid(alpha=0.3, axis="y")
    legend_below(fig, ncol=2)
    return fig


def figure_objective_paths(paths: pd.DataFrame, by: str, *, xlabel: str) -> plt.Figure:
    """E-F3, E-F4, E-F6/7, E-F8: along each path (one color per value of ``by``), the training
    cross-entropy (left, log scale) and the L2 term (right), seed means with one-std bands."""
    use_book_style()
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.6), layout="constrained")
    cmap = plt.get_cmap("tab10")
    for i, (name, d) in enumerate(paths[paths.subset == "train"].groupby(by, sort=False)):
        for ax, col in zip(axes, ("loss", "l2")):
            e = d.pivot_table(index="seed", columns="t", values=col)
            band(ax, e.columns.to_numpy(dtype=float), e.to_numpy(), cmap(i), label=name)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("train cross-entropy")
    axes[1].set_ylabel("L2 term λ/2·‖θ‖²")
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.axvline(0, color="0.6", lw=0.7)
        ax.axvline(1, color="0.6", lw=0.7)
        ax.grid(alpha=0.3)
    legend_below(fig, ncol=2)
    return fig
