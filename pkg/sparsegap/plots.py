"""One function per figure: results in, matplotlib Figure out. No training here."""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

# Figures are drawn at DPI pixels per inch (twice that on the page's image, see use_book_style) and at
# most PAGE_WIDTH inches wide (FULL_WIDTH for cells tagged `full-width`), so that the book shows them at
# their natural size down to an 800 px window, whose text column is 705 px: text of FONT_PT points then
# stays at least MIN_FONT_PT on screen (tests/test_book.py measures it in a browser at 800 and 1400 px).
DPI = 100
FONT_PT = 10.5
MIN_FONT_PT = 9
PAGE_WIDTH = 6.9
FULL_WIDTH = 10.5


def use_book_style() -> None:
    """The one look of every figure in the book: sizes legible at the book's width, drawn at twice the
    pixel density (the page shows them at their natural size, crisp on high-resolution screens)."""
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        set_matplotlib_formats("retina")
    except ImportError:  # outside Jupyter there is no inline backend to configure
        pass
    plt.rcParams.update({
        "figure.dpi": DPI, "savefig.dpi": DPI, "font.size": FONT_PT, "axes.titlesize": FONT_PT + 0.5,
        "axes.labelsize": FONT_PT, "xtick.labelsize": FONT_PT - 1, "ytick.labelsize": FONT_PT - 1,
        "legend.fontsize": FONT_PT - 1.5, "legend.title_fontsize": FONT_PT - 1.5, "figure.titlesize": FONT_PT + 1,
    })


