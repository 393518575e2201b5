"""Metrics recorded during training, named in a run's config so that they are part of its identity.

A tracker spec is ``"<name>@<every>"`` (every N epochs) or ``"<name>@<every>step"`` (every N
optimizer steps); a bare ``"<name>"`` means every epoch. The values land in the run's history under
``history["trace"][name]`` with the epoch and step of each measurement. A new tracker is a factory
``(data, every, unit) -> callback`` registered in :data:`TRACKERS`.
"""

from __future__ import annotations

import re
from typing import Callable

_SPEC = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)(@(?P<every>[1-9][0-9]*)(?P<unit>step|epoch)?)?$")


def _fisher(data, every: int, unit: str):
    from .metrics.callbacks import FisherTraceCallback
    return FisherTraceCallback(data.x_train, data.y_train, every=every, unit=unit, labels="sampled")


TRACKERS: dict[str, Callable] = {"fisher_trace": _fisher}


def parse_tracker(spec: str) -> tuple[str, int, str]:
    """``"fisher_trace@5"`` -> ("fisher_trace", 5, "epoch"); clear errors for anything else."""
    m = _SPEC.match(spec) if isinstance(spec, str) else None
    if m is None or m["name"] not in TRACKERS:
        raise ValueError(f"tracker spec must look like '<name>', '<name>@<N>' or '<name>@<N>step' with name in "
                         f"{sorted(TRACKERS)}, got {spec!r}")
    return m["name"], int(m["every"] or 1), m["unit"] or "epoch"


def make_trackers(specs, data) -> list:
    out = []
    for spec in specs:
        name, every, unit = parse_tracker(spec)
        out.append(TRACKERS[name](data, every, unit))
    return out
