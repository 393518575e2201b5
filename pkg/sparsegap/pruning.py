"""Masks and pruning.

A mask set is a ``dict[str, torch.BoolTensor]`` keyed by parameter name (as in
``model.named_parameters()``); ``True`` marks a kept weight. Only the weights of Conv and
Linear layers are prunable: biases and normalisation layers are never pruned.

Masked weights stay exactly zero through SGD with momentum and weight decay because the
training loop masks the *gradient* before the optimizer step (see :func:`mask_gradients`):
a weight that is 0 with gradient 0 gets weight decay ``wd * 0 = 0`` and a momentum buffer
that stays 0, so its update is exactly 0. :func:`apply_masks` after the step is a cheap
guard for optimizers or updaters that do not have this property.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .checks import torch_seed

Masks = dict[str, torch.Tensor]

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _output_layer_prefix(model: nn.Module) -> str:
    """Name of the last Linear module: the classifier whose weights are optionally spared."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ValueError("exclude_output=True but the model has no nn.Linear output layer")
    return last


def prunable_parameters(model: nn.Module, *, exclude_output: bool = False) -> dict[str, nn.Parameter]:
    """The weights that pruning may touch: ``weight`` of every Conv/Linear module, in model order."""
    check_exclude_output(exclude_output)
    skip = _output_layer_prefix(model) if exclude_output else None
    params = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) and mod_name != skip and module.weight is not None:
            params[f"{mod_name}.weight" if mod_name else "weight"] = module.weight
    if not params:
        raise ValueError("the model has no prunable (Conv or Linear) weights")
    return params


def check_exclude_output(exclude_output) -> bool:
    # A truthy string ("no", "False") would spare the output layer silently: only a bool says what it means.
    if not isinstance(exclude_output, bool):
        raise TypeError(f"exclude_output must be True or False (spare the output layer from pruning), "
                        f"got {exclude_output!r} of type {type(exclude_output).__name__}")
    return exclude_output


def check_sparsity(sparsity: float, name: str = "sparsity") -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1), got {sparsity!r} of type {type(sparsity).__name__}")
    if not (0.0 <= float(sparsity) < 1.0) or math.isnan(sparsity):
        raise ValueError(f"{name} must be in [0, 1) (the fraction of prunable weights removed), got {sparsity!r}")
    return float(sparsity)


def magnitude_scores(model: nn.Module, *, exclude_output: bool = False) -> dict[str, torch.Tensor]:
    """|w| for every prunable weight: the score of one-shot magnitude pruning (Zhu & Gupta)."""
    return {n: p.detach().abs() for n, p in prunable_parameters(model, exclude_output=exclude_output).items()}


HEURISTICS = ("magnitude", "gradient", "random")


def check_heuristic(heuristic, name: str = "heuristic") -> str:
    if not isinstance(heuristic, str) or heuristic not in HEURISTICS:
        raise ValueError(f"{name} must be one of {HEURISTICS} (the pruning heuristics), got {heuristic!r}")
    return heuristic


def gradient_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, exclude_output: bool = False,
                    masks: Masks | None = None) -> dict[str, torch.Tensor]:
    """|g ⊙ w| for every prunable weight, g the gradient of the mean cross-entropy on the batch (x, y).

    The first-order estimate of how much the loss changes when a weight is removed (Blalock et al.
    2020's "gradient" heuristic, as in the sparse double descent paper). The gradient is taken in
    training mode (as during training; BatchNorm uses the batch's statistics) on a copy of the
    model, whose own weights, buffers and gradients are left as they were. ``masks`` (of an earlier
    round) are applied to the copy first, so pruned weights score 0.
    """
    import copy

    import torch.nn.functional as F
    check_exclude_output(exclude_output)
    _check_batch(x, y)
    net = copy.deepcopy(model)
    apply_masks(net, masks)
    net.train()
    params = prunable_parameters(net, exclude_output=exclude_output)
    for p in net.parameters():
        p.grad = None
    device = next(net.parameters()).device
    logits = net(x.to(device))
    if logits.ndim != 2 or int(y.max()) >= logits.shape[1]:
        raise ValueError(f"y must hold class indices in [0, {logits.shape[-1]}) (the model's outputs), got "
                         f"{int(y.max())}; the model returned logits of shape {tuple(logits.shape)}")
    F.cross_entropy(logits, y.to(device)).backward()
    return {n: (p.grad.detach() * p.detach()).abs() if p.grad is not None else torch.zeros_like(p)
            for n, p in params.items()}