def line_colors(n: int, cmap: str = "viridis") -> list:
    """``n`` colours along ``cmap`` for lines, stopping short of its palest end (viridis's pale yellow
    is not legible as a line on white)."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"line_colors: n must be a positive int, got {n!r}")
    return [plt.get_cmap(cmap)(x) for x in np.linspace(0.0, 0.8, int(n))] if n > 1 else [plt.get_cmap(cmap)(0.0)]


def mark_zoom(ax, values, *, unit: str = "", fmt: str = "{:.3g}", axis: str = "y") -> None:
    """Say in the label of a zoomed ``axis`` (one that does not include zero) that it is zoomed, with the
    range the plotted ``values`` span, so that a small difference is not read as a large one. Call it
    after the limits are final."""
    vals = np.asarray(values, dtype=float)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return
    lo, hi = (ax.get_ylim() if axis == "y" else ax.get_xlim())
    if lo <= 0 <= hi:
        return  # the axis includes zero: nothing is hidden
    span = f"{fmt.format(vals.min())}–{fmt.format(vals.max())}{(' ' + unit) if unit else ''}"
    note = f"(axis zoomed: data span {span})"
    if axis == "y":
        ax.set_ylabel(f"{ax.get_ylabel()}\n{note}".strip())
    else:
        ax.set_xlabel(f"{ax.get_xlabel()}\n{note}".strip())


def legend_below(fig: plt.Figure, ax=None, *, ncol: int | None = None, **kwargs):
    """One legend for the figure, below its panels, so that it never covers data. Handles are taken from
    ``ax`` (default: the first axes with labelled artists), duplicates dropped."""
    axes = [ax] if ax is not None else fig.axes
    handles, labels = [], []
    for a in axes:
        for h, lab in zip(*a.get_legend_handles_labels()):
            if lab not in labels and not lab.startswith("_"):
                handles.append(h)
                labels.append(lab)
    if not handles:
        return None
    for a in fig.axes:
        if a.get_legend() is not None:
            a.get_legend().remove()
    ncol = ncol or min(len(labels), 4)
    if fig.get_layout_engine() is None or type(fig.get_layout_engine()).__name__ != "ConstrainedLayoutEngine":
        fig.set_layout_engine("constrained")  # "outside" legends need it
    leg = fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, **kwargs)
    # A legend wider than the figure would widen the saved image past the page's column: fewer columns.
    renderer = fig.canvas.get_renderer()
    while ncol > 1 and leg.get_window_extent(renderer).width > 0.98 * fig.bbox.width:
        leg.remove()
        ncol -= 1
        leg = fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, **kwargs)
    return leg


COLORS = {"Sol-D": "0.35", "Sol-F": "#1f77b4", "Sol-S": "#ff7f0e"}
REGIME_COLORS = {"generalization": "#f4b6c2", "optimization": "#b7e4c7", "both underfit": "#dddddd", "no gap": "none"}


def sparsity_axis(sparsities) -> np.ndarray:
    """Positions on a log-density axis, so that 0.9, 0.99 and 0.999 are evenly spread."""
    return -np.log10(1.0 - np.asarray(sparsities, dtype=float))


def _set_sparsity_ticks(ax, sparsities) -> None:
    ax.set_xticks(sparsity_axis(sparsities))
    ax.set_xticklabels([f"{s:g}" for s in sparsities], rotation=45)
    ax.set_xlabel("sparsity")


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
        _set_sparsity_ticks(ax, sparsities)
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
    _set_sparsity_ticks(gap_ax, sparsities)
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
                    ax.plot(epochs, r, style, color=COLORS.get(stage, "k"), alpha=0.25, lw=0.8)
                ax.plot(epochs, runs.mean(0), style, color=COLORS.get(stage, "k"))
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


def figure_to_png(fig: plt.Figure, dpi: int = DPI) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def figure_fisher_trajectories(experiment, *, name: str = "fisher_trace", title: str = "") -> plt.Figure:
    """P-F3: Tr(F) over training, one line per sparsity (mean over seeds), a panel per stage,
    with the training accuracy underneath so that each curve can be read against its regime.
    One legend under the panels (a sparsity has the same colour in every panel), never over a curve."""
    stages = [s for s in ("Sol-S", "Sol-F") if any(k[0] == s for k in experiment.runs)]
    seeds = sorted({k[2] for k in experiment.runs})
    sparsities = experiment.sparsities
    colors = line_colors(len(sparsities))
    use_book_style()
    fig, axes = plt.subplots(2, len(stages), figsize=(PAGE_WIDTH, 6.8), sharex="col", sharey="row", squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1]}, layout="constrained")

    def mean_curve(stage, s, key):
        hs = experiment.trained_histories(stage, 0.0 if stage == "Sol-D" else s)
        if not hs:  # every seed diverged: nothing to draw
            return np.array([]), np.array([])
        if key == name:
            t = hs[0]["trace"][name]
            return np.asarray(t["epochs"]), np.mean([h["trace"][name]["value"] for h in hs], axis=0)
        return np.asarray(hs[0]["epoch"]), np.mean([h[key] for h in hs], axis=0)

    for j, stage in enumerate(stages):
        top, bottom = axes[0, j], axes[1, j]
        for key, ax, scale in ((name, top, 1.0), ("train_acc", bottom, 100.0)):
            x, y = mean_curve("Sol-D", 0.0, key)
            ax.plot(x, scale * y, color="k", lw=1.6, label="dense (Sol-D)")
            for i, s in enumerate(sparsities):
                x, y = mean_curve(stage, s, key)
                ax.plot(x, scale * y, color=colors[i], lw=1.2, label=f"sparsity {s:g}")
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
                    label="one seed" if stage == "Sol-S" else None)
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(sparsities)))
        ax.set_xticklabels([f"{s:g}" for s in sparsities])
        ax.set_xlim(-0.5, len(sparsities) - 0.5)
        ax.set_xlabel("sparsity")
        ax.set_title(f"{label} (log scale)")
        ax.grid(alpha=0.3)
    legend_below(fig, ax=axes[0], ncol=4)
    return fig


def _over_epochs(hs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values of shape seeds x points) of one history series over seeds: a tracker's trace
    (``history["trace"][key]``) or a per-epoch list of ``train()`` (``history[key]``)."""
    if key in hs[0].get("trace", {}):
        return np.asarray(hs[0]["trace"][key]["epochs"]), np.array([h["trace"][key]["value"] for h in hs])
    return np.asarray(hs[0]["epoch"], dtype=float), np.array([h[key] for h in hs])


def _band(ax, x, values: np.ndarray, color, style="-", label=None) -> None:
    """Seed mean as a line, one standard deviation as a band."""
    mean, std = values.mean(0), values.std(0)
    ax.plot(x, mean, style, color=color, lw=1.4, label=label)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.18, lw=0)


