"""Chapter 6, the gradient signal-to-noise ratio over training (The Price of Sparsity, Fig. 11: P-F11).

Sol-D, Sol-F and Sol-S of the Fig. 2 procedure at two sparsities, each recording, per epoch and per
layer, the signal-to-noise ratio of its minibatch gradients as the authors compute it: the norm of
the mean minibatch gradient over the norm of their standard deviation (the ``grad_snr`` tracker,
which logs both terms too). Not the per-sample GSNR of Liu et al. (2020), which
:func:`sparsegap.metrics.gradflow.gsnr_per_layer` computes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import params as P
from .. import stats
from ..config import RunConfig
from ..runs import RunStore
from ..verdict import Evidence, Verdict, detectable_line, mean_ci, status_of
from .procedure import (Experiment, data_config, executor_of, model_config, run_experiment, train_config,
                        two_regime_configs)

TRACK = ("grad_snr@1",)
TERMS = {"snr": "grad_snr", "mean": "grad_snr_mean", "std": "grad_snr_std"}

PARAMETERS = P.ParameterSpec(
    "06_gradient_snr",
    **P.data_parameters(),
    sparsities=P.sparsities("the two sparsities: the paper's 60% (its generalization regime) and 95% (optimization)"),
    seeds=P.seeds(),
    **P.training_parameters("epochs for each of Sol-D, Sol-F and Sol-S"),
    exclude_output=P.Param("bool", "True spares the classifier layer from pruning"),
    **P.fast_training_parameters(), **P.environment_parameters(),
)


def configs(p: dict) -> dict[tuple[str, float, int], RunConfig]:
    """Sol-D, Sol-F and Sol-S with the SNR tracker, keyed (stage, sparsity, seed), from the checked parameters."""
    return two_regime_configs(data_config(p), model_config(p), train_config(p), p["sparsities"], p["seeds"],
                              track=TRACK, exclude_output=p["exclude_output"])


def run_snr(p: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True,
            executor=None) -> Experiment:
    return run_experiment(configs(p), store, device=device, progress=progress, executor=executor_of(p, executor))


def snr_table(experiment: Experiment) -> pd.DataFrame:
    """Long table: stage, sparsity (0 for Sol-D), seed, layer, epochs, snr, mean, std, and the run's final
    train accuracy (``train_acc``: did it train at all)."""
    rows = []
    for (stage, s, seed), run in experiment.runs.items():
        trace = run.history.get("trace", {})
        if run.diverged:
            continue
        layers = sorted(k.split("/", 1)[1] for k in trace if k.startswith("grad_snr/"))
        for layer in layers:
            t = {name: trace[f"{key}/{layer}"] for name, key in TERMS.items()}
            for i, e in enumerate(t["snr"]["epochs"]):
                rows.append({"stage": stage, "sparsity": s, "seed": seed, "layer": layer, "epochs": e,
                             **{name: t[name]["value"][i] for name in TERMS},
                             "train_acc": run.final["train_acc"]})
    return pd.DataFrame(rows)


def _per_seed(table: pd.DataFrame, stage: str, sparsity: float, term: str, epochs, *, log: bool = False) -> pd.Series:
    """Per seed: the term (its log10 with ``log``) averaged over layers and over the given epochs."""
    d = table[(table.stage == stage) & (table.sparsity == (0.0 if stage == "Sol-D" else sparsity))
              & table.epochs.isin(epochs)]
    v = np.log10(np.maximum(d[term].astype(float), 1e-30)) if log else d[term]
    return d.assign(v=v).groupby("seed")["v"].mean()


def _paired(a: pd.Series, b: pd.Series) -> stats.Interval:
    """``a - b`` over the seeds both have (Sol-F and Sol-S of a seed come from that seed's Sol-D)."""
    common = sorted(set(a.index) & set(b.index))
    if not common:
        return stats.Interval(math.nan, -math.inf, math.inf, 0, 0.0, "paired t")
    return stats.paired_difference(a[common].to_numpy(), b[common].to_numpy())



CLAIM_DIFFUSION = ("At 60% sparsity (the generalization regime), the minibatch gradients of sparse scratch vary "
                   "less than those of sparse finetuning and dense training late in training (less diffusion).")
CLAIM_HIKE = ("At 95% sparsity (the optimization regime), sparse scratch starts with a very low mean gradient, "
              "which then hikes up during training.")

# Sol-S "has trained" when its final train accuracy reaches this (LeNet-300-100 on MNIST fits far above it when it
# trains at all; a Sol-S at 25% has gradients of a network that has not started, not of one in its diffusion phase).
MIN_TRAIN_ACC = 0.8


def diffusion_verdict(table: pd.DataFrame, sparsity: float, *, scale: str = "",
                      min_train_acc: float = MIN_TRAIN_ACC) -> Verdict:
    """P-F11 (a), at ``sparsity``: Sol-S's minibatch gradients vary less **relative to their size** than
    Sol-F's and Sol-D's: per seed, log10 of the gradient SNR ‖mean‖/‖std‖ averaged over layers and over the
    second half of the epochs; Sol-S minus Sol-F and minus Sol-D, paired by seed, clearly above zero. (The raw
    std is not compared: the gradients of the three solutions differ in size, and a smaller gradient has a
    smaller std without any less diffusion.)

    Precondition: Sol-S trained (final train accuracy ≥ ``min_train_acc``); seeds where it did not are left out,
    and with fewer than two left the verdict is *inconclusive*."""
    epochs = sorted(table.epochs.unique())
    late = epochs[len(epochs) // 2:]
    acc = table[(table.stage == "Sol-S") & (table.sparsity == sparsity)].groupby("seed")["train_acc"].first() \
        if "train_acc" in table else pd.Series(dtype=float)
    untrained = sorted(int(s) for s in acc.index[acc < min_train_acc])
    t = table[~((table.stage == "Sol-S") & table.seed.isin(untrained))]
    snr = {st: _per_seed(t, st, sparsity, "snr", late, log=True) for st in ("Sol-S", "Sol-F", "Sol-D")}
    diffs = {o: _paired(snr["Sol-S"], snr[o]) for o in ("Sol-F", "Sol-D")}
    evidence = tuple(Evidence(f"log10 gradient SNR ‖mean‖/‖std‖, Sol-S − {o}, s = {sparsity:g}, epochs "
                              f"{late[0]:g}–{late[-1]:g}", iv, ".3f", paper="Sol-S's std slightly lower (Fig. 11, "
                              "no number)", outcome=iv.test(+1)) for o, iv in diffs.items())
    std = {st: _per_seed(t, st, sparsity, "std", late) for st in snr}
    reasons = [f"Raw gradient std (norm, mean over layers; seed mean with its 95% CI), for reference: "
               + ", ".join(f"{st} {mean_ci(v.to_numpy(), '.3g')}" for st, v in std.items() if len(v)) + "."]
    trained = snr["Sol-S"].index.nunique()
    key = diffs["Sol-F"]
    if len(untrained):
        reasons.append(f"Sol-S did not train (final train accuracy below {min_train_acc:.0%}) at seeds "
                       f"{untrained}: {', '.join(f'{acc[s]:.0%}' for s in untrained)}; left out.")
    if trained < 2:
        status = "inconclusive"
        finding = (f"Sol-S has not trained at s = {sparsity:g} ({len(untrained)} of {len(acc)} seeds below "
                   f"{min_train_acc:.0%} train accuracy), so its gradient noise cannot be compared with a "
                   f"trained network's.")
        reasons.append("Precondition failed: fewer than two seeds of a trained Sol-S.")
    else:
        status = status_of([iv.test(+1) for iv in diffs.values()])
        reasons.append(detectable_line("log10 SNR difference", key, ".3f"))
        finding = (f"At s = {sparsity:g}, late in training, Sol-S's gradient SNR is {10 ** key.estimate:.2f}× "
                   f"Sol-F's (log10 {key.format('.3f')}) and {10 ** diffs['Sol-D'].estimate:.2f}× Sol-D's, "
                   f"{key.n} seeds.")
    seeds = tuple(sorted(int(x) for x in snr["Sol-S"].index))
    return Verdict("P-F11", CLAIM_DIFFUSION, status, tuple(reasons), scale, part="a", finding=finding,
                   evidence=evidence, seeds=seeds)


def hike_verdict(table: pd.DataFrame, sparsity: float, *, hike: float = 2.0, scale: str = "") -> Verdict:
    """P-F11 (b), at ``sparsity``, per seed with 95% intervals: (1) log10 of Sol-S's mean-gradient norm in the
    first epoch (averaged over layers) minus Sol-F's, paired by seed, clearly below zero; (2) later in training
    it rises to at least ``hike`` times its first-epoch value: log10(later peak / first) − log10(hike) clearly
    above zero."""
    epochs = sorted(table.epochs.unique())
    first = epochs[0]
    ss, sf = (_per_seed(table, st, sparsity, "mean", [first], log=True) for st in ("Sol-S", "Sol-F"))
    low = _paired(ss, sf)
    later = _per_seed(table, "Sol-S", sparsity, "mean", epochs[1:], log=True) if len(epochs) > 1 else None
    per_epoch = table[(table.stage == "Sol-S") & (table.sparsity == sparsity) & (table.epochs > first)]
    if later is not None and len(per_epoch):
        peak = (per_epoch.assign(v=np.log10(np.maximum(per_epoch["mean"].astype(float), 1e-30)))
                .groupby(["seed", "epochs"])["v"].mean().groupby("seed").max())
        common = sorted(set(peak.index) & set(ss.index))
        rise = stats.mean_interval(peak[common].to_numpy() - ss[common].to_numpy() - math.log10(hike))
    else:
        rise = stats.Interval(math.nan, -math.inf, math.inf, 0, 0.0, "t")
    evidence = (Evidence(f"log10 mean-gradient norm in the first epoch, Sol-S − Sol-F, s = {sparsity:g}", low, ".2f",
                         paper="very low (Fig. 11, no number)", outcome=low.test(-1)),
                Evidence(f"log10 (peak after the first epoch / first epoch) of Sol-S's mean-gradient norm minus "
                         f"log10 {hike:g}", rise, ".2f", paper="a hike (Fig. 11, no number)", outcome=rise.test(+1)))
    reasons = [detectable_line("log10 difference on the first-epoch gap", low, ".2f")]
    finding = (f"At s = {sparsity:g}, Sol-S's first-epoch mean gradient is {10 ** low.estimate:.2g}× Sol-F's "
               f"(log10 {low.format('.2f')}), and later peaks at {10 ** (rise.estimate + math.log10(hike)):.2g}× "
               f"its first value ({low.n} seeds).")
    seeds = tuple(sorted(int(x) for x in ss.index))
    return Verdict("P-F11", CLAIM_HIKE, status_of([low.test(-1), rise.test(+1)]), tuple(reasons), scale, part="b",
                   finding=finding, evidence=evidence, seeds=seeds)


def planned_runs(p: dict) -> list:
    """Sol-D, Sol-F and Sol-S with the SNR tracker (for ``bookbuild --plan``)."""
    return list(configs(p).values())