def random_scores(model: nn.Module, seed: int, *, exclude_output: bool = False) -> dict[str, torch.Tensor]:
    """Independent U(0, 1) scores for every prunable weight, from a generator seeded by ``seed``
    (random pruning: the baseline any heuristic should beat)."""
    check_exclude_output(exclude_output)
    g = torch.Generator().manual_seed(torch_seed("seed", seed))   # not int(seed): 1.7 would pass as 1
    return {n: torch.rand(p.shape, generator=g).to(p.device)
            for n, p in prunable_parameters(model, exclude_output=exclude_output).items()}


def global_masks_from_scores(scores: dict[str, torch.Tensor], sparsity: float, *,
                             min_density: float = 0.0, within: Masks | None = None) -> Masks:
    """Keep the globally largest scores so that exactly ``round((1-s)·n)`` weights survive.

    Ties at the threshold are broken by position (``topk`` on the concatenated scores), so the
    achieved sparsity equals the requested one to within one weight whatever the score values.

    ``min_density`` is a per-layer floor: every layer first keeps its ``ceil(min_density·n_l)``
    best weights, and the rest of the budget goes to the globally best remaining scores. Narrow
    layers (the 6-unit layers of the 12-bit MLP) need it, or global pruning can cut them off.

    Scores must be finite (``topk`` would rank NaN highest and keep it). A mask that leaves a
    layer, or the whole network, with no weight is an error naming the sparsity and the layers:
    such a network cannot carry its input to its output and would train to chance.
    Global magnitude pruning of a freshly initialised LeNet-300-100 does that to ``fc1`` from
    about 96% sparsity on (its init scale is the smallest); a trained network or ``min_density``
    keeps it connected.

    ``within``: the masks of an earlier pruning round (iterative pruning). Only weights they keep
    can be kept again, so the new masks are nested in them; ``sparsity`` is still the fraction of
    *all* the weights removed, and must be at least ``within``'s.
    """
    sparsity = check_sparsity(sparsity)
    _check_scores(scores)
    if within is not None:
        scores = _restrict(scores, within, sparsity)
    if (isinstance(min_density, bool) or not isinstance(min_density, (int, float))
            or not 0 <= min_density <= 1):  # NaN fails the comparison too
        raise ValueError(f"min_density must be a number in [0, 1], got {min_density!r}")
    flat = torch.cat([s.reshape(-1).float().cpu() for s in scores.values()])
    n_keep = int(round((1.0 - sparsity) * flat.numel()))
    if n_keep == 0:
        raise ValueError(f"sparsity={sparsity} keeps round((1 - sparsity) * {flat.numel()}) = 0 of the "
                         f"{flat.numel()} prunable weights: the network would have no weight at all. Use a "
                         f"sparsity of at most {1 - 1 / flat.numel():.6g} (one weight kept) for this network")
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    if min_density > 0:
        offset = 0
        for s in scores.values():
            n_floor = min(s.numel(), math.ceil(min_density * s.numel()))
            keep[offset + torch.topk(s.reshape(-1).float().cpu(), n_floor, sorted=False).indices] = True
            offset += s.numel()
        forced = int(keep.sum())
        if forced > n_keep:
            raise ValueError(f"min_density={min_density} keeps {forced} weights, more than the {n_keep} "
                             f"that sparsity={sparsity} allows; lower min_density or the sparsity")
        flat = flat.masked_fill(keep, -math.inf)
    n_rest = n_keep - int(keep.sum())
    if n_rest > 0:
        keep[torch.topk(flat, n_rest, sorted=False).indices] = True
    masks, offset = {}, 0
    for name, s in scores.items():
        masks[name] = keep[offset: offset + s.numel()].view_as(s).to(s.device)
        offset += s.numel()
    empty = [name for name, m in masks.items() if not m.any()]
    if empty:
        sizes = ", ".join(f"{n!r} ({scores[n].numel()} weights)" for n in empty)
        raise ValueError(f"sparsity={sparsity} leaves layer(s) {sizes} with no weight: global pruning keeps "
                         f"{n_keep} of {flat.numel()} weights, all in other layers, and the network would be "
                         f"cut in two. Lower the sparsity, or set min_density > 0 (a per-layer floor)")
    return masks