def figure_memorization(histories: dict[str, list[dict]], *, title: str = "") -> plt.Figure:
    """P-F4: per epoch, train accuracy (on the noisy labels), test accuracy, the clean samples
    predicted right, and the noisy samples memorized (noisy label) or predicted right (true label).

    ``histories`` maps a stage to its per-seed histories (with the chapter's subset trackers).
    """
    use_book_style()
    fig, axes = plt.subplots(2, 2, figsize=(PAGE_WIDTH, 6.6), sharex=True, layout="constrained")
    panels = [(axes[0, 0], "train accuracy (noisy labels)", [("train_acc", "-")]),
              (axes[0, 1], "test accuracy", [("test_acc", "-")]),
              (axes[1, 0], "clean samples: correct", [("accuracy:unpermuted", "-")]),
              (axes[1, 1], "noisy samples: memorized (solid)\nand correct (dashed)",
               [("accuracy:permuted", "-"), ("accuracy:restored", "--")])]
    for ax, ylabel, series in panels:
        for stage, hs in histories.items():
            if not hs:
                continue
            for key, style in series:
                _band(ax, *_over_epochs(hs, key), COLORS[stage], style, label=stage if style == "-" else None)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1.02)   # shares from 0 to 1: a small difference looks small
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    axes[1, 1].plot([], [], "-", color="k", label="solid: memorized (noisy label)")
    axes[1, 1].plot([], [], "--", color="k", label="dashed: correct (true label)")
    if title:
        fig.suptitle(title, x=0.02, ha="left")
    legend_below(fig, ncol=5)
    return fig


def figure_fisher_noise(histories: dict[str, list[dict]]) -> plt.Figure:
    """P-F5: Tr(F) over training on the noisy samples (solid) and on the clean ones (dashed), one
    panel per solution, on a shared log scale."""
    use_book_style()
    stages = [st for st, hs in histories.items() if hs]
    fig, axes = plt.subplots(1, len(stages), figsize=(PAGE_WIDTH, 3.5), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, stage in zip(axes[0], stages):
        hs = histories[stage]
        for key, style in (("fisher_trace:permuted", "-"), ("fisher_trace:unpermuted", "--")):
            x = np.asarray(hs[0]["trace"][key]["epochs"])
            _band(ax, x, np.array([h["trace"][key]["value"] for h in hs]), COLORS[stage], style)
        ax.set_yscale("log")
        ax.set_title(stage)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].plot([], [], "-", color="0.3", label="noisy samples")
    axes[0, 0].plot([], [], "--", color="0.3", label="clean samples")
    axes[0, 0].set_ylabel("Tr(F), sampled labels")
    legend_below(fig)
    return fig


def figure_noisy_confusion(matrices: dict[str, np.ndarray], classes: Sequence[str] | None = None, *,
                           epoch: float | None = None) -> plt.Figure:
    """Memorized noisy samples by (true class, noisy label), one heatmap per solution."""
    use_book_style()
    stages = list(matrices)
    fig, axes = plt.subplots(1, len(stages), figsize=(PAGE_WIDTH, 3.8), squeeze=False, sharey=True,
                             layout="constrained")
    top = max(1, max(int(m.max()) for m in matrices.values()))
    for ax, stage in zip(axes[0], stages):
        m = matrices[stage]
        im = ax.imshow(m, cmap="Blues", vmin=0, vmax=top)
        ax.set_title(f"{stage}: {int(m.sum())} memorized")
        ax.set_xlabel("noisy label")
        ticks = np.arange(len(m))
        names = list(classes) if classes is not None else [str(c) for c in ticks]
        step = 1 if len(m) <= 10 else int(np.ceil(len(m) / 10))
        ax.set_xticks(ticks[::step])
        ax.set_xticklabels(names[::step], rotation=90)
        ax.set_yticks(ticks[::step])
        ax.set_yticklabels(names[::step])
    axes[0, 0].set_ylabel("true class")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.6, label="samples")
    if epoch is not None:
        fig.suptitle(f"after epoch {epoch:g}", x=0.02, ha="left")
    return fig


# ------------------------------------------------------------ sparse double descent (chapters 7, 8)

HEURISTIC_COLORS = {"magnitude": "#1f77b4", "gradient": "#2ca02c", "random": "#d62728"}
KEY_COLORS = {"dense": "0.35", "overfitting": "#d62728", "sweet spot": "#2ca02c", "underfitting": "#9467bd"}


def _sparsity_band(ax, d: pd.DataFrame, col: str, color, style="-", label=None, marker="o") -> None:
    x = sparsity_axis(d.sparsity)
    ax.plot(x, d[col], style, color=color, marker=marker, ms=3, lw=1.3, label=label)
    std = d.get(f"{col}_std")
    if std is not None:
        std = std.fillna(0.0)
        ax.fill_between(x, d[col] - std, d[col] + std, color=color, alpha=0.15, lw=0)


