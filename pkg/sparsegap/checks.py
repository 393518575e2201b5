"""Input checks that many modules share: each error names the parameter, the value and what is allowed.

``owner`` and ``name`` say where the value came from (``RunConfig.seed``, ``train(epochs=...)``), so the
message points at the line a reader must change.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def _where(owner: str | None, name: str) -> str:
    return f"{owner}.{name}" if owner else name


def check_type(owner: str | None, name: str, value: Any, types: tuple, allowed: str) -> None:
    if isinstance(value, bool) and bool not in types:
        raise TypeError(f"{_where(owner, name)} must be {allowed}, got {value!r} (bool)")
    if not isinstance(value, types):
        raise TypeError(f"{_where(owner, name)} must be {allowed}, got {value!r} of type {type(value).__name__}")


def positive_int(owner: str | None, name: str, value: Any) -> int:
    """``value``, an int >= 1. ``owner=None`` names a function's argument alone (``chunk_size``)."""
    check_type(owner, name, value, (int,), "a positive int")
    if value <= 0:
        raise ValueError(f"{_where(owner, name)} must be a positive int, got {value!r}")
    return value


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


def torch_seed(name: str, value: Any, *, optional: bool = False) -> int | None:
    """``value`` as an int a ``torch.Generator`` takes ([-2**63, 2**64)); numpy ints are accepted.

    Wider than :func:`seed`: measurements and initialisations draw from their own generator, seeded by
    any int a caller picks, while a config's seeds also feed derived streams. ``optional`` lets None through.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not -2**63 <= value < 2**64:
        allowed = "an int in [-2**63, 2**64) (torch's seed range)" + (" or None" if optional else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def canonical(what: str, name: str, allowed: tuple[str, ...]) -> str:
    """Case-insensitive name lookup that also accepts '_' for '-'."""
    key = name.strip().lower().replace("_", "-")
    for a in allowed:
        if key == a.lower().replace("_", "-"):
            return a
    raise ValueError(f"{what} must be one of {allowed}, got {name!r}")


def device(name: str, value: Any):
    """``value`` as a ``torch.device`` this machine has: a str such as "cpu", "cuda", "cuda:1" or "mps", or a
    ``torch.device``. torch's own parse error ("Expected one of cpu, cuda, ... at start of device string") names
    no parameter, and a device this machine lacks only fails at the first tensor moved to it."""
    import torch
    allowed = "'cpu', 'cuda', 'cuda:N' or 'mps' (a str or torch.device)"
    if isinstance(value, torch.device):
        resolved = value
    elif isinstance(value, str):
        try:
            resolved = torch.device(value)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"{name} must be {allowed}, got {value!r}") from None
    else:
        raise TypeError(f"{name} must be {allowed}, got {value!r} of type {type(value).__name__}")
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (resolved.index is not None and resolved.index >= count):
            raise ValueError(f"{name}={value!r}, but this machine has {count} CUDA GPU(s)"
                             f"{f': cuda:0 to cuda:{count - 1}' if count else ''}; use {name}='cpu' or one it has")
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{name}={value!r}, but MPS is not available on this machine; use {name}='cpu'")
    elif resolved.type != "cpu":
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return resolved
