"""The bookkeeping that every training loop shares: the history, divergence and the epoch checkpoint.

:func:`sparsegap.train.train`, :func:`sparsegap.batched.train_batched` and
:func:`sparsegap.curves.train_curve` all write one history row per epoch with the keys
:data:`HISTORY_KEYS`, stop a network whose loss is no longer finite, and hand ``on_epoch_end`` a
checkpoint dict. The run store reads all three the same way (it checks a checkpoint's history
against these keys and resumes any run from its dict), so they are written in one place.
"""

from __future__ import annotations

import math

HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_acc", "train_entropy",
                "test_loss", "test_acc", "test_entropy", "seconds")


def new_history() -> dict:
    """An empty history: one list per key of :data:`HISTORY_KEYS`, and the trackers' ``trace``."""
    return {k: [] for k in HISTORY_KEYS} | {"trace": {}}


def record_epoch(history: dict, epoch: int, lr: float, train, test, seconds: float) -> None:
    """Append the row of the 1-based ``epoch``: the lr it trained with, ``train`` and ``test``
    (evaluations with ``loss``, ``accuracy`` and ``entropy``) and its wall time in seconds."""
    for k, v in (("epoch", epoch), ("lr", lr), ("train_loss", train.loss), ("train_acc", train.accuracy),
                 ("train_entropy", train.entropy), ("test_loss", test.loss), ("test_acc", test.accuracy),
                 ("test_entropy", test.entropy), ("seconds", seconds)):
        history[k].append(v)


def diverged_at(epoch: int, step: int, loss: float) -> dict:
    """``history["diverged"]`` of a run whose training loss became NaN or infinite: the 1-based
    epoch and global step where it was seen, and the loss as "nan" or "inf" (JSON has neither).
    The history's per-epoch lists then hold the ``epoch - 1`` epochs completed before it."""
    return {"epoch": epoch, "step": step, "loss": "nan" if math.isnan(loss) else "inf"}


def record_divergence(history: dict, epoch: int, step: int, loss: float) -> None:
    """Mark the history as diverged (see :func:`diverged_at`). A NaN or infinite loss never
    recovers: the loop stops the network at once, so that later epochs are not stored as if they
    were a trained network."""
    history["diverged"] = diverged_at(epoch, step, loss)


def has_diverged(history: dict) -> bool:
    return "diverged" in history


def diverged_after_epoch(history: dict, epoch: int, step: int, train_loss: float) -> bool:
    """Whether the end-of-epoch training loss is not finite (the epoch's last step left the weights
    non-finite, though the loss it was taken at was finite); if so, records it at ``step``, the
    epoch's last step, and the epoch gets no row."""
    if math.isfinite(train_loss):
        return False
    record_divergence(history, epoch, step, train_loss)
    return True


def epoch_checkpoint(model: dict, optimizer: dict, masks, history: dict, epoch: int, *, step: int | None = None,
                     schedule: dict | None = None, scaler: dict | None = None) -> dict:
    """What ``on_epoch_end`` receives after ``epoch`` epochs, and what a loop resumes from: the model's
    and the optimizer's state dicts, the masks, the history and the number of epochs done. ``step``
    (the global step count: a data schedule makes epochs of different lengths), the data schedule's
    and the fp16 gradient scaler's states are there only when given. The keys keep this order, the
    order stored checkpoints have always had."""
    return {"model": model, "optimizer": optimizer, "masks": masks,
            **({"step": step} if step is not None else {}),
            **({"schedule": schedule} if schedule is not None else {}),
            **({"scaler": scaler} if scaler is not None else {}),
            "history": history, "epoch": epoch}
