"""One recipe per run kind: how a run of that kind starts, what it is called, what changes its mask
while it trains, and what must be checked against its data and model before it does.

Adding a kind of run means adding its vocabulary to :mod:`sparsegap.config` (``RUN_KINDS``, and
``SPARSE_KINDS`` if it trains under a mask, which the store then keeps as ``masks.pt``; its allowed parents
in ``PARENTS``) and one :class:`Recipe` to :data:`RECIPES` here, in the style of open_lth's
registries of pruning strategies and branches. The store, the sweep and the trainers read the recipe;
none of them names a kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch
from torch import nn

from ..config import ModelConfig, RunConfig
from ..pruning import (Masks, apply_masks, global_masks_from_scores, gradient_scores, magnitude_scores,
                       prunable_parameters, random_scores, same_masks)
from .materials import build_model_for, load_data
from .store import Run, RunStore, check_store

# Init-S must not be Init-D (that would be a lottery ticket), so fresh sparse inits draw their
# initial weights from another seed stream.
SCRATCH_INIT_OFFSET = 1_000_003

Start = Callable[[RunConfig, "Run | None", RunStore], "tuple[nn.Module, Masks | None]"]


@dataclass(frozen=True)
class Recipe:
    """How one kind of run trains.

    ``start(cfg, parent, store)`` gives the network it starts from (masked) and the masks it trains under
    (None: dense training); ``parent`` is the stored parent run, if the kind has one. ``label(cfg)`` names
    the run in progress bars. ``updater(cfg, total_steps)`` is the training callback that changes the mask
    (gradual pruning, SET, RigL), if the kind has one. ``curve``: the run trains a curve between two
    stored networks (:func:`sparsegap.curves.train_curve`), not one network. ``check(cfg)``: what the
    config alone cannot know, checked against its data and model before anything trains.
    """

    start: Start
    label: Callable[[RunConfig], str]
    updater: Callable[[RunConfig, int], object] | None = None
    curve: bool = False
    check: Callable[[RunConfig], None] | None = None


def recipe(cfg: RunConfig) -> Recipe:
    return RECIPES[cfg.kind]


def label(cfg: RunConfig) -> str:
    """The run's name in progress bars and logs: its kind, what sets its sparsity, and its seed."""
    return f"{RECIPES[cfg.kind].label(cfg)} seed={cfg.seed}"


# ---------------------------------------------------------------------------------------------- starts

def _own_init(cfg: RunConfig, parent: Run | None, store: RunStore) -> tuple[nn.Module, Masks | None]:
    """Dense training from the run's own init (Init-D). P-S (gradual) starts so too: its pruner makes the mask."""
    return build_model_for(cfg.model, cfg.data, seed=cfg.seed), None


def _redense_start(cfg: RunConfig, parent: Run, store: RunStore) -> tuple[nn.Module, Masks | None]:
    """The sparse parent's solution, its pruned weights at zero, trained without a mask."""
    solution = parent.model()
    apply_masks(solution, parent.masks)
    return solution, None


def _pruned_start(init: Callable[[RunConfig, nn.Module, Run, RunStore], nn.Module]) -> Start:
    """A start under the mask that prunes the parent's solution by the config's heuristic (finetune, imp, and
    scratch from a dense parent); ``init`` gives the weights the mask is put on."""
    def start(cfg: RunConfig, parent: Run, store: RunStore) -> tuple[nn.Module, Masks | None]:
        solution = parent.model()
        masks = pruning_masks(cfg, solution, parent.masks)
        model = init(cfg, solution, parent, store)
        if cfg.sparse_init:
            _sparse_init(cfg, model, masks)
        apply_masks(model, masks)
        return model, masks
    return start


def _init_f(cfg: RunConfig, solution: nn.Module, parent: Run, store: RunStore) -> nn.Module:
    return solution                                              # Init-F: Sol-D under the mask


def _init_s(cfg: RunConfig, solution: nn.Module, parent: Run, store: RunStore) -> nn.Module:
    return build_model_for(cfg.model, cfg.data, seed=cfg.seed + SCRATCH_INIT_OFFSET)   # Init-S


def _rewound(cfg: RunConfig, solution: nn.Module, parent: Run, store: RunStore) -> nn.Module:
    """An imp round's survivors, rewound to the root dense run's iteration ``rewind_iter``."""
    root = parent if parent.config.kind == "dense" else store.load(cfg.root)
    model = build_model_for(cfg.model, cfg.data)
    model.load_state_dict(root.weights_at(cfg.rewind_iter))
    return model


