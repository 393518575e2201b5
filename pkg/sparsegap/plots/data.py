"""The numbers behind every figure, as a tidy table, and a figure's HTML display: the image with a link under
it, "Data: fig-NN-what.csv", that downloads those numbers.

The table is read back from what the figure drew (lines, one-std bands, error bars, bars, dots, heat maps), so
it cannot drift from the picture and no figure function needs code of its own for it: one row per plotted
point, with the panel, the series, ``x`` and ``y``, and ``y_lo``/``y_hi`` (``x_lo``/``x_hi``) where a band or
an error bar is drawn, in the units of the axes (percent where the axis says %). Two things are undone on the
way back: a log-density sparsity axis gives the sparsities again (:func:`mark_sparsity_axis`), and an axis
whose ticks carry names (solutions, classes, variants) gives the name of the nearest tick, so that points
drawn side by side around one tick are read as that tick's.

A series is named by its artist's label; an artist kept out of the legend can still name its series with a
label that starts with "_" (``label="_Sol-F, one seed"``). An artist without a label takes the name of the
legend entry drawn in its colour and style, the legend being what tells a reader which line is which.

:func:`use_book_style` registers :func:`figure_html` as the HTML display of every matplotlib figure in the
notebook, so each glued figure (:func:`sparsegap.pages.figure`) carries its link. The CSV travels inside the
page as a ``data:`` link, with the image beside it: the kernels that draw the figures do not know where the
book will be built, and a page that carries its own numbers works offline, on any host and in Jupyter.
"""

from __future__ import annotations

import base64
import re
import weakref

import numpy as np
import pandas as pd

__all__ = ["COLUMNS", "figure_csv", "figure_data", "figure_html", "mark_sparsity_axis", "show_data_links"]

COLUMNS = ("panel", "series", "x", "y", "y_lo", "y_hi", "x_lo", "x_hi", "value", "x_label", "y_label")
_OPTIONAL = ("y_lo", "y_hi", "x_lo", "x_hi", "value")
# matplotlib's own names for unlabelled artists, which name nothing
_AUTO_LABEL = re.compile(r"_(child|container|collection|line|patch|image)\d*|_nolegend_|")
# the axes drawn on a log-density sparsity axis, and the sparsities they show (see mark_sparsity_axis)
_SPARSITY_AXES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# points drawn side by side around a tick (dodged bars, seed dots) are read as that tick's within this share
# of the distance between ticks
_SNAP = 0.5
_STYLE_WORDS = {"--": "dashed", ":": "dotted", "-.": "dash-dot", "None": "markers", "": "markers"}


def mark_sparsity_axis(ax, sparsities, axis: str = "x") -> None:
    """Say that ``ax`` draws sparsity on a log-density ``axis`` (positions ``-log10(1 - s)``), so that its data
    gives the sparsities back, snapped to ``sparsities`` where a point was drawn beside one (a small offset
    keeps overlapping markers apart)."""
    if axis != "x":
        raise ValueError(f"mark_sparsity_axis: axis must be 'x' (the only sparsity axis drawn), got {axis!r}")
    _SPARSITY_AXES[ax] = np.asarray(sorted(float(s) for s in sparsities), dtype=float)


def _sparsities_of(ax):
    for sibling in ax.get_shared_x_axes().get_siblings(ax):
        if sibling in _SPARSITY_AXES:
            return _SPARSITY_AXES[sibling]
    return None


def _clean_label(text: str) -> str:
    lines = [s.strip() for s in str(text).splitlines() if s.strip() and not s.strip().startswith("(axis zoomed")]
    return " ".join(lines)


def _name(label) -> str | None:
    label = "" if label is None else str(label)
    if _AUTO_LABEL.fullmatch(label):
        return None
    return label[1:] if label.startswith("_") else label


def _rgb(color) -> tuple:
    from matplotlib.colors import to_rgb
    try:
        return tuple(round(c, 3) for c in to_rgb(color))
    except (ValueError, TypeError):
        return ()


