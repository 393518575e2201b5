"""Chapter 12, closing the gap (P-S4): the two remedies that The Price of Sparsity proposes in its
Section 4 and never tests, tested.

(i) **Negative Fisher regularization, early only**: the loss gets λ·R(θ) with λ < 0 during the first
epochs (``TrainConfig.fisher_reg``; R is the Fisher penalty of :func:`sparsegap.train.fisher_penalty`),
then the term is switched off; λ > 0 is the control.
(ii) **A Fisher-ranked data schedule**: a memorization phase on the hardest samples by per-sample
Fisher, then a consolidating phase widening to the whole set (``TrainConfig.data_schedule="fisher"``),
beside the baseline of the paper's [57] (hard samples and sparse/dense disagreement, ``"disagree"``)
and a random subset of the same sizes (``"random"``).

The setting is the two-regimes chapter's, whose runs are shared through the store: one sparsity from
its generalization regime and one from its optimization regime, read from its classification. The
remedies' settings are chosen on a validation split held out of the training set (one seed), never
on the test set; the chosen settings then train with every seed of the comparison, paired with plain
Sol-S and Sol-F of the same seed (same dense run, same mask).

The page's phrases and table rows, built from these verdicts and tables, are in :mod:`.remedies_page`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from .. import params as P
from ..config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .. import stats
from ..runs import Run, RunStore, load_data, run_all
from ..stats import Interval
from ..verdict import Evidence, Verdict, remedy_status
from . import two_regimes
from .procedure import (data_config, describe_scale, fisher_track, measurement_data, model_config, train_config,
                        train_samples, two_regime_configs)
from .two_regimes import REGIME_PARAMETERS, RUN_PARAMETERS, classify_regimes

CLAIM_NFR = ("Negative Fisher regularization in the early epochs only makes Sol-S close part of its gap to Sol-F "
             "(proposed in Section 4, not tested there).")
CLAIM_SCHEDULE = ("A data schedule, the hardest samples by Fisher first (memorization phase) and then gradually "
                  "easier ones (consolidating phase), makes Sol-S close part of its gap to Sol-F "
                  "(proposed in Section 4, not tested there).")

PLAIN = ("Sol-S", "Sol-F")
NFR, FISHER, DISAGREE, RANDOM = "neg. Fisher reg.", "Fisher schedule", "hard + disagree [57]", "random schedule"
REMEDIES = (NFR, FISHER, DISAGREE, RANDOM)
SCHEDULE_OF = {FISHER: "fisher", DISAGREE: "disagree", RANDOM: "random"}
# The gap each regime is defined by: test accuracy in the generalization regime, train accuracy in the other.
REGIME_METRIC = {"generalization": "test_acc", "optimization": "train_acc"}


def metric_words(metric: str) -> str:
    """"test_acc" -> "test accuracy" (the names the verdicts and the page print)."""
    return metric.replace("_acc", " accuracy").replace("_", " ")

PARAMETERS = P.ParameterSpec(
    "12_remedies",
    **RUN_PARAMETERS,
    **REGIME_PARAMETERS,
    remedy_seeds=P.seeds("seeds of the comparison (each: one Sol-D, its mask, plain Sol-S, Sol-F and every remedy)"),
    validation=P.Param("int", "training samples held out as the validation split that chooses the settings", low=1),
    select_seed=P.Param("int", "the seed of the runs on the validation split", low=0),
    reg_coefs=P.Param("floats", "(i) coefficients λ < 0 tried", high=0.0, high_open=True, unique=True),
    reg_control=P.Param("float", "(i) the control: a positive coefficient, tried beside them", low=0.0),
    reg_epochs=P.Param("ints", "(i) how many first epochs the term lasts, tried", low=1, unique=True),
    reg_off=P.Param("str", "(i) how it switches off: at once, or ramped linearly to 0", choices=("step", "linear")),
    subset=P.fraction("(ii) the memorization phase trains on this fraction of the training set"),
    memorize_epochs=P.Param("ints", "(ii) memorization phase lengths tried", low=1, unique=True),
    consolidate_epochs=P.Param("int", "(ii) epochs over which the subset widens to the whole set", low=0),
    rerank_every=P.Param("int", "(ii) re-rank the samples every this many epochs; 0 ranks once, at the start", low=0),
    measure_size=P.Param("int", "Tr(F) of each solution is measured on this many training samples (a seeded random "
                                "subset); None: on all of them", low=1, none=True),
    **P.fast_training_parameters(),
    **P.environment_parameters(),
)


@dataclasses.dataclass(frozen=True)
class Setting:
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    track: tuple[str, ...]


def setting(p: dict) -> Setting:
    """Chapter 1's data, network, training and trackers (:func:`two_regimes.configs` builds its runs from the same)."""
    data = data_config(p)
    return Setting(data, model_config(p), train_config(p), fisher_track(p["fisher_every"], train_samples(data)))