_prune_finetune, _prune_scratch, _prune_imp = _pruned_start(_init_f), _pruned_start(_init_s), _pruned_start(_rewound)


def _scratch_start(cfg: RunConfig, parent: Run, store: RunStore) -> tuple[nn.Module, Masks | None]:
    """Init-S under the mask of a dense parent's pruned solution, or under a pruned solution's final mask (S-S)."""
    if parent.config.kind == "dense":
        return _prune_scratch(cfg, parent, store)
    return _parent_mask_state(cfg, parent, store)


def _zeroinit_start(cfg: RunConfig, parent: Run | None, store: RunStore) -> tuple[nn.Module, Masks | None]:
    """The dense init with a fraction of its weights at zero: at random, or where a pruned solution's mask is."""
    return _random_mask_state(cfg) if parent is None else _parent_mask_state(cfg, parent, store)


def _curve_start(cfg: RunConfig, parent: Run, store: RunStore) -> tuple[nn.Module, Masks | None]:
    return load_curve(cfg, store, trained=False), None


def load_curve(cfg: RunConfig, store: RunStore | None = None, *, trained: bool = True):
    """The :class:`sparsegap.curves.BezierCurve` of a curve run between its two (stored) endpoints:
    trained (its stored control points), or as it starts (``trained=False``, on the straight line).
    In the sparse mode the endpoints must share one mask."""
    from ..curves import BezierCurve
    store = check_store(store, "load_curve")
    a, b = store.load(cfg.parent), store.load(cfg.partner)
    masks = None
    if cfg.curve_mode == "sparse":
        ma, mb = a.masks, b.masks
        if ma is None or not same_masks(ma, mb):
            raise ValueError(f"a sparse curve needs endpoints with one shared mask, but {cfg.parent.run_id} and "
                             f"{cfg.partner.run_id} have different masks (or one has none); use curve_mode='dense'")
        masks = ma
    # The base network only lends the curve its architecture, but its (unused) weights are part of the curve's
    # stored state: built from the curve's seed, not from the global generator, so that they are the same
    # whichever process and kernel builds the curve.
    base = build_model_for(a.config.model, a.config.data, seed=cfg.seed)
    curve = BezierCurve(base, a.weights, b.weights, cfg.curve_degree, masks=masks)
    if trained:
        curve.load_state_dict(store.load(cfg).weights)
    return curve


def _sparse_init(cfg: RunConfig, model: nn.Module, masks: Masks) -> None:
    from ..sparse_init import sparse_init_
    sparse_init_(model, masks, cfg.sparse_init, seed=cfg.seed + SCRATCH_INIT_OFFSET)


def _parent_mask_state(cfg: RunConfig, parent: Run, store: RunStore) -> tuple[nn.Module, Masks | None]:
    """Lottery (the pruned solution's root init), scratch (a fresh init) or zeroinit (the dense init,
    trained dense) under the final mask of a pruned solution."""
    masks = parent.masks
    if cfg.kind == "scratch":
        model = build_model_for(cfg.model, cfg.data, seed=cfg.seed + SCRATCH_INIT_OFFSET)
        if cfg.sparse_init:
            _sparse_init(cfg, model, masks)
    else:
        root = parent if parent.config.kind in ("dense", "gradual") else store.load(parent.config.root)
        model = root.init_model() if cfg.kind == "lottery" else build_model_for(cfg.model, cfg.data, seed=cfg.seed)
    apply_masks(model, masks)
    return model, (None if cfg.kind == "zeroinit" else masks)


def _random_mask_state(cfg: RunConfig) -> tuple[nn.Module, Masks | None]:
    """A random mask with the config's layer densities: the start of a dst run (a fresh init under it),
    or the zeros of a zeroinit run (the dense init, trained dense)."""
    from ..dst import erk_densities, random_masks, uniform_densities
    if cfg.kind == "dst":
        model = build_model_for(cfg.model, cfg.data, seed=cfg.seed + SCRATCH_INIT_OFFSET)
    else:
        model = build_model_for(cfg.model, cfg.data, seed=cfg.seed)
    dens = (erk_densities if cfg.distribution == "erk" else uniform_densities)(
        model, 1.0 - cfg.sparsity, exclude_output=cfg.exclude_output)
    masks = random_masks(model, dens, seed=cfg.seed * PRUNE_STREAM + 1)
    if cfg.sparse_init:
        _sparse_init(cfg, model, masks)
    apply_masks(model, masks)
    return model, (masks if cfg.kind == "dst" else None)


