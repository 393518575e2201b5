"""Chapter 1, two regimes (P-F1): the regime rule, the verdict, and the notebook's parameters.

The runs come from the Fig. 2 procedure (:mod:`sparsegap.studies.procedure`); this module labels
each sparsity with its regime by a stated rule and judges the paper's claim.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from .. import params as P
from ..verdict import Verdict
from .procedure import run_two_regimes, two_regime_configs  # noqa: F401  (the chapter's procedure)

CLAIM = ("Sol-S falls behind Sol-F at every sparsity: first in generalization only, then in optimization too; "
         "losses follow, and Sol-S predicts with higher entropy.")

# The knobs that decide which runs a chapter trains. The curvature chapter measures the very same
# runs, so it declares these too (a test checks that its defaults match).
RUN_PARAMETERS = dict(
    **P.data_parameters(),
    sparsities=P.sparsities(),
    seeds=P.seeds(),
    **P.training_parameters("epochs for each of Sol-D, Sol-F and Sol-S"),
    exclude_output=P.Param("bool", "True spares the classifier layer from pruning"),
    fisher_every=P.Param("int", "epochs between Tr(F) measurements during training; 0 turns them off", low=0),
)
# The regime rule's thresholds, used by every chapter that labels regimes.
REGIME_PARAMETERS = dict(
    train_gap_tol=P.fraction("regime rule: train-accuracy gap above which a sparsity is in the optimization regime"),
    near_optimal=P.fraction("regime rule: Sol-S train accuracy needed for the generalization regime"),
)

PARAMETERS = P.ParameterSpec("01_two_regimes", **RUN_PARAMETERS, **REGIME_PARAMETERS,
                             **P.fast_training_parameters(), **P.environment_parameters())


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


def two_regimes_verdict(regimes: pd.DataFrame, summary: pd.DataFrame, *, scale: str = "",
                        diverged: Sequence[str] = ()) -> Verdict:
    """Verdict P-F1, on the paper's Fig. 1 claim, from our numbers.

    The claim has four parts, each checked on the seed means: Sol-F tests better than Sol-S; a
    generalization regime is followed by an optimization regime along the sparsity axis; Sol-S has
    the higher test loss ("similar patterns" in the loss panel); Sol-S has the higher
    training-prediction entropy. Reproduced: all four hold (the three "at every sparsity" parts at
    three quarters of the sparsities or more). Partly: Sol-F tests better at half or more and at
    least one regime appears. Otherwise not reproduced.
    """
    labels = list(regimes.sort_values("sparsity").regime)
    gen = [i for i, r in enumerate(labels) if r == "generalization"]
    opt = [i for i, r in enumerate(labels) if r == "optimization"]
    ordered = bool(gen) and bool(opt) and max(gen) < min(opt)

    def share_higher(metric: str) -> float:
        f = summary[summary.stage == "Sol-F"].set_index("sparsity")[metric]
        s = summary[summary.stage == "Sol-S"].set_index("sparsity")[metric]
        return float((s > f).mean())

    gap_everywhere = float((regimes.test_gap > 0).mean())
    loss_higher, entropy_higher = share_higher("test_loss"), share_higher("train_entropy")
    reasons = [
        f"Sol-F beats Sol-S on test accuracy at {gap_everywhere:.0%} of the sparsities.",
        f"Generalization regime at sparsities {[float(regimes.sparsity[i]) for i in gen] or 'none'}; "
        f"optimization regime at {[float(regimes.sparsity[i]) for i in opt] or 'none'}"
        + (" (in that order along the sparsity axis)." if ordered else "."),
        f"Sol-S has the higher test loss at {loss_higher:.0%} of the sparsities.",
        f"Sol-S has the higher training-prediction entropy at {entropy_higher:.0%} of the sparsities.",
    ] + [f"Left out of the means: {d}." for d in diverged]
    if ordered and min(gap_everywhere, loss_higher, entropy_higher) >= 0.75:
        status = "reproduced"
    elif (gen or opt) and gap_everywhere >= 0.5:
        status = "partly"
    else:
        status = "not reproduced"
    return Verdict("P-F1", CLAIM, status, tuple(reasons), scale)


def planned_runs(p: dict) -> list:
    """Every run the notebook trains, from its checked parameters (for ``bookbuild --plan``)."""
    from .procedure import data_config, model_config, train_config, two_regime_configs
    track = [f"fisher_trace@{p['fisher_every']}"] if p["fisher_every"] else []
    return list(two_regime_configs(data_config(p), model_config(p), train_config(p),
                                   p["sparsities"], p["seeds"], exclude_output=p["exclude_output"], track=track).values())
