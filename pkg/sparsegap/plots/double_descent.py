"""Figures of chapters 7 and 8: sparse double descent, its dynamics, re-dense training and the landscape
around sparse and re-dense minima."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from .draw import band, density_ticks, over_epochs, sparsity_axis, sparsity_band
from .style import PAGE_WIDTH, legend_below, note_figure, use_book_style


HEURISTIC_COLORS = {"magnitude": "#1f77b4", "gradient": "#2ca02c", "random": "#d62728"}
KEY_COLORS = {"dense": "0.35", "overfitting": "#d62728", "sweet spot": "#2ca02c", "underfitting": "#9467bd"}


def _dense_gap(table: pd.DataFrame, noise: float, heuristic: str) -> pd.DataFrame:
    """Per round of one chain: last-epoch test accuracy minus the dense network's (round 0) of the same
    seed, seed mean and std of the paired differences, with the round's sparsity."""
    t = table[(table.noise == noise) & (table.heuristic == heuristic)]
    dense = t[t["round"] == 0].set_index("seed").test_acc
    t = t.assign(gap=t.test_acc - t.seed.map(dense))
    g = t.groupby("round")
    return pd.DataFrame({"sparsity": g.sparsity.first(), "gap": g.gap.mean(),
                         "gap_std": g.gap.std(ddof=1).fillna(0.0)}).reset_index()


def figure_double_descent(summary: pd.DataFrame, table: pd.DataFrame | None = None,
                          early: pd.DataFrame | None = None) -> plt.Figure:
    """D-F1: per ε (columns), train accuracy (top), last-epoch (solid) and best (dotted) test accuracy
    (middle) against sparsity, one colour per heuristic; seed means with a one-std band. Both accuracy
    rows span 0 to 1. With the per-seed ``table`` (:attr:`Chains.table`), a bottom row shows the quantity
    D-F1 is about: last-epoch test accuracy minus the dense network's (percentage points, paired by seed,
    mean and one std), with zero marked; with ``early`` (:func:`early_stopped_dense`), the early-stopped
    dense network is drawn as a dash-dotted grey line in the test rows."""
    use_book_style()
    noises = sorted(summary.noise.unique())
    nrows = 3 if table is not None else 2
    fig, axes = plt.subplots(nrows, len(noises), figsize=(PAGE_WIDTH, 2.3 * nrows + 0.9), sharex="col",
                             squeeze=False, layout="constrained")
    early = early.set_index("noise") if early is not None else None
    for j, eps in enumerate(noises):
        for h in HEURISTIC_COLORS:
            d = summary[(summary.noise == eps) & (summary.heuristic == h)].sort_values("round")
            if d.empty:
                continue
            c = HEURISTIC_COLORS[h]
            sparsity_band(axes[0, j], d, "train_acc", c, label=f"{h} pruning")
            sparsity_band(axes[1, j], d, "test_acc", c)
            axes[1, j].plot(sparsity_axis(d.sparsity), d.test_best, ":", color=c, lw=1.2)
            if table is not None:
                sparsity_band(axes[2, j], _dense_gap(table, eps, h).assign(gap=lambda x: 100 * x.gap,
                                                                              gap_std=lambda x: 100 * x.gap_std),
                               "gap", c)
        axes[0, j].axhline(1 - eps, color="0.5", lw=0.8, ls="--", label="clean share 1 − ε")
        if early is not None and eps in early.index:
            e = early.loc[eps]
            axes[1, j].axhline(e.test_best, color="0.35", ls="-.", lw=1.0, label="early-stopped dense")
            if table is not None:
                axes[2, j].axhline(100 * (e.test_best - e.test_acc), color="0.35", ls="-.", lw=1.0)
        axes[0, j].set_title(f"ε = {eps:g}")
        for ax in axes[:2, j]:
            ax.set_ylim(0, 1.02)
        if table is not None:
            axes[2, j].axhline(0, color="k", lw=0.7)
        density_ticks(axes[-1, j], summary[summary.noise == eps].sparsity.unique())
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("train accuracy\n(noisy labels)")
    axes[1, 0].set_ylabel("test accuracy\n(solid: last, dotted: best)")
    if table is not None:
        axes[2, 0].set_ylabel("test accuracy − dense\n(points, last epoch)")
    legend_below(fig, ncol=3)
    return fig


