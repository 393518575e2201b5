"""Chapter 1, two regimes (P-F1): the regime rule, the verdict, and the notebook's parameters.

The runs come from the Fig. 2 procedure (:mod:`sparsegap.studies.procedure`); this module labels
each sparsity with its regime by a stated rule and judges the paper's claim.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .. import params as P
from .. import stats
from ..config import RunConfig
from ..runs import RunStore
from ..verdict import Evidence, Verdict, all_of, detectable_line, status_of
from .procedure import (Experiment, data_config, executor_of, fisher_track, model_config, run_experiment,
                        train_config, train_samples, two_regime_configs)
from .procedure import run_two_regimes  # noqa: F401  (the procedure from configs, as the README shows it)

CLAIM = ("Sol-S falls behind Sol-F at every sparsity: first in generalization only, then in optimization too; "
         "losses follow, and Sol-S predicts with higher entropy.")

# The knobs that decide which runs a chapter trains. The curvature chapter measures the very same
# runs, so it declares these too (a test checks that its defaults match).
RUN_PARAMETERS = dict(
    **P.data_parameters(),
    sparsities=P.sparsities(),
    seeds=P.seeds(),
    **P.training_parameters("epochs for each of Sol-D, Sol-F and Sol-S"),
    exclude_output=P.Param("bool", "True spares the classifier layer from pruning"),
    fisher_every=P.Param("int", "epochs between Tr(F) measurements during training; 0 turns them off", low=0),
)
# The regime rule's thresholds, used by every chapter that labels regimes.
REGIME_PARAMETERS = dict(
    train_gap_tol=P.fraction("regime rule: train-accuracy gap above which a sparsity is in the optimization regime"),
    near_optimal=P.fraction("regime rule: Sol-S train accuracy needed for the generalization regime"),
)

PARAMETERS = P.ParameterSpec("01_two_regimes", **RUN_PARAMETERS, **REGIME_PARAMETERS,
                             **P.fast_training_parameters(), **P.environment_parameters())


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


def paired_by_sparsity(table: pd.DataFrame, metric: str, a: str, b: str, transform=None) -> pd.Series:
    """Per (sparsity, seed), ``metric`` of stage ``a`` minus that of stage ``b`` (after ``transform``).
    Sol-F and Sol-S of one seed share their Sol-D and mask, so this is the paired difference. Pairs with a
    diverged (NaN) or undefined member are left out. A table without a ``seed`` column (a summary of
    means) counts as one seed, from which nothing can be decided."""
    t = table if "seed" in table else table.assign(seed=0)
    t = t[t.stage.isin([a, b])]
    wide = t.pivot_table(index=["sparsity", "seed"], columns="stage", values=metric, dropna=False)
    if a not in wide or b not in wide:
        return pd.Series(dtype=float, index=pd.MultiIndex.from_arrays([[], []], names=["sparsity", "seed"]))
    va, vb = wide[a].astype(float), wide[b].astype(float)
    if transform is not None:
        va, vb = transform(va), transform(vb)
    return (va - vb).replace([np.inf, -np.inf], np.nan).dropna()


def _interval(values) -> stats.Interval:
    """The paired interval of per-seed differences already taken."""
    v = np.asarray(values, dtype=float)
    return stats.paired_difference(v, np.zeros(len(v)))


def sweep_effect(diff: pd.Series, direction: int, sparsities=None) -> tuple:
    """Pooled and per-sparsity 95% intervals of the paired differences ``diff`` (indexed (sparsity, seed)),
    and the outcome of "the effect has sign ``direction`` at every sparsity": it *fails* when the pooled
    effect (per seed, the mean over the sparsities) or the effect at any one sparsity lies clearly on the
    other side; it *holds* when the pooled effect lies clearly on the claimed side and no sparsity
    contradicts; else it is *undecided*. Returns (pooled Interval or None, {sparsity: Interval}, outcome)."""
    d = diff if sparsities is None else diff[diff.index.get_level_values("sparsity").isin(list(sparsities))]
    if d.empty:
        return None, {}, "undecided"
    per = {float(s): _interval(g.to_numpy()) for s, g in d.groupby(level="sparsity")}
    pooled = _interval(d.groupby(level="seed").mean().to_numpy())
    contradicted = pooled.test(direction) == "fails" or any(iv.test(direction) == "fails" for iv in per.values())
    return pooled, per, "fails" if contradicted else pooled.test(direction)


def sparsity_list(xs) -> str:
    return ", ".join(f"{x:g}" for x in xs) or "none"


def per_sparsity_line(what: str, per: dict, direction: int) -> str:
    """``what``, per sparsity: where it is clearly on the claimed side, clearly on the other, undecided."""
    at = {o: [s for s, iv in per.items() if iv.test(direction) == o] for o in ("holds", "fails", "undecided")}
    return (f"{what}, per sparsity: clearly so at {sparsity_list(at['holds'])}; clearly the other way at {sparsity_list(at['fails'])}; "
            f"undecided at {sparsity_list(at['undecided'])}.")


def points(iv: stats.Interval) -> str:
    """An accuracy difference in percentage points: ``3.1 points [1.2, 5.0]``."""
    return f"{100 * iv.estimate:.1f} points" + ("" if iv.method == "exact" else f" [{100 * iv.lo:.1f}, {100 * iv.hi:.1f}]")


def two_regimes_verdict(regimes: pd.DataFrame, table: pd.DataFrame, *, train_gap_tol: float = 0.01,
                        scale: str = "", diverged: Sequence[str] = ()) -> Verdict:
    """Verdict P-F1, on the paper's Fig. 1 claim, from the per-seed final metrics (``experiment.table``:
    stage, sparsity, seed, train_acc, test_acc, test_loss, train_entropy) and the regime labels of
    :func:`classify_regimes` (on the seed means).

    Every effect is a paired difference between Sol-F and Sol-S of the same seed (they share a Sol-D and
    a mask), with its 95% t-interval over seeds. The claim has four parts:

    * **test accuracy**: Sol-F tests better than Sol-S at every sparsity;
    * **two regimes, in order**: at the sparsities labelled *generalization* Sol-F tests clearly better while
      the train gap lies clearly below ``train_gap_tol`` (both fit the training set); at those labelled
      *optimization* the train gap lies clearly above ``train_gap_tol``; and the first come before the
      second along the sparsity axis (effects averaged per seed over each regime's sparsities). When the
      sweep shows only one regime (or neither) the part cannot be tested: it is undecided;
    * **test loss**: Sol-S has the higher test loss ("similar patterns", Fig. 1b);
    * **entropy**: Sol-S has the higher training-prediction entropy (Fig. 1c).

    An "at every sparsity" part holds when the effect averaged per seed over the sweep lies clearly on the
    claimed side and no sparsity lies clearly on the other side; it fails when one does. The status follows
    :func:`sparsegap.verdict.status_of` (reproduced, partly, not reproduced, inconclusive).
    """
    test_gap = paired_by_sparsity(table, "test_acc", "Sol-F", "Sol-S")
    train_gap = paired_by_sparsity(table, "train_acc", "Sol-F", "Sol-S")
    loss = paired_by_sparsity(table, "test_loss", "Sol-S", "Sol-F")
    entropy = paired_by_sparsity(table, "train_entropy", "Sol-S", "Sol-F")
    gap, gap_per, gap_outcome = sweep_effect(test_gap, +1)
    loss_iv, loss_per, loss_outcome = sweep_effect(loss, +1)
    ent_iv, ent_per, ent_outcome = sweep_effect(entropy, +1)
    if gap is None:
        return Verdict("P-F1", CLAIM, "inconclusive", ("No sparsity has both a trained Sol-F and Sol-S.",)
                       + tuple(f"Left out: {d}." for d in diverged), scale,
                       finding="No sparsity has both a trained Sol-F and a trained Sol-S, so nothing can be compared.")
    xs = sorted(float(x) for x in test_gap.index.get_level_values("sparsity").unique())
    label = dict(zip(regimes.sparsity.astype(float), regimes.regime))
    gen = [x for x in xs if label.get(x) == "generalization"]
    opt = [x for x in xs if label.get(x) == "optimization"]
    evidence = [Evidence(f"Sol-F − Sol-S test accuracy, mean over s = {sparsity_list(xs)}", gap, ".1%",
                         paper="Sol-F ahead at every sparsity (Fig. 1a, no number)", outcome=gap_outcome)]
    regime_tests, missing = [], []
    if gen:
        g_test, _, _ = sweep_effect(test_gap, +1, gen)
        g_train, _, _ = sweep_effect(train_gap, -1, gen)
        g_train = g_train.shifted(-train_gap_tol)
        regime_tests += [g_test.test(+1), g_train.test(-1)]
        evidence += [Evidence(f"Sol-F − Sol-S test accuracy, generalization regime (s = {sparsity_list(gen)})", g_test, ".1%",
                              paper="a large test gap (Fig. 1a)", outcome=g_test.test(+1)),
                     Evidence(f"Sol-F − Sol-S train accuracy less the {train_gap_tol:.0%} tolerance, generalization "
                              f"regime", g_train, ".1%", paper="almost the same, near-optimal training accuracy",
                              outcome=g_train.test(-1))]
    else:
        missing.append("no sparsity of the sweep is in the generalization regime")
    if opt:
        o_train, _, _ = sweep_effect(train_gap, +1, opt)
        o_train = o_train.shifted(-train_gap_tol)
        regime_tests.append(o_train.test(+1))
        evidence.append(Evidence(f"Sol-F − Sol-S train accuracy less the {train_gap_tol:.0%} tolerance, optimization "
                                 f"regime (s = {sparsity_list(opt)})", o_train, ".1%",
                                 paper="large discrepancies on training accuracy too (Fig. 1a)",
                                 outcome=o_train.test(+1)))
    else:
        missing.append("no sparsity of the sweep is in the optimization regime")
    ordered = bool(gen) and bool(opt) and max(gen) < min(opt)
    if missing:
        regimes_outcome = "undecided"
    else:
        regimes_outcome = all_of(regime_tests + ["holds" if ordered else "fails"])
    evidence += [Evidence(f"Sol-S − Sol-F test loss, mean over s = {sparsity_list(xs)}", loss_iv, ".3g",
                          paper="similar patterns to accuracy (Fig. 1b)", outcome=loss_outcome),
                 Evidence(f"Sol-S − Sol-F training-prediction entropy, mean over s = {sparsity_list(xs)}", ent_iv, ".3g",
                          paper="Sol-S higher (Fig. 1c)", outcome=ent_outcome)]
    seeds = sorted({int(s) for s in test_gap.index.get_level_values("seed")})
    reasons = [
        f"Regimes (rule on the seed means): generalization at {sparsity_list(gen)}; optimization at {sparsity_list(opt)}"
        + ("" if missing else " (in that order)" if ordered else " (not in that order)") + ".",
        per_sparsity_line("Sol-F tests better than Sol-S", gap_per, +1),
        per_sparsity_line("Sol-S has the higher test loss", loss_per, +1),
        per_sparsity_line("Sol-S has the higher training-prediction entropy", ent_per, +1),
        f"Parts: test accuracy {gap_outcome}; two regimes in order {regimes_outcome}; test loss {loss_outcome}; "
        f"entropy {ent_outcome}.",
    ]
    if missing:
        reasons.append("The two-regime part cannot be tested: " + "; ".join(missing) + ".")
    reasons.append(detectable_line("test-accuracy gap (mean over the sweep)", gap, ".1%"))
    reasons += [f"Left out: {d}." for d in diverged]
    status = status_of([gap_outcome, regimes_outcome, loss_outcome, ent_outcome])
    side = "above" if gap.estimate >= 0 else "below"
    where = (f"a generalization regime (s = {sparsity_list(gen)}) {'precedes' if ordered else 'does not precede'} an "
             f"optimization regime (s = {sparsity_list(opt)})" if not missing else "; ".join(missing))
    finding = (f"Sol-F tests {points(gap)} {side} Sol-S over the sweep (mean of s = {sparsity_list(xs)}, {gap.n} seed"
               f"{'s' if gap.n != 1 else ''}), and {where}.")
    return Verdict("P-F1", CLAIM, status, tuple(reasons), scale, finding=finding, evidence=tuple(evidence),
                   seeds=tuple(seeds))


def configs(p: dict) -> dict[tuple[str, float, int], RunConfig]:
    """Every run of the chapter keyed by (stage, sparsity, seed), from its checked parameters (``RUN_PARAMETERS``):
    the one place they are built, for the notebook, the plan and every chapter that reads these runs."""
    data = data_config(p)
    return two_regime_configs(data, model_config(p), train_config(p), p["sparsities"], p["seeds"],
                              exclude_output=p["exclude_output"],
                              track=fisher_track(p["fisher_every"], train_samples(data)))


def run(p: dict, *, store: RunStore | None = None, device: str = "auto", progress: bool = True,
        executor=None) -> Experiment:
    """Train (or load) the chapter's runs (:func:`configs`), on ``executor`` (None: the ``executor`` parameter)."""
    return run_experiment(configs(p), store, device=device, progress=progress, executor=executor_of(p, executor))


def planned_runs(p: dict) -> list:
    """Every run the notebook trains, from its checked parameters (for ``bookbuild --plan``)."""
    return list(configs(p).values())


# ---------------------------------------------------------------- presentation: the page's figure, tables, numbers


def test_gap_by_sparsity(table: pd.DataFrame) -> pd.DataFrame:
    """Per sparsity, the paired Sol-F − Sol-S test accuracy (fractions) with its 95% interval over the seeds:
    columns sparsity, estimate, lo, hi, n (the numbers of the verdict, for the figure's gap panel)."""
    _, per, _ = sweep_effect(paired_by_sparsity(table, "test_acc", "Sol-F", "Sol-S"), +1)
    return pd.DataFrame([{"sparsity": s, "estimate": iv.estimate, "lo": iv.lo, "hi": iv.hi, "n": iv.n}
                         for s, iv in sorted(per.items())], columns=["sparsity", "estimate", "lo", "hi", "n"])


def regime_table(regimes: pd.DataFrame):
    """The regime of each sparsity with the seed-mean accuracies it was decided from, for the page."""
    from ..tables import Col, table
    return table(regimes, {
        "sparsity": Col("sparsity", "sparsity"),
        "train_acc_F": Col("train acc. Sol-F (%)", "pct"), "train_acc_S": Col("train acc. Sol-S (%)", "pct"),
        "test_acc_F": Col("test acc. Sol-F (%)", "pct"), "test_acc_S": Col("test acc. Sol-S (%)", "pct"),
        "test_gap": Col("test gap F − S (points)", "points"), "regime": Col("regime", "text")},
        caption="Seed means at the last epoch; the regime follows the rule above.")


def page_numbers(verdict: Verdict, regimes: pd.DataFrame) -> dict:
    """The numbers and phrases the page quotes (its summary), taken from the verdict: keys are glue keys."""
    gap = verdict.evidence[0].effect if verdict.evidence else None
    gen = sorted(regimes[regimes.regime == "generalization"].sparsity)
    opt = sorted(regimes[regimes.regime == "optimization"].sparsity)
    parts = next((r for r in verdict.reasons if r.startswith("Parts:")), "")
    out = {"01-status": verdict.status,
           "01-gap": gap.points(1) if gap is not None else "not measured",
           "01-gap-side": ("ahead of" if gap.estimate > 0 else "behind" if gap.estimate < 0 else "level with")
           if gap is not None else "not compared with",
           "01-n-seeds": str(len(verdict.seeds)),
           # "s = ..." and not bare numbers: glue:text would read "0.5, 0.9" as a tuple and show its parentheses
           "01-gen": f"s = {sparsity_list(gen)}" if gen else "no sparsity",
           "01-opt": f"s = {sparsity_list(opt)}" if opt else "no sparsity",
           "01-parts": parts.removeprefix("Parts: ").rstrip(".") or "not decided"}
    loss, ent = verdict.find("Sol-S − Sol-F test loss"), verdict.find("Sol-S − Sol-F training-prediction")
    out["01-loss"] = loss.effect.words() if loss else "not measured"
    out["01-entropy"] = ent.effect.words() if ent else "not measured"
    return out


def paper_vs_ours(verdict: Verdict, regimes: pd.DataFrame, setting: str):
    """The paper's Fig. 1 beside our measurements (the paper prints no numbers for it: its rows describe
    the figure)."""
    from ..tables import paper_vs_ours as pvo
    n = page_numbers(verdict, regimes)
    return pvo([
        ("setting", "ResNet-32 ×4 on CIFAR-100, 250 epochs, lr tuned per sparsity, best-test epoch", setting, ""),
        ("Sol-F − Sol-S test accuracy, over the sweep", "Sol-F ahead at every sparsity (Fig. 1a; no number printed)",
         n["01-gap"], f"test-accuracy part: {_part(n['01-parts'], 'test accuracy')}"),
        ("generalization regime (both fit, Sol-S tests worse)", "moderate sparsities (Fig. 1a, pink)",
         n["01-gen"], ""),
        ("optimization regime (Sol-S fails to fit)", "highest sparsities (Fig. 1a, green)", n["01-opt"],
         f"two regimes in order: {_part(n['01-parts'], 'two regimes in order')}"),
        ("Sol-S − Sol-F test loss", "Sol-S higher, same pattern (Fig. 1b)", n["01-loss"],
         f"test-loss part: {_part(n['01-parts'], 'test loss')}"),
        ("Sol-S − Sol-F training-prediction entropy (nats)", "Sol-S higher, sharp change between the regimes (Fig. 1c)",
         n["01-entropy"], f"entropy part: {_part(n['01-parts'], 'entropy')}"),
    ], caption="The paper's Fig. 1 and ours; intervals are 95% over seeds, paired by seed.")


def _part(parts: str, name: str) -> str:
    """The outcome of one part (``holds``, ``fails``, ``undecided``) from the verdict's "Parts: ..." line."""
    for p in parts.split(";"):
        p = p.strip()
        if p.startswith(name + " "):
            return p.removeprefix(name + " ")
    return "not decided"