# Seeds of the gradient heuristic's batch and the random heuristic's scores: (prune_seed, round)
# mixed so that every round of a chain draws afresh.
PRUNE_STREAM = 7_919


def pruning_masks(cfg: RunConfig, solution: nn.Module, within: Masks | None = None) -> Masks:
    """The mask of a sparse run: ``cfg.prune``'s scores of ``solution`` (the parent's trained
    network), the globally best kept to ``cfg.sparsity``; nested in ``within`` (the previous imp round's masks)."""
    stream = cfg.prune_seed * PRUNE_STREAM + cfg.imp_round
    if cfg.prune == "magnitude":
        scores = magnitude_scores(solution, exclude_output=cfg.exclude_output)
    elif cfg.prune == "random":
        scores = random_scores(solution, stream, exclude_output=cfg.exclude_output)
    else:   # gradient: one training batch (of the run's batch size), drawn by the stream
        data = load_data(cfg.data)
        g = torch.Generator().manual_seed(stream)
        idx = torch.randperm(len(data.y_train), generator=g)[: cfg.train.batch_size]
        scores = gradient_scores(solution, data.x_train[idx], data.y_train[idx], exclude_output=cfg.exclude_output,
                                 masks=within)
    return global_masks_from_scores(scores, cfg.sparsity, min_density=cfg.min_density, within=within)


# -------------------------------------------------------------------------------------------- updaters

def _gradual_pruning(cfg: RunConfig, total_steps: int):
    from ..dst import GradualPruning
    return GradualPruning(cfg.sparsity, round(cfg.update_start * total_steps), max(1, round(cfg.update_end * total_steps)),
                          cfg.update_every, exclude_output=cfg.exclude_output, min_density=cfg.min_density)


def _dynamic_sparse(cfg: RunConfig, total_steps: int):
    from ..dst import DynamicSparse
    return DynamicSparse(cfg.dst_method, cfg.drop_fraction, cfg.update_every, max(1, round(cfg.update_end * total_steps)),
                         seed=cfg.seed)


# ------------------------------------------------------------------------------------ runnability


@lru_cache(maxsize=32)
def _prunable_sizes(model_cfg: ModelConfig, dataset: str, exclude_output: bool) -> tuple[int, ...]:
    """The number of prunable weights of each prunable layer of the model. Built from the dataset's known
    input shape and classes (no dataset is loaded, as in a plan) and from a fixed seed, which leaves the
    global random state untouched."""
    from ..datasets import NUM_CLASSES, SPLITS
    from ..models import build_model
    model = build_model(model_cfg.name, num_classes=NUM_CLASSES[dataset], input_shape=SPLITS[dataset][0],
                        width=model_cfg.width, hidden=model_cfg.hidden, seed=0, init=model_cfg.init)
    return tuple(p.numel() for p in prunable_parameters(model, exclude_output=exclude_output).values())


