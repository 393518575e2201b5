"""Chapter 10, the path from Init-S to Sol-F and the samples that drive it (The Price of Sparsity,
Fig. 6–10: P-F6, P-F7/8, P-F9/10).

The runs are the two-regimes chapter's (the same configs, shared through the store) at one sparsity.
Along θ(α) = (1 − α)·Init-S + α·Sol-F this module measures the loss (:func:`sparsegap.landscape.linear_path`)
and, for every training sample, the cosine between its negative gradient and the path's direction
Sol-F − Init-S (:func:`sparsegap.metrics.cosines.per_sample_cosines`); and the classes on which Sol-S
and Sol-F disagree (:func:`sparsegap.metrics.compare.disagreement_classes`). Each class-distribution
claim is judged against a permutation baseline: random subsets of the same size.
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
from ..verdict import Verdict, status_of
from .procedure import Experiment, data_config, model_config, run_two_regimes, train_config
from .redense import monotone
from .two_regimes import RUN_PARAMETERS

PARAMETERS = P.ParameterSpec(
    "10_paths_and_cosines",
    **{k: v for k, v in RUN_PARAMETERS.items() if k != "sparsities"},
    sparsity=P.fraction("the sparsity of Sol-F and Sol-S studied here (the paper's Fig. 9/10: 0.97)", high_open=True),
    path_points=P.Param("int", "points on the path from Init-S (α=0) to Sol-F (α=1)", low=2),
    alphas=P.Param("floats", "α at which the per-sample cosines are measured", low=0.0, high=1.0, unique=True),
    top_fraction=P.fraction("the share of samples with the highest cosines whose classes are counted (paper: 5%)"),
    permutations=P.Param("int", "random subsets of the same size that form the baseline of the class rules", low=10),
    **P.fast_training_parameters(), **P.environment_parameters(),
)


def run_paths(p: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True) -> Experiment:
    """Sol-D, Sol-F and Sol-S at ``sparsity``: the two-regimes chapter's own runs."""
    data, train = data_config(p), train_config(p)
    track = [f"fisher_trace@{p['fisher_every']}"] if p["fisher_every"] else []
    return run_two_regimes(data, model_config(p), train, [p["sparsity"]], p["seeds"],
                           store=store, device=device, progress=progress, exclude_output=p["exclude_output"],
                           track=track)


def _pair(exp: Experiment, seed: int) -> tuple[Run, Run]:
    s = exp.sparsities[0]
    return exp.runs[("Sol-S", s, seed)], exp.runs[("Sol-F", s, seed)]


def path(exp: Experiment, seed: int, points: int) -> pd.DataFrame:
    """Loss and accuracy on train and test along (1 − α)·Init-S + α·Sol-F (kept beside Sol-F)."""
    sol_s, sol_f = _pair(exp, seed)
    data = load_data(sol_f.config.data)
    rows = sol_f.measure("path_from_init_s", {"from": sol_s.config.run_id, "points": points},
                         lambda: L.linear_path(sol_s.init_model(), sol_f.model(), data,
                                               ts=np.linspace(0, 1, points)).to_dict("records"))
    return pd.DataFrame(rows).rename(columns={"t": "alpha"}).assign(seed=seed)


def cosines(exp: Experiment, seed: int, alpha: float) -> np.ndarray:
    """cos(−∇ℓ_i(θ(α)), Sol-F − Init-S) for every training sample, under the shared mask (kept beside Sol-F)."""
    sol_s, sol_f = _pair(exp, seed)

    def measure():
        data = load_data(sol_f.config.data)
        start, end = sol_s.init_model().state_dict(), sol_f.model().state_dict()
        model = sol_f.model()
        model.load_state_dict(L.interpolate_state(start, end, alpha))
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
                  "on the test set alike.")


