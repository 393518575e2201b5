"""Input checks that many modules share: each error names the parameter, the value and what is allowed.

``owner`` and ``name`` say where the value came from (``RunConfig.seed``, ``train(epochs=...)``), so the
message points at the line a reader must change.
"""

from __future__ import annotations

import math
from typing import Any


def check_type(owner: str, name: str, value: Any, types: tuple, allowed: str) -> None:
    if isinstance(value, bool) and bool not in types:
        raise TypeError(f"{owner}.{name} must be {allowed}, got {value!r} (bool)")
    if not isinstance(value, types):
        raise TypeError(f"{owner}.{name} must be {allowed}, got {value!r} of type {type(value).__name__}")


def positive_int(owner: str, name: str, value: Any) -> None:
    check_type(owner, name, value, (int,), "a positive int")
    if value <= 0:
        raise ValueError(f"{owner}.{name} must be a positive int, got {value!r}")


def number(owner: str, name: str, value: Any, low: float, high: float = math.inf, *,
            low_open: bool = False, high_open: bool = False) -> None:
    """The one check of every real-valued field: a finite number (not a bool) in the interval.

    NaN and ±inf are always rejected, whatever the interval: ``weight_decay=inf`` would train to
    NaN weights and be stored as a finished run.
    """
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open or high == math.inf else ']'}"
    allowed = f"a finite number in {interval}"
    check_type(owner, name, value, (int, float), allowed)
    in_range = (low < value if low_open else low <= value) and (value < high if high_open else value <= high)
    if not (math.isfinite(value) and in_range):
        raise ValueError(f"{owner}.{name} must be {allowed}, got {value!r}")


def seed(owner: str, name: str, value: Any) -> None:
    """Seeds feed torch, numpy and derived streams (seed * 1_000_003 + epoch): keep them in [0, 2**32)."""
    check_type(owner, name, value, (int,), "an int in [0, 2**32)")
    if not 0 <= value < 2**32:
        raise ValueError(f"{owner}.{name} must be an int in [0, 2**32), got {value!r}")


def canonical(what: str, name: str, allowed: tuple[str, ...]) -> str:
    """Case-insensitive name lookup that also accepts '_' for '-'."""
    key = name.strip().lower().replace("_", "-")
    for a in allowed:
        if key == a.lower().replace("_", "-"):
            return a
    raise ValueError(f"{what} must be one of {allowed}, got {name!r}")
