"""Gradient flow: the gradient norm, the layer-wise minibatch SNR and Liu et al.'s per-sample GSNR.

Three different quantities, easily confused:

* :func:`grad_norm` (tracker ``grad_norm``): ``||∇θ L(x, y)||``, the L2 norm of the gradient of
  the mean cross-entropy on a fixed batch, over the active weights (every trainable parameter,
  biases included, with the pruned entries left out). The "gradient flow" of Evci et al. (2022),
  measured at the initialisation and along training.
* :class:`GradSNRCallback` (tracker ``grad_snr``): the *authors'* layer-wise gradient
  signal-to-noise ratio of The Price of Sparsity (Figure 11, after Saxe et al., 2018, eqs. 26-27),
  over the *minibatch* gradients ``g_1 .. g_T`` that SGD actually took during one epoch::

      SNR_layer = || mean_t g_t || / || std_t g_t ||

  with the mean and (population) standard deviation taken entry by entry over the T minibatches,
  and the norms over the layer's active weights. One number per layer and epoch; its noise is the
  minibatch noise at the batch size of the run.
* :func:`gsnr_per_layer` (tracker ``gsnr``): the *per-parameter* gradient signal-to-noise ratio of
  Liu et al. (2020), from *per-sample* gradients ``g_ij`` (sample i, parameter j) at fixed weights::

      r_j = mean_i(g_ij)² / var_i(g_ij),      GSNR_layer = mean of r_j over the layer's active weights

  A ratio per parameter, averaged afterwards (not a ratio of norms), of single-sample noise (not
  minibatch noise), at one point of training (not along an epoch).

"Layer" in the two SNRs means a Conv or Linear layer (:func:`sparsegap.pruning.prunable_parameters`,
the classifier included) and its ``weight`` only: its bias and BatchNorm parameters do not count.
A layer is named by its module (``"fc1"``, ``"layer1.0.conv1"``) and logged under
``"<tracker key>/<layer>"``: ``"grad_snr/fc1"``, ``"gsnr/fc1"``, ``"gsnr:test/fc1"``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparsegap.metrics.callbacks import UNITS, _Schedule
from sparsegap.checks import positive_int, torch_seed
from sparsegap.metrics.persample import (check_model_input, check_xy, eval_mode, iter_chunks, measured_masks,
                                         param_device_dtype, trainable_params)

__all__ = ["GradNormCallback", "GradSNRCallback", "GSNRCallback", "fixed_batch", "grad_norm",
           "gsnr_per_layer", "layer_name", "layer_weights"]

# Samples of the fixed batch the grad_norm and gsnr trackers measure on.
DEFAULT_BATCH = 256


# ----------------------------------------------------------------------------- helpers

def _check_model(model: object) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str (the key the trace is logged under), got {name!r}")
    return name


def _check_unit(unit: object) -> str:
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    return unit


def layer_name(param_name: str) -> str:
    """``"fc1.weight"`` -> ``"fc1"``: the module a prunable weight belongs to (the name itself if
    the weight is the model's own, as for a bare ``nn.Linear``)."""
    return param_name[: -len(".weight")] if param_name.endswith(".weight") else param_name


def layer_weights(model: nn.Module) -> dict[str, tuple[str, nn.Parameter]]:
    """Layer name -> (parameter name, weight) of every trainable Conv and Linear weight, in model order.

    The layers of both SNRs: :func:`sparsegap.pruning.prunable_parameters` (the classifier
    included), without frozen weights. A model without any is a ValueError.
    """
    from sparsegap.pruning import prunable_parameters

    out = {layer_name(n): (n, p) for n, p in prunable_parameters(model).items() if p.requires_grad}
    if not out:
        raise ValueError("the model has no trainable Conv or Linear weight: gradient SNRs are measured "
                         "per Conv/Linear layer")
    return out


def fixed_batch(x: Tensor, y: Tensor | None, max_samples: int, seed: int = 0) -> tuple[Tensor, Tensor | None]:
    """The first ``min(len(x), max_samples)`` samples of ``torch.randperm(len(x))`` drawn with a
    generator seeded with ``seed``: the fixed batch a tracker measures on at every point."""
    positive_int(None, "max_samples", max_samples)
    keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(torch_seed("seed", seed)))[:max_samples]
    return x[keep], (y[keep] if y is not None else None)


@contextlib.contextmanager
def _untouched(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Run a forward pass in the model's current mode without leaving a trace: buffers (BatchNorm's
    running statistics, updated by a forward pass in train mode) are restored afterwards, and so is
    the random state (dropout in train mode draws from it), so training continues exactly as if
    nothing had been measured."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


def _masks_of(state: Any, masks_from_state: bool) -> dict | None:
    return getattr(state, "masks", None) if masks_from_state else None


