"""The paper's Fig. 2 pipeline and the two regimes of Fig. 1.

Init-D -> Sol-D -> one-shot global magnitude mask -> Init-F (= masked Sol-D) -> Sol-F,
and Init-S (fresh init, same mask) -> Sol-S. One Sol-D per seed serves every sparsity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .pruning import check_sparsity
from .runs import Run, RunStore, run_all

KIND_OF_STAGE = {"Sol-D": "dense", "Sol-F": "finetune", "Sol-S": "scratch"}
METRICS = ("train_acc", "test_acc", "train_loss", "test_loss", "train_entropy", "test_entropy")


def check_sparsities(sparsities: Sequence[float]) -> tuple[float, ...]:
    if isinstance(sparsities, (str, bytes)) or not hasattr(sparsities, "__iter__"):
        raise TypeError(f"sparsities must be a list of numbers in [0, 1), got {sparsities!r}")
    out = tuple(check_sparsity(s, "sparsities[i]") for s in sparsities)
    if not out:
        raise ValueError("sparsities must not be empty")
    if len(set(out)) != len(out):
        raise ValueError(f"sparsities has duplicates: {sparsities!r}")
    return tuple(sorted(out))


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"seeds must be a list of ints, got {seeds!r}")
    seeds = tuple(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of ints, got {seeds!r}")
    return seeds


def two_regime_configs(data: DataConfig, model: ModelConfig, train: TrainConfig, sparsities: Sequence[float],
                       seeds: Sequence[int], *, finetune_train: TrainConfig | None = None,
                       scratch_train: TrainConfig | None = None, exclude_output: bool = False,
                       min_density: float = 0.0, track: Sequence[str] = (),
                       stages: Sequence[str] = ("Sol-F", "Sol-S")) -> dict[tuple[str, float, int], RunConfig]:
    """Every run of the experiment, keyed by (stage, sparsity, seed). Sol-D has sparsity 0.

    ``track`` names metrics recorded during every run (e.g. ``"fisher_trace@5"``, see
    :mod:`sparsegap.trackers`); ``min_density`` is the per-layer floor of the masks.
    """
    unknown = set(stages) - {"Sol-F", "Sol-S"}
    if unknown or not stages:
        raise ValueError(f"stages must be a non-empty subset of ('Sol-F', 'Sol-S'), got {stages!r}")
    configs = {}
    track = tuple(track)
    for seed in check_seeds(seeds):
        dense = RunConfig("dense", data, model, train, seed=seed, track=track)
        configs[("Sol-D", 0.0, seed)] = dense
        for s in check_sparsities(sparsities):
            for stage, tcfg in (("Sol-F", finetune_train or train), ("Sol-S", scratch_train or train)):
                if stage in stages:
                    configs[(stage, s, seed)] = RunConfig(
                        KIND_OF_STAGE[stage], data, model, tcfg, seed=seed, sparsity=s,
                        exclude_output=exclude_output, parent=dense, min_density=min_density, track=track)
    return configs


@dataclass
class Experiment:
    """Runs keyed by (stage, sparsity, seed), with a tidy table of their final metrics."""

    runs: dict[tuple[str, float, int], Run]

    @property
    def table(self) -> pd.DataFrame:
        rows = []
        for (stage, s, seed), run in self.runs.items():
            rows.append({"stage": stage, "sparsity": s, "seed": seed, "run_id": run.config.run_id,
                         **{m: run.final[m] for m in METRICS}})
        return pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        """Mean and standard deviation over seeds, per stage and sparsity."""
        g = self.table.groupby(["stage", "sparsity"])[list(METRICS)]
        std = g.std(ddof=1 if self.n_seeds > 1 else 0).add_suffix("_std")
        out = g.mean().join(std).reset_index()
        return out

    @property
    def n_seeds(self) -> int:
        return len({k[2] for k in self.runs})

    @property
    def sparsities(self) -> list[float]:
        return sorted({k[1] for k in self.runs if k[0] != "Sol-D"})

    def history(self, stage: str, sparsity: float, seed: int) -> dict:
        return self.runs[(stage, 0.0 if stage == "Sol-D" else sparsity, seed)].history


def run_two_regimes(data: DataConfig, model: ModelConfig, train: TrainConfig, sparsities: Sequence[float],
                    seeds: Sequence[int], *, store: RunStore | None = None, device: str = "auto",
                    progress: bool = True, executor=None, **kwargs) -> Experiment:
    configs = two_regime_configs(data, model, train, sparsities, seeds, **kwargs)
    runs = run_all(list(configs.values()), store, executor=executor, device=device, progress=progress)
    return Experiment(dict(zip(configs.keys(), runs)))


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


def two_regimes_verdict(regimes: pd.DataFrame, summary: pd.DataFrame) -> tuple[str, list[str]]:
    """Verdict on the paper's Fig. 1 claim from our numbers: (reproduced | partly | not reproduced, reasons).

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
    ]
    if ordered and min(gap_everywhere, loss_higher, entropy_higher) >= 0.75:
        return "reproduced", reasons
    if (gen or opt) and gap_everywhere >= 0.5:
        return "partly", reasons
    return "not reproduced", reasons