# ------------------------------------------------------------------------------------- the regimes

def chapter_one(p: dict, *, store: RunStore | None = None, device: str = "auto", executor=None,
                progress: bool = True):
    """The two-regimes chapter's runs (loaded from the store when it ran first) and its regime table.
    ``executor=None``: the notebook's ``executor`` parameter (:func:`procedure.executor_of`)."""
    experiment = two_regimes.run(p, store=store, device=device, progress=progress, executor=executor)
    regimes = classify_regimes(experiment.summary(), train_gap_tol=p["train_gap_tol"], near_optimal=p["near_optimal"])
    return experiment, regimes


def pick_sparsities(regimes: pd.DataFrame) -> tuple[dict[str, float], list[str]]:
    """One sparsity per regime, by a stated rule: the generalization-regime sparsity with the largest test
    gap, and the optimization-regime sparsity with the largest train gap (the widest gap to close).

    A regime that chapter 1 did not find gets a stand-in, said in the returned notes: for generalization the
    sparsity outside the optimization regime with the largest test gap (or, if there is none, the lowest
    sparsity left), for optimization the highest sparsity left. (At smoke scale nothing is trained enough to have regimes.)"""
    out, notes = {}, []
    for regime, gap in (("generalization", "test_gap"), ("optimization", "train_gap")):
        rows = regimes[regimes.regime == regime]
        if len(rows):
            out[regime] = float(rows.loc[rows[gap].idxmax(), "sparsity"])
    if "generalization" not in out:
        rows = regimes[(regimes.regime != "optimization") & ~regimes.sparsity.isin(out.values())]
        if len(rows):
            out["generalization"] = float(rows.loc[rows.test_gap.idxmax(), "sparsity"])
            notes.append(f"Chapter 1 finds no generalization regime; s={out['generalization']:g} (the largest test gap "
                         f"outside the optimization regime) stands in for it.")
        else:
            rows = regimes[~regimes.sparsity.isin(out.values())]
            if len(rows):
                out["generalization"] = float(rows.sparsity.min())
                notes.append(f"Chapter 1 finds no generalization regime, and every sparsity is in the optimization "
                             f"regime; s={out['generalization']:g} (the lowest sparsity left) stands in for it.")
    if "optimization" not in out:
        rows = regimes[~regimes.sparsity.isin(out.values())]
        if len(rows):
            out["optimization"] = float(rows.sparsity.max())
            notes.append(f"Chapter 1 finds no optimization regime; s={out['optimization']:g} (the highest sparsity "
                         f"left) stands in for it.")
    return dict(sorted(out.items(), key=lambda kv: kv[1])), notes


# -------------------------------------------------------------------------------------- the configs

def remedy_train(train: TrainConfig, **fields) -> TrainConfig:
    """``train`` with a remedy's fields; a Fisher regularizer trains eagerly whatever ``compile_mode`` is (its double
    backward is not compiled; "off" is the default, so these runs' hashes are those of before)."""
    if fields.get("fisher_reg"):
        fields = {**fields, "compile": "off"}
    return dataclasses.replace(train, **fields)


