"""Trace of the Fisher information, Tr(F) = E_x E_{ŷ~p(·|x)} ||∇θ log p(ŷ|x)||² (paper eq. 2.3).

θ follows the rule in :mod:`sparsegap.metrics.persample`: all trainable parameters, masked ones
restricted to their unpruned coordinates. The expectation over x is the mean over the rows of
``x``; the model is evaluated in eval mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparsegap.metrics.persample import check_model_input, check_xy, run_chunks

LABELS = ("sampled", "empirical", "exact")


def sample_labels(logits: Tensor, u: Tensor) -> Tensor:
    """Class drawn from softmax(logits) by inverse CDF of the uniforms ``u`` (one per row).

    Drawing all uniforms up front makes the labels independent of how ``x`` is chunked.
    """
    cdf = F.softmax(logits.double(), dim=1).cumsum(1)
    return (cdf < u.to(cdf)[:, None]).sum(1).clamp_(max=logits.shape[1] - 1)


@dataclass(frozen=True)
class FisherEstimate:
    """Tr(F) as the mean of per-sample terms (:func:`fisher_trace_se`), with its standard error.

    ``se`` is the sample standard deviation (ddof=1) of the ``n`` per-sample terms over sqrt(n): the error
    of the mean over a random draw of the samples and, with ``labels="sampled"``, of their Monte-Carlo labels.
    Over a whole fixed set it overstates the label noise alone (the spread of the terms between samples
    counts as error although those samples are the whole population). NaN for a single sample.
    """

    value: float
    se: float
    n: int


def _check_labels(labels: str) -> None:
    if labels not in LABELS:
        raise ValueError(f"labels must be one of {LABELS}, got {labels!r}")


def _terms(model: nn.Module, x: Tensor, y: Tensor | None, masks, labels: str, chunk_size: int,
           generator: torch.Generator | None) -> tuple[float, Tensor]:
    """(the mean of the per-sample terms, summed chunk by chunk as :func:`fisher_trace` always has, so that its
    values stay bitwise the same; the per-sample terms, a float64 CPU tensor of shape (N,))."""
    _check_labels(labels)
    check_xy(x, y, y_required=labels == "empirical")
    check_model_input(model, x, y)
    if labels == "sampled":
        u = torch.rand(len(x), generator=generator, dtype=torch.float64)
        pick = lambda lg, sl: sample_labels(lg, u[sl])[None]
    elif labels == "empirical":
        pick = lambda lg, sl: y[sl].to(lg.device)[None]
    else:
        pick = lambda lg, sl: torch.arange(lg.shape[1], device=lg.device)[:, None].expand(-1, len(lg))
    total, terms = 0.0, []
    for _, sq, logits in run_chunks(model, x, pick, masks, chunk_size):
        if labels == "exact":
            weighted = F.softmax(logits.double(), dim=1).T * sq
            total += float(weighted.sum())
            terms.append(weighted.sum(0))
        else:
            total += float(sq.sum())
            terms.append(sq[0].double())
    return total / len(x), torch.cat(terms).cpu()


def fisher_trace(model: nn.Module, x: Tensor, y: Tensor | None = None, *,
                 masks: dict[str, Tensor] | None = None, labels: str = "sampled",
                 chunk_size: int = 256, generator: torch.Generator | None = None) -> float:
    """Mean over samples of the squared norm of the log-likelihood gradient.

    ``labels`` chooses ŷ:
      * ``"sampled"``: one Monte-Carlo label per sample from the model's softmax (the paper's
        estimator); the uniforms come from ``torch.rand(N, generator=generator)``, so a seeded
        generator gives reproducible labels whatever ``chunk_size`` is;
      * ``"empirical"``: the true labels ``y`` (the "empirical Fisher");
      * ``"exact"``: the expectation over ŷ in closed form, Σ_c p(c|x) ||∇θ log p(c|x)||²,
        one backward pass per class.

    :func:`fisher_trace_se` gives the same value with its standard error.
    """
    return _terms(model, x, y, masks, labels, chunk_size, generator)[0]


def fisher_trace_se(model: nn.Module, x: Tensor, y: Tensor | None = None, *,
                    masks: dict[str, Tensor] | None = None, labels: str = "sampled",
                    chunk_size: int = 256, generator: torch.Generator | None = None) -> FisherEstimate:
    """:func:`fisher_trace` (the very same value, with the same arguments and generator state) and its standard
    error from the spread of the per-sample terms (:class:`FisherEstimate`)."""
    value, terms = _terms(model, x, y, masks, labels, chunk_size, generator)
    se = float(terms.std(correction=1) / math.sqrt(len(terms))) if len(terms) > 1 else math.nan
    return FisherEstimate(value, se, len(terms))


def per_sample_fisher(model: nn.Module, x: Tensor, *, masks: dict[str, Tensor] | None = None,
                      chunk_size: int = 256, generator: torch.Generator | None = None) -> Tensor:
    """The per-sample terms of :func:`fisher_trace` with sampled labels: ||∇θ log p(ŷ_i|x_i)||², ŷ_i drawn
    from the model's softmax with uniforms ``torch.rand(N, generator=generator)`` (so, with the same
    generator state, their mean is ``fisher_trace(..., labels="sampled")``). A float64 CPU tensor of shape (N,)."""
    check_xy(x, None, y_required=False)
    check_model_input(model, x)
    u = torch.rand(len(x), generator=generator, dtype=torch.float64)
    out = torch.empty(len(x), dtype=torch.float64)
    for sl, sq, _ in run_chunks(model, x, lambda lg, sl: sample_labels(lg, u[sl])[None], masks, chunk_size):
        out[sl] = sq[0].cpu()
    return out
