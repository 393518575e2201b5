"""The paper's Fig. 2 procedure, shared by every chapter that compares Sol-D, Sol-F and Sol-S.

Init-D -> Sol-D -> one-shot global magnitude mask -> Init-F (= masked Sol-D) -> Sol-F,
and Init-S (fresh init, same mask) -> Sol-S. One Sol-D per seed serves every sparsity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from .. import stats
from ..config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ..pruning import check_sparsity
from ..runs import Run, RunStore, run_all
from ..runs.plan import data_sizes

KIND_OF_STAGE = {"Sol-D": "dense", "Sol-F": "finetune", "Sol-S": "scratch"}
METRICS = ("train_acc", "test_acc", "train_loss", "test_loss", "train_entropy", "test_entropy")


def check_sparsities(sparsities: Sequence[float]) -> tuple[float, ...]:
    if isinstance(sparsities, (str, bytes)) or not hasattr(sparsities, "__iter__"):
        raise TypeError(f"sparsities must be a list of numbers in [0, 1), got {sparsities!r}")
    out = tuple(check_sparsity(s, "sparsities[i]") for s in sparsities)
    if not out:
        raise ValueError("sparsities must not be empty")
    if len(set(out)) != len(out):
        raise ValueError(f"sparsities has duplicates: {sparsities!r}")
    return tuple(sorted(out))


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"seeds must be a list of ints, got {seeds!r}")
    seeds = tuple(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of ints, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds has duplicates: {list(seeds)!r}; each seed is one Sol-D, list it once")
    return seeds


# The most samples a Tr(F) tracker measures on (the "~N" of its spec): a larger set is measured on a fixed random
# subset of this size. Chosen before any verdict, not tuned: on CIFAR's 50,000 training images it cuts the
# per-sample pass of each measurement 5-fold (a ResNet-20's measurement takes 4.95 times as long on 5 times the
# samples). The per-sample terms (sampled labels) of chapter 1's cpu-profile runs (LeNet-300-100 on 4,000
# Fashion-MNIST images; tests/bench/bench_fisher_subset.py) have a relative sd of 0.03 to 2 at the initialisation
# and of 2 to 20 once trained (a fitted network: most terms near 0, a few labels drawn on unlikely classes huge),
# so the relative standard error at 10,000 samples is at most 2% at the start and 2% to 20% at the end, against
# curves that span decades on the figures' log scale, and below that of the cpu profile's whole 4,000 samples.
# Every run measures the one subset (seed 0), so comparisons between runs stay paired.
FISHER_SAMPLES = 10_000


def fisher_spec(fisher_every: int, n_samples: int, subset: str | None = None) -> str:
    """The Tr(F) tracker spec every ``fisher_every`` epochs on a set of ``n_samples`` (``subset`` of the
    training data, the whole of it if None): ``"fisher_trace@5"``, or ``"fisher_trace~10000@5"`` when the set
    has more than :data:`FISHER_SAMPLES` samples. A set of at most that many keeps the spelling it always had,
    so that the runs it names keep their hashes."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 0:
        raise ValueError(f"n_samples must be an int >= 0 (the samples Tr(F) is tracked on), got {n_samples!r}")
    cap = f"~{FISHER_SAMPLES}" if n_samples > FISHER_SAMPLES else ""
    return f"fisher_trace{':' + subset if subset else ''}{cap}@{fisher_every}"


def fisher_track(fisher_every: int, n_samples: int) -> tuple[str, ...]:
    """The tracker that records Tr(F) every ``fisher_every`` epochs while a run trains on ``n_samples`` training
    samples (:func:`train_samples`); none for 0. Over :data:`FISHER_SAMPLES` samples it measures on a fixed
    subset of that many (:func:`fisher_spec`).

    A tracker is part of a run's identity (its hash), so every chapter that shares the two-regimes runs
    must spell it the same way: here, once.
    """
    return (fisher_spec(fisher_every, n_samples),) if fisher_every else ()