# ----------------------------------------------------------------------------- gradient norm

def grad_norm(model: nn.Module, x: Tensor, y: Tensor, masks: dict[str, Tensor] | None = None) -> float:
    """L2 norm of the gradient of the mean cross-entropy on ``(x, y)`` over the active weights.

    The active weights are every trainable parameter (weights, biases, BatchNorm scales and
    shifts), without the entries that ``masks`` (parameter name -> bool or 0/1 tensor) prunes.
    One forward and one backward pass on all of ``x``, in the model's *current* mode (train mode
    as in training: BatchNorm then normalises with the statistics of ``x``); pass a batch, not a
    data set. The model is left as it was: weights, buffers (BatchNorm running statistics are
    restored), ``.grad`` (the gradient is taken with ``torch.autograd.grad``) and the random state.
    A diverged model gives NaN.
    """
    _check_model(model)
    check_xy(x, y)
    check_model_input(model, x, y)
    float_masks = measured_masks(model, masks)
    params = trainable_params(model)
    device, dtype = param_device_dtype(model)
    xd = x.to(device=device, dtype=dtype if x.is_floating_point() else None)
    with _untouched(model, device), torch.enable_grad():
        loss = F.cross_entropy(model(xd), y.to(device))
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for name, g in zip(params, grads):
        if g is not None:
            total += (g * float_masks[name] if name in float_masks else g).double().pow(2).sum()
    return math.sqrt(float(total))


class GradNormCallback(_Schedule):
    """Log :func:`grad_norm` on a fixed batch, at the start and every ``every`` epochs or steps.

    The batch is the first ``min(len(x), max_samples)`` samples of a permutation drawn once with
    ``seed`` (:func:`fixed_batch`), so every point of the trajectory sees the same samples; the
    masks are ``state.masks`` (when ``masks_from_state``), so pruned weights do not count. One
    forward and backward pass per measurement. Schedule as :class:`~sparsegap.metrics.callbacks.FisherTraceCallback`.
    """

    def __init__(self, x: Tensor, y: Tensor, *, every: int = 1, unit: str = "epoch",
                 max_samples: int = DEFAULT_BATCH, seed: int = 0, masks_from_state: bool = True,
                 at_start: bool = True, name: str = "grad_norm") -> None:
        _check_unit(unit)
        positive_int(None, "every", every)
        check_xy(x, y)
        self.x, self.y = fixed_batch(x, y, max_samples, seed)
        self.every, self.unit, self.at_start = every, unit, at_start
        self.masks_from_state, self.name = masks_from_state, _check_name(name)

    def measure(self, state: Any, at_epoch_end: bool = False) -> float:
        value = grad_norm(state.model, self.x, self.y, _masks_of(state, self.masks_from_state))
        state.log(self.name, value)
        return value


# ----------------------------------------------------------------------------- the authors' minibatch SNR

