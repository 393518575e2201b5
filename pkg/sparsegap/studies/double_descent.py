"""Chapter 7, sparse double descent under label noise (seed 001: D-F1, D-F2, D-F3).

Iterative pruning with rewinding (``RunConfig(kind="imp")``) from a dense network trained on data
whose labels carry symmetric noise ε, one chain of rounds per pruning heuristic, noise level and
seed. Every run records, per epoch, its accuracy on the permuted (noisy-label), unpermuted and
restored samples. The characteristic sparsities of the paper's Fig. 2 and 3 are picked from the
chain's own results by the rule of :func:`characteristic_rounds`, never by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .. import params as P
from ..config import DataConfig, ModelConfig, RunConfig, TrainConfig, imp_chain
from ..pruning import HEURISTICS
from ..runs import Run, RunStore, run_all
from .. import stats
from ..stats import Interval
from ..verdict import Evidence, Verdict, all_of, detectable_line, mean_ci
from ..verdict import status_of as _status
from . import procedure
from .procedure import check_seeds

# Recorded during every run of the chapter (part of the runs' identity, so chapters 7 and 8 share them).
TRACK = ("accuracy:permuted@1", "accuracy:unpermuted@1", "accuracy:restored@1")
SUBSET_KEYS = {"permuted": "accuracy:permuted", "unpermuted": "accuracy:unpermuted", "restored": "accuracy:restored"}
CHARACTERISTIC = ("dense", "overfitting", "sweet spot", "underfitting")

# The knobs that decide which runs the chapter trains; the re-dense chapter declares them too, so
# that both name the same runs (a test checks that their defaults agree).
CHAIN_PARAMETERS = dict(
    **P.data_parameters(),
    init=P.Param("str", '"kaiming" (He normal weights, zero biases, as the paper) or "default"'),
    prune_rate=P.Param("float", "fraction of the remaining weights each round removes (the paper: 0.2)",
                       low=0.0, high=1.0, high_open=True),
    rounds=P.Param("int", "rounds of iterative pruning; round r has sparsity 1 - (1 - prune_rate)^r", low=1),
    rewind_iter=P.Param("int", "training iteration of the dense run the survivors are rewound to (0: its init)", low=0),
    prune_seed=P.Param("int", "seed of the gradient heuristic's batch and the random heuristic's scores", low=0),
    seeds=P.seeds(),
    epochs=P.Param("int", "epochs of the dense run and of every round", low=1),
    batch_size=P.Param("int", "minibatch size", low=1),
    lr=P.Param("float", "initial SGD learning rate", low=0.0),
    momentum=P.fraction("SGD momentum", high_open=True),
    weight_decay=P.Param("float", "L2 weight decay", low=0.0),
    schedule=P.Param("str", '"constant", "multistep" or "cosine"'),
    milestones=P.Param("floats", "multistep lr decay points, as fractions of the epochs", low=0.0, high=1.0,
                       min_len=0),
    gamma=P.fraction("lr decay factor"),
    exclude_output=P.Param("bool", "True spares the classifier layer from pruning (the paper, for LeNet)"),
    noise_seed=P.Param("int", "seed that picks the noisy samples and their labels", low=0),
)

PARAMETERS = P.ParameterSpec(
    "07_sparse_double_descent",
    **CHAIN_PARAMETERS,
    noises=P.Param("floats", "label-noise levels ε (fraction of training labels flipped); magnitude pruning "
                             "runs at every one", low=0.0, high=1.0, high_open=True, unique=True),
    heuristics=P.Param("strs", "pruning heuristics: magnitude, gradient, random", unique=True),
    heuristic_noises=P.Param("floats", "the ε (among noises) at which the heuristics other than magnitude run",
                             low=0.0, high=1.0, high_open=True, unique=True, min_len=0),
    **P.fast_training_parameters(), **P.environment_parameters(),
)


def check_heuristics(heuristics: Sequence[str]) -> tuple[str, ...]:
    out = tuple(heuristics)
    bad = [h for h in out if h not in HEURISTICS]
    if bad or not out:
        raise ValueError(f"heuristics must be a non-empty list drawn from {HEURISTICS}, got {list(heuristics)!r}")
    return out


def chain_settings(p: dict) -> tuple[ModelConfig, TrainConfig, dict]:
    """The model, the training config and the imp fields shared by every chain, from notebook parameters."""
    model = procedure.model_config(p)
    train = procedure.train_config(p)
    imp = dict(prune_rate=p["prune_rate"], rewind_iter=p["rewind_iter"], exclude_output=p["exclude_output"])
    return model, train, imp


def data_config(p: dict, noise: float) -> DataConfig:
    return procedure.data_config(p, noise=noise, noise_seed=p["noise_seed"])


def chain_configs(data: DataConfig, model: ModelConfig, train: TrainConfig, *, heuristic: str, rounds: int,
                  seeds: Sequence[int], prune_rate: float, rewind_iter: int = 0, prune_seed: int = 0,
                  exclude_output: bool = True) -> dict[tuple[str, float, int, int], RunConfig]:
    """One chain per seed: the dense run (round 0) and ``rounds`` imp rounds, keyed by
    (heuristic, ε, round, seed). Dense runs do not depend on the heuristic: chains share them."""
    check_heuristics([heuristic])
    out = {}
    for seed in check_seeds(seeds):
        dense = RunConfig("dense", data, model, train, seed=seed, track=TRACK,
                          save_weights_at=(rewind_iter,) if rewind_iter else ())
        out[(heuristic, data.noise, 0, seed)] = dense
        fields = dict(prune=heuristic, rewind_iter=rewind_iter, exclude_output=exclude_output,
                      prune_seed=prune_seed if heuristic != "magnitude" else 0)
        for r, cfg in enumerate(imp_chain(dense, rounds, prune_rate=prune_rate, **fields), start=1):
            out[(heuristic, data.noise, r, seed)] = cfg
    return out


def sweep_configs(p: dict) -> dict[tuple[str, float, int, int], RunConfig]:
    """The chapter's sweep from its parameters: magnitude at every ε, the other heuristics at ``heuristic_noises``."""
    heuristics = check_heuristics(p["heuristics"])
    extra = [e for e in p["heuristic_noises"] if e not in p["noises"]]
    if extra:
        raise ValueError(f"heuristic_noises must be drawn from noises={p['noises']!r}, got {extra!r} too")
    model, train, imp = chain_settings(p)
    out = {}
    for h in heuristics:
        for eps in (p["noises"] if h == "magnitude" else p["heuristic_noises"]):
            out |= chain_configs(data_config(p, eps), model, train, heuristic=h, rounds=p["rounds"],
                                 seeds=p["seeds"], prune_seed=p["prune_seed"], **imp)
    return out


