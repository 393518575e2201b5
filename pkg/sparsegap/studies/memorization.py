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
from .. import stats
from ..config import DataConfig, RunConfig
from ..data import noisy_count
from ..memorization import first_epoch_reaching, memorization_table, memorized_share
from ..runs import RunStore
from ..stats import Interval
from ..verdict import Evidence, Verdict, all_of, detectable_line, status_of
from .procedure import (Experiment, data_config, executor_of, fisher_spec, model_config, run_experiment,
                        train_config, train_samples, two_regime_configs)
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


def trackers(fisher_every: int, predictions_every: int, data: DataConfig) -> tuple[str, ...]:
    """What every run of the chapter on ``data`` records (part of the runs' identity). Tr(F) on the noisy and
    on the clean samples is measured on at most :data:`~sparsegap.studies.procedure.FISHER_SAMPLES` of each
    (:func:`~sparsegap.studies.procedure.fisher_spec`: the spelling of a set no larger is what it always was)."""
    n_noisy = noisy_samples(data)
    return ("accuracy:permuted@1", "accuracy:unpermuted@1", "accuracy:restored@1",
            fisher_spec(fisher_every, n_noisy, "permuted"),
            fisher_spec(fisher_every, train_samples(data) - n_noisy, "unpermuted"),
            f"predictions:permuted@{predictions_every}")


def noisy_samples(data: DataConfig) -> int:
    """How many training labels ``data`` flips, known without loading it: ``round(noise * n_train)``, as
    :func:`sparsegap.data.add_label_noise` flips them."""
    return noisy_count(train_samples(data), data.noise)


def noisy_data_config(p: dict) -> DataConfig:
    """The chapter's training data, from its checked parameters: a fraction ``noise`` of the labels flipped."""
    return data_config(p, noise=p["noise"], noise_seed=p["noise_seed"])


def configs(p: dict) -> dict[tuple[str, float, int], RunConfig]:
    """Sol-D, Sol-F and Sol-S at ``sparsity`` for every seed, on noisy data, with the chapter's trackers, keyed
    (stage, sparsity, seed), from the chapter's checked parameters."""
    data = noisy_data_config(p)
    if not data.noise:
        raise ValueError(f"the memorization chapter needs noisy training labels: noise must be > 0, "
                         f"got {data.noise!r}")
    return two_regime_configs(data, model_config(p), train_config(p), [p["sparsity"]], p["seeds"],
                              exclude_output=p["exclude_output"],
                              track=trackers(p["fisher_every"], p["predictions_every"], data))


def run(p: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True,
        executor=None) -> Experiment:
    """Train (or load) the chapter's runs (:func:`configs`)."""
    return run_experiment(configs(p), store, device=device, progress=progress, executor=executor_of(p, executor))


def trained_seeds(experiment: Experiment) -> list[int]:
    """The seeds whose Sol-D, Sol-F and Sol-S all trained (none diverged): the pairs of the verdicts."""
    s = experiment.sparsities[0]
    seeds = sorted({k[2] for k in experiment.runs})
    return [seed for seed in seeds if not any(experiment.run(st, s, seed).diverged for st in STAGES)]


def histories(experiment: Experiment) -> dict[str, list[dict]]:
    """Per stage, the histories over :func:`trained_seeds` (in seed order, so that the i-th of every stage
    share a seed and the verdicts can pair them)."""
    s = experiment.sparsities[0]
    seeds = trained_seeds(experiment)
    return {st: [experiment.history(st, 0.0 if st == "Sol-D" else s, seed) for seed in seeds] for st in STAGES}