def _restrict(scores: dict[str, torch.Tensor], within: Masks, sparsity: float) -> dict[str, torch.Tensor]:
    """Scores with every weight that ``within`` prunes ranked below every other one (-1 below the
    non-negative scores of the heuristics), after checking that the two describe the same weights."""
    if not isinstance(within, dict) or set(within) != set(scores):
        raise ValueError(f"within must be masks over the same parameters as the scores ({sorted(scores)}), "
                         f"got {sorted(within) if isinstance(within, dict) else type(within).__name__}")
    kept = sum(int(m.sum()) for m in within.values())
    total = sum(s.numel() for s in scores.values())
    if round((1.0 - sparsity) * total) > kept:
        raise ValueError(f"sparsity={sparsity} keeps {round((1.0 - sparsity) * total)} weights, more than the "
                         f"{kept} that the earlier round (within=...) kept: iterative pruning only removes")
    out = {}
    for name, s in scores.items():
        m = within[name]
        if m.shape != s.shape or m.dtype != torch.bool:
            raise ValueError(f"within[{name!r}] must be a bool tensor of shape {tuple(s.shape)}, "
                             f"got {m.dtype} of shape {tuple(m.shape)}")
        if (s < 0).any():
            raise ValueError(f"scores[{name!r}] has negative values; heuristics' scores are >= 0 "
                             f"(|w|, |g*w|, U(0, 1)), which within=... relies on")
        out[name] = torch.where(m.to(s.device), s.float(), torch.full_like(s, -1.0, dtype=torch.float))
    return out


def _check_scores(scores: dict[str, torch.Tensor]) -> None:
    if not isinstance(scores, dict):
        raise TypeError(f"scores must be a dict parameter name -> tensor, got {type(scores).__name__}")
    if not scores:
        raise ValueError("scores is empty: nothing to prune")
    for name, s in scores.items():
        if not isinstance(s, torch.Tensor):
            raise TypeError(f"scores[{name!r}] must be a torch.Tensor, got {type(s).__name__}")
        if s.numel() == 0:
            raise ValueError(f"scores[{name!r}] is empty (shape {tuple(s.shape)}): a layer needs at least one weight")
        bad = int((~torch.isfinite(s)).sum()) if s.is_floating_point() else 0
        if bad:
            raise ValueError(f"scores[{name!r}] holds {bad} NaN or infinite value(s) among {s.numel()}; scores "
                             f"must be finite (magnitude scores are |w|: a non-finite weight means the "
                             f"network diverged)")


def global_magnitude_masks(model: nn.Module, sparsity: float, *, exclude_output: bool = False,
                           min_density: float = 0.0) -> Masks:
    """One-shot global magnitude pruning, as the paper uses to get its mask from Sol-D."""
    return global_masks_from_scores(magnitude_scores(model, exclude_output=exclude_output), sparsity,
                                    min_density=min_density)


def check_masks(model: nn.Module, masks: Masks | None, *, measurement: bool = False) -> Masks:
    """Check a mask set against ``model`` and return it.

    Masks must be a dict that names parameters of the model, each mask a tensor of its parameter's
    shape, boolean. Training and sparse initialisation (the default) also need every masked layer to
    keep a weight: an empty layer cuts the network. A measurement (``measurement=True``) is defined on
    any mask set, so it also takes None (no masks; ``{}`` is returned), 0/1 masks of any dtype and a
    layer that keeps nothing.
    """
    if masks is None and measurement:
        return {}
    _check_mask_set(model, dict(model.named_parameters()), masks, binary=measurement)
    for name, m in masks.items():
        if not measurement and not m.any():
            raise ValueError(f"masks[{name!r}] keeps no weight of its {m.numel()}: a layer with no weight "
                             f"cuts the network; every masked layer must keep at least one")
    return masks


