"""Comparing two trained networks: their distance, how often they disagree, and their ensemble.

Used for Sol-S against Sol-F (The Price of Sparsity, Figures 9-10: where the sparse and the
fine-tuned solutions disagree) and for lottery tickets against the pruning solution they come
from (Evci et al., 2022: a ticket "re-learns" that solution -- close in weights, few
disagreements, an ensemble no better than either). The two models may have different masks (a
pruned weight is simply 0) but must share one architecture.

Predictions are made in eval mode (:func:`sparsegap.metrics.basic.predict_logits`); the models'
modes are restored and nothing else is changed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparsegap.metrics.basic import disagreement as _disagree
from sparsegap.metrics.basic import predict_logits
from sparsegap.metrics.persample import check_xy
from sparsegap.metrics.weights import check_same_architecture, distance_from_init

__all__ = ["compare", "disagreement", "ensemble_accuracy", "l2_distance"]


def _check_models(a: object, b: object) -> None:
    for name, m in (("a", a), ("b", b)):
        if not isinstance(m, nn.Module):
            raise TypeError(f"{name} must be an nn.Module, got {type(m).__name__}")


def _check_same_architecture(a: nn.Module, b: nn.Module) -> None:
    try:
        check_same_architecture(a, b)
    except ValueError as err:
        raise ValueError(f"a and b must share one architecture (they may differ in their masks only): {err}") from err


def _logits(a: nn.Module, b: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Both models' logits on ``x``, of one shape (N, classes)."""
    la, lb = predict_logits(a, x), predict_logits(b, x)
    for name, lg in (("a", la), ("b", lb)):
        if lg.ndim != 2:
            raise ValueError(f"model {name} must return logits of shape (N, classes), got {tuple(lg.shape)}")
    if la.shape != lb.shape:
        raise ValueError(f"a and b must predict the same classes: a gives logits of shape {tuple(la.shape)}, "
                         f"b of shape {tuple(lb.shape)}")
    return la, lb


def _check_labels(y: Tensor, n_classes: int) -> Tensor:
    if int(y.max()) >= n_classes:
        raise ValueError(f"y must hold class indices in [0, {n_classes}) (the models have {n_classes} outputs), "
                         f"got a maximum of {int(y.max())}")
    return y.cpu()


def l2_distance(a: nn.Module, b: nn.Module) -> float:
    """``||θ_a - θ_b||``: the Euclidean distance over the weights and biases of every Conv and Linear
    layer (BatchNorm parameters and buffers left out), in float64; pruned weights count as the 0 they
    are. :func:`sparsegap.metrics.weights.distance_from_init` ``(a, b)["total"]``. Different architectures
    are a ValueError naming the first differing parameter."""
    _check_models(a, b)
    _check_same_architecture(a, b)
    return float(distance_from_init(a, b)["total"])


def disagreement(a: nn.Module, b: nn.Module, x: Tensor) -> float:
    """Share of the samples of ``x`` on which ``a`` and ``b`` predict different classes (argmax of
    the logits), in [0, 1]. The models need the same number of outputs, not the same architecture."""
    _check_models(a, b)
    check_xy(x, None, y_required=False)
    la, lb = _logits(a, b, x)
    return float(_disagree(la, lb).double().mean())


def disagreement_classes(a: nn.Module, b: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The class distribution of the samples on which ``a`` and ``b`` disagree (The Price of Sparsity,
    Fig. 9/10): counts per true class ``y`` (a LongTensor of length the number of outputs) of the
    samples whose argmax predictions differ. Divide by the counts of ``y`` for per-class rates."""
    _check_models(a, b)
    check_xy(x, y)
    la, lb = _logits(a, b, x)
    y = _check_labels(y, la.shape[1])
    return torch.bincount(y[_disagree(la, lb)], minlength=la.shape[1])


def _ensemble_hits(la: Tensor, lb: Tensor, y: Tensor) -> Tensor:
    probs = (F.softmax(la.double(), dim=1) + F.softmax(lb.double(), dim=1)) / 2
    return probs.argmax(1) == y


def ensemble_accuracy(a: nn.Module, b: nn.Module, x: Tensor, y: Tensor) -> float:
    """Accuracy on ``(x, y)`` of the two-model ensemble that predicts the argmax of the mean of the
    two models' softmax probabilities. An ensemble of a model with itself has that model's accuracy.
    The models need the same number of outputs, not the same architecture."""
    _check_models(a, b)
    check_xy(x, y)
    la, lb = _logits(a, b, x)
    y = _check_labels(y, la.shape[1])
    return float(_ensemble_hits(la, lb, y).double().mean())


def compare(a: nn.Module, b: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    """Everything above at once, with one forward pass per model over ``x``.

    Returns ``{"l2_distance", "disagreement", "ensemble_accuracy", "accuracy_a", "accuracy_b"}``
    (floats; accuracies and disagreement in [0, 1]). ``a`` and ``b`` must share one architecture
    (their masks may differ): otherwise a ValueError naming the first differing parameter.
    """
    _check_models(a, b)
    _check_same_architecture(a, b)
    check_xy(x, y)
    la, lb = _logits(a, b, x)
    y = _check_labels(y, la.shape[1])
    return {"l2_distance": l2_distance(a, b),
            "disagreement": float(_disagree(la, lb).double().mean()),
            "ensemble_accuracy": float(_ensemble_hits(la, lb, y).double().mean()),
            "accuracy_a": float((la.argmax(1) == y).double().mean()),
            "accuracy_b": float((lb.argmax(1) == y).double().mean())}
