"""Loss-landscape tools: linear paths between two networks, random directions, distances.

Used by the chapters on sparse double descent (loss along the line between the sparse and the
re-dense solution, distance travelled from the initialisation) and later by the ones on linear
mode connectivity and Bézier curves between sparse solutions.

* :func:`linear_path` evaluates ``θ(t) = (1 - t) θ_a + t θ_b`` on named or given subsets of the
  data, for any ``t`` (extrapolation outside [0, 1] included).
* :func:`filter_normalized_direction` and :func:`loss_along_direction` give Li et al.'s (2018)
  filter-normalised 1-D loss plots ``L(θ + α d)``.
* :func:`distance_from_init` measures ``||θ - θ_0||`` over the Conv and Linear layers (from
  :mod:`sparsegap.metrics.weights`, with :func:`check_same_architecture`).

BatchNorm pitfall. A network with BatchNorm is evaluated with its *running* statistics, which
describe the activations of the weights it was trained with. Interpolating the running
statistics of two networks (or keeping them while the weights move along a direction) does not
give the statistics of the interpolated weights: the mean of the activations is not linear in
the weights, and the variance even less so. The loss of such a network can look like a barrier
that is only a statistics mismatch. :func:`reestimate_bn` recomputes the statistics from the
training inputs for the weights at hand; the path functions do it at every point by default for
models with BatchNorm. Points that *are* one of the given networks (``t = 0`` and ``t = 1`` of a
linear path, ``α = 0`` of a direction) keep that network's own statistics, so they reproduce its
own evaluation exactly; re-estimate the networks themselves first (``reestimate_bn(copy, x)``)
to put the endpoints on the same footing as the points between them.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sparsegap.checks import device as check_device
from sparsegap.checks import torch_seed
from sparsegap.data import SUBSETS, DataSplits
from sparsegap.metrics.basic import evaluate
from sparsegap.metrics.persample import check_xy
# The weight-space basics live with the measurements (metrics.compare needs them); reached here too.
from sparsegap.metrics.weights import StateDict, as_state_dict, check_same_architecture, distance_from_init
from sparsegap.pruning import PRUNABLE_TYPES

__all__ = ["check_same_architecture", "distance_from_init", "filter_normalized_direction", "has_batchnorm",
           "interpolate_state", "linear_path", "loss_along_direction", "reestimate_bn"]


def has_batchnorm(model: nn.Module) -> bool:
    """True if any submodule of ``model`` is a BatchNorm layer (1d, 2d, 3d, sync or lazy)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return any(isinstance(m, _BatchNorm) for m in model.modules())


# ------------------------------------------------------------------------------------ BatchNorm

