"""Chapter 5, the path from Init-S to Sol-F and the samples that drive it (The Price of Sparsity,
Fig. 6–10: P-F6, P-F7/8, P-F9/10).

The runs are the two-regimes chapter's (the same configs, shared through the store) at one sparsity.
Along θ(α) = (1 − α)·Init-S + α·Sol-F this module measures the loss (:func:`sparsegap.landscape.linear_path`)
and, for every training sample, the cosine between its negative gradient and the path's direction
Sol-F − Init-S (:func:`sparsegap.metrics.cosines.per_sample_cosines`); and the classes on which Sol-S
and Sol-F disagree (:func:`sparsegap.metrics.compare.disagreement_classes`). The top-cosine classes are
judged against random subsets of the same size (what sampling alone gives); the disagreement classes against
the disagreement between two Sol-F of different seeds, so that the classes every model of the task confuses
do not count as an effect of sparse training from scratch. Every verdict is a 95% t-interval over seeds.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .. import landscape as L
from .. import params as P
from ..metrics.compare import disagreement_classes
from ..metrics.cosines import per_sample_cosines, top_fraction_classes
from ..runs import Run, RunStore, load_data
from .. import stats
from ..verdict import Evidence, Verdict, detectable_line, status_of
from ..config import RunConfig
from . import two_regimes
from .procedure import Experiment, executor_of, run_experiment
from .redense import monotone
from .two_regimes import RUN_PARAMETERS

PARAMETERS = P.ParameterSpec(
    "05_paths_and_cosines",
    **{k: v for k, v in RUN_PARAMETERS.items() if k != "sparsities"},
    sparsity=P.fraction("the sparsity of Sol-F and Sol-S studied here (the paper's Fig. 9/10: 0.97)", high_open=True),
    path_points=P.Param("int", "points on the path from Init-S (α=0) to Sol-F (α=1)", low=2),
    alphas=P.Param("floats", "α at which the per-sample cosines are measured", low=0.0, high=1.0, unique=True),
    top_fraction=P.fraction("the share of samples with the highest cosines whose classes are counted (paper: 5%)"),
    permutations=P.Param("int", "random subsets of the same size that form the baseline of the class rules", low=10),
    **P.fast_training_parameters(), **P.environment_parameters(),
)


def configs(p: dict) -> dict[tuple[str, float, int], RunConfig]:
    """Sol-D, Sol-F and Sol-S at ``sparsity``: the two-regimes chapter's own runs (:func:`two_regimes.configs`)."""
    return two_regimes.configs({**p, "sparsities": [p["sparsity"]]})


def run_paths(p: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True,
              executor=None) -> Experiment:
    """Train (or load) the chapter's runs (:func:`configs`)."""
    return run_experiment(configs(p), store, device=device, progress=progress, executor=executor_of(p, executor))


def _pair(exp: Experiment, seed: int) -> tuple[Run, Run]:
    s = exp.sparsities[0]
    return exp.runs[("Sol-S", s, seed)], exp.runs[("Sol-F", s, seed)]


def path(exp: Experiment, seed: int, points: int, *, device: str = "cpu") -> pd.DataFrame:
    """Loss and accuracy on train and test along (1 − α)·Init-S + α·Sol-F (kept beside Sol-F), evaluated on
    ``device`` (:func:`~sparsegap.runs.measure_plan.measurement_device`)."""
    from ..runs.measure_plan import measurement_device
    sol_s, sol_f = _pair(exp, seed)
    data = load_data(sol_f.config.data)
    rows = sol_f.measure("path_from_init_s", {"from": sol_s.config.run_id, "points": points},
                         lambda: L.linear_path(sol_s.init_model(), sol_f.model(), data,
                                               ts=np.linspace(0, 1, points),
                                               device=measurement_device(device)).to_dict("records"))
    return pd.DataFrame(rows).rename(columns={"t": "alpha"}).assign(seed=seed)


