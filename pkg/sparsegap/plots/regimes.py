"""Figures of chapters 1-3 (the Price of Sparsity): the two regimes, training curves, Tr(F) over training
and the curvature of the solutions."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .draw import set_sparsity_ticks, sparsity_axis
from .style import COLORS, PAGE_WIDTH, legend_below, line_colors, mark_zoom, use_book_style


REGIME_COLORS = {"generalization": "#f4b6c2", "optimization": "#b7e4c7", "both underfit": "#dddddd", "no gap": "none"}


def shade_regimes(ax, regimes: pd.DataFrame) -> None:
    """Shade each sparsity's span (half-way to its neighbours) by its regime."""
    x = sparsity_axis(regimes.sparsity)
    edges = np.concatenate([[x[0] - (x[1] - x[0]) / 2 if len(x) > 1 else x[0] - 0.1],
                            (x[1:] + x[:-1]) / 2,
                            [x[-1] + (x[-1] - x[-2]) / 2 if len(x) > 1 else x[0] + 0.1]])
    for i, regime in enumerate(regimes.regime):
        color = REGIME_COLORS.get(regime, "none")
        if color != "none":
            ax.axvspan(edges[i], edges[i + 1], color=color, alpha=0.45, lw=0, zorder=0)


def figure_two_regimes(summary: pd.DataFrame, regimes: pd.DataFrame, *, gap: pd.DataFrame | None = None,
                       title: str = "") -> plt.Figure:
    """P-F1: accuracy, the test-accuracy gap, loss and training-prediction entropy of Sol-S and Sol-F
    against sparsity, in a 2 x 2 grid with one legend underneath.

    Lines are seed means, bands one standard deviation; Sol-D is the horizontal reference. The claim is
    about the gap between Sol-F and Sol-S, a few points at most where both fit the training set, so it
    has its own panel (top right): ``gap`` has one row per sparsity with the paired Sol-F − Sol-S test
    accuracy ``estimate`` and its 95% interval ``lo``, ``hi`` (fractions; see
    :func:`sparsegap.studies.two_regimes.test_gap_by_sparsity`). Without ``gap`` the panel shows the
    difference of the seed means, without an interval.
    """
    use_book_style()
    panels = [("accuracy (%)", ("train_acc", "test_acc"), 100.0), ("cross-entropy loss", ("train_loss", "test_loss"), 1.0),
              ("training-prediction\nentropy (nats)", ("train_entropy",), 1.0)]
    fig, grid = plt.subplots(2, 2, figsize=(PAGE_WIDTH, 7.4), layout="constrained")
    axes, gap_ax = [grid[0, 0], grid[1, 0], grid[1, 1]], grid[0, 1]
    dense = summary[summary.stage == "Sol-D"].iloc[0]
    sparsities = sorted(regimes.sparsity)
    for ax, (ylabel, metrics, unit) in zip(axes, panels):
        shade_regimes(ax, regimes)
        shown = []
        for metric in metrics:
            style = "-" if metric.startswith("train") else "--"
            part = metric.split("_")[0]
            ax.axhline(unit * dense[metric], color=COLORS["Sol-D"], ls=style, lw=1, label=f"Sol-D {part}")
            for stage in ("Sol-F", "Sol-S"):
                d = summary[summary.stage == stage].sort_values("sparsity")
                x = sparsity_axis(d.sparsity)
                ax.plot(x, unit * d[metric], style, marker="o", ms=3.5, color=COLORS[stage], label=f"{stage} {part}")
                shown += list(unit * d[metric])
                std = d[f"{metric}_std"].fillna(0)
                ax.fill_between(x, unit * (d[metric] - std), unit * (d[metric] + std), color=COLORS[stage],
                                alpha=0.2, lw=0)
        set_sparsity_ticks(ax, sparsities)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        mark_zoom(ax, shown + [unit * dense[m] for m in metrics], unit="%" if unit == 100.0 else "")
    # the quantity of the claim, on its own axis: Sol-F - Sol-S test accuracy, in points, zero included
    shade_regimes(gap_ax, regimes)
    if gap is None:
        f = summary[summary.stage == "Sol-F"].set_index("sparsity").test_acc
        s = summary[summary.stage == "Sol-S"].set_index("sparsity").test_acc
        d = (f - s).dropna()
        gap = pd.DataFrame({"sparsity": d.index, "estimate": d.to_numpy(), "lo": np.nan, "hi": np.nan})
        band_label = None
    else:
        band_label = "95% interval over seeds"
    g = gap.sort_values("sparsity")
    x = sparsity_axis(g.sparsity)
    gap_ax.axhline(0, color="k", lw=0.8)
    lo, hi = 100 * g.lo.to_numpy(dtype=float), 100 * g.hi.to_numpy(dtype=float)
    finite = np.isfinite(lo) & np.isfinite(hi)
    if finite.any():
        gap_ax.fill_between(x, np.where(finite, lo, np.nan), np.where(finite, hi, np.nan), color="0.45",
                            alpha=0.25, lw=0, label=band_label)
    gap_ax.plot(x, 100 * g.estimate, "--", marker="o", ms=3.5, color="k", label="Sol-F − Sol-S test")
    set_sparsity_ticks(gap_ax, sparsities)
    gap_ax.set_ylabel("test-accuracy gap\nSol-F − Sol-S (points)")
    gap_ax.grid(alpha=0.3)
    lo_y, hi_y = gap_ax.get_ylim()
    gap_ax.set_ylim(min(lo_y, 0), max(hi_y, 0))  # zero stays on the axis: the gap's sign is the claim
    present = [r for r, c in REGIME_COLORS.items() if c != "none" and r in set(regimes.regime)]
    for r in present:
        gap_ax.add_patch(plt.Rectangle((0, 0), 0, 0, color=REGIME_COLORS[r], alpha=0.45, label=f"{r} regime"))
    legend_below(fig, ncol=4, title="solid: train, dashed: test; bands: one std over seeds")
    if title:  # the book's caption says what the figure shows; a title is for use outside the book
        fig.suptitle(title, x=0.02, ha="left")
    return fig


