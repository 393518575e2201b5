"""Training callback that records Tr(F) along training (paper Figures 3 and 5)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sparsegap.metrics.fisher import LABELS, fisher_trace
from sparsegap.metrics.persample import check_positive_int, check_xy

UNITS = ("epoch", "step")


class FisherTraceCallback:
    """Log ``fisher_trace`` on a fixed sample set every ``every`` epochs or optimizer steps.

    With ``unit="epoch"`` it logs at the end of epochs 0-based ``every-1, 2*every-1, ...``; with
    ``unit="step"`` after global steps ``every, 2*every, ...``. With ``at_start`` it also logs
    once before training (step 0), so trajectories start at the initialisation.
    ``max_samples`` keeps a random subset of ``x`` (drawn once, with ``seed``). Monte-Carlo labels
    use a generator re-seeded with ``seed`` at every measurement: common random numbers make the
    trajectory smoother than fresh noise at each point. Masks come from ``state.masks`` when
    ``masks_from_state`` is true, so only unpruned weights count.
    """

    def __init__(self, x: Tensor, y: Tensor | None = None, *, every: int = 1, unit: str = "epoch",
                 labels: str = "sampled", masks_from_state: bool = True,
                 max_samples: int | None = None, seed: int = 0, at_start: bool = True,
                 chunk_size: int = 256, name: str = "fisher_trace") -> None:
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
        if labels not in LABELS:
            raise ValueError(f"labels must be one of {LABELS}, got {labels!r}")
        check_positive_int("every", every)
        check_positive_int("chunk_size", chunk_size)  # here, not at the first measurement mid-training
        if isinstance(seed, bool) or not isinstance(seed, int) or not -2**63 <= seed < 2**64:
            raise ValueError(f"seed must be an int in [-2**63, 2**64) (torch's seed range), got {seed!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str (the key the trace is logged under), got {name!r}")
        check_xy(x, y, y_required=labels == "empirical")
        if max_samples is not None:
            check_positive_int("max_samples", max_samples)
            if max_samples < len(x):
                keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_samples]
                x, y = x[keep], (y[keep] if y is not None else None)
        self.x, self.y = x, y
        self.every, self.unit, self.labels = every, unit, labels
        self.masks_from_state, self.seed, self.at_start = masks_from_state, seed, at_start
        self.chunk_size, self.name = chunk_size, name

    def measure(self, state: Any) -> float:
        masks = getattr(state, "masks", None) if self.masks_from_state else None
        value = fisher_trace(state.model, self.x, self.y, masks=masks, labels=self.labels,
                             chunk_size=self.chunk_size,
                             generator=torch.Generator().manual_seed(self.seed))
        state.log(self.name, value)
        return value

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
            self.measure(state)
