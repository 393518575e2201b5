"""Run configurations: frozen, validated dataclasses with a stable hash (open_lth style).

A run's identity is the hash of its canonical config. The canonical form leaves out every field that still has its
default value, so adding a field later (with a default that keeps the old behaviour) changes no existing run's hash.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import MISSING, dataclass, field, fields

from .checks import check_type as _check_type, canonical as _canonical, number as _number, \
    positive_int as _positive_int, seed as _seed

RUN_KINDS = ("dense", "finetune", "scratch", "imp", "redense", "gradual", "lottery", "dst", "zeroinit", "curve")
SPARSE_KINDS = ("finetune", "scratch", "imp", "gradual", "lottery", "dst")   # the kinds that train under a mask
HEURISTIC_KINDS = ("finetune", "scratch", "imp")   # the kinds whose mask prunes the parent's solution by a heuristic
PRUNED_KINDS = ("finetune", "imp", "gradual")      # pruned solutions: their final mask serves lottery and scratch runs
UPDATER_KINDS = ("gradual", "dst")                 # the kinds whose mask changes during training
DST_METHODS = ("set", "rigl")
DISTRIBUTIONS = ("uniform", "erk")
SCHEDULES = ("multistep", "cosine", "constant")
FISHER_REG_OFF = ("step", "linear")
DATA_SCHEDULES = ("full", "fisher", "random", "disagree")   # see sparsegap.schedule
PRECISIONS = ("fp32", "bf16", "fp16")       # fp16 trains with a gradient scaler
AUGMENTS = ("none", "crop-flip")             # crop-flip: the CIFAR standard (4-pixel padded random crop, flip)
COMPILE_MODES = ("off", "default", "reduce-overhead")   # torch.compile modes of a step ("off": eager; see train)
CURVE_DEGREES = (2, 3)                       # curve runs: quadratic or cubic Bezier curves
CURVE_MODES = ("sparse", "dense")            # curve runs: control points under the endpoints' mask, or free
# The parent each kind trains from: the kinds allowed, and how an error describes them. Kinds absent here take no
# parent (dense, gradual, dst) or their own (zeroinit without one, curve with its two endpoints).
PARENTS = {
    "finetune": (("dense",), "the dense RunConfig"),
    "scratch": (("dense", *PRUNED_KINDS), f"the dense RunConfig, or a pruned solution ({', '.join(PRUNED_KINDS)})"),
    "imp": (("dense", "imp"), "the previous round (an imp RunConfig) or, for round 1, the dense RunConfig"),
    "redense": (SPARSE_KINDS, f"the sparse RunConfig ({', '.join(SPARSE_KINDS)})"),
    "lottery": (PRUNED_KINDS, f"a pruned solution ({', '.join(PRUNED_KINDS)}) whose final mask it takes"),
    "zeroinit": (PRUNED_KINDS, f"a pruned solution ({', '.join(PRUNED_KINDS)}) whose mask zeroes the init, "
                               f"or None for a random fraction"),
}


def _sparse_inits() -> tuple[str, ...]:
    from .sparse_init import SPARSE_INITS
    return SPARSE_INITS


class _Canonical:
    """Mixin: canonical dict (defaults dropped), JSON round trip, and the hash."""

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            default = f.default if f.default is not MISSING else (
                f.default_factory() if f.default_factory is not MISSING else MISSING)  # type: ignore[misc]
            if isinstance(value, _Canonical):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
                default = list(default) if isinstance(default, tuple) else default
            if default is MISSING or value != default:
                out[f.name] = value
        return out

    def full_dict(self) -> dict:
        """Every field, defaults included: what is written to config.json for people to read."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = value.full_dict() if isinstance(value, _Canonical) else (
                list(value) if isinstance(value, tuple) else value)
        return out

    def hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - set(known)
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}; fields are {sorted(known)}")
        kwargs = {}
        for name, value in d.items():
            sub = _NESTED.get((cls.__name__, name))
            if sub is not None and isinstance(value, dict):
                value = sub.from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)