def trace_matrix(hs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values of shape seeds x measurements) of one trace over seeds."""
    t0 = hs[0]["trace"][key]
    return np.asarray(t0["epochs"]), np.array([h["trace"][key]["value"] for h in hs], dtype=float)


# ------------------------------------------------------------------------------------- verdicts

CLAIM_A = ("Sol-S memorizes the noisy samples less than Sol-F and Sol-D, and later "
           "(sparse scratch is weaker at memorization).")
CLAIM_B = "Under label noise Sol-S tests better than Sol-D and Sol-F (benign obliviscence)."
CLAIM_C = ("Tr(F) is higher on the noisy samples than on the clean ones, and Sol-S has the higher Tr(F); it falls "
           "as the noisy samples get memorized, and where they are not memorized it hardly falls.")


def _seeds(hs: dict[str, list[dict]]) -> tuple[int, ...]:
    """The seeds behind a paired comparison: one per history of the stage with the fewest (runs of one seed
    share their Sol-D); the histories carry no seed, so they are counted."""
    return tuple(range(min(len(v) for v in hs.values()))) if hs else ()


def _paired(hs, value, a: str, b: str) -> Interval:
    """``value(a) - value(b)`` over the seeds, paired (Sol-F and Sol-S of one seed come from its Sol-D)."""
    n = min(len(hs[a]), len(hs[b]))
    return stats.paired_difference([value(h) for h in hs[a][:n]], [value(h) for h in hs[b][:n]])


def memorization_verdict(hs: dict[str, list[dict]], *, threshold: float = 0.5, scale: str = "",
                         seeds: Sequence[int] | None = None) -> Verdict:
    """P-F4 (a), paired by seed with 95% t-intervals: (1) Sol-S's memorized share at the last epoch is clearly
    below Sol-F's and Sol-D's; (2) it first reaches ``threshold`` clearly later than both. A seed that never
    reaches it counts as reaching it one epoch after the last (a lower bound on how late it is)."""
    table = memorization_table(hs, threshold=threshold)
    last = max(len(h["test_acc"]) for st in STAGES for h in hs[st])

    def first(h):
        e = first_epoch_reaching(h, "accuracy:permuted", threshold)
        return float(last + 1) if e is None else e

    less = {o: _paired(hs, memorized_share, o, "Sol-S") for o in ("Sol-F", "Sol-D")}
    later = {o: _paired(hs, first, "Sol-S", o) for o in ("Sol-F", "Sol-D")}
    never = {st: sum(first_epoch_reaching(h, "accuracy:permuted", threshold) is None for h in hs[st]) for st in STAGES}
    evidence = [Evidence(f"memorized share at the last epoch, {o} − Sol-S", iv, ".1%",
                         paper="Sol-S lowest (Fig. 4, no number)", outcome=iv.test(+1)) for o, iv in less.items()]
    evidence += [Evidence(f"first epoch with {threshold:.0%} memorized, Sol-S − {o}", iv, ".1f",
                          paper="Sol-S much later (Fig. 4, no number)", outcome=iv.test(+1)) for o, iv in later.items()]
    parts = [all_of(iv.test(+1) for iv in less.values()), all_of(iv.test(+1) for iv in later.values())]
    key = less["Sol-F"]
    reasons = [
        "Share of the noisy samples memorized (predicted as their noisy label) at the last epoch, seed mean ± std: "
        + ", ".join(f"{st} {table.loc[st, 'memorized_end_mean']:.1%} ± {table.loc[st, 'memorized_end_std']:.1%}"
                    for st in STAGES) + ".",
        f"Seeds that never reach {threshold:.0%} memorized (counted as epoch {last + 1}): "
        + ", ".join(f"{st} {never[st]} of {len(hs[st])}" for st in STAGES) + ".",
        detectable_line("difference in memorized share", key, ".1%"),
    ]
    finding = (f"At the last epoch Sol-F has memorized {key.format('+.1%')} more of the noisy samples than Sol-S "
               f"(95% CI, {key.n} seeds), and Sol-S reaches {threshold:.0%} memorized "
               f"{later['Sol-F'].format('+.1f')} epochs after Sol-F.")
    return Verdict("P-F4", CLAIM_A, status_of(parts), tuple(reasons), scale, part="a", finding=finding,
                   evidence=tuple(evidence), seeds=tuple(seeds) if seeds is not None else _seeds(hs))


def robustness_verdict(hs: dict[str, list[dict]], *, scale: str = "", seeds: Sequence[int] | None = None) -> Verdict:
    """P-F4 (b), the headline of benign obliviscence: Sol-S's last-epoch test accuracy minus Sol-D's, and minus
    Sol-F's, paired by seed; each part holds when its 95% interval lies above zero. The best-epoch accuracies
    (selected on the test set, as the paper reports) are shown beside, not judged."""
    table = memorization_table(hs)
    final = lambda h: h["test_acc"][-1]  # noqa: E731
    best = lambda h: max(h["test_acc"])  # noqa: E731
    above = {o: _paired(hs, final, "Sol-S", o) for o in ("Sol-D", "Sol-F")}
    paper = {"Sol-D": "about +12% (Sec. 3.2)", "Sol-F": "about +10% (Sec. 3.2)"}
    evidence = [Evidence(f"test accuracy at the last epoch, Sol-S − {o}", iv, ".2%", paper=paper[o],
                         outcome=iv.test(+1)) for o, iv in above.items()]
    evidence += [Evidence(f"best test accuracy over the epochs, Sol-S − {o}", _paired(hs, best, "Sol-S", o), ".2%",
                          paper=paper[o]) for o in ("Sol-D", "Sol-F")]
    key = above["Sol-D"]
    reasons = [
        "Test accuracy at the last epoch, seed mean ± std: "
        + ", ".join(f"{st} {table.loc[st, 'test_acc_final_mean']:.2%} ± {table.loc[st, 'test_acc_final_std']:.2%}"
                    for st in STAGES) + ".",
        f"With {key.n} seeds the smallest test-accuracy gap these seeds detect is {key.detectable():.2%} "
        f"against Sol-D and {above['Sol-F'].detectable():.2%} against Sol-F (80% power).",
    ]
    finding = (f"At the last epoch Sol-S's test accuracy minus Sol-D's is {key.format('+.2%')}, and minus Sol-F's "
               f"{above['Sol-F'].format('+.2%')} (95% CI, {key.n} seeds; the paper: about +12% and +10%).")
    return Verdict("P-F4", CLAIM_B, status_of([iv.test(+1) for iv in above.values()]), tuple(reasons), scale,
                   part="b", finding=finding, evidence=tuple(evidence),
                   seeds=tuple(seeds) if seeds is not None else _seeds(hs))


def _log_fisher(h: dict, key: str) -> np.ndarray:
    v = np.asarray(h["trace"][key]["value"], dtype=float)
    return np.log10(np.maximum(v, 1e-12))


def fisher_noise_verdict(hs: dict[str, list[dict]], *, memorized: float = 0.5, drop_threshold: float = 0.3,
                         scale: str = "", seeds: Sequence[int] | None = None) -> Verdict:
    """P-F5, three parts, each over seeds with 95% t-intervals:

    1. Tr(F) is higher on the noisy samples than on the clean ones: per run, the mean over the measurements
       after the initialisation of log10(noisy / clean), clearly above zero for every solution;
    2. Sol-S has the higher Tr(F) (Fig. 5's text): log10 of its last Tr(F) on the noisy samples minus Sol-F's
       and minus Sol-D's, paired by seed, clearly above zero;
    3. it falls as the noisy samples get memorized and hardly falls where they are not: per run, the drop
       1 - last/peak of Tr(F) on the noisy samples, clearly above ``drop_threshold`` for a solution that
       memorized at least ``memorized`` of them by the end (seed mean), clearly below it for one that did not.
    """
    def noisy_over_clean(h):
        return float(np.mean((_log_fisher(h, "fisher_trace:permuted") - _log_fisher(h, "fisher_trace:unpermuted"))[1:]))

    def last_noisy(h):
        return float(_log_fisher(h, "fisher_trace:permuted")[-1])

    def drop(h):
        v = np.asarray(h["trace"]["fisher_trace:permuted"]["value"], dtype=float)
        return 1.0 - v[-1] / v.max() if v.max() > 0 else 0.0

    higher = {st: stats.mean_interval([noisy_over_clean(h) for h in hs[st]]) for st in STAGES}
    s_higher = {o: _paired(hs, last_noisy, "Sol-S", o) for o in ("Sol-F", "Sol-D")}
    share = {st: float(np.mean([memorized_share(h) for h in hs[st]])) for st in STAGES}
    drops = {st: stats.mean_interval([drop(h) - drop_threshold for h in hs[st]]) for st in STAGES}
    falls = {st: drops[st].test(+1 if share[st] >= memorized else -1) for st in STAGES}
    evidence = [Evidence(f"log10 Tr(F) on the noisy samples at the end, Sol-S − {o}", iv, ".2f",
                         paper="Sol-S higher (Fig. 5, no number)", outcome=iv.test(+1)) for o, iv in s_higher.items()]
    evidence += [Evidence(f"log10 Tr(F) noisy / clean samples, mean over training, {st}", iv, ".2f",
                          paper="higher on noisy (Fig. 5, no number)", outcome=iv.test(+1)) for st, iv in higher.items()]
    evidence += [Evidence(f"drop 1 − last/peak of Tr(F) on the noisy samples minus {drop_threshold:g}, {st} "
                          f"({share[st]:.0%} memorized: {'falls' if share[st] >= memorized else 'hardly falls'} "
                          f"claimed)", drops[st], ".2f", outcome=falls[st]) for st in STAGES]
    parts = [all_of(iv.test(+1) for iv in higher.values()), all_of(iv.test(+1) for iv in s_higher.values()),
             all_of(falls.values())]
    key = s_higher["Sol-F"]
    reasons = [f"Tr(F) higher on the noisy samples for every solution: {parts[0]}; Sol-S the highest at the end: "
               f"{parts[1]}; falls where (and only where) the noisy samples get memorized: {parts[2]}.",
               detectable_line("log10 difference on the key effect", key, ".2f")]
    finding = (f"At the end Sol-S's Tr(F) on the noisy samples is {10 ** key.estimate:.2g}× Sol-F's (log10 "
               f"{key.format('.2f')}, {key.n} seeds), and Tr(F) is higher on noisy than clean samples for "
               f"{sum(iv.sign > 0 for iv in higher.values())} of 3 solutions.")
    return Verdict("P-F5", CLAIM_C, status_of(parts), tuple(reasons), scale, finding=finding,
                   evidence=tuple(evidence), seeds=tuple(seeds) if seeds is not None else _seeds(hs))


def planned_runs(p: dict) -> list:
    """Sol-D, Sol-F and Sol-S at ``sparsity`` on the noisy data, with the trackers (for ``bookbuild --plan``)."""
    return list(configs(p).values())
