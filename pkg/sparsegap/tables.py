"""Tables for the book's pages: headers in words with units, values at a sensible precision, no wider
than the text column.

Every chapter shows its tables through :func:`table` (a results table) or :func:`paper_vs_ours` (the
paper's numbers beside ours), never as a raw pandas frame::

    from sparsegap.tables import Col, table
    table(summary, {"sparsity": Col("sparsity", "sparsity"), "test_acc": Col("test accuracy (%)", "pct"),
                    "n": Col("seeds", "seeds")})

A format is a name (below) or any callable from a value to a string. ``"auto"`` prints integers as
integers and other numbers with three significant digits.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["Col", "FORMATS", "Table", "fmt", "paper_vs_ours", "table"]

MISSING = "–"  # shown for NaN and None


def _is_missing(x: Any) -> bool:
    if x is None:
        return True
    try:
        return bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def _sig(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits, without scientific notation in [1e-3, 1e6)."""
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    if 1e-3 <= abs(x) < 1e6:
        decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
        return f"{x:.{decimals}f}"
    return f"{x:.{digits - 1}e}"


def _auto(x: Any) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}" if abs(int(x)) >= 10_000 else str(int(x))
    if isinstance(x, (float, np.floating)):
        return str(int(x)) if float(x).is_integer() and abs(x) < 1e6 else _sig(x)
    return str(x)


def _int(x: Any) -> str:
    return f"{int(round(float(x))):,}"


def _pct(x: Any) -> str:
    """A fraction in [0, 1] as a percentage with one decimal: 0.8123 -> "81.2"."""
    return f"{100 * float(x):.1f}"


def _points(x: Any) -> str:
    """A difference of fractions in percentage points, signed: -0.0042 -> "−0.42"."""
    return f"{100 * float(x):+.2f}".replace("-", "−")


def _sparsity(x: Any) -> str:
    """0.95 -> "0.95", 0.995 -> "0.995", 0.9 -> "0.9": as many digits as the value needs (at most 4)."""
    return f"{float(x):.4f}".rstrip("0").rstrip(".") or "0"


def _seeds(x: Any) -> str:
    n = int(round(float(x)))
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _sci(x: Any) -> str:
    return f"{float(x):.2e}"


def _signed(x: Any) -> str:
    return ("+" if float(x) > 0 else "") + _sig(x).replace("-", "−")


FORMATS: dict[str, Callable[[Any], str]] = {
    "auto": _auto, "int": _int, "pct": _pct, "points": _points, "sparsity": _sparsity, "seeds": _seeds,
    "sci": _sci, "signed": _signed, "text": str,
    **{f"{d}f": (lambda d: (lambda x: f"{float(x):.{d}f}"))(d) for d in range(5)},
    **{f"{d}g": (lambda d: (lambda x: _sig(x, d)))(d) for d in range(1, 6)},
}


def fmt(value: Any, how: str | Callable[[Any], str] = "auto") -> str:
    """One value as text: ``how`` is a name of :data:`FORMATS` or a callable; NaN and None become "–"."""
    if callable(how):
        f = how
    elif how in FORMATS:
        f = FORMATS[how]
    else:
        raise ValueError(f"fmt: how must be a callable or one of {sorted(FORMATS)}, got {how!r}")
    return MISSING if _is_missing(value) else f(value)


@dataclass(frozen=True)
class Col:
    """How one column is shown: its ``header`` in words (with the unit), and its format (see :func:`fmt`)."""

    header: str
    how: str | Callable[[Any], str] = "auto"

    def __post_init__(self):
        if not isinstance(self.header, str) or not self.header.strip():
            raise ValueError(f"Col.header must be a non-empty string, got {self.header!r}")
        if not callable(self.how) and self.how not in FORMATS:
            raise ValueError(f"Col.how must be a callable or one of {sorted(FORMATS)}, got {self.how!r}")