def train_samples(data: DataConfig) -> int:
    """How many training samples ``data`` has, known without loading it (its ``train_size``, or the dataset's
    training set, less its ``validation`` split)."""
    return data_sizes(data)[1]


def two_regime_configs(data: DataConfig, model: ModelConfig, train: TrainConfig, sparsities: Sequence[float],
                       seeds: Sequence[int], *, finetune_train: TrainConfig | None = None,
                       scratch_train: TrainConfig | None = None, exclude_output: bool = False,
                       min_density: float = 0.0, track: Sequence[str] = (),
                       stages: Sequence[str] = ("Sol-F", "Sol-S")) -> dict[tuple[str, float, int], RunConfig]:
    """Every run of the experiment, keyed by (stage, sparsity, seed). Sol-D has sparsity 0.

    ``track`` names metrics recorded during every run (e.g. :func:`fisher_track`, see
    :mod:`sparsegap.trackers`); ``min_density`` is the per-layer floor of the masks.
    """
    unknown = set(stages) - {"Sol-F", "Sol-S"}
    if unknown or not stages:
        raise ValueError(f"stages must be a non-empty subset of ('Sol-F', 'Sol-S'), got {stages!r}")
    configs = {}
    track = tuple(track)
    for seed in check_seeds(seeds):
        dense = RunConfig("dense", data, model, train, seed=seed, track=track)
        configs[("Sol-D", 0.0, seed)] = dense
        for s in check_sparsities(sparsities):
            for stage, tcfg in (("Sol-F", finetune_train or train), ("Sol-S", scratch_train or train)):
                if stage in stages:
                    configs[(stage, s, seed)] = RunConfig(
                        KIND_OF_STAGE[stage], data, model, tcfg, seed=seed, sparsity=s,
                        exclude_output=exclude_output, parent=dense, min_density=min_density, track=track)
    return configs


@dataclass
class Experiment:
    """Runs keyed by (stage, sparsity, seed), with a tidy table of their final metrics."""

    runs: dict[tuple[str, float, int], Run]

    @property
    def table(self) -> pd.DataFrame:
        """One row per run with its final metrics. A diverged run (non-finite loss) has NaN metrics
        and ``diverged`` set, so that means over seeds never count it as a trained network."""
        rows = []
        for (stage, s, seed), run in self.runs.items():
            diverged = run.diverged
            metrics = {m: float("nan") if diverged else run.final[m] for m in METRICS}
            rows.append({"stage": stage, "sparsity": s, "seed": seed, "run_id": run.config.run_id,
                         "diverged": bool(diverged), **metrics})
        return pd.DataFrame(rows)

    def diverged(self) -> list[str]:
        """Readable lines for every run whose training diverged, with the epoch it happened."""
        out = []
        for (stage, s, seed), run in self.runs.items():
            d = run.diverged
            if d:
                where = f"s={s:g} " if stage != "Sol-D" else ""
                out.append(f"{stage} {where}seed {seed} diverged at epoch {d['epoch']} (loss {d['loss']})")
        return out

    def summary(self) -> pd.DataFrame:
        """Mean and standard deviation over seeds, per stage and sparsity."""
        out = stats.seed_summary(self.table, ["stage", "sparsity"], list(METRICS)).drop(columns="seeds")
        std = [f"{m}_std" for m in METRICS]
        out[std] = out[std].fillna(0.0)      # one seed: no spread to draw
        return out

    @property
    def n_seeds(self) -> int:
        return len({k[2] for k in self.runs})

    @property
    def sparsities(self) -> list[float]:
        return sorted({k[1] for k in self.runs if k[0] != "Sol-D"})

    def trained_histories(self, stage: str, sparsity: float) -> list[dict]:
        """The histories of one stage and sparsity over seeds, diverged runs left out (their lists are shorter)."""
        runs = [self.run(stage, sparsity, seed) for seed in sorted({k[2] for k in self.runs})]
        return [r.history for r in runs if not r.diverged]

    def run(self, stage: str, sparsity: float, seed: int) -> Run:
        """The run of one stage, sparsity and seed (Sol-D's at any sparsity: there is one per seed)."""
        return self.runs[(stage, 0.0 if stage == "Sol-D" else sparsity, seed)]

    def history(self, stage: str, sparsity: float, seed: int) -> dict:
        return self.run(stage, sparsity, seed).history