def candidates(p: dict) -> list[tuple[str, str, dict]]:
    """The settings tried on the validation split: (remedy, label, TrainConfig fields)."""
    if not p["reg_control"] > 0:
        raise ValueError(f"reg_control must be a positive coefficient (the control has the sign of the original Fisher "
                         f"penalty), got {p['reg_control']!r}")
    out = []
    for lam in [*p["reg_coefs"], p["reg_control"]]:
        epochs = p["reg_epochs"] if lam < 0 else [max(p["reg_epochs"])]   # the control at the longest only
        for e in epochs:
            out.append((NFR, f"λ={lam:g}, {e} ep", dict(fisher_reg=float(lam), fisher_reg_epochs=e,
                                                         fisher_reg_off=p["reg_off"])))
    for m in p["memorize_epochs"]:
        out.append((FISHER, f"memorize {m} ep", schedule_fields(p, "fisher", m)))
    return out


def schedule_fields(p: dict, kind: str, memorize: int) -> dict:
    return dict(data_schedule=kind, subset=float(p["subset"]), memorize_epochs=memorize,
                consolidate_epochs=p["consolidate_epochs"], rerank_every=p["rerank_every"])


def selection_configs(p: dict, picked: dict[str, float]) -> dict[tuple, RunConfig]:
    """The runs on the validation split: Sol-D, plain Sol-S and every candidate, keyed (remedy, label, sparsity)
    (plain Sol-S has remedy "Sol-S" and label "")."""
    st = setting(p)
    data = dataclasses.replace(st.data, validation=p["validation"])
    dense = RunConfig("dense", data, st.model, st.train, seed=p["select_seed"])
    out = {}
    for s in picked.values():
        def scratch(train):
            return RunConfig("scratch", data, st.model, train, seed=p["select_seed"], sparsity=s,
                             exclude_output=p["exclude_output"], parent=dense)
        out[("Sol-S", "", s)] = scratch(st.train)
        for remedy, label, fields in candidates(p):
            out[(remedy, label, s)] = scratch(remedy_train(st.train, **fields))
    return out


def choose(selection: dict[tuple, Run], p: dict) -> dict[tuple[str, float], dict]:
    """Per (remedy, sparsity) the candidate with the best validation accuracy (diverged runs and the control
    never chosen; ties go to the first in the grid); returns its TrainConfig fields and label."""
    grid = {(r, label): fields for r, label, fields in candidates(p)}
    order = {key: i for i, key in enumerate(grid)}
    best = {}
    # in grid order, so that a tie goes to the first setting of the grid
    for (remedy, label, s), run in sorted(((k, v) for k, v in selection.items() if k[0] != "Sol-S"),
                                          key=lambda kv: (kv[0][2], order[kv[0][:2]])):
        if run.diverged or grid[(remedy, label)].get("fisher_reg", -1) > 0:
            continue
        acc = run.final["test_acc"]      # the evaluation split of these runs is the validation split
        if (remedy, s) not in best or acc > best[(remedy, s)]["val_acc"]:
            best[(remedy, s)] = {"label": label, "fields": grid[(remedy, label)], "val_acc": acc}
    return best


def plain_configs(p: dict, picked: dict[str, float]) -> dict[tuple, RunConfig]:
    """Sol-D, plain Sol-S and Sol-F of every comparison seed, keyed (stage, sparsity, seed); the seeds of
    chapter 1 keep its trackers, so that its runs are the ones loaded here."""
    st = setting(p)
    out = {}
    for seed in p["remedy_seeds"]:
        track = st.track if seed in p["seeds"] else ()
        out |= two_regime_configs(st.data, st.model, st.train, list(dict.fromkeys(picked.values())), [seed],
                                  exclude_output=p["exclude_output"], track=track)
    return out


