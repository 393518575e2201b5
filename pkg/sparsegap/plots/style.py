"""The book's look: figure sizes and fonts, colours, one legend below the panels, zoomed axes marked."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np

from .data import show_data_links

# Figures are drawn at DPI pixels per inch (twice that on the page's image, see use_book_style) and at
# most PAGE_WIDTH inches wide (FULL_WIDTH for cells tagged `full-width`), so that the book shows them at
# their natural size down to an 800 px window, whose text column is 705 px: text of FONT_PT points then
# stays at least MIN_FONT_PT on screen (tests/test_book.py measures it in a browser at 800 and 1400 px).
DPI = 100
FONT_PT = 10.5
MIN_FONT_PT = 9
PAGE_WIDTH = 6.9
FULL_WIDTH = 10.5

# The Price of Sparsity's three solutions keep one colour in every chapter (the remedies' too).
COLORS = {"Sol-D": "0.35", "Sol-F": "#1f77b4", "Sol-S": "#ff7f0e"}


def use_book_style() -> None:
    """The one look of every figure in the book: sizes legible at the book's width, drawn at twice the
    pixel density (the page shows them at their natural size, crisp on high-resolution screens), with the
    link to its numbers under it (:mod:`sparsegap.plots.data`)."""
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        set_matplotlib_formats("retina")
    except ImportError:  # outside Jupyter there is no inline backend to configure
        pass
    show_data_links()   # each figure shown in a notebook links the numbers it plots, as CSV
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


def note_figure(message: str, *, height: float = 1.2) -> plt.Figure:
    """A figure that says, in words, why there is nothing to draw (e.g. a chain without the sparsities a
    panel needs), so that the page keeps its numbered figure and says so."""
    use_book_style()
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, height))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    return fig


def figure_to_png(fig: plt.Figure, dpi: int = DPI) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
