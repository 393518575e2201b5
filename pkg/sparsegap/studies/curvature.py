"""Chapter 3, curvature and sensitivity (P-T2, and P-T1 with the Fisher trend of chapter 2).

Tr(F), Tr(H) (Hutchinson, with its standard error) and the Jacobian norm of the solutions of the
Fig. 2 procedure, measured once and cached beside each run; Table 1 filled from those measurements.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import params as P
from .. import stats
from ..config import RunConfig
from ..runs import Run, RunStore
from ..verdict import Evidence, Verdict, detectable_line, status_of
from . import two_regimes
from .fisher_trajectory import DROP_THRESHOLD
from .procedure import Experiment, executor_of, run_experiment
from .two_regimes import REGIME_PARAMETERS, RUN_PARAMETERS, paired_by_sparsity, sparsity_list, per_sparsity_line, sweep_effect

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
              target_rse: float = 0.02, seed: int = 0, device: str = "cpu") -> dict:
    """Tr(F), Tr(H) +- standard error and the Jacobian norm of one run's solution on (x, y), computed on
    ``device`` (:func:`~sparsegap.runs.measure_plan.measurement_device`: CUDA where the chapter trains on it).

    Cached beside the run (see :meth:`Run.measure`), keyed by the arguments and the data's size.
    """
    from ..runs.measure_plan import measurement_device
    import torch

    from ..metrics.fisher import fisher_trace
    from ..metrics.hessian import hessian_trace
    from ..metrics.jacobian import jacobian_norm

    params = {"n": len(x), "x_sum": float(x.double().sum()), "fisher_labels": fisher_labels,
              "max_probes": max_probes, "target_rse": target_rse, "seed": seed}

    def measure() -> dict:
        model = run.model().to(measurement_device(device))
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
        if run.diverged:  # no trained network to measure
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


def _log10(v):
    """log10 of a positive measurement; NaN (left out) otherwise: a Hutchinson estimate can fall below zero."""
    v = v.astype(float)
    return np.log10(v.where(v > 0))


def _paper_log_ratio(metric_label: str) -> float:
    """The paper's Table 2: the mean over its sparsities of log10(Sol-S / Sol-F)."""
    t = PAPER_TABLE_2.set_index(["stage", "sparsity"])[metric_label]
    return float(np.mean([np.log10(t["Sol-S"][x] / t["Sol-F"][x]) for x in t["Sol-F"].index]))