def final_configs(p: dict, picked: dict[str, float], chosen: dict) -> dict[tuple, RunConfig]:
    """The comparison, keyed (variant, sparsity, seed): Sol-D (sparsity 0), plain Sol-S and Sol-F, and every
    remedy at its chosen setting; the baselines take the Fisher schedule's phases (the same subset sizes).
    The plain runs are those of :func:`plain_configs`."""
    st = setting(p)
    plain = plain_configs(p, picked)
    out = dict(plain)
    for seed in p["remedy_seeds"]:
        dense = plain[("Sol-D", 0.0, seed)]
        for s in dict.fromkeys(picked.values()):   # one sparsity may stand for both regimes (a plan's stand-in)
            for remedy in REMEDIES:
                source = chosen.get((NFR if remedy == NFR else FISHER, s))
                if source is None:          # every candidate diverged: nothing to train
                    continue
                fields = source["fields"]
                if remedy in (DISAGREE, RANDOM):
                    fields = {**fields, "data_schedule": SCHEDULE_OF[remedy]}
                out[(remedy, s, seed)] = RunConfig("scratch", st.data, st.model, remedy_train(st.train, **fields),
                                                   seed=seed, sparsity=s, exclude_output=p["exclude_output"],
                                                   parent=dense)
    return out


def run_configs(configs: dict, store: RunStore | None, *, device: str, executor=None, progress: bool = True,
                batch: bool | None = None) -> dict:
    runs = run_all(list(configs.values()), store, device=device, executor=executor, progress=progress, batch=batch)
    return dict(zip(configs, runs))


# ------------------------------------------------------------------------------------- measurements

def fisher_of(run: Run, *, seed: int = 0, size: int | None = None, device: str = "cpu") -> float:
    """Tr(F) of a run's solution, sampled labels, cached beside the run: on its whole training set, or on ``size``
    of its samples drawn with ``seed`` (:func:`sparsegap.studies.procedure.measurement_data`; all of them when
    ``size`` is the set's size, so the cache key is the number of samples and the seed); computed on ``device``
    (:func:`~sparsegap.runs.measure_plan.measurement_device`)."""
    import torch

    from ..runs.measure_plan import measurement_device
    from ..metrics.fisher import fisher_trace
    data = load_data(run.config.data)
    x, _ = measurement_data(data.x_train, data.y_train, size, seed=seed)

    def measure() -> dict:
        g = torch.Generator().manual_seed(seed)
        return {"fisher_trace": fisher_trace(run.model().to(measurement_device(device)), x, masks=run.masks,
                                             labels="sampled", generator=g)}
    return run.measure("final_fisher", {"n": len(x), "seed": seed}, measure)["fisher_trace"]


def final_table(runs: dict[tuple, Run], picked: dict[str, float], *, measure_size: int | None = None,
                device: str = "cpu") -> pd.DataFrame:
    """One row per (variant, sparsity, seed) but Sol-D: accuracies, Tr(F) (on ``measure_size`` training samples,
    None: all), training seconds; NaN if diverged."""
    regime_of = {s: r for r, s in picked.items()}
    rows = []
    for (variant, s, seed), run in runs.items():
        if variant == "Sol-D":
            continue
        bad = bool(run.diverged)
        rows.append({"variant": variant, "regime": regime_of[s], "sparsity": s, "seed": seed, "diverged": bad,
                     "train_acc": math.nan if bad else run.final["train_acc"],
                     "test_acc": math.nan if bad else run.final["test_acc"],
                     "fisher_trace": math.nan if bad else fisher_of(run, size=measure_size, device=device)})
    return pd.DataFrame(rows)


def histories(runs: dict[tuple, Run], picked: dict[str, float]) -> dict[tuple[str, str], list[dict]]:
    """The training histories over seeds, keyed (regime, variant), Sol-D left out (for the curves figure)."""
    regime_of = {s: r for r, s in picked.items()}
    out: dict[tuple[str, str], list[dict]] = {}
    for (variant, s, _), run in runs.items():
        if variant != "Sol-D":
            out.setdefault((regime_of[s], variant), []).append(run.history)
    return out


