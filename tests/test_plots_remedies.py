"""Chapter 12's figures (issue 23): no truncated bars, zoomed axes say so, legends below the panels."""

import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from sparsegap import plots
from sparsegap.studies import remedies as R

matplotlib.use("Agg")

VARIANTS = ["Sol-S", R.NFR, R.FISHER, R.DISAGREE, R.RANDOM, "Sol-F"]
PICKED = {"generalization": 0.9, "optimization": 0.99}


def _table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for regime, s in PICKED.items():
        for seed in (0, 1, 2):
            for i, v in enumerate(VARIANTS):
                rows.append({"variant": v, "regime": regime, "sparsity": s, "seed": seed, "diverged": False,
                             "train_acc": 0.95 + 0.005 * i + 0.002 * rng.standard_normal(),
                             "test_acc": 0.84 + 0.002 * i + 0.002 * rng.standard_normal(),
                             "fisher_trace": 20.0 + i + rng.standard_normal()})
    return pd.DataFrame(rows)


def _selection(plain=0.85) -> pd.DataFrame:
    rows = [{"sparsity": s, "remedy": "Sol-S", "label": "", "val_acc": plain, "val_train_acc": 0.9,
             "diverged": False, "chosen": False} for s in PICKED.values()]
    for s in PICKED.values():
        rows += [{"sparsity": s, "remedy": R.NFR, "label": "λ=-1, 10 ep", "val_acc": 0.86, "val_train_acc": 0.9,
                  "diverged": False, "chosen": True},
                 {"sparsity": s, "remedy": R.NFR, "label": "λ=1, 10 ep", "val_acc": math.nan,
                  "val_train_acc": math.nan, "diverged": True, "chosen": False},
                 {"sparsity": s, "remedy": R.FISHER, "label": "memorize 5 ep", "val_acc": 0.84,
                  "val_train_acc": 0.9, "diverged": False, "chosen": True}]
    return pd.DataFrame(rows)


def _includes_zero_or_marked(ax, axis="y") -> bool:
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    label = ax.get_ylabel() if axis == "y" else ax.get_xlabel()
    return lo <= 0 <= hi or "axis zoomed" in label


@pytest.mark.parametrize("plain", [0.85, math.nan])
def test_selection_bars_start_at_zero(plain):
    fig = plots.figure_remedy_selection(_selection(plain))
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        assert lo <= 0 <= hi
        for bar in ax.patches:          # every bar is drawn from zero
            assert bar.get_x() == 0
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "diverged" in texts
    if math.isfinite(plain):
        assert "+1.0" in texts and "−1.0" in texts          # each bar says its value, in points
        labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
        assert sum("(chosen)" in lab for lab in labels) == 2
    plt.close(fig)


def test_remedies_figure_draws_points_with_intervals_and_marks_zoom():
    fig = plots.figure_remedies(_table(), VARIANTS)
    assert len(fig.axes) == 6
    for ax in fig.axes:
        assert not [p for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)], "no bars"
        assert _includes_zero_or_marked(ax)
    assert "axis zoomed" in fig.axes[0].get_ylabel()      # accuracies of 95-98% are zoomed, and say so
    plt.close(fig)


def test_gap_closed_axis_includes_zero_and_legend_is_below():
    gaps = R.gap_closed(_table())
    fig = plots.figure_gap_closed(gaps, R.REGIME_METRIC)
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        assert lo <= 0 <= hi
        assert ax.get_legend() is None
    assert fig.legends, "one legend, below the panels"
    plt.close(fig)


def test_gap_closed_with_one_seed_draws_no_unbounded_interval():
    gaps = R.gap_closed(_table()[lambda t: t.seed == 0])
    assert np.isinf(gaps.gain_lo).all()
    fig = plots.figure_gap_closed(gaps, R.REGIME_METRIC)
    for ax in fig.axes:
        assert all(np.isfinite(ax.get_xlim()))
    plt.close(fig)


def test_remedy_curves_mark_a_zoomed_axis_and_put_the_legend_below():
    hist = {"epoch": [1, 2, 3, 4], "train_acc": [0.5, 0.8, 0.9, 0.95]}
    fig = plots.figure_remedy_curves({("optimization", "Sol-S"): [hist, hist], ("optimization", "Sol-F"): [hist]},
                                     ["Sol-S", "Sol-F"])
    ax = fig.axes[0]
    assert ax.get_ylim()[0] > 0 and "axis zoomed" in ax.get_ylabel()
    assert ax.get_legend() is None and fig.legends
    plt.close(fig)


@pytest.mark.parametrize("make", [
    lambda: plots.figure_remedy_selection(_selection()),
    lambda: plots.figure_remedies(_table(), VARIANTS),
    lambda: plots.figure_gap_closed(R.gap_closed(_table()), R.REGIME_METRIC),
    lambda: plots.figure_remedy_curves({("generalization", "Sol-S"): [{"epoch": [1, 2], "train_acc": [0.2, 0.4]}]},
                                       ["Sol-S"]),
], ids=["selection", "remedies", "gap_closed", "curves"])
def test_chapter_12_figures_fit_the_page_with_legible_text(make):
    fig = make()
    fig.canvas.draw()
    assert fig.get_size_inches()[0] <= plots.PAGE_WIDTH + 1e-9
    sizes = {t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip()}
    assert min(sizes) >= plots.MIN_FONT_PT
    plt.close(fig)