def _density_ticks(ax, sparsities) -> None:
    """Ticks at every other round: sparsity on a log-density axis (0.9, 0.99, 0.999 evenly spaced)."""
    s = sorted(sparsities)
    s = s[::2] if len(s) > 6 else s
    ax.set_xticks(sparsity_axis(s))
    ax.set_xticklabels([f"{100 * v:.4g}" for v in s], rotation=60)
    ax.set_xlabel("sparsity (%)")


def _note_figure(message: str, *, height: float = 1.2) -> plt.Figure:
    """A figure that says, in words, why there is nothing to draw (e.g. a chain without the sparsities a
    panel needs), so that the page keeps its numbered figure and says so."""
    use_book_style()
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, height))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    return fig


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
            _sparsity_band(axes[0, j], d, "train_acc", c, label=f"{h} pruning")
            _sparsity_band(axes[1, j], d, "test_acc", c)
            axes[1, j].plot(sparsity_axis(d.sparsity), d.test_best, ":", color=c, lw=1.2)
            if table is not None:
                _sparsity_band(axes[2, j], _dense_gap(table, eps, h).assign(gap=lambda x: 100 * x.gap,
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
        _density_ticks(axes[-1, j], summary[summary.noise == eps].sparsity.unique())
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
        return _note_figure("No characteristic sparsity to show at this scale.")
    fig, axes = plt.subplots(1, len(keys), figsize=(PAGE_WIDTH, 3.3), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, key in zip(axes[0], keys):
        hs = hist_by_key[key]
        for name, style, color, label in series:
            _band(ax, *_over_epochs(hs, name), color, style, label=label)
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
        return _note_figure("The chain has no characteristic sparsity beyond dense at this scale:\n"
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
        return _note_figure("The chain has no characteristic sparsity beyond dense at this scale:\n"
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
        _sparsity_band(axes[0], d.dropna(subset=[f"{sol}_distance"]), f"{sol}_distance", "#1f77b4", style,
                       label=f"{name} solutions", marker=marker)
        _sparsity_band(axes[1], d.dropna(subset=[f"{sol}_test_acc"]), f"{sol}_test_acc", "#d62728", style,
                       marker=marker)
    axes[0].set_ylim(bottom=0)
    axes[1].set_ylim(0, 1.02)
    axes[0].set_ylabel("L2 distance from initialization")
    axes[1].set_ylabel("test accuracy")
    for ax in axes:
        _density_ticks(ax, d.sparsity)
        ax.grid(alpha=0.3)
    # the legend speaks of line styles only: colours are the panels'
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color="0.3", ls="-", marker="o", ms=3, label="re-dense solutions"),
               Line2D([], [], color="0.3", ls="--", marker="s", ms=3, label="sparse solutions")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    return fig


# ------------------------------------------------------------ how sparse networks are found (chapters 9, 10)

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
        _sparsity_band(ax, d, "test_acc", SOLUTION_COLORS.get(k, "k"), label=k)
    sparsities = summary[summary.key != "dense"].sparsity.unique()
    _density_ticks(ax, sparsities)
    ax.set_ylabel("test accuracy (%, last epoch)")
    ax.grid(alpha=0.3)
    if len(dense):
        shown.append(100 * float(dense.test_acc.iloc[0]))
    mark_zoom(ax, shown, unit="%", fmt="{:.1f}")
    if gaps is not None:
        gx = axes[0, 1]
        _gap_panel(gx, gaps, reference, keys, sparsity_axis)
        _density_ticks(gx, sparsities)
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
                        color=SOLUTION_COLORS.get(k, "k"))
            g = gaps[(gaps.key == k) & (gaps.sparsity == sp)]
            if len(g):
                v, lo, hi = (100 * float(g[c].iloc[0]) for c in ("gap", "lo", "hi"))
                err = [[v - lo if np.isfinite(lo) else 0.0], [hi - v if np.isfinite(hi) else 0.0]]
                gx.errorbar(v, y[k] + off(j), xerr=err, fmt=markers[j % 4], ms=5, capsize=3,
                            color=SOLUTION_COLORS.get(k, "k"))
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
    _sparsity_band(ax, d, "test_acc", "#9467bd", label="test")
    _sparsity_band(ax, d, "train_acc", "#1f77b4", style="--", label="train")
    _density_ticks(ax, d.sparsity.unique())
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
            _band(ax, e.columns.to_numpy(dtype=float), e.to_numpy(), SOLUTION_COLORS[sol], label=sol)
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


def figure_grad_snr(table: pd.DataFrame, term: str = "snr", *, ylabel: str = "gradient SNR") -> plt.Figure:
    """P-F11: a per-layer gradient term over epochs, one row per sparsity and one column per layer, for
    Sol-S, Sol-F and Sol-D (seed means, one-std bands; log scale)."""
    use_book_style()
    sparsities = sorted(s for s in table.sparsity.unique() if s > 0)
    layers = sorted(table.layer.unique())
    fig, axes = plt.subplots(len(sparsities), len(layers), figsize=(PAGE_WIDTH, 2.5 * len(sparsities) + 0.6),
                             sharex=True, squeeze=False, layout="constrained")
    for i, s in enumerate(sparsities):
        for j, layer in enumerate(layers):
            ax = axes[i, j]
            drawn = False
            for stage in ("Sol-D", "Sol-F", "Sol-S"):
                d = table[(table.stage == stage) & (table.layer == layer)
                          & (table.sparsity == (0.0 if stage == "Sol-D" else s))]
                if d.empty:
                    continue
                e = d.pivot_table(index="seed", columns="epochs", values=term)
                _band(ax, e.columns.to_numpy(dtype=float), e.to_numpy(), COLORS[stage], label=stage)
                drawn |= bool((e.to_numpy() > 0).any())   # pivot_table drops the NaN
            if drawn:
                ax.set_yscale("log")
            else:   # NaN: the gradients did not vary over the epoch (one minibatch per epoch)
                ax.text(0.5, 0.5, f"no {ylabel}: the minibatch gradients\ndid not vary (one minibatch per epoch?)",
                        ha="center", va="center", transform=ax.transAxes, fontsize=MIN_FONT_PT)
            ax.grid(alpha=0.3)
            ax.set_title(f"{layer}, sparsity {s:g}")
            if j == 0:
                ax.set_ylabel(ylabel)
            if i == len(sparsities) - 1:
                ax.set_xlabel("epoch")
    legend_below(fig, ncol=3)
    return fig


# ------------------------------------------------------------ the path from Init-S to Sol-F (chapter 5)

def figure_init_s_path(paths: pd.DataFrame) -> plt.Figure:
    """P-F6 (a): loss along (1 − α)·Init-S + α·Sol-F on the training (solid) and the test set (dashed),
    seed means with one-std bands."""
    use_book_style()
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH * 0.7, 3.6), layout="constrained")
    for subset, style in (("train", "-"), ("test", "--")):
        d = paths[paths.subset == subset].pivot_table(index="seed", columns="alpha", values="loss")
        _band(ax, d.columns.to_numpy(dtype=float), d.to_numpy(), "#d62728", style, label=f"{subset} loss")
    ax.set_xlabel("α (0: Init-S, 1: Sol-F)")
    ax.set_ylabel("cross-entropy loss (log scale)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    legend_below(fig)
    return fig


def figure_cosines(cos_by_alpha: dict[float, np.ndarray], *, bins: int = 60) -> plt.Figure:
    """P-F6 (b, c): the distribution of the per-sample cosines between −∇ℓ_i and Sol-F − Init-S, as small
    multiples: one panel per α (all seeds pooled), on shared axes, with the zero line and the mean marked."""
    use_book_style()
    alphas = sorted(cos_by_alpha)
    n = len(alphas)
    ncol = min(4, n)
    nrow = -(-n // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(PAGE_WIDTH, 1.9 * nrow + 0.7), sharex=True, sharey=True,
                             squeeze=False, layout="constrained")
    vals = {a: np.asarray(cos_by_alpha[a], dtype=float) for a in alphas}
    vals = {a: v[np.isfinite(v)] for a, v in vals.items()}
    everything = np.concatenate([v for v in vals.values() if v.size] or [np.zeros(1)])
    lo, hi = float(everything.min()), float(everything.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    color = line_colors(1)[0]
    for ax, a in zip(axes.flat, alphas):
        v = vals[a]
        if v.size:
            ax.hist(v, bins=edges, density=True, color=color, alpha=0.75, lw=0)
            ax.axvline(float(v.mean()), color="#d62728", lw=1.2)
        ax.axvline(0, color="0.4", lw=0.8, ls=":")
        ax.set_title(f"α = {a:g}")
        ax.grid(alpha=0.3)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("density")
    for j in range(ncol):   # the lowest visible panel of each column carries the x label
        col = [axes[i, j] for i in range(nrow) if i * ncol + j < n]
        col[-1].set_xlabel("cosine")
        col[-1].xaxis.set_tick_params(labelbottom=True)
    axes.flat[0].plot([], [], color="#d62728", lw=1.2, label="mean cosine")
    axes.flat[0].plot([], [], color="0.4", lw=0.8, ls=":", label="zero")
    legend_below(fig)
    return fig


def figure_class_bars(hists: dict[str, np.ndarray], *, ylabel: str = "share of the samples",
                      reference: np.ndarray | None = None, classes: Sequence[str] | None = None) -> plt.Figure:
    """P-F7/8, P-F9/10: class distributions side by side (each normalized to 1), with the data's own
    class distribution as a dotted line."""
    use_book_style()
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 3.8), layout="constrained")
    k = len(next(iter(hists.values())))
    x = np.arange(k)
    width = 0.8 / len(hists)
    for i, (label, h) in enumerate(hists.items()):
        h = np.asarray(h, dtype=float)
        ax.bar(x + (i - (len(hists) - 1) / 2) * width, h / max(h.sum(), 1), width, label=label)
    if reference is not None:
        r = np.asarray(reference, dtype=float)
        ax.step(np.arange(k + 1) - 0.5, np.append(r / r.sum(), r[-1] / r.sum()), where="post", color="k", ls=":",
                lw=1.2, label="all samples")
    ax.set_xticks(x)
    ax.set_xticklabels(list(classes)[:k] if classes is not None else [str(c) for c in range(k)], rotation=30,
                       ha="right")
    ax.set_xlabel("class")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, axis="y")
    legend_below(fig, ncol=min(3, len(hists) + (reference is not None)))
    return fig