def run_experiment(configs: dict[tuple[str, float, int], RunConfig], store: RunStore | None = None, *,
                   device: str = "auto", progress: bool = True, executor=None) -> Experiment:
    """Train (or load) the runs of :func:`two_regime_configs`-style ``configs``, in their order, as one sweep on
    ``executor`` (a keyword of :mod:`sparsegap.runs.executors`; None: this process)."""
    runs = run_all(list(configs.values()), store, executor=executor, device=device, progress=progress)
    return Experiment(dict(zip(configs.keys(), runs)))


def run_two_regimes(data: DataConfig, model: ModelConfig, train: TrainConfig, sparsities: Sequence[float],
                    seeds: Sequence[int], *, store: RunStore | None = None, device: str = "auto",
                    progress: bool = True, executor=None, **kwargs) -> Experiment:
    configs = two_regime_configs(data, model, train, sparsities, seeds, **kwargs)
    return run_experiment(configs, store, device=device, progress=progress, executor=executor)


def executor_of(p: dict, executor=None):
    """The executor a chapter's sweeps train on: ``executor`` when one is given, else the notebook's ``executor``
    parameter. run_all trains in this process unless a sweep names an executor, so the run functions that take a
    chapter's parameters name it; it never changes what a run stores, only where it trains."""
    return p.get("executor") if executor is None else executor


def data_config(p: dict, **fields) -> DataConfig:
    """The DataConfig of a chapter from its checked parameters (``params.data_parameters``); ``fields``
    add the rest (label noise, ...)."""
    return DataConfig(p["dataset"], train_size=p["train_size"], test_size=p["test_size"], **fields)


def model_config(p: dict) -> ModelConfig:
    """The ModelConfig of a chapter from its checked parameters (``model`` and ``width`` of
    ``params.data_parameters``, and ``init`` where the chapter has it)."""
    return ModelConfig(p["model"], width=p["width"], **{k: p[k] for k in ("init",) if k in p})


def train_config(p: dict) -> TrainConfig:
    """The TrainConfig of a chapter from its checked parameters (``params.training_parameters``, and
    ``schedule``, ``augment``, ``precision``, ``channels_last``, ``compile_mode`` where the chapter has them)."""
    extra = {k: p[k] for k in ("schedule", "augment", "precision", "channels_last") if k in p}
    if "compile_mode" in p:
        extra["compile"] = p["compile_mode"]
    return TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], momentum=p["momentum"],
                       weight_decay=p["weight_decay"], milestones=tuple(p["milestones"]), gamma=p["gamma"], **extra)


def describe_scale(data: DataConfig, model: ModelConfig, seeds: Sequence[int], epochs: int | str) -> str:
    """The setting a verdict was measured at, in one line for the ledger."""
    size = f"{data.train_size} training samples" if data.train_size else "the full training set"
    return f"{model.label} on {data.name} ({size}), {len(seeds)} seed{'s' if len(seeds) != 1 else ''}, {epochs} epochs"


def measured_samples(cfg, size: int | None) -> int:
    """How many samples :func:`measurement_data` gives for ``cfg``'s training set: a plan's count, no data loaded."""
    n = data_sizes(cfg.data)[1]
    return n if size is None else min(size, n)


def measurement_data(x, y, size: int | None, *, seed: int = 0):
    """The samples a chapter measures its networks on (Tr(F), Tr(H), the Jacobian norm: chapters 3 and 12): all
    of ``(x, y)`` (``size=None``), or ``size`` of them drawn without replacement by a generator seeded with
    ``seed`` (the Jacobian norm alone costs one backward pass per class and sample)."""
    import torch
    if size is None:
        return x, y
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= len(x):
        raise ValueError(f"measure_size={size!r} must be None (every training sample) or an int from 1 to "
                         f"{len(x)}, the training set's size")
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:size].sort().values
    return x[idx], y[idx]