def _line_key(line) -> tuple:
    return _rgb(line.get_color()), str(line.get_linestyle()), str(line.get_marker())


class _Legend:
    """Who is who, as the legend tells it: a colour and style, the name beside it."""

    def __init__(self, fig):
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
        self.lines: dict[tuple, str] = {}
        self.colors: dict[tuple, str] = {}
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        for leg in legends:
            for handle, text in zip(leg.legend_handles, leg.get_texts()):
                name = _clean_label(text.get_text())
                if isinstance(handle, Line2D):
                    key = _line_key(handle)
                    self.lines.setdefault(key, name)
                    self.lines.setdefault(key[:2], name)
                    self.colors.setdefault(key[0], name)
                elif isinstance(handle, Patch):
                    self.colors.setdefault(_rgb(handle.get_facecolor()), name)

    def line(self, line, *, reference: bool = False) -> str | None:
        """The legend's name for a line of this colour and style. A data line also takes the name of its colour
        alone (with its style said), unless that colour is a grey: grey legend entries explain line styles. A
        reference line across the axes must match in colour and style."""
        key = _line_key(line)
        for k in (key, key[:2]):
            if k in self.lines:
                return self.lines[k]
        if not reference and key[0] in self.colors and len(set(key[0])) > 1:
            style = _STYLE_WORDS.get(key[1])
            return f"{self.colors[key[0]]}, {style}" if style else self.colors[key[0]]
        return None

    def color(self, color) -> str | None:
        return self.colors.get(_rgb(color))


def _titles(fig):
    """Each axes' panel name, x label and y label; where a panel leaves one out (shared axes, twin axes), the
    one its column or row carries."""
    axes = [ax for ax in fig.axes if ax.get_visible() and not hasattr(ax, "_colorbar")]
    spec = {ax: ax.get_subplotspec() for ax in axes}

    def pos(ax):
        s = spec[ax]
        return (s.rowspan.start, s.colspan.start) if s is not None else None

    out = {}
    for ax in axes:
        p = pos(ax)
        title = _clean_label(ax.get_title() or ax.get_title("left"))
        if not title and p is not None:   # a twin shares its panel's title; a column's panels its top title
            same = [a for a in axes if pos(a) == p and (a.get_title() or a.get_title("left"))]
            column = sorted((a for a in axes if pos(a) is not None and pos(a)[1] == p[1]
                             and (a.get_title() or a.get_title("left"))), key=lambda a: pos(a)[0])
            source = same or column
            title = _clean_label(source[0].get_title() or source[0].get_title("left")) if source else ""
        if not title and len(axes) > 1 and p is not None:
            title = f"row {p[0] + 1}, column {p[1] + 1}"
        ylabel = _clean_label(ax.get_ylabel())
        if not ylabel and p is not None:
            side = ax.yaxis.get_label_position()
            row = [a for a in axes if pos(a) is not None and pos(a)[0] == p[0] and a.get_ylabel()
                   and a.yaxis.get_label_position() == side]
            ylabel = _clean_label(row[0].get_ylabel()) if row else ""
        xlabel = _clean_label(ax.get_xlabel())
        if not xlabel and p is not None:
            column = sorted((a for a in axes if pos(a) is not None and pos(a)[1] == p[1] and a.get_xlabel()),
                            key=lambda a: -pos(a)[0])
            xlabel = _clean_label(column[0].get_xlabel()) if column else ""
        if not xlabel:   # one label under every panel
            xlabel = _clean_label(fig.get_supxlabel())
        out[ax] = (title, xlabel, ylabel)
    return out


def _named_ticks(axis):
    """(positions, names) of an axis whose ticks the figure placed and named, else None."""
    from matplotlib.ticker import FixedLocator, LogFormatter, ScalarFormatter
    formatter = axis.get_major_formatter()
    if not isinstance(axis.get_major_locator(), FixedLocator) or isinstance(formatter, (ScalarFormatter, LogFormatter)):
        return None
    locs = np.asarray(axis.get_ticklocs(), dtype=float)
    names = [_clean_label(formatter(loc, i)) for i, loc in enumerate(locs)]
    return (locs, names) if len(locs) and any(names) else None