# ------------------------------------------------------------ the energy landscape (chapter 11)

def figure_objective_paths(paths: pd.DataFrame, by: str, *, xlabel: str) -> plt.Figure:
    """E-F3, E-F4, E-F6/7, E-F8: along each path (one color per value of ``by``), the training
    cross-entropy (left, log scale) and the L2 term (right), seed means with one-std bands."""
    use_book_style()
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.6), layout="constrained")
    cmap = plt.get_cmap("tab10")
    for i, (name, d) in enumerate(paths[paths.subset == "train"].groupby(by, sort=False)):
        for ax, col in zip(axes, ("loss", "l2")):
            e = d.pivot_table(index="seed", columns="t", values=col)
            _band(ax, e.columns.to_numpy(dtype=float), e.to_numpy(), cmap(i), label=name)
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


# ------------------------------------------------------------------------ chapter 12, the remedies
REMEDY_COLORS = {"Sol-S": COLORS["Sol-S"], "neg. Fisher reg.": "#9467bd", "Fisher schedule": "#2ca02c",
                 "hard + disagree [57]": "#8c564b", "random schedule": "0.55", "Sol-F": COLORS["Sol-F"]}


def figure_remedy_selection(selection: pd.DataFrame) -> plt.Figure:
    """Each candidate setting's validation accuracy minus plain Sol-S's on the same split (one seed), per
    sparsity: bars from zero, the chosen settings solid and marked, the others faded. Where plain Sol-S has no
    accuracy (diverged), the candidates' own accuracies are drawn, from zero too. Columns ``sparsity``,
    ``remedy``, ``label``, ``val_acc``, ``chosen``."""
    use_book_style()
    sparsities = sorted(selection.sparsity.unique())
    n_rows = int(max((selection[(selection.sparsity == s) & (selection.remedy != "Sol-S")].shape[0]
                      for s in sparsities), default=1))
    fig, axes = plt.subplots(1, len(sparsities), figsize=(PAGE_WIDTH, 0.42 * n_rows + 1.9), sharey=True,
                             squeeze=False, layout="constrained")
    for ax, s in zip(axes[0], sparsities):
        d = selection[(selection.sparsity == s) & (selection.remedy != "Sol-S")].reset_index(drop=True)
        plain = selection[(selection.sparsity == s) & (selection.remedy == "Sol-S")].val_acc
        base = float(plain.iloc[0]) if len(plain) and np.isfinite(plain.iloc[0]) else None
        values = (d.val_acc - (base or 0.0)) * 100
        for i, r in d.iterrows():   # the chosen settings solid, the others faded; each bar says its value
            if np.isfinite(values[i]):
                ax.barh(i, values[i], color=REMEDY_COLORS.get(r.remedy, "k"), alpha=1.0 if r.chosen else 0.35,
                        edgecolor="k" if r.chosen else "none", lw=0.8)
                ax.annotate(f"{values[i]:+.1f}".replace("-", "−") if base is not None else f"{values[i]:.1f}",
                            (values[i], i), xytext=(3 if values[i] >= 0 else -3, 0), textcoords="offset points",
                            ha="left" if values[i] >= 0 else "right", va="center", fontsize=FONT_PT - 1.5)
            else:
                ax.text(0, i, " diverged", va="center", ha="left", fontsize=FONT_PT - 1.5)
        ax.axvline(0, color=REMEDY_COLORS["Sol-S"] if base is not None else "k", lw=1.4)
        ax.set_yticks(np.arange(len(d)), [f"{r}: {lab}{' (chosen)' if c else ''}"
                                          for r, lab, c in zip(d.remedy, d.label, d.chosen)])
        finite = values[np.isfinite(values)]
        lo, hi = (min(0.0, float(finite.min())), max(0.0, float(finite.max()))) if len(finite) else (-1.0, 1.0)
        pad = max(0.8, 0.22 * (hi - lo))   # room for the values printed beside the bars
        ax.set_xlim(lo - (pad if lo < 0 else 0), hi + (pad if hi > 0 or lo == 0 else 0))
        ax.set_title(f"s = {s:g} (plain Sol-S {base:.1%})" if base is not None else f"s = {s:g} (plain Sol-S diverged)")
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].invert_yaxis()
    plains = selection[selection.remedy == "Sol-S"].val_acc
    fig.supxlabel("validation accuracy − plain Sol-S's (points)" if len(plains) and np.isfinite(plains).all()
                  else "validation accuracy (%; where plain Sol-S diverged) or its gain over plain Sol-S (points)",
                  fontsize=FONT_PT)
    return fig


