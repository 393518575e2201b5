"""Chapter 3, curvature and sensitivity (P-T2, and P-T1 with the Fisher trend of chapter 2).

Tr(F), Tr(H) (Hutchinson, with its standard error) and the Jacobian norm of the solutions of the
Fig. 2 procedure, measured once and cached beside each run; Table 1 filled from those measurements.
"""

from __future__ import annotations

import pandas as pd

from .. import params as P
from ..runs import Run
from ..verdict import Verdict
from .fisher_trajectory import DROP_THRESHOLD
from .procedure import Experiment
from .two_regimes import REGIME_PARAMETERS, RUN_PARAMETERS

CLAIM = ("At the same sparsity Sol-S has a larger Fisher trace, Hessian trace and Jacobian norm than Sol-F "
         "(the curse of information).")

PARAMETERS = P.ParameterSpec(
    "03_curvature",
    **RUN_PARAMETERS | {"sparsities": P.sparsities("a subset of the two-regimes chapter's sparsities")},
    fisher_labels=P.Param("str", "Tr(F) labels", choices=("sampled", "empirical", "exact")),
    max_probes=P.Param("int", "Hutchinson: most Rademacher probes per network", low=1),
    target_rse=P.Param("float", "Hutchinson: stop when the relative standard error falls below this", low=0.0),
    measure_size=P.Param("int", "Tr(F), Tr(H) and the Jacobian norm are measured on this many training samples "
                                "(a seeded random subset); None: on all of them", low=1, none=True),
    drop_threshold=DROP_THRESHOLD,
    **REGIME_PARAMETERS,
    **P.fast_training_parameters(), **P.environment_parameters(),
)


def curvature(run: Run, x, y, *, fisher_labels: str = "sampled", max_probes: int = 100,
              target_rse: float = 0.02, seed: int = 0) -> dict:
    """Tr(F), Tr(H) +- standard error and the Jacobian norm of one run's solution on (x, y).

    Cached beside the run (see :meth:`Run.measure`), keyed by the arguments and the data's size.
    """
    import torch

    from ..metrics.fisher import fisher_trace
    from ..metrics.hessian import hessian_trace
    from ..metrics.jacobian import jacobian_norm

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
        if run.history.get("diverged"):  # no trained network to measure
            continue
        rows.append({"stage": stage, "sparsity": s, "seed": seed, **curvature(run, x, y, **kwargs)})
    return pd.DataFrame(rows).sort_values(["stage", "sparsity", "seed"]).reset_index(drop=True)


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


def curvature_verdict(table: pd.DataFrame, *, scale: str = "") -> Verdict:
    """Verdict P-T2, on Table 2: is each of Tr(F), Tr(H), Jacobian norm larger for Sol-S than Sol-F?"""
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
        status = "reproduced"
    elif any(w >= 0.5 for w in wins.values()):
        status = "partly"
    else:
        status = "not reproduced"
    return Verdict("P-T2", CLAIM, status, tuple(reasons), scale)


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


def planned_runs(p: dict) -> list:
    """The two-regimes chapter's runs at this chapter's sparsities (for ``bookbuild --plan``)."""
    from .two_regimes import planned_runs as two_regimes_runs
    return two_regimes_runs(p)