@dataclass
class Chains:
    """Trained chains: runs keyed by (heuristic, ε, round, seed), with tidy tables of their results."""

    runs: dict[tuple[str, float, int, int], Run]

    @property
    def table(self) -> pd.DataFrame:
        """One row per run: last-epoch train and test accuracy, the best test accuracy over the epochs,
        and the last-epoch accuracy on the permuted, unpermuted and restored samples."""
        rows = []
        for (h, eps, r, seed), run in self.runs.items():
            hist, diverged = run.history, bool(run.diverged)
            row = {"heuristic": h, "noise": eps, "round": r, "sparsity": run.config.sparsity, "seed": seed,
                   "diverged": diverged, "run_id": run.config.run_id}
            if diverged:
                row |= {k: np.nan for k in ("train_acc", "test_acc", "test_best", *SUBSET_KEYS)}
            else:
                row |= {"train_acc": hist["train_acc"][-1], "test_acc": hist["test_acc"][-1],
                        "test_best": max(hist["test_acc"])}
                row |= {name: hist["trace"][key]["value"][-1] for name, key in SUBSET_KEYS.items()}
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        """Seed mean and standard deviation (``<col>_std``) per heuristic, ε and round, and ``seeds``
        (:func:`sparsegap.stats.seed_summary`)."""
        cols = ["train_acc", "test_acc", "test_best", *SUBSET_KEYS]
        out = stats.seed_summary(self.table, ["heuristic", "noise", "round"], ["sparsity", *cols])
        return out.drop(columns="sparsity_std")

    def chain(self, heuristic: str, noise: float) -> pd.DataFrame:
        """The summary of one chain, by round."""
        s = self.summary()
        out = s[(s.heuristic == heuristic) & (s.noise == noise)].set_index("round")
        if out.empty:
            raise KeyError(f"no chain for heuristic={heuristic!r} at noise={noise!r}; the chains are "
                           f"{sorted(set(zip(s.heuristic, s.noise)))}")
        return out

    def values(self, heuristic: str, noise: float, rnd: int, column: str) -> list[float]:
        """One column over seeds (diverged runs left out)."""
        t = self.table
        sel = t[(t.heuristic == heuristic) & (t.noise == noise) & (t["round"] == rnd) & ~t.diverged]
        return sel[column].tolist()

    def by_seed(self, heuristic: str, noise: float, rnd: int, column: str) -> pd.Series:
        """One column over seeds, indexed by seed (diverged runs left out): what paired differences pair."""
        t = self.table
        sel = t[(t.heuristic == heuristic) & (t.noise == noise) & (t["round"] == rnd) & ~t.diverged]
        return sel.set_index("seed")[column].sort_index()

    def histories(self, heuristic: str, noise: float, rnd: int) -> list[dict]:
        return [run.history for (h, e, r, _), run in sorted(self.runs.items())
                if (h, e, r) == (heuristic, noise, rnd) and not run.diverged]

    def diverged(self) -> list[str]:
        return [f"{h} ε={eps:g} round {r} seed {seed} diverged at epoch {run.diverged['epoch']}"
                for (h, eps, r, seed), run in self.runs.items() if run.diverged]

    @property
    def chains(self) -> list[tuple[str, float]]:
        return sorted({(h, e) for h, e, _, _ in self.runs})


