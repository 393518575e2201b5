"""The paper's Fig. 2 pipeline and the two regimes of Fig. 1.

Init-D -> Sol-D -> one-shot global magnitude mask -> Init-F (= masked Sol-D) -> Sol-F,
and Init-S (fresh init, same mask) -> Sol-S. One Sol-D per seed serves every sparsity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .pruning import check_sparsity
from .runs import Run, RunStore, run_all

STAGES = ("Sol-D", "Sol-F", "Sol-S")
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
    return seeds


def two_regime_configs(data: DataConfig, model: ModelConfig, train: TrainConfig, sparsities: Sequence[float],
                       seeds: Sequence[int], *, finetune_train: TrainConfig | None = None,
                       scratch_train: TrainConfig | None = None, exclude_output: bool = False
                       ) -> dict[tuple[str, float, int], RunConfig]:
    """Every run of the experiment, keyed by (stage, sparsity, seed). Sol-D has sparsity 0."""
    configs = {}
    for seed in check_seeds(seeds):
        dense = RunConfig("dense", data, model, train, seed=seed)
        configs[("Sol-D", 0.0, seed)] = dense
        for s in check_sparsities(sparsities):
            for stage, tcfg in (("Sol-F", finetune_train or train), ("Sol-S", scratch_train or train)):
                configs[(stage, s, seed)] = RunConfig(KIND_OF_STAGE[stage], data, model, tcfg, seed=seed,
                                                      sparsity=s, exclude_output=exclude_output, parent=dense)
    return configs


@dataclass
class Experiment:
    """Runs keyed by (stage, sparsity, seed), with a tidy table of their final metrics."""

    runs: dict[tuple[str, float, int], Run]

    @property
    def table(self) -> pd.DataFrame:
        rows = []
        for (stage, s, seed), run in self.runs.items():
            rows.append({"stage": stage, "sparsity": s, "seed": seed, "run_id": run.config.run_id,
                         **{m: run.final[m] for m in METRICS}})
        return pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        """Mean and standard deviation over seeds, per stage and sparsity."""
        g = self.table.groupby(["stage", "sparsity"])[list(METRICS)]
        out = g.mean().join(g.std(ddof=1 if self.n_seeds > 1 else 0), rsuffix="_std").reset_index()
        return out

    @property
    def n_seeds(self) -> int:
        return len({k[2] for k in self.runs})

    @property
    def sparsities(self) -> list[float]:
        return sorted({k[1] for k in self.runs if k[0] != "Sol-D"})

    def history(self, stage: str, sparsity: float, seed: int) -> dict:
        return self.runs[(stage, 0.0 if stage == "Sol-D" else sparsity, seed)].history


def run_two_regimes(data: DataConfig, model: ModelConfig, train: TrainConfig, sparsities: Sequence[float],
                    seeds: Sequence[int], *, store: RunStore | None = None, device: str = "auto",
                    progress: bool = True, executor=None, **kwargs) -> Experiment:
    configs = two_regime_configs(data, model, train, sparsities, seeds, **kwargs)
    runs = run_all(list(configs.values()), store, executor=executor, device=device, progress=progress)
    return Experiment(dict(zip(configs.keys(), runs)))


def classify_regimes(summary: pd.DataFrame, *, train_gap_tol: float = 0.01, near_optimal: float = 0.98
                     ) -> pd.DataFrame:
    """Label every sparsity with its regime, by a stated rule on the seed means.

    With train gap = Sol-F train accuracy - Sol-S train accuracy and test gap likewise:
    - ``optimization``: train gap > ``train_gap_tol`` (Sol-S fails to fit what Sol-F fits);
    - ``generalization``: train gap <= tol, Sol-S train accuracy >= ``near_optimal``, test gap > 0;
    - ``no gap``: train gap <= tol, Sol-S near optimal, test gap <= 0;
    - ``both underfit``: train gap <= tol but Sol-S below ``near_optimal``.
    """
    f = summary[summary.stage == "Sol-F"].set_index("sparsity")
    s = summary[summary.stage == "Sol-S"].set_index("sparsity")
    out = pd.DataFrame({
        "train_acc_F": f.train_acc, "train_acc_S": s.train_acc,
        "test_acc_F": f.test_acc, "test_acc_S": s.test_acc,
    })
    out["train_gap"] = out.train_acc_F - out.train_acc_S
    out["test_gap"] = out.test_acc_F - out.test_acc_S

    def label(r):
        if r.train_gap > train_gap_tol:
            return "optimization"
        if r.train_acc_S < near_optimal:
            return "both underfit"
        return "generalization" if r.test_gap > 0 else "no gap"

    out["regime"] = out.apply(label, axis=1)
    return out.reset_index()


def two_regimes_verdict(regimes: pd.DataFrame, summary: pd.DataFrame) -> tuple[str, list[str]]:
    """Verdict on the paper's claim from our numbers: (reproduced | partly | not reproduced, reasons)."""
    labels = list(regimes.sort_values("sparsity").regime)
    gen = [i for i, r in enumerate(labels) if r == "generalization"]
    opt = [i for i, r in enumerate(labels) if r == "optimization"]
    ordered = bool(gen) and bool(opt) and max(gen) < min(opt)
    f = summary[summary.stage == "Sol-F"].set_index("sparsity").train_entropy
    s = summary[summary.stage == "Sol-S"].set_index("sparsity").train_entropy
    entropy_higher = float((s > f).mean())
    gap_everywhere = float((regimes.test_gap > 0).mean())
    reasons = [
        f"Sol-F beats Sol-S on test accuracy at {gap_everywhere:.0%} of the sparsities.",
        f"Generalization regime at sparsities {[float(regimes.sparsity[i]) for i in gen] or 'none'}; "
        f"optimization regime at {[float(regimes.sparsity[i]) for i in opt] or 'none'}"
        + (" (in that order along the sparsity axis)." if ordered else "."),
        f"Sol-S has the higher training-prediction entropy at {entropy_higher:.0%} of the sparsities.",
    ]
    if ordered and gap_everywhere >= 0.75 and entropy_higher >= 0.75:
        return "reproduced", reasons
    if (gen or opt) and gap_everywhere >= 0.5:
        return "partly", reasons
    return "not reproduced", reasons