def _as_number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _axis_values(ax, which: str, values: np.ndarray) -> list:
    """Positions on one axis as the reader knows them: sparsities, tick names, else the numbers drawn."""
    values = np.asarray(values, dtype=float)
    sparsities = _sparsities_of(ax) if which == "x" else None
    if sparsities is not None:
        out = 1.0 - 10.0 ** (-values)
        if len(sparsities):
            at = -np.log10(1.0 - np.clip(sparsities, 0.0, 1.0 - 1e-12))
            nearest = np.abs(values[:, None] - at[None, :]).argmin(axis=1)
            close = np.abs(values - at[nearest]) < 0.08
            out = np.where(close, sparsities[nearest], out)
        return list(out)
    ticks = _named_ticks(ax.xaxis if which == "x" else ax.yaxis)
    if ticks is None:
        return list(values)
    locs, names = ticks
    spacing = np.diff(np.sort(locs)).min() if len(locs) > 1 else 1.0
    out = []
    for v in values:
        i = int(np.abs(locs - v).argmin()) if np.isfinite(v) else -1
        out.append(_as_number(names[i]) if i >= 0 and abs(locs[i] - v) <= _SNAP * spacing + 1e-9 else v)
    return out


def _band_xy(collection):
    """(t, lower, upper) of each region a fill_between drew (one-std bands, intervals), in the fill's own
    direction; ``None`` for any other polygon."""
    from matplotlib.path import Path
    direction = getattr(collection, "t_direction", None)
    if direction is None:
        return None
    regions = []
    for path in collection.get_paths():
        v = path.vertices
        if path.codes is not None and len(v) and path.codes[-1] == Path.CLOSEPOLY:
            v = v[:-1]
        n = (len(v) - 2) // 2
        if n < 1 or len(v) != 2 * n + 2:
            continue
        if direction == "y":
            v = v[:, ::-1]
        t, f1, f2 = v[1:n + 1, 0], v[1:n + 1, 1], v[n + 2:, 1][::-1]
        regions.append((t, np.minimum(f1, f2), np.maximum(f1, f2), direction))
    return regions


def _error_bounds(container, n: int):
    """(x_lo, x_hi, y_lo, y_hi) of the n points of an error bar, NaN where no bar is drawn."""
    bounds = {k: np.full(n, np.nan) for k in ("x_lo", "x_hi", "y_lo", "y_hi")}
    # matplotlib draws the x error bars first, then the y ones, one collection each
    directions = ["x"] * bool(container.has_xerr) + ["y"] * bool(container.has_yerr)
    for direction, collection in zip(directions, container.lines[2]):
        segments = collection.get_segments()
        if len(segments) != n:
            continue
        column = 0 if direction == "x" else 1
        for i, seg in enumerate(segments):
            seg = np.asarray(seg, dtype=float)
            bounds[f"{direction}_lo"][i], bounds[f"{direction}_hi"][i] = seg[:, column].min(), seg[:, column].max()
    return bounds


