"""The language of tracker specs, ``"<metric>[:<subset>][~<samples>][@<every>[step]]"``, and the checks a config
can make on its own: what :class:`sparsegap.config.RunConfig` validates in ``track``. The callbacks that record
the metrics are built by :mod:`sparsegap.trackers` (one factory per metric), which documents each metric.

``~<samples>`` (``fisher_trace`` only: :data:`SAMPLED_METRICS`) measures on a fixed random subset of at most
that many samples of the subset, the same subset at every measurement and in every run; a spec without it
measures on all of them. The key a spec logs under is the spec without its ``~`` and ``@`` parts, so
``"fisher_trace~10000@5"`` logs under ``"fisher_trace"`` as ``"fisher_trace@5"`` does.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .data import SUBSETS

# The metrics a spec may name: sparsegap.trackers.TRACKERS has one factory for each (a test checks).
TRACKER_METRICS = ("accuracy", "loss", "fisher_trace", "predictions", "grad_norm", "grad_snr", "gsnr")
# Metrics that may measure on a random subset of their samples ("~<samples>"): a per-sample mean with its
# standard error, whose subset estimate stays unbiased.
SAMPLED_METRICS = ("fisher_trace",)
# Metrics of the training minibatches themselves, measured over whole epochs: no subset, no "@Nstep".
_MINIBATCH_METRICS = ("grad_snr",)

_SPEC = re.compile(r"^(?P<metric>[a-z_][a-z0-9_]*)(:(?P<subset>[a-z_][a-z0-9_]*))?(~(?P<samples>[0-9]+))?"
                   r"(@(?P<every>[1-9][0-9]*)(?P<unit>step|epoch)?)?$")


class TrackerSpec(NamedTuple):
    metric: str    # one of TRACKERS
    subset: str    # one of data.SUBSETS
    every: int
    unit: str      # "epoch" or "step"
    key: str       # history["trace"][key]: the spec without its "~..." and "@..." parts
    samples: int | None = None   # "~N": measure on a fixed random subset of at most N samples; None: all


def parse_tracker(spec: str) -> TrackerSpec:
    """``"accuracy:permuted@2"`` -> TrackerSpec("accuracy", "permuted", 2, "epoch", "accuracy:permuted");
    ``"fisher_trace~10000@5"`` -> TrackerSpec("fisher_trace", "train", 5, "epoch", "fisher_trace", 10000);
    a ValueError saying what is allowed for anything else."""
    m = _SPEC.match(spec) if isinstance(spec, str) else None
    allowed = (f"metrics: {', '.join(TRACKER_METRICS)}; subsets: {', '.join(SUBSETS)}")
    if m is None:
        raise ValueError(f"tracker spec (an entry of RunConfig.track) must look like '<metric>', "
                         f"'<metric>:<subset>', each optionally followed by '~<samples>' (fisher_trace only: at most "
                         f"that many samples) and by '@<N>' (every N epochs) or '@<N>step' (every N steps), e.g. "
                         f"'accuracy:permuted@1' or 'fisher_trace~10000@5' ({allowed}); got {spec!r}")
    if m["metric"] not in TRACKER_METRICS:
        raise ValueError(f"unknown metric {m['metric']!r} in tracker spec {spec!r} (an entry of RunConfig.track); "
                         f"metrics: {', '.join(TRACKER_METRICS)}")
    subset = m["subset"] or "train"
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r} in tracker spec {spec!r} (an entry of RunConfig.track); "
                         f"subsets: {', '.join(SUBSETS)}")
    if m["metric"] in _MINIBATCH_METRICS and (subset != "train" or m["unit"] == "step"):
        raise ValueError(f"tracker spec {spec!r} (an entry of RunConfig.track): {m['metric']} is measured over "
                         f"the training minibatches of whole epochs, so it takes no subset but 'train' and no "
                         f"'@<N>step'; use '{m['metric']}' or '{m['metric']}@<N>' (every N epochs)")
    samples = None
    if m["samples"] is not None:
        if m["metric"] not in SAMPLED_METRICS:
            raise ValueError(f"tracker spec {spec!r} (an entry of RunConfig.track): '~<samples>' (measure on a "
                             f"random subset of the samples) is allowed for {', '.join(SAMPLED_METRICS)} only, "
                             f"not {m['metric']}; drop '~{m['samples']}'")
        samples = int(m["samples"])
        if samples < 2 or m["samples"].startswith("0"):
            raise ValueError(f"tracker spec {spec!r} (an entry of RunConfig.track): '~<samples>' must be an int "
                             f">= 2 without leading zeros (a standard error needs two samples), got "
                             f"'~{m['samples']}'")
    key = spec.split("@")[0].split("~")[0]
    return TrackerSpec(m["metric"], subset, int(m["every"] or 1), m["unit"] or "epoch", key, samples)


def check_trackers(specs, data_config) -> None:
    """What can be checked against a :class:`~sparsegap.config.DataConfig` before loading anything:
    every spec parses, two specs do not log under one key, and no spec reads the noisy samples of
    clean data (``permuted`` or ``restored`` with ``noise=0`` would be empty)."""
    parsed = [parse_tracker(s) for s in specs]
    keys = [p.key for p in parsed]
    for k in keys:
        if keys.count(k) > 1:
            raise ValueError(f"two tracker specs log under one key {k!r} in track={tuple(specs)!r}; "
                             f"keep one of them")
    if not getattr(data_config, "noise", 0):
        for s, p in zip(specs, parsed):
            if p.subset in ("permuted", "restored"):
                raise ValueError(f"tracker spec {s!r} (an entry of RunConfig.track) reads the noisy samples, "
                                 f"but the data has none: set DataConfig(noise=...) above 0")
