"""The data a run trains and is measured on: :class:`DataSplits`, its named subsets and class-balanced draws."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

# Named parts of the data (DataSplits.split): the training set as trained on (noisy labels), the test
# set, and the three subsets of the label-noise experiments (He et al. 2022's names).
SUBSETS: tuple[str, ...] = ("train", "test", "permuted", "unpermuted", "restored")


@dataclass(frozen=True)
class DataSplits:
    """Train and test tensors of one dataset, kept in memory.

    ``mean`` / ``std`` are the per-channel statistics used for standardisation (empty when the data
    was not standardised): ``x * std + mean`` gives back pixels in [0, 1].

    Label noise: ``y_train`` holds the labels training uses (the noisy ones), ``y_train_true`` the
    true labels (``y_train`` itself without noise), ``noisy`` is True for the flipped samples and
    ``noise`` is the fraction ε asked for. ``noisy`` is exactly ``y_train != y_train_true``: a
    flipped label never lands on the true class. :meth:`subset` names the parts of the data.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    y_train_true: torch.Tensor | None = None   # None: the same as y_train (no noise)
    noisy: torch.Tensor | None = None          # None: no sample flipped
    noise: float = 0.0
    evaluation: str = "test"   # "validation": x_test / y_test are held out of the training set, not the test set

    def __post_init__(self):
        n = len(self.y_train)
        if self.noisy is None or self.y_train_true is None or not bool(self.noisy.any()):
            # Without noise the true labels are the training labels, whatever replace() carried over
            # (replace(clean, y_train=...) keeps working as before noise existed).
            object.__setattr__(self, "y_train_true", self.y_train)
            object.__setattr__(self, "noisy", torch.zeros(n, dtype=torch.bool))
            return
        if self.y_train_true.shape != self.y_train.shape or self.noisy.shape != (n,) or self.noisy.dtype != torch.bool:
            raise ValueError(f"y_train_true and noisy must match y_train (shape ({n},), noisy bool), got "
                             f"{tuple(self.y_train_true.shape)} and {tuple(self.noisy.shape)} {self.noisy.dtype}")
        if not torch.equal(self.noisy, self.y_train != self.y_train_true):
            raise ValueError("noisy must be exactly the samples whose label y_train differs from y_train_true")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(x, y)`` tensors of a named subset (one of :data:`SUBSETS`):

        * ``train``: ``(x_train, y_train)``, the training set with the labels trained on (noisy);
        * ``test``: ``(x_test, y_test)``;
        * ``permuted``: the noisy samples with their noisy labels (accuracy there = memorized share);
        * ``unpermuted``: the clean samples, with their (true) labels;
        * ``restored``: the noisy samples with their true labels.

        Samples keep their order in the training set (see :meth:`subset_indices`). An empty subset
        (``permuted`` without noise) is a ValueError, never an empty tensor to divide by.
        """
        if name == "test":
            return self.x_test, self.y_test
        if name == "train":
            return self.x_train, self.y_train
        idx = self.subset_indices(name)
        y = self.y_train_true if name == "restored" else self.y_train
        return self.x_train[idx], y[idx]

    def subset(self, idx: torch.Tensor) -> "DataSplits":
        """The same splits with the training set restricted to ``idx``, a 1-D integer or boolean
        tensor (true labels and noise marks included; the test set is kept)."""
        idx = torch.as_tensor(idx)
        if idx.dim() != 1 or not (idx.dtype == torch.bool or not idx.is_floating_point()):
            raise ValueError(f"idx must be a 1-D integer or boolean tensor, got dtype={idx.dtype} "
                             f"shape={tuple(idx.shape)}")
        n = len(self.y_train)
        if idx.dtype == torch.bool:
            if len(idx) != n:
                raise ValueError(f"boolean idx must have length {n} (the training set), got {len(idx)}")
        elif len(idx) and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise ValueError(f"idx values must lie in [0, {n}), got [{int(idx.min())}, {int(idx.max())}]")
        return replace(self, x_train=self.x_train[idx], y_train=self.y_train[idx],
                       y_train_true=self.y_train_true[idx], noisy=self.noisy[idx])

    def subset_indices(self, name: str) -> torch.Tensor:
        """Sorted indices into the training set of the named subset (``train``, ``permuted``,
        ``unpermuted`` or ``restored``; ``test`` is no part of it). An empty subset is a ValueError."""
        if not isinstance(name, str) or name not in SUBSETS:
            raise ValueError(f"unknown subset name={name!r}; subsets: {', '.join(SUBSETS)}")
        if name == "test":
            raise ValueError("subset 'test' has no indices into the training set; use subset('test')")
        if name == "train":
            return torch.arange(len(self.y_train))
        idx = torch.nonzero(self.noisy if name in ("permuted", "restored") else ~self.noisy).flatten()
        if len(idx) == 0:
            why = (f"no training label is noisy (noise={self.noise:g}); set DataConfig(noise=...) above 0"
                   if name != "unpermuted" else f"every training label is noisy (noise={self.noise:g})")
            raise ValueError(f"subset {name!r} of {self.name} is empty: {why}")
        return idx

    def __repr__(self) -> str:
        noise = (f", noise={self.noise:g} ({int(self.noisy.sum())} labels flipped)"
                 if self.noise > 0 or bool(self.noisy.any()) else "")
        held = "test" if self.evaluation == "test" else "validation (in place of test)"
        return (f"DataSplits(name={self.name!r}, train={len(self.y_train)}, {held}={len(self.y_test)}, "
                f"input_shape={self.input_shape}, num_classes={self.num_classes}{noise})")


def stratified(y: torch.Tensor, n: int, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Sorted indices of ``n`` samples, as equal per class as the class sizes allow."""
    by_class = [torch.nonzero(y == c).flatten() for c in range(num_classes)]
    # Permute every class first, independently of n, so that with one seed a smaller subset is
    # (nearly always) contained in a larger one.
    by_class = [idx[torch.randperm(len(idx), generator=gen)] for idx in by_class]
    counts = torch.tensor([len(idx) for idx in by_class])
    take = torch.zeros_like(counts)
    left = n
    while left > 0:  # water-filling: small classes give their unused share to the others
        open_ = torch.nonzero(take < counts).flatten()
        share, extra = divmod(left, len(open_))
        if share == 0:
            lucky = open_[torch.randperm(len(open_), generator=gen)[:extra]]
            take[lucky] += 1
            break
        add = torch.clamp(counts[open_] - take[open_], max=share)
        take[open_] += add
        left -= int(add.sum())
    chosen = [idx[:k] for idx, k in zip(by_class, take.tolist())]
    return torch.sort(torch.cat(chosen)).values