def _check_mask_set(model: nn.Module, params: dict[str, nn.Parameter], masks, *, binary: bool) -> None:
    """A dict naming parameters of ``model``, each mask a tensor of its parameter's exact shape, bool
    (``binary``: or 0/1 of any dtype, for measurements)."""
    if not isinstance(masks, dict):
        allowed = "a dict parameter name -> BoolTensor" + (" or None" if binary else "")
        raise TypeError(f"masks must be {allowed}, got {type(masks).__name__}")
    unknown = [n for n in masks if n not in params]
    if unknown:
        try:
            known = f"its prunable weights are {list(prunable_parameters(model))}"
        except ValueError:
            known = f"its parameters are {list(params)[:10]}"
        raise ValueError(f"masks has unknown parameter names {unknown[:5]}, which the model does not have; {known}")
    bool_or_binary = "a bool tensor" + (" (or 0/1)" if binary else "")
    for name, m in masks.items():
        if not isinstance(m, torch.Tensor):
            raise TypeError(f"masks[{name!r}] must be {bool_or_binary}, got {type(m).__name__}")
        if m.shape != params[name].shape:
            raise ValueError(f"masks[{name!r}] must have shape {tuple(params[name].shape)} (its parameter's), "
                             f"got {tuple(m.shape)}")
        if m.dtype != torch.bool and not binary:
            raise TypeError(f"masks[{name!r}] must be a bool tensor, got {m.dtype}")
        if m.dtype != torch.bool and not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(f"masks[{name!r}] must be {bool_or_binary}, got other values")


def _check_batch(x, y) -> None:
    """x a non-empty batch, y one integer class index (>= 0) per row of x."""
    if not isinstance(x, torch.Tensor) or x.ndim == 0 or len(x) == 0:
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x must be a torch.Tensor holding at least one sample (one per row), got {got}")
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"y must have shape ({len(x)},) to match x (one class index per row of x), "
                         f"got {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer class indices, got dtype {y.dtype}")
    if int(y.min()) < 0:
        raise ValueError(f"y must hold class indices >= 0, got {int(y.min())}")


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks | None) -> None:
    """Zero the pruned weights in place.

    Each mask must be a bool tensor of exactly its parameter's shape: multiplying by a float mask
    would scale the weights (0.5 halves them), and a mask that merely broadcasts (a (64,) mask on a
    (300, 64) weight) would prune whole rows or columns, both silently. A layer may keep nothing here
    (this only zeroes weights); :func:`check_masks` is the check that training adds.
    """
    if masks is None or (isinstance(masks, dict) and not masks):
        return
    params = dict(model.named_parameters())
    _check_mask_set(model, params, masks, binary=False)
    for name, m in masks.items():
        params[name].mul_(m.to(params[name].device))


def mask_gradients(model: nn.Module, masks: Masks | None) -> None:
    """Zero the gradients of pruned weights (call between backward and optimizer.step)."""
    GradientMasker(model)(masks)


class GradientMasker:
    """:func:`mask_gradients` for the training loop, with the per-step overhead taken out.

    The (parameter, float mask) pairs are cached and re-derived only when the masks change:
    another dict, another tensor under a name, or a tensor modified in place (its version
    counter moves), so mask updaters may change masks in any of these ways.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._key = None
        self._grads_of: list[nn.Parameter] = []
        self._masks: list[torch.Tensor] = []

    def __call__(self, masks: Masks | None) -> None:
        if not masks:
            return
        key = masks_key(masks)
        if key != self._key:
            params = dict(self.model.named_parameters())
            self._grads_of = [params[n] for n in masks]
            self._masks = [m.to(dtype=params[n].dtype, device=params[n].device) for n, m in masks.items()]
            self._key = key
        pairs = [(p.grad, m) for p, m in zip(self._grads_of, self._masks) if p.grad is not None]
        if pairs:
            torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])


def masks_key(masks: Masks | None):
    """Changes whenever the masks do: another dict, another tensor under a name, or a tensor modified
    in place (its version counter moves). Mask updaters may change masks in any of these ways."""
    return None if not masks else (id(masks),) + tuple((id(m), m._version) for m in masks.values())


def same_masks(a, b) -> bool:
    """Whether ``a`` and ``b`` are the same masks: the same names, each the same tensor values and shape (None
    only equals None). ``a`` may be anything (what a file held): it is then not the same."""
    if a is None or b is None:
        return a is b
    return (isinstance(a, dict) and a.keys() == b.keys()
            and all(isinstance(a[k], torch.Tensor) and a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in b))


def masks_to(masks: Masks | None, device: torch.device | str) -> Masks | None:
    return None if masks is None else {n: m.to(device) for n, m in masks.items()}


def sparsity_of(masks: Masks) -> float:
    """Fraction of masked-out weights among the weights the masks cover."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / total if total else 0.0