def _axes_rows(ax, legend: _Legend, fallback) -> list[dict]:
    from matplotlib.container import BarContainer, ErrorbarContainer
    from matplotlib.image import AxesImage

    rows: list[dict] = []
    used: set[int] = set()
    line_rows: list[tuple] = []   # (line, its rows), for the bands drawn with them

    def point(series, x, y, **extra):
        rows.append({"series": series, "x": x, "y": y, **extra})
        return rows[-1]

    for c in ax.containers:
        if isinstance(c, BarContainer):
            horizontal = c.orientation == "horizontal"
            name = _name(c.get_label()) or (_name(c.patches[0].get_label()) if c.patches else None)  # hist: there
            name = name or (legend.color(c.patches[0].get_facecolor()) if c.patches else None)
            name = name or fallback()
            bounds = _error_bounds(c.errorbar, len(c.patches)) if c.errorbar is not None else None
            if c.errorbar is not None:
                used.update(id(a) for a in c.errorbar.lines[1])
            for i, (patch, value) in enumerate(zip(c.patches, c.datavalues)):
                if horizontal:
                    r = point(name, float(value), patch.get_y() + patch.get_height() / 2)
                else:
                    r = point(name, patch.get_x() + patch.get_width() / 2, float(value))
                if bounds is not None:
                    r.update({k: v[i] for k, v in bounds.items()})
        elif isinstance(c, ErrorbarContainer):
            data_line, caplines, _ = c.lines
            used.update(id(a) for a in caplines)
            if data_line is None:
                continue
            used.add(id(data_line))
            name = _name(c.get_label()) or legend.line(data_line) or fallback()
            x, y = np.asarray(data_line.get_xdata(), float), np.asarray(data_line.get_ydata(), float)
            bounds = _error_bounds(c, len(x))
            for i in range(len(x)):
                point(name, x[i], y[i], **{k: v[i] for k, v in bounds.items()})

    for line in ax.lines:
        if id(line) in used or not line.get_visible():
            continue
        x = np.asarray(line.get_xdata(), dtype=float)
        y = np.asarray(line.get_ydata(), dtype=float)
        if x.size == 0:
            continue   # a legend proxy draws nothing
        transform = line.get_transform()
        if transform != ax.transData:   # a reference line across the axes: one value, kept when it is named
            name = _name(line.get_label()) or legend.line(line, reference=True)
            if name is None:
                continue
            if transform == ax.get_yaxis_transform("grid"):
                point(name, np.nan, float(y[0]))
            elif transform == ax.get_xaxis_transform("grid"):
                point(name, float(x[0]), np.nan)
            continue
        if line.get_drawstyle() == "steps-post" and x.size > 1:   # a step holds its value up to the next edge
            x, y = (x[:-1] + x[1:]) / 2, y[:-1]
        name = _name(line.get_label()) or legend.line(line) or fallback()
        line_rows.append((line, [point(name, x[i], y[i]) for i in range(x.size)]))

    for collection in ax.collections:
        if id(collection) in used or not collection.get_visible():
            continue
        regions = _band_xy(collection)
        if regions:
            color = _rgb(collection.get_facecolor()[0]) if len(collection.get_facecolor()) else ()
            for t, lo, hi, direction in regions:
                lo_key, hi_key = ("y_lo", "y_hi") if direction == "x" else ("x_lo", "x_hi")
                mates = [rs for line, rs in line_rows if _rgb(line.get_color()) == color
                         and all(not np.isfinite(r.get(lo_key, np.nan)) for r in rs)]
                for rs in mates:   # the line this band belongs to: its colour, drawn at the same points
                    at = np.asarray([r["x"] if direction == "x" else r["y"] for r in rs], dtype=float)
                    if len(at) == len(t) and np.allclose(at, t):
                        for r, a, b in zip(rs, lo, hi):
                            r[lo_key], r[hi_key] = a, b
                        break
                else:
                    name = _name(collection.get_label()) or legend.color(collection.get_facecolor()[0]) or fallback()
                    for a, b, c in zip(t, lo, hi):
                        if direction == "x":
                            point(name, a, np.nan, y_lo=b, y_hi=c)
                        else:
                            point(name, np.nan, a, x_lo=b, x_hi=c)
            continue
        offsets = collection.get_offsets() if hasattr(collection, "get_offsets") else None
        if type(collection).__name__ == "PathCollection" and offsets is not None and len(offsets):
            name = _name(collection.get_label()) or legend.color(collection.get_facecolor()[0]) or fallback()
            for x, y in np.asarray(offsets, dtype=float):
                point(name, x, y)

    for image in ax.images:
        if isinstance(image, AxesImage) and image.get_visible():
            a = np.asarray(image.get_array(), dtype=float)
            if a.ndim == 2:
                name = _name(image.get_label()) or ax.get_title() or fallback()
                for (i, j), v in np.ndenumerate(a):
                    point(name, float(j), float(i), value=v)

    if rows:   # back to the reader's units, one axis at a time
        for which in ("x", "y"):
            values = _axis_values(ax, which, [r[which] for r in rows])
            for r, v in zip(rows, values):
                r[which] = v
        if _sparsities_of(ax) is not None:   # x error bars on a sparsity axis: bounds in sparsity too
            for r in rows:
                for key in ("x_lo", "x_hi"):
                    if key in r:
                        r[key] = 1.0 - 10.0 ** (-r[key])
    return rows