@dataclass(frozen=True)
class DataConfig(_Canonical):
    name: str = "fashion-mnist"
    train_size: int | None = None   # class-balanced training subset; None = all
    test_size: int | None = None    # None = the full test set
    subset_seed: int = 0
    noise: float = 0.0              # fraction ε of training labels flipped to another class (data.load_dataset)
    noise_seed: int = 0             # picks the noisy samples and their labels
    validation: int = 0             # > 0: carve this many (class-balanced) samples out of the training set and
                                    # evaluate on them in place of the test set (data.load_dataset)

    def __post_init__(self):
        _check_type("DataConfig", "name", self.name, (str,), "a dataset name (str)")
        from .data import DATASETS, NUM_CLASSES
        object.__setattr__(self, "name", _canonical("DataConfig.name", self.name, DATASETS))
        for n in ("train_size", "test_size"):
            size = getattr(self, n)
            if size is not None:
                _positive_int("DataConfig", n, size)
                if size < NUM_CLASSES[self.name]:  # a class-balanced subset needs one sample per class
                    raise ValueError(f"DataConfig.{n} must be at least the {NUM_CLASSES[self.name]} classes of "
                                     f"{self.name} (one sample per class), or None; got {size!r}")
        _seed("DataConfig", "subset_seed", self.subset_seed)
        _number("DataConfig", "noise", self.noise, 0, 1, high_open=True)
        object.__setattr__(self, "noise", float(self.noise))
        if self.noise > 0 and NUM_CLASSES[self.name] < 2:
            raise ValueError(f"DataConfig.noise must be 0 for {self.name}, which has {NUM_CLASSES[self.name]} "
                             f"class (no other class to flip a label to); got {self.noise!r}")
        _seed("DataConfig", "noise_seed", self.noise_seed)
        if self.noise == 0:  # the seed picks nothing then: clean data keep one identity (and one hash)
            object.__setattr__(self, "noise_seed", 0)
        _check_type("DataConfig", "validation", self.validation, (int,), "an int >= 0")
        classes = NUM_CLASSES[self.name]
        top = None if self.train_size is None else self.train_size - classes
        if self.validation != 0 and not (classes <= self.validation and (top is None or self.validation <= top)):
            raise ValueError(f"DataConfig.validation must be 0 (no validation split) or an int in [{classes}, "
                             f"{top if top is not None else 'the training set size - ' + str(classes)}] (one sample "
                             f"per class held out, one per class left to train on), got {self.validation!r}")


@dataclass(frozen=True)
class ModelConfig(_Canonical):
    name: str = "lenet300-100"
    width: int | float = 1                  # width factor (ResNets: the paper's ResNet-32 x4 is width=4; 0.25 narrows)
    hidden: tuple[int, ...] | None = None   # hidden widths of the generic MLP
    init: str = "default"                   # "default" (each layer's own) or "kaiming" (He normal, for deep ReLU MLPs)

    def __post_init__(self):
        _check_type("ModelConfig", "name", self.name, (str,), "a model name (str)")
        from .models import BASE_CHANNELS, INITS, MODELS, WIDTH_MODELS, check_width
        object.__setattr__(self, "name", _canonical("ModelConfig.name", self.name, MODELS))
        _number("ModelConfig", "width", self.width, 0, low_open=True)
        if self.width != 1 and self.name not in WIDTH_MODELS:
            raise ValueError(f"ModelConfig.width must be 1 for {self.name} (only {', '.join(WIDTH_MODELS)} "
                             f"take a width factor), got {self.width!r}")
        try:   # a whole width is stored as an int: width=4.0 is the run of width=4, with its hash
            object.__setattr__(self, "width", check_width(self.name, self.width))
        except ValueError:
            raise ValueError(f"ModelConfig.width must make the first stage's channels ({BASE_CHANNELS[self.name]} "
                             f"x width) a whole number >= 1 for {self.name}, got {self.width!r}") from None
        if self.hidden is not None:
            hidden = tuple(self.hidden) if isinstance(self.hidden, list) else self.hidden
            _check_type("ModelConfig", "hidden", hidden, (tuple,), "a tuple of positive ints")
            for i, h in enumerate(hidden):
                _positive_int("ModelConfig", f"hidden[{i}]", h)
            object.__setattr__(self, "hidden", hidden)
        if (self.name == "mlp") != (self.hidden is not None):
            raise ValueError(f"ModelConfig.hidden must be the hidden widths (a tuple of positive ints) for mlp "
                             f"and None for every other model; got hidden={self.hidden!r} for {self.name}")
        if not isinstance(self.init, str) or self.init not in INITS:
            raise ValueError(f"ModelConfig.init must be one of {INITS}, got {self.init!r}")

    @property
    def label(self) -> str:
        """The network in a few words, as titles and the ledger name it: ``resnet32 x4``, ``resnet18 x0.25``."""
        return self.name + (f" x{self.width:g}" if self.width != 1 else "")