def run_chains(configs: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True,
               executor=None) -> Chains:
    runs = run_all(list(configs.values()), store, device=device, progress=progress, executor=executor)
    return Chains(dict(zip(configs.keys(), runs)))


def characteristic_rounds(chain: pd.DataFrame, noise: float) -> dict[str, int | None]:
    """The paper's characteristic sparsities of one chain (seed means, by round; Section 3.2 and Fig. 2),
    by a stated rule that keeps them in the order dense < overfitting < sweet spot < underfitting of
    sparsity (a round that does not exist is None, and so is every later one):

    - ``dense``: round 0;
    - ``overfitting``: the test-error peak of the double descent, i.e. the pruned round with the lowest
      last-epoch test accuracy among those that still fit the clean share of the training set (train
      accuracy at least 1 - ε, as the dense network must too): the peak sits where the network can
      still memorize noisy labels (the interpolation threshold). None when no pruned round fits, or the
      dense network does not; a network that cannot fit even the clean share fails for another reason
      (random pruning's collapse at the highest sparsities would otherwise be taken for it);
    - ``sweet spot``: "where the last test accuracy reaches a peak" after the dip: the round after the
      overfitting one with the highest last-epoch test accuracy, if it tests above the overfitting round;
    - ``underfitting``: "where both the best and the last test accuracy suffer": the first round after
      the sweet spot whose last-epoch and best-epoch test accuracies are both below the dense network's
      and the sweet spot's.
    """
    out: dict[str, int | None] = {k: None for k in CHARACTERISTIC}
    if 0 not in chain.index:
        return out
    out["dense"] = 0
    dense = chain.loc[0]
    pruned = chain[chain.index > 0].sort_index()
    if dense.train_acc < 1.0 - noise or pruned.empty:
        return out
    below = pruned[pruned.train_acc < 1.0 - noise]
    window = pruned[pruned.index < below.index.min()] if len(below) else pruned
    if window.empty:
        return out
    over = int(window.test_acc.idxmin())
    out["overfitting"] = over
    after = pruned[pruned.index > over]
    if after.empty or after.test_acc.max() <= pruned.test_acc[over]:
        return out
    sweet = int(after.test_acc.idxmax())
    out["sweet spot"] = sweet
    beyond = pruned[pruned.index > sweet]
    suffer = beyond[(beyond.test_acc < min(dense.test_acc, pruned.test_acc[sweet]))
                    & (beyond.test_best < min(dense.test_best, pruned.test_best[sweet]))]
    out["underfitting"] = int(suffer.index.min()) if len(suffer) else None
    return out


# ------------------------------------------------------------------------------------- verdicts

CLAIM_DD = ("Under label noise (but for extreme noise), test accuracy against sparsity first falls (medium sparsity "
            "overfits), then rises again, to a peak at high sparsity above the dense network's (sparse double descent).")
CLAIM_MEM = ("Where test accuracy rises with sparsity, the train accuracy on the permuted (noisy-label) samples falls "
             "greatly, while the unpermuted samples lose relatively less.")

