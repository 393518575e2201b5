"""Figures of chapter 4 (the Price of Sparsity): memorization of noisy labels and Tr(F) on the noisy samples."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from .draw import band, over_epochs
from .style import COLORS, PAGE_WIDTH, legend_below, use_book_style


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
                band(ax, *over_epochs(hs, key), COLORS[stage], style,
                     label=stage if style == "-" else f"_{stage}, true label")
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
        for key, style, samples in (("fisher_trace:permuted", "-", "noisy"),
                                    ("fisher_trace:unpermuted", "--", "clean")):
            x = np.asarray(hs[0]["trace"][key]["epochs"])
            band(ax, x, np.array([h["trace"][key]["value"] for h in hs]), COLORS[stage], style,
                 label=f"_{stage}, {samples} samples")
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