@dataclass(frozen=True)
class TrainConfig(_Canonical):
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "multistep"
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of `epochs` where the lr is multiplied by gamma
    gamma: float = 0.1
    fisher_reg: float = 0.0          # c: the loss gets + c·R(θ) early on (c < 0: negative Fisher regularization)
    fisher_reg_epochs: int = 0       # ... during the first this many epochs
    fisher_reg_off: str = "step"     # ... then off at once ("step"), or ramped linearly to 0 over them ("linear")
    data_schedule: str = "full"      # the samples of each epoch: "full", or a subset schedule (sparsegap.schedule)
    subset: float = 1.0              # the memorization phase trains on this fraction of the training set, ...
    memorize_epochs: int = 0         # ... for this many epochs; then the consolidating phase widens the subset
    consolidate_epochs: int = 0      # ... linearly to the whole set over this many epochs
    rerank_every: int = 0            # re-rank the samples every this many epochs (0: once, at the start)
    precision: str = "fp32"          # "bf16" / "fp16": mixed precision (torch.autocast; fp16 with a grad scaler)
    channels_last: bool = False      # image inputs and convolutional weights in channels-last memory format
    augment: str = "none"            # "crop-flip": random 4-pixel-padded crop and horizontal flip, per batch, on the device
    compile: str = "off"             # a torch.compile mode for the steps (COMPILE_MODES); in the run hash only when set

    def __post_init__(self):
        _positive_int("TrainConfig", "epochs", self.epochs)
        _positive_int("TrainConfig", "batch_size", self.batch_size)
        _number("TrainConfig", "lr", self.lr, 0, low_open=True)
        _number("TrainConfig", "momentum", self.momentum, 0, 1, high_open=True)
        _number("TrainConfig", "weight_decay", self.weight_decay, 0)
        if not isinstance(self.schedule, str) or self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        ms = tuple(self.milestones) if isinstance(self.milestones, list) else self.milestones
        _check_type("TrainConfig", "milestones", ms, (tuple,), "a tuple of fractions in (0, 1)")
        for i, m in enumerate(ms):  # fractions of the epochs
            _number("TrainConfig", f"milestones[{i}]", m, 0, 1, low_open=True, high_open=True)
        if list(ms) != sorted(ms):
            raise ValueError(f"TrainConfig.milestones must be increasing, got {ms!r}")
        object.__setattr__(self, "milestones", ms)
        _number("TrainConfig", "gamma", self.gamma, 0, 1)
        _number("TrainConfig", "fisher_reg", self.fisher_reg, -math.inf)
        _check_type("TrainConfig", "fisher_reg_epochs", self.fisher_reg_epochs, (int,), "an int in [0, epochs]")
        if not 0 <= self.fisher_reg_epochs <= self.epochs:
            raise ValueError(f"TrainConfig.fisher_reg_epochs must be an int in [0, epochs={self.epochs}], "
                             f"got {self.fisher_reg_epochs!r}")
        if self.fisher_reg_off not in FISHER_REG_OFF:
            raise ValueError(f"TrainConfig.fisher_reg_off must be one of {FISHER_REG_OFF}, got {self.fisher_reg_off!r}")
        if bool(self.fisher_reg) != bool(self.fisher_reg_epochs):
            raise ValueError(f"TrainConfig.fisher_reg and fisher_reg_epochs go together (a coefficient for some "
                             f"epochs, or neither), got fisher_reg={self.fisher_reg!r}, "
                             f"fisher_reg_epochs={self.fisher_reg_epochs!r}")
        self._check_data_schedule()
        if not isinstance(self.precision, str) or self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")
        _check_type("TrainConfig", "channels_last", self.channels_last, (bool,), "True or False")
        if not isinstance(self.augment, str) or self.augment not in AUGMENTS:
            raise ValueError(f"TrainConfig.augment must be one of {AUGMENTS}, got {self.augment!r}")
        if not isinstance(self.compile, str) or self.compile not in COMPILE_MODES:
            raise ValueError(f"TrainConfig.compile must be one of {COMPILE_MODES}, got {self.compile!r}")
        if self.compile != "off" and self.fisher_reg:   # its double backward is not compiled
            raise ValueError(f"TrainConfig.compile={self.compile!r} with fisher_reg={self.fisher_reg!r}: set "
                             f"compile='off'")

    @property
    def gpu_options(self) -> bool:
        """Whether an option for large networks is set (precision, channels_last, augment, compile): never batched, no curve."""
        return (self.precision, self.channels_last, self.augment, self.compile) != ("fp32", False, "none", "off")

    def _check_data_schedule(self) -> None:
        if not isinstance(self.data_schedule, str) or self.data_schedule not in DATA_SCHEDULES:
            raise ValueError(f"TrainConfig.data_schedule must be one of {DATA_SCHEDULES}, got {self.data_schedule!r}")
        _number("TrainConfig", "subset", self.subset, 0, 1, low_open=True)
        for name in ("memorize_epochs", "consolidate_epochs", "rerank_every"):
            value = getattr(self, name)
            _check_type("TrainConfig", name, value, (int,), f"an int in [0, epochs={self.epochs}]")
            if not 0 <= value <= self.epochs:
                raise ValueError(f"TrainConfig.{name} must be an int in [0, epochs={self.epochs}], got {value!r}")
        phases = self.memorize_epochs + self.consolidate_epochs
        if phases > self.epochs:
            raise ValueError(f"TrainConfig.memorize_epochs + consolidate_epochs must fit in epochs={self.epochs}, "
                             f"got {self.memorize_epochs} + {self.consolidate_epochs} = {phases}")
        if self.data_schedule == "full":
            set_ = {n: getattr(self, n) for n, d in (("subset", 1.0), ("memorize_epochs", 0),
                                                      ("consolidate_epochs", 0), ("rerank_every", 0))
                    if getattr(self, n) != d}
            if set_:
                raise ValueError(f"TrainConfig {', '.join(f'{k}={v!r}' for k, v in set_.items())} only apply to a "
                                 f"subset schedule; set data_schedule to one of {DATA_SCHEDULES[1:]}")
        elif self.subset < 1 and phases == 0:
            raise ValueError(f"TrainConfig.subset={self.subset!r} needs a phase to apply in: memorize_epochs and "
                             f"consolidate_epochs are both 0")
        object.__setattr__(self, "subset", float(self.subset))

    def fisher_reg_at(self, epoch: int) -> float:
        """The Fisher regularizer's coefficient in 0-based epoch ``epoch``: ``fisher_reg`` during the first
        ``fisher_reg_epochs`` epochs (step), or ramped linearly from it to 0 over them (linear); 0 after."""
        if epoch >= self.fisher_reg_epochs:
            return 0.0
        if self.fisher_reg_off == "step":
            return self.fisher_reg
        return self.fisher_reg * (1.0 - epoch / self.fisher_reg_epochs)

    def milestone_epochs(self) -> list[int]:
        return [max(1, round(m * self.epochs)) for m in self.milestones]

    def last_lr(self) -> float:
        """The learning rate of the last epoch, as the scheduler of :mod:`sparsegap.train` sets it."""
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "cosine":   # CosineAnnealingLR(T_max=epochs) at epoch epochs - 1
            return self.lr * (1 + math.cos(math.pi * (self.epochs - 1) / self.epochs)) / 2
        passed = sum(e <= self.epochs - 1 for e in self.milestone_epochs())
        return self.lr * self.gamma ** passed