# Label noise at or above this is the paper's "extreme label noise", which its double-descent claim leaves out
# ("in most cases except for those with extreme label noise"): such chains are reported apart, as context.
EXTREME_NOISE = 0.8


def paired(a: pd.Series, b: pd.Series) -> Interval | None:
    """mean(a - b) over the seeds both have (Series indexed by seed) with its paired t-interval; None if none."""
    a, b = (x.replace([np.inf, -np.inf], np.nan).dropna() for x in (a, b))   # diverged or undefined
    seeds = a.index.intersection(b.index)
    if len(seeds) == 0:
        return None
    return stats.paired_difference(a[seeds].to_numpy(), b[seeds].to_numpy())


def outcome_of(iv: Interval | None, direction: int = 1) -> str:
    return "undecided" if iv is None else iv.test(direction)


@dataclass
class ChainShape:
    """What one chain says about the double descent: its characteristic rounds, the dip (dense minus
    overfitting) and the peak (sweet spot minus dense) in last-epoch test accuracy as paired
    differences over seeds (the rounds of one chain share the seed and the dense run), and the sweet
    spot against the early-stopped dense network (its best test accuracy over the epochs)."""

    heuristic: str
    noise: float
    rounds: dict
    sparsity: dict
    dip: Interval | None
    peak: Interval | None
    early: Interval | None
    outcome: str
    note: str
    seeds: tuple

    @property
    def label(self) -> str:
        return f"{self.heuristic}, ε = {self.noise:g}"

    @property
    def peak_outcome(self) -> str:
        """The peak's outcome: undecided when the best round after the dip is the sweep's last point."""
        if self.peak is None or self.rounds["best"] == self.rounds["last"]:
            return "undecided"
        return self.peak.test(+1)

    @property
    def best_name(self) -> str:
        """The round the peak is read at: the sweet spot, unless none tests above the dip."""
        return "sweet spot" if self.rounds["sweet spot"] is not None else "best round after the dip"


def chain_shape(chains: Chains, heuristic: str, noise: float) -> ChainShape:
    ch = chains.chain(heuristic, noise)
    ks = characteristic_rounds(ch, noise)
    last = int(ch.index.max())
    col = lambda r, c="test_acc": chains.by_seed(heuristic, noise, r, c)  # noqa: E731
    dense, over, sweet = col(0), ks["overfitting"], ks["sweet spot"]
    dip = paired(dense, col(over)) if over is not None else None
    # the best round after the dip: the sweet spot, or (when none tests above the dip) the best of the rest
    best = sweet if sweet is not None else (int(ch.test_acc[ch.index > over].idxmax())
                                            if over is not None and over < last else None)
    peak = paired(col(best), dense) if best is not None else None
    early = paired(col(best), col(0, "test_best")) if best is not None else None
    if over is None:
        fits = ch.train_acc[0] >= 1 - noise
        note = ("no pruned round fits the clean share 1 - ε of the training labels, so none can overfit" if fits else
                f"the dense network fits {ch.train_acc[0]:.1%} of its training labels, below the clean share 1 - ε: "
                f"it does not interpolate, so the chain cannot show a double descent")
        outcome = "undecided"
    elif best is None:
        note, outcome = "the dip is at the last sparsity tested: the rise after it is unobserved", "undecided"
    elif best == last:
        note = (f"the best round after the dip is the last sparsity tested ({ch.sparsity[best]:.2%}): the descent "
                f"after it is unobserved, so it is no peak")
        outcome = all_of([dip.test(+1), "undecided"])
    else:  # the peak is read inside the sweep
        note = "" if sweet is not None else "no round after the dip tests above it"
        outcome = all_of([dip.test(+1), peak.test(+1)])
    ks = ks | {"best": best, "last": last}
    return ChainShape(heuristic, noise, ks, {k: (float(ch.sparsity[r]) if r is not None else None) for k, r in ks.items()},
                      dip, peak, early, outcome, note, tuple(int(s) for s in dense.index))


def _chain_order(chains: Chains) -> list[tuple[str, float]]:
    """Magnitude pruning first (the paper's main heuristic), then by ε."""
    return sorted(chains.chains, key=lambda he: (he[0] != "magnitude", he[0], he[1]))