def curvature_verdict(table: pd.DataFrame, *, scale: str = "") -> Verdict:
    """Verdict P-T2, on Table 2: at the same sparsity, is each of Tr(F), Tr(H) and the Jacobian norm larger
    for Sol-S than for Sol-F?

    The effect is log10(Sol-S / Sol-F) of each measurement, paired by seed (Sol-F and Sol-S of a seed share
    their Sol-D and mask), with its 95% t-interval over seeds: per sparsity, and averaged per seed over the
    sparsities (the table's geometric-mean ratio). A measurement's part *holds* when the averaged log ratio
    is clearly above zero and no sparsity has it clearly below; it *fails* when the average or one sparsity
    is clearly below; else it is undecided. The status follows :func:`sparsegap.verdict.status_of` over the
    three measurements. Sol-F and Sol-S above Sol-D (paired likewise) is reported beside the claim.
    """
    evidence, outcomes, reasons, pooled = [], [], [], {}
    seeds: set[int] = set()
    for m, label in zip(CURVATURE_METRICS, ("Tr(F)", "Tr(H)", "Jacobian norm")):
        if m not in table:
            continue
        diff = paired_by_sparsity(table, m, "Sol-S", "Sol-F", transform=_log10)
        iv, per, outcome = sweep_effect(diff, +1)
        if iv is None:
            outcomes.append("undecided")
            reasons.append(f"{label}: no sparsity with a positive measurement of both Sol-S and Sol-F.")
            continue
        seeds |= {int(x) for x in diff.index.get_level_values("seed")}
        xs = sorted(per)
        paper = _paper_log_ratio(label)
        pooled[label] = iv
        outcomes.append(outcome)
        evidence.append(Evidence(f"log10 (Sol-S / Sol-F) {label}, mean over s = {sparsity_list(xs)}", iv, ".2f",
                                 paper=f"{paper:.2f} (×{10 ** paper:.1f}; Table 2, mean over s = 0.90, 0.94, 0.96)",
                                 outcome=outcome))
        reasons.append(per_sparsity_line(f"{label}: Sol-S above Sol-F", per, +1).replace(
            "per sparsity:", "per sparsity (×" + ", ×".join(f"{10 ** per[x].estimate:.2f} at {x:g}" for x in xs)
            + "):"))
    if not evidence:
        return Verdict("P-T2", CLAIM, "inconclusive", tuple(reasons), scale,
                       finding="No sparsity has measurements of both Sol-S and Sol-F, so nothing can be compared.")
    above = []
    for m, label in zip(CURVATURE_METRICS, ("Tr(F)", "Tr(H)", "Jacobian norm")):
        if m not in table:
            continue
        for stage in ("Sol-F", "Sol-S"):
            d = _above_dense(table, m, stage)
            if d is not None:
                above.append(f"{label} {stage} {d.format('.2f')}")
    if above:
        reasons.append("log10 (sparse / Sol-D), paired by seed, mean over the sparsities: " + "; ".join(above) + ".")
    key = evidence[0].effect
    reasons.append(detectable_line("log10 ratio " + evidence[0].name.split(",")[0].removeprefix("log10 "), key, ".2f"))
    ratios = "; ".join(f"{label} ×{10 ** iv.estimate:.2f} [{10 ** iv.lo:.2f}, {10 ** iv.hi:.2f}]"
                       for label, iv in pooled.items())
    finding = (f"Sol-S over Sol-F, geometric mean over the sparsities ({key.n} seed{'s' if key.n != 1 else ''}): "
               f"{ratios}.")
    return Verdict("P-T2", CLAIM, status_of(outcomes), tuple(reasons), scale, finding=finding,
                   evidence=tuple(evidence), seeds=tuple(sorted(seeds)))


def _above_dense(table: pd.DataFrame, metric: str, stage: str):
    """log10(``stage`` / Sol-D) per seed (its own Sol-D), averaged over the sparsities: its interval."""
    t = table if "seed" in table else table.assign(seed=0)
    dense = t[t.stage == "Sol-D"].set_index("seed")[metric]
    sparse = t[t.stage == stage]
    if dense.empty or sparse.empty:
        return None
    v = sparse.assign(d=_log10(sparse[metric]) - _log10(sparse.seed.map(dense))).dropna(subset=["d"])
    if v.empty:
        return None
    per_seed = v.groupby("seed")["d"].mean().to_numpy()
    return stats.paired_difference(per_seed, np.zeros(len(per_seed)))


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
    """Table 2 for reading: seed mean ± std per (stage, sparsity), ↑ where Sol-S's mean exceeds Sol-F's,
    and the mean Hutchinson standard error."""
    extra = ["hessian_trace_se"] if "hessian_trace_se" in table else []
    summ = stats.seed_summary(table, ["stage", "sparsity"], list(CURVATURE_METRICS) + extra).set_index(
        ["stage", "sparsity"])
    mean = summ[list(CURVATURE_METRICS)]
    f = mean.xs("Sol-F", level="stage") if "Sol-F" in mean.index.get_level_values(0) else None
    out = pd.DataFrame(index=mean.index)
    for m, label in zip(CURVATURE_METRICS, ("Tr(F)", "Tr(H)", "Jacobian norm")):
        def fmt(key, m=m):
            spread = summ.loc[key, f"{m}_std"]
            text = f"{mean.loc[key, m]:.4g}" + (f" ± {spread:.2g}" if pd.notna(spread) else "")
            stage, s = key
            if stage == "Sol-S" and f is not None and s in f.index and mean.loc[key, m] > f.loc[s, m]:
                text += " ↑"
            return text
        out[label] = [fmt(k) for k in mean.index]
        if m == "hessian_trace" and extra:
            out["Tr(H) s.e."] = summ["hessian_trace_se"].map("{:.2g}".format)
    return out


