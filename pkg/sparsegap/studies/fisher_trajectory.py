"""Chapter 2, the Fisher trace during training (P-F3), and the Fisher trend of Table 1 (P-T1).

Tr(F) is recorded while the runs of the Fig. 2 procedure train (the ``fisher_trace@N`` tracker);
this module reads the shape of each trajectory and judges the paper's claim about it.
"""

from __future__ import annotations

import pandas as pd

from .. import params as P
from ..verdict import Verdict
from .procedure import Experiment
from .two_regimes import REGIME_PARAMETERS

CLAIM = ("Tr(F) of Sol-S rises then falls but ends above Sol-D's in the generalization regime, "
         "and rises and hardly falls in the optimization regime.")
# The same rule judges Table 1's Fisher-trend column, measured on other networks (chapter 3).
CLAIMS = {"P-F3": CLAIM,
          "P-T1": "Table 1: in the generalization regime Sol-S's Tr(F) rises, falls and ends above Sol-D's; "
                  "in the optimization regime it rises and hardly falls (Fisher trend, per regime)."}

DROP_THRESHOLD = P.fraction("trend rule: 1 - final/peak above this means Tr(F) came back down")

PARAMETERS = P.ParameterSpec(
    "02_fisher_trajectory",
    dataset=P.Param("str", "dataset name; the paper uses the 12-bit task"),
    hidden=P.Param("ints", "hidden widths of the ReLU MLP", low=1),
    init=P.Param("str", "weight init", choices=("default", "kaiming")),
    sparsities=P.sparsities(),
    min_density=P.fraction("per-layer floor of the mask density"),
    stages=P.Param("strs", "sparse solutions to train", choices=("Sol-S", "Sol-F"), unique=True),
    seeds=P.seeds(),
    dense_epochs=P.Param("int", "epochs for Sol-D", low=1),
    sparse_epochs=P.Param("int", "epochs for Sol-F and Sol-S", low=1),
    batch_size=P.Param("int", "minibatch size", low=1),
    lr=P.Param("float", "SGD learning rate", low=0.0),
    momentum=P.fraction("SGD momentum", high_open=True),
    weight_decay=P.Param("float", "L2 weight decay", low=0.0),
    dense_milestones=P.Param("floats", "lr decay points for Sol-D, fractions of dense_epochs", low=0.0, high=1.0,
                             min_len=0),
    sparse_milestones=P.Param("floats", "lr decay points for Sol-F and Sol-S, fractions of sparse_epochs",
                              low=0.0, high=1.0, min_len=0),
    gamma=P.fraction("lr decay factor"),
    fisher_every=P.Param("int", "epochs between two measurements of Tr(F)", low=1),
    unit_init_sparsities=P.Param("floats", "sparsities (among sparsities) where Sol-S trains again with the "
                                           "sparsity-aware unit init; [] for none", low=0.0, high=1.0,
                                 high_open=True, unique=True, min_len=0),
    drop_threshold=DROP_THRESHOLD,
    **REGIME_PARAMETERS,
    **P.environment_parameters(),
)


def fisher_trend(history: dict, *, name: str = "fisher_trace") -> dict:
    """Shape of a Tr(F) trajectory: where it peaks, where it ends, and how far it came down.

    ``drop`` = 1 - final / peak: near 0 means it "increases and hardly decreases" (the paper's
    optimization regime), well above 0 that it rose and came back down (generalization regime).
    """
    trace = history.get("trace", {}).get(name)
    if not trace or not trace["value"]:
        raise ValueError(f"the run's history has no {name!r} trace; train it with track=['{name}@N']")
    v = trace["value"]
    peak = max(range(len(v)), key=v.__getitem__)
    return {"initial": v[0], "peak": v[peak], "peak_epoch": trace["epochs"][peak], "final": v[-1],
            "drop": 1.0 - v[-1] / v[peak] if v[peak] > 0 else 0.0}


def fisher_trends(experiment: Experiment) -> pd.DataFrame:
    rows = []
    for (stage, s, seed), run in experiment.runs.items():
        if run.history.get("diverged"):  # its trajectory ends at the divergence: not a trained network
            continue
        rows.append({"stage": stage, "sparsity": s, "seed": seed, "train_acc": run.final["train_acc"],
                     **fisher_trend(run.history)})
    return pd.DataFrame(rows)


