"""Figures of chapter 12: the remedies, their selection, their gains over Sol-S and their training curves."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .draw import band, over_epochs
from .style import COLORS, FONT_PT, PAGE_WIDTH, legend_below, mark_zoom, use_book_style


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
                        edgecolor="k" if r.chosen else "none", lw=0.8, label=f"_{r.remedy}")
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
    from ..stats import mean_interval
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
                ax.plot(np.full(len(vals), x[i] + 0.22), vals, "o", color=color, ms=3, alpha=0.55, mec="none",
                        label=f"_{v}, one seed")   # "_": named in the figure's data, no legend here
                m, lo, hi = _mean_interval_of(vals)
                if np.isfinite(m):
                    err = [[m - lo], [hi - m]] if np.isfinite(lo) else None
                    ax.errorbar(x[i], m, yerr=err, fmt="o", color=color, ms=6, capsize=4, lw=1.6,
                                label=f"_{v}, seed mean and 95% interval")
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
            ax.errorbar(r.gain * 100, i, xerr=err, fmt="o", color=REMEDY_COLORS.get(r.remedy, "k"), capsize=4, lw=1.6,
                        label=f"_{r.remedy}")
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
                x, vals = over_epochs(hs, "train_acc")
                band(ax, x, vals * 100, REMEDY_COLORS.get(v, "k"), label=v)
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
