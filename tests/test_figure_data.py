"""Figure data (issue 27): every figure the book shows links the numbers it plots, as tidy CSV, under it.

The numbers are read back from what the figure drew (sparsegap.plots.data), so these tests draw figures from
known arrays and check that the table gives those arrays back: lines, one-std bands, error bars, bars, reference
lines, a log-density sparsity axis and named ticks. That every chapter page of the built book carries its links
is checked with the book itself, in tests/test_book.py.
"""

from __future__ import annotations

import base64
import io
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from sparsegap import pages, plots
from sparsegap.plots.draw import band, set_sparsity_ticks, sparsity_axis


def _drawn():
    """A figure of two panels drawn from known numbers, and those numbers."""
    epochs = np.array([1.0, 2.0, 3.0, 4.0])
    runs = np.array([[0.1, 0.4, 0.6, 0.7], [0.3, 0.6, 0.7, 0.9]])
    sparsities = [0.5, 0.9, 0.99]
    gap, lo, hi = np.array([1.0, 2.0, 4.0]), np.array([0.5, 1.0, 3.0]), np.array([1.5, 3.5, 4.5])
    fig, (left, right, bars) = plt.subplots(1, 3, figsize=(plots.PAGE_WIDTH, 3), layout="constrained")
    band(left, epochs, runs, "#1f77b4", label="Sol-F")
    left.plot(epochs, runs[0], "--", color="#1f77b4")        # no label: the legend names it by colour
    left.plot([], [], color="0.3", label="a proxy, nothing drawn")
    left.axhline(0.8, color="0.35", label="Sol-D")
    left.axhline(0.0, color="k")                              # an unnamed guide, not data
    left.set_title("accuracy")
    left.set_xlabel("epoch")
    # 0.04 to the right of each tick, as side-by-side markers are drawn
    right.errorbar(sparsity_axis(sparsities) + 0.04, gap, yerr=[gap - lo, hi - gap], fmt="o", label="_gap")
    set_sparsity_ticks(right, sparsities)
    right.set_title("gap")
    x = np.arange(2)
    bars.bar(x - 0.2, [3.0, 5.0], 0.4, yerr=[0.5, 1.0], label="L-S")
    bars.plot(x + 0.2, [4.0, 6.0], "o", color="k", label="_one seed")
    bars.set_xticks(x, ["P-S", "S-S"])
    bars.set_title("pairs")
    plots.legend_below(fig)
    return fig, dict(epochs=epochs, runs=runs, sparsities=sparsities, gap=gap, lo=lo, hi=hi)


def test_the_table_gives_back_the_numbers_drawn():
    fig, k = _drawn()
    t = plots.figure_data(fig)
    plt.close(fig)
    assert list(t.columns) == ["panel", "series", "x", "y", "y_lo", "y_hi", "x_label", "y_label"]
    mean = t[(t.panel == "accuracy") & (t.series == "Sol-F")]
    np.testing.assert_allclose(mean.x.astype(float), k["epochs"])
    np.testing.assert_allclose(mean.y.astype(float), k["runs"].mean(0))
    np.testing.assert_allclose(mean.y_lo.astype(float), k["runs"].mean(0) - k["runs"].std(0))
    np.testing.assert_allclose(mean.y_hi.astype(float), k["runs"].mean(0) + k["runs"].std(0))
    assert (mean.x_label == "epoch").all()
    dashed = t[t.series == "Sol-F, dashed"]
    np.testing.assert_allclose(dashed.y.astype(float), k["runs"][0])
    dense = t[t.series == "Sol-D"]
    assert len(dense) == 1 and dense.y.iloc[0] == 0.8 and np.isnan(dense.x.iloc[0])
    assert set(t.series) == {"Sol-F", "Sol-F, dashed", "Sol-D", "gap", "L-S", "one seed"}  # no proxy, no guide

    # the log-density axis gives the sparsities back, though the points sit beside the ticks
    gap = t[t.series == "gap"]
    np.testing.assert_allclose(gap.x.astype(float), k["sparsities"])
    np.testing.assert_allclose(gap.y.astype(float), k["gap"])
    np.testing.assert_allclose(gap.y_lo.astype(float), k["lo"])
    np.testing.assert_allclose(gap.y_hi.astype(float), k["hi"])

    # named ticks: dodged bars and dots are read as their tick's
    bars, dots = t[t.series == "L-S"], t[t.series == "one seed"]
    assert list(bars.x) == ["P-S", "S-S"] and list(dots.x) == ["P-S", "S-S"]
    np.testing.assert_allclose(bars.y.astype(float), [3.0, 5.0])
    np.testing.assert_allclose(bars.y_lo.astype(float), [2.5, 4.0])
    np.testing.assert_allclose(dots.y.astype(float), [4.0, 6.0])


