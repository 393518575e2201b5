"""Accuracy, loss and prediction entropy on any subset of the data, evaluated in batches."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparsegap.checks import positive_int
from sparsegap.metrics.persample import check_xy


@dataclass(frozen=True)
class Evaluation:
    loss: float       # mean cross-entropy
    accuracy: float   # fraction in [0, 1]
    entropy: float    # mean entropy (nats) of the predicted class distribution


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Logits for every row of ``x`` in eval mode (the model's mode is restored afterwards), a float CPU tensor.
    They are gathered on the model's device and copied to the host once: one wait for the device, not one a chunk."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    positive_int(None, "batch_size", batch_size)
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [model(x[i: i + batch_size].to(device)).float() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).cpu() if out else torch.empty(0)


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy of softmax(logits), in nats."""
    _check_logits("logits", logits)
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024,
             indices: torch.Tensor | None = None, device: torch.device | str | None = None) -> Evaluation:
    """Loss, accuracy and entropy on ``(x, y)``, or on the rows ``indices`` of it.

    ``x`` must be finite and ``y`` hold class indices below the model's output width: a NaN input
    would give a NaN loss that looks like a diverged network. The model itself may give NaN logits
    (that *is* a diverged network, and the loss says so).
    """
    return evaluate_logits(*evaluated_logits(model, x, y, batch_size=batch_size, indices=indices, device=device))


def evaluated_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024,
                     indices: torch.Tensor | None = None,
                     device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The checked ``(logits, y)`` (both on the CPU) that :func:`evaluate` scores: for a caller that also keeps the
    logits (the trainers share the training set's with the trackers that read its rows: one forward pass)."""
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if indices is not None:
        x, y = x[indices], y[indices]
    if len(x) == 0:
        raise ValueError("evaluate needs at least one sample, got an empty set")
    check_xy(x, y)
    logits = predict_logits(model, x, batch_size=batch_size, device=device)
    y = y.cpu()
    _check_logits("the model's output", logits)
    if int(y.max()) >= logits.shape[1]:
        raise ValueError(f"y must hold class indices in [0, {logits.shape[1]}) (the model has {logits.shape[1]} "
                         f"outputs), got a maximum of {int(y.max())}")
    return logits, y


def evaluate_logits(logits: torch.Tensor, y: torch.Tensor) -> Evaluation:
    """:func:`evaluate`'s numbers from the logits of the samples and their labels (CPU tensors)."""
    return Evaluation(
        loss=float(F.cross_entropy(logits, y)),
        accuracy=float((logits.argmax(1) == y).float().mean()),
        entropy=float(prediction_entropy(logits).mean()),
    )


def disagreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Boolean per-sample mask: the two models predict different classes."""
    _check_logits("logits_a", logits_a)
    _check_logits("logits_b", logits_b)
    if logits_a.shape != logits_b.shape:  # (N, C) against (1, C) would broadcast silently
        raise ValueError(f"logits_a and logits_b must have the same shape, got {tuple(logits_a.shape)} "
                         f"and {tuple(logits_b.shape)}")
    return logits_a.argmax(1) != logits_b.argmax(1)


def _check_logits(name: str, logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{name} must be a tensor of shape (N, classes), got {shape}")