def figure_data(fig) -> pd.DataFrame:
    """The numbers ``fig`` draws, one row per plotted point: ``panel``, ``series``, ``x``, ``y``, the bounds of
    the band or error bar drawn with it (``y_lo``, ``y_hi``, ``x_lo``, ``x_hi``; columns left out where none is
    drawn), ``value`` for a heat map's cells, and the axis labels. A figure with nothing plotted (a note) gives
    an empty table."""
    from matplotlib.figure import Figure
    if not isinstance(fig, Figure):
        raise TypeError(f"figure_data: fig must be a matplotlib Figure, got {type(fig).__name__}")
    legend = _Legend(fig)
    counter = iter(range(1, 10**6))

    def fallback() -> str:
        return f"series {next(counter)}"

    rows = []
    for ax, (title, xlabel, ylabel) in _titles(fig).items():
        if _sparsities_of(ax) is not None:   # its ticks may read in percent; the data gives fractions
            xlabel = re.sub(r"\s*\(%\)", "", xlabel)
        for r in _axes_rows(ax, legend, fallback):
            rows.append({"panel": title, **r, "x_label": xlabel, "y_label": ylabel})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    keep = [c for c in COLUMNS if c not in _OPTIONAL or table[c].notna().any()]
    table = table[keep]
    # a point is plotted where its y (or, for a reference line across the axes, its x) is a number
    plotted = table[["x", "y"]].apply(lambda col: col.map(lambda v: isinstance(v, str) or np.isfinite(v))).any(axis=1)
    if "value" in table:
        plotted |= table["value"].notna()
    return table[plotted].reset_index(drop=True)


def _csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, float_format="%.7g", lineterminator="\n")


def figure_csv(fig) -> str:
    """:func:`figure_data` as CSV text (seven significant digits: more than any figure shows)."""
    return _csv(figure_data(fig))


def _file_name(name) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name or "")).strip("-.")
    return name or "figure"


def figure_html(fig, name: str | None = None) -> str | None:
    """The figure as HTML: its PNG at twice the pixel density, shown at its natural size (as the inline backend
    shows it), and under it the link "Data: <name>.csv" to :func:`figure_data` as CSV. ``name`` defaults to
    the figure's label (:func:`sparsegap.pages.figure` labels each figure with its key). None for an empty
    figure, which IPython then shows as it would anyway."""
    from IPython.core.pylabtools import retina_figure
    drawn = retina_figure(fig, base64=True)
    if drawn is None:
        return None
    png, size = drawn
    stem = _file_name(name if name is not None else fig.get_label())
    html = (f'<img src="data:image/png;base64,{png}" width="{size["width"]}" height="{size["height"]}" '
            f'alt="{stem}" class="sparsegap-figure">')
    table = figure_data(fig)
    if len(table):
        csv = base64.b64encode(_csv(table).encode()).decode()
        html += (f'\n<p class="sparsegap-figure-data" style="margin:0.2em 0 0 0;font-size:0.85em">'
                 f'<a href="data:text/csv;charset=utf-8;base64,{csv}" download="{stem}.csv" '
                 f'title="the numbers plotted, one row per point">Data: {stem}.csv</a></p>')
    return html


def show_data_links() -> None:
    """Display every matplotlib figure of this IPython session as :func:`figure_html` (image and data link);
    outside IPython, nothing to do. The PNG stays in the output too, for whatever reads images (the book's
    teaser, other builders)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    from matplotlib.figure import Figure
    shell.display_formatter.formatters["text/html"].for_type(Figure, figure_html)