@dataclass(frozen=True)
class Table:
    """A formatted table: headers and cells as text. Shows as HTML in the book and as Markdown elsewhere."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    numeric: tuple[bool, ...] = ()

    def _repr_html_(self) -> str:
        align = self.numeric or (False,) * len(self.headers)
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join(
            "<tr>" + "".join(f'<td class="{"num" if a else "text"}">{html.escape(c)}</td>'
                             for c, a in zip(r, align)) + "</tr>" for r in self.rows)
        cap = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        return (f'<div class="sparsegap-table-wrap"><table class="sparsegap-table">{cap}<thead><tr>{head}</tr>'
                f"</thead><tbody>{body}</tbody></table></div>")

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def to_markdown(self) -> str:
        def esc(t: str) -> str:
            return t.replace("|", "\\|")
        lines = ["| " + " | ".join(esc(h) for h in self.headers) + " |",
                 "|" + "|".join("---:" if a else "---" for a in (self.numeric or (False,) * len(self.headers))) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in self.rows]
        return ("**" + self.caption + "**\n\n" if self.caption else "") + "\n".join(lines)

    def __repr__(self) -> str:
        return self.to_markdown()


def table(df: pd.DataFrame, columns: Mapping[str, str | Col] | None = None, *, caption: str = "") -> Table:
    """``df`` as a :class:`Table`: only the ``columns`` given, in their order, each with its header and format.

    ``columns`` maps a column of ``df`` to a :class:`Col` (or to a header, formatted ``"auto"``). Without
    it, every column is shown with its own name and the ``"auto"`` format; the index is never shown
    (``reset_index()`` first to keep it).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"table: df must be a pandas DataFrame, got {type(df).__name__}")
    if columns is None:
        columns = {c: Col(str(c)) for c in df.columns}
    cols = {k: (v if isinstance(v, Col) else Col(v)) for k, v in columns.items()}
    missing = [k for k in cols if k not in df.columns]
    if missing:
        raise KeyError(f"table: columns {missing} are not in the frame, which has {list(df.columns)}")
    rows = tuple(tuple(fmt(v, c.how) for v, c in zip(rec, cols.values()))
                 for rec in df[list(cols)].itertuples(index=False, name=None))
    numeric = tuple(pd.api.types.is_numeric_dtype(df[k]) and not pd.api.types.is_bool_dtype(df[k]) for k in cols)
    return Table(tuple(c.header for c in cols.values()), rows, caption, numeric)


def paper_vs_ours(rows: Sequence[Mapping[str, Any] | Sequence[Any]], *, caption: str = "") -> Table:
    """The paper's numbers beside ours: one row per quantity, with the columns
    *quantity*, *the paper*, *ours* and *note* (each a string, or a number formatted ``"auto"``).

    A row is a mapping with those keys (``note`` optional) or a sequence in that order. Where the paper
    gives no number, say so in the row ("not given"), rather than leaving the cell empty.
    """
    out = []
    for i, r in enumerate(rows):
        if isinstance(r, Mapping):
            unknown = set(r) - {"quantity", "paper", "ours", "note"}
            if unknown or not {"quantity", "paper", "ours"} <= set(r):
                raise ValueError(f"paper_vs_ours: row {i} must have keys quantity, paper, ours (and note), "
                                 f"got {sorted(r)}")
            r = (r["quantity"], r["paper"], r["ours"], r.get("note", ""))
        r = tuple(r)
        if len(r) not in (3, 4):
            raise ValueError(f"paper_vs_ours: row {i} must have 3 or 4 cells (quantity, paper, ours, note), "
                             f"got {len(r)}")
        out.append(tuple(fmt(c) if not isinstance(c, str) else c for c in (*r, "")[:4]))
    if not out:
        raise ValueError("paper_vs_ours: rows must not be empty")
    return Table(("quantity", "the paper", "ours", "note"), tuple(out), caption, (False, False, False, False))
