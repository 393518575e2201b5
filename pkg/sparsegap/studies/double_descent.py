"""Chapter 5, sparse double descent under label noise (seed 001: D-F1, D-F2, D-F3).

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
from ..verdict import Verdict, clearly_above, mean_std
from ..verdict import status_of as _status
from . import procedure
from .procedure import check_seeds

# Recorded during every run of the chapter (part of the runs' identity, so chapters 5 and 6 share them).
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
    "05_sparse_double_descent",
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
            hist, diverged = run.history, bool(run.history.get("diverged"))
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
        """Seed mean and standard deviation per heuristic, ε and round."""
        cols = ["train_acc", "test_acc", "test_best", *SUBSET_KEYS]
        g = self.table.groupby(["heuristic", "noise", "round"])
        out = g[["sparsity"]].first().join(g[cols].mean()).join(g[cols].std(ddof=1).add_suffix("_std"))
        return out.reset_index()

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

    def histories(self, heuristic: str, noise: float, rnd: int) -> list[dict]:
        return [run.history for (h, e, r, _), run in sorted(self.runs.items())
                if (h, e, r) == (heuristic, noise, rnd) and not run.history.get("diverged")]

    def diverged(self) -> list[str]:
        return [f"{h} ε={eps:g} round {r} seed {seed} diverged at epoch {run.history['diverged']['epoch']}"
                for (h, eps, r, seed), run in self.runs.items() if run.history.get("diverged")]

    @property
    def chains(self) -> list[tuple[str, float]]:
        return sorted({(h, e) for h, e, _, _ in self.runs})


def run_chains(configs: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True,
               executor=None) -> Chains:
    runs = run_all(list(configs.values()), store, device=device, progress=progress, executor=executor)
    return Chains(dict(zip(configs.keys(), runs)))


def characteristic_rounds(chain: pd.DataFrame, noise: float) -> dict[str, int | None]:
    """The paper's four characteristic sparsities of one chain (seed means, by round), by a stated rule:

    - ``dense``: round 0;
    - ``underfitting``: the first round whose train accuracy falls below the noise-free share of
      the training set, 1 - ε (None if none does);
    - ``overfitting``: among the pruned rounds before it (all of them if none underfits), the one
      with the lowest last-epoch test accuracy. The test-error peak of a double descent sits where
      the network can still fit the noisy labels (the interpolation threshold); a network that no
      longer fits even the clean share fails for another reason, and random pruning's collapse at
      the highest sparsities would otherwise be taken for the overfitting peak;
    - ``sweet spot``: the round after the overfitting one with the highest last-epoch test accuracy
      (None if the overfitting round is the last).
    """
    pruned = chain[chain.index > 0]
    below = pruned[pruned.train_acc < 1.0 - noise]
    under = int(below.index.min()) if len(below) else None
    fitting = pruned[pruned.index < under] if under is not None else pruned
    over = int((fitting if len(fitting) else pruned).test_acc.idxmin())
    after = pruned[pruned.index > over]
    return {"dense": 0, "overfitting": over,
            "sweet spot": int(after.test_acc.idxmax()) if len(after) else None, "underfitting": under}


# ------------------------------------------------------------------------------------- verdicts

CLAIM_DD = ("Under label noise, test accuracy against sparsity first falls (medium sparsity overfits), then "
            "rises again, to a peak at high sparsity above the dense network's (sparse double descent).")
CLAIM_MEM = ("Higher sparsity memorizes fewer noisy labels: train accuracy on the permuted samples falls as "
             "sparsity rises, while the unpermuted samples lose much less.")


def double_descent_verdict(chains: Chains, *, scale: str = "") -> Verdict:
    """D-F1. A chain shows the double descent when (1) its worst pruned round tests clearly below the
    dense network (the dip) and (2) a later round tests clearly above it (the peak); "clearly" is a
    gap of more than two standard errors over seeds (:func:`clearly_above`). Reproduced when every
    chain shows it, partly when some do."""
    shows, reasons = [], []
    for h, eps in chains.chains:
        ch = chains.chain(h, eps)
        ks = characteristic_rounds(ch, eps)
        dense = chains.values(h, eps, 0, "test_acc")
        over = chains.values(h, eps, ks["overfitting"], "test_acc")
        dip = clearly_above(dense, over)
        sweet = ks["sweet spot"]
        peak = sweet is not None and clearly_above(chains.values(h, eps, sweet, "test_acc"), dense)
        shows.append(dip and peak)
        where = (f"peak {mean_std(chains.values(h, eps, sweet, 'test_acc'))} at {ch.sparsity[sweet]:.2%}"
                 if sweet is not None else "no round after it")
        reasons.append(f"{h}, ε={eps:g}: dense {mean_std(dense)}; worst {mean_std(over)} at sparsity "
                       f"{ch.sparsity[ks['overfitting']]:.2%} (dip clear: {'yes' if dip else 'no'}); {where} "
                       f"(above dense clearly: {'yes' if peak else 'no'}).")
    reasons.append(f"The double descent shows in {sum(shows)} of {len(shows)} chains (last-epoch test accuracy, "
                   f"seed mean ± std; 'clear' means more than two standard errors).")
    return Verdict("D-F1", CLAIM_DD, _status(shows), tuple(reasons), scale)


def memorization_verdict(chains: Chains, heuristic: str, noise: float, *, scale: str = "") -> Verdict:
    """D-F3, on one chain. (1) The permuted samples' train accuracy at the sweet-spot round is clearly
    below (two standard errors) that at the dense and at the overfitting rounds; (2) from dense to the
    sweet spot, the permuted samples lose a larger share of their accuracy than the unpermuted ones."""
    ch = chains.chain(heuristic, noise)
    ks = characteristic_rounds(ch, noise)
    sweet = ks["sweet spot"]
    if sweet is None:
        return Verdict("D-F3", CLAIM_MEM, "not reproduced",
                       (f"{heuristic}, ε={noise:g}: no round after the overfitting one, so no sweet spot to "
                        f"compare.",), scale)
    perm = {k: chains.values(heuristic, noise, ks[k], "permuted") for k in ("dense", "overfitting", "sweet spot")}
    unperm = {k: chains.values(heuristic, noise, ks[k], "unpermuted") for k in ("dense", "sweet spot")}
    falls = clearly_above(perm["dense"], perm["sweet spot"]) and clearly_above(perm["overfitting"], perm["sweet spot"])
    drop = lambda d: 1 - np.mean(d["sweet spot"]) / np.mean(d["dense"])  # noqa: E731
    milder = drop(unperm) < drop(perm)
    reasons = [
        f"{heuristic}, ε={noise:g}. Train accuracy on the permuted samples (their noisy labels), seed mean ± std: "
        + ", ".join(f"{k} ({ch.sparsity[ks[k]]:.2%}) {mean_std(v)}" for k, v in perm.items()) + ".",
        f"Falls clearly at the sweet spot, below both the dense and the overfitting round: {'yes' if falls else 'no'}.",
        f"From dense to the sweet spot the permuted samples lose {drop(perm):.0%} of their accuracy, the unpermuted "
        f"ones {drop(unperm):.0%} ({mean_std(unperm['dense'])} to {mean_std(unperm['sweet spot'])}): milder "
        f"{'yes' if milder else 'no'}.",
    ]
    return Verdict("D-F3", CLAIM_MEM, _status([falls, milder]), tuple(reasons), scale)


def describe_scale(p: dict, chains: Chains) -> str:
    size = f"{p['train_size']} training samples" if p["train_size"] else "the full training set"
    return (f"{procedure.model_config(p).label} on {p['dataset']} ({size}), {len(p['seeds'])} seeds, {p['epochs']} epochs per round, "
            f"{p['rounds']} rounds at {p['prune_rate']:.0%}, {len(chains.chains)} chains")


def planned_runs(p: dict) -> list:
    """Every chain round of the sweep (for ``bookbuild --plan``)."""
    return list(sweep_configs(p).values())