def figure_training_curves(histories: dict[str, list[dict]], *, sparsity: float | None = None) -> plt.Figure:
    """Training curves side by side, one column per stage (e.g. Sol-S and Sol-F).

    ``histories`` maps a stage to a list of per-seed histories; the mean is drawn, the seeds faintly.
    """
    use_book_style()
    stages = list(histories)
    fig, axes = plt.subplots(2, len(stages), figsize=(PAGE_WIDTH, 5.6), sharey="row", squeeze=False,
                             layout="constrained")
    for j, stage in enumerate(stages):
        for i, (metric, label) in enumerate((("acc", "accuracy"), ("loss", "loss"))):
            ax = axes[i, j]
            if not histories[stage]:
                ax.text(0.5, 0.5, "every seed diverged", ha="center", va="center", transform=ax.transAxes)
                continue
            for part, style in (("train", "-"), ("test", "--")):
                runs = np.array([h[f"{part}_{metric}"] for h in histories[stage]])
                epochs = np.arange(1, runs.shape[1] + 1)
                for r in runs:
                    ax.plot(epochs, r, style, color=COLORS.get(stage, "k"), alpha=0.25, lw=0.8,
                            label=f"_{stage} {part}, one seed")
                ax.plot(epochs, runs.mean(0), style, color=COLORS.get(stage, "k"), label=f"_{stage} {part}, seed mean")
            ax.set_ylabel(label if j == 0 else "")
            ax.grid(alpha=0.3)
            if metric == "loss":
                ax.set_yscale("log")
                ax.set_xlabel("epoch")
            else:
                ax.set_title(stage)
    # one legend under the panels (grey: the style means train or test in every column), never over a curve
    for part, style in (("train (bold: seed mean, faint: each seed)", "-"), ("test", "--")):
        axes[0, 0].plot([], [], style, color="0.3", label=part)
    legend_below(fig, ax=axes[0, 0], ncol=2)
    if sparsity is not None:
        fig.suptitle(f"sparsity {sparsity:g}", x=0.02, ha="left")
    return fig


