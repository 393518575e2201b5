"""Per-sample gradient cosines with a direction in weight space (The Price of Sparsity, Fig. 6 b, c).

For every sample i this measures how well the step that sample asks for, the negative loss gradient
-∇θ ℓ_i (ℓ_i = -log p(y_i | x_i), cross-entropy), points along a fixed direction d in weight space,
e.g. d = Sol-F − Init-S (from the sparse network's initialisation to the dense solution):

    cos(−∇ℓ_i, d) = −⟨∇ℓ_i, d⟩ / (‖∇ℓ_i‖ · ‖d‖).

:func:`top_fraction_classes` then gives the class histogram of the samples with the largest cosines
(the paper's Fig. 7/8).

What θ is (the rule of every estimator in :mod:`sparsegap.metrics.persample`): every parameter with
``requires_grad=True``, restricted to the unpruned coordinates of masked ones. Both vectors live in
that space: pruned coordinates and frozen parameters are dropped from the gradient *and* from the
direction (so from ‖d‖ too), and parameters the direction does not name count as zero there.

How it is fast. One forward and one backward pass per chunk of samples: forward hooks capture each
Linear / Conv2d / BatchNorm layer's input a_i and one ``autograd.grad`` of the summed per-sample
losses gives its output gradients δ_i (the sum keeps each sample's δ_i its own). Then, for a weight
with direction D (already multiplied by the mask, since ⟨G_i ⊙ M, D ⊙ M⟩ = ⟨G_i, D ⊙ M⟩):

  * Linear: ⟨G_i, D⟩ = Σ_t δ_{i,t}ᵀ D a_{i,t}, i.e. the layer's own forward map with weight D
    (``F.linear(a, D)``) dotted with δ -- no per-sample gradient matrix is ever formed;
  * Conv2d: ⟨G_i, D⟩ = Σ_p δ_{i,p} · (D a_{i,p}) over output positions p, i.e. ``F.conv2d(a, D)``
    (same stride, padding, dilation) dotted with δ -- the unfold form without the unfold;
  * biases: ⟨g_i, d_b⟩ = (Σ_t δ_{i,t}) · d_b;
  * BatchNorm in eval mode (running statistics): g_γ = Σ_t δ x̂ and g_β = Σ_t δ per channel.

The squared norms ‖G_i ⊙ M‖² come from the persample module's own closed forms (including its
masked form (δ_i²)ᵀ M (a_i²) and its sparse-mask product), so the two measurements agree exactly.

Every other trainable parameter (LayerNorm, GroupNorm, grouped or non-2D convolutions, tied weights,
custom modules, BatchNorm without running statistics) is not an error: as in the persample module, it
falls back to ``torch.func.vmap(grad(...))`` restricted to those parameters, which gives both its
per-sample inner product and its norm, at the price of roughly one more forward and backward pass
per chunk.

The computation runs in eval mode (BatchNorm uses its running statistics, so each sample's gradient
depends on that sample alone); the modules' modes are restored afterwards and the model's weights,
buffers, ``requires_grad`` flags and ``.grad`` are left as they were.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import positive_int
from .persample import (_BN_TYPES, forward_capturing, _CSR_MAX_DENSITY, _CSR_MIN_ELEMENTS, _Layer, _Plan, _all_finite,
                        _csr_transposed, _layer_sq_norms, _plan, check_model_input, check_xy, eval_mode,
                        iter_chunks, measured_masks, param_device_dtype, trainable_params)

__all__ = ["per_sample_cosines", "top_fraction_classes"]


# ----------------------------------------------------------------------------- validation

def _check_direction(model: nn.Module, direction: dict[str, Tensor],
                     masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """Validate ``direction`` and return it on θ: {trainable name: (masked) tensor in the parameter's
    dtype and device}, frozen parameters dropped, all-zero entries dropped."""
    if not isinstance(direction, dict):
        raise TypeError(f"direction must be a dict parameter name -> tensor (e.g. Sol-F minus Init-S "
                        f"over model.named_parameters()), got {type(direction).__name__}")
    params = dict(model.named_parameters())
    unknown = [k for k in direction if k not in params]
    if unknown:
        buffers = dict(model.named_buffers())
        hint = ""
        in_buffers = [k for k in unknown if k in buffers]
        if in_buffers:
            hint = (f"; {in_buffers[:3]} are buffers (e.g. BatchNorm running statistics), not parameters: "
                    f"build the direction from model.named_parameters(), not from a state_dict")
        raise ValueError(f"direction has key(s) {unknown[:5]!r} that are not parameters of the model{hint}. "
                         f"Allowed keys are the model's parameter names: {sorted(params)[:10]}"
                         f"{'...' if len(params) > 10 else ''}")
    trainable = trainable_params(model)
    out = {}
    for name, d in direction.items():
        p = params[name]
        if not isinstance(d, Tensor):
            raise TypeError(f"direction[{name!r}] must be a torch.Tensor, got {type(d).__name__}")
        if d.shape != p.shape:
            raise ValueError(f"direction[{name!r}] must have the parameter's shape {tuple(p.shape)}, "
                             f"got {tuple(d.shape)}")
        if not d.is_floating_point():
            raise TypeError(f"direction[{name!r}] must be a floating-point tensor, got dtype {d.dtype}")
        if d.numel() and not _all_finite(d):
            raise ValueError(f"direction[{name!r}] must hold finite values, got "
                             f"{int((~torch.isfinite(d)).sum())} NaN or infinite value(s)")
        if name not in trainable:
            continue  # frozen: not part of θ (validated all the same)
        d = d.detach().to(device=p.device, dtype=p.dtype)
        if name in masks:
            d = d * masks[name]
        if bool(d.any()):
            out[name] = d
    return out


def _direction_sq_norm(direction: dict[str, Tensor], n_named: int) -> float:
    sq = sum(float(d.double().pow(2).sum()) for d in direction.values())
    if sq == 0.0:
        raise ValueError(f"direction is zero on the model's trainable, unpruned coordinates (it names "
                         f"{n_named} parameter(s); frozen parameters and pruned entries are left out), "
                         f"so every cosine with it is undefined")
    if not math.isfinite(sq):
        raise ValueError(f"the squared norm of direction overflows ({sq}); rescale it (a cosine does "
                         f"not depend on the direction's length)")
    return sq


# ----------------------------------------------------------------------------- closed forms

def _layer_dots(layer: _Layer, grads_out: list[Tensor | None], direction: dict[str, Tensor]) -> Tensor:
    """⟨G_i, D⟩ + ⟨g_i, d_b⟩ of this layer for every sample of the chunk (D, d_b already masked)."""
    m, n = layer.module, layer.calls[0][0].shape[0]
    total = layer.calls[0][0].new_zeros(n)
    d_w = direction.get(layer.weight) if layer.weight is not None else None
    d_b = direction.get(layer.bias) if layer.bias is not None else None
    for (inp, _), g in zip(layer.calls, grads_out):
        if g is None:  # this call's output did not reach the loss
            continue
        if isinstance(m, _BN_TYPES):
            c = inp.shape[1]
            g = g.reshape(n, c, -1)
            if d_w is not None:
                x_hat = (inp.reshape(n, c, -1) - m.running_mean[:, None]) * (m.running_var + m.eps).rsqrt()[:, None]
                total += (g * x_hat).sum(2) @ d_w
            if d_b is not None:
                total += g.sum(2) @ d_b
            continue
        if d_w is not None:
            if isinstance(m, nn.Linear):
                ad = F.linear(inp, d_w)  # D a_{i,t} at every position t
            else:  # Conv2d with groups == 1 and zero padding (see persample._fast_path_ok)
                ad = F.conv2d(inp, d_w, None, m.stride, m.padding, m.dilation)
            total += (ad * g).reshape(n, -1).sum(1)
        if d_b is not None:
            per_channel = (g.reshape(n, -1, g.shape[-1]).sum(1) if isinstance(m, nn.Linear)
                           else g.flatten(2).sum(2))
            total += per_channel @ d_b
    return total


def _fallback_dots_and_sq_norms(model: nn.Module, names: list[str], x: Tensor, y: Tensor,
                                direction: dict[str, Tensor], masks: dict[str, Tensor]
                                ) -> tuple[Tensor, Tensor]:
    """torch.func per-sample gradients of the parameters without a closed form: (dots, sq norms)."""
    from torch.func import functional_call, grad, vmap

    state = {k: v.detach() for k, v in {**dict(model.named_parameters()), **dict(model.named_buffers())}.items()}
    diff = {k: state.pop(k) for k in names}

    def loss_one(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        out = functional_call(model, {**state, **p}, (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(diff, x, y)
    dots = x.new_zeros(len(x), dtype=torch.float64)
    sq = x.new_zeros(len(x), dtype=torch.float64)
    for k, g in grads.items():
        if k in masks:
            g = g * masks[k]
        g = g.flatten(1)
        sq += g.pow(2).sum(1).double()
        if k in direction:
            dots += (g @ direction[k].reshape(-1)).double()
    return dots, sq


def _chunk_dots_and_sq_norms(model: nn.Module, plan: _Plan, x: Tensor, y: Tensor,
                             direction: dict[str, Tensor], masks: dict[str, Tensor]
                             ) -> tuple[Tensor, Tensor]:
    """(⟨∇ℓ_i, d⟩, ‖∇ℓ_i‖²) in float64 for one chunk: one forward and one backward pass (plus the
    torch.func pass for fallback parameters). The model must already be in eval mode."""
    logits = forward_capturing(model, plan, x)
    try:
        if logits.ndim != 2:
            raise ValueError(f"the model must return logits of shape (N, classes), got {tuple(logits.shape)}")
        dots = logits.new_zeros(len(x), dtype=torch.float64)
        sq = logits.new_zeros(len(x), dtype=torch.float64)
        outputs = [out for layer in plan.layers for _, out in layer.calls]
        if outputs and logits.requires_grad:
            # The sum over samples: each sample's δ_i is the gradient of its own loss.
            loss = -F.log_softmax(logits, dim=1).gather(1, y[:, None]).sum()
            grads = torch.autograd.grad(loss, outputs, allow_unused=True)
            pos = 0
            for layer in plan.layers:
                g = list(grads[pos: pos + len(layer.calls)])
                pos += len(layer.calls)
                if not layer.calls:
                    continue
                sq += _layer_sq_norms(layer, g, masks).double()
                if (layer.weight in direction) or (layer.bias in direction):
                    dots += _layer_dots(layer, g, direction).double()
        if plan.fallback:
            f_dots, f_sq = _fallback_dots_and_sq_norms(model, plan.fallback, x, y, direction, masks)
            dots += f_dots
            sq += f_sq
    finally:
        for layer in plan.layers:
            layer.calls.clear()
    return dots, sq


# ----------------------------------------------------------------------------- public API

def per_sample_cosines(model: nn.Module, x: Tensor, y: Tensor, direction: dict[str, Tensor], *,
                       masks: dict[str, Tensor] | None = None, chunk_size: int = 256) -> Tensor:
    """cos(−∇θ ℓ(x_i, y_i), d) for every sample, ℓ = -log p(y_i | x_i) (cross-entropy).

    Args:
        model: a classifier returning logits of shape (N, classes).
        x, y: the samples (N, ...) and their integer class indices (N,).
        direction: the direction d as {parameter name: tensor of that parameter's shape}, e.g.
            ``{n: sol_f[n] - init_s[n] for n, _ in model.named_parameters()}``. Parameters it does
            not name count as zero; keys that are not parameters of ``model`` (including buffers
            such as BatchNorm running statistics) are an error.
        masks: {parameter name: bool (or 0/1) tensor} of a sparse network. Pruned coordinates are
            left out of both the gradient and the direction.
        chunk_size: samples per forward/backward pass.

    Only trainable parameters (``requires_grad=True``) are part of θ; a direction entry for a frozen
    parameter is validated and then ignored. The computation runs in eval mode and leaves the model
    as it was (see the module docstring for the closed forms used and the torch.func fallback).

    Returns:
        A float64 CPU tensor of shape (N,) with values in [-1, 1]. A sample whose gradient is
        exactly zero (on θ) has no direction, and its cosine is NaN.

    Raises:
        ValueError / TypeError: empty or non-finite x, y not matching x, masks or direction keys
            that are not parameters of the model, shapes that do not match, a non-finite direction,
            a direction that is zero on θ, or a non-positive chunk_size.
    """
    check_xy(x, y)
    positive_int(None, "chunk_size", chunk_size)
    masks_t = measured_masks(model, masks)
    param_device_dtype(model)  # a model without parameters is an error
    if not trainable_params(model):
        raise ValueError("the model has no trainable parameters (all have requires_grad=False), so "
                         "there is no gradient to take a cosine of")
    dirs = _check_direction(model, direction, masks_t)
    d_sq = _direction_sq_norm(dirs, len(direction))
    check_model_input(model, x, y)

    device, dtype = param_device_dtype(model)
    plan = _plan(model)
    for layer in plan.layers:  # the persample module's sparse product for very sparse Linear masks
        m = masks_t.get(layer.weight)
        if (isinstance(layer.module, nn.Linear) and m is not None and m.numel() >= _CSR_MIN_ELEMENTS
                and float(m.mean()) <= _CSR_MAX_DENSITY):
            layer.csr_mask = _csr_transposed(masks[layer.weight], m)

    dots = torch.empty(len(x), dtype=torch.float64)
    sq = torch.empty(len(x), dtype=torch.float64)
    with eval_mode(model):
        for sl in iter_chunks(len(x), chunk_size):
            xc = x[sl].to(device=device, dtype=dtype if x.is_floating_point() else None)
            d, s = _chunk_dots_and_sq_norms(model, plan, xc, y[sl].to(device), dirs, masks_t)
            dots[sl], sq[sl] = d.cpu(), s.cpu()
    cos = -dots / (sq.sqrt() * math.sqrt(d_sq))
    cos[sq == 0] = float("nan")
    return cos.clamp(-1.0, 1.0)  # rounding can step just outside; NaN stays NaN


def top_fraction_classes(cosines: Tensor, y: Tensor, fraction: float = 0.05,
                         num_classes: int | None = None) -> Tensor:
    """Class histogram of the samples with the largest cosines (The Price of Sparsity, Fig. 7/8).

    Args:
        cosines: (N,) per-sample values, e.g. from :func:`per_sample_cosines`; NaN is an error
            (drop those samples, and their labels, first).
        y: (N,) integer class indices of the same samples.
        fraction: the share of samples kept, in (0, 1]: the top ``max(1, round(fraction * N))``
            cosines. Ties at the cut are broken by sample order (the earlier sample is kept).
        num_classes: length of the histogram; default ``max(y) + 1``. Must exceed every label.

    Returns:
        An int64 CPU tensor of shape (num_classes,): how many of the top samples belong to each class.
    """
    if not isinstance(cosines, Tensor):
        raise TypeError(f"cosines must be a torch.Tensor, got {type(cosines).__name__}")
    if cosines.ndim != 1 or len(cosines) == 0:
        raise ValueError(f"cosines must be a non-empty 1-D tensor (one value per sample), "
                         f"got shape {tuple(cosines.shape)}")
    if not cosines.is_floating_point():
        raise TypeError(f"cosines must be a floating-point tensor, got dtype {cosines.dtype}")
    n_nan = int(torch.isnan(cosines).sum())
    if n_nan:
        raise ValueError(f"cosines holds {n_nan} NaN value(s) (samples with a zero gradient have no "
                         f"cosine); drop them and their labels first, e.g. keep = ~cosines.isnan()")
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.shape != cosines.shape:
        raise ValueError(f"y must have shape {tuple(cosines.shape)} to match cosines, got {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer class indices, got dtype {y.dtype}")
    if int(y.min()) < 0:
        raise ValueError(f"y must hold class indices >= 0, got {int(y.min())}")
    if (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
            or not 0.0 < fraction <= 1.0):  # NaN fails the comparison too
        raise ValueError(f"fraction must be a number in (0, 1] (the share of samples with the top "
                         f"cosines), got {fraction!r}")
    top_label = int(y.max())
    if num_classes is None:
        num_classes = top_label + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    elif num_classes <= top_label:
        raise ValueError(f"num_classes={num_classes} is too small: y holds class index {top_label}, "
                         f"so num_classes must be at least {top_label + 1}")
    k = max(1, round(fraction * len(cosines)))
    order = torch.sort(cosines.detach().cpu(), descending=True, stable=True).indices[:k]
    return torch.bincount(y.detach().cpu()[order].long(), minlength=num_classes)
