"""Derived random streams: one run's seed gives each of its random draws a stream of its own.

A run draws many independent random sequences from one seed: the batch order of each epoch, the
Fisher penalty's sampled labels, data augmentation, SET's regrowth, the data schedule's ties, a
curve's t. Each draw seeds a fresh ``torch.Generator`` with :func:`seed_stream`, so a run resumed
from a checkpoint redraws exactly what an uninterrupted one would have drawn.
"""

from __future__ import annotations


def seed_stream(seed: int, salt: int) -> int:
    """The generator seed of the stream ``salt`` of run ``seed``: ``seed * 1_000_003 + salt``.

    Within one run the streams differ by ``salt`` (the epoch, the step, or an offset such as
    ``epoch + 7``). Across runs the seeds are spaced by the prime 1,000,003: as long as salts stay
    below it (epochs and steps of the papers' runs do), seeds ``s`` and ``s + 1`` can never meet on
    one stream value, where a spacing of 1 would give run ``s`` at epoch 1 the batches of run
    ``s + 1`` at epoch 0. The formula is part of every stored run's results: changing it changes
    the batches, so it stays as it is.
    """
    return seed * 1_000_003 + salt