def _check_optional_positive_int(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


def _batch_bounds(n: int, batch_size: int, max_batches: int | None) -> list[tuple[int, int]]:
    """[start, stop) of each batch; a trailing batch of one sample joins the batch before it (BatchNorm
    in train mode cannot take a batch of one sample without spatial dimensions)."""
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds if max_batches is None else bounds[:max_batches]


@torch.no_grad()
def reestimate_bn(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256,
                  max_batches: int | None = None) -> nn.Module:
    """Recompute the running statistics of every BatchNorm layer of ``model`` from inputs ``x``, in place.

    Every BatchNorm layer that tracks running statistics has them reset (mean 0, variance 1,
    ``num_batches_tracked`` 0) and its ``momentum`` set to None, i.e. a cumulative average; then
    ``x`` is forwarded in batches of ``batch_size`` (the first ``max_batches`` of them, all if
    None) with the whole model in train mode and without gradients, as
    ``torch.optim.swa_utils.update_bn`` does. Afterwards each layer's momentum and each
    submodule's train/eval mode are restored. Parameters are not touched.

    The result is the average of the per-batch means and (unbiased) variances, each batch
    weighted equally; with ``batch_size >= len(x)`` it is exactly the mean and unbiased variance
    of the layer's inputs over ``x``. A trailing batch of a single sample joins the batch before
    it. Models without BatchNorm are returned unchanged (no forward pass is run).

    Use it whenever weights change without the statistics being trained along: interpolated
    networks (interpolating running statistics is a known pitfall, see the module docstring),
    weights moved along a direction, pruned or rewound weights.

    Parameters
    ----------
    model : nn.Module
        The network, modified in place.
    x : torch.Tensor
        Training inputs (a batch dimension first), finite.
    batch_size : int
        Samples per forward pass.
    max_batches : int or None
        Use only the first ``max_batches`` batches of ``x`` (None: all of them).

    Returns
    -------
    nn.Module
        ``model`` itself.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_xy(x, None, y_required=False)
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    _check_optional_positive_int("max_batches", max_batches)
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not layers:
        return model
    p = next(model.parameters(), None)
    device = p.device if p is not None else layers[0].running_mean.device
    momenta = [m.momentum for m in layers]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for start, stop in _batch_bounds(len(x), int(batch_size), max_batches):
            model(x[start:stop].to(device))
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        for m, training in modes:
            m.training = training  # not m.train(): that would recurse and overwrite the children
    return model


_reestimate_bn = reestimate_bn  # the path functions have a parameter of that name


# ------------------------------------------------------------------------------------ interpolation

def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def interpolate_state(a_state: StateDict | nn.Module, b_state: StateDict | nn.Module,
                      t: float) -> dict[str, torch.Tensor]:
    """The state dict ``(1 - t) a + t b`` of the point ``t`` on the line through ``a`` (t=0) and ``b`` (t=1).

    Floating-point tensors (weights, biases, BatchNorm scales and running statistics) are
    interpolated entry by entry in their own dtype; ``t`` may lie outside [0, 1] (extrapolation).
    Other tensors (integer buffers such as BatchNorm's ``num_batches_tracked``, boolean buffers)
    are copied from ``a``. At ``t = 0`` and ``t = 1`` the result equals ``a`` and ``b`` exactly
    (the form ``(1 - t) a + t b`` is used rather than ``a + t (b - a)`` for that reason).

    Interpolated BatchNorm running statistics are *not* the statistics of the interpolated weights;
    see :func:`reestimate_bn`. ``a_state`` and ``b_state`` may also be modules (their state dicts
    are used); they are not modified, and the returned tensors are new (detached) tensors.
    """
    sa, sb = as_state_dict(a_state, "a_state"), as_state_dict(b_state, "b_state")
    check_same_architecture(sa, sb)
    t = _check_real("t", t)
    out = {}
    for key, va in sa.items():
        va = va.detach()
        if va.is_floating_point() or va.is_complex():
            out[key] = (1.0 - t) * va + t * sb[key].detach().to(va.device)
        else:
            out[key] = va.clone()
    return out


def _check_points(name: str, values: object, default: np.ndarray) -> list[float]:
    """A non-empty 1-D sequence of finite reals, as Python floats."""
    if values is None:
        return [float(v) for v in default]
    allowed = f"{name} must be a non-empty 1-D sequence of finite floats"
    if isinstance(values, (str, bytes, bool, numbers.Number)):
        raise ValueError(f"{allowed}, got {values!r} (wrap a single value in a list: [{values!r}])")
    try:
        arr = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{allowed}, got {values!r}") from err
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{allowed}, got {values!r} (dtype {arr.dtype})")
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{allowed}, got {values!r} (shape {arr.shape})")
    arr = arr.astype(float)
    bad = np.flatnonzero(~np.isfinite(arr))
    if len(bad):
        raise ValueError(f"{allowed}, got {arr[bad[0]]!r} at position {int(bad[0])} of {name}")
    return [float(v) for v in arr]


def _describe(obj: object) -> str:
    """A short repr: tensors by dtype and shape, not by their values."""
    if isinstance(obj, torch.Tensor):
        return f"Tensor(shape={tuple(obj.shape)}, dtype={obj.dtype})"
    if isinstance(obj, (tuple, list)):
        inner = ", ".join(_describe(o) for o in obj[:4]) + (", ..." if len(obj) > 4 else "")
        return f"({inner}{',' if len(obj) == 1 else ''})" if isinstance(obj, tuple) else f"[{inner}]"
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."


def _resolve_subsets(subsets: object, data: DataSplits | None
                     ) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(label, x, y) for each entry of ``subsets``: a name of :data:`SUBSETS` or a (label, (x, y)) pair."""
    allowed = (f"subsets must be a non-empty sequence whose entries are subset names ({', '.join(SUBSETS)}) "
               f"or (label, (x, y)) pairs")
    if isinstance(subsets, (str, bytes)):
        raise ValueError(f"{allowed}, got the string {subsets!r}; write ({subsets!r},)")
    if not isinstance(subsets, Iterable):
        raise ValueError(f"{allowed}, got {subsets!r}")
    out: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for entry in subsets:
        if isinstance(entry, str):
            if entry not in SUBSETS:
                raise ValueError(f"unknown subset name {entry!r} in subsets; allowed names: {', '.join(SUBSETS)}, "
                                 f"or pass a (label, (x, y)) pair for other data")
            if data is None:
                raise ValueError(f"subset name {entry!r} needs data (a sparsegap.data.DataSplits), got data=None")
            x, y = data.split(entry)
            label = entry
        elif (isinstance(entry, Sequence) and len(entry) == 2 and isinstance(entry[0], str)
              and isinstance(entry[1], Sequence) and len(entry[1]) == 2):
            label, (x, y) = entry[0], entry[1]
            check_xy(x, y)
        else:
            raise ValueError(f"{allowed}, got the entry {_describe(entry)}")
        if any(label == seen for seen, _, _ in out):
            raise ValueError(f"subsets has the label {label!r} twice; each subset needs its own label")
        out.append((label, x, y))
    if not out:
        raise ValueError(f"{allowed}, got an empty {type(subsets).__name__}")
    return out


def _check_data(data: object) -> None:
    if data is not None and not isinstance(data, DataSplits):
        raise TypeError(f"data must be a sparsegap.data.DataSplits (or None when every subset is a "
                        f"(label, (x, y)) pair and no BatchNorm statistics are re-estimated), "
                        f"got {type(data).__name__}")


def _resolve_reestimate(reestimate_bn: object, model: nn.Module, data: DataSplits | None,
                        bn_batches: object) -> bool:
    if reestimate_bn is not None and not isinstance(reestimate_bn, bool):
        raise ValueError(f"reestimate_bn must be True, False or None (None: True for models with BatchNorm), "
                         f"got {reestimate_bn!r}")
    _check_optional_positive_int("bn_batches", bn_batches)
    bn = has_batchnorm(model)
    todo = bn if reestimate_bn is None else (reestimate_bn and bn)
    if todo and data is None:
        raise ValueError("re-estimating the BatchNorm statistics needs data (its x_train), got data=None; pass "
                         "a DataSplits or reestimate_bn=False")
    return todo


def _evaluate_rows(work: nn.Module, column: str, value: float,
                   subsets: list[tuple[str, torch.Tensor, torch.Tensor]], device: torch.device) -> list[dict]:
    rows = []
    for label, x, y in subsets:
        ev = evaluate(work, x, y, device=device)
        rows.append({column: value, "subset": label, "loss": ev.loss, "accuracy": ev.accuracy})
    return rows


def linear_path(model_a: nn.Module, model_b: nn.Module, data: DataSplits | None, *,
                ts: Sequence[float] | np.ndarray | None = None,
                subsets: Sequence[str | tuple[str, tuple[torch.Tensor, torch.Tensor]]] = ("train", "test"),
                reestimate_bn: bool | None = None, bn_batches: int | None = None,
                device: torch.device | str = "cpu", weight_decay: float = 0.0) -> pd.DataFrame:
    """Loss and accuracy along the line ``θ(t) = (1 - t) θ_a + t θ_b`` between two networks.

    Parameters
    ----------
    model_a, model_b : nn.Module
        Networks of the same architecture (:func:`check_same_architecture`); ``t = 0`` is
        ``model_a`` and ``t = 1`` is ``model_b``. Neither is modified: the path is evaluated on a
        copy of ``model_a`` loaded with :func:`interpolate_state`.
    data : DataSplits or None
        Gives the named subsets and, for re-estimated BatchNorm statistics, ``x_train``. May be
        None when every subset is a ``(label, (x, y))`` pair and nothing is re-estimated.
    ts : sequence of float, optional
        The points, a non-empty 1-D sequence of finite floats in any range (``-0.2`` and ``1.2``
        extrapolate beyond the endpoints). Default ``np.linspace(0, 1, 21)``.
    subsets : sequence
        Each entry a name accepted by :meth:`DataSplits.split` (one of :data:`sparsegap.data.SUBSETS`)
        or a ``(label, (x, y))`` pair for any other data.
    reestimate_bn : bool or None
        Recompute BatchNorm running statistics on ``data.x_train`` at every point
        (:func:`reestimate_bn`); None means True for models with BatchNorm and False otherwise.
        Points with ``t`` exactly 0 or 1 are the given networks and keep their own statistics.
        False keeps the interpolated running statistics (the pitfall, for comparison).
    bn_batches : int or None
        Re-estimate from the first ``bn_batches`` batches of 256 training inputs (None: all).
    device : torch.device or str
        Where the copy is evaluated.
    weight_decay : float
        With a coefficient λ > 0, the training objective's two terms are reported apart (Evci et al.
        2019, Fig. 6/7): ``l2`` = λ/2·‖θ(t)‖² over every trainable parameter (what SGD's weight decay
        λ penalizes) and ``objective`` = ``loss`` + ``l2``. 0 (the default) adds neither column.

    Returns
    -------
    pandas.DataFrame
        Columns ``t``, ``subset``, ``loss`` (mean cross-entropy), ``accuracy`` (in [0, 1]) (and ``l2``,
        ``objective`` with ``weight_decay``), one row per point and subset, points in the order of
        ``ts``. Rows with ``t = 0`` (``t = 1``) equal ``metrics.basic.evaluate(model_a)``
        (``model_b``) on that subset exactly.
    """
    for name, model in (("model_a", model_a), ("model_b", model_b)):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{name} must be an nn.Module, got {type(model).__name__}")
    check_same_architecture(model_a, model_b)
    _check_data(data)
    points = _check_points("ts", ts, np.linspace(0.0, 1.0, 21))
    resolved = _resolve_subsets(subsets, data)
    reestimate = _resolve_reestimate(reestimate_bn, model_a, data, bn_batches)
    device = check_device("device", device)
    if (isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float))
            or not math.isfinite(weight_decay) or weight_decay < 0):
        raise ValueError(f"weight_decay must be a finite number >= 0 (the L2 coefficient), got {weight_decay!r}")

    work = copy.deepcopy(model_a).to(device)
    sa = {k: v.detach().to(device) for k, v in model_a.state_dict().items()}
    sb = {k: v.detach().to(device) for k, v in model_b.state_dict().items()}
    rows: list[dict] = []
    for t in points:
        work.load_state_dict(interpolate_state(sa, sb, t))
        if reestimate and t not in (0.0, 1.0):
            _reestimate_bn(work, data.x_train, max_batches=bn_batches)
        point = _evaluate_rows(work, "t", t, resolved, device)
        if weight_decay:
            with torch.no_grad():
                l2 = 0.5 * weight_decay * float(sum(p.double().pow(2).sum() for p in work.parameters()))
            point = [r | {"l2": l2, "objective": r["loss"] + l2} for r in point]
        rows += point
    columns = ["t", "subset", "loss", "accuracy"] + (["l2", "objective"] if weight_decay else [])
    return pd.DataFrame(rows, columns=columns)