def _mean_interval_of(vals) -> tuple[float, float, float]:
    """Mean and 95% t-interval of a sample (NaN ends for fewer than two values)."""
    from .stats import mean_interval
    vals = np.asarray(vals, dtype=float)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return np.nan, np.nan, np.nan
    iv = mean_interval(vals)
    return iv.estimate, (iv.lo if np.isfinite(iv.lo) else np.nan), (iv.hi if np.isfinite(iv.hi) else np.nan)


def figure_remedies(table: pd.DataFrame, variants: Sequence[str]) -> plt.Figure:
    """Per regime (columns): train accuracy, test accuracy and Tr(F) (rows) of every variant, the seed mean as a
    point with its 95% t-interval and each seed a small dot beside it (no bars: these values sit far from zero,
    so each axis is zoomed and says so, with the range the values span)."""
    use_book_style()
    regimes = list(dict.fromkeys(table.sort_values("sparsity").regime))
    metrics = (("train_acc", "train accuracy (%)", 100, "%"), ("test_acc", "test accuracy (%)", 100, "%"),
               ("fisher_trace", "Tr(F) of the solution", 1, ""))
    fig, axes = plt.subplots(3, len(regimes), figsize=(PAGE_WIDTH, 9.6), squeeze=False, layout="constrained")
    x = np.arange(len(variants))
    for column, regime in zip(axes.T, regimes):
        d = table[table.regime == regime]
        for ax, (col, label, k, unit) in zip(column, metrics):
            shown = []
            for i, v in enumerate(variants):
                vals = d[d.variant == v][col].dropna().to_numpy(dtype=float) * k
                color = REMEDY_COLORS.get(v, "k")
                ax.plot(np.full(len(vals), x[i] + 0.22), vals, "o", color=color, ms=3, alpha=0.55, mec="none")
                m, lo, hi = _mean_interval_of(vals)
                if np.isfinite(m):
                    err = [[m - lo], [hi - m]] if np.isfinite(lo) else None
                    ax.errorbar(x[i], m, yerr=err, fmt="o", color=color, ms=6, capsize=4, lw=1.6)
                    shown.append(m)
                shown.extend(vals)
            ax.set_xticks(x, variants, rotation=35, ha="right")
            ax.set_xlim(-0.6, len(variants) - 0.4)
            ax.set_ylabel(label)
            ax.set_title(f"{regime} regime, s={d.sparsity.iloc[0]:g}")
            ax.grid(alpha=0.3, axis="y")
            mark_zoom(ax, shown, unit=unit, fmt="{:.1f}" if unit else "{:.3g}")
    return fig


