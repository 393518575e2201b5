"""The figures of chapters 7 and 8 (sparse double descent, re-dense training and the landscape): honest axes,
legends outside the panels, and a figure that says so when a chain has nothing to draw."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from sparsegap import plots  # noqa: E402


def _per_seed():
    rows = []
    for h, e in (("magnitude", 0.2), ("magnitude", 0.4), ("random", 0.4)):
        for r in range(6):
            for seed in (0, 1, 2):
                acc = 0.8 - 0.03 * (r == 2) + 0.02 * (r == 4) + 0.005 * seed
                rows.append({"heuristic": h, "noise": e, "round": r, "seed": seed, "sparsity": 1 - 0.5 ** r,
                             "train_acc": 1.0 - 0.1 * r, "test_acc": acc, "test_best": acc + 0.01})
    return pd.DataFrame(rows)


def _summary(table):
    g = table.groupby(["heuristic", "noise", "round"])
    m = g.mean(numeric_only=True).drop(columns="seed")
    return m.join(g.std(numeric_only=True).drop(columns="seed").add_suffix("_std")).reset_index()


def _legends_outside_axes(fig):
    """Every legend lies below every axes (a figure legend under the panels), none inside one."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    assert not any(ax.get_legend() for ax in fig.axes), "a legend sits inside a panel"
    for leg in fig.legends:
        box = leg.get_window_extent(r)
        for ax in fig.axes:
            if ax.axison:
                assert box.y1 <= ax.get_window_extent(r).y0 + 1, "the legend overlaps a panel"


def test_double_descent_figure_has_a_gap_panel_and_unzoomed_accuracy():
    table = _per_seed()
    early = pd.DataFrame({"noise": [0.2, 0.4], "test_best": [0.82, 0.81], "test_acc": [0.8, 0.8]})
    fig = plots.figure_double_descent(_summary(table), table, early)
    axes = np.array(fig.axes).reshape(3, 2)
    for ax in axes[:2].ravel():  # accuracy rows span 0 to 1: a gap of a point is not blown up
        assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 1
    for ax in axes[2]:  # the gap to the dense network, in points, includes zero
        lo, hi = ax.get_ylim()
        assert lo < 0 < hi
    # the gap row plots paired differences in points: the dip at round 2 is -3 points
    line = axes[2, 1].get_lines()[0]
    assert np.isclose(line.get_ydata()[2], -3.0)
    assert fig.get_size_inches()[0] <= plots.PAGE_WIDTH
    _legends_outside_axes(fig)


def test_double_descent_figure_without_the_per_seed_table_keeps_two_rows():
    fig = plots.figure_double_descent(_summary(_per_seed()))
    assert len(fig.axes) == 4


def _history(n=3):
    trace = {k: {"epochs": list(range(1, n + 1)), "value": [0.2] * n} for k in
             ("accuracy:permuted", "accuracy:unpermuted", "accuracy:restored")}
    return {"epoch": list(range(1, n + 1)), "train_acc": [0.5] * n, "test_acc": [0.4] * n, "trace": trace}


@pytest.mark.parametrize("make", [plots.figure_dd_dynamics, plots.figure_dd_memorization])
def test_epoch_panels_span_zero_to_one_with_the_legend_below(make):
    keys = {"dense": [_history()], "overfitting": [_history()], "sweet spot": [_history()]}
    fig = make(keys, {"dense": 0.0, "overfitting": 0.9, "sweet spot": 0.99})
    for ax in fig.axes:
        assert ax.get_ylim()[0] == 0
    _legends_outside_axes(fig)


def test_redense_figures_say_so_when_there_is_nothing_to_draw():
    for fig in (plots.figure_redense_dynamics({}, {}),
                plots.figure_interpolation(pd.DataFrame(columns=["t", "subset", "loss", "accuracy", "round", "seed",
                                                                 "sparsity"]), {})):
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert any("nothing to re-dense" in t or "no path" in t for t in texts)


def test_redense_figures_keep_their_legends_off_the_data():
    h = _history()
    fig = plots.figure_redense_dynamics({"sweet spot": ([h], [h])}, {"sweet spot": 0.99})
    _legends_outside_axes(fig)
    paths = pd.DataFrame([{"t": t, "subset": sub, "loss": 1 - t / 2, "accuracy": t, "round": r, "seed": 0,
                           "sparsity": 1 - 0.5 ** r} for r in (3, 5) for sub in ("train", "test") for t in (0, 0.5, 1)])
    fig = plots.figure_interpolation(paths, {3: "overfitting", 5: "sweet spot"})
    assert fig.axes[0].get_ylim()[0] == 0  # the loss axis starts at zero
    _legends_outside_axes(fig)
    curves = pd.DataFrame([{"alpha": a, "loss": 0.1 + a * a, "solution": sol, "round": r, "seed": 0,
                            "sparsity": 1 - 0.5 ** r} for a in (-1, 0, 1)
                           for sol, r in (("dense", 0), ("sparse", 3), ("re-dense", 3))])
    _legends_outside_axes(plots.figure_loss_curves(curves, {0: "dense", 3: "overfitting"}))
    dist = pd.DataFrame([{"round": r, "seed": s, "sparsity": 1 - 0.5 ** r, "sparse_distance": 5.0 + s,
                          "redense_distance": 8.0 if r in (2, 4) else np.nan, "sparse_test_acc": 0.6,
                          "redense_test_acc": 0.5 if r in (2, 4) else np.nan} for r in range(0, 6) for s in (0, 1)])
    fig = plots.figure_distance(dist)
    assert fig.axes[0].get_ylim()[0] == 0 and fig.axes[1].get_ylim() == (0, 1.02)
    _legends_outside_axes(fig)
