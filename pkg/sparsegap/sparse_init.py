"""Sparsity-aware initialisation of a masked network (Evci et al. 2022).

Dense initialisations (Kaiming/He) scale a layer's weights by its *full* fan-in so that every
neuron's pre-activation keeps the variance of its inputs (times ``gain**2``). Under a mask a
neuron sees only its unmasked inputs, so its pre-activation variance shrinks by the layer's
density; through ``L`` masked ReLU layers the signal, and with it the gradient, shrinks by about
``density**L`` and a network at high sparsity barely trains from scratch. Evci et al.
("Gradient Flow in Sparse Neural Networks and How Lottery Tickets Win", AAAI 2022) fix the
scale with the masked fan-in:

* ``"unit"`` (their sparse initialisation, per-neuron "unit scaling"): every output neuron (a
  Linear row, a Conv output channel) draws its weights from ``N(0, gain**2 / n_i)``, ``n_i`` its
  number of unmasked incoming weights (for a Conv, the unmasked entries of its filter,
  ``c_in * k * k`` at most). Every neuron then has pre-activation variance ``gain**2`` on
  unit-variance inputs, whatever its own fan-in.
* ``"layer"`` (layer-wise scaling): the dense Kaiming-normal weights divided by
  ``sqrt(density)`` of the layer. Neurons keep ``gain**2`` *on average* over the layer; one with
  fewer inputs than the layer's average gets less.

Both draw the same standard-normal numbers for a given seed and differ only in their scale, so
comparing them isolates the scaling rule. See :func:`sparse_init_`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .checks import torch_seed
from .pruning import PRUNABLE_TYPES, Masks, check_masks, prunable_parameters

SPARSE_INITS: tuple[str, ...] = ("unit", "layer")

NONLINEARITIES: tuple[str, ...] = ("relu", "linear", "tanh", "sigmoid")


def masked_fan_in(mask: torch.Tensor) -> torch.Tensor:
    """Per output neuron, the number of unmasked incoming weights of a Linear or Conv weight mask.

    ``mask`` has the weight's shape ``(out, in)`` or ``(out, c_in/groups, *kernel)``; the result has
    shape ``(out,)`` and dtype int64: the kept entries of each row or filter.
    """
    if not isinstance(mask, torch.Tensor) or mask.dim() < 2:
        raise ValueError(f"mask must be a weight mask of at least 2 dimensions (out, in, ...), got "
                         f"{type(mask).__name__ if not isinstance(mask, torch.Tensor) else tuple(mask.shape)}")
    return mask.reshape(mask.shape[0], -1).sum(dim=1, dtype=torch.int64)


def _check_method(method: object) -> str:
    if not isinstance(method, str) or method not in SPARSE_INITS:
        raise ValueError(f"method={method!r} is not allowed; it must be one of {SPARSE_INITS} ('unit': "
                         f"per-neuron masked fan-in, Evci et al. 2022; 'layer': dense Kaiming / sqrt(density))")
    return method


def _check_nonlinearity(nonlinearity: object) -> float:
    if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity={nonlinearity!r} is not allowed; it must be one of {NONLINEARITIES} "
                         f"(the activation after the hidden layers, which sets the gain)")
    return float(nn.init.calculate_gain(nonlinearity))


def _check_output_gain(output_gain: object) -> float | None:
    if output_gain is None:
        return None
    if (isinstance(output_gain, bool) or not isinstance(output_gain, (int, float))
            or not math.isfinite(output_gain) or output_gain <= 0):
        raise ValueError(f"output_gain={output_gain!r} is not allowed; it must be a finite number > 0 "
                         f"(the gain of the last nn.Linear, 1.0 for logits) or None (the nonlinearity's gain)")
    return float(output_gain)


def _check_sparse_masks(model: nn.Module, masks: Masks) -> None:
    check_masks(model, masks)
    prunable = prunable_parameters(model)
    other = [n for n in masks if n not in prunable]
    if other:
        raise ValueError(f"masks name parameter(s) {other} that are not Conv/Linear weights; a sparse "
                         f"initialisation only takes masks over the prunable weights {list(prunable)}")


def _output_layer_weight(model: nn.Module) -> str | None:
    """Parameter name of the last nn.Linear's weight (models.output_layer_name), None if there is none."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        return None
    return f"{last}.weight" if last else "weight"


