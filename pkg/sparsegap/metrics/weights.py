"""Networks as points in weight space: state dicts, the same-architecture check and the distance between a
network and its initialisation (or any other network of its architecture)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from sparsegap.pruning import PRUNABLE_TYPES

__all__ = ["as_state_dict", "check_same_architecture", "distance_from_init"]

StateDict = Mapping[str, torch.Tensor]


def as_state_dict(obj: nn.Module | StateDict, name: str) -> dict[str, torch.Tensor]:
    """The state dict of a module, or a mapping checked to be one (str -> tensor)."""
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, str) or not isinstance(value, torch.Tensor):
                raise TypeError(f"{name} must be an nn.Module or a state dict (str -> torch.Tensor), got an "
                                f"entry {key!r} -> {type(value).__name__}")
        return dict(obj)
    raise TypeError(f"{name} must be an nn.Module or a state dict (str -> torch.Tensor), got {type(obj).__name__}")


def check_same_architecture(a: nn.Module | StateDict, b: nn.Module | StateDict) -> None:
    """Raise ValueError unless ``a`` and ``b`` have the same parameter and buffer names and shapes.

    ``a`` and ``b`` are modules (their ``state_dict()`` is compared: parameters and persistent
    buffers) or state dicts. The error names the first key, in ``a``'s order and then ``b``'s, that
    is missing from one of them or has different shapes, with both shapes. Dtypes are not compared.
    """
    sa, sb = as_state_dict(a, "a"), as_state_dict(b, "b")
    for key in [*sa, *(k for k in sb if k not in sa)]:
        shape_a = tuple(sa[key].shape) if key in sa else "absent"
        shape_b = tuple(sb[key].shape) if key in sb else "absent"
        if shape_a != shape_b:
            raise ValueError(f"interpolation between models of different architectures: the first differing "
                             f"key is {key!r}, with shape {shape_a} in a and {shape_b} in b (a has "
                             f"{len(sa)} parameters and buffers, b has {len(sb)})")


def _layer_keys(objects: Sequence[nn.Module | StateDict], state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Layer (module) name -> its weight and bias keys, for the Conv and Linear layers."""
    module = next((o for o in objects if isinstance(o, nn.Module)), None)
    layers: dict[str, list[str]] = {}
    if module is not None:
        for name, m in module.named_modules():
            if isinstance(m, PRUNABLE_TYPES):
                prefix = f"{name}." if name else ""
                layers[name] = [prefix + p for p in ("weight", "bias") if getattr(m, p, None) is not None]
        return layers
    # State dicts only: a layer is a "<name>.weight" of 2 or more dimensions (Linear, Conv), with its bias.
    for key, value in state.items():
        if (key == "weight" or key.endswith(".weight")) and value.ndim >= 2:
            name = key[: -len("weight")].rstrip(".")
            bias = f"{name}.bias" if name else "bias"
            layers[name] = [key] + ([bias] if bias in state else [])
    return layers


def distance_from_init(model_or_state: nn.Module | StateDict,
                       init_model_or_state: nn.Module | StateDict) -> dict[str, float | dict[str, float]]:
    """Euclidean distance between a network and its initialisation, over its Conv and Linear layers.

    The distance covers the weights *and biases* of every Conv and Linear layer, as He et al.
    (2022) measure "all trainable parameters from convolutional and linear layers"; BatchNorm
    parameters and buffers are left out. Pruned weights count like any other (a weight pruned to
    0 is at distance ``|w_0|`` from its initial value). Computed in float64.

    Which entries are Conv/Linear is read off the modules when either argument is an
    ``nn.Module``; when both are state dicts, a layer is a ``<name>.weight`` of two or more
    dimensions, together with its ``<name>.bias`` if present.

    Returns
    -------
    dict
        ``"total"``: ``||θ - θ_0||`` over those parameters, equal to
        ``sqrt(sum(d**2 for d in per_layer.values()))``; ``"per_layer"``: module name (e.g.
        ``"fc1"``, ``"layer1.0.conv1"``) -> distance over that layer's weight and bias, in model order.
    """
    s, s0 = as_state_dict(model_or_state, "model_or_state"), as_state_dict(init_model_or_state, "init_model_or_state")
    check_same_architecture(s, s0)
    layers = _layer_keys((model_or_state, init_model_or_state), s)
    if not layers:
        raise ValueError("model_or_state has no Conv or Linear layer to measure a distance over")
    per_layer, total_sq = {}, 0.0
    for name, keys in layers.items():
        sq = sum(float((s[k].detach().double().cpu() - s0[k].detach().double().cpu()).pow(2).sum()) for k in keys)
        per_layer[name] = math.sqrt(sq)
        total_sq += sq
    return {"total": math.sqrt(total_sq), "per_layer": per_layer}
