"""Mask updaters for sparse training: gradual magnitude pruning, SET and RigL, as training callbacks.

Everything here plugs into :func:`sparsegap.train.train` through its callback hooks (see
:mod:`sparsegap.train`) and follows the conventions of :mod:`sparsegap.pruning`: masks are a
``dict`` parameter name -> ``BoolTensor`` (``True`` = kept), and only Conv/Linear weights are masked.

* :func:`gradual_sparsity` and :class:`GradualPruning`: the gradual magnitude pruning of Zhu & Gupta
  (2018), which raises the sparsity on a cubic schedule during training (Evci et al.'s "pruned
  solution").
* :func:`uniform_densities`, :func:`erk_densities`, :func:`random_masks` and
  :func:`masks_for_densities`: the random sparse masks that dynamic sparse training starts from,
  with the layer densities uniform or Erdős–Rényi-Kernel (Evci et al. 2020).
* :func:`cosine_drop_fraction` and :class:`DynamicSparse`: SET (Mocanu et al. 2018; random regrowth)
  and RigL (Evci et al. 2020; regrowth by the dense gradient's magnitude).

The training loop zeroes the gradient of masked weights before every SGD step, which keeps a
weight that is 0 with a momentum buffer entry of 0 exactly at 0 (weight decay of 0 is 0). A mask
updater that prunes a weight therefore zeroes the weight *and* its momentum buffer entry: the
stale momentum of a just-pruned weight is not 0, and would move it away from 0 at the next step
although its gradient is masked (the known pitfall of gradual pruning with momentum). Regrown
weights start at exactly 0 with a zero momentum entry, as in RigL.

Every updater here is resume-safe: what it does at a step depends only on ``state.step``, the
current masks, the weights and (RigL) the minibatch gradient of that step, all of which a run
resumed from an epoch checkpoint restores (or recomputes) exactly.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .pruning import (PRUNABLE_TYPES, Masks, apply_masks, check_sparsity, global_masks_from_scores,
                      magnitude_scores, prunable_parameters)
from .seeds import seed_stream

__all__ = ["gradual_sparsity", "GradualPruning", "uniform_densities", "erk_densities", "random_masks",
           "masks_for_densities", "DISTRIBUTIONS", "cosine_drop_fraction", "DynamicSparse", "DST_METHODS"]

DISTRIBUTIONS = ("uniform", "erk")
DST_METHODS = ("set", "rigl")


# ---------------------------------------------------------------- validation helpers

def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: object, low: int) -> int:
    if not _is_int(value) or value < low:
        what = "a positive int" if low == 1 else f"an int >= {low}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_density(density: object, name: str = "density") -> float:
    if (isinstance(density, bool) or not isinstance(density, (int, float)) or math.isnan(density)
            or not 0.0 < density <= 1.0):
        raise ValueError(f"{name} must be a number in (0, 1] (the fraction of prunable weights kept), "
                         f"got {density!r}")
    return float(density)


def _prunable(model: nn.Module, exclude_output: bool, what: str) -> dict[str, nn.Parameter]:
    """:func:`prunable_parameters`, with an error that names the operation when there is none."""
    if not any(isinstance(m, PRUNABLE_TYPES) for m in model.modules()):
        raise ValueError(f"{what} on a model with no prunable layer: {type(model).__name__} has no Conv or "
                         f"Linear module, so there are no weights to give densities to")
    try:
        return prunable_parameters(model, exclude_output=exclude_output)
    except ValueError as e:
        raise ValueError(f"{what} on a model with no prunable layer: with exclude_output={exclude_output} "
                         f"none is left ({e})") from e


@torch.no_grad()
def _zero_weights_and_momentum(param: nn.Parameter, where: torch.Tensor,
                               optimizer: torch.optim.Optimizer | None, *, momentum: bool = True) -> int:
    """Set ``param[where]`` to 0 and (if ``momentum``) its momentum buffer entries too.

    Returns the number of buffer entries that were non-zero before: the weights that the stale
    momentum would have moved at the next step.
    """
    where = where.to(param.device)
    param.masked_fill_(where, 0.0)
    buf = optimizer.state.get(param, {}).get("momentum_buffer") if optimizer is not None else None
    if buf is None:
        return 0
    stale = int((buf[where] != 0).sum())
    if momentum:
        buf.masked_fill_(where, 0.0)
    return stale


# ---------------------------------------------------------------- gradual magnitude pruning

def gradual_sparsity(step: float, final: float, start: float, end: float) -> float:
    """The sparsity of Zhu & Gupta's (2018) gradual pruning at training step ``step``.

    ``s_t = final · (1 − (1 − p)³)`` with ``p = clip((step − start) / (end − start), 0, 1)``: 0 up to
    ``start``, then fast pruning that slows down towards ``end``, and exactly ``final`` from ``end`` on.

    final: the sparsity reached at ``end``, in [0, 1). start: the first step of the schedule, >= 0.
    end: its last step, > start.
    """
    final = check_sparsity(final, "final")
    step = _check_number("step", step)
    start = _check_number("start", start)
    end = _check_number("end", end)
    if start < 0:
        raise ValueError(f"start must be >= 0 (a training step), got {start!r}")
    if not end > start:
        raise ValueError(f"end={end!r} <= start={start!r}: a gradual schedule whose end precedes its start "
                         f"(or equals it); end must be > start")
    if step >= end:
        return final
    if step <= start:
        return 0.0
    p = (step - start) / (end - start)
    return final * (1.0 - (1.0 - p) ** 3)


class GradualPruning:
    """Gradual magnitude pruning (Zhu & Gupta 2018) as a training callback.

    From ``start_step`` to ``end_step``, every ``every`` steps (and at ``end_step``), the network is
    pruned by global magnitude to the sparsity :func:`gradual_sparsity` gives for that step, within
    the current mask (pruned weights never return). The newly pruned weights and their momentum
    buffer entries are zeroed; the training loop's gradient masking keeps them at 0 afterwards.

    Steps are counted as ``state.step`` in ``on_step_end``: the first optimizer step is step 1.
    The callback holds no state that matters: each update is a function of ``state.step`` and the
    current masks, so a run resumed from a checkpoint (with its masks) continues as if never stopped.

    final_sparsity: the sparsity at ``end_step``, in [0, 1) (of the weights the masks cover).
    start_step, end_step: the schedule's first and last step; 0 <= start_step < end_step.
    every: steps between two updates, >= 1.
    exclude_output: spare the classifier layer (it gets no mask).
    min_density: per-layer floor of the density (see :func:`sparsegap.pruning.global_masks_from_scores`).
    zero_momentum: zero the momentum buffer entries of the weights pruned at an update. Leave it
        True; False exists only to demonstrate the pitfall (the stale momentum revives the weights).
    """

    def __init__(self, final_sparsity: float, start_step: int, end_step: int, every: int, *,
                 exclude_output: bool = False, min_density: float = 0.0, zero_momentum: bool = True):
        self.final_sparsity = check_sparsity(final_sparsity, "final_sparsity")
        self.start_step = _check_int("start_step", start_step, 0)
        if not _is_int(end_step):
            raise ValueError(f"end_step must be an int > start_step={start_step}, got {end_step!r}")
        if end_step <= start_step:
            raise ValueError(f"end_step={end_step!r} <= start_step={start_step!r}: a gradual schedule whose end "
                             f"precedes its start (or equals it); end_step must be > start_step")
        self.end_step = int(end_step)
        self.every = _check_every(every)
        if not isinstance(exclude_output, bool):
            raise TypeError(f"exclude_output must be a bool, got {exclude_output!r}")
        self.exclude_output = exclude_output
        if (isinstance(min_density, bool) or not isinstance(min_density, (int, float))
                or not 0 <= min_density <= 1):
            raise ValueError(f"min_density must be a number in [0, 1] (a per-layer floor of the density), "
                             f"got {min_density!r}")
        self.min_density = float(min_density)
        self.zero_momentum = bool(zero_momentum)
        self.n_updates = 0
        self.last_update: dict | None = None

    def target(self, step: int) -> float:
        """The sparsity of the schedule at ``step``."""
        return gradual_sparsity(step, self.final_sparsity, self.start_step, self.end_step)

    def is_update_step(self, step: int) -> bool:
        return (self.start_step <= step <= self.end_step
                and ((step - self.start_step) % self.every == 0 or step == self.end_step))

    def on_train_begin(self, state) -> None:
        params = prunable_parameters(state.model, exclude_output=self.exclude_output)
        if state.masks is None:
            state.masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
        elif set(state.masks) != set(params):
            raise ValueError(f"GradualPruning(exclude_output={self.exclude_output}) prunes {sorted(params)}, "
                             f"but the run's masks cover {sorted(state.masks)}; use the same exclude_output "
                             f"as the masks were made with")
        total_steps = state.config.epochs * state.steps_per_epoch
        if self.end_step > total_steps:
            warnings.warn(f"GradualPruning: end_step={self.end_step} is after the last training step "
                          f"({total_steps}), so the final sparsity {self.final_sparsity} is never reached",
                          stacklevel=2)

    @torch.no_grad()
    def on_step_end(self, state) -> None:
        step = state.step
        if state.masks is None or not self.is_update_step(step):
            return
        s = self.target(step)
        total = sum(m.numel() for m in state.masks.values())
        kept = sum(int(m.sum()) for m in state.masks.values())
        if int(round((1.0 - s) * total)) >= kept:   # the schedule asks for no more than is pruned already
            return
        current = dict(state.masks)
        scores = magnitude_scores(state.model, exclude_output=self.exclude_output)
        new = global_masks_from_scores(scores, s, within=current, min_density=self.min_density)
        params = dict(state.model.named_parameters())
        pruned, stale = 0, 0
        for name, m in new.items():
            newly = current[name] & ~m
            pruned += int(newly.sum())
            stale += _zero_weights_and_momentum(params[name], newly, state.optimizer,
                                                momentum=self.zero_momentum)
            state.masks[name] = m
        apply_masks(state.model, state.masks)
        self.n_updates += 1
        self.last_update = {"step": step, "sparsity": s, "pruned": pruned, "stale_momentum": stale}


# ---------------------------------------------------------------- layer densities and random masks

def uniform_densities(model: nn.Module, density: float, *, exclude_output: bool = False) -> dict[str, float]:
    """The same density for every prunable layer."""
    density = _check_density(density)
    return {n: density for n in _prunable(model, exclude_output, "uniform densities")}


def erk_densities(model: nn.Module, density: float, *, exclude_output: bool = False,
                  power_scale: float = 1.0) -> dict[str, float]:
    """Erdős–Rényi-Kernel layer densities (Evci et al. 2020, RigL) with the global density ``density``.

    A layer's density is proportional to ``(sum of its dims / product of its dims) ** power_scale``:
    ``(n_in + n_out) / (n_in · n_out)`` for a Linear layer, ``(c_in + c_out + k_h + k_w) /
    (c_in · c_out · k_h · k_w)`` for a Conv2d; small layers get denser. The factor is chosen so that
    ``Σ d_l · n_l = density · Σ n_l``. A layer whose density would exceed 1 is made dense (1.0) and
    the rest of the budget is spread over the others by the same rule, until no density exceeds 1.

    density: global fraction of prunable weights kept, in (0, 1]. power_scale: the exponent of the
    ERK ratio (1: ERK; 0: uniform), a finite number >= 0.
    """
    density = _check_density(density)
    if (isinstance(power_scale, bool) or not isinstance(power_scale, (int, float))
            or not math.isfinite(power_scale) or power_scale < 0):
        raise ValueError(f"power_scale must be a finite number >= 0 (the exponent of the ERK ratio), "
                         f"got {power_scale!r}")
    params = _prunable(model, exclude_output, "ERK")
    sizes = {n: p.numel() for n, p in params.items()}
    if density == 1.0:
        return {n: 1.0 for n in params}
    raw = {n: (sum(p.shape) / p.numel()) ** power_scale for n, p in params.items()}
    budget = density * sum(sizes.values())
    dense: set[str] = set()
    while True:
        free = [n for n in params if n not in dense]
        remaining = budget - sum(sizes[n] for n in dense)
        # remaining > 0 here: the dense layers alone never exceed the budget (see the loop's end)
        eps = remaining / sum(raw[n] * sizes[n] for n in free)
        over = [n for n in free if eps * raw[n] > 1.0]
        if not over:
            break
        # Making a layer that would exceed 1 dense only raises eps for the others, so every layer
        # over 1 now is over 1 at the fixed point too: cap them all at once.
        dense.update(over)
        if len(dense) == len(params):   # can only happen through rounding at density ~1
            return {n: 1.0 for n in params}
    return {n: 1.0 if n in dense else min(1.0, eps * raw[n]) for n in params}


def random_masks(model: nn.Module, densities: dict[str, float], *, seed: int) -> Masks:
    """A random mask per layer: layer ``name`` keeps exactly ``max(1, round(d · n))`` of its ``n``
    weights, chosen uniformly at random by a ``torch.Generator`` seeded by ``seed`` (layers drawn in
    the order of ``densities``).

    densities: parameter name -> density in (0, 1], e.g. from :func:`uniform_densities` or
    :func:`erk_densities`. The names must be Conv/Linear weights of ``model``.
    """
    if not isinstance(densities, dict) or not densities:
        raise ValueError(f"densities must be a non-empty dict parameter name -> density in (0, 1], "
                         f"got {densities!r}")
    if not _is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}")
    params = dict(model.named_parameters())
    prunable = prunable_parameters(model) if any(isinstance(m, PRUNABLE_TYPES) for m in model.modules()) else {}
    g = torch.Generator().manual_seed(int(seed))
    masks: Masks = {}
    for name, d in densities.items():
        if name not in prunable:
            raise ValueError(f"densities has parameter name {name!r}, which is not a prunable weight of the "
                             f"model; prunable names are {list(prunable)}")
        d = _check_density(d, f"densities[{name!r}]")
        p = params[name]
        n = p.numel()
        k = min(n, max(1, int(round(d * n))))
        flat = torch.zeros(n, dtype=torch.bool)
        flat[torch.randperm(n, generator=g)[:k]] = True
        masks[name] = flat.view(p.shape).to(p.device)
    return masks


def masks_for_densities(model: nn.Module, density: float, *, distribution: str = "uniform", seed: int = 0,
                        exclude_output: bool = False, power_scale: float = 1.0) -> Masks:
    """Random masks of global density ``density`` with the layer densities of ``distribution``
    ("uniform" or "erk"): the initial masks of sparse-from-scratch and dynamic sparse training."""
    if distribution == "uniform":
        densities = uniform_densities(model, density, exclude_output=exclude_output)
    elif distribution == "erk":
        densities = erk_densities(model, density, exclude_output=exclude_output, power_scale=power_scale)
    else:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS} (the layer densities), got {distribution!r}")
    return random_masks(model, densities, seed=seed)


# ---------------------------------------------------------------- dynamic sparse training

def cosine_drop_fraction(step: float, initial: float, end_step: float) -> float:
    """The drop fraction of RigL at ``step``: ``initial/2 · (1 + cos(π · step / end_step))`` up to
    ``end_step`` (``initial`` at step 0, 0 at ``end_step``), and 0 after it.

    initial: in [0, 1]. end_step: > 0. step: >= 0.
    """
    step = _check_number("step", step)
    initial = _check_number("initial", initial)
    end_step = _check_number("end_step", end_step)
    if not 0.0 <= initial <= 1.0:
        raise ValueError(f"initial must be a drop fraction in [0, 1], got {initial!r}")
    if end_step <= 0:
        raise ValueError(f"end_step must be > 0 (the step where mask updates end), got {end_step!r}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step!r}")
    if step > end_step:
        return 0.0
    return initial / 2.0 * (1.0 + math.cos(math.pi * step / end_step))


class DynamicSparse:
    """Dynamic sparse training, SET (Mocanu et al. 2018) or RigL (Evci et al. 2020), as a callback.

    The run starts from sparse masks (pass ``masks=`` to :func:`sparsegap.train.train`, e.g. from
    :func:`masks_for_densities`). Every ``every`` steps up to ``end_step`` (``state.step`` in
    ``on_step_end``, the first optimizer step being step 1), each masked layer:

    1. drops ``k = round(f · n_active)`` of its active weights, those of smallest ``|w|``, with
       ``f = cosine_drop_fraction(step, drop_fraction, end_step)`` and ``k`` at most the number of
       its weights inactive before the update;
    2. grows ``k`` weights among those inactive *before* the update (the just-dropped ones are not
       candidates): uniformly at random (SET; a generator seeded by ``seed`` and the step) or the
       ``k`` with the largest ``|grad|`` of the dense minibatch gradient of this step (RigL; taken
       in ``on_after_backward``, so no second backward pass; ties broken by position).

    Dropped and grown weights are set to exactly 0 and their momentum buffer entries zeroed. Each
    layer keeps its number of active weights. The mask tensors of ``state.masks`` are replaced (same
    dict, new tensors). ``last_update`` holds the step, the fraction and the per-layer ``k`` of the
    last update; ``n_updates`` counts them.

    method: "set" or "rigl". drop_fraction: the fraction at step 0, in (0, 1). every: steps between
    updates, >= 1. end_step: the last step with an update, >= 1. seed: SET's random regrowth.
    """

    def __init__(self, method: str, drop_fraction: float, every: int, end_step: int, *, seed: int = 0):
        if not isinstance(method, str) or method.lower() not in DST_METHODS:
            raise ValueError(f"method must be one of {DST_METHODS} (dynamic sparse training), got {method!r}")
        self.method = method.lower()
        if (isinstance(drop_fraction, bool) or not isinstance(drop_fraction, (int, float))
                or math.isnan(drop_fraction) or not 0.0 < drop_fraction < 1.0):
            raise ValueError(f"drop_fraction must be a number in (0, 1) (the fraction of each layer's active "
                             f"weights dropped and regrown at the first update), got {drop_fraction!r}")
        self.drop_fraction = float(drop_fraction)
        self.every = _check_every(every)
        self.end_step = _check_int("end_step", end_step, 1)
        if not _is_int(seed):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = int(seed)
        self.n_updates = 0
        self.last_update: dict | None = None
        self._grads: dict[str, torch.Tensor] | None = None
        self._grad_step: int | None = None

    def is_update_step(self, step: int) -> bool:
        return step >= 1 and step % self.every == 0 and step <= self.end_step

    def on_train_begin(self, state) -> None:
        if not state.masks:
            raise ValueError(f"DynamicSparse({self.method!r}) needs the run's initial sparse masks: pass "
                             f"masks=masks_for_densities(model, density, ...) to train(); got masks={state.masks!r}")

    @torch.no_grad()
    def on_after_backward(self, state) -> None:
        if self.method != "rigl" or not self.is_update_step(state.step + 1) or not state.masks:
            return
        params = dict(state.model.named_parameters())
        self._grads = {n: (params[n].grad.detach().abs().clone() if params[n].grad is not None
                           else torch.zeros_like(params[n])) for n in state.masks}
        self._grad_step = state.step + 1

    @torch.no_grad()
    def on_step_end(self, state) -> None:
        step = state.step
        if not state.masks or not self.is_update_step(step):
            return
        if self.method == "rigl" and self._grad_step != step:
            raise RuntimeError(f"RigL update at step {step} without the dense gradient of that step "
                               f"(on_after_backward stored the one of step {self._grad_step}); "
                               f"the callback must receive both hooks of the training loop")
        f = cosine_drop_fraction(step, self.drop_fraction, self.end_step)
        gen = torch.Generator().manual_seed(seed_stream(self.seed, step)) if self.method == "set" else None
        params = dict(state.model.named_parameters())
        changed: dict[str, int] = {}
        for name in list(state.masks):
            m = state.masks[name]
            p = params[name]
            flat_m = m.reshape(-1).cpu()
            n_active = int(flat_m.sum())
            n_inactive = flat_m.numel() - n_active
            k = min(int(round(f * n_active)), n_inactive)
            changed[name] = k
            if k <= 0:
                continue
            # drop: the k active weights of smallest |w| (ties by position: a stable sort)
            w = p.detach().abs().reshape(-1).float().cpu()
            w = w.masked_fill(~flat_m, math.inf)
            drop = _first_k(w, k, largest=False)
            # grow: among the weights inactive before this update
            candidates = (~flat_m).nonzero().reshape(-1)
            if self.method == "set":
                grow = candidates[torch.randperm(len(candidates), generator=gen)[:k]]
            else:
                g = self._grads[name].reshape(-1).float().cpu()[candidates]
                grow = candidates[_first_k(g, k, largest=True)]
            new = flat_m.clone()
            new[drop] = False
            new[grow] = True
            touched = torch.zeros_like(flat_m)
            touched[drop] = True
            touched[grow] = True
            _zero_weights_and_momentum(p, touched.view(p.shape), state.optimizer)
            state.masks[name] = new.view(m.shape).to(m.device)
        apply_masks(state.model, state.masks)
        self._grads, self._grad_step = None, None
        self.n_updates += 1
        self.last_update = {"step": step, "fraction": f, "changed": changed}


def _check_every(every) -> int:
    if not _is_int(every) or every < 1:
        raise ValueError(f"every must be a positive int (the steps between two mask updates; an update "
                         f"interval of 0 is not allowed), got {every!r}")
    return int(every)


def _first_k(v: torch.Tensor, k: int, *, largest: bool) -> torch.Tensor:
    """The indices of the k smallest (or largest) entries of the 1-D ``v``, ties at the threshold broken
    by position: the first k of a stable sort, as a set, from one ``topk`` instead of a full sort."""
    thr = torch.topk(v, k, largest=largest, sorted=False).values
    thr = thr.max() if not largest else thr.min()
    beyond = ((v < thr) if not largest else (v > thr)).nonzero().reshape(-1)
    ties = (v == thr).nonzero().reshape(-1)[: k - len(beyond)]
    return torch.cat([beyond, ties])