@torch.no_grad()
def sparse_init_(model: nn.Module, masks: Masks, method: str, *, seed: int, nonlinearity: str = "relu",
                 output_gain: float | None = 1.0) -> nn.Module:
    """Re-initialise ``model`` in place for its ``masks`` with a sparsity-aware scale; return it.

    method: one of :data:`SPARSE_INITS`.

    * ``"unit"``: every output neuron ``i`` of a masked layer (a Linear row, a Conv output
      channel) gets ``w_ij ~ N(0, gain**2 / n_i)`` on its unmasked entries, ``n_i`` =
      :func:`masked_fan_in` (for a Conv, the kept entries of its ``c_in * k * k`` filter). A neuron
      with no incoming weight gets zeros.
    * ``"layer"``: ``w ~ N(0, gain**2 / (fan_in * density))`` on the unmasked entries, i.e. the
      dense Kaiming normal (``fan_in`` mode) divided by ``sqrt(density)``, ``density`` the layer's
      kept fraction.

    Masked entries are exactly 0 afterwards (``+0.0``). Prunable layers the masks leave out are
    given the dense Kaiming normal (``fan_in`` mode, the same gains) so that they form a consistent
    baseline; with an all-True mask both methods reduce to exactly that draw. Every Conv/Linear
    bias is set to 0. Normalisation layers and any other parameter or buffer are left untouched.

    seed: the draw depends only on it (a private ``torch.Generator``; the global RNG is neither
        used nor advanced). Numbers are drawn on the CPU in float32, layer by layer in
        :func:`~sparsegap.pruning.prunable_parameters` order, and copied to each weight's device
        and dtype, so the result does not depend on the device either; ``"unit"`` and ``"layer"``
        draw the same standard normals and differ only in their scale.
    nonlinearity: the activation after the hidden layers, one of :data:`NONLINEARITIES`; it sets
        ``gain`` (``torch.nn.init.calculate_gain``: sqrt(2) for relu, 1 for linear).
    output_gain: the gain of the model's output layer, its last ``nn.Linear``
        (:func:`sparsegap.models.output_layer_name`), masked or not: no ReLU follows it, so the
        default 1.0 gives logits of unit variance. None gives it the nonlinearity's gain as well
        (what ``build_model(init="kaiming")`` does). Ignored for a model without ``nn.Linear``.

    Raises ValueError/TypeError naming the offending argument for an unknown ``method``, a bad
    ``seed``, ``nonlinearity`` or ``output_gain``, and masks that do not match the model's
    Conv/Linear weights (names, shapes, bool dtype, at least one kept weight per layer).
    """
    method = _check_method(method)
    seed = torch_seed("seed", seed)
    gain = _check_nonlinearity(nonlinearity)
    output_gain = _check_output_gain(output_gain)
    _check_sparse_masks(model, masks)
    output_weight = _output_layer_weight(model)

    generator = torch.Generator().manual_seed(seed)
    for name, weight in prunable_parameters(model).items():
        layer_gain = output_gain if (name == output_weight and output_gain is not None) else gain
        z = torch.randn(weight.shape, generator=generator, dtype=torch.float32)
        fan_in = weight[0].numel()  # in_features, or c_in/groups * prod(kernel): torch's fan_in
        mask = masks.get(name)
        if mask is None:
            new = z * (layer_gain / math.sqrt(fan_in))
        else:
            mask = mask.detach().to("cpu")
            if method == "unit":
                n = masked_fan_in(mask).to(torch.float32).clamp_min(1.0)  # 0-fan-in rows are all masked
                scale = (layer_gain / n.sqrt()).view(-1, *([1] * (weight.dim() - 1)))
            else:
                density = mask.sum().item() / mask.numel()
                scale = torch.tensor(layer_gain / math.sqrt(fan_in * density))
            new = torch.where(mask, z * scale, torch.zeros((), dtype=torch.float32))
        weight.copy_(new.to(device=weight.device, dtype=weight.dtype))

    for module in model.modules():
        if isinstance(module, PRUNABLE_TYPES) and module.bias is not None:
            module.bias.zero_()
    return model