# ------------------------------------------------------------------------------------ directions

def _layer_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """``weight`` of every Conv and Linear module (:data:`sparsegap.pruning.PRUNABLE_TYPES`), in model order."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) and module.weight is not None:
            out[f"{name}.weight" if name else "weight"] = module.weight
    return out


@torch.no_grad()
def filter_normalized_direction(model: nn.Module, *, masks: Mapping[str, torch.Tensor] | None = None,
                                seed: int = 0) -> dict[str, torch.Tensor]:
    """A random direction in weight space, filter-normalised as in Li et al. (2018).

    What is done, for the ``weight`` ``W`` of every Conv and Linear layer
    (:data:`sparsegap.pruning.PRUNABLE_TYPES`), in model order:

    1. ``D`` is drawn from a standard normal (in float32, from a ``torch.Generator`` seeded with
       ``seed``, then cast to ``W``'s dtype and device), so the direction depends only on
       ``seed`` and the layer shapes; the global RNG is not used.
    2. With ``masks`` (a sparse network: parameter name -> bool tensor, True = kept), the layer's
       mask ``M`` multiplies both: ``D <- M ⊙ D`` and ``W <- M ⊙ W``, *before* the normalisation.
       The direction then stays in the sparse subspace and pruned entries are exactly zero.
    3. Each output row of a Linear weight, or filter of a Conv weight (index along dim 0), of
       ``D`` is rescaled to the Euclidean norm of the same row/filter of ``W``:
       ``D_i <- D_i · ||W_i|| / ||D_i||``. A row whose (masked) weights are all zero gets a zero
       row (so does a row with no kept entry).

    Biases and normalisation (BatchNorm) parameters are left out, as Li et al. do for their
    plots: they are not keys of the returned dict, which :func:`loss_along_direction` treats as
    a zero direction.

    Parameters
    ----------
    model : nn.Module
        The network; not modified.
    masks : dict or None
        Masks of some of the Conv/Linear weights (as from :mod:`sparsegap.pruning`); weights
        without a mask are dense.
    seed : int
        Seed of the direction's generator.

    Returns
    -------
    dict[str, torch.Tensor]
        Parameter name (``"fc1.weight"``, ``"layer1.0.conv1.weight"``...) -> direction tensor of
        the weight's shape, dtype and device.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    seed = torch_seed("seed", seed)
    weights = _layer_weights(model)
    if not weights:
        raise ValueError(f"model of type {type(model).__name__} has no Conv or Linear weight to draw a direction for")
    if masks is not None:
        if not isinstance(masks, Mapping):
            raise TypeError(f"masks must be a dict parameter name -> bool tensor or None, got {type(masks).__name__}")
        for name, m in masks.items():
            if name not in weights:
                raise ValueError(f"masks has parameter name {name!r}, which is not a Conv or Linear weight of the "
                                 f"model; allowed names: {list(weights)}")
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
                got = m.dtype if isinstance(m, torch.Tensor) else type(m).__name__
                raise TypeError(f"masks[{name!r}] must be a bool tensor, got {got}")
            if m.shape != weights[name].shape:
                raise ValueError(f"masks[{name!r}] has shape {tuple(m.shape)}, the weight has "
                                 f"{tuple(weights[name].shape)}")
    gen = torch.Generator().manual_seed(seed)
    direction = {}
    for name, w in weights.items():
        w = w.detach()
        d = torch.randn(w.shape, generator=gen, dtype=torch.float32).to(dtype=w.dtype, device=w.device)
        if masks is not None and name in masks:
            m = masks[name].to(w.device)
            d, w = d * m, w * m
        w_norm = w.reshape(len(w), -1).norm(dim=1)
        d_norm = d.reshape(len(d), -1).norm(dim=1)
        ok = (w_norm > 0) & (d_norm > 0)
        scale = torch.where(ok, w_norm / torch.where(ok, d_norm, torch.ones_like(d_norm)),
                            torch.zeros_like(w_norm))
        direction[name] = d * scale.reshape(-1, *([1] * (d.ndim - 1)))
    return direction


def _check_direction(model: nn.Module, direction: object) -> dict[str, torch.Tensor]:
    if not isinstance(direction, Mapping):
        raise TypeError(f"direction must be a dict parameter name -> tensor, got {type(direction).__name__}")
    if not direction:
        raise ValueError("direction is empty: it must name at least one parameter of the model")
    params = dict(model.named_parameters())
    for name, d in direction.items():
        if name not in params:
            raise ValueError(f"direction has parameter name {name!r}, which the model does not have; its "
                             f"parameters are {list(params)[:10]}{'...' if len(params) > 10 else ''}")
        if not isinstance(d, torch.Tensor) or not d.is_floating_point():
            got = d.dtype if isinstance(d, torch.Tensor) else type(d).__name__
            raise TypeError(f"direction[{name!r}] must be a floating-point tensor, got {got}")
        if d.shape != params[name].shape:
            raise ValueError(f"direction[{name!r}] has shape {tuple(d.shape)}, the parameter has "
                             f"{tuple(params[name].shape)}")
        if not bool(torch.isfinite(d).all()):
            raise ValueError(f"direction[{name!r}] holds NaN or infinite values; a direction must be finite")
    return dict(direction)


def loss_along_direction(model: nn.Module, direction: Mapping[str, torch.Tensor], data: DataSplits | None, *,
                         alphas: Sequence[float] | np.ndarray | None = None,
                         subsets: Sequence[str | tuple[str, tuple[torch.Tensor, torch.Tensor]]] = ("train",),
                         reestimate_bn: bool | None = None, bn_batches: int | None = None,
                         device: torch.device | str = "cpu") -> pd.DataFrame:
    """Loss and accuracy of ``θ + α d`` for each ``α``: a 1-D slice of the loss landscape.

    Parameters
    ----------
    model : nn.Module
        The network at ``θ`` (``α = 0``); not modified (a copy is evaluated).
    direction : dict[str, torch.Tensor]
        Parameter name -> step of the parameter's shape, e.g. from
        :func:`filter_normalized_direction`. Parameters it does not name do not move; buffers
        never do (except re-estimated BatchNorm statistics).
    data : DataSplits or None
        As in :func:`linear_path`.
    alphas : sequence of float, optional
        Non-empty 1-D sequence of finite step sizes; default ``np.linspace(-1, 1, 41)``.
    subsets, reestimate_bn, bn_batches, device
        As in :func:`linear_path`. The point ``α = 0`` is the model itself and keeps its own
        BatchNorm statistics, so it reproduces the model's own evaluation exactly.

    Returns
    -------
    pandas.DataFrame
        Columns ``alpha``, ``subset``, ``loss``, ``accuracy``, one row per step and subset.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    direction = _check_direction(model, direction)
    _check_data(data)
    points = _check_points("alphas", alphas, np.linspace(-1.0, 1.0, 41))
    resolved = _resolve_subsets(subsets, data)
    reestimate = _resolve_reestimate(reestimate_bn, model, data, bn_batches)
    device = check_device("device", device)

    work = copy.deepcopy(model).to(device)
    base = {k: v.detach().clone() for k, v in work.state_dict().items()}
    step = {k: d.detach().to(device=device, dtype=base[k].dtype) for k, d in direction.items()}
    rows: list[dict] = []
    for alpha in points:
        state = dict(base)
        if alpha != 0.0:
            state.update({k: base[k] + alpha * d for k, d in step.items()})
        work.load_state_dict(state)
        if reestimate and alpha != 0.0:
            _reestimate_bn(work, data.x_train, max_batches=bn_batches)
        rows += _evaluate_rows(work, "alpha", alpha, resolved, device)
    return pd.DataFrame(rows, columns=["alpha", "subset", "loss", "accuracy"])