@dataclass(frozen=True)
class RunConfig(_Canonical):
    """One training run.

    ``dense``: Init-D -> Sol-D. ``finetune``: Init-F = Sol-D of ``parent`` masked -> Sol-F.
    ``scratch``: Init-S = a fresh init (another random stream than Init-D) under the same mask -> Sol-S.
    The mask of a finetune or scratch run is one-shot global pruning of the parent's Sol-D to
    ``sparsity``, by the heuristic ``prune`` (magnitude |w| by default; see :mod:`sparsegap.pruning`).

    ``imp``: one round of iterative pruning with rewinding (Frankle & Carbin). ``parent`` is the
    previous round (or the dense run, for round 1); the round removes the fraction ``prune_rate``
    of the weights that the parent kept, by ``prune`` applied to the parent's solution, rewinds
    the survivors to their values at training iteration ``rewind_iter`` of the dense run at the
    root of the chain (0: its initialisation; k > 0 needs ``save_weights_at=(k,)`` in that dense
    run's config) and trains them. Its ``sparsity`` is derived: 1 - Π(1 - prune_rate) over the
    chain. An interrupted sweep resumes at the round where it stopped, and more rounds after
    fewer train only the new ones, since each round is its own run in the store.

    ``gradual``: the pruned solution P-S of Evci et al. (2019): dense training from the run's own
    init while gradual magnitude pruning (Zhu & Gupta 2018) raises the sparsity to ``sparsity``
    between the fractions ``update_start`` and ``update_end`` of the training steps, every
    ``update_every`` steps. ``lottery``: the lottery solution L-S, the same initialization as its
    pruned parent's root (``gradual``, ``imp`` or ``finetune``) under the parent's final mask. A
    ``scratch`` run whose parent is such a pruned solution takes the parent's final mask (S-S);
    with a dense parent it prunes the parent's Sol-D as before. ``dst``: dynamic sparse training
    (``dst_method`` SET or RigL) from a random mask of ``sparsity`` (layer densities by
    ``distribution``, uniform or ERK), updating the mask every ``update_every`` steps until the
    fraction ``update_end`` of training, dropping ``drop_fraction`` (decayed on a cosine) of each
    layer's weights. ``zeroinit``: dense training from an init whose fraction ``sparsity`` of prunable
    weights is set to zero, at random or, with a pruned parent, by its final mask (Evci et al.'s
    sparse-init dense training). ``sparse_init`` ("unit" or "layer") re-draws a sparse run's fresh
    initial weights to suit its mask (:mod:`sparsegap.sparse_init`).

    ``curve``: a Bézier curve (:mod:`sparsegap.curves`) of degree ``curve_degree`` from ``parent``'s
    solution to ``partner``'s, trained in the ``curve_mode`` "sparse" (control points held to the
    endpoints' shared mask) or "dense" with ``train``'s settings (its weight decay is the L2 term).

    ``redense``: re-dense training (Han et al. 2017, DSD). ``parent`` is a sparse run; its pruned
    weights return at zero and the whole network trains on with ``train`` (the double-descent paper
    uses a constant learning rate, the last one of the sparse schedule: see
    :func:`sparsegap.studies.double_descent.redense_config`).
    """

    kind: str
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    sparsity: float = 0.0
    exclude_output: bool = False         # spare the classifier layer from pruning
    parent: "RunConfig | None" = None    # the dense run whose Sol-D gives the mask (and Init-F)
    min_density: float = 0.0             # per-layer floor of the mask's density (narrow layers)
    track: tuple[str, ...] = ()          # metrics recorded during training, e.g. "fisher_trace@5" (see sparsegap.trackers)
    prune: str = "magnitude"             # the heuristic that scores weights for a mask: magnitude, gradient, random
    prune_seed: int = 0                  # the batch of the gradient heuristic, the scores of the random one
    prune_rate: float | None = None      # imp: the fraction of the parent's remaining weights removed
    rewind_iter: int = 0                 # imp: the dense run's iteration the survivors are rewound to
    save_weights_at: tuple[int, ...] = ()  # dense: training iterations whose weights are kept (for rewinding)
    update_start: float = 0.0            # gradual: fraction of the training steps where pruning starts
    update_end: float = 0.0              # gradual, dst: fraction of the training steps where mask updates end
    update_every: int = 0                # gradual, dst: steps between two mask updates
    dst_method: str = ""                 # dst: "set" or "rigl"
    drop_fraction: float = 0.0           # dst: fraction of each layer's weights dropped (and regrown) at first
    distribution: str = "uniform"        # dst, zeroinit without parent: layer densities, "uniform" or "erk"
    sparse_init: str = ""                # fresh sparse inits: "" (dense init), "unit" or "layer" (sparse_init)
    partner: "RunConfig | None" = None   # curve: the second endpoint (parent is the first)
    curve_degree: int = 0                # curve: 2 (quadratic) or 3 (cubic)
    curve_mode: str = ""                 # curve: "sparse" or "dense"

    def __post_init__(self):
        if self.kind not in RUN_KINDS:
            raise ValueError(f"RunConfig.kind must be one of {RUN_KINDS}, got {self.kind!r}")
        for name, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig)):
            _check_type("RunConfig", name, getattr(self, name), (cls,), f"a {cls.__name__}")
        _seed("RunConfig", "seed", self.seed)
        from .pruning import check_sparsity
        object.__setattr__(self, "sparsity", check_sparsity(self.sparsity, "RunConfig.sparsity"))
        _check_type("RunConfig", "exclude_output", self.exclude_output, (bool,), "a bool")
        _number("RunConfig", "min_density", self.min_density, 0, 1)
        track = tuple(self.track) if isinstance(self.track, list) else self.track
        _check_type("RunConfig", "track", track, (tuple,), "a tuple of tracker specs such as 'fisher_trace@5'")
        from .tracker_specs import check_trackers
        check_trackers(track, self.data)  # specs parse, keys are distinct, no noisy subset of clean data
        object.__setattr__(self, "track", track)
        self._check_pruning_fields()
        self._check_update_fields()
        self._check_remedy_fields()
        if self.kind == "curve":
            self._check_curve()
            return
        if self.partner is not None or self.curve_degree or self.curve_mode:
            raise ValueError(f"RunConfig.partner, curve_degree and curve_mode describe a curve run; a {self.kind} "
                             f"run takes None, 0 and ''")
        if self.kind == "dense":
            if self.parent is not None or self.sparsity != 0.0:
                raise ValueError("a dense RunConfig takes no parent and sparsity 0")
            return
        if self.kind in ("gradual", "dst") or (self.kind == "zeroinit" and self.parent is None):
            if self.parent is not None:
                raise ValueError(f"a {self.kind} RunConfig starts from its own init and takes no parent, "
                                 f"got a {self.parent.kind} parent")
            if self.sparsity <= 0:
                raise ValueError(f"a {self.kind} RunConfig needs sparsity in (0, 1), got {self.sparsity!r}")
            return
        parent_kinds, what = PARENTS[self.kind]
        if not isinstance(self.parent, RunConfig) or self.parent.kind not in parent_kinds:
            got = f"a {self.parent.kind} RunConfig" if isinstance(self.parent, RunConfig) else repr(self.parent)
            raise ValueError(f"a {self.kind} RunConfig needs parent=<{what}>, got {got}")
        if self.parent.data != self.data or self.parent.model != self.model:
            raise ValueError(f"a {self.kind} run must use the same data and model as its parent")
        if self.kind == "imp":
            derived = 1.0 - (1.0 - self.parent.sparsity) * (1.0 - self.prune_rate)
            if self.sparsity not in (0.0, derived) and abs(self.sparsity - derived) > 1e-12:
                raise ValueError(f"RunConfig.sparsity of an imp round is derived from the chain, "
                                 f"1 - Π(1 - prune_rate) = {derived!r}; leave it at 0, got {self.sparsity!r}")
            object.__setattr__(self, "sparsity", derived)
            if derived >= 1.0:
                raise ValueError(f"an imp chain of {self.imp_round} rounds at these prune rates removes every weight")
            if self.rewind_iter and self.rewind_iter not in self.root.save_weights_at:
                raise ValueError(f"RunConfig.rewind_iter={self.rewind_iter} needs the dense run at the root of the "
                                 f"chain to keep its weights at that iteration: give it save_weights_at="
                                 f"({self.rewind_iter},) (it has {self.root.save_weights_at!r})")
        elif self.kind in ("lottery", "zeroinit") or (self.kind == "scratch" and self.parent.kind != "dense"):
            if self.sparsity not in (0.0, self.parent.sparsity):
                raise ValueError(f"a {self.kind} run takes its parent's mask and so its sparsity "
                                 f"({self.parent.sparsity!r}); leave sparsity at 0, got {self.sparsity!r}")
            object.__setattr__(self, "sparsity", self.parent.sparsity)
        elif self.kind == "redense" and self.sparsity != 0.0:
            raise ValueError(f"a redense RunConfig trains the whole network: sparsity must be 0 (the sparse "
                             f"parent's is {self.parent.sparsity:g}), got {self.sparsity!r}")

    def _check_pruning_fields(self) -> None:
        from .pruning import check_heuristic
        check_heuristic(self.prune, "RunConfig.prune")
        _seed("RunConfig", "prune_seed", self.prune_seed)
        masked_from_parent = self.kind in HEURISTIC_KINDS and (
            self.kind != "scratch" or self.parent is None or self.parent.kind == "dense")
        if not masked_from_parent and (self.prune != "magnitude" or self.prune_seed != 0):
            raise ValueError(f"RunConfig.prune and prune_seed choose how a sparse run prunes its parent's solution "
                             f"({', '.join(HEURISTIC_KINDS)} from a dense parent); a {self.kind} run does not, got "
                             f"prune={self.prune!r}, prune_seed={self.prune_seed!r}")
        if self.prune == "magnitude" and self.prune_seed != 0:
            raise ValueError(f"RunConfig.prune_seed picks the batch of the gradient heuristic and the scores of "
                             f"the random one; magnitude pruning draws nothing, so it must be 0, got "
                             f"{self.prune_seed!r}")
        if self.kind == "imp":
            _number("RunConfig", "prune_rate", self.prune_rate, 0, 1, low_open=True, high_open=True)
            object.__setattr__(self, "prune_rate", float(self.prune_rate))
        elif self.prune_rate is not None:
            raise ValueError(f"RunConfig.prune_rate is the fraction removed per round of an imp run; "
                             f"a {self.kind} run takes None, got {self.prune_rate!r}")
        _check_type("RunConfig", "rewind_iter", self.rewind_iter, (int,), "an int >= 0")
        if self.rewind_iter < 0 or (self.rewind_iter and self.kind != "imp"):
            raise ValueError(f"RunConfig.rewind_iter must be an int >= 0, and 0 except for an imp run "
                             f"(kind={self.kind!r}), got {self.rewind_iter!r}")
        its = tuple(self.save_weights_at) if isinstance(self.save_weights_at, list) else self.save_weights_at
        _check_type("RunConfig", "save_weights_at", its, (tuple,), "a tuple of positive ints")
        for i, k in enumerate(its):
            _positive_int("RunConfig", f"save_weights_at[{i}]", k)
        if list(its) != sorted(set(its)):
            raise ValueError(f"RunConfig.save_weights_at must be increasing and without repeats, got {its!r}")
        if its and self.kind != "dense":
            raise ValueError(f"RunConfig.save_weights_at keeps weights of a dense run for rewinding; a "
                             f"{self.kind} run takes (), got {its!r}")
        object.__setattr__(self, "save_weights_at", its)

    def _check_curve(self) -> None:
        for name in ("parent", "partner"):
            end = getattr(self, name)
            if not isinstance(end, RunConfig):
                raise ValueError(f"a curve RunConfig needs {name}=<an endpoint RunConfig>, got {end!r:.60}")
            if end.data != self.data or end.model != self.model:
                raise ValueError(f"the endpoints of a curve must have the curve's architecture and data: {name} has "
                                 f"model {end.model!r} and data {end.data!r}, the curve {self.model!r}, {self.data!r}")
        if self.curve_degree not in CURVE_DEGREES or isinstance(self.curve_degree, bool):
            raise ValueError(f"RunConfig.curve_degree (the curve's order) must be one of {CURVE_DEGREES}, "
                             f"got {self.curve_degree!r}")
        if self.curve_mode not in CURVE_MODES:
            raise ValueError(f"RunConfig.curve_mode must be one of {CURVE_MODES}, got {self.curve_mode!r}")
        if self.sparsity != 0.0:
            raise ValueError(f"a curve run takes sparsity 0 (its mode says whether it is sparse), got {self.sparsity!r}")

    def _check_remedy_fields(self) -> None:
        """A data schedule makes epochs of different lengths, and curve training has neither remedy: refuse what
        would count steps by whole epochs or ignore the fields."""
        t = self.train
        if t.data_schedule != "full" and (self.kind in UPDATER_KINDS or self.save_weights_at):
            raise ValueError(f"TrainConfig.data_schedule={t.data_schedule!r} shortens the epochs, which a {self.kind} run"
                             f"{' (with save_weights_at)' if self.save_weights_at else ''} counts in whole-set steps; "
                             f"use data_schedule='full' there")
        if self.kind == "curve" and (t.data_schedule != "full" or t.fisher_reg or t.gpu_options):
            raise ValueError("curve training has no data schedule, Fisher regularizer, mixed precision, channels_last, "
                             "augmentation or compile: use TrainConfig's defaults for those fields in a curve run")
        if t.data_schedule == "disagree" and (self.parent is None or self.root.kind != "dense"):
            raise ValueError(f"TrainConfig.data_schedule='disagree' compares a sparse run with the dense run at the "
                             f"root of its parents; this {self.kind} run has "
                             f"{'no parent' if self.parent is None else 'a ' + self.root.kind + ' run there'}")

    def _check_update_fields(self) -> None:
        k = self.kind
        _number("RunConfig", "update_start", self.update_start, 0, 1, high_open=True)
        _number("RunConfig", "update_end", self.update_end, 0, 1)
        _check_type("RunConfig", "update_every", self.update_every, (int,), "an int >= 0")
        if k in UPDATER_KINDS:
            if self.update_every < 1:
                raise ValueError(f"RunConfig.update_every (steps between two mask updates) of a {k} run must be "
                                 f"an int >= 1, got {self.update_every!r}")
            if self.update_end <= self.update_start:
                raise ValueError(f"RunConfig.update_end must be after update_start (fractions of the training "
                                 f"steps): a {k} schedule whose end precedes its start, got start="
                                 f"{self.update_start!r}, end={self.update_end!r}")
        elif (self.update_start, self.update_end, self.update_every) != (0.0, 0.0, 0):
            raise ValueError(f"RunConfig.update_start, update_end and update_every schedule the mask updates of "
                             f"{' and '.join(UPDATER_KINDS)} runs; a {k} run takes the defaults")
        if k == "dst":
            if self.dst_method not in DST_METHODS:
                raise ValueError(f"RunConfig.dst_method must be one of {DST_METHODS} for a dst run, "
                                 f"got {self.dst_method!r}")
            if self.update_start != 0.0:
                raise ValueError(f"a dst run updates its mask from the start: update_start must be 0, "
                                 f"got {self.update_start!r}")
            _number("RunConfig", "drop_fraction", self.drop_fraction, 0, 1, low_open=True, high_open=True)
        elif self.dst_method or self.drop_fraction:
            raise ValueError(f"RunConfig.dst_method and drop_fraction belong to dst runs; a {k} run takes "
                             f"'' and 0, got {self.dst_method!r} and {self.drop_fraction!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"RunConfig.distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}")
        if self.distribution != "uniform" and not (k == "dst" or (k == "zeroinit" and self.parent is None)):
            raise ValueError(f"RunConfig.distribution sets the layer densities of a random mask (dst, zeroinit "
                             f"without parent); a {k} run takes 'uniform', got {self.distribution!r}")
        if self.sparse_init and (self.sparse_init not in _sparse_inits() or k not in ("scratch", "dst")):
            raise ValueError(f"RunConfig.sparse_init must be '' or one of {_sparse_inits()}, and only for runs "
                             f"with a fresh sparse init (scratch, dst); got {self.sparse_init!r} for a {k} run")

    @property
    def root(self) -> "RunConfig":
        """The run at the start of this run's chain of parents, which has none: the dense run of an imp
        chain or of finetune and scratch runs, a gradual or dst run itself."""
        cfg = self
        while cfg.parent is not None:
            cfg = cfg.parent
        return cfg

    @property
    def imp_round(self) -> int:
        """The round of an imp run (1 for the first); 0 for every other kind."""
        if self.kind != "imp":
            return 0
        return 1 + (self.parent.imp_round if self.parent is not None else 0)

    @property
    def run_id(self) -> str:
        return f"{self.kind}-{self.hash()}"


