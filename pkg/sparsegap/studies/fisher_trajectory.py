"""Chapter 2, the Fisher trace during training (P-F3), and the Fisher trend of Table 1 (P-T1).

Tr(F) is recorded while the runs of the Fig. 2 procedure train (the ``fisher_trace@N`` tracker);
this module reads the shape of each trajectory and judges the paper's claim about it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import dataclasses

from .. import params as P
from .. import stats
from ..config import DataConfig, ModelConfig, RunConfig, TrainConfig
from ..runs import Run, RunStore, run_all
from ..verdict import Evidence, Verdict, all_of, detectable_line, status_of
from .procedure import Experiment, executor_of, fisher_track, run_experiment, train_samples, two_regime_configs
from .two_regimes import REGIME_PARAMETERS

CLAIM = ("Tr(F) of Sol-S rises then falls but ends above Sol-D's in the generalization regime, "
         "and rises and hardly falls in the optimization regime.")
# The same rule judges Table 1's Fisher-trend column, measured on other networks (chapter 3).
CLAIMS = {"P-F3": CLAIM,
          "P-T1": "Table 1: in the generalization regime Sol-S's Tr(F) rises, falls and ends above Sol-F's; "
                  "in the optimization regime it rises and hardly falls (Fisher trend, per regime)."}

DROP_THRESHOLD = P.fraction("trend rule: 1 - final/peak above this means Tr(F) came back down")

PARAMETERS = P.ParameterSpec(
    "02_fisher_trajectory",
    dataset=P.Param("str", "dataset name; the paper uses the 12-bit task"),
    hidden=P.Param("ints", "hidden widths of the ReLU MLP", low=1),
    init=P.Param("str", "weight init", choices=("default", "kaiming")),
    sparsities=P.sparsities(),
    min_density=P.fraction("per-layer floor of the mask density"),
    stages=P.Param("strs", "sparse solutions to train", choices=("Sol-S", "Sol-F"), unique=True),
    seeds=P.seeds(),
    dense_epochs=P.Param("int", "epochs for Sol-D", low=1),
    sparse_epochs=P.Param("int", "epochs for Sol-F and Sol-S", low=1),
    batch_size=P.Param("int", "minibatch size", low=1),
    lr=P.Param("float", "SGD learning rate", low=0.0),
    momentum=P.fraction("SGD momentum", high_open=True),
    weight_decay=P.Param("float", "L2 weight decay", low=0.0),
    dense_milestones=P.Param("floats", "lr decay points for Sol-D, fractions of dense_epochs", low=0.0, high=1.0,
                             min_len=0),
    sparse_milestones=P.Param("floats", "lr decay points for Sol-F and Sol-S, fractions of sparse_epochs",
                              low=0.0, high=1.0, min_len=0),
    gamma=P.fraction("lr decay factor"),
    fisher_every=P.Param("int", "epochs between two measurements of Tr(F)", low=1),
    unit_init_sparsities=P.Param("floats", "sparsities (among sparsities) where Sol-S trains again with the "
                                           "sparsity-aware unit init; [] for none", low=0.0, high=1.0,
                                 high_open=True, unique=True, min_len=0),
    drop_threshold=DROP_THRESHOLD,
    **REGIME_PARAMETERS,
    **P.environment_parameters(),
)


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
    """One row per trained run: its final train accuracy, the chance level of its training set (the share of
    its most frequent class) and the shape of its Tr(F) trajectory (:func:`fisher_trend`)."""
    from ..runs import load_data
    chance = {}
    rows = []
    for (stage, s, seed), run in experiment.runs.items():
        if run.diverged:  # its trajectory ends at the divergence: not a trained network
            continue
        data = run.config.data
        if data not in chance:
            y = np.asarray(load_data(data).y_train).ravel()
            chance[data] = float(np.bincount(y).max() / len(y))
        rows.append({"stage": stage, "sparsity": s, "seed": seed, "train_acc": run.final["train_acc"],
                     "chance": chance[data], **fisher_trend(run.history)})
    return pd.DataFrame(rows)


# A run "left chance" when its final train accuracy is this far above the chance level of its training set.
CHANCE_MARGIN = 0.05


def fisher_trajectory_verdict(trends: pd.DataFrame, regimes: pd.DataFrame, *, drop_threshold: float = 0.3,
                              rise_factor: float = 2.0, claim_id: str = "P-F3", scale: str = "",
                              chance_margin: float = CHANCE_MARGIN) -> Verdict:
    """Verdict on Fig. 3 (``claim_id="P-F3"``) or on the Fisher trend of Table 1 (``"P-T1"``):
    does Sol-S's Tr(F) trend differ between the regimes as claimed?

    Per seed, over the sparsities of each regime (averaged), with 95% t-intervals over seeds:

    * both regimes: Tr(F) rose, log10(peak / first value) above log10(``rise_factor``);
    * generalization regime: then came down, drop = 1 - final/peak above ``drop_threshold``, and ended
      above the reference: log10 final Tr(F) of Sol-S minus that of **Sol-D** (Fig. 3: "higher than the
      baseline's") or of **Sol-F** of the same sparsity (Table 1: "higher compared to sparse
      finetuning's"), paired by seed (Sol-F and Sol-S share their Sol-D);
    * optimization regime: drop at most ``drop_threshold``.

    Precondition: the claim is about how Sol-S's trajectory differs between a regime where it fits and one
    where it fits only partly. A seed whose Sol-S ends within ``chance_margin`` of chance (``chance`` column
    of ``trends``, else 0.5) never trained: its flat trajectory says nothing of either shape and is left out.
    When a regime is missing, or every Sol-S seed of a regime stayed at chance, the verdict is *inconclusive*.
    """
    if claim_id not in CLAIMS:
        raise ValueError(f"claim_id must be one of {sorted(CLAIMS)} (the claims this rule judges), got {claim_id!r}")
    reference = "Sol-D" if claim_id == "P-F3" else "Sol-F"
    chance = trends["chance"] if "chance" in trends else pd.Series(0.5, index=trends.index)
    t = trends.assign(at_chance=(trends["train_acc"] < chance + chance_margin) if "train_acc" in trends else False)
    sol_s = t[t.stage == "Sol-S"]
    by_regime = {r: sorted(regimes[regimes.regime == r].sparsity) for r in ("generalization", "optimization")}
    fmt = lambda xs: ", ".join(f"{x:g}" for x in xs) or "none"  # noqa: E731
    reasons = [f"Regimes (from final accuracies): generalization at {fmt(by_regime['generalization'])}; "
               f"optimization at {fmt(by_regime['optimization'])}."]
    stuck = sol_s[sol_s.at_chance]
    stuck_at = sorted(stuck.sparsity.unique())
    if len(stuck):
        reasons.append(f"Sol-S ends at chance (train accuracy within {chance_margin:.0%} of chance) in "
                       f"{len(stuck)} of {len(sol_s)} runs, at sparsities {fmt(stuck_at)}: left out.")
    trained = sol_s[~sol_s.at_chance]

    def per_seed(sparsities, transform):  # per seed, the mean over the regime's sparsities
        d = trained[trained.sparsity.isin(sparsities)]
        return d.assign(v=transform(d)).groupby("seed")["v"].mean()

    log_rise = lambda x: np.log10(x["peak"] / x["initial"])  # noqa: E731
    evidence, parts, untestable = [], {}, []
    for regime in ("generalization", "optimization"):
        xs = by_regime[regime]
        if not xs:
            untestable.append(f"the sweep finds no {regime} regime")
            continue
        if trained[trained.sparsity.isin(xs)].empty:
            n_stuck = stuck[stuck.sparsity.isin(xs)].seed.nunique()
            untestable.append(f"Sol-S stays at chance in the {regime} regime (s = {fmt(xs)}; "
                              f"{n_stuck} of {sol_s[sol_s.sparsity.isin(xs)].seed.nunique()} seeds)")
            continue
        rise = per_seed(xs, log_rise)
        drop = per_seed(xs, lambda x: x["drop"])
        rise_iv = stats.mean_interval(rise.to_numpy() - np.log10(rise_factor))
        drop_iv = stats.mean_interval(drop.to_numpy() - drop_threshold)
        tests = [rise_iv.test(+1)]
        where = f"{regime} regime (s = {fmt(xs)})"
        if regime == "generalization":
            ref = t[t.stage == reference]
            if reference == "Sol-F":          # the same sparsities; Sol-D has one run per seed
                ref = ref[ref.sparsity.isin(xs)]
            s_final = per_seed(xs, lambda x: np.log10(x["final"]))
            r_final = ref.assign(v=np.log10(ref["final"])).groupby("seed")["v"].mean()
            common = sorted(set(s_final.index) & set(r_final.index))
            above = (stats.paired_difference(s_final[common].to_numpy(), r_final[common].to_numpy())
                     if common else None)
            tests += [drop_iv.test(+1)]
            if above is not None:
                tests.append(above.test(+1))
                evidence.append(Evidence(f"log10 final Tr(F), Sol-S − {reference}, {where}", above, ".2f",
                                         paper="higher (Fig. 3, no number)" if claim_id == "P-F3"
                                         else "higher (Table 1, no number)", outcome=above.test(+1)))
            else:
                tests.append("undecided")
            evidence.append(Evidence(f"drop 1 − final/peak of Sol-S minus {drop_threshold:g}, {where}", drop_iv,
                                     ".2f", paper="falls to a moderate level", outcome=drop_iv.test(+1)))
        else:
            tests.append(drop_iv.test(-1))
            evidence.append(Evidence(f"drop 1 − final/peak of Sol-S minus {drop_threshold:g}, {where}", drop_iv,
                                     ".2f", paper="hardly decreases", outcome=drop_iv.test(-1)))
        evidence.append(Evidence(f"log10 peak/first Tr(F) of Sol-S minus log10 {rise_factor:g}, {where}", rise_iv,
                                 ".2f", paper="increases", outcome=rise_iv.test(+1)))
        parts[regime] = all_of(tests)
    # the key effect first: the final level against the reference where it was measured, else the first drop
    evidence.sort(key=lambda e: 0 if e.name.startswith("log10 final") else 1)
    seeds = tuple(sorted(int(x) for x in trained.seed.unique()))
    reasons += [f"{r.capitalize()} regime, the claimed shape: {o}." for r, o in parts.items()]
    key = evidence[0] if evidence else None
    if key is not None and key.effect.n >= 2:
        reasons.append(detectable_line("effect on the key effect", key.effect, ".2f"))
    if untestable:
        status = "inconclusive"
        total = sol_s.seed.nunique()
        at = sol_s.groupby("seed").at_chance.all().sum()
        finding = (f"The trajectory claim cannot be tested: {'; '.join(untestable)}"
                   + (f" ({at} of {total} seeds stay at chance at every sparsity)" if at else "")
                   + "".join(f"; the {r} regime's shape {o}" for r, o in parts.items()) + ".")
        reasons.append("Precondition failed: " + "; ".join(untestable) + ".")
    else:
        status = status_of([parts["generalization"], parts["optimization"]])
        finding = (f"Sol-S's Tr(F) {'ends above' if key.effect.sign > 0 else 'ends below' if key.effect.sign < 0 else 'ends not clearly above'} "
                   f"{reference}'s in the generalization regime (log10 ratio {key.effect.format('.2f')}), and the "
                   f"claimed shape holds in {sum(o == 'holds' for o in parts.values())} of 2 regimes."
                   if key is not None else "No trained Sol-S to measure.")
    return Verdict(claim_id, CLAIMS[claim_id], status, tuple(reasons), scale, finding=finding,
                   evidence=tuple(evidence), seeds=seeds)


def data_config(p: dict) -> DataConfig:
    """The chapter's task (the whole of it: the 12-bit task is small), from its checked parameters."""
    return DataConfig(p["dataset"])


def model_config(p: dict) -> ModelConfig:
    """The chapter's deep, narrow ReLU MLP, from its checked parameters."""
    return ModelConfig("mlp", hidden=tuple(p["hidden"]), init=p["init"])


def configs(p: dict) -> dict[tuple[str, float, int], RunConfig]:
    """The Fig. 2 runs of the chapter keyed by (stage, sparsity, seed), from its checked parameters: Sol-D
    with its own epochs and milestones, Sol-F and Sol-S with theirs, every run tracking Tr(F)."""
    def train(epochs, milestones):
        return TrainConfig(epochs=epochs, batch_size=p["batch_size"], lr=p["lr"], momentum=p["momentum"],
                           weight_decay=p["weight_decay"], milestones=tuple(milestones), gamma=p["gamma"])
    sparse = train(p["sparse_epochs"], p["sparse_milestones"])
    data = data_config(p)
    return two_regime_configs(data, model_config(p), train(p["dense_epochs"], p["dense_milestones"]),
                              p["sparsities"], p["seeds"], finetune_train=sparse, scratch_train=sparse,
                              min_density=p["min_density"], track=fisher_track(p["fisher_every"], train_samples(data)),
                              stages=p["stages"])


def unit_init_configs(configs: dict[tuple[str, float, int], RunConfig], sparsities) -> dict:
    """Sol-S of ``configs`` (:func:`configs`) again at ``sparsities``, each from the very same mask and parent,
    but with the sparsity-aware "unit" init (:mod:`sparsegap.sparse_init`), keyed (sparsity, seed)."""
    have = sorted({s for stage, s, _ in configs if stage != "Sol-D"})
    missing = sorted(set(sparsities) - set(have))
    if missing:
        raise ValueError(f"unit_init_sparsities must be drawn from sparsities={have}, got {missing} too")
    return {(s, seed): dataclasses.replace(cfg, sparse_init="unit")
            for (stage, s, seed), cfg in configs.items() if stage == "Sol-S" and s in set(sparsities)}


def run(p: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True,
        executor=None) -> Experiment:
    """Train (or load) the chapter's Fig. 2 runs (:func:`configs`)."""
    return run_experiment(configs(p), store, device=device, progress=progress, executor=executor_of(p, executor))


def run_unit_init(p: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True,
                  executor=None) -> dict[tuple[float, int], Run]:
    """Train (or load) the unit-init Sol-S at ``unit_init_sparsities`` (:func:`unit_init_configs`), keyed
    (sparsity, seed); none when it is empty."""
    unit = unit_init_configs(configs(p), p["unit_init_sparsities"])
    return dict(zip(unit, run_all(list(unit.values()), store, device=device, progress=progress,
                                  executor=executor_of(p, executor))))


def unit_init_table(experiment: Experiment, unit_runs: dict) -> pd.DataFrame:
    """Per sparsity, seed means of the last-epoch train and test accuracy of Sol-S with the dense init
    (the chapter's runs) and with the unit init."""
    rows = []
    for (s, seed), run in unit_runs.items():
        plain = experiment.runs[("Sol-S", s, seed)]
        for init, r in (("dense (Kaiming)", plain), ("unit (sparsity-aware)", run)):
            h = r.history
            rows.append({"sparsity": s, "seed": seed, "init": init,
                         "train_acc": float("nan") if r.diverged else h["train_acc"][-1],
                         "test_acc": float("nan") if r.diverged else h["test_acc"][-1]})
    return pd.DataFrame(rows).groupby(["sparsity", "init"])[["train_acc", "test_acc"]].mean().unstack("init")


def planned_runs(p: dict) -> list:
    """Every run the notebook trains, the unit-init Sol-S included (for ``bookbuild --plan``)."""
    fig2 = configs(p)
    return [*fig2.values(), *unit_init_configs(fig2, p["unit_init_sparsities"]).values()]


# ---------------------------------------------------------------- presentation: the page's tables and numbers


def trend_table(trends: pd.DataFrame, regimes: pd.DataFrame | None = None):
    """The shape of the Tr(F) trajectories, seed means per (stage, sparsity), as a table for the page."""
    from ..tables import Col, table
    per = (trends.groupby(["stage", "sparsity"])[["train_acc", "initial", "peak", "peak_epoch", "final", "drop"]]
           .mean().reset_index())
    cols = {"stage": Col("solution", "text"), "sparsity": Col("sparsity", "sparsity")}
    if regimes is not None:
        per = per.merge(regimes[["sparsity", "regime"]], on="sparsity", how="left")
        cols["regime"] = Col("regime", "text")
    cols |= {"train_acc": Col("train acc. (%)", "pct"), "initial": Col("Tr(F) first", "3g"),
             "peak": Col("Tr(F) peak", "3g"), "peak_epoch": Col("peak epoch", "0f"),
             "final": Col("Tr(F) final", "3g"), "drop": Col("drop 1 − final/peak", "2f")}
    return table(per, cols, caption="Seed means per solution and sparsity.")


def unit_init_display(unit_table: pd.DataFrame):
    """:func:`unit_init_table` for the page: last-epoch accuracies of Sol-S with either init."""
    from ..tables import Col, table
    flat = pd.DataFrame({"sparsity": unit_table.index.to_numpy(dtype=float)})
    names = {"dense (Kaiming)": "dense init", "unit (sparsity-aware)": "unit init"}
    cols = {"sparsity": Col("sparsity", "sparsity")}
    for metric, what in (("train_acc", "train"), ("test_acc", "test")):
        for init, short in names.items():
            if (metric, init) in unit_table:
                flat[f"{metric}|{init}"] = unit_table[(metric, init)].to_numpy(dtype=float)
                cols[f"{metric}|{init}"] = Col(f"{what} acc., {short} (%)", "pct")
    return table(flat, cols, caption="Sol-S, seed means at the last epoch (chance: 50%).")


def _find(verdict: Verdict, *words: str):
    return next((e for e in verdict.evidence if all(w in e.name for w in words)), None)


def page_numbers(verdict: Verdict, trends: pd.DataFrame, unit_table: pd.DataFrame | None = None, *,
                 prefix: str = "02", chance_margin: float = CHANCE_MARGIN) -> dict:
    """The phrases the page quotes (its summary and its paper-vs-ours table), from the verdict and the trends:
    keys are glue keys."""
    sol_s = trends[trends.stage == "Sol-S"]
    chance = sol_s["chance"] if "chance" in sol_s else 0.5
    stuck = sol_s[sol_s.train_acc < chance + chance_margin]
    out = {f"{prefix}-status": verdict.status, f"{prefix}-n-seeds": str(trends.seed.nunique()),
           f"{prefix}-stuck": f"{len(stuck)} of {len(sol_s)}",
           f"{prefix}-stuck-at": ("s = " + ", ".join(f"{x:g}" for x in sorted(stuck.sparsity.unique())))
           if len(stuck) else "no sparsity"}
    final = _find(verdict, "log10 final")
    gen_drop, opt_drop = _find(verdict, "drop", "generalization"), _find(verdict, "drop", "optimization")
    out[f"{prefix}-final"] = final.effect.words(".2f") if final else "not measured (no trained Sol-S in a generalization regime)"
    out[f"{prefix}-gen-drop"] = (gen_drop.effect.words(".2f") + " above the threshold") if gen_drop else "not measured"
    out[f"{prefix}-opt-drop"] = (opt_drop.effect.words(".2f") + " above the threshold") if opt_drop else "not measured"
    shapes = [r[0].lower() + r[1:].removesuffix(".") for r in verdict.reasons if "regime, the claimed shape" in r]
    out[f"{prefix}-shapes"] = "; ".join(shapes) or "the claimed shapes could not be tested"
    if unit_table is not None and len(unit_table):
        dense = float(unit_table[("train_acc", "dense (Kaiming)")].mean())
        unit = float(unit_table[("train_acc", "unit (sparsity-aware)")].mean())
        out[f"{prefix}-unit"] = (f"{100 * unit:.1f}% of the training set with the sparsity-aware init against "
                                 f"{100 * dense:.1f}% with the dense init (mean over s = "
                                 + ", ".join(f"{x:g}" for x in unit_table.index) + ")")
    else:
        out[f"{prefix}-unit"] = "not tried (no sparsity was given for it)"
    return out


def paper_vs_ours(numbers: dict, setting: str, *, prefix: str = "02"):
    """The paper's Fig. 3 beside our measurements (the paper prints no numbers for it)."""
    from ..tables import paper_vs_ours as pvo
    n = {k.removeprefix(prefix + "-"): v for k, v in numbers.items()}
    return pvo([
        ("setting", "ReLU MLP 64-32-32-18-18-6-6 on the 12-bit task, lr 0.001, 1000 dense / 2000 sparse epochs, "
                    "batch 12", setting, ""),
        ("Sol-S that train at all", "every sparsity shown trains (Fig. 3)", f"{n['stuck']} Sol-S runs end at chance "
         f"(at {n['stuck-at']})", "left out of the verdict"),
        ("log10 final Tr(F), Sol-S − Sol-D, generalization regime", "above zero: ends above the baseline "
         "(Fig. 3; no number printed)", n["final"], ""),
        ("drop 1 − final/peak, generalization regime", "rises, then falls to a moderate level (Fig. 3)",
         n["gen-drop"], ""),
        ("drop 1 − final/peak, optimization regime", "rises and hardly decreases (Fig. 3)", n["opt-drop"], ""),
        ("Sol-F", "omitted \"due to time constraints\" (footnote 6)", "trained, to find each sparsity's regime", ""),
    ], caption="The paper's Fig. 3 and ours; intervals are 95% over seeds.")