def configs(p: dict) -> dict[tuple[str, float, int], RunConfig]:
    """The networks the chapter measures: the two-regimes chapter's runs (:func:`two_regimes.configs`) at this
    chapter's sparsities, the same configs, so that they are loaded from the store and never trained twice."""
    return two_regimes.configs(p)


def run(p: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True,
        executor=None) -> Experiment:
    """Train (or load) the networks the chapter measures (:func:`configs`)."""
    return run_experiment(configs(p), store, device=device, progress=progress, executor=executor_of(p, executor))


def planned_runs(p: dict) -> list:
    """The two-regimes chapter's runs at this chapter's sparsities (for ``bookbuild --plan``)."""
    return list(configs(p).values())


def planned_measurements(p: dict) -> list:
    """Table 2's measurement of every run (for ``bookbuild --plan``): Tr(F), Hutchinson's Tr(H) at its most
    probes (an upper bound: it stops earlier once ``target_rse`` is reached) and the Jacobian norm, on the
    ``measure_size`` samples."""
    from ..data import NUM_CLASSES
    from ..runs.measure_plan import Pass, planned
    from .procedure import measured_samples
    out = []
    for cfg in configs(p).values():
        n = measured_samples(cfg, p["measure_size"])
        labels = NUM_CLASSES[cfg.data.name] if p["fisher_labels"] == "exact" else 1
        known = {"n": n, "fisher_labels": p["fisher_labels"], "max_probes": p["max_probes"],
                 "target_rse": p["target_rse"], "seed": 0}
        out.append(planned(cfg, "curvature", known,
                           Pass("fisher", n, labels), Pass("hvp", n, p["max_probes"]), Pass("jacobian", n)))
    return out


# ---------------------------------------------------------------- presentation: the page's tables and numbers

_LABELS = dict(zip(CURVATURE_METRICS, ("Tr(F)", "Tr(H)", "Jacobian norm")))


def curvature_display(table: pd.DataFrame):
    """:func:`curvature_summary` as a table for the page (mean ± std over seeds, ↑ where Sol-S > Sol-F)."""
    from ..tables import Col, table as make_table
    summ = curvature_summary(table).reset_index()
    cols = {"stage": Col("solution", "text"), "sparsity": Col("sparsity", "sparsity")}
    cols |= {label: Col(f"{label} (mean ± std)", "text") for label in _LABELS.values() if label in summ}
    if "Tr(H) s.e." in summ:
        cols["Tr(H) s.e."] = Col("Tr(H) Hutchinson s.e.", "text")
    return make_table(summ, cols, caption="Seed means ± standard deviation over seeds; ↑: Sol-S above Sol-F "
                                         "at that sparsity.")


def mechanism_display(mech: pd.DataFrame):
    """:func:`mechanism_table` as two narrow tables for the page: the regime and the fit with Sol-S's Tr(F)
    trend, then the Sol-S / Sol-F ratios of the three measurements."""
    from ..tables import Col, table as make_table
    m = mech.reset_index()
    fit = {"sparsity": Col("sparsity", "sparsity"), "regime": Col("regime", "text"),
           "train error Sol-F (%)": Col("train error Sol-F (%)", "2f"),
           "train error Sol-S (%)": Col("train error Sol-S (%)", "2f")}
    fit |= {c: Col(c, "1f" if "epoch" in c else "2f") for c in
            ("Sol-S Tr(F): peak epoch", "Sol-S Tr(F): drop from peak", "Sol-F Tr(F): drop from peak") if c in m}
    ratios = {"sparsity": Col("sparsity", "sparsity")}
    ratios |= {f"{lab} S/F": Col(f"{lab} Sol-S / Sol-F", "2f") for lab in ("Tr(F)", "Tr(H)", "Jacobian")}
    return (make_table(m, fit, caption="Per sparsity: its regime, the training errors and the Tr(F) trend "
                                       "(seed means)."),
            make_table(m, ratios, caption="Per sparsity: Sol-S / Sol-F of the seed means."))


