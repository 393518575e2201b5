"""Chapter 4, memorization under label noise (P-F4, P-F5).

The Fig. 2 procedure (:mod:`sparsegap.studies.procedure`) at one high sparsity, on training data of
which a fraction ε has symmetric label noise (``DataConfig(noise=ε)``). Subset trackers record, per
epoch, how each solution fits the clean samples, memorizes the noisy ones (predicts their noisy
label) or gets them right (predicts their true label), and the Fisher trace on noisy and on clean
samples. The verdict rules judge the paper's three claims from those traces.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .. import params as P
from ..config import DataConfig, ModelConfig, TrainConfig
from ..memorization import first_epoch_reaching, memorization_table, memorized_share
from ..runs import RunStore
from ..verdict import Verdict, clearly_above  # noqa: F401  (clearly_above: re-exported)
from ..verdict import status_of as _status
from .procedure import Experiment, run_two_regimes
from .two_regimes import RUN_PARAMETERS

STAGES = ("Sol-D", "Sol-F", "Sol-S")

PARAMETERS = P.ParameterSpec(
    "04_memorization",
    **{k: RUN_PARAMETERS[k] for k in ("dataset", "train_size", "test_size", "model", "width")},
    noise=P.fraction("fraction of training labels flipped to another class (symmetric noise)", high_open=True),
    noise_seed=P.Param("int", "seed that picks the noisy samples and their labels", low=0),
    sparsity=P.fraction("sparsity of Sol-F and Sol-S", high_open=True),
    seeds=P.seeds(),
    **{k: RUN_PARAMETERS[k] for k in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "milestones",
                                      "gamma", "exclude_output")},
    fisher_every=P.Param("int", "epochs between two Tr(F) measurements on the noisy and the clean samples", low=1),
    predictions_every=P.Param("int", "epochs between two snapshots of the predictions on the noisy samples "
                                     "(for the confusion explorer)", low=1),
    memorized_threshold=P.fraction("a solution has 'started to memorize' when this share of the noisy samples "
                                   "is predicted as its noisy label"),
    drop_threshold=P.fraction("Tr(F) on the noisy samples 'falls' when it ends this far below its peak"),
    **P.fast_training_parameters(), **P.environment_parameters(),
)


def trackers(fisher_every: int, predictions_every: int) -> tuple[str, ...]:
    """What every run of the chapter records (part of the runs' identity)."""
    return ("accuracy:permuted@1", "accuracy:unpermuted@1", "accuracy:restored@1",
            f"fisher_trace:permuted@{fisher_every}", f"fisher_trace:unpermuted@{fisher_every}",
            f"predictions:permuted@{predictions_every}")


def run_memorization(data: DataConfig, model: ModelConfig, train: TrainConfig, sparsity: float,
                     seeds: Sequence[int], *, fisher_every: int = 4, predictions_every: int = 4,
                     store: RunStore | None = None, **kwargs) -> Experiment:
    """Sol-D, Sol-F and Sol-S at ``sparsity`` for every seed, on noisy data, with the chapter's trackers."""
    if not data.noise:
        raise ValueError(f"run_memorization needs noisy training labels: DataConfig.noise must be > 0, "
                         f"got {data.noise!r}")
    return run_two_regimes(data, model, train, [sparsity], seeds, store=store,
                           track=trackers(fisher_every, predictions_every), **kwargs)


def histories(experiment: Experiment) -> dict[str, list[dict]]:
    """Per stage, the trained (not diverged) histories over seeds."""
    s = experiment.sparsities[0]
    return {st: experiment.trained_histories(st, 0.0 if st == "Sol-D" else s) for st in STAGES}


def trace_matrix(hs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values of shape seeds x measurements) of one trace over seeds."""
    t0 = hs[0]["trace"][key]
    return np.asarray(t0["epochs"]), np.array([h["trace"][key]["value"] for h in hs], dtype=float)


# ------------------------------------------------------------------------------------- verdicts

CLAIM_A = ("Sol-S memorizes the noisy samples less than Sol-F and Sol-D, and later "
           "(sparse scratch is weaker at memorization).")
CLAIM_B = "Under label noise Sol-S tests better than Sol-D and Sol-F (benign obliviscence)."
CLAIM_C = ("Tr(F) is higher on the noisy samples than on the clean ones, and it falls as they get memorized; "
           "where they are not memorized it hardly falls.")


def memorization_verdict(hs: dict[str, list[dict]], *, threshold: float = 0.5, scale: str = "") -> Verdict:
    """P-F4 (a): Sol-S's memorized share at the end is clearly below Sol-F's and Sol-D's (by more
    than two standard errors over seeds), and it reaches ``threshold`` later than both (a seed that
    never does counts as latest)."""
    table = memorization_table(hs, threshold=threshold)
    end = {st: [memorized_share(h) for h in hs[st]] for st in STAGES}
    first = {st: [first_epoch_reaching(h, "accuracy:permuted", threshold) for h in hs[st]] for st in STAGES}

    def when(st):  # mean epoch over seeds; a seed that never reaches it counts as infinitely late
        vals = first[st]
        return np.inf if any(v is None for v in vals) else float(np.mean(vals))

    less = clearly_above(end["Sol-F"], end["Sol-S"]) and clearly_above(end["Sol-D"], end["Sol-S"])
    later = when("Sol-S") > when("Sol-F") and when("Sol-S") > when("Sol-D")
    fmt = lambda st: "never" if when(st) == np.inf else f"epoch {when(st):.1f}"  # noqa: E731
    reasons = [
        "Share of the noisy samples memorized (predicted as their noisy label) at the last epoch, seed mean ± std: "
        + ", ".join(f"{st} {table.loc[st, 'memorized_end_mean']:.1%} ± {table.loc[st, 'memorized_end_std']:.1%}"
                    for st in STAGES) + ".",
        f"First reaching {threshold:.0%} memorized (seed mean; 'never' if a seed never does): "
        + ", ".join(f"{st} {fmt(st)}" for st in STAGES) + ".",
        f"Sol-S memorizes clearly less than both (gap > 2 standard errors): {'yes' if less else 'no'}; "
        f"later than both: {'yes' if later else 'no'}.",
    ]
    return Verdict("P-F4", CLAIM_A, _status([less, later]), tuple(reasons), scale, part="a")


def robustness_verdict(hs: dict[str, list[dict]], *, scale: str = "") -> Verdict:
    """P-F4 (b): Sol-S's last-epoch test accuracy is clearly above Sol-D's, and clearly above Sol-F's
    (each by more than two standard errors over seeds). The best-epoch accuracies are reported beside."""
    table = memorization_table(hs)
    final = {st: [h["test_acc"][-1] for h in hs[st]] for st in STAGES}
    above = {other: clearly_above(final["Sol-S"], final[other]) for other in ("Sol-D", "Sol-F")}
    reasons = [
        "Test accuracy at the last epoch, seed mean ± std: "
        + ", ".join(f"{st} {table.loc[st, 'test_acc_final_mean']:.2%} ± {table.loc[st, 'test_acc_final_std']:.2%}"
                    for st in STAGES) + ".",
        "Best test accuracy over the epochs (selected on the test set, as the paper reports), seed mean: "
        + ", ".join(f"{st} {table.loc[st, 'test_acc_best_mean']:.2%}" for st in STAGES) + ".",
        "Sol-S clearly above (gap > 2 standard errors at the last epoch): "
        + ", ".join(f"{other} {'yes' if ok else 'no'}" for other, ok in above.items())
        + ". (The paper: about 12 points above Sol-D and 10 above Sol-F.)",
    ]
    return Verdict("P-F4", CLAIM_B, _status(list(above.values())), tuple(reasons), scale, part="b")


def fisher_noise_verdict(hs: dict[str, list[dict]], *, memorized: float = 0.5, drop_threshold: float = 0.3,
                         scale: str = "") -> Verdict:
    """P-F5: (1) for every solution, the seed-mean Tr(F) on the noisy samples exceeds that on the clean
    samples at three quarters of the measurements or more; (2) for every solution, Tr(F) on the noisy
    samples ends more than ``drop_threshold`` below its peak exactly when the solution memorized at
    least ``memorized`` of the noisy samples by the end."""
    higher, consistent, reasons = {}, {}, []
    for st in STAGES:
        _, noisy = trace_matrix(hs[st], "fisher_trace:permuted")
        _, clean = trace_matrix(hs[st], "fisher_trace:unpermuted")
        noisy, clean = noisy.mean(0), clean.mean(0)
        higher[st] = float((noisy > clean).mean())
        peak = int(np.argmax(noisy))
        drop = 1.0 - noisy[-1] / noisy[peak] if noisy[peak] > 0 else 0.0
        share = float(np.mean([memorized_share(h) for h in hs[st]]))
        consistent[st] = (drop > drop_threshold) == (share >= memorized)
        reasons.append(f"{st}: Tr(F) noisy > clean at {higher[st]:.0%} of the measurements; on the noisy samples "
                       f"it peaks at {noisy[peak]:.3g} and ends {drop:.0%} below; {share:.0%} of them memorized "
                       f"at the end ({'as claimed' if consistent[st] else 'not as claimed'}).")
    part1 = all(v >= 0.75 for v in higher.values())
    part2 = all(consistent.values())
    reasons.append(f"Higher on noisy samples for every solution: {'yes' if part1 else 'no'}; falls where (and only "
                   f"where) they get memorized: {'yes' if part2 else 'no'}.")
    return Verdict("P-F5", CLAIM_C, _status([part1, part2]), tuple(reasons), scale)


def planned_runs(p: dict) -> list:
    """Sol-D, Sol-F and Sol-S at ``sparsity`` on the noisy data, with the trackers (for ``bookbuild --plan``)."""
    from .procedure import data_config, model_config, train_config, two_regime_configs
    data = data_config(p, noise=p["noise"], noise_seed=p["noise_seed"])
    return list(two_regime_configs(data, model_config(p), train_config(p), [p["sparsity"]],
                                   p["seeds"], exclude_output=p["exclude_output"],
                                   track=trackers(p["fisher_every"], p["predictions_every"])).values())