def summary(table: pd.DataFrame) -> pd.DataFrame:
    order = {v: i for i, v in enumerate(("Sol-S", *REMEDIES, "Sol-F"))}
    out = stats.seed_summary(table, ["regime", "sparsity", "variant"], ["train_acc", "test_acc", "fisher_trace"])
    return out.sort_values(["sparsity", "variant"], key=lambda c: c.map(order) if c.name == "variant" else c
                           ).reset_index(drop=True)


def gap_closed(table: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per regime, remedy and metric, over the seeds (paired by seed): the mean gain over plain Sol-S with its
    paired-t interval (:func:`sparsegap.stats.paired_difference`) and p-value, the gap Sol-F - Sol-S, the share
    of it the remedy closes, mean(gain) / mean(gap), with Fieller's interval (:func:`sparsegap.stats.ratio_interval`),
    and the remedy's gain over the random schedule of the same subset sizes (``over_random``, paired; NaN where
    there is none). Seeds where any of the compared runs diverged are left out."""
    from scipy import stats as st
    rows = []
    for (regime, s), part in table.groupby(["regime", "sparsity"]):
        wide = {m: part.pivot(index="seed", columns="variant", values=m) for m in ("train_acc", "test_acc")}
        for remedy in REMEDIES:
            for metric, w in wide.items():
                if remedy not in w:
                    continue
                both = w[["Sol-S", "Sol-F", remedy]].dropna()
                n = len(both)
                row = {"regime": regime, "sparsity": s, "remedy": remedy, "metric": metric, "seeds": n}
                if n:
                    gain = stats.paired_difference(both[remedy], both["Sol-S"], level)
                    share = stats.ratio_interval(both[remedy] - both["Sol-S"], both["Sol-F"] - both["Sol-S"], level)
                    gap = float((both["Sol-F"] - both["Sol-S"]).mean())
                    varies = n >= 2 and float(np.ptp(both[remedy] - both["Sol-S"])) > 0
                    row |= {"gain": gain.estimate, "gain_lo": gain.lo, "gain_hi": gain.hi,
                            "p_value": float(st.ttest_rel(both[remedy], both["Sol-S"]).pvalue) if varies else math.nan,
                            "gap": gap, "share": share.estimate if gap != 0 else math.nan,
                            "share_lo": share.lo, "share_hi": share.hi}
                else:
                    row |= {"gain": math.nan, "gain_lo": -math.inf, "gain_hi": math.inf, "p_value": math.nan,
                            "gap": math.nan, "share": math.nan, "share_lo": -math.inf, "share_hi": math.inf}
                row |= {"over_random": math.nan, "over_random_lo": -math.inf, "over_random_hi": math.inf}
                if remedy != RANDOM and RANDOM in w:
                    pair = w[[remedy, RANDOM]].dropna()
                    if len(pair):
                        iv = stats.paired_difference(pair[remedy], pair[RANDOM], level)
                        row |= {"over_random": iv.estimate, "over_random_lo": iv.lo, "over_random_hi": iv.hi}
                rows.append(row)
    return pd.DataFrame(rows)


def costs(selection: dict[tuple, Run], chosen: dict) -> pd.DataFrame:
    """The wall-clock cost of each chosen remedy relative to plain Sol-S: training seconds (the ranking of a
    schedule included; evaluation excluded) summed over the run, both trained in the same build on the
    validation split. For the regularizer, also a penalized epoch against a plain epoch of the same run."""
    rows = []
    for (remedy, s), best in chosen.items():
        run = selection[(remedy, best["label"], s)]
        plain = selection[("Sol-S", "", s)]
        sec, base = np.asarray(run.history["seconds"]), np.asarray(plain.history["seconds"])
        row = {"remedy": remedy, "sparsity": s, "setting": best["label"], "seconds": sec.sum(),
               "plain_seconds": base.sum(), "run_cost": sec.sum() / base.sum()}
        e = best["fields"].get("fisher_reg_epochs", 0)
        if e and len(sec) > e:
            row["penalized_epoch_cost"] = np.median(sec[:e]) / np.median(sec[e:])
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ verdicts

# A remedy has "no effect" when its 95% interval excludes every gain or loss this large (accuracy, a fraction).
# Chosen before any result: one accuracy point is the smallest change a reader would adopt a remedy for at this
# scale, and about the seed-to-seed scatter of these networks' accuracies.
REMEDY_MARGIN = 0.01


def paired_interval(r, column: str) -> Interval:
    """The paired-t interval stored in a row of :func:`gap_closed` as ``<column>``, ``_lo`` and ``_hi``."""
    return Interval(float(r[column]), float(r[f"{column}_lo"]), float(r[f"{column}_hi"]), int(r.seeds),
                    float(max(int(r.seeds) - 1, 0)), "paired t")



def _judge(gaps: pd.DataFrame, remedy: str, picked: dict[str, float], margin: float):
    """Per regime, on the metric of that regime's gap: the remedy's status from its gain over plain Sol-S
    (:func:`sparsegap.verdict.remedy_status`), the evidence and the reasons."""
    statuses, evidence, reasons = {}, [], []
    for regime, s in picked.items():
        metric = REGIME_METRIC[regime]
        r = gaps[(gaps.regime == regime) & (gaps.remedy == remedy) & (gaps.metric == metric)]
        if not len(r) or not r.iloc[0].seeds:
            reasons.append(f"{regime} regime (s={s:g}): no run of {remedy} finished.")
            statuses[regime] = "inconclusive"
            continue
        r = r.iloc[0]
        gain = paired_interval(r, "gain")
        statuses[regime] = remedy_status(gain, margin)
        where = f"{regime} regime, s = {s:g}, {metric_words(metric)}"
        evidence.append(Evidence(f"{remedy} − plain Sol-S, {where}", gain, ".2%", outcome=gain.test(+1)))
        share = Interval(float(r.share), float(r.share_lo), float(r.share_hi), int(r.seeds),
                         float(max(int(r.seeds) - 1, 0)), "fieller")
        evidence.append(Evidence(f"share of the gap Sol-F − Sol-S ({r.gap:.2%}) that {remedy} closes, {where}",
                                 share, ".0%"))
        reasons.append(f"{regime} regime (s={s:g}): {statuses[regime]}; with {gain.n} seeds the smallest gain "
                       f"these seeds detect is {gain.detectable():.2%} (80% power).")
    return statuses, evidence, reasons


def _overall(statuses: dict[str, str]) -> str:
    """One status over the regimes: helps (hurts) when it helps (hurts) in one and hurts (helps) in none, no
    effect when it has none in every regime, inconclusive otherwise."""
    v = list(statuses.values())
    if "tested: helps" in v and "tested: hurts" not in v:
        return "tested: helps"
    if "tested: hurts" in v and "tested: helps" not in v:
        return "tested: hurts"
    if v and all(x == "tested: no effect" for x in v):
        return "tested: no effect"
    return "inconclusive"


def _deciding_first(picked: dict[str, float], statuses: dict[str, str], status: str) -> list[str]:
    """The regimes in the order the box shows them: where the overall ``status`` is *helps* or *hurts*, the
    regimes with that status (the ones that decided it) first; otherwise in the order of ``picked``."""
    regimes = list(picked)
    if status in ("tested: helps", "tested: hurts"):
        regimes.sort(key=lambda r: statuses.get(r) != status)   # stable: ties keep picked's order
    return regimes


def _regime_of(e: Evidence, regimes) -> int:
    return next((i for i, r in enumerate(regimes) if f", {r} regime" in e.name), len(regimes))


def _order_evidence(evidence: list, regimes: list[str]) -> tuple:
    """The evidence grouped by regime in the order of ``regimes`` (stable within a regime), so that the first
    line, the key effect the ledger shows, is the effect that decided the status."""
    return tuple(sorted(evidence, key=lambda e: _regime_of(e, regimes)))


def _finding(remedy: str, statuses: dict[str, str], evidence: list, picked: dict[str, float],
             status: str = "") -> str:
    parts = []
    for regime in _deciding_first(picked, statuses, status):
        s = picked[regime]
        e = next((e for e in evidence if e.name.startswith(f"{remedy} − plain Sol-S, {regime}")), None)
        if e is not None:
            parts.append(f"{e.effect.format('+.2%')} in the {regime} regime (s = {s:g}; "
                         f"{statuses[regime].removeprefix('tested: ')})")
    if not parts:
        return f"No run of {remedy} finished."
    why = ""
    if status in ("tested: helps", "tested: hurts") and len(parts) > 1:
        word, other = ("helps", "hurts") if status == "tested: helps" else ("hurts", "helps")
        n = sum(v == status for v in statuses.values())
        why = f": it {word} in {'both regimes' if n == len(statuses) else 'one regime'} and {other} in neither"
    return (f"{remedy} changes Sol-S's accuracy by " + " and by ".join(parts)
            + f", paired over seeds with 95% intervals{why}.")


def _chosen_lines(chosen: dict, remedy: str) -> list[str]:
    return [f"Chosen on the validation split at s={s:g}: {best['label']} (validation accuracy {best['val_acc']:.2%})."
            for (r, s), best in chosen.items() if r == remedy]


def verdict_regularizer(gaps: pd.DataFrame, picked: dict[str, float], chosen: dict, *,
                        scale: str = "", margin: float = REMEDY_MARGIN, seeds=()) -> Verdict:
    """P-S4 (i), a proposal of the paper, not a claim: per regime, the 95% paired interval of negative Fisher
    regularization's gain over plain Sol-S, on the metric of that regime's gap, says *helps* (above zero),
    *hurts* (below), *no effect* (inside ±``margin``) or *inconclusive*; over the two regimes, :func:`_overall`.
    The remedies' wall-clock cost (:func:`costs`) is shown beside, never in the verdict: a verdict depends on the
    results alone, so that two builds state the same one bitwise."""
    statuses, evidence, reasons = _judge(gaps, NFR, picked, margin)
    reasons += _chosen_lines(chosen, NFR)
    reasons.append(f"No effect: the interval lies within ±{margin * 100:g} points (a margin chosen before the results).")
    status = _overall(statuses)
    return Verdict("P-S4", CLAIM_NFR, status, tuple(reasons), scale, part="i",
                   finding=_finding(NFR, statuses, evidence, picked, status),
                   evidence=_order_evidence(evidence, _deciding_first(picked, statuses, status)), seeds=tuple(seeds))


def verdict_schedule(gaps: pd.DataFrame, picked: dict[str, float], chosen: dict, *,
                     scale: str = "", margin: float = REMEDY_MARGIN, seeds=()) -> Verdict:
    """P-S4 (ii). As (i) for the Fisher schedule; where it helps, it must also clearly beat the random schedule of
    the same sizes (paired: ``over_random`` of :func:`gap_closed`), else fewer samples early, not the Fisher
    ranking, may have done it, and that regime is *inconclusive*."""
    statuses, evidence, reasons = _judge(gaps, FISHER, picked, margin)
    for regime, s in picked.items():
        metric = REGIME_METRIC[regime]
        sel = gaps[(gaps.regime == regime) & (gaps.metric == metric)].set_index("remedy")
        if FISHER in sel.index and RANDOM in sel.index:
            over = paired_interval(sel.loc[FISHER], "over_random")
            evidence.append(Evidence(f"{FISHER} − {RANDOM} of the same sizes, {regime} regime, s = {s:g}, "
                                     f"{metric_words(metric)}", over, ".2%", outcome=over.test(+1)))
            reasons.append(f"{regime} regime: the random schedule changes Sol-S by {sel.gain[RANDOM] * 100:+.2f} pts, "
                           f"the hard + disagree baseline by {sel.gain.get(DISAGREE, math.nan) * 100:+.2f} pts; the "
                           f"Fisher ranking {'does' if over.lo > 0 else 'does not do'} clearly better than random.")
            if statuses.get(regime) == "tested: helps" and not over.lo > 0:
                statuses[regime] = "inconclusive"
        elif statuses.get(regime) == "tested: helps":
            statuses[regime] = "inconclusive"
            reasons.append(f"{regime} regime: no random schedule to tell the Fisher ranking from fewer samples early.")
    reasons += _chosen_lines(chosen, FISHER)
    reasons.append(f"No effect: the interval lies within ±{margin * 100:g} points (a margin chosen before the results).")
    status = _overall(statuses)
    return Verdict("P-S4", CLAIM_SCHEDULE, status, tuple(reasons), scale, part="ii",
                   finding=_finding(FISHER, statuses, evidence, picked, status),
                   evidence=_order_evidence(evidence, _deciding_first(picked, statuses, status)), seeds=tuple(seeds))


def scale_of(p: dict) -> str:
    st = setting(p)
    return describe_scale(st.data, st.model, p["remedy_seeds"], p["epochs"]) + \
        f"; settings chosen on {p['validation']} held-out training samples"


def selection_table(selection: dict[tuple, Run], chosen: dict) -> pd.DataFrame:
    """The validation split's results: one row per (remedy, setting, sparsity), the chosen ones marked."""
    picked = {(r, s): best["label"] for (r, s), best in chosen.items()}
    rows = [{"sparsity": s, "remedy": remedy, "label": label,
             "val_acc": math.nan if run.diverged else run.final["test_acc"],
             "val_train_acc": math.nan if run.diverged else run.final["train_acc"],
             "diverged": bool(run.diverged), "chosen": picked.get((remedy, s)) == label}
            for (remedy, label, s), run in selection.items()]
    return pd.DataFrame(rows)


