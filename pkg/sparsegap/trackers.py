"""Trackers: metrics recorded during training, named in ``RunConfig.track`` so that they are part of
a run's identity.

A tracker spec is ``"<metric>[:<subset>][~<samples>][@<every>[step]]"``:

* ``metric``: ``accuracy``, ``loss`` (mean cross-entropy), ``fisher_trace`` (Tr(F) with labels
  sampled from the model, logged with its standard error in the trace's ``"se"`` list),
  ``predictions`` (the predicted class of every sample, a list of ints),
  ``grad_norm`` (norm of the loss gradient over the active weights, on a fixed batch of at most 256
  samples), ``gsnr`` (Liu et al.'s per-sample gradient signal-to-noise ratio, averaged per layer,
  on a fixed set of at most 256 samples) or ``grad_snr`` (the authors' layer-wise SNR of one epoch's
  minibatch gradients: training samples and epochs only, ``grad_snr`` or ``grad_snr@N``, nothing
  at the start, and only under :func:`sparsegap.train.train`, since the batched trainer writes no
  ``p.grad``); see :mod:`sparsegap.metrics.gradflow`;
* ``subset``: one of :data:`sparsegap.data.SUBSETS` (``train``, ``test``, ``permuted``,
  ``unpermuted``, ``restored``; see :meth:`sparsegap.data.DataSplits.split`), ``train`` if left out;
* ``~<samples>`` (``fisher_trace`` only): measure on a fixed random subset of at most N of the subset's
  samples, drawn once with seed 0, so that every run measures the very same samples (comparisons between
  runs stay paired); all of them if left out (``"fisher_trace:permuted~10000@5"``);
* ``@<every>``: every N epochs, ``@<every>step``: every N optimizer steps; every epoch if left out.

Each tracker also measures once at the start (0 epochs), then every N epochs (or steps). The values
land in ``history["trace"][key]`` (lists ``epoch``, ``step``, ``epochs``, ``value``) under the spec
without its ``~`` and ``@`` parts: ``"accuracy:permuted@1"`` logs under ``"accuracy:permuted"``,
``"fisher_trace@5"`` and ``"fisher_trace~10000@5"`` under ``"fisher_trace"`` as it always has. The
per-layer metrics (``grad_snr``, ``gsnr``) log one trace per Conv/Linear layer, under
``"<key>/<layer>"``: ``"grad_snr/fc1"``, ``"gsnr:test/fc1"``.

The spec language and its checks are in :mod:`sparsegap.tracker_specs`. A new metric is a name in
:data:`~sparsegap.tracker_specs.TRACKER_METRICS` and a factory ``(x, y, spec, shared) -> callback``
registered in :data:`TRACKERS`, where ``(x, y)`` is the subset's data and ``shared`` the subset's :class:`~sparsegap.metrics.callbacks.SharedLogits`.
"""

from __future__ import annotations

from typing import Callable

from .tracker_specs import TRACKER_METRICS, TrackerSpec, check_trackers, parse_tracker

__all__ = ["TRACKERS", "TRACKER_METRICS", "TrackerSpec", "check_trackers", "make_trackers", "parse_tracker"]

# The samples each subset reads: trackers of permuted and restored share one forward pass.
_ROWS = {"train": "train", "test": "test", "permuted": "noisy", "restored": "noisy", "unpermuted": "clean"}
# Values train() has already logged per epoch for the same weights and samples.
_LOGGED = {("accuracy", "train"): "train_acc", ("loss", "train"): "train_loss",
           ("accuracy", "test"): "test_acc", ("loss", "test"): "test_loss"}


def _fisher(x, y, spec: TrackerSpec, shared):
    from .metrics.callbacks import FisherTraceCallback
    return FisherTraceCallback(x, y, every=spec.every, unit=spec.unit, labels="sampled", name=spec.key,
                               max_samples=spec.samples)


def _subset_metric(x, y, spec: TrackerSpec, shared):
    from .metrics.callbacks import SubsetMetricCallback
    return SubsetMetricCallback(x, y, metric=spec.metric, every=spec.every, unit=spec.unit, name=spec.key,
                                logits=shared, logged_as=_LOGGED.get((spec.metric, spec.subset)))


def _grad_norm(x, y, spec: TrackerSpec, shared):
    from .metrics.gradflow import GradNormCallback
    return GradNormCallback(x, y, every=spec.every, unit=spec.unit, name=spec.key)


def _grad_snr(x, y, spec: TrackerSpec, shared):
    from .metrics.gradflow import GradSNRCallback
    return GradSNRCallback(every=spec.every, name=spec.key)


def _gsnr(x, y, spec: TrackerSpec, shared):
    from .metrics.gradflow import GSNRCallback
    return GSNRCallback(x, y, every=spec.every, unit=spec.unit, name=spec.key)


TRACKERS: dict[str, Callable] = {"accuracy": _subset_metric, "loss": _subset_metric, "fisher_trace": _fisher,
                                 "predictions": _subset_metric, "grad_norm": _grad_norm, "grad_snr": _grad_snr,
                                 "gsnr": _gsnr}


def make_trackers(specs, data) -> list:
    """The callbacks of ``specs`` on ``data`` (a :class:`~sparsegap.data.DataSplits`). Subsets are
    resolved here, once; trackers reading the same samples share one forward pass per measurement, and at the
    end of an epoch none at all: they read their rows of the logits the trainer evaluated the training and test
    sets with (:class:`~sparsegap.metrics.callbacks.SharedLogits`). An empty subset (``permuted`` without noise)
    is a ValueError."""
    from .metrics.callbacks import SharedLogits

    xs: dict[str, object] = {}
    shared: dict[str, SharedLogits] = {}
    out = []
    for spec in specs:
        p = parse_tracker(spec)
        rows = _ROWS[p.subset]
        if p.subset == "train":          # plain tensors: any object with x_train / y_train will do
            x, y = data.x_train, data.y_train
        elif p.subset == "test":
            x, y = data.x_test, data.y_test
        else:
            if not callable(getattr(data, "subset", None)):
                raise TypeError(f"tracker {spec!r} needs a sparsegap.data.DataSplits (for its subsets), "
                                f"got {type(data).__name__}")
            x, y = data.split(p.subset)
            x = xs.setdefault(rows, x)   # permuted and restored: one tensor of the noisy samples
        xs.setdefault(rows, x)
        if rows not in shared:           # where the trainer's own evaluation has these samples' logits
            source = ("test", None) if rows == "test" else ("train", None) if rows == "train" else (
                "train", data.subset_indices("unpermuted" if rows == "clean" else "permuted"))
            shared[rows] = SharedLogits(x, source=source)
        out.append(TRACKERS[p.metric](x, y, p, shared[rows]))
    return out
