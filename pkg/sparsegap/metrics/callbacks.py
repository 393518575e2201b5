"""Training callbacks that record metrics along training: Tr(F) (paper Figures 3 and 5), and the
accuracy, loss or predictions of the model on a fixed set of samples (Figure 4's subsets)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sparsegap.metrics.basic import predict_logits
from sparsegap.metrics.fisher import LABELS, fisher_trace_se
from sparsegap.checks import positive_int, torch_seed
from sparsegap.metrics.persample import check_xy

UNITS = ("epoch", "step")
SUBSET_METRICS = ("accuracy", "loss", "predictions")


class _Schedule:
    """When a tracker measures: once before training (``at_start``), then every ``every`` epochs
    (at the end of 0-based epochs ``every-1, 2*every-1, ...``) or optimizer steps."""

    every: int
    unit: str
    at_start: bool

    def measure(self, state: Any, at_epoch_end: bool = False):
        raise NotImplementedError

    def on_train_begin(self, state: Any) -> None:
        if self.at_start and state.step == 0:  # a resumed run already logged its start
            self.measure(state)

    @property
    def wants_step_end(self) -> bool:
        """Only a per-step tracker does anything after a step (the batched trainer skips the rest)."""
        return self.unit == "step"

    def on_step_end(self, state: Any) -> None:
        if self.unit == "step" and state.step % self.every == 0:
            self.measure(state)

    def on_epoch_end(self, state: Any) -> None:
        if self.unit == "epoch" and (state.epoch + 1) % self.every == 0:
            self.measure(state, at_epoch_end=True)


class FisherTraceCallback(_Schedule):
    """Log ``fisher_trace`` on a fixed sample set every ``every`` epochs or optimizer steps, with its standard
    error (the trace's ``"se"`` list, see :class:`~sparsegap.metrics.fisher.FisherEstimate`).

    With ``unit="epoch"`` it logs at the end of epochs 0-based ``every-1, 2*every-1, ...``; with
    ``unit="step"`` after global steps ``every, 2*every, ...``. With ``at_start`` it also logs
    once before training (step 0), so trajectories start at the initialisation.
    ``max_samples`` keeps a random subset of ``x`` when ``x`` has more rows (drawn once, with ``seed``: with
    the default seed every run measures the same samples, so that comparisons between runs are paired). The
    standard error then covers the draw of the samples and of the Monte-Carlo labels; on the whole of ``x``
    it overstates the label noise alone. Monte-Carlo labels use a generator re-seeded with ``seed`` at every
    measurement: common random numbers make the trajectory smoother than fresh noise at each point. Masks
    come from ``state.masks`` when ``masks_from_state`` is true, so only unpruned weights count.
    """

    def __init__(self, x: Tensor, y: Tensor | None = None, *, every: int = 1, unit: str = "epoch",
                 labels: str = "sampled", masks_from_state: bool = True,
                 max_samples: int | None = None, seed: int = 0, at_start: bool = True,
                 chunk_size: int = 256, name: str = "fisher_trace") -> None:
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
        if labels not in LABELS:
            raise ValueError(f"labels must be one of {LABELS}, got {labels!r}")
        positive_int(None, "every", every)
        positive_int(None, "chunk_size", chunk_size)  # here, not at the first measurement mid-training
        seed = torch_seed("seed", seed)
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str (the key the trace is logged under), got {name!r}")
        check_xy(x, y, y_required=labels == "empirical")
        if max_samples is not None:
            positive_int(None, "max_samples", max_samples)
            if max_samples < len(x):
                keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_samples]
                x, y = x[keep], (y[keep] if y is not None else None)
        self.x, self.y = x, y
        self.every, self.unit, self.labels = every, unit, labels
        self.masks_from_state, self.seed, self.at_start = masks_from_state, seed, at_start
        self.chunk_size, self.name = chunk_size, name

    def measure(self, state: Any, at_epoch_end: bool = False) -> float:
        masks = getattr(state, "masks", None) if self.masks_from_state else None
        est = fisher_trace_se(state.model, self.x, self.y, masks=masks, labels=self.labels,
                              chunk_size=self.chunk_size, generator=torch.Generator().manual_seed(self.seed))
        state.log(self.name, est.value, se=est.se)
        return est.value


class SharedLogits:
    """The model's logits on a fixed ``x``, computed once per measurement and shared by every
    tracker that reads the same samples (``accuracy:permuted``, ``loss:permuted`` and
    ``accuracy:restored`` cost one forward pass together).

    A measurement is identified by the model, the global step and the number of epochs in the
    history, so trackers called in one hook see the same logits. (A callback that changes the
    weights between two trackers of one hook, a mask updater placed between them, would not be
    seen: put such callbacks before the trackers.)

    ``source`` says where ``x`` sits in the trainer's end-of-epoch evaluation: ``("train", rows)``
    (rows of the training set, ``None`` for all of it) or ``("test", None)``. At the end of an epoch
    the trainer has just evaluated those very weights on those samples
    (:class:`sparsegap.train.EpochLogits`, ``state.logits``): their logits are taken from there, and
    the trackers cost no forward pass at all (a second pass over the training set at every epoch, in
    chapter 7's sweeps, was a fifth of a member's epoch). Elsewhere (the start, every N steps) they
    are computed here.
    """

    def __init__(self, x: Tensor, source: tuple[str, Tensor | None] | None = None) -> None:
        self.x, self.source = x, source
        self._key: tuple | None = None
        self._logits: Tensor | None = None

    def __call__(self, state: Any) -> Tensor:
        history = getattr(state, "history", None) or {}
        key = (id(state.model), state.step, len(history.get("epoch", ())))
        if key != self._key:
            self._logits = self._evaluated(state, key)
            if self._logits is None:
                self._logits = predict_logits(state.model, self.x)
            self._key = key
        return self._logits

    def _evaluated(self, state: Any, key: tuple) -> Tensor | None:
        """These samples' rows of the trainer's evaluation of the same weights, or None."""
        evaluated = getattr(state, "logits", None)
        if self.source is None or evaluated is None or (evaluated.step, evaluated.epochs) != key[1:]:
            return None
        split, rows = self.source
        logits = evaluated.train if split == "train" else evaluated.test
        logits = logits if rows is None else logits[rows]
        return logits if len(logits) == len(self.x) else None


class SubsetMetricCallback(_Schedule):
    """Log the ``accuracy``, mean cross-entropy ``loss`` or ``predictions`` (predicted class of every
    sample, a list of ints) of the model on a fixed ``(x, y)``, every ``every`` epochs or steps.

    Values equal :func:`sparsegap.metrics.basic.evaluate`'s on ``(x, y)`` (the same logits, loss and
    accuracy formulas). With ``at_start`` it also logs once before training (step 0), as
    :class:`FisherTraceCallback` does. ``logits`` shares the forward pass with other trackers of
    the same ``x`` (a :class:`SharedLogits`). ``logged_as`` names the per-epoch history key that
    already holds this value at the end of an epoch (``"test_acc"`` for the accuracy on the test
    set, ``"train_loss"`` for the loss on the training set...): it is read from there instead of
    evaluating the same weights on the same samples a second time.
    """

    def __init__(self, x: Tensor, y: Tensor, *, metric: str = "accuracy", every: int = 1, unit: str = "epoch",
                 name: str | None = None, at_start: bool = True, logits: SharedLogits | None = None,
                 logged_as: str | None = None) -> None:
        if metric not in SUBSET_METRICS:
            raise ValueError(f"metric must be one of {SUBSET_METRICS}, got {metric!r}")
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
        positive_int(None, "every", every)
        name = metric if name is None else name
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str (the key the trace is logged under), got {name!r}")
        check_xy(x, y)
        if logits is not None and logits.x is not x:
            raise ValueError("logits must be a SharedLogits of this very x")
        self.x, self.y = x, y.cpu()
        self.metric, self.every, self.unit, self.name, self.at_start = metric, every, unit, name, at_start
        self.logits = logits if logits is not None else SharedLogits(x)
        self.logged_as = logged_as if metric != "predictions" else None

    def measure(self, state: Any, at_epoch_end: bool = False) -> float | list[int]:
        history = getattr(state, "history", None) or {}
        if (at_epoch_end and self.logged_as is not None and history.get(self.logged_as)
                and history.get("epoch") and history["epoch"][-1] == state.epoch + 1):
            value = history[self.logged_as][-1]  # train() evaluated these very weights just before
        else:
            logits = self.logits(state)
            if logits.shape[1] <= int(self.y.max()):
                raise ValueError(f"y must hold class indices in [0, {logits.shape[1]}) (the model has "
                                 f"{logits.shape[1]} outputs), got a maximum of {int(self.y.max())}")
            if self.metric == "predictions":
                value = logits.argmax(1).tolist()
            elif self.metric == "accuracy":
                value = float((logits.argmax(1) == self.y).float().mean())
            else:
                value = float(F.cross_entropy(logits, self.y))
        state.log(self.name, value)
        return value
