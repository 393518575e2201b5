"""Memorization statistics of runs trained on noisy labels, read from their histories.

A noisy sample is *memorized* when the network predicts its noisy label: the ``accuracy:permuted``
trace is the memorized share of the noisy samples. Everything here works on plain history dicts
(``Run.history``: per-epoch lists such as ``test_acc``, and ``history["trace"][key]`` with lists
``epochs`` and ``value``, where ``epochs`` 0.0 is the initialisation and 1.0 the end of epoch 1).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["first_epoch_reaching", "memorization_table", "memorized_share", "noisy_confusion"]

MEMORIZED = "accuracy:permuted"  # the trace of the memorized share
AT = ("end", "best_test")


def _trace(history: dict, key: str) -> dict:
    if not isinstance(history, dict):
        raise TypeError(f"history must be a run's history (a dict), got {type(history).__name__}")
    traces = history.get("trace") or {}
    trace = traces.get(key)
    if trace is None:
        raise ValueError(f"history has no {key!r} trace (traces: {sorted(traces) or 'none'}); train the run with "
                         f"the tracker '{key}@1' in RunConfig.track")
    if not trace.get("value"):
        raise ValueError(f"the {key!r} trace of this history is empty")
    return trace


def first_epoch_reaching(history: dict, key: str, threshold: float) -> float | None:
    """The first ``epochs`` value at which ``history["trace"][key]`` is at least ``threshold``
    (0.0 if it starts there), or None if it never gets there."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    trace = _trace(history, key)
    for epochs, value in zip(trace["epochs"], trace["value"]):
        if value >= threshold:
            return float(epochs)
    return None


def best_test_epoch(history: dict) -> int:
    """The 1-based epoch of the best ``test_acc`` (the first one on a tie)."""
    test = history.get("test_acc") if isinstance(history, dict) else None
    if not test:
        raise ValueError("history has no test_acc (no epoch finished), so it has no best-test epoch")
    return int(np.argmax(test)) + 1


def memorized_share(history: dict, *, at: str = "end") -> float:
    """The share of noisy samples predicted as their noisy label, from the ``accuracy:permuted`` trace.

    ``at="end"``: the last measurement. ``at="best_test"``: the last measurement at or before the
    epoch of the best test accuracy (:func:`best_test_epoch`), i.e. that epoch itself with an
    ``@1`` tracker.
    """
    if at not in AT:
        raise ValueError(f"at must be one of {AT}, got {at!r}")
    trace = _trace(history, MEMORIZED)
    if at == "end":
        return float(trace["value"][-1])
    best = best_test_epoch(history)
    before = [i for i, e in enumerate(trace["epochs"]) if e <= best + 1e-9]
    if not before:
        raise ValueError(f"the {MEMORIZED!r} trace has no measurement at or before epoch {best} (best test)")
    return float(trace["value"][before[-1]])


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def memorization_table(histories: dict[str, list[dict]], threshold: float = 0.5) -> pd.DataFrame:
    """One row per label (e.g. "Sol-D"), the mean and std over its per-seed histories of:

    * ``memorized_end``: :func:`memorized_share` at the end;
    * ``memorized_best``: :func:`memorized_share` at the best-test epoch;
    * ``reach_epoch``: the epoch at which ``accuracy:permuted`` first reaches ``threshold``
      (NaN when some seed never reaches it; ``reached`` counts the seeds that do);
    * ``test_acc_final``: the last epoch's test accuracy; ``test_acc_best``: the best one.

    Columns ``<name>_mean`` and ``<name>_std`` (sample std, 0 for one seed), plus ``seeds`` and
    ``reached``.
    """
    if not isinstance(histories, dict) or not histories:
        raise ValueError(f"histories must be a non-empty dict label -> list of histories, got {histories!r}")
    rows = {}
    for label, hs in histories.items():
        hs = list(hs)
        if not hs:
            raise ValueError(f"histories[{label!r}] is empty: a label needs at least one history")
        reach = [first_epoch_reaching(h, MEMORIZED, threshold) for h in hs]
        stats = {
            "memorized_end": [memorized_share(h, at="end") for h in hs],
            "memorized_best": [memorized_share(h, at="best_test") for h in hs],
            "reach_epoch": [math.nan if r is None else r for r in reach],
            "test_acc_final": [h["test_acc"][-1] for h in hs],
            "test_acc_best": [max(h["test_acc"]) for h in hs],
        }
        row: dict[str, float | int] = {}
        for name, values in stats.items():
            row[f"{name}_mean"], row[f"{name}_std"] = _mean_std(values)
        row["seeds"], row["reached"] = len(hs), sum(r is not None for r in reach)
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def noisy_confusion(data, predictions: Sequence[int]) -> np.ndarray:
    """Counts (C, C) of the memorized noisy samples (predicted as their noisy label), by
    (true class, noisy label). ``predictions`` is one measurement of a ``predictions:permuted``
    trace: the predicted class of every noisy sample, in training-set order. The diagonal is zero
    (a noisy label never is the true class); the total is the number of memorized samples.
    """
    idx = data.subset_indices("permuted")
    pred = np.asarray(predictions)
    if pred.ndim != 1 or len(pred) != len(idx):
        raise ValueError(f"predictions must hold one class per noisy sample ({len(idx)}), got shape {pred.shape}; "
                         f"pass one value of the 'predictions:permuted' trace")
    c = data.num_classes
    if len(pred) and (not np.issubdtype(pred.dtype, np.integer) or pred.min() < 0 or pred.max() >= c):
        raise ValueError(f"predictions must be class indices in [0, {c}), got dtype {pred.dtype}, "
                         f"range [{pred.min()}, {pred.max()}]")
    true, noisy = data.y_train_true[idx].numpy(), data.y_train[idx].numpy()
    hit = pred == noisy
    out = np.zeros((c, c), dtype=np.int64)
    np.add.at(out, (true[hit], noisy[hit]), 1)
    return out
