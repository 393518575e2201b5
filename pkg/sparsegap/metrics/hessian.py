"""Hutchinson estimate of Tr(H), H the Hessian of the mean cross-entropy loss over ``(x, y)``.

Tr(H) = E_v[vᵀHv] for Rademacher probes v; each vᵀHv costs one double-backward Hessian-vector
product. θ follows the rule in :mod:`sparsegap.metrics.persample` (trainable parameters, masked
ones restricted to their unpruned coordinates): probes are zero on pruned coordinates, which
gives the trace of H restricted to the unpruned weights. Evaluated in eval mode.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparsegap.checks import positive_int
from sparsegap.metrics.persample import (check_model_input, check_xy, eval_mode, iter_chunks, measured_masks,
                                         param_device_dtype, trainable_params)

# Probes of one block are held in memory together: cap their total size (~256 MB in float32).
_PROBE_ELEMENTS = 1 << 26


class HutchinsonResult(NamedTuple):
    mean: float     # the Tr(H) estimate
    stderr: float   # standard error of the mean over probes (nan with a single probe)
    n_probes: int


def _summary(values: list[float]) -> HutchinsonResult:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return HutchinsonResult(mean, std / math.sqrt(n), n)


def _converged(r: HutchinsonResult, min_probes: int, target_rse: float) -> bool:
    if r.n_probes < max(min_probes, 2):
        return False
    if r.mean == 0:
        return r.stderr == 0
    return r.stderr / abs(r.mean) <= target_rse


def hessian_trace(model: nn.Module, x: Tensor, y: Tensor, *, masks: dict[str, Tensor] | None = None,
                  max_probes: int = 100, min_probes: int = 10, target_rse: float = 0.02,
                  batch_size: int | None = None, generator: torch.Generator | None = None
                  ) -> HutchinsonResult:
    """Hutchinson's Tr(H) of the mean loss, stopping at ``target_rse`` relative standard error.

    Probes are added until at least ``min_probes`` are in and stderr/|mean| ≤ ``target_rse``, or
    ``max_probes`` is reached. ``batch_size`` splits the data (H of the mean loss is the
    size-weighted mean of the batch Hessians); ``None`` means one batch, whose first-order graph is
    then built once and reused by every probe. Results do not depend on ``batch_size`` beyond
    rounding: the probes come from ``generator`` in the same order and the stopping point is the
    first probe count meeting the rule.
    """
    check_xy(x, y)
    positive_int(None, "max_probes", max_probes)
    positive_int(None, "min_probes", min_probes)
    if min_probes > max_probes:
        raise ValueError(f"min_probes ({min_probes}) must not exceed max_probes ({max_probes})")
    if isinstance(target_rse, bool) or not isinstance(target_rse, (int, float)) or not target_rse >= 0:
        raise ValueError(f"target_rse must be a number >= 0 (a relative standard error), got {target_rse!r}")
    if batch_size is not None:
        positive_int(None, "batch_size", batch_size)
    mask_of = measured_masks(model, masks)
    check_model_input(model, x, y)
    device, dtype = param_device_dtype(model)
    trainable = trainable_params(model)
    if not trainable:
        raise ValueError("model has no trainable parameters")
    params = list(trainable.values())
    masks_l = [mask_of.get(n) for n in trainable]
    n_elements = sum(p.numel() for p in params)
    batches = list(iter_chunks(len(x), batch_size or len(x)))

    def probe() -> list[Tensor]:
        # One draw for all parameters: per-tensor draws cost more than the arithmetic on small nets.
        flat = torch.randint(0, 2, (n_elements,), generator=generator, dtype=dtype)
        flat = flat.to(device).mul_(2).sub_(1)
        vs = [v.view_as(p) for v, p in zip(flat.split([p.numel() for p in params]), params)]
        for v, m in zip(vs, masks_l):
            if m is not None:
                v.mul_(m)
        return vs

    def first_order(sl: slice) -> tuple[list[Tensor], list[int]]:
        xb = x[sl].to(device=device, dtype=dtype if x.is_floating_point() else None)
        loss = F.cross_entropy(model(xb), y[sl].to(device))
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        # A gradient with no graph is constant in θ: its Hessian rows are zero, so skip it.
        keep = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        return [grads[i] for i in keep], keep

    def vhv(grads: list[Tensor], keep: list[int], v: list[Tensor], retain: bool) -> float:
        if not grads:
            return 0.0
        hv = torch.autograd.grad(grads, params, grad_outputs=[v[i] for i in keep],
                                 retain_graph=retain, allow_unused=True)
        return float(sum((vi * h).sum() for vi, h in zip(v, hv) if h is not None))

    values: list[float] = []
    with eval_mode(model), torch.enable_grad():
        if len(batches) == 1:
            grads, keep = first_order(batches[0])
            while True:
                values.append(vhv(grads, keep, probe(), retain=len(values) + 1 < max_probes))
                if len(values) >= max_probes or _converged(_summary(values), min_probes, target_rse):
                    break
            return _summary(values)

        cap = max(1, _PROBE_ELEMENTS // n_elements)
        block = min(min_probes, cap)
        while True:
            vs = [probe() for _ in range(block)]
            acc = [0.0] * block
            for sl in batches:  # one first-order graph per batch, shared by the block's probes
                grads, keep = first_order(sl)
                weight = (sl.stop - sl.start) / len(x)
                for j, v in enumerate(vs):
                    acc[j] += weight * vhv(grads, keep, v, retain=j + 1 < block)
                del grads
            for a in acc:
                values.append(a)
                r = _summary(values)
                if len(values) >= max_probes or _converged(r, min_probes, target_rse):
                    return r
            r = _summary(values)
            rse_ratio = (r.stderr / (target_rse * abs(r.mean))) if r.mean and target_rse else math.inf
            needed = math.ceil(len(values) * rse_ratio ** 2) if math.isfinite(rse_ratio) else max_probes
            block = max(1, min(needed - len(values), cap, max_probes - len(values)))