def path_verdict(paths: pd.DataFrame, *, scale: str = "") -> Verdict:
    """P-F6: for every seed, the train loss along the path decreases monotonically (no rise between
    neighbouring points larger than 1% of the total drop, :func:`sparsegap.studies.redense.monotone`)."""
    parts, reasons = [], []
    for seed, d in paths[paths.subset == "train"].groupby("seed"):
        d = d.sort_values("alpha")
        ok = monotone(d.loss)
        parts.append(ok)
        reasons.append(f"seed {seed}: train loss {d.loss.iloc[0]:.3f} at Init-S, {d.loss.iloc[-1]:.3f} at Sol-F, largest "
                       f"rise between neighbours {np.diff(d.loss).max():+.3f} ({'monotone' if ok else 'not monotone'}).")
    return Verdict("P-F6", CLAIM_PATH, status_of(parts), tuple(reasons), scale)


def classes_verdict(hists: dict[float, list[np.ndarray]], y: np.ndarray, size: int, permutations: int, *,
                    scale: str = "") -> Verdict:
    """P-F7/8, per seed: (1) the TV distance between the top-cosine class histograms at α = 0.3 and
    α = 0.9 exceeds the 95th percentile of the distance between two random subsets of the same size;
    (2) at α = 0.3 the top-cosine histogram is farther from the data's class distribution than the
    95th percentile of random subsets (some classes are over-represented)."""
    parts, reasons = [], []
    for i, (h3, h9) in enumerate(zip(hists[0.3], hists[0.9])):
        k = len(h3)     # every class of the data set, also those that no sample of y holds
        data_hist = np.bincount(y, minlength=k)
        pair_base = np.quantile(random_tv(y, size, None, permutations, seed=i, num_classes=k), 0.95)
        skew_base = np.quantile(random_tv(y, size, data_hist, permutations, seed=i + 1000, num_classes=k), 0.95)
        differ, skewed = tv(h3, h9) > pair_base, tv(h3, data_hist) > skew_base
        parts += [differ, skewed]
        reasons.append(f"seed {i}: TV(α=0.3, α=0.9) = {tv(h3, h9):.3f} against {pair_base:.3f} for random subsets "
                       f"({'different' if differ else 'not different'}); TV(α=0.3, data) = {tv(h3, data_hist):.3f} "
                       f"against {skew_base:.3f} ({'skewed' if skewed else 'not skewed'}).")
    return Verdict("P-F7/8", CLAIM_CLASSES, status_of(parts), tuple(reasons), scale)


def disagreement_verdict(counts: list[dict[str, np.ndarray]], labels: dict[str, np.ndarray], permutations: int, *,
                         scale: str = "") -> Verdict:
    """P-F9/10, per seed and split: the class histogram of the disagreement samples is farther (TV) from
    the split's class distribution than the 95th percentile of random subsets of the same size."""
    parts, reasons = [], []
    for i, c in enumerate(counts):
        for split in ("train", "test"):
            y = labels[split]
            n = int(c[split].sum())
            if n == 0:
                parts.append(False)
                reasons.append(f"seed {i}, {split}: Sol-S and Sol-F agree on every sample.")
                continue
            # a split may miss the last classes (a small test set): histograms over every class
            k = len(c[split])
            hist = np.bincount(y, minlength=k)
            base = np.quantile(random_tv(y, n, hist, permutations, seed=i, num_classes=k), 0.95)
            distance = tv(c[split], hist)
            skewed = distance > base
            parts.append(skewed)
            top = np.argsort(c[split] / np.maximum(hist, 1))[::-1][:3]
            reasons.append(f"seed {i}, {split}: {n} disagreements, TV from the class distribution "
                           f"{distance:.3f} against {base:.3f} for random "
                           f"subsets ({'skewed' if skewed else 'not skewed'}); highest disagreement rates in classes "
                           f"{', '.join(map(str, top))}.")
    return Verdict("P-F9/10", CLAIM_DISAGREE, status_of(parts), tuple(reasons), scale)


def check_alphas(alphas: Sequence[float]) -> None:
    missing = [a for a in (0.3, 0.9) if a not in set(alphas)]
    if missing:
        raise ValueError(f"alphas must include 0.3 and 0.9 (the paper's Fig. 7: near Init-S and near Sol-F), "
                         f"got {list(alphas)!r}")


def planned_runs(p: dict) -> list:
    """The two-regimes chapter's Sol-D, Sol-F and Sol-S at ``sparsity`` (for ``bookbuild --plan``)."""
    from .two_regimes import planned_runs as two_regimes_runs
    return two_regimes_runs({**p, "sparsities": [p["sparsity"]]})