def double_descent_verdict(chains: Chains, *, scale: str = "", extreme: float = EXTREME_NOISE) -> Verdict:
    """D-F1. A chain shows the double descent when (1) its overfitting round tests clearly below the
    dense network (the dip) and (2) its sweet spot, a later round inside the sweep (not its last
    point, after which the descent is unobserved), tests clearly above the dense network (the peak).
    Both are paired differences of last-epoch test accuracy over seeds (the rounds of a chain share
    the seed and the dense run); "clearly": the 95% t-interval excludes zero. A chain holds when both
    hold, fails when one is clearly contradicted, and is undecided otherwise (also when a
    precondition fails: no round fits the clean labels, or the best round is the last one).
    Reproduced when every chain at ε below ``extreme`` holds, partly when some do; chains at
    ε >= ``extreme`` (the paper's "extreme label noise", which its claim leaves out) are shown as
    context and do not count. The early-stopped dense network (its best test accuracy over the
    epochs) is shown as a reference."""
    shapes = [chain_shape(chains, h, e) for h, e in _chain_order(chains)]
    main = [s for s in shapes if s.noise < extreme]
    side = [s for s in shapes if s.noise >= extreme]
    evidence, reasons = [], []
    for s in main + side:
        context = s.noise >= extreme
        tag = f"{s.label}{' (extreme noise: context)' if context else ''}"
        if s.peak is not None:
            evidence.append(Evidence(f"{tag}: {s.best_name} ({s.sparsity['best']:.2%}) − dense, last-epoch test "
                                     f"accuracy", s.peak, "+.1%",
                                     outcome="" if context else s.peak_outcome))
        if s.dip is not None:
            evidence.append(Evidence(f"{tag}: dense − overfitting ({s.sparsity['overfitting']:.2%}), last-epoch test "
                                     f"accuracy", s.dip, "+.1%", outcome="" if context else s.dip.test(+1)))
        reasons.append(f"{tag}: " + (s.note + "; " if s.note else "") + f"double descent {_word(s.outcome)}.")
    for s in main + side:
        if s.early is not None:
            evidence.append(Evidence(f"{s.label}: {s.best_name} (last epoch) − early-stopped dense network (its best "
                                     f"epoch), test accuracy", s.early, "+.1%"))
    seeds = tuple(sorted({x for s in shapes for x in s.seeds}))
    n_hold = sum(s.outcome == "holds" for s in main)
    status = _status([s.outcome for s in main])
    if not main:
        finding = f"No chain below ε = {extreme:g} was trained, so the claim cannot be tested."
    else:
        key = main[0]
        what = (f"in {key.label} the {key.best_name} ({key.sparsity['best']:.2%}) tests {key.peak.format('+.1%')} "
                f"against the dense network" if key.peak is not None else f"in {key.label} {key.note or 'there is no sweet spot'}")
        finding = (f"The double descent (a clear dip below the dense network, then an interior peak clearly above it) "
                   f"shows in {n_hold} of {len(main)} chains at ε < {extreme:g}; {what}.")
        if key.peak is not None:
            reasons.append(detectable_line(f"{key.best_name} − dense gap in {key.label}", key.peak, ".1%"))
    reasons.append("Last-epoch test accuracy, paired over seeds; the overfitting round is the worst and the sweet spot "
                   "the best of several rounds, which favours finding a dip and a peak: read the intervals, not only "
                   "the label.")
    return Verdict("D-F1", CLAIM_DD, status, tuple(reasons), scale, finding=finding, evidence=tuple(evidence),
                   seeds=seeds)


def _word(outcome: str) -> str:
    return {"holds": "shown", "fails": "contradicted", "undecided": "undecided"}[outcome]