_NESTED = {
    ("RunConfig", "data"): DataConfig,
    ("RunConfig", "model"): ModelConfig,
    ("RunConfig", "train"): TrainConfig,
    ("RunConfig", "parent"): RunConfig,
    ("RunConfig", "partner"): RunConfig,
}


def as_list(value, name: str) -> list:
    """Accept a list, a tuple, or the string form papermill's ``-p name "[0.9, 0.99]"`` passes in."""
    if isinstance(value, str):
        import yaml
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ValueError(f"{name} must be a list such as [0.9, 0.99], got the string {value!r}") from e
        value = parsed if isinstance(parsed, list) else [parsed]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list such as [0.9, 0.99], got {value!r} of type {type(value).__name__}")
    return list(value)


def imp_chain(dense: RunConfig, rounds: int, *, prune_rate: float, **fields) -> list[RunConfig]:
    """The rounds 1..``rounds`` of iterative pruning from ``dense``, each the parent of the next.

    ``fields`` go to every round (``prune``, ``prune_seed``, ``rewind_iter``, ``exclude_output``,
    ``min_density``, ``train``, ``track``...); data, model, seed and, unless given, train and track
    are the dense run's.
    """
    if not isinstance(dense, RunConfig) or dense.kind != "dense":
        raise TypeError(f"imp_chain(dense=...) must be a dense RunConfig, got {dense!r:.80}")
    _check_type("imp_chain", "rounds", rounds, (int,), "an int >= 0")
    if rounds < 0:
        raise ValueError(f"imp_chain(rounds=...) must be an int >= 0, got {rounds!r}")
    fields = {"train": dense.train, "track": dense.track, "seed": dense.seed} | fields
    chain, parent = [], dense
    for _ in range(rounds):
        parent = RunConfig("imp", dense.data, dense.model, parent=parent, prune_rate=prune_rate, **fields)
        chain.append(parent)
    return chain


def redense_config(sparse: RunConfig, *, epochs: int | None = None, lr: float | None = None) -> RunConfig:
    """Re-dense training after ``sparse`` (Han et al. 2017, as the double-descent paper uses it): the
    pruned weights return at zero and the whole network trains for ``epochs`` (default: as many as
    the sparse run) at the constant learning rate ``lr`` (default: the last one of the sparse run's
    schedule), with the sparse run's batch size, momentum and weight decay."""
    if not isinstance(sparse, RunConfig) or sparse.kind not in SPARSE_KINDS:
        raise TypeError(f"redense_config(sparse=...) must be a sparse RunConfig ({', '.join(SPARSE_KINDS)}), "
                        f"got {sparse!r:.80}")
    t = sparse.train
    train = TrainConfig(epochs=t.epochs if epochs is None else epochs, batch_size=t.batch_size,
                        lr=t.last_lr() if lr is None else lr, momentum=t.momentum,
                        weight_decay=t.weight_decay, schedule="constant")
    return RunConfig("redense", sparse.data, sparse.model, train, seed=sparse.seed, parent=sparse, track=sparse.track)
