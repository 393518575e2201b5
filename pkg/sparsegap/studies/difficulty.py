"""Chapter 7, the difficulty of training sparse networks (seed 002, Evci et al. 2019: E-F1, E-F5).

Three ways to a sparse network with the same mask (the paper's Fig. 2):

- **P-S**, the pruned solution: dense training from Init-D while gradual magnitude pruning (Zhu & Gupta)
  raises the sparsity (``RunConfig(kind="gradual")``);
- **L-S**, the lottery solution: P-S's initialization under P-S's final mask (``kind="lottery"``);
- **S-S**, the scratch solution: a new initialization under that mask (``kind="scratch"`` with P-S as
  parent);

and a control, **sparse-init dense**: the dense network whose initial weights outside P-S's mask are
zero, trained dense (``kind="zeroinit"``). E-F5 zeroes a random fraction of the initial weights instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .. import params as P
from ..config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ..runs import RunStore, run_all
from ..verdict import Verdict, clearly_above, mean_std, status_of
from .procedure import check_seeds, check_sparsities, data_config, model_config, train_config

SOLUTIONS = ("P-S", "L-S", "S-S", "sparse-init dense")
KIND = {"L-S": "lottery", "S-S": "scratch", "sparse-init dense": "zeroinit"}

# The runs of this chapter; the gradient-flow chapter declares the same parameters to share P-S, L-S and S-S.
RUN_PARAMETERS = dict(
    **P.data_parameters(),
    seeds=P.seeds(),
    **P.training_parameters(),
    exclude_output=P.Param("bool", "True spares the classifier layer from pruning"),
    prune_start=P.fraction("gradual pruning starts at this fraction of the training steps", high_open=True),
    prune_end=P.fraction("... and reaches the final sparsity at this fraction"),
    prune_every=P.Param("int", "steps between two pruning updates", low=1),
    track=P.Param("strs", "trackers recorded by every run (part of the runs' identity)", min_len=0),
)

PARAMETERS = P.ParameterSpec(
    "07_difficulty_of_sparse_training",
    **RUN_PARAMETERS,
    sparsities=P.sparsities("final sparsities of the pruned solution"),
    zero_fractions=P.Param("floats", "E-F5: fractions of the initial weights set to zero at random", low=0.0,
                           high=1.0, high_open=True, unique=True),
    high_from=P.fraction("E-F1 verdict: the sparsities from this one on count as high", high_open=True),
    tolerance=P.fraction("E-F1 (b), E-F5: accuracy within this many points (as a fraction) of dense counts "
                         "as matching it"),
    **P.fast_training_parameters(), **P.environment_parameters(),
)


def settings(p: dict) -> tuple[DataConfig, ModelConfig, TrainConfig, dict]:
    """The data, model and training configs and the gradual schedule shared by every run, from notebook parameters."""
    data, model, train = data_config(p), model_config(p), train_config(p)
    gradual = dict(update_start=p["prune_start"], update_end=p["prune_end"], update_every=p["prune_every"],
                   exclude_output=p["exclude_output"])
    return data, model, train, gradual


def solution_configs(data: DataConfig, model: ModelConfig, train: TrainConfig, sparsities: Sequence[float],
                     seeds: Sequence[int], *, gradual: dict, track: Sequence[str] = (),
                     solutions: Sequence[str] = SOLUTIONS, **extra) -> dict[tuple[str, float, int], RunConfig]:
    """Every run keyed by (solution, sparsity, seed), the dense reference under ("dense", 0.0, seed).

    ``extra`` goes to the S-S runs only (e.g. ``sparse_init="unit"``, keyed "S-S unit")."""
    unknown = set(solutions) - set(SOLUTIONS)
    if unknown:
        raise ValueError(f"solutions must be drawn from {SOLUTIONS}, got {sorted(unknown)}")
    track = tuple(track)
    out = {}
    for seed in check_seeds(seeds):
        out[("dense", 0.0, seed)] = RunConfig("dense", data, model, train, seed=seed, track=track)
        for s in check_sparsities(sparsities):
            ps = RunConfig("gradual", data, model, train, seed=seed, sparsity=s, track=track, **gradual)
            out[("P-S", s, seed)] = ps
            for sol in solutions:
                if sol != "P-S":
                    kw = extra if sol == "S-S" else {}
                    out[(sol, s, seed)] = RunConfig(KIND[sol], data, model, train, seed=seed, parent=ps,
                                                    exclude_output=gradual["exclude_output"], track=track, **kw)
    return out


def zeroinit_configs(data: DataConfig, model: ModelConfig, train: TrainConfig, fractions: Sequence[float],
                     seeds: Sequence[int], *, exclude_output: bool, track: Sequence[str] = ()) -> dict:
    """E-F5: dense training from an init with a random fraction of its prunable weights zeroed, keyed
    (fraction, seed); fraction 0 is the dense run itself."""
    out = {}
    for seed in check_seeds(seeds):
        for f in sorted(set([0.0, *fractions])):
            out[(f, seed)] = (RunConfig("dense", data, model, train, seed=seed, track=tuple(track)) if f == 0 else
                              RunConfig("zeroinit", data, model, train, seed=seed, sparsity=f,
                                        exclude_output=exclude_output, track=tuple(track)))
    return out


@dataclass
class Results:
    runs: dict

    def table(self) -> pd.DataFrame:
        rows = []
        for key, run in self.runs.items():
            h, diverged = run.history, bool(run.history.get("diverged"))
            rows.append({"key": key[0], "sparsity": key[1] if len(key) == 3 else key[0], "seed": key[-1],
                         "diverged": diverged,
                         "train_acc": np.nan if diverged else h["train_acc"][-1],
                         "test_acc": np.nan if diverged else h["test_acc"][-1]})
        return pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        g = self.table().groupby(["key", "sparsity"])[["train_acc", "test_acc"]]
        return g.mean().join(g.std(ddof=1).add_suffix("_std")).reset_index()

    def values(self, key, sparsity, column: str = "test_acc") -> list[float]:
        t = self.table()
        return t[(t.key == key) & (t.sparsity == sparsity) & ~t.diverged][column].tolist()

    def diverged(self) -> list[str]:
        return [f"{k} diverged at epoch {r.history['diverged']['epoch']}" for k, r in self.runs.items()
                if r.history.get("diverged")]


def run_solutions(configs: dict, *, store: RunStore | None = None, device: str = "auto",
                  progress: bool = True) -> Results:
    runs = run_all(list(configs.values()), store, device=device, progress=progress)
    return Results(dict(zip(configs.keys(), runs)))


# ------------------------------------------------------------------------------------- verdicts

CLAIM_GAP = ("At high sparsity, the lottery (L-S) and scratch (S-S) solutions fall behind the pruned solution "
             "(P-S) that gave them their mask.")
CLAIM_INIT = ("Sparse-init dense training (the dense network with the initial weights outside P-S's mask set to "
              "zero) reaches the dense network's accuracy: the initialization alone is not why sparse training fails.")
CLAIM_ZERO = ("Zeroing a random fraction of the initial weights costs nothing until more than about 99% of them "
              "are zero, then accuracy drops sharply.")


def gap_verdict(res: Results, sparsities: Sequence[float], high_from: float, *, scale: str = "") -> Verdict:
    """E-F1 (a): at every sparsity >= ``high_from``, P-S's last-epoch test accuracy is clearly (two standard
    errors over seeds) above L-S's and above S-S's. Reproduced if every such comparison holds, partly if some."""
    high = [s for s in sparsities if s >= high_from]
    parts, reasons = [], []
    for s in high:
        ps = res.values("P-S", s)
        line = f"sparsity {s:g}: P-S {mean_std(ps)}"
        for other in ("L-S", "S-S"):
            ok = clearly_above(ps, res.values(other, s))
            parts.append(ok)
            line += f", {other} {mean_std(res.values(other, s))} (behind clearly: {'yes' if ok else 'no'})"
        reasons.append(line + ".")
    if not high:
        return Verdict("E-F1", CLAIM_GAP, "not reproduced", (f"No sparsity at or above {high_from:g}.",), scale,
                       part="a")
    reasons.append(f"{sum(parts)} of {len(parts)} comparisons at sparsity >= {high_from:g} show the gap "
                   f"(last-epoch test accuracy, seed mean ± std).")
    return Verdict("E-F1", CLAIM_GAP, status_of(parts), tuple(reasons), scale, part="a")


def _matches(a, b, tolerance: float) -> bool:
    """Means within ``tolerance`` or within two standard errors of the difference."""
    return abs(np.mean(a) - np.mean(b)) <= tolerance or not (clearly_above(a, b) or clearly_above(b, a))


def init_verdict(res: Results, sparsities: Sequence[float], tolerance: float, *, scale: str = "") -> Verdict:
    """E-F1 (b): at every sparsity, sparse-init dense training's test accuracy matches the dense network's
    (means within ``tolerance``, or no difference beyond two standard errors)."""
    dense = [v for k, r in res.runs.items() if k[0] == "dense" for v in [r.history["test_acc"][-1]]]
    parts, reasons = [], []
    for s in sparsities:
        v = res.values("sparse-init dense", s)
        ok = _matches(v, dense, tolerance)
        parts.append(ok)
        reasons.append(f"sparsity {s:g}: sparse-init dense {mean_std(v)} against dense {mean_std(dense)} "
                       f"({'matches' if ok else 'does not match'}).")
    return Verdict("E-F1", CLAIM_INIT, status_of(parts), tuple(reasons), scale, part="b")


def zero_verdict(res: Results, fractions: Sequence[float], tolerance: float, *, scale: str = "") -> Verdict:
    """E-F5: (1) every zeroed fraction up to 0.99 matches fraction 0 (within ``tolerance`` or two standard
    errors); (2) the largest fraction above 0.99, if the grid has one, is clearly below fraction 0 by more
    than ``tolerance``."""
    base = res.values(0.0, 0.0)
    low = [f for f in sorted(fractions) if 0 < f <= 0.99]
    high = [f for f in sorted(fractions) if f > 0.99]
    reasons = [f"zeroed {f:g}: {mean_std(res.values(f, f))}" for f in [0.0, *sorted(fractions)]]
    flat = all(_matches(res.values(f, f), base, tolerance) for f in low)
    parts = [flat]
    if high:
        top = res.values(high[-1], high[-1])
        drop = clearly_above(base, top) and np.mean(base) - np.mean(top) > tolerance
        parts.append(drop)
        reasons.append(f"Up to 0.99 zeroed, accuracy matches the dense init: {'yes' if flat else 'no'}; at "
                       f"{high[-1]:g} it drops clearly by more than {tolerance:.0%}: {'yes' if drop else 'no'}.")
    else:
        reasons.append(f"Up to 0.99 zeroed, accuracy matches the dense init: {'yes' if flat else 'no'}; the grid has "
                       f"no fraction above 0.99 to test the drop.")
    return Verdict("E-F5", CLAIM_ZERO, status_of(parts), tuple(reasons), scale)


def planned_runs(p: dict) -> list:
    """The solutions and the zeroed-init runs (for ``bookbuild --plan``)."""
    data, model, train, gradual = settings(p)
    sols = solution_configs(data, model, train, p["sparsities"], p["seeds"], gradual=gradual, track=p["track"])
    zero = zeroinit_configs(data, model, train, p["zero_fractions"], p["seeds"], exclude_output=p["exclude_output"],
                            track=p["track"])
    return [*sols.values(), *zero.values()]
