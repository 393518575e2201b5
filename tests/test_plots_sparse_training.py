"""Chapters 9 and 10 (issue 23): the gap to the reference has its own panel on an axis that includes zero,
the zoomed accuracy axis says so, and G-2 is a dot plot; all fit the page with legible text."""

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from sparsegap import plots


def _summary():
    rows = [{"key": k, "sparsity": s, "train_acc": 0.9, "test_acc": 0.81 + 0.005 * i, "train_acc_std": 0.01,
             "test_acc_std": 0.002, "seeds": 3} for i, k in enumerate(("P-S", "L-S", "S-S", "RigL"))
            for s in (0.9, 0.95, 0.98)]
    rows.append({"key": "dense", "sparsity": 0.0, "train_acc": 0.9, "test_acc": 0.83, "train_acc_std": 0.0,
                 "test_acc_std": 0.001, "seeds": 3})
    return pd.DataFrame(rows)


def _gaps(reference):
    return pd.DataFrame([{"key": k, "sparsity": s, "gap": 0.004, "lo": 0.001, "hi": 0.007, "n": 3}
                         for k in ("P-S", "L-S", "S-S", "RigL") if k != reference for s in (0.9, 0.95, 0.98)])


def _fits(fig):
    fig.canvas.draw()
    assert fig.get_size_inches()[0] <= plots.PAGE_WIDTH + 1e-6
    sizes = {t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip()}
    assert min(sizes) >= plots.MIN_FONT_PT


def test_the_gap_to_ps_has_its_own_panel_with_zero_in_view_and_the_zoom_is_marked():
    fig = plots.figure_solutions(_summary(), gaps=_gaps("P-S"), reference="P-S", title="LeNet-300-100")
    acc, gap = fig.axes[:2]
    assert "axis zoomed" in acc.get_ylabel()
    lo, hi = gap.get_ylim()
    assert lo <= 0 <= hi and "P-S" in gap.get_ylabel()
    assert all(a.get_legend() is None for a in fig.axes) and fig.legends  # one legend, below the panels
    _fits(fig)
    plt.close(fig)


def test_without_gaps_the_accuracy_figure_still_draws():
    fig = plots.figure_solutions(_summary())
    assert len(fig.axes) == 1
    _fits(fig)
    plt.close(fig)


@pytest.mark.parametrize("sparsities", [(0.98,), (0.9, 0.98)])
def test_g2_is_a_dot_plot_with_one_row_per_solution(sparsities):
    s = _summary()
    s = s[(s.key == "dense") | s.sparsity.isin(sparsities)]
    g = _gaps("S-S")
    fig = plots.figure_solution_dots(s, g[g.sparsity.isin(sparsities)], reference="S-S")
    acc, gap = fig.axes[:2]
    assert [t.get_text() for t in acc.get_yticklabels()] == ["P-S", "L-S", "S-S", "RigL"]
    lo, hi = gap.get_xlim()
    assert lo <= 0 <= hi
    _fits(fig)
    plt.close(fig)


def test_paired_gaps_are_per_seed_differences_to_the_reference():
    from sparsegap.studies.difficulty import Results, paired_gaps

    class Run:
        def __init__(self, acc):
            self.history = {"train_acc": [acc], "test_acc": [acc]}
            self.diverged = False

    runs = {("P-S", 0.9, 0): Run(0.80), ("P-S", 0.9, 1): Run(0.82), ("S-S", 0.9, 0): Run(0.70),
            ("S-S", 0.9, 1): Run(0.74), ("dense", 0): Run(0.85), ("dense", 1): Run(0.86)}
    g = paired_gaps(Results(runs), "P-S")
    assert list(g.key) == ["S-S"] and g.gap.iloc[0] == pytest.approx(-0.09) and g.n.iloc[0] == 2