class GradSNRCallback(_Schedule):
    """The authors' layer-wise gradient SNR over one epoch's minibatch gradients (The Price of
    Sparsity, Figure 11; Saxe et al., 2018): ``||mean_t g_t|| / ||std_t g_t||`` per layer.

    After every optimizer step it reads the minibatch gradient ``g_t`` of every Conv/Linear weight
    from ``p.grad`` (in :func:`sparsegap.train.train` that is the gradient of the minibatch's mean
    loss with the pruned entries already zeroed; weight decay and momentum are not in it) and
    updates a running mean and sum of squared deviations per entry (Welford's update in float64:
    O(parameters) memory, and no cancellation as in ``E[g²] - E[g]²``). At the end of every
    ``every``-th epoch it logs, per layer, the norm of the mean over the norm of the population
    standard deviation (``std(unbiased=False)``) of the epoch's T minibatch gradients, both over the
    layer's active weights (``state.masks`` at that time), under ``f"{name}/{layer}"``; then, at the
    end of every epoch, it starts afresh. Nothing is logged at the start (no minibatch yet). A layer
    whose gradients did not vary (T = 1, or all its weights pruned) logs NaN.

    Not the per-sample GSNR of Liu et al. (2020): see :func:`gsnr_per_layer`. Needs the separate
    gradients of :func:`sparsegap.train.train`; the batched trainer (:mod:`sparsegap.batched`)
    never writes ``p.grad`` and gets a RuntimeError at its first step.
    """

    wants_step_end = True  # it reads every step's gradient

    def __init__(self, *, every: int = 1, masks_from_state: bool = True, name: str = "grad_snr") -> None:
        positive_int(None, "every", every)
        self.every, self.unit, self.at_start = every, "epoch", False
        self.masks_from_state, self.name = masks_from_state, _check_name(name)
        self._seen: dict[str, tuple[Tensor, int]] = {}  # the gradients read at the last step
        self._reset()

    def _reset(self) -> None:
        self.steps = 0
        self._mean: dict[str, Tensor] = {}
        self._m2: dict[str, Tensor] = {}

    def on_train_begin(self, state: Any) -> None:
        self._reset()
        self._seen = {}

    def on_step_end(self, state: Any) -> None:
        layers = layer_weights(state.model)
        grads = {layer: p.grad for layer, (_, p) in layers.items() if p.grad is not None}
        seen = self._seen
        # The same tensor at the same version as at the last step: nobody wrote this step's gradient
        # (a model trained by train() before, then by the batched trainer, keeps its last .grad).
        stale = grads and all(layer in seen and seen[layer][0] is g and seen[layer][1] == g._version
                              for layer, g in grads.items())
        if not grads or stale:
            what = "no Conv/Linear weight has one" if not grads else "p.grad has not changed since the last step"
            raise RuntimeError(
                f"tracker {self.name!r} reads every minibatch gradient from p.grad after the optimizer "
                f"step, but {what}. sparsegap.batched.train_batched (which run_all uses for groups of tiny "
                f"networks) never writes p.grad: train this run with sparsegap.train.train "
                f"(as run_all does: a run with this tracker is never batch-eligible)")
        # Holding the tensors keeps their ids from being reused by the next step's new gradients.
        self._seen = {layer: (g, g._version) for layer, g in grads.items()}
        self.steps += 1
        t = self.steps
        for layer, (_, p) in layers.items():
            g = p.grad.detach().double() if p.grad is not None else torch.zeros_like(p, dtype=torch.float64)
            if t == 1:
                self._mean[layer] = g.clone()
                self._m2[layer] = torch.zeros_like(g)
                continue
            mean = self._mean[layer]
            delta = g - mean
            mean += delta / t
            self._m2[layer] += delta * (g - mean)

    def on_epoch_end(self, state: Any) -> None:
        try:
            if (state.epoch + 1) % self.every == 0:
                self.measure(state, at_epoch_end=True)
        finally:
            self._reset()

    def snr(self, masks: dict[str, Tensor] | None = None) -> dict[str, float]:
        """Layer -> ``||mean_t g_t|| / ||std_t g_t||`` over the steps accumulated so far (``{}`` if none)."""
        if self.steps == 0:
            return {}
        out, self.norms = {}, {}
        for layer, mean in self._mean.items():
            std = (self._m2[layer] / self.steps).clamp_min(0).sqrt()
            m = _mask_for(masks, layer, mean)
            if m is not None:
                mean, std = mean * m, std * m
            num, den = float(mean.norm()), float(std.norm())
            out[layer] = num / den if den > 0 else math.nan
            self.norms[layer] = (num, den)
        return out

    def measure(self, state: Any, at_epoch_end: bool = False) -> dict[str, float]:
        """Logs the SNR under ``<name>/<layer>``, and its two terms, ||mean|| under ``<name>_mean/<layer>``
        and ||std|| under ``<name>_std/<layer>`` (the paper's Fig. 11 reads both)."""
        values = self.snr(_masks_of(state, self.masks_from_state))
        for layer, value in values.items():
            state.log(f"{self.name}/{layer}", value)
            state.log(f"{self.name}_mean/{layer}", self.norms[layer][0])
            state.log(f"{self.name}_std/{layer}", self.norms[layer][1])
        return values


def _mask_for(masks: dict[str, Tensor] | None, layer: str, like: Tensor) -> Tensor | None:
    """The float 0/1 mask of ``layer``'s weight, if ``masks`` has one."""
    if not masks:
        return None
    for key in (f"{layer}.weight", layer):
        if key in masks:
            return masks[key].detach().to(device=like.device, dtype=like.dtype)
    return None


# ----------------------------------------------------------------------------- Liu et al.'s per-sample GSNR