def figure_gap_closed(gaps: pd.DataFrame, regime_metric: dict[str, str]) -> plt.Figure:
    """Per regime, on the metric of its gap: each remedy's gain over plain Sol-S (points, seed mean) with its 95%
    paired interval, on an axis that always includes zero (plain Sol-S); the dashed line at the gap Sol-F - Sol-S
    is where a remedy would close all of it. An interval that is unbounded (one seed) is left out."""
    use_book_style()
    regimes = list(dict.fromkeys(gaps.sort_values("sparsity").regime))
    fig, axes = plt.subplots(1, len(regimes), figsize=(PAGE_WIDTH, 3.4), squeeze=False, layout="constrained")
    for ax, regime in zip(axes[0], regimes):
        metric = regime_metric[regime]
        d = gaps[(gaps.regime == regime) & (gaps.metric == metric)].reset_index(drop=True)
        for i, r in d.iterrows():
            if not np.isfinite(r.gain):
                continue
            lo, hi = r.gain_lo, r.gain_hi
            err = [[(r.gain - lo) * 100], [(hi - r.gain) * 100]] if np.isfinite(lo) and np.isfinite(hi) else None
            ax.errorbar(r.gain * 100, i, xerr=err, fmt="o", color=REMEDY_COLORS.get(r.remedy, "k"), capsize=4, lw=1.6)
        ax.axvline(0, color=REMEDY_COLORS["Sol-S"], lw=1.2, label="plain Sol-S (no gain)")
        if len(d) and np.isfinite(d.gap.iloc[0]):
            ax.axvline(float(d.gap.iloc[0]) * 100, color=REMEDY_COLORS["Sol-F"], ls="--", lw=1.2,
                       label="Sol-F (the whole gap closed)")
        lo, hi = ax.get_xlim()
        ax.set_xlim(min(lo, 0.0), max(hi, 0.0))     # zero, plain Sol-S, always in view
        ax.set_yticks(np.arange(len(d)), list(d.remedy))
        ax.set_ylim(len(d) - 0.5, -0.5)
        ax.set_xlabel(f"gain in {metric.replace('_acc', '')} accuracy (points)")
        ax.set_title(f"{regime}, s={d.sparsity.iloc[0]:g}" if len(d) else regime)
        ax.grid(alpha=0.3, axis="x")
    legend_below(fig, ncol=2)
    return fig