def cosines(exp: Experiment, seed: int, alpha: float, *, device: str = "cpu") -> np.ndarray:
    """cos(−∇ℓ_i(θ(α)), Sol-F − Init-S) for every training sample, under the shared mask (kept beside Sol-F),
    computed on ``device`` (:func:`~sparsegap.runs.measure_plan.measurement_device`)."""
    from ..runs.measure_plan import measurement_device
    sol_s, sol_f = _pair(exp, seed)

    def measure():
        data = load_data(sol_f.config.data)
        start, end = sol_s.init_model().state_dict(), sol_f.model().state_dict()
        model = sol_f.model()
        model.load_state_dict(L.interpolate_state(start, end, alpha))
        model.to(measurement_device(device))
        direction = {k: end[k] - start[k] for k, _ in model.named_parameters()}
        return per_sample_cosines(model, data.x_train, data.y_train, direction, masks=sol_f.masks).tolist()
    return np.asarray(sol_f.measure("cosines", {"from": sol_s.config.run_id, "alpha": float(alpha)}, measure))


def top_classes(cos: np.ndarray, y: torch.Tensor, fraction: float, num_classes: int) -> np.ndarray:
    return top_fraction_classes(torch.as_tensor(cos), y, fraction, num_classes=num_classes).numpy()


def disagreements(exp: Experiment, seed: int) -> dict[str, np.ndarray]:
    """Counts per true class of the train and of the test samples on which Sol-S and Sol-F disagree."""
    sol_s, sol_f = _pair(exp, seed)
    data = load_data(sol_f.config.data)
    return {split: disagreement_classes(sol_s.model(), sol_f.model(), x, y).numpy()
            for split, (x, y) in (("train", (data.x_train, data.y_train)), ("test", (data.x_test, data.y_test)))}