def fisher_trajectory_verdict(trends: pd.DataFrame, regimes: pd.DataFrame, *, drop_threshold: float = 0.3,
                              rise_factor: float = 2.0, claim_id: str = "P-F3", scale: str = "") -> Verdict:
    """Verdict on Fig. 3 (``claim_id="P-F3"``) or on the Fisher trend of Table 1 (``"P-T1"``):
    does Sol-S's Tr(F) trend differ between the regimes as claimed?

    Both claimed shapes start with a rise: the peak is at least ``rise_factor`` times the first value.
    Generalization regime: then a drop of more than ``drop_threshold`` from the peak, ending above
    Sol-D's final value. Optimization regime: a drop of at most ``drop_threshold``.
    """
    s = trends[trends.stage == "Sol-S"].groupby("sparsity")[["initial", "peak", "drop", "final"]].mean()
    f = trends[trends.stage == "Sol-F"].groupby("sparsity")["final"].mean()
    dense_final = float(trends[trends.stage == "Sol-D"].final.mean())
    by_regime = {r: list(regimes[regimes.regime == r].sparsity) for r in ("generalization", "optimization")}
    rose = [x for x in s.index if s.loc[x, "peak"] >= rise_factor * s.loc[x, "initial"]]
    gen_ok = [x for x in by_regime["generalization"]
              if x in rose and s.loc[x, "drop"] > drop_threshold and s.loc[x, "final"] > dense_final]
    opt_ok = [x for x in by_regime["optimization"] if x in rose and s.loc[x, "drop"] <= drop_threshold]
    higher = [x for x in s.index if x in f.index and s.loc[x, "final"] > f.loc[x]]
    fmt = lambda xs: ", ".join(f"{x:g}" for x in xs) or "none"  # noqa: E731
    reasons = [
        f"Regimes (from final accuracies): generalization at {fmt(by_regime['generalization'])}; "
        f"optimization at {fmt(by_regime['optimization'])}.",
        f"Sol-S's Tr(F) rose at least {rise_factor:g}-fold from its first value at sparsities {fmt(rose)}.",
        f"Generalization regime, rose then came down (drop > {drop_threshold:g}) and ended above Sol-D's final "
        f"{dense_final:.3g}: {fmt(gen_ok)}.",
        f"Optimization regime, rose and hardly came down (drop <= {drop_threshold:g}): {fmt(opt_ok)}.",
        f"Sol-S ends with a higher Tr(F) than Sol-F at sparsities {fmt(higher)} (of {fmt(list(s.index))}).",
    ]
    complete = by_regime["generalization"] and by_regime["optimization"]
    if complete and len(gen_ok) == len(by_regime["generalization"]) and len(opt_ok) == len(by_regime["optimization"]):
        status = "reproduced"
    elif gen_ok or opt_ok:
        status = "partly"
    else:
        status = "not reproduced"
    if claim_id not in CLAIMS:
        raise ValueError(f"claim_id must be one of {sorted(CLAIMS)} (the claims this rule judges), got {claim_id!r}")
    return Verdict(claim_id, CLAIMS[claim_id], status, tuple(reasons), scale)


def unit_init_configs(experiment: Experiment, sparsities) -> dict:
    """Sol-S again at ``sparsities``, each from the very same mask and parent, but with the
    sparsity-aware "unit" init (:mod:`sparsegap.sparse_init`), keyed (sparsity, seed)."""
    import dataclasses
    missing = sorted(set(sparsities) - set(experiment.sparsities))
    if missing:
        raise ValueError(f"unit_init_sparsities must be drawn from sparsities={experiment.sparsities}, "
                         f"got {missing} too")
    return {(s, seed): dataclasses.replace(run.config, sparse_init="unit")
            for (stage, s, seed), run in experiment.runs.items() if stage == "Sol-S" and s in set(sparsities)}


def unit_init_table(experiment: Experiment, unit_runs: dict) -> pd.DataFrame:
    """Per sparsity, seed means of the last-epoch train and test accuracy of Sol-S with the dense init
    (the chapter's runs) and with the unit init."""
    rows = []
    for (s, seed), run in unit_runs.items():
        plain = experiment.runs[("Sol-S", s, seed)]
        for init, r in (("dense (Kaiming)", plain), ("unit (sparsity-aware)", run)):
            h = r.history
            rows.append({"sparsity": s, "seed": seed, "init": init,
                         "train_acc": float("nan") if h.get("diverged") else h["train_acc"][-1],
                         "test_acc": float("nan") if h.get("diverged") else h["test_acc"][-1]})
    return pd.DataFrame(rows).groupby(["sparsity", "init"])[["train_acc", "test_acc"]].mean().unstack("init")


def planned_runs(p: dict) -> list:
    """Every run the notebook trains, the unit-init Sol-S included (for ``bookbuild --plan``)."""
    import dataclasses

    from ..config import DataConfig, ModelConfig, TrainConfig
    from .procedure import two_regime_configs

    def train(epochs, milestones):
        return TrainConfig(epochs=epochs, batch_size=p["batch_size"], lr=p["lr"], momentum=p["momentum"],
                           weight_decay=p["weight_decay"], milestones=tuple(milestones), gamma=p["gamma"])
    sparse = train(p["sparse_epochs"], p["sparse_milestones"])
    configs = two_regime_configs(DataConfig(p["dataset"]), ModelConfig("mlp", hidden=tuple(p["hidden"]), init=p["init"]),
                                 train(p["dense_epochs"], p["dense_milestones"]), p["sparsities"], p["seeds"],
                                 finetune_train=sparse, scratch_train=sparse, min_density=p["min_density"],
                                 track=[f"fisher_trace@{p['fisher_every']}"], stages=p["stages"])
    unit = [dataclasses.replace(cfg, sparse_init="unit") for (stage, s, _), cfg in configs.items()
            if stage == "Sol-S" and s in set(p["unit_init_sparsities"])]
    return [*configs.values(), *unit]