def figure_remedy_curves(histories: dict[tuple[str, str], list[dict]], variants: Sequence[str]) -> plt.Figure:
    """Train accuracy over epochs per regime (columns), every variant (seed mean and one-std band); keys of
    ``histories`` are (regime, variant). The shared y axis starts a little below the lowest seed mean after the
    first quarter of training; when that leaves zero out, the axis says it is zoomed."""
    use_book_style()
    regimes = list(dict.fromkeys(r for r, _ in histories))
    fig, axes = plt.subplots(1, len(regimes), figsize=(PAGE_WIDTH, 3.8), sharey=True, squeeze=False,
                             layout="constrained")
    later = []   # the seed means after the first quarter of training set the lower limit (the early epochs sit far below)
    for ax, regime in zip(axes[0], regimes):
        for v in variants:
            hs = [h for h in histories.get((regime, v), []) if not h.get("diverged")]
            if hs:
                x, vals = _over_epochs(hs, "train_acc")
                _band(ax, x, vals * 100, REMEDY_COLORS.get(v, "k"), label=v)
                later.append(np.nanmean(vals, axis=0)[len(x) // 4:] * 100)
        ax.set_xlabel("epoch")
        ax.set_title(f"{regime} regime")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("train accuracy (%)")
    low = np.nanmin(np.concatenate(later)) if later else np.nan
    axes[0][0].set_ylim(max(0.0, low - 5) if np.isfinite(low) else 0.0, 101)   # shared by every column
    if later:
        mark_zoom(axes[0][0], np.concatenate(later), unit="%", fmt="{:.1f}")
    legend_below(fig, ncol=3)
    return fig