def memorization_verdict(chains: Chains, heuristic: str, noise: float, *, scale: str = "") -> Verdict:
    """D-F3, on one chain, over the stretch where test accuracy rises with sparsity (from the
    overfitting round to the sweet spot; the paper's "rapid rise period"): (1) the train accuracy on
    the permuted samples (their noisy labels: memorization) falls, paired over seeds; (2) the
    unpermuted samples lose a smaller share of their accuracy than the permuted ones (per seed,
    relative drop of the permuted minus that of the unpermuted, paired). Inconclusive when the chain
    has no overfitting round or sweet spot to compare."""
    ch = chains.chain(heuristic, noise)
    ks = characteristic_rounds(ch, noise)
    over, sweet = ks["overfitting"], ks["sweet spot"]
    seeds = tuple(int(s) for s in chains.by_seed(heuristic, noise, 0, "permuted").index)
    label = f"{heuristic}, ε = {noise:g}"
    if over is None or sweet is None:
        missing = "overfitting round" if over is None else "sweet spot"
        return Verdict("D-F3", CLAIM_MEM, "inconclusive",
                       (f"{label}: the characteristic rounds are {_rounds_text(ch, ks)}.",), scale,
                       finding=f"The {label} chain has no {missing}, so there is no rise of test accuracy to "
                               f"test memorization on.", seeds=seeds)
    col = lambda r, c: chains.by_seed(heuristic, noise, r, c)  # noqa: E731
    fall = paired(col(over, "permuted"), col(sweet, "permuted"))
    rel = lambda c: 1 - col(sweet, c) / col(over, c)  # noqa: E731
    milder = paired(rel("permuted"), rel("unpermuted"))
    context = paired(col(0, "permuted"), col(sweet, "permuted"))
    s_over, s_sweet = ch.sparsity[over], ch.sparsity[sweet]
    evidence = (
        Evidence(f"permuted samples' train accuracy, overfitting ({s_over:.2%}) − sweet spot ({s_sweet:.2%})", fall,
                 "+.1%", outcome=fall.test(+1)),
        Evidence("relative drop from overfitting to sweet spot, permuted − unpermuted samples", milder, "+.1%",
                 outcome=milder.test(+1)),
        Evidence(f"permuted samples' train accuracy, dense − sweet spot ({s_sweet:.2%})", context, "+.1%"),
    )
    reasons = (
        f"{label}. Train accuracy on the permuted samples (noisy labels), seed mean with 95% CI: overfitting "
        f"{mean_ci(col(over, 'permuted'))}, sweet spot {mean_ci(col(sweet, 'permuted'))}; on the unpermuted samples: "
        f"{mean_ci(col(over, 'unpermuted'))} and {mean_ci(col(sweet, 'unpermuted'))}.",
        detectable_line("fall of the permuted samples' accuracy", fall, ".1%"),
    )
    finding = (f"From the overfitting round ({s_over:.2%}) to the sweet spot ({s_sweet:.2%}) of {label}, the permuted "
               f"samples' train accuracy falls by {fall.format('.1%')}, and their relative drop exceeds the unpermuted "
               f"samples' by {milder.format('+.1%')}.")
    return Verdict("D-F3", CLAIM_MEM, _status([fall.test(+1), milder.test(+1)]), reasons, scale, finding=finding,
                   evidence=evidence, seeds=seeds)


def _rounds_text(ch: pd.DataFrame, ks: dict) -> str:
    return ", ".join(f"{k} {ch.sparsity[r]:.2%}" if r is not None else f"{k} none" for k, r in ks.items())


def characteristic_table(chains: Chains) -> pd.DataFrame:
    """Per chain: the sparsity of each characteristic round ("none" where it does not exist)."""
    rows = []
    for h, e in _chain_order(chains):
        ch = chains.chain(h, e)
        ks = characteristic_rounds(ch, e)
        rows.append({"chain": f"{h}, ε={e:g}", **{k: (f"{100 * ch.sparsity[r]:.4g}%" if r is not None else "none")
                                                for k, r in ks.items()}})
    return pd.DataFrame(rows).set_index("chain")


def early_stopped_dense(chains: Chains) -> pd.DataFrame:
    """Per ε: the dense network's best test accuracy over the epochs (early stopping), seed mean and std."""
    t = chains.table
    d = t[t["round"] == 0].drop_duplicates(["noise", "seed"])
    return stats.seed_summary(d, ["noise"], ["test_best", "test_acc"])


def describe_scale(p: dict, chains: Chains) -> str:
    size = f"{p['train_size']} training samples" if p["train_size"] else "the full training set"
    return (f"{procedure.model_config(p).label} on {p['dataset']} ({size}), {len(p['seeds'])} seeds, {p['epochs']} epochs per round, "
            f"{p['rounds']} rounds at {p['prune_rate']:.0%}, {len(chains.chains)} chains")


def planned_runs(p: dict) -> list:
    """Every chain round of the sweep (for ``bookbuild --plan``)."""
    return list(sweep_configs(p).values())