# ---------------------------------------------------------------------------------------------
# Fisher trajectories (Fig. 3) and the curvature table (Table 2)

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
        rows.append({"stage": stage, "sparsity": s, "seed": seed, "train_acc": run.final["train_acc"],
                     **fisher_trend(run.history)})
    return pd.DataFrame(rows)


def curvature(run: Run, x, y, *, fisher_labels: str = "sampled", max_probes: int = 100,
              target_rse: float = 0.02, seed: int = 0) -> dict:
    """Tr(F), Tr(H) +- standard error and the Jacobian norm of one run's solution on (x, y).

    Cached beside the run (see :meth:`Run.measure`), keyed by the arguments and the data's size.
    """
    import torch

    from .metrics.fisher import fisher_trace
    from .metrics.hessian import hessian_trace
    from .metrics.jacobian import jacobian_norm

    params = {"n": len(x), "x_sum": float(x.double().sum()), "fisher_labels": fisher_labels,
              "max_probes": max_probes, "target_rse": target_rse, "seed": seed}

    def measure() -> dict:
        model = run.model()
        g = torch.Generator().manual_seed(seed)
        tr_f = fisher_trace(model, x, y, masks=run.masks, labels=fisher_labels, generator=g)
        h = hessian_trace(model, x, y, masks=run.masks, max_probes=max_probes, min_probes=min(10, max_probes),
                          target_rse=target_rse,
                          generator=torch.Generator().manual_seed(seed + 1))
        return {"fisher_trace": tr_f, "hessian_trace": h.mean, "hessian_trace_se": h.stderr,
                "hessian_probes": h.n_probes, "jacobian_norm": jacobian_norm(model, x)}

    return run.measure("curvature", params, measure)


def curvature_table(experiment: Experiment, x, y, **kwargs) -> pd.DataFrame:
    """Table 2 for every run of an experiment: one row per (stage, sparsity, seed)."""
    rows = []
    for (stage, s, seed), run in experiment.runs.items():
        rows.append({"stage": stage, "sparsity": s, "seed": seed, **curvature(run, x, y, **kwargs)})
    return pd.DataFrame(rows).sort_values(["stage", "sparsity", "seed"]).reset_index(drop=True)


