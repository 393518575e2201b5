"""One function per figure: results in, matplotlib Figure out. No training here."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

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


def figure_two_regimes(summary: pd.DataFrame, regimes: pd.DataFrame, *, title: str = "") -> plt.Figure:
    """P-F1: accuracy, loss and training-prediction entropy of Sol-S and Sol-F against sparsity.

    Lines are seed means, bands one standard deviation; Sol-D is the horizontal reference.
    """
    panels = [("accuracy", ("train_acc", "test_acc")), ("cross-entropy loss", ("train_loss", "test_loss")),
              ("training-prediction entropy (nats)", ("train_entropy",))]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    dense = summary[summary.stage == "Sol-D"].iloc[0]
    sparsities = sorted(regimes.sparsity)
    for ax, (ylabel, metrics) in zip(axes, panels):
        shade_regimes(ax, regimes)
        for metric in metrics:
            style = "-" if metric.startswith("train") else "--"
            ax.axhline(dense[metric], color=COLORS["Sol-D"], ls=style, lw=1,
                       label=f"Sol-D {metric.split('_')[0]}")
            for stage in ("Sol-F", "Sol-S"):
                d = summary[summary.stage == stage].sort_values("sparsity")
                x = sparsity_axis(d.sparsity)
                ax.plot(x, d[metric], style, marker="o", ms=3.5, color=COLORS[stage],
                        label=f"{stage} {metric.split('_')[0]}")
                std = d[f"{metric}_std"].fillna(0)
                ax.fill_between(x, d[metric] - std, d[metric] + std, color=COLORS[stage], alpha=0.2, lw=0)
        _set_sparsity_ticks(ax, sparsities)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2, loc="lower left")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.45) for r, c in REGIME_COLORS.items()
               if c != "none" and r in set(regimes.regime)]
    if handles:
        fig.legend(handles, [r for r, c in REGIME_COLORS.items() if c != "none" and r in set(regimes.regime)],
                   loc="upper right", ncol=3, fontsize=8, title="regime", title_fontsize=8)
    fig.suptitle(title or "Two regimes: Sol-S (scratch) vs Sol-F (finetune)", x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def figure_training_curves(histories: dict[str, list[dict]], *, sparsity: float | None = None) -> plt.Figure:
    """Training curves side by side, one column per stage (e.g. Sol-S and Sol-F).

    ``histories`` maps a stage to a list of per-seed histories; the mean is drawn, the seeds faintly.
    """
    stages = list(histories)
    fig, axes = plt.subplots(2, len(stages), figsize=(5 * len(stages), 6.2), sharey="row", squeeze=False)
    for j, stage in enumerate(stages):
        for i, (metric, label) in enumerate((("acc", "accuracy"), ("loss", "loss"))):
            ax = axes[i, j]
            for part, style in (("train", "-"), ("test", "--")):
                runs = np.array([h[f"{part}_{metric}"] for h in histories[stage]])
                epochs = np.arange(1, runs.shape[1] + 1)
                for r in runs:
                    ax.plot(epochs, r, style, color=COLORS.get(stage, "k"), alpha=0.25, lw=0.8)
                ax.plot(epochs, runs.mean(0), style, color=COLORS.get(stage, "k"), label=f"{part}")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if metric == "loss":
                ax.set_yscale("log")
                ax.set_xlabel("epoch")
            else:
                ax.set_title(stage)
                ax.legend(fontsize=8)
    if sparsity is not None:
        fig.suptitle(f"sparsity {sparsity:g}", x=0.02, ha="left")
    fig.tight_layout()
    return fig


def figure_to_png(fig: plt.Figure, dpi: int = 80) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