def test_error_bars_in_both_directions_keep_theirs():
    fig, ax = plt.subplots()
    ax.errorbar([1.0, 2.0], [10.0, 20.0], xerr=[0.1, 0.0], yerr=[[1.0, 2.0], [3.0, 4.0]], fmt="o", label="both")
    ax.errorbar([3.0], [30.0], xerr=[[0.5], [0.25]], fmt="s", label="across")
    t = plots.figure_data(fig).set_index("series")
    plt.close(fig)
    np.testing.assert_allclose(t.loc["both", "x_lo"], [0.9, 2.0])
    np.testing.assert_allclose(t.loc["both", "x_hi"], [1.1, 2.0])
    np.testing.assert_allclose(t.loc["both", "y_lo"], [9.0, 18.0])
    np.testing.assert_allclose(t.loc["both", "y_hi"], [13.0, 24.0])
    assert t.loc["across", "x_lo"] == 2.5 and t.loc["across", "x_hi"] == 3.25 and np.isnan(t.loc["across", "y_lo"])


def test_the_csv_is_the_table():
    fig, _ = _drawn()
    t = plots.figure_data(fig)
    back = pd.read_csv(io.StringIO(plots.figure_csv(fig)), keep_default_na=False, na_values=[""])
    plt.close(fig)
    assert list(back.columns) == list(t.columns) and len(back) == len(t)
    assert list(back.series) == list(t.series)
    for col in ("y", "y_lo", "y_hi"):
        np.testing.assert_allclose(back[col].astype(float), t[col].astype(float), rtol=1e-6)
    numeric = t.x.map(lambda v: not isinstance(v, str))
    np.testing.assert_allclose(back.x[numeric].astype(float), t.x[numeric].astype(float), rtol=1e-6)
    assert list(back.x[~numeric]) == list(t.x[~numeric])


def _data_link(html: str):
    link = re.search(r'<a href="data:text/csv;charset=utf-8;base64,([A-Za-z0-9+/=]+)" download="([^"]+)"[^>]*>'
                     r'Data: ([^<]+)</a>', html)
    assert link, f"no data link in {html[-300:]!r}"
    return base64.b64decode(link.group(1)).decode(), link.group(2), link.group(3)


def test_the_html_shows_the_image_at_its_natural_size_and_links_the_csv():
    fig, _ = _drawn()
    html = plots.figure_html(fig, name="fig-99-test")
    csv = plots.figure_csv(fig)
    plt.close(fig)
    img = re.search(r'<img src="data:image/png;base64,([^"]+)" width="(\d+)" height="(\d+)"', html)
    assert img, html[:200]
    png = base64.b64decode(img.group(1))
    natural_width = int.from_bytes(png[16:20], "big")
    assert natural_width // 2 == int(img.group(2))         # drawn at twice the pixel density, shown at half
    text, download, shown = _data_link(html)
    assert text == csv and download == shown == "fig-99-test.csv"


def test_a_figure_with_nothing_plotted_has_no_link():
    from sparsegap.plots.style import note_figure
    fig = note_figure("nothing to draw at this scale")
    assert plots.figure_data(fig).empty
    html = plots.figure_html(fig, name="fig-99-note")
    plt.close(fig)
    assert "<img" in html and "Data:" not in html


def test_a_glued_figure_is_shown_with_the_link_named_by_its_key(monkeypatch):
    """pages.figure names the figure by its key; once use_book_style ran in IPython, the figure's display
    (what myst-nb glues and the page shows) is the image with its link, and the PNG is still in the bundle."""
    from IPython.core.formatters import format_display_data
    from IPython.core.interactiveshell import InteractiveShell

    InteractiveShell.instance()
    plots.use_book_style()
    bundles = {}
    monkeypatch.setattr(pages, "_glue", lambda key, obj, display: bundles.setdefault(key, format_display_data(obj)))
    fig, _ = _drawn()
    csv = plots.figure_csv(fig)
    pages.figure("fig-99-glued", fig)
    data, meta = bundles["fig-99-glued"]
    assert "image/png" in data and meta["image/png"]["width"] > 0
    text, download, _ = _data_link(data["text/html"])
    assert download == "fig-99-glued.csv" and text == csv


def _ledger_figures():
    """The figures of every chapter, drawn from small made-up results (tests/test_ledger.py)."""
    import test_ledger
    with plt.rc_context({"figure.max_open_warning": 0}):   # drawn at collection, closed by each test
        return list(test_ledger._figures())


@pytest.mark.parametrize("name, fig", _ledger_figures(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_figure_names_each_series_it_plots(name, fig):
    t = plots.figure_data(fig)
    plt.close(fig)
    assert len(t), f"{name}: no plotted point read back"
    unnamed = sorted({s for s in t.series if re.fullmatch(r"series \d+", s)})
    assert not unnamed, f"{name}: series without a name ({unnamed}); give the artist a label ('_' keeps it " \
                        "out of the legend)"
    assert t.y.notna().any() and t.x.notna().any(), name


def test_bad_input_is_refused_with_its_name():
    with pytest.raises(TypeError, match="fig must be a matplotlib Figure"):
        plots.figure_data("fig-01-two-regimes")
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="axis must be 'x'"):
        plots.mark_sparsity_axis(ax, [0.9], axis="y")
    plt.close(fig)