def fisher_trajectory_verdict(trends: pd.DataFrame, regimes: pd.DataFrame, *, drop_threshold: float = 0.3,
                              rise_factor: float = 2.0) -> tuple[str, list[str]]:
    """Verdict on Fig. 3 / Table 1: does Sol-S's Tr(F) trend differ between the regimes as claimed?

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
        return "reproduced", reasons
    if gen_ok or opt_ok:
        return "partly", reasons
    return "not reproduced", reasons


# The paper's Table 2 (ResNet-32 x4 on CIFAR-100), for reference beside our numbers.
PAPER_TABLE_2 = pd.DataFrame(
    [("Sol-D", 0.00, 53.81, 66.32, 35.60),
     ("Sol-F", 0.90, 543.27, 720.49, 43.27), ("Sol-F", 0.94, 2573.51, 4198.26, 52.25),
     ("Sol-F", 0.96, 4376.32, 9618.40, 67.92),
     ("Sol-S", 0.90, 2701.68, 10452.93, 63.74), ("Sol-S", 0.94, 9840.60, 12905.88, 66.36),
     ("Sol-S", 0.96, 15818.65, 20715.41, 70.10)],
    columns=["stage", "sparsity", "Tr(F)", "Tr(H)", "Jacobian norm"])

CURVATURE_METRICS = ("fisher_trace", "hessian_trace", "jacobian_norm")


def _stage_means(table: pd.DataFrame, stage: str) -> pd.DataFrame:
    return table[table.stage == stage].groupby("sparsity")[list(CURVATURE_METRICS)].mean()


def curvature_verdict(table: pd.DataFrame) -> tuple[str, list[str]]:
    """Verdict on Table 2: is each of Tr(F), Tr(H), Jacobian norm larger for Sol-S than Sol-F?"""
    s, f = _stage_means(table, "Sol-S"), _stage_means(table, "Sol-F")
    common = [x for x in s.index if x in f.index]
    reasons, wins = [], {}
    for m, label in zip(CURVATURE_METRICS, ("Tr(F)", "Tr(H)", "Jacobian norm")):
        higher = [x for x in common if s.loc[x, m] > f.loc[x, m]]
        wins[m] = len(higher) / len(common)
        ratios = ", ".join(f"{x:g}: x{s.loc[x, m] / f.loc[x, m]:.2f}" for x in common)
        reasons.append(f"{label}: Sol-S above Sol-F at {len(higher)} of {len(common)} sparsities "
                       f"(Sol-S / Sol-F = {ratios}).")
    dense = table[table.stage == "Sol-D"][list(CURVATURE_METRICS)].mean()
    above_dense = [m for m in CURVATURE_METRICS if (f[m] > dense[m]).all() and (s[m] > dense[m]).all()]
    reasons.append(f"Both sparse solutions above Sol-D at every sparsity for: "
                   f"{', '.join(above_dense) or 'none of the three'}.")
    if all(w == 1.0 for w in wins.values()):
        return "reproduced", reasons
    if any(w >= 0.5 for w in wins.values()):
        return "partly", reasons
    return "not reproduced", reasons


def mechanism_table(regimes: pd.DataFrame, curvature: pd.DataFrame, trends: pd.DataFrame | None = None
                    ) -> pd.DataFrame:
    """Table 1 filled from measurements: per sparsity, its regime, training errors, Sol-S's Tr(F)
    trend during training, and the Sol-S / Sol-F ratios of Tr(F), Tr(H) and the Jacobian norm."""
    s, f = _stage_means(curvature, "Sol-S"), _stage_means(curvature, "Sol-F")
    rows = []
    for r in regimes.itertuples():
        if r.sparsity not in s.index or r.sparsity not in f.index:
            continue
        row = {"sparsity": r.sparsity, "regime": r.regime,
               "train error Sol-F (%)": round(100 * (1 - r.train_acc_F), 2),
               "train error Sol-S (%)": round(100 * (1 - r.train_acc_S), 2)}
        if trends is not None:
            t = trends[(trends.stage == "Sol-S") & (trends.sparsity == r.sparsity)]
            tf = trends[(trends.stage == "Sol-F") & (trends.sparsity == r.sparsity)]
            row["Sol-S Tr(F): peak epoch"] = round(float(t.peak_epoch.mean()), 1)
            row["Sol-S Tr(F): drop from peak"] = round(float(t["drop"].mean()), 2)
            row["Sol-F Tr(F): drop from peak"] = round(float(tf["drop"].mean()), 2)
        for m, label in zip(CURVATURE_METRICS, ("Tr(F)", "Tr(H)", "Jacobian")):
            row[f"{label} S/F"] = round(float(s.loc[r.sparsity, m] / f.loc[r.sparsity, m]), 2)
        rows.append(row)
    return pd.DataFrame(rows).set_index("sparsity")


def curvature_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Table 2 for reading: seed mean ± std per (stage, sparsity), ↑ where Sol-S exceeds Sol-F,
    and the mean Hutchinson standard error."""
    g = table.groupby(["stage", "sparsity"])
    mean, std = g[list(CURVATURE_METRICS)].mean(), g[list(CURVATURE_METRICS)].std()
    f = mean.xs("Sol-F", level="stage") if "Sol-F" in mean.index.get_level_values(0) else None
    out = pd.DataFrame(index=mean.index)
    for m, label in zip(CURVATURE_METRICS, ("Tr(F)", "Tr(H)", "Jacobian norm")):
        def fmt(key, m=m):
            text = f"{mean.loc[key, m]:.4g}" + (f" ± {std.loc[key, m]:.2g}" if pd.notna(std.loc[key, m]) else "")
            stage, s = key
            if stage == "Sol-S" and f is not None and s in f.index and mean.loc[key, m] > f.loc[s, m]:
                text += " ↑"
            return text
        out[label] = [fmt(k) for k in mean.index]
        if m == "hessian_trace":
            out["Tr(H) s.e."] = g["hessian_trace_se"].mean().map("{:.2g}".format)
    return out