def gsnr_per_layer(model: nn.Module, x: Tensor, y: Tensor, masks: dict[str, Tensor] | None = None, *,
                   max_samples: int | None = None, seed: int = 0, chunk_size: int = 64) -> dict[str, float]:
    """Liu et al.'s (2020) gradient signal-to-noise ratio, per parameter, averaged per layer.

    For every active weight θ_j of a Conv or Linear layer, over the samples i of ``(x, y)``::

        r_j = mean_i(g_ij)² / var_i(g_ij),      g_ij = ∂ ℓ(x_i, y_i) / ∂θ_j  (ℓ: cross-entropy)

    with the population variance (``var(unbiased=False)``); the value of a layer is the mean of
    ``r_j`` over its active weights (those ``masks`` keeps). A weight whose per-sample gradient is the
    same for every sample (variance 0, typically 0 everywhere: a weight into or out of a dead ReLU
    unit) has no ratio and is left out of the average; a layer with no weight left gives NaN.
    Returns ``{layer: value}`` in model order (layer = module name, e.g. ``"fc1"``).

    This is a per-sample quantity at fixed weights, not the authors' minibatch SNR of
    :class:`GradSNRCallback` (a ratio of norms over the minibatch gradients of an epoch).

    Per-sample gradients come from ``torch.func.vmap(grad(...))`` over ``chunk_size`` samples at a
    time (:mod:`sparsegap.metrics.persample` gives per-sample squared norms, not the gradients
    themselves), merged into a running mean and sum of squared deviations in float64 (Chan et al.'s
    pairwise update). Computed in eval mode, like every per-sample estimator of
    :mod:`sparsegap.metrics`: BatchNorm then uses its running statistics, so each sample's gradient
    depends on that sample alone; the model's modes are restored and nothing is written into
    ``.grad``. ``max_samples`` keeps a random subset of that many samples (drawn with ``seed``,
    :func:`fixed_batch`); None uses all of ``x``. At least two samples are needed.
    """
    from torch.func import functional_call, grad, vmap

    _check_model(model)
    check_xy(x, y)
    positive_int(None, "chunk_size", chunk_size)
    if max_samples is not None:
        x, y = fixed_batch(x, y, max_samples, seed)
    if len(x) < 2:
        raise ValueError(f"x must hold at least 2 samples (a variance over samples), got {len(x)}")
    check_model_input(model, x, y)
    float_masks = measured_masks(model, masks)
    layers = layer_weights(model)
    device, dtype = param_device_dtype(model)

    fixed = {k: v.detach() for k, v in [*model.named_parameters(), *model.named_buffers()]}
    names = [pname for pname, _ in layers.values()]
    diff = {n: fixed.pop(n) for n in names}

    def loss_one(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        out = functional_call(model, {**fixed, **p}, (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    count = 0
    mean = {n: torch.zeros(p.shape, dtype=torch.float64, device=device) for n, p in diff.items()}
    m2 = {n: torch.zeros(p.shape, dtype=torch.float64, device=device) for n, p in diff.items()}
    with eval_mode(model):
        for sl in iter_chunks(len(x), chunk_size):
            xc = x[sl].to(device=device, dtype=dtype if x.is_floating_point() else None)
            grads = per_sample(diff, xc, y[sl].to(device))
            n_b = len(xc)
            total = count + n_b
            for n, g in grads.items():
                g = g.double()
                mean_b = g.mean(0)
                m2_b = (g - mean_b).pow(2).sum(0)
                delta = mean_b - mean[n]
                mean[n] += delta * (n_b / total)
                m2[n] += m2_b + delta.pow(2) * (count * n_b / total)
            count = total
    out = {}
    for layer, (n, _) in layers.items():
        var = m2[n] / count
        keep = var > 0
        if n in float_masks:
            keep &= float_masks[n] > 0
        r = mean[n][keep].pow(2) / var[keep]
        out[layer] = float(r.mean()) if r.numel() else math.nan
    return out


class GSNRCallback(_Schedule):
    """Log :func:`gsnr_per_layer` (Liu et al.'s per-sample GSNR, averaged per layer) on a fixed set
    of samples, at the start and every ``every`` epochs or steps, under ``f"{name}/{layer}"``.

    The samples are the first ``min(len(x), max_samples)`` of a permutation drawn once with ``seed``
    (:func:`fixed_batch`); the masks are ``state.masks`` when ``masks_from_state``. Each measurement
    costs about one forward and backward pass per sample (vmapped, ``chunk_size`` at a time).
    """

    def __init__(self, x: Tensor, y: Tensor, *, every: int = 1, unit: str = "epoch",
                 max_samples: int = DEFAULT_BATCH, seed: int = 0, chunk_size: int = 64,
                 masks_from_state: bool = True, at_start: bool = True, name: str = "gsnr") -> None:
        _check_unit(unit)
        positive_int(None, "every", every)
        positive_int(None, "chunk_size", chunk_size)
        check_xy(x, y)
        self.x, self.y = fixed_batch(x, y, max_samples, seed)
        if len(self.x) < 2:
            raise ValueError(f"x must hold at least 2 samples (a variance over samples), got {len(self.x)}")
        self.every, self.unit, self.at_start, self.chunk_size = every, unit, at_start, chunk_size
        self.masks_from_state, self.name = masks_from_state, _check_name(name)

    def measure(self, state: Any, at_epoch_end: bool = False) -> dict[str, float]:
        values = gsnr_per_layer(state.model, self.x, self.y, _masks_of(state, self.masks_from_state),
                                chunk_size=self.chunk_size)
        for layer, value in values.items():
            state.log(f"{self.name}/{layer}", value)
        return values