def planned_runs(p: dict) -> list:
    """Chapter 1's runs, then this chapter's (for ``bookbuild --plan``). The sparsities and settings the chapter
    picks are known once chapter 1's runs and the validation runs are in the store; before, the plan counts
    stand-ins (:func:`_planned_choice`)."""
    picked, chosen = _planned_choice(p)
    return [*two_regimes.planned_runs(p), *selection_configs(p, picked).values(), *final_configs(p, picked, chosen).values()]


def _planned_choice(p: dict) -> tuple[dict, dict]:
    """(the picked sparsities, the chosen settings) as the chapter will find them: read from the store where it
    holds chapter 1's runs (and the validation runs), else stand-ins: the middle and the highest sparsity, and
    the first setting of each grid, which cost as much."""
    store = RunStore(p.get("runs_dir"))
    if all(store.is_done(c) for c in two_regimes.configs(p).values()):
        _, regimes = chapter_one(p, store=store, device="cpu", executor="local", progress=False)
        picked, _ = pick_sparsities(regimes)
    else:
        picked = {"generalization": p["sparsities"][len(p["sparsities"]) // 2], "optimization": max(p["sparsities"])}
    selection = selection_configs(p, picked)
    if all(store.is_done(c) for c in selection.values()):
        return picked, choose({k: store.load(c) for k, c in selection.items()}, p)
    grid = candidates(p)
    chosen = {(remedy, s): {"fields": next(f for r, _, f in grid if r == remedy)}
              for remedy in (NFR, FISHER) for s in picked.values()}
    return picked, chosen


def planned_measurements(p: dict) -> list:
    """Tr(F) of every final solution but Sol-D (:func:`final_table`), for ``bookbuild --plan``."""
    from ..runs.measure_plan import Pass, planned
    from .procedure import measured_samples
    picked, chosen = _planned_choice(p)
    out = []
    for (variant, _, _), cfg in final_configs(p, picked, chosen).items():
        if variant != "Sol-D":
            n = measured_samples(cfg, p["measure_size"])
            out.append(planned(cfg, "final_fisher", {"n": n, "seed": 0}, Pass("fisher", n)))
    return out
