"""Pieces that figures of several chapters draw: the log-density sparsity axis and seed means with bands."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .data import mark_sparsity_axis


def sparsity_axis(sparsities) -> np.ndarray:
    """Positions on a log-density axis, so that 0.9, 0.99 and 0.999 are evenly spread."""
    return -np.log10(1.0 - np.asarray(sparsities, dtype=float))


def set_sparsity_ticks(ax, sparsities) -> None:
    mark_sparsity_axis(ax, sparsities)
    ax.set_xticks(sparsity_axis(sparsities))
    ax.set_xticklabels([f"{s:g}" for s in sparsities], rotation=45)
    ax.set_xlabel("sparsity")


def density_ticks(ax, sparsities) -> None:
    """Ticks at every other round: sparsity on a log-density axis (0.9, 0.99, 0.999 evenly spaced)."""
    s = sorted(sparsities)
    mark_sparsity_axis(ax, s)
    s = s[::2] if len(s) > 6 else s
    ax.set_xticks(sparsity_axis(s))
    ax.set_xticklabels([f"{100 * v:.4g}" for v in s], rotation=60)
    ax.set_xlabel("sparsity (%)")


def over_epochs(hs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values of shape seeds x points) of one history series over seeds: a tracker's trace
    (``history["trace"][key]``) or a per-epoch list of ``train()`` (``history[key]``)."""
    if key in hs[0].get("trace", {}):
        return np.asarray(hs[0]["trace"][key]["epochs"]), np.array([h["trace"][key]["value"] for h in hs])
    return np.asarray(hs[0]["epoch"], dtype=float), np.array([h[key] for h in hs])


def band(ax, x, values: np.ndarray, color, style="-", label=None) -> None:
    """Seed mean as a line, one standard deviation as a band."""
    mean, std = values.mean(0), values.std(0)
    ax.plot(x, mean, style, color=color, lw=1.4, label=label)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.18, lw=0)


def sparsity_band(ax, d: pd.DataFrame, col: str, color, style="-", label=None, marker="o") -> None:
    x = sparsity_axis(d.sparsity)
    ax.plot(x, d[col], style, color=color, marker=marker, ms=3, lw=1.3, label=label)
    std = d.get(f"{col}_std")
    if std is not None:
        std = std.fillna(0.0)
        ax.fill_between(x, d[col] - std, d[col] + std, color=color, alpha=0.15, lw=0)