def _ratio_ci(iv: stats.Interval) -> str:
    if iv.method == "exact" or not (np.isfinite(iv.lo) and np.isfinite(iv.hi)):
        return f"×{10 ** iv.estimate:.2f}" + (f" ({iv.n} seed, no interval)" if iv.n < 2 else "")
    return f"×{10 ** iv.estimate:.2f} (95% CI ×{10 ** iv.lo:.2f} to ×{10 ** iv.hi:.2f})"


def page_numbers(verdict: Verdict, table: pd.DataFrame) -> dict:
    """The phrases the page quotes (its summary and its paper-vs-ours table), from the Table 2 verdict:
    keys are glue keys."""
    out = {"03-status": verdict.status, "03-n-seeds": str(table.seed.nunique()) if "seed" in table else "1"}
    ours, paper = [], []
    for label in _LABELS.values():
        e = next((e for e in verdict.evidence if e.name.startswith(f"log10 (Sol-S / Sol-F) {label},")), None)
        key = "03-" + label.split()[0].lower().replace("(", "").replace(")", "")
        out[key] = _ratio_ci(e.effect) if e else "not measured"
        ours.append(f"{label} {out[key]}")
        paper.append(f"{label} ×{10 ** _paper_log_ratio(label):.1f}")
    out["03-ratios"] = "; ".join(ours)
    out["03-paper-ratios"] = ", ".join(paper)
    above = []
    for m, label in _LABELS.items():
        if m in table:
            d = _above_dense(table, m, "Sol-S")
            if d is not None:
                above.append(f"{label} {_ratio_ci(d)}")
    out["03-s-over-d"] = "; ".join(above) or "not measured"
    return out


def paper_vs_ours(verdict: Verdict, table: pd.DataFrame, setting: str):
    """The paper's Table 2 beside ours, as Sol-S / Sol-F ratios (each quantity's scale depends on the network
    and the data; the ratio, and its direction, is what can be compared)."""
    from ..tables import paper_vs_ours as pvo
    n = page_numbers(verdict, table)
    t = PAPER_TABLE_2.set_index(["stage", "sparsity"])
    ours_f, ours_s = _stage_means(table, "Sol-F"), _stage_means(table, "Sol-S")
    rows = [("setting", "ResNet-32 ×4 on CIFAR-100, s = 0.90, 0.94, 0.96", setting, "")]
    for m, label in _LABELS.items():
        key = "03-" + label.split()[0].lower().replace("(", "").replace(")", "")
        per_paper = ", ".join(f"×{t.loc[('Sol-S', x), label] / t.loc[('Sol-F', x), label]:.1f}"
                              for x in (0.90, 0.94, 0.96))
        xs = [x for x in ours_f.index if x in ours_s.index]
        per_ours = ", ".join(f"×{ours_s.loc[x, m] / ours_f.loc[x, m]:.2f}" for x in xs) if m in ours_f else "–"
        outcome = next((e.outcome for e in verdict.evidence if e.name.startswith(f"log10 (Sol-S / Sol-F) {label},")), "")
        rows.append((f"{label}, Sol-S / Sol-F", f"{per_paper}; geometric mean ×{10 ** _paper_log_ratio(label):.1f}",
                     f"{per_ours} at s = {', '.join(f'{x:g}' for x in xs)}; geometric mean {n[key]}",
                     f"part {outcome}" if outcome else ""))
    paper_above = ", ".join(f"{lab} ×{t.loc[('Sol-S', 0.90), lab] / t.loc[('Sol-D', 0.0), lab]:.1f}"
                            for lab in _LABELS.values())
    rows.append(("Sol-S / Sol-D", f"above at every sparsity (at 0.90: {paper_above})",
                 f"geometric mean over the sparsities: {n['03-s-over-d']}", "context, not part of the verdict"))
    return pvo(rows, caption="The paper's Table 2 and ours, as ratios; intervals are 95% over seeds, paired by seed.")
