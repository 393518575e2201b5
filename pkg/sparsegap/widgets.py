"""ipywidgets explorers over stored results.

The explorers link their controls to the display with ``jslink``, on the browser side, so they
keep working in the static HTML book where no kernel runs: every view is rendered once, up front.
"""

from __future__ import annotations

from typing import Callable, Sequence

import ipywidgets as widgets

from . import plots


def image_explorer(keys: Sequence, render: Callable[[object], bytes], *, description: str = "",
                   format_key: Callable[[object], str] = str) -> widgets.VBox:
    """A slider over ``keys`` that shows ``render(key)`` (PNG bytes) for the chosen key."""
    keys = list(keys)
    if not keys:
        raise ValueError("image_explorer needs at least one key")
    images = [widgets.Image(value=render(k), format="png", layout=widgets.Layout(max_width="100%")) for k in keys]
    stack = widgets.Stack(images, selected_index=0)
    slider = widgets.SelectionSlider(options=[(format_key(k), i) for i, k in enumerate(keys)], value=0,
                                     description=description, continuous_update=True,
                                     style={"description_width": "initial"},
                                     layout=widgets.Layout(width="60%"))
    widgets.jslink((slider, "index"), (stack, "selected_index"))
    return widgets.VBox([slider, stack])


def training_curve_explorer(experiment, stages: Sequence[str] = ("Sol-S", "Sol-F")) -> widgets.VBox:
    """Pick a sparsity, see the training curves of Sol-S and Sol-F side by side (all seeds)."""
    def render(s: float) -> bytes:
        hist = {st: experiment.trained_histories(st, s) for st in stages}
        return plots.figure_to_png(plots.figure_training_curves(hist, sparsity=s))

    return image_explorer(experiment.sparsities, render, description="sparsity", format_key=lambda s: f"{s:g}")