def _epoch_panels(hist_by_key: dict[str, list[dict]], series, sparsity_of: dict[str, float], ylabel: str,
                  *, vline: float | None = None) -> plt.Figure:
    """One panel per characteristic sparsity, accuracy (0 to 1) over epochs, seed mean and one-std band;
    one legend below the panels."""
    use_book_style()
    keys = [k for k in hist_by_key if hist_by_key[k]]
    if not keys:
        return note_figure("No characteristic sparsity to show at this scale.")
    fig, axes = plt.subplots(1, len(keys), figsize=(PAGE_WIDTH, 3.3), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, key in zip(axes[0], keys):
        hs = hist_by_key[key]
        for name, style, color, label in series:
            band(ax, *over_epochs(hs, name), color, style, label=label)
        if vline is not None:
            ax.axvline(vline, color="0.4", lw=0.8, ls=":")
        ax.set_title(f"{key}\n{100 * sparsity_of[key]:.4g}% sparse")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(ylabel)
    legend_below(fig, ncol=len(series))
    return fig


def figure_dd_dynamics(hist_by_key: dict[str, list[dict]], sparsity_of: dict[str, float]) -> plt.Figure:
    """D-F2: train (noisy labels) and test accuracy over epochs at the characteristic sparsities."""
    return _epoch_panels(hist_by_key, [("train_acc", "-", "#1f77b4", "train (noisy labels)"),
                                       ("test_acc", "-", "#ff7f0e", "test")], sparsity_of, "accuracy")


def figure_dd_memorization(hist_by_key: dict[str, list[dict]], sparsity_of: dict[str, float]) -> plt.Figure:
    """D-F3: accuracy on the unpermuted, permuted (noisy label) and restored (true label) training
    samples over epochs at the characteristic sparsities."""
    return _epoch_panels(hist_by_key, [("accuracy:unpermuted", "-", "#2ca02c", "unpermuted (clean)"),
                                       ("accuracy:permuted", "-", "#d62728", "permuted, noisy label (memorized)"),
                                       ("accuracy:restored", "--", "#9467bd", "permuted, true label (restored)")],
                         sparsity_of, "train accuracy")


def figure_redense_dynamics(pairs: dict[str, tuple[list[dict], list[dict]]], sparsity_of: dict[str, float]
                            ) -> plt.Figure:
    """D-F4: accuracy over the epochs of sparse training, then re-dense training (after the dotted line)."""
    if not pairs:
        return note_figure("The chain has no characteristic sparsity beyond dense at this scale:\n"
                            "there is nothing to re-dense.")
    joined, switch = {}, None
    for key, (sparse_hs, dense_hs) in pairs.items():
        hs = []
        for sp, rd in zip(sparse_hs, dense_hs):
            n = len(sp["epoch"])
            switch = n
            h = {k: list(sp[k]) + list(rd[k]) for k in ("train_acc", "test_acc")}
            h["epoch"] = list(range(1, n + len(rd["epoch"]) + 1))
            h["trace"] = {name: {"epochs": list(sp["trace"][name]["epochs"]) + [n + e for e in rd["trace"][name]["epochs"]],
                                 "value": list(sp["trace"][name]["value"]) + list(rd["trace"][name]["value"])}
                          for name in ("accuracy:permuted",)}
            hs.append(h)
        joined[key] = hs
    return _epoch_panels(joined, [("train_acc", "-", "#1f77b4", "train (noisy labels)"),
                                  ("test_acc", "-", "#ff7f0e", "test"),
                                  ("accuracy:permuted", "--", "#d62728", "permuted samples fitted (memorized)")],
                         sparsity_of, "accuracy", vline=switch)


def figure_interpolation(paths: pd.DataFrame, names: dict[int, str]) -> plt.Figure:
    """D-F5: loss (blue, left axis, from zero) and accuracy (red, right axis, 0 to 1) along
    (1-α)·sparse + α·re-dense, train solid and test dashed, one panel per characteristic sparsity (seed
    means); one legend below the panels."""
    use_book_style()
    rounds = [r for r in names if (paths["round"] == r).any()] if len(paths) else []
    if not rounds:
        return note_figure("The chain has no characteristic sparsity beyond dense at this scale:\n"
                            "there is no path from a sparse to a re-dense solution.")
    fig, axes = plt.subplots(1, len(rounds), figsize=(PAGE_WIDTH, 3.4), squeeze=False, layout="constrained")
    handles, labels = [], []
    for i, (ax, rnd) in enumerate(zip(axes[0], rounds)):
        p = paths[paths["round"] == rnd].groupby(["subset", "t"]).mean(numeric_only=True).reset_index()
        right = ax.twinx()
        for subset, style in (("train", "-"), ("test", "--")):
            q = p[p.subset == subset]
            ax.plot(q.t, q.loss, style, color="#1f77b4", lw=1.3, label=f"loss, {subset}")
            right.plot(q.t, q.accuracy, style, color="#d62728", lw=1.3, label=f"accuracy, {subset}")
        ax.set_title(f"{names[rnd]}\n{100 * p.sparsity.iloc[0]:.4g}% sparse")
        ax.set_xlabel("α (0: sparse, 1: re-dense)")
        ax.set_ylim(bottom=0)
        ax.tick_params(axis="y", colors="#1f77b4")
        right.tick_params(axis="y", colors="#d62728")
        right.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.set_ylabel("cross-entropy loss", color="#1f77b4")
            for a in (ax, right):
                h, lab = a.get_legend_handles_labels()
                handles += h
                labels += lab
        if i == len(rounds) - 1:
            right.set_ylabel("accuracy", color="#d62728")
    fig.legend(handles, labels, loc="outside lower center", ncol=4, frameon=False)
    return fig


def figure_loss_curves(curves: pd.DataFrame, names: dict[int, str]) -> plt.Figure:
    """D-F6: train loss along a filter-normalized random direction around the sparse (left) and the
    re-dense (right) minima at the characteristic sparsities, the dense minimum in both (seed means);
    one legend below the panels."""
    use_book_style()
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.6), sharey=True, layout="constrained")
    m = curves.groupby(["solution", "round", "alpha"]).mean(numeric_only=True).reset_index()
    for ax, sol in zip(axes, ("sparse", "re-dense")):
        d = m[m.solution == "dense"]
        ax.plot(d.alpha, d.loss, color=KEY_COLORS["dense"], lw=1.3, label="dense")
        for rnd, name in names.items():
            d = m[(m.solution == sol) & (m["round"] == rnd)]
            if rnd == 0 or d.empty:
                continue
            ax.plot(d.alpha, d.loss, color=KEY_COLORS.get(name, "k"), lw=1.3,
                    label=f"{name} ({100 * d.sparsity.iloc[0]:.4g}% sparse)")
        ax.set_title(f"{sol} minima")
        ax.set_xlabel("α (filter-normalized step)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("train loss (log scale)")
    legend_below(fig, ncol=2)
    return fig


def figure_distance(table: pd.DataFrame) -> plt.Figure:
    """D-F7: L2 distance from initialization (left panel, from zero) and test accuracy (right panel, 0
    to 1) against sparsity, re-dense solutions solid and sparse ones dashed (seed means, one-std bands);
    one legend below the panels."""
    use_book_style()
    g = table.groupby("round")
    m = g.mean(numeric_only=True)
    s = g.std(ddof=1, numeric_only=True).add_suffix("_std")
    d = m.join(s)
    d = d[d.index > 0]
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.6), sharex=True, layout="constrained")
    for sol, style in (("redense", "-"), ("sparse", "--")):
        name = "re-dense" if sol == "redense" else "sparse"
        marker = "o" if sol == "redense" else "s"
        sparsity_band(axes[0], d.dropna(subset=[f"{sol}_distance"]), f"{sol}_distance", "#1f77b4", style,
                       label=f"{name} solutions", marker=marker)
        sparsity_band(axes[1], d.dropna(subset=[f"{sol}_test_acc"]), f"{sol}_test_acc", "#d62728", style,
                       label=f"_{name} solutions", marker=marker)   # "_": named in the data, not the legend
    axes[0].set_ylim(bottom=0)
    axes[1].set_ylim(0, 1.02)
    axes[0].set_ylabel("L2 distance from initialization")
    axes[1].set_ylabel("test accuracy")
    for ax in axes:
        density_ticks(ax, d.sparsity)
        ax.grid(alpha=0.3)
    # the legend speaks of line styles only: colours are the panels'
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color="0.3", ls="-", marker="o", ms=3, label="re-dense solutions"),
               Line2D([], [], color="0.3", ls="--", marker="s", ms=3, label="sparse solutions")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    return fig