def tv(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation distance between two class histograms (normalized to distributions)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return 0.5 * float(np.abs(a / a.sum() - b / b.sum()).sum())


def random_tv(y: np.ndarray, size: int, reference, n: int, seed: int = 0, num_classes: int | None = None) -> np.ndarray:
    """TV distances between ``reference`` (a histogram, or None for a second random subset) and the class
    histograms of ``n`` random subsets of ``size`` samples: the baseline a class rule is judged against."""
    rng = np.random.default_rng(seed)
    k = num_classes or int(y.max()) + 1
    out = []
    for _ in range(n):
        h = np.bincount(rng.choice(y, size, replace=False), minlength=k)
        ref = reference if reference is not None else np.bincount(rng.choice(y, size, replace=False), minlength=k)
        out.append(tv(h, ref))
    return np.asarray(out)


# ------------------------------------------------------------------------------------- verdicts

CLAIM_PATH = ("The training loss decreases monotonically along the straight line from Init-S to Sol-F, so "
              "Sol-F is reachable from Init-S downhill.")
CLAIM_CLASSES = ("The samples that point most along the path (top-5% cosines) come from different classes near "
                 "Init-S (α = 0.3) and near Sol-F (α = 0.9), and some classes are over-represented.")
CLAIM_DISAGREE = ("The samples on which Sol-S and Sol-F disagree are skewed towards a few classes, on the train and "
                  "on the test set alike: sparse training from scratch disproportionately impacts a small subset "
                  "of the data.")
# The tolerance of "monotone": a rise between neighbouring points of the path of at most 1% of the loss at
# Init-S counts as float noise (as :func:`sparsegap.studies.redense.monotone`, which uses the total drop).
MONOTONE_TOL = 0.01
# P-F9/10: the smallest skew beyond the seed-vs-seed baseline that counts (chance-corrected total variation):
# 5% of the disagreements on other classes than where two seeds of Sol-F disagree. Decided before any run.
SKEW_MARGIN = 0.05

def class_names(dataset: str, k: int) -> tuple[str, ...]:
    """``k`` class labels for ``dataset``: their names (:func:`sparsegap.data.class_names`) where known, else
    the class numbers."""
    from ..data import class_names as names_of
    try:
        names = names_of(dataset)
    except ValueError:
        names = ()
    return tuple(names[:k]) if len(names) >= k else tuple(str(c) for c in range(k))


def _seeds_of(frame: pd.DataFrame) -> tuple[int, ...]:
    return tuple(sorted(int(s) for s in frame.seed.unique()))


def path_verdict(paths: pd.DataFrame, *, tol: float = MONOTONE_TOL, scale: str = "") -> Verdict:
    """P-F6 (a): the train loss decreases monotonically along (1 − α)·Init-S + α·Sol-F.

    Per seed, the largest change of the train loss between neighbouring points of the path, as a share of
    the loss at Init-S (negative when every step goes down). The claim *holds* when its 95% t-interval over
    seeds lies below ``tol`` (rises within float noise) and every seed's path is monotone
    (:func:`sparsegap.studies.redense.monotone`); it *fails* when the interval lies above ``tol`` (every
    seed climbs); else the seeds cannot decide (*inconclusive*)."""
    train = paths[paths.subset == "train"]
    steps, mono, reasons = [], [], []
    for seed, d in train.groupby("seed"):
        v = d.sort_values("alpha").loss.to_numpy(dtype=float)
        steps.append(float(np.diff(v).max() / v[0]))
        mono.append(monotone(v, tol))
        reasons.append(f"seed {seed}: train loss {v[0]:.3f} at Init-S, {v[-1]:.3f} at Sol-F, largest step between "
                       f"neighbours {np.diff(v).max():+.3f} ({'monotone' if mono[-1] else 'not monotone'}).")
    if not steps:
        return Verdict("P-F6", CLAIM_PATH, "inconclusive", ("No path was measured.",), scale,
                       finding="No path was measured, so the claim cannot be tested.")
    step = stats.mean_interval(steps)
    outcome = step.shifted(-tol).test(-1)
    if outcome == "holds" and not all(mono):
        outcome = "undecided"
    reasons.append(detectable_line("change in the largest step (share of the loss at Init-S)", step, ".3f"))
    evidence = (Evidence(f"largest change of the train loss between neighbouring points of the path, share of the "
                         f"loss at Init-S (monotone: below {tol:g})", step, ".3f",
                         paper="monotonically decreasing (Fig. 6a, no number)", outcome=outcome),)
    finding = (f"The train loss along the path from Init-S to Sol-F is monotone in {sum(mono)} of {len(mono)} seeds; "
               f"its largest step between neighbouring points is {step.format('.3f')} of the loss at Init-S.")
    return Verdict("P-F6", CLAIM_PATH, status_of([outcome]), tuple(reasons), scale, finding=finding,
                   evidence=evidence, seeds=_seeds_of(train))


def chance_tv(y: np.ndarray, size: int, reference, n: int, seed: int = 0, num_classes: int | None = None) -> float:
    """The total variation that sampling alone gives: the mean over ``n`` random subsets of ``size`` samples of
    their distance to ``reference`` (a histogram, or None for a second random subset)."""
    return float(random_tv(y, size, reference, n, seed=seed, num_classes=num_classes).mean())


def classes_verdict(hists: dict[float, list[np.ndarray]], y: np.ndarray, size: int, permutations: int, *,
                    seeds: Sequence[int] = (), scale: str = "") -> Verdict:
    """P-F7/8, over seeds (``hists[α][i]``: the class histogram of the top-cosine samples of the i-th seed):

    * (Fig. 7) the class distributions at α = 0.3 and α = 0.9 differ: per seed, their total variation less
      the mean total variation of two random subsets of the same size (what sampling alone gives);
    * (Fig. 8) at α = 0.3 some classes are over-represented: per seed, the total variation from the data's
      class distribution less that of random subsets of the same size.

    Each part *holds* when the 95% t-interval over seeds of its excess lies above zero, *fails* when below.
    """
    h3s, h9s = list(hists[0.3]), list(hists[0.9])
    seeds = tuple(seeds) or tuple(range(len(h3s)))
    k = len(h3s[0])          # every class of the data set, also those that no sample of y holds
    data_hist = np.bincount(y, minlength=k)
    pair_base = chance_tv(y, size, None, permutations, seed=0, num_classes=k)
    skew_base = chance_tv(y, size, data_hist, permutations, seed=1000, num_classes=k)
    differ = stats.mean_interval([tv(a, b) - pair_base for a, b in zip(h3s, h9s)])
    skew = stats.mean_interval([tv(a, data_hist) - skew_base for a in h3s])
    o_differ, o_skew = differ.test(+1), skew.test(+1)
    reasons = [f"seed {s}: TV(α=0.3, α=0.9) = {tv(a, b):.3f} against {pair_base:.3f} for two random subsets; "
               f"TV(α=0.3, data) = {tv(a, data_hist):.3f} against {skew_base:.3f}."
               for s, a, b in zip(seeds, h3s, h9s)]
    reasons.append(detectable_line("excess total variation", differ, ".3f"))
    evidence = (Evidence("TV between the top-cosine classes at α = 0.3 and α = 0.9, beyond two random subsets of "
                         "the same size", differ, ".3f", paper="clearly different (Fig. 7, no number)",
                         outcome=o_differ),
                Evidence("TV of the top-cosine classes at α = 0.3 from the data's, beyond random subsets", skew,
                         ".3f", paper="some classes disproportionately high (Fig. 8, no number)", outcome=o_skew))
    finding = (f"The top-cosine samples' classes at α = 0.3 and 0.9 differ by a total variation {differ.format('.3f')} "
               f"beyond what random subsets of the same size give, and at α = 0.3 they lie {skew.format('.3f')} "
               f"farther from the data's class distribution than random subsets.")
    return Verdict("P-F7/8", CLAIM_CLASSES, status_of([o_differ, o_skew]), tuple(reasons), scale, finding=finding,
                   evidence=evidence, seeds=seeds)


def seed_pairs(seeds: Sequence[int]) -> list[tuple[int, int]]:
    """The seed-vs-seed baseline of P-F9/10: each seed with the next (cyclically), one pair per seed."""
    seeds = list(seeds)
    return [(s, seeds[(i + 1) % len(seeds)]) for i, s in enumerate(seeds)] if len(seeds) > 1 else []


def seed_disagreements(exp: Experiment, seed_a: int, seed_b: int, stage: str = "Sol-F") -> dict[str, np.ndarray]:
    """Counts per true class of the train and of the test samples on which two runs of the same solution
    (``stage``, trained from seeds ``seed_a`` and ``seed_b``) disagree: the baseline of P-F9/10."""
    s = exp.sparsities[0] if stage != "Sol-D" else 0.0
    a, b = exp.runs[(stage, s, seed_a)], exp.runs[(stage, s, seed_b)]
    data = load_data(a.config.data)
    return {split: disagreement_classes(a.model(), b.model(), x, y).numpy()
            for split, (x, y) in (("train", (data.x_train, data.y_train)), ("test", (data.x_test, data.y_test)))}


def _shares(h: np.ndarray) -> np.ndarray:
    h = np.asarray(h, dtype=float)
    return h / h.sum()


def disagreement_verdict(counts: list[dict[str, np.ndarray]], baseline: list[dict[str, np.ndarray]],
                         labels: dict[str, np.ndarray], permutations: int, *, seeds: Sequence[int] = (),
                         margin: float = SKEW_MARGIN, names: Sequence[str] | None = None,
                         scale: str = "") -> Verdict:
    """P-F9/10: are the samples on which Sol-S and Sol-F disagree skewed towards a few classes **beyond**
    the classes that any two networks of this task disagree on?

    ``counts[i]``: per split, the class histogram of the samples on which Sol-S and Sol-F of the i-th seed
    disagree; ``baseline[i]``: the same for two Sol-F trained from different seeds (:func:`seed_pairs`, the
    i-th seed with the next). Classes that every model confuses (on Fashion-MNIST shirt, T-shirt, pullover,
    coat) hold a large share of both; they are not a finding of sparse training from scratch.

    Per split and seed, the skew of a histogram is its total variation from the split's class distribution
    less what random subsets of the same size give (``permutations`` draws: a small sample looks skewed by
    chance). The key effect is the skew of Sol-S-vs-Sol-F disagreements less that of the seed-vs-seed
    baseline, paired by seed, with its 95% t-interval. A class *counts* when its share of the Sol-S-vs-Sol-F
    disagreements exceeds its share of the baseline's, clearly (95% interval over seeds; this per-class
    screen is gated by the key effect, which tests one number, not ten). A split *holds* when the key
    effect is clearly above zero and at least one class counts; it *fails* when the interval excludes every
    skew of ``margin`` or more; else it is undecided. Status over the two splits (the paper: "they have
    similar patterns"); fewer than two seeds leave nothing to compare (*inconclusive*).
    """
    seeds = tuple(seeds) or tuple(range(len(counts)))
    if len(counts) < 2 or len(baseline) != len(counts):
        why = ("needs two seeds at least: the baseline is the disagreement between two Sol-F of different seeds"
               if len(counts) < 2 else f"needs one baseline pair per seed, got {len(baseline)} for {len(counts)}")
        return Verdict("P-F9/10", CLAIM_DISAGREE, "inconclusive", (f"Precondition failed: the rule {why}.",), scale,
                       finding=f"With {len(counts)} seed{'s' if len(counts) != 1 else ''} there is no seed-vs-seed "
                               f"baseline, so the claim cannot be tested.", seeds=seeds)
    evidence, parts, reasons, counted = [], [], [], {}
    for split in ("train", "test"):
        y = labels[split]
        k = len(counts[0][split])        # a split may miss the last classes: histograms over every class
        data_hist = np.bincount(y, minlength=k)
        names_ = tuple(names) if names is not None else tuple(str(c) for c in range(k))
        rows = [(c[split], b[split]) for c, b in zip(counts, baseline) if c[split].sum() > 0 and b[split].sum() > 0]
        if len(rows) < len(counts):
            reasons.append(f"{split}: {len(counts) - len(rows)} seed(s) left out, where a pair agrees on every sample.")
        if len(rows) < 2:
            parts.append("undecided")
            reasons.append(f"{split}: fewer than two seeds with disagreements to compare.")
            continue

        def skew(h, i):
            return tv(h, data_hist) - chance_tv(y, int(h.sum()), data_hist, permutations, seed=i, num_classes=k)
        sf = np.array([skew(c, i) for i, (c, _) in enumerate(rows)])
        ff = np.array([skew(b, 1000 + i) for i, (_, b) in enumerate(rows)])
        key = stats.paired_difference(sf, ff)
        excess = np.array([_shares(c) - _shares(b) for c, b in rows])            # seeds x classes
        per_class = [stats.mean_interval(excess[:, j]) for j in range(k)]
        screened = [j for j, iv in enumerate(per_class) if iv.lo > 0]
        counts_ = screened if key.test(+1) == "holds" else []      # the screen counts only behind the key effect
        counted[split] = counts_
        outcome = ("holds" if key.test(+1) == "holds" and counts_ else
                   "fails" if key.test(+1, margin) == "fails" else "undecided")
        parts.append(outcome)
        evidence.append(Evidence(f"{split}: skew of the Sol-S-vs-Sol-F disagreements beyond two Sol-F seeds' (TV from "
                                 f"the class distribution, chance-corrected)", key, ".3f",
                                 paper="skewed towards a few classes (Fig. 9/10, no number)", outcome=outcome))
        for j in counts_:
            evidence.append(Evidence(f"{split}: share of the disagreements in class {names_[j]}, Sol-S vs Sol-F "
                                     f"less two Sol-F seeds", per_class[j], ".1%"))
        top_sf = np.argsort(np.mean([_shares(c) for c, _ in rows], axis=0))[::-1][:3]
        top_ff = np.argsort(np.mean([_shares(b) for _, b in rows], axis=0))[::-1][:3]
        reasons.append(f"{split}: the most shared classes of the Sol-S-vs-Sol-F disagreements are "
                       f"{', '.join(names_[j] for j in top_sf)}; of two Sol-F seeds' {', '.join(names_[j] for j in top_ff)}; "
                       f"classes concentrated beyond the baseline: {', '.join(names_[j] for j in counts_) or 'none'}"
                       + (f" (screened but not counted, the skew not being clearly beyond the baseline: "
                          f"{', '.join(names_[j] for j in screened)})" if screened and not counts_ else "") + ".")
    if not evidence:
        return Verdict("P-F9/10", CLAIM_DISAGREE, "inconclusive", tuple(reasons), scale,
                       finding="No split has disagreements in two seeds or more, so the claim cannot be tested.",
                       seeds=seeds)
    evidence.sort(key=lambda e: 0 if e.outcome else 1)   # the two splits' key effects first, then the classes
    both = sorted(set(counted.get("train", [])) & set(counted.get("test", [])))
    nm = names if names is not None else [str(c) for c in range(len(counts[0]["train"]))]
    if counted:
        reasons.append(f"Classes concentrated beyond the baseline on both splits: {', '.join(nm[j] for j in both) or 'none'}.")
    reasons.append(detectable_line("skew beyond the baseline", evidence[0].effect, ".3f"))
    key = evidence[0]
    listed = {s: ", ".join(nm[j] for j in js) or "none" for s, js in counted.items()}
    finding = (f"Sol-S-vs-Sol-F disagreements are skewed {key.effect.format('.3f')} (chance-corrected TV, "
               f"{key.name.split(':')[0]}) beyond where two Sol-F seeds disagree; classes concentrated beyond that "
               f"baseline: " + "; ".join(f"{s} {v}" for s, v in listed.items()) + ".")
    return Verdict("P-F9/10", CLAIM_DISAGREE, status_of(parts), tuple(reasons), scale, finding=finding,
                   evidence=tuple(evidence), seeds=seeds)


def check_alphas(alphas: Sequence[float]) -> None:
    missing = [a for a in (0.3, 0.9) if a not in set(alphas)]
    if missing:
        raise ValueError(f"alphas must include 0.3 and 0.9 (the paper's Fig. 7: near Init-S and near Sol-F), "
                         f"got {list(alphas)!r}")


def planned_runs(p: dict) -> list:
    """The two-regimes chapter's Sol-D, Sol-F and Sol-S at ``sparsity`` (for ``bookbuild --plan``)."""
    return list(configs(p).values())


def planned_measurements(p: dict) -> list:
    """The path Init-S -> Sol-F and the per-sample cosines at each α, per seed (for ``bookbuild --plan``)."""
    from ..runs.measure_plan import Pass, path_passes, planned
    from .procedure import measured_samples
    runs, s, out = configs(p), p["sparsity"], []
    for seed in p["seeds"]:
        sol_s, sol_f = runs[("Sol-S", s, seed)], runs[("Sol-F", s, seed)]
        out.append(planned(sol_f, "path_from_init_s", {"from": sol_s.run_id, "points": p["path_points"]},
                           *path_passes(sol_f, p["path_points"])))
        out += [planned(sol_f, "cosines", {"from": sol_s.run_id, "alpha": float(a)},
                        Pass("cosines", measured_samples(sol_f, None))) for a in p["alphas"]]
    return out
