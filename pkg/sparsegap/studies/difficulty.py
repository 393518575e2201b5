"""Chapter 9, the difficulty of training sparse networks (seed 002, Evci et al. 2019: E-F1, E-F5).

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

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .. import params as P
from ..config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ..runs import RunStore, run_all
from .. import stats
from ..stats import Interval
from ..verdict import Evidence, Verdict, all_of, detectable_line, status_of
from .procedure import check_seeds, check_sparsities, data_config, executor_of, model_config, train_config

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
    "09_difficulty_of_sparse_training",
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
            h, diverged = run.history, bool(run.diverged)
            rows.append({"key": key[0], "sparsity": key[1] if len(key) == 3 else key[0], "seed": key[-1],
                         "diverged": diverged,
                         "train_acc": np.nan if diverged else h["train_acc"][-1],
                         "test_acc": np.nan if diverged else h["test_acc"][-1]})
        return pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        """Seed mean and std of the last-epoch accuracies per (key, sparsity), diverged runs left out."""
        t = self.table()
        return stats.seed_summary(t[~t.diverged], ["key", "sparsity"], ["train_acc", "test_acc"])

    def paired(self, a: tuple, b: tuple, column: str = "test_acc") -> tuple[list[int], np.ndarray, np.ndarray]:
        """(seeds, values of ``a``, values of ``b``) over the seeds where both ``a`` and ``b`` = (key, sparsity)
        have a run that did not diverge, in seed order: the pairs of a paired difference."""
        t = self.table()
        t = t[~t.diverged]
        va, vb = (t[(t.key == k) & (t.sparsity == s)].set_index("seed")[column] for k, s in (a, b))
        seeds = sorted(set(va.index) & set(vb.index))
        return seeds, va.loc[seeds].to_numpy(float), vb.loc[seeds].to_numpy(float)

    def values(self, key, sparsity, column: str = "test_acc") -> list[float]:
        t = self.table()
        return t[(t.key == key) & (t.sparsity == sparsity) & ~t.diverged][column].tolist()

    def diverged(self) -> list[str]:
        return [f"{k} diverged at epoch {r.diverged['epoch']}" for k, r in self.runs.items() if r.diverged]


def run_solutions(configs: dict, *, store: RunStore | None = None, device: str = "auto",
                  progress: bool = True, executor=None) -> Results:
    runs = run_all(list(configs.values()), store, device=device, progress=progress, executor=executor)
    return Results(dict(zip(configs.keys(), runs)))


def configs(p: dict) -> tuple[dict, dict]:
    """(the solutions, the zeroed-init runs) of the chapter, from its checked parameters: the one place they are
    built, for the notebook and the plan (:func:`solution_configs`, :func:`zeroinit_configs`)."""
    data, model, train, gradual = settings(p)
    sols = solution_configs(data, model, train, p["sparsities"], p["seeds"], gradual=gradual, track=p["track"])
    zero = zeroinit_configs(data, model, train, p["zero_fractions"], p["seeds"], exclude_output=p["exclude_output"],
                            track=p["track"])
    return sols, zero


def run(p: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True,
        executor=None) -> tuple[Results, Results]:
    """Train (or load) the solutions, then the zeroed-init runs (:func:`configs`)."""
    sols, zero = configs(p)
    executor = executor_of(p, executor)
    return (run_solutions(sols, store=store, device=device, progress=progress, executor=executor),
            run_solutions(zero, store=store, device=device, progress=progress, executor=executor))


# ------------------------------------------------------------------------------------- verdicts
# The helpers below are shared by the chapters that read these runs (gradient flow, energy landscape).


def detect_phrase(iv: Interval, fmt: str) -> str:
    """"the smallest effect these 3 seeds detect is X" (or that one seed detects none), for a finding: from
    :meth:`sparsegap.stats.Interval.detectable` of the paired interval ``iv``."""
    de = iv.detectable()
    if not math.isfinite(de):
        return f"{iv.n} seed{'s' if iv.n != 1 else ''} can detect no effect"
    return f"the smallest effect these {iv.n} seeds detect is {de:{fmt}}"


def _gap(res: Results, a: tuple, b: tuple) -> tuple[list[int], np.ndarray, Interval | None]:
    """(seeds, per-seed differences a - b, their paired interval or None without a pair)."""
    seeds, x, y = res.paired(a, b)
    return seeds, x - y, (stats.paired_difference(x, y) if seeds else None)


CLAIM_GAP = ("At high sparsity, the lottery (L-S) and scratch (S-S) solutions fall behind the pruned solution "
             "(P-S) that gave them their mask.")
CLAIM_INIT = ("Sparse-init dense training (the dense network with the initial weights outside P-S's mask set to "
              "zero) reaches the dense network's accuracy: the initialization alone is not why sparse training fails.")
CLAIM_ZERO = ("Zeroing a random fraction of the initial weights costs nothing until more than about 99% of them "
              "are zero, then accuracy drops sharply.")


def gap_verdict(res: Results, sparsities: Sequence[float], high_from: float, *, scale: str = "") -> Verdict:
    """E-F1 (a): at every sparsity >= ``high_from``, P-S's last-epoch test accuracy is clearly above L-S's and
    above S-S's: the 95% interval of the paired difference (the three share Init-D's seed and P-S's mask) lies
    above zero. Reproduced if every comparison holds, partly if some do, not reproduced if none does and one
    lies clearly below zero, inconclusive when every gap is within noise (then the verdict says how large a
    gap these seeds could have detected). The key effect is P-S − S-S at the highest sparsity."""
    high = sorted((s for s in sparsities if s >= high_from), reverse=True)
    if not high:
        return Verdict("E-F1", CLAIM_GAP, "inconclusive", (f"No sparsity at or above {high_from:g}: nothing to test.",),
                       scale, part="a", finding=f"The sweep has no sparsity at or above {high_from:g}, so the gap "
                                                f"cannot be tested.")
    evidence, seeds = [], set()
    for s in high:
        for other in ("S-S", "L-S"):
            sd, _, iv = _gap(res, ("P-S", s), (other, s))
            if iv is None:
                continue
            seeds |= set(sd)
            evidence.append(Evidence(f"P-S − {other}, test accuracy, s = {s:g}", iv, ".1%",
                                     paper="P-S ahead at every sparsity (Fig. 1)" if not evidence else "",
                                     outcome=iv.test(+1)))
    if not evidence:
        return Verdict("E-F1", CLAIM_GAP, "inconclusive", ("No seed has both P-S and L-S or S-S.",), scale, part="a",
                       finding="No seed has P-S beside L-S or S-S (diverged or missing runs), so the gap cannot be tested.")
    parts = [e.outcome for e in evidence]
    status, key = status_of(parts), evidence[0]
    power = detectable_line("gap", max((e.effect for e in evidence), key=lambda iv: iv.detectable()), ".1%")
    n_clear = sum(o == "holds" for o in parts)
    if status == "inconclusive":
        finding = (f"Every gap between P-S and L-S or S-S at s ≥ {high_from:g} is within noise ({key.name}: "
                   f"{key.effect.format('.1%')}); {detect_phrase(key.effect, '.1%')}.")
    elif status == "not reproduced":
        finding = (f"P-S is not ahead: no gap at s ≥ {high_from:g} is clear and {parts.count('fails')} lie clearly "
                   f"below zero ({key.name}: {key.effect.format('.1%')}).")
    else:
        finding = (f"P-S tests {key.effect.format('.1%')} above S-S at s = {high[0]:g}; {n_clear} of {len(parts)} "
                   f"gaps at s ≥ {high_from:g} are clear.")
    reasons = (f"{n_clear} of {len(parts)} paired gaps (P-S minus L-S or S-S of the same seed, last-epoch test "
               f"accuracy) at s ≥ {high_from:g} lie clearly above zero.", power)
    return Verdict("E-F1", CLAIM_GAP, status, reasons, scale, part="a", finding=finding, evidence=tuple(evidence),
                   seeds=tuple(sorted(seeds)))


def _not_worse(iv: Interval, tolerance: float) -> str:
    """Matching a reference within ``tolerance``: holds when the interval of (this − reference) lies above
    −tolerance, fails when it lies below it (clearly worse by more than the tolerance)."""
    return iv.shifted(tolerance).test(+1)


def init_verdict(res: Results, sparsities: Sequence[float], tolerance: float, *, scale: str = "") -> Verdict:
    """E-F1 (b): at every sparsity, sparse-init dense training matches the dense network: the 95% interval of
    the paired difference (both start from the same seed's Init-D) lies above −``tolerance`` (no worse than
    dense by more than the tolerance). It fails where the interval lies wholly below −``tolerance``."""
    evidence, seeds = [], set()
    for s in sorted(sparsities, reverse=True):
        sd, _, iv = _gap(res, ("sparse-init dense", s), ("dense", 0.0))
        if iv is None:
            continue
        seeds |= set(sd)
        evidence.append(Evidence(f"sparse-init dense − dense, test accuracy, s = {s:g}", iv, ".1%",
                                 paper="matches dense (about 76% on ImageNet, App. B)" if not evidence else "",
                                 outcome=_not_worse(iv, tolerance)))
    if not evidence:
        return Verdict("E-F1", CLAIM_INIT, "inconclusive", ("No seed has both runs.",), scale, part="b",
                       finding="No seed has sparse-init dense beside dense, so the claim cannot be tested.")
    parts = [e.outcome for e in evidence]
    status, key = status_of(parts), evidence[0]
    n_ok = parts.count("holds")
    if status == "inconclusive":
        finding = (f"Sparse-init dense tests {key.effect.format('.1%')} against dense at s = {max(sparsities):g}; "
                   f"{key.effect.n} seeds cannot tell whether it is within {tolerance:.0%} of dense "
                   f"({detect_phrase(key.effect, '.1%')}).")
    else:
        finding = (f"Sparse-init dense tests {key.effect.format('.1%')} against dense at "
                   f"s = {max(sparsities):g}; it is within {tolerance:.0%} of dense at {n_ok} of {len(parts)} sparsities.")
    reasons = (f"Matching: the 95% interval of (sparse-init dense − dense) lies above −{tolerance:.0%}.",
               detectable_line("difference", key.effect, ".1%"))
    return Verdict("E-F1", CLAIM_INIT, status, reasons, scale, part="b", finding=finding, evidence=tuple(evidence),
                   seeds=tuple(sorted(seeds)))


def zero_verdict(res: Results, fractions: Sequence[float], tolerance: float, *, scale: str = "") -> Verdict:
    """E-F5, in two parts: (1) every zeroed fraction up to 0.99 matches fraction 0 (the same seed's dense run):
    the interval of the paired difference lies above −``tolerance``; (2) at the largest fraction above 0.99
    accuracy drops by more than ``tolerance``: the interval of the paired drop lies above ``tolerance``
    (it fails when the drop is clearly smaller). Without a fraction above 0.99 part (2) cannot be tested."""
    low = [f for f in sorted(fractions) if 0 < f <= 0.99]
    high = [f for f in sorted(fractions) if f > 0.99]
    evidence, seeds, flat, drop, drop_iv = [], set(), [], "undecided", None
    if high:
        sd, _, iv = _gap(res, (0.0, 0.0), (high[-1], high[-1]))
        if iv is not None:
            seeds |= set(sd)
            drop_iv, drop = iv, iv.shifted(-tolerance).test(+1)
            evidence.append(Evidence(f"drop in test accuracy, 0 → {high[-1]:g} of the init zeroed", iv, ".1%",
                                     paper="sharp drop only above 99% zeroed (Fig. 5)", outcome=drop))
    for f in low:
        sd, _, iv = _gap(res, (f, f), (0.0, 0.0))
        if iv is None:
            continue
        seeds |= set(sd)
        o = _not_worse(iv, tolerance)
        flat.append(o)
        evidence.append(Evidence(f"{f:g} zeroed − none zeroed, test accuracy", iv, ".1%",
                                 paper="no significant difference (Fig. 5)" if len(flat) == 1 else "", outcome=o))
    flat_part = all_of(flat)
    status = status_of([flat_part, drop])
    reasons = [f"Up to 0.99 zeroed: within {tolerance:.0%} of the dense init at {flat.count('holds')} of {len(flat)} "
               f"fractions ({flat_part})."]
    if not high:
        reasons.append("The grid has no fraction above 0.99, so the drop cannot be tested.")
        finding = "The grid has no fraction above 0.99 zeroed, so the drop the paper reports cannot be tested."
    elif drop_iv is None:
        finding = "No seed has both the dense run and the most zeroed one, so the drop cannot be tested."
    else:
        key = evidence[0]
        finding = (f"Zeroing {high[-1]:g} of the init costs {key.effect.format('.1%')} test accuracy; up to 0.99 "
                   f"zeroed, {flat.count('holds')} of {len(flat)} fractions stay within {tolerance:.0%} of dense.")
        reasons.append(f"The drop counts when its 95% interval lies above {tolerance:.0%}: {drop}.")
        reasons.append(detectable_line("drop", drop_iv, ".1%"))
    return Verdict("E-F5", CLAIM_ZERO, status, tuple(reasons), scale, finding=finding, evidence=tuple(evidence),
                   seeds=tuple(sorted(seeds)))


def paired_gaps(res: Results, reference: str = "P-S", keys: Sequence[str] | None = None) -> pd.DataFrame:
    """For the figures and tables (presentation only): each solution's last-epoch test accuracy minus
    ``reference``'s of the same seed and sparsity, with its 95% paired t-interval: one row per
    (key, sparsity) with the columns key, sparsity, gap, lo, hi and n. The verdicts compute the same
    differences themselves (``_gap``)."""
    t = res.table()
    sparse = t[(t.key != "dense") & ~t.key.apply(lambda k: isinstance(k, float))]
    keys = list(keys) if keys is not None else [k for k in dict.fromkeys(sparse.key) if k != reference]
    rows = []
    for k in keys:
        for s in sorted(sparse[sparse.key == k].sparsity.unique()):
            seeds, _, iv = _gap(res, (k, s), (reference, s))
            if iv is not None:
                rows.append({"key": k, "sparsity": float(s), "gap": iv.estimate, "lo": iv.lo, "hi": iv.hi,
                             "n": iv.n})
    return pd.DataFrame(rows, columns=["key", "sparsity", "gap", "lo", "hi", "n"])


def planned_runs(p: dict) -> list:
    """The solutions and the zeroed-init runs (for ``bookbuild --plan``)."""
    sols, zero = configs(p)
    return [*sols.values(), *zero.values()]