def figure_fisher_trajectories(experiment, *, name: str = "fisher_trace", title: str = "") -> plt.Figure:
    """P-F3: Tr(F) over training, one line per sparsity (mean over seeds), a panel per stage,
    with the training accuracy underneath so that each curve can be read against its regime.
    One legend under the panels (a sparsity has the same colour in every panel), never over a curve.
    Where the runs logged the standard error of each measurement (the trace's ``"se"``), a band of ± one
    standard error of the seed mean shows the measurement's own noise (not the spread between seeds)."""
    stages = [s for s in ("Sol-S", "Sol-F") if any(k[0] == s for k in experiment.runs)]
    seeds = sorted({k[2] for k in experiment.runs})
    sparsities = experiment.sparsities
    colors = line_colors(len(sparsities))
    use_book_style()
    fig, axes = plt.subplots(2, len(stages), figsize=(PAGE_WIDTH, 6.8), sharex="col", sharey="row", squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1]}, layout="constrained")

    def mean_curve(stage, s, key):
        """(x, the seed mean, its standard error from the logged ones, or None where a run logged none)"""
        hs = experiment.trained_histories(stage, 0.0 if stage == "Sol-D" else s)
        if not hs:  # every seed diverged: nothing to draw
            return np.array([]), np.array([]), None
        if key == name:
            traces = [h["trace"][name] for h in hs]
            se = None
            if all(len(t.get("se", ())) == len(t["value"]) for t in traces):   # runs stored before issue 26: none
                se = np.sqrt(np.sum(np.square([t["se"] for t in traces]), axis=0)) / len(traces)
            return np.asarray(traces[0]["epochs"]), np.mean([t["value"] for t in traces], axis=0), se
        return np.asarray(hs[0]["epoch"]), np.mean([h[key] for h in hs], axis=0), None

    def draw(ax, x, y, se, scale, **style):
        line, = ax.plot(x, scale * y, **style)
        if se is not None and len(x):
            # a log axis: the band's lower edge stays above 0 (a tenth of the curve at most)
            ax.fill_between(x, scale * np.maximum(y - se, y / 10), scale * (y + se), color=line.get_color(),
                            alpha=0.2, lw=0)

    for j, stage in enumerate(stages):
        top, bottom = axes[0, j], axes[1, j]
        for key, ax, scale in ((name, top, 1.0), ("train_acc", bottom, 100.0)):
            draw(ax, *mean_curve("Sol-D", 0.0, key), scale, color="k", lw=1.6, label="dense (Sol-D)")
            for i, s in enumerate(sparsities):
                draw(ax, *mean_curve(stage, s, key), scale, color=colors[i], lw=1.2, label=f"sparsity {s:g}")
        top.set_yscale("log")
        top.set_ylabel("Tr(F), sampled labels\n(log scale)" if j == 0 else "")
        top.set_title(stage)
        top.grid(alpha=0.3)
        bottom.set_ylabel("train accuracy (%)" if j == 0 else "")
        bottom.set_xlabel("epoch")
        bottom.grid(alpha=0.3)
    legend_below(fig, ax=axes[0, 0], ncol=min(len(sparsities) + 1, 5))
    fig.suptitle(title or f"Fisher trace over training (mean of {len(seeds)} seeds)", x=0.02, ha="left")
    return fig


def figure_curvature(table) -> plt.Figure:
    """P-T2: Tr(F), Tr(H) and Jacobian norm of Sol-D, Sol-F and Sol-S against sparsity (log scale).

    ``table`` has one row per (stage, sparsity, seed): large markers are seed means, small dots the
    seeds, the horizontal line Sol-D; one legend under the panels. (The paper's values are not drawn: a
    ResNet on CIFAR-100 lives on another scale.)
    """
    metrics = [("fisher_trace", "Tr(F)"), ("hessian_trace", "Tr(H)"), ("jacobian_norm", "Jacobian norm")]
    sparsities = sorted(s for s in table.sparsity.unique() if s > 0)
    x_of = {s: i for i, s in enumerate(sparsities)}
    use_book_style()
    fig, axes = plt.subplots(1, 3, figsize=(PAGE_WIDTH, 3.6), layout="constrained")
    for ax, (m, label) in zip(axes, metrics):
        ax.axhline(table[table.stage == "Sol-D"][m].mean(), color=COLORS["Sol-D"], lw=1.2, label="Sol-D (seed mean)")
        for k, stage in enumerate(("Sol-F", "Sol-S")):
            d = table[table.stage == stage]
            offset = (k - 0.5) * 0.12
            means = d.groupby("sparsity")[m].mean().reindex(sparsities)
            ax.plot(np.arange(len(sparsities)) + offset, means, "o-", ms=9, color=COLORS[stage],
                    label=f"{stage} (seed mean)")
            ax.plot([x_of[s] + offset for s in d.sparsity], d[m], ".", color="k", ms=4, alpha=0.6,
                    label=f"_{stage}, one seed")
        ax.plot([], [], ".", color="k", ms=4, alpha=0.6, label="one seed")
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(sparsities)))
        ax.set_xticklabels([f"{s:g}" for s in sparsities])
        ax.set_xlim(-0.5, len(sparsities) - 0.5)
        ax.set_xlabel("sparsity")
        ax.set_title(f"{label} (log scale)")
        ax.grid(alpha=0.3)
    legend_below(fig, ax=axes[0], ncol=4)
    return fig
