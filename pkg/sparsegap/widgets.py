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


def noisy_confusion_explorer(experiment, data, *, key: str = "predictions:permuted", seed: int | None = None,
                             max_frames: int = 12, classes=None) -> widgets.VBox:
    """Slide over epochs: which noisy samples each solution has memorized, by (true class, noisy label).

    Pre-rendered at up to ``max_frames`` measurement epochs of the ``predictions:permuted`` trace of
    one seed (the first by default), so that the slider also works in the static book. ``classes``
    names the classes on the axes (e.g. ``sparsegap.data.class_names(dataset)``); without it, indices.
    """
    from .memorization import noisy_confusion
    from .studies.memorization import STAGES

    s = experiment.sparsities[0]
    seeds = sorted({k[2] for k in experiment.runs})
    seed = seeds[0] if seed is None else seed
    runs = {st: experiment.runs[(st, 0.0 if st == "Sol-D" else s, seed)] for st in STAGES}
    runs = {st: r for st, r in runs.items() if not r.diverged}
    traces = {st: r.history["trace"][key] for st, r in runs.items()}
    epochs = next(iter(traces.values()))["epochs"]
    step = max(1, -(-len(epochs) // max_frames))
    frames = list(range(0, len(epochs), step))
    if frames[-1] != len(epochs) - 1:
        frames.append(len(epochs) - 1)

    def render(i: int) -> bytes:
        mats = {st: noisy_confusion(data, t["value"][i]) for st, t in traces.items()}
        return plots.figure_to_png(plots.figure_noisy_confusion(mats, classes, epoch=epochs[i]))

    return image_explorer(frames, render, description="epoch", format_key=lambda i: f"{epochs[i]:g}")