def check_runnable(cfg: RunConfig) -> None:
    """What a config alone cannot know, checked against its data and model before anything trains (and
    before a plan is shown, which runs the same checks): subset sizes within the dataset's, augmentation
    and channels_last on image data, kept iterations within the dense run's length, masks that can leave a
    weight per layer, a data schedule's memorization subset of at least one batch, and what the kind's
    recipe checks. Nothing is loaded: the sizes are the datasets' known ones (:data:`sparsegap.datasets.SPLITS`,
    which a test holds to what the loaders give)."""
    from ..datasets import split_sizes
    for c in chain(cfg):
        shape, n, _ = split_sizes(c.data.name, c.data.train_size, c.data.test_size, c.data.validation)
        t = c.train
        if (t.augment != "none" or t.channels_last) and len(shape) != 3:
            # training refuses it too, but only once the run's folder exists
            what = "channels_last" if t.channels_last else f"augment={t.augment!r}"
            raise ValueError(f"TrainConfig.{what} applies to image inputs of shape (N, C, H, W); {c.data.name} has "
                             f"inputs of shape {shape}")
        if t.data_schedule != "full":
            from ..schedule import check_schedule
            check_schedule(t, n)
        if c.save_weights_at:
            steps = -(-n // t.batch_size)
            total = t.epochs * steps
            late = [k for k in c.save_weights_at if k > total]
            if late:
                raise ValueError(f"RunConfig.save_weights_at={c.save_weights_at!r} asks for iteration(s) {late}, "
                                 f"beyond the dense run's {total} iterations ({t.epochs} epochs x {steps} "
                                 f"steps of batch {t.batch_size} on {n} samples); an imp round can only "
                                 f"rewind to an iteration the dense run reaches")
        check = RECIPES[c.kind].check
        if check is not None:
            check(c)


def chain(cfg: RunConfig) -> list[RunConfig]:
    """``cfg`` and every run it needs first (parents, and a curve's partner with its own parents),
    each after what it needs."""
    out = []
    for before in (cfg.parent, cfg.partner):
        if before is not None:
            out += [c for c in chain(before) if c not in out]
    return out + [cfg]


def needs(cfg: RunConfig) -> list[RunConfig]:
    return [c for c in (cfg.parent, cfg.partner) if c is not None]


def _check_imp(c: RunConfig) -> None:
    """An imp chain must leave one weight per layer."""
    sizes = _prunable_sizes(c.model, c.data.name, c.exclude_output)
    n, layers = sum(sizes), len(sizes)
    kept = round((1.0 - c.sparsity) * n)
    if kept < layers:
        rate = c.prune_rate
        most = 0
        while round((1 - rate) ** (most + 1) * n) >= layers:
            most += 1
        raise ValueError(f"an imp chain of {c.imp_round} rounds (sparsity {c.sparsity:.6g}) keeps "
                         f"{kept} of {n} prunable weights, fewer than its {layers} layers: no mask can "
                         f"leave one weight per layer. At prune_rate={rate:g}, use at most {most} rounds")
    _check_global_mask(c)


def _check_global_mask(c: RunConfig) -> None:
    """What global pruning to ``c.sparsity`` (:func:`~sparsegap.pruning.global_masks_from_scores`) refuses
    whatever the scores: keeping fewer weights than there are layers, or fewer than the min_density floor.
    Without this, a sparse run's refusal comes only after its parent has trained. Which layer the globally
    best scores empty still depends on the trained weights; the pruning names it then."""
    if c.kind == "scratch" and c.parent.kind != "dense":
        return                                   # S-S: the pruned parent's own mask, checked as the parent
    sizes = _prunable_sizes(c.model, c.data.name, c.exclude_output)
    n, layers = sum(sizes), len(sizes)
    kept = int(round((1.0 - c.sparsity) * n))
    if kept < layers:
        most = math.floor((1 - layers / n) * 1e6) / 1e6
        raise ValueError(f"RunConfig.sparsity={c.sparsity:g} keeps round((1 - sparsity) * {n}) = {kept} of the {n} "
                         f"prunable weights of {c.model.label} on {c.data.name}, fewer than its {layers} prunable "
                         f"layers: no mask leaves a weight in every layer (a layer with none cuts the network). "
                         f"Use a sparsity of at most {most:g}")
    if c.min_density > 0:
        forced = sum(min(k, math.ceil(c.min_density * k)) for k in sizes)
        if forced > kept:
            raise ValueError(f"RunConfig.min_density={c.min_density} keeps {forced} weights, more than the {kept} "
                             f"that sparsity={c.sparsity:g} allows ({c.model.label} on {c.data.name}); lower "
                             f"min_density or the sparsity")


# ------------------------------------------------------------------------------------------ registry

def _sparsity(cfg: RunConfig) -> str:
    return f"{cfg.kind} s={cfg.sparsity:g}"


RECIPES: dict[str, Recipe] = {
    "dense": Recipe(_own_init, lambda c: "dense"),
    "finetune": Recipe(_prune_finetune, _sparsity, check=_check_global_mask),
    "scratch": Recipe(_scratch_start, _sparsity, check=_check_global_mask),
    "imp": Recipe(_prune_imp, lambda c: f"imp round {c.imp_round} s={c.sparsity:.4g}", check=_check_imp),
    "redense": Recipe(_redense_start, lambda c: f"redense from s={c.parent.sparsity:.4g}"),
    "gradual": Recipe(_own_init, _sparsity, updater=_gradual_pruning, check=_check_global_mask),
    "lottery": Recipe(lambda c, parent, store: _parent_mask_state(c, parent, store), _sparsity),
    "dst": Recipe(lambda c, parent, store: _random_mask_state(c), _sparsity, updater=_dynamic_sparse),
    "zeroinit": Recipe(_zeroinit_start, _sparsity),
    "curve": Recipe(_curve_start, _sparsity, curve=True),
}
