"""Chapter 9, the gradient signal-to-noise ratio over training (The Price of Sparsity, Fig. 11: P-F11).

Sol-D, Sol-F and Sol-S of the Fig. 2 procedure at two sparsities, each recording, per epoch and per
layer, the signal-to-noise ratio of its minibatch gradients as the authors compute it: the norm of
the mean minibatch gradient over the norm of their standard deviation (the ``grad_snr`` tracker,
which logs both terms too). Not the per-sample GSNR of Liu et al. (2020), which
:func:`sparsegap.metrics.gradflow.gsnr_per_layer` computes.
"""

from __future__ import annotations


import pandas as pd

from .. import params as P
from ..runs import RunStore
from ..verdict import Verdict, clearly_above, mean_std, status_of
from .procedure import Experiment, data_config, model_config, run_two_regimes, train_config

TRACK = ("grad_snr@1",)
TERMS = {"snr": "grad_snr", "mean": "grad_snr_mean", "std": "grad_snr_std"}

PARAMETERS = P.ParameterSpec(
    "09_gradient_snr",
    **P.data_parameters(),
    sparsities=P.sparsities("the two sparsities: the paper's 60% (its generalization regime) and 95% (optimization)"),
    seeds=P.seeds(),
    **P.training_parameters("epochs for each of Sol-D, Sol-F and Sol-S"),
    exclude_output=P.Param("bool", "True spares the classifier layer from pruning"),
    **P.fast_training_parameters(), **P.environment_parameters(),
)


def run_snr(p: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True) -> Experiment:
    return run_two_regimes(data_config(p), model_config(p), train_config(p), p["sparsities"], p["seeds"], store=store,
                           device=device, progress=progress, track=TRACK, exclude_output=p["exclude_output"])


def snr_table(experiment: Experiment) -> pd.DataFrame:
    """Long table: stage, sparsity (0 for Sol-D), seed, layer, epochs, snr, mean, std."""
    rows = []
    for (stage, s, seed), run in experiment.runs.items():
        trace = run.history.get("trace", {})
        if run.history.get("diverged"):
            continue
        layers = sorted(k.split("/", 1)[1] for k in trace if k.startswith("grad_snr/"))
        for layer in layers:
            t = {name: trace[f"{key}/{layer}"] for name, key in TERMS.items()}
            for i, e in enumerate(t["snr"]["epochs"]):
                rows.append({"stage": stage, "sparsity": s, "seed": seed, "layer": layer, "epochs": e,
                             **{name: t[name]["value"][i] for name in TERMS}})
    return pd.DataFrame(rows)


def _per_seed(table: pd.DataFrame, stage: str, sparsity: float, term: str, epochs) -> list[float]:
    """Per seed: the term averaged over layers and over the given epochs."""
    d = table[(table.stage == stage) & (table.sparsity == (0.0 if stage == "Sol-D" else sparsity))
              & table.epochs.isin(epochs)]
    return d.groupby("seed")[term].mean().tolist()


CLAIM_DIFFUSION = ("At 60% sparsity (the generalization regime), the minibatch gradients of sparse scratch vary "
                   "less than those of sparse finetuning and dense training late in training (less diffusion).")
CLAIM_HIKE = ("At 95% sparsity (the optimization regime), sparse scratch starts with a very low mean gradient, "
              "which then hikes up during training.")


def diffusion_verdict(table: pd.DataFrame, sparsity: float, *, scale: str = "") -> Verdict:
    """P-F11 (a), at ``sparsity``: Sol-S's gradient std (the norm of the per-element std over an epoch's
    minibatches, averaged over layers and over the second half of the epochs) is clearly below (two
    standard errors over seeds) Sol-F's and Sol-D's."""
    epochs = sorted(table.epochs.unique())
    late = epochs[len(epochs) // 2:]
    v = {st: _per_seed(table, st, sparsity, "std", late) for st in ("Sol-S", "Sol-F", "Sol-D")}
    parts = [clearly_above(v[o], v["Sol-S"]) for o in ("Sol-F", "Sol-D")]
    reasons = (f"Sparsity {sparsity:g}, epochs {late[0]:g} to {late[-1]:g}: gradient std (norm, mean over layers), "
               + ", ".join(f"{st} {mean_std(v[st], '.3g')}" for st in v) + ".",
               f"Sol-S clearly below Sol-F: {'yes' if parts[0] else 'no'}; below Sol-D: {'yes' if parts[1] else 'no'}.")
    return Verdict("P-F11", CLAIM_DIFFUSION, status_of(parts), reasons, scale, part="a")


def hike_verdict(table: pd.DataFrame, sparsity: float, *, hike: float = 2.0, scale: str = "") -> Verdict:
    """P-F11 (b), at ``sparsity``: (1) Sol-S's mean-gradient norm in the first epoch (averaged over layers)
    is clearly below Sol-F's; (2) later in training it rises to at least ``hike`` times its first-epoch
    value (seed means)."""
    first = sorted(table.epochs.unique())[0]
    ss, sf = (_per_seed(table, st, sparsity, "mean", [first]) for st in ("Sol-S", "Sol-F"))
    low = clearly_above(sf, ss)
    d = table[(table.stage == "Sol-S") & (table.sparsity == sparsity)].groupby("epochs")["mean"].mean()
    peak_epoch = float(d.idxmax())
    rises = bool(d.max() >= hike * d.iloc[0] and peak_epoch > first)
    reasons = (f"Sparsity {sparsity:g}: mean-gradient norm in the first epoch (mean over layers), Sol-S "
               f"{mean_std(ss, '.3g')}, Sol-F {mean_std(sf, '.3g')} (clearly lower: {'yes' if low else 'no'}).",
               f"Sol-S's mean-gradient norm goes from {d.iloc[0]:.3g} to a peak of {d.max():.3g} at epoch "
               f"{peak_epoch:g} ({d.max() / d.iloc[0]:.1f}×; a hike needs ≥ {hike:g}×: {'yes' if rises else 'no'}).")
    return Verdict("P-F11", CLAIM_HIKE, status_of([low, rises]), reasons, scale, part="b")


def planned_runs(p: dict) -> list:
    """Sol-D, Sol-F and Sol-S with the SNR tracker (for ``bookbuild --plan``)."""
    from .procedure import two_regime_configs
    return list(two_regime_configs(data_config(p), model_config(p), train_config(p), p["sparsities"], p["seeds"],
                                   track=TRACK, exclude_output=p["exclude_output"]).values())
