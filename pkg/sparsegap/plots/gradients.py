"""Figures of chapters 5 and 6 (the Price of Sparsity): the path from Init-S to Sol-F, the per-sample
cosines and the classes they pick (chapter 5), and the per-layer gradient SNR (chapter 6)."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .draw import band
from .style import COLORS, MIN_FONT_PT, PAGE_WIDTH, legend_below, line_colors, use_book_style


def figure_init_s_path(paths: pd.DataFrame) -> plt.Figure:
    """P-F6 (a): loss along (1 − α)·Init-S + α·Sol-F on the training (solid) and the test set (dashed),
    seed means with one-std bands."""
    use_book_style()
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH * 0.7, 3.6), layout="constrained")
    for subset, style in (("train", "-"), ("test", "--")):
        d = paths[paths.subset == subset].pivot_table(index="seed", columns="alpha", values="loss")
        band(ax, d.columns.to_numpy(dtype=float), d.to_numpy(), "#d62728", style, label=f"{subset} loss")
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
            ax.hist(v, bins=edges, density=True, color=color, alpha=0.75, lw=0, label="_density of the cosines")
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
                band(ax, e.columns.to_numpy(dtype=float), e.to_numpy(), COLORS[stage], label=stage)
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
