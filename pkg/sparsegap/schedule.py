"""Data schedules: which training samples each epoch uses (the remedy of P-S4, Section 4 of the paper).

A schedule (``TrainConfig.data_schedule`` other than ``"full"``) has two phases:

* the **memorization phase**, the first ``memorize_epochs`` epochs, trains on the top
  ``round(subset * n)`` samples by a difficulty score;
* the **consolidating phase**, the next ``consolidate_epochs`` epochs, widens that subset linearly
  toward the whole training set (the next-hardest samples join first, so the average difficulty
  falls); every later epoch uses the whole set.

The score, highest first:

* ``"fisher"``: the per-sample Fisher information, ||∇θ log p(ŷ|x)||² with ŷ drawn from the model's
  own softmax (:func:`sparsegap.metrics.fisher.per_sample_fisher`), over the active weights: the
  hardest samples to memorize in the paper's sense;
* ``"disagree"``: the baseline of Zhang et al. (2021), the paper's [57]: samples on which the sparse
  network's prediction differs from the dense network's first, then the rest, each group ordered by
  its EL2N hardness ||softmax(f(x)) − onehot(y)||₂ (Paul et al., 2021);
* ``"random"``: a seeded random order, the control with the same subset sizes.

Scores are computed on the model being trained, in eval mode (BatchNorm statistics untouched),
with their own random generators (the training RNG is not consumed): once at the start, or again
every ``rerank_every`` epochs while the subset is not the whole set. A subset that is the whole
set is iterated exactly as plain training iterates it, so such a schedule trains bitwise like
``"full"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TrainConfig
from .metrics.basic import predict_logits
from .metrics.fisher import per_sample_fisher
from .seeds import seed_stream


def subset_size(cfg: TrainConfig, epoch: int, n: int) -> int:
    """How many samples 0-based epoch ``epoch`` trains on, of ``n``."""
    if cfg.data_schedule == "full" or epoch >= cfg.memorize_epochs + cfg.consolidate_epochs:
        return n
    k0 = max(1, round(cfg.subset * n))
    if epoch < cfg.memorize_epochs:
        return k0
    j = epoch - cfg.memorize_epochs + 1          # 1 .. consolidate_epochs
    return k0 + round((n - k0) * j / (cfg.consolidate_epochs + 1))


def check_schedule(cfg: TrainConfig, n: int) -> None:
    """The checks that need the training set's size ``n``: the memorization subset holds at least one batch."""
    if cfg.data_schedule == "full":
        return
    k0 = max(1, round(cfg.subset * n))
    if k0 < min(cfg.batch_size, n):
        low = min(cfg.batch_size, n) / n
        raise ValueError(f"TrainConfig.subset={cfg.subset!r} keeps {k0} of the {n} training samples, fewer than "
                         f"one batch (batch_size={cfg.batch_size}); allowed: a fraction in [{low:.4g}, 1]")


def _generator(seed: int, epoch: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed_stream(seed, epoch) * 31 + salt)


def difficulty(kind: str, model: nn.Module, x: Tensor, y: Tensor, *, masks=None, seed: int = 0, epoch: int = 0,
               reference: Tensor | None = None, chunk_size: int = 512) -> Tensor:
    """The score of every training sample under schedule ``kind`` (higher = trained on first), float64 on the CPU.

    ``reference`` (``"disagree"`` only): the dense network's predicted class of every sample.
    """
    if kind == "fisher":
        return per_sample_fisher(model, x, masks=masks, chunk_size=chunk_size,
                                 generator=_generator(seed, epoch, 1))
    if kind == "random":
        return torch.rand(len(x), generator=_generator(seed, epoch, 2), dtype=torch.float64)
    if kind == "disagree":
        if reference is None or reference.shape != (len(x),):
            raise ValueError(f"data_schedule 'disagree' needs reference=the dense network's predicted class of each of "
                             f"the {len(x)} training samples, got "
                             f"{None if reference is None else tuple(reference.shape)}")
        logits = predict_logits(model, x, batch_size=chunk_size).double()    # eval mode, on the CPU
        el2n = (F.softmax(logits, 1) - F.one_hot(y.cpu(), logits.shape[1]).double()).norm(dim=1)  # <= sqrt(2)
        return 2.0 * (logits.argmax(1) != reference.cpu()).double() + el2n
    raise ValueError(f"difficulty kind must be one of ('fisher', 'random', 'disagree'), got {kind!r}")


class DataSchedule:
    """The indices each epoch trains on, for :func:`sparsegap.train.train`. ``order`` is the latest
    ranking (sample indices, hardest first) and ``ranked_at`` the epoch it was made in; both go into
    the checkpoint so that a resumed run uses the same ranking."""

    def __init__(self, cfg: TrainConfig, n: int, *, seed: int, reference: Tensor | None = None):
        check_schedule(cfg, n)
        self.cfg, self.n, self.seed, self.reference = cfg, n, seed, reference
        self.order: Tensor | None = None
        self.ranked_at: int | None = None

    def state_dict(self) -> dict:
        return {"order": self.order, "ranked_at": self.ranked_at}

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.order, self.ranked_at = state["order"], state["ranked_at"]

    def _due(self, epoch: int) -> bool:
        if self.order is None:
            return True
        every = self.cfg.rerank_every
        return bool(every) and epoch - self.ranked_at >= every

    def indices(self, epoch: int, model: nn.Module, x: Tensor, y: Tensor, masks=None) -> Tensor | None:
        """Sorted indices of the samples of epoch ``epoch`` (on ``x``'s device), or None for the whole set."""
        k = subset_size(self.cfg, epoch, self.n)
        if k >= self.n:
            return None
        if self._due(epoch):
            scores = difficulty(self.cfg.data_schedule, model, x, y, masks=masks, seed=self.seed, epoch=epoch,
                                reference=self.reference)
            # stable: ties keep index order, so the ranking is the same on every machine
            self.order = torch.sort(scores, descending=True, stable=True).indices
            self.ranked_at = epoch
        return torch.sort(self.order[:k]).values.to(x.device)
