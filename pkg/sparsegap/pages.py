"""What a chapter hands to its page: figures with numbered captions and numbers quoted in the prose.

A chapter never prints a number into its prose by hand. It *glues* it (myst-nb's ``glue``) and the
Markdown quotes it with ``{glue:text}`key``` (a format spec may follow: ``{glue:text}`key:.1f```).
Figures are glued too, and a Markdown cell under the code places each one with its numbered caption::

    pages.figure("fig-07-double-descent", plots.figure_double_descent(summary))   # code cell, tag remove-cell

    ```{glue:figure} fig-07-double-descent
    :name: fig-07-double-descent

    Test accuracy against sparsity, mean of {glue:text}`07-n-seeds` seeds ...
    ```

Keys are unique across the book: ``fig-NN-what`` for figures and ``NN-what`` for values, with NN the
chapter's two-digit number. Outside the book's environment (no myst-nb), a figure is simply shown and
a value is not kept.
"""

from __future__ import annotations

import re
from typing import Any

import matplotlib.pyplot as plt

__all__ = ["FIGURE_KEY", "VALUE_KEY", "figure", "text", "value"]

FIGURE_KEY = re.compile(r"fig-\d\d-[a-z0-9][a-z0-9-]*")
VALUE_KEY = re.compile(r"\d\d-[a-z0-9][a-z0-9-]*")


def _glue(key: str, obj: Any, display: bool) -> bool:
    try:
        from myst_nb import glue
    except ImportError:
        return False
    glue(key, obj, display=display)
    return True


def figure(key: str, fig: plt.Figure) -> None:
    """Glue ``fig`` under ``key`` (``fig-NN-what``) for a ``{glue:figure}`` with a caption, and close it.

    The figure is also displayed, so a reader running the notebook in Jupyter sees it in place; the
    book drops that copy (tag the cell ``remove-cell``) and shows the captioned one."""
    if not FIGURE_KEY.fullmatch(str(key)):
        raise ValueError(f"pages.figure: key must look like 'fig-07-double-descent' (fig-, the chapter's two "
                         f"digits, a lowercase name), got {key!r}")
    if not isinstance(fig, plt.Figure):
        raise TypeError(f"pages.figure: fig must be a matplotlib Figure, got {type(fig).__name__}")
    # The key names the figure, so that its display (sparsegap.plots.data) names the numbers it links "<key>.csv".
    fig.set_label(key)
    if not _glue(key, fig, display=True):
        from IPython.display import display
        display(fig)
    plt.close(fig)


def value(key: str, number: Any) -> Any:
    """Glue a number under ``key`` (``NN-what``) for ``{glue:text}`key:.2f``` in the prose; returns it."""
    if not VALUE_KEY.fullmatch(str(key)):
        raise ValueError(f"pages.value: key must look like '07-gap-points' (the chapter's two digits, a "
                         f"lowercase name), got {key!r}")
    import numpy as np

    if isinstance(number, (bool, np.bool_)) or not isinstance(number, (int, float, np.integer, np.floating)):
        raise TypeError(f"pages.value: number must be an int or a float (use pages.text for words), got {number!r}")
    # A numpy scalar's text is "np.float64(0.81)", which {glue:text}`key:.2f` cannot format.
    number = int(number) if isinstance(number, (int, np.integer)) else float(number)
    _glue(key, number, display=False)
    return number


def text(key: str, words: str) -> str:
    """Glue a short phrase under ``key`` (``NN-what``), pasted by ``{glue:text}`key``` without quotes."""
    if not VALUE_KEY.fullmatch(str(key)):
        raise ValueError(f"pages.text: key must look like '07-peak' (the chapter's two digits, a lowercase "
                         f"name), got {key!r}")
    if not isinstance(words, str):
        raise TypeError(f"pages.text: words must be a string, got {type(words).__name__}")
    # Glued as a plain str: its text is the repr ('...'), which {glue:text} literal-evaluates back to the
    # words. (Text without quotes would be evaluated too: "0.5, 0.8" would paste as a tuple.)
    _glue(key, str(words), display=False)
    return words
