"""sparsegap.tables (formatted tables) and sparsegap.pages (glued figures and values)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from sparsegap import data, pages, plots, tables  # noqa: E402


def test_formats_give_sensible_precision() -> None:
    assert tables.fmt(0.8123, "pct") == "81.2"
    assert tables.fmt(-0.0042, "points") == "−0.42"
    assert tables.fmt(0.950000, "sparsity") == "0.95" and tables.fmt(0.995, "sparsity") == "0.995"
    assert tables.fmt(3.0, "seeds") == "3 seeds" and tables.fmt(1, "seeds") == "1 seed"
    assert tables.fmt(3.0) == "3" and tables.fmt(0.123456) == "0.123" and tables.fmt(1234.5678) == "1235"
    assert tables.fmt(float("nan")) == tables.MISSING and tables.fmt(None, "pct") == tables.MISSING
    assert tables.fmt(math.inf) == "inf"


def test_table_shows_only_the_columns_asked_in_words() -> None:
    df = pd.DataFrame({"sparsity": [0.9, 0.99], "test_acc": [0.81, 0.5], "junk": [1, 2]})
    t = tables.table(df, {"sparsity": tables.Col("sparsity", "sparsity"),
                          "test_acc": tables.Col("test accuracy (%)", "pct")})
    assert t.headers == ("sparsity", "test accuracy (%)")
    assert t.rows == (("0.9", "81.0"), ("0.99", "50.0"))
    html = t._repr_html_()
    assert "sparsegap-table" in html and "junk" not in html and "dataframe" not in html
    assert "| 0.99 | 50.0 |" in t.to_markdown()


def test_table_errors_name_what_is_wrong() -> None:
    df = pd.DataFrame({"a": [1]})
    with pytest.raises(KeyError, match="columns \\['b'\\] are not in the frame"):
        tables.table(df, {"b": "B"})
    with pytest.raises(TypeError, match="df must be a pandas DataFrame"):
        tables.table([1, 2])
    with pytest.raises(ValueError, match="Col.how must be"):
        tables.Col("a", "percent")
    with pytest.raises(ValueError, match="fmt: how must be"):
        tables.fmt(1, "nope")


def test_paper_vs_ours_rows() -> None:
    t = tables.paper_vs_ours([("gap at 0.9", "≈10 points (Fig. 1)", "0.4 [0.1, 0.7]"),
                              {"quantity": "ratio", "paper": 4.1, "ours": 2, "note": "geometric mean"}])
    assert t.headers == ("quantity", "the paper", "ours", "note")
    assert t.rows[1] == ("ratio", "4.10", "2", "geometric mean")
    with pytest.raises(ValueError, match="row 0 must have 3 or 4 cells"):
        tables.paper_vs_ours([("a", "b")])
    with pytest.raises(ValueError, match="must not be empty"):
        tables.paper_vs_ours([])


def test_pages_check_keys_and_values() -> None:
    fig = plt.figure()
    with pytest.raises(ValueError, match="key must look like 'fig-07-double-descent'"):
        pages.figure("figure1", fig)
    with pytest.raises(ValueError, match="key must look like '07-gap-points'"):
        pages.value("gap", 1.0)
    with pytest.raises(TypeError, match="use pages.text for words"):
        pages.value("07-gap", "big")
    plt.close(fig)
    # numpy scalars become Python numbers, whose text {glue:text}`key:.2f` can format
    v = pages.value("07-gap", np.float64(0.25))
    assert type(v) is float and v == 0.25
    assert type(pages.value("07-n", np.int64(3))) is int
    assert pages.text("07-where", "0.5, 0.8") == "0.5, 0.8"


def test_class_names() -> None:
    assert data.class_names("fashion-mnist")[0] == "T-shirt/top" and len(data.class_names("fashion-mnist")) == 10
    assert data.class_names("cifar100")[99] == "class 99"
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.class_names("imagenet")


def test_line_colors_skip_the_pale_end_and_legend_fits_the_figure() -> None:
    colors = plots.line_colors(5)
    assert len(colors) == 5 and colors[-1] == plt.get_cmap("viridis")(0.8)
    with pytest.raises(ValueError, match="n must be a positive int"):
        plots.line_colors(0)
    plots.use_book_style()
    fig, ax = plt.subplots(figsize=(plots.PAGE_WIDTH, 3), layout="constrained")
    for i in range(6):
        ax.plot([0, 1], [i, i], label=f"a rather long legend label number {i}")
    leg = plots.legend_below(fig, ncol=6)
    fig.canvas.draw()
    assert leg.get_window_extent().width <= fig.bbox.width
    plt.close(fig)


def test_mark_zoom_says_so_only_when_zero_is_hidden() -> None:
    fig, (a, b) = plt.subplots(1, 2)
    a.plot([0, 1], [0.81, 0.83]); a.set_ylabel("test accuracy")
    b.plot([0, 1], [0.0, 0.83]); b.set_ylabel("test accuracy")
    plots.mark_zoom(a, [0.81, 0.83]); plots.mark_zoom(b, [0.0, 0.83])
    assert "zoomed" in a.get_ylabel() and "0.81–0.83" in a.get_ylabel()
    assert b.get_ylabel() == "test accuracy"
    plt.close(fig)


def test_verdict_phrases_for_a_page():
    from sparsegap.stats import Interval
    from sparsegap.verdict import Evidence, Verdict

    acc = Evidence("Sol-F − Sol-S, test accuracy, s = 0.9", Interval(0.006, -0.002, 0.014, 3, 2.0, "paired t"), ".2%")
    loss = Evidence("Sol-S − Sol-F test loss", Interval(0.12, 0.05, 0.19, 3, 2.0, "paired t"), ".2f")
    v = Verdict("P-F1", "Sol-S falls behind Sol-F", "inconclusive", evidence=(acc, loss))
    assert acc.phrase == "Sol-F − Sol-S, test accuracy, s = 0.9: +0.60 points [95% CI −0.20, +1.40]"
    assert v.find("Sol-S − Sol-F test") is loss and v.find("nothing") is None
    assert v.effect_words("Sol-S − Sol-F test") == "0.12 [95% CI 0.05, 0.19]"
    assert v.effect_words("Sol-S − Sol-F test", "+.1f") == "+0.1 [95% CI +0.1, +0.2]"
    assert v.effect_words("nothing") == "not measured"
    assert v.evidence_phrase(1, status=True) == "Sol-S − Sol-F test loss: 0.12 [95% CI 0.05, 0.19]; verdict: inconclusive"
    assert v.evidence_phrase(2, missing="not testable") == "not testable"
