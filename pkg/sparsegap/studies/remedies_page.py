"""Chapter 12's page (presentation only): the phrases its summary and prose quote, the rows of its tables and
of its paper-vs-ours table, worded from the verdicts and tables of :mod:`sparsegap.studies.remedies`, so that
every number on the page is one a verdict uses."""

from __future__ import annotations

import math

import pandas as pd

from .. import stats
from ..stats import Interval
from ..verdict import Evidence, Verdict
from .remedies import DISAGREE, FISHER, NFR, RANDOM, REGIME_METRIC, REMEDY_MARGIN, metric_words, paired_interval


STATUS_WORDS = {"tested: helps": "tested, it helps", "tested: hurts": "tested, it hurts",
                "tested: no effect": f"tested, no effect (within ±{REMEDY_MARGIN * 100:g} point)",
                "inconclusive": "inconclusive (the seeds cannot decide)"}


def _where(e: Evidence) -> str:
    """"optimization regime, s = 0.99, train accuracy" from an evidence line's name."""
    return e.name.split(", ", 1)[1] if ", " in e.name else e.name


def effect_phrase(v: Verdict, *, words: bool = True) -> str:
    """The verdict's key effect (its first evidence line: the one that decided a helps / hurts) in words."""
    e = v.key_effect
    return "no run finished" if e is None else f"{e.effect.points(words=words)} ({_where(e)})"


def over_random_phrase(v: Verdict, *, where: bool = True, words: bool = True) -> str:
    """The Fisher schedule's gain over the random schedule, in the regime of the verdict's key effect."""
    e = v.key_effect
    regime = next((r for r in REGIME_METRIC if e is not None and f", {r} regime" in e.name), None)
    over = next((x for x in v.evidence if x.name.startswith(f"{FISHER} − {RANDOM}") and regime
                 and f", {regime} regime" in x.name), None)
    if over is None:
        return "not measured"
    return over.effect.points(words=words) + (f" ({_where(over)})" if where else "")


def gap_intervals(table: pd.DataFrame, picked: dict[str, float], level: float = 0.95) -> dict[str, Interval]:
    """Per regime, the gap Sol-F − Sol-S on that regime's metric, paired over the comparison's seeds."""
    out = {}
    for regime, s in picked.items():
        metric = REGIME_METRIC[regime]
        w = table[table.sparsity == s].pivot_table(index="seed", columns="variant", values=metric)
        if {"Sol-F", "Sol-S"} <= set(w.columns):
            both = w[["Sol-F", "Sol-S"]].dropna()
            if len(both):
                out[regime] = stats.paired_difference(both["Sol-F"], both["Sol-S"], level)
    return out


def _cost_phrase(cost: pd.DataFrame, remedy: str) -> str:
    c = cost[cost.remedy == remedy].run_cost.dropna() if len(cost) else pd.Series(dtype=float)
    if not len(c):
        return "–"
    lo, hi = float(c.min()), float(c.max())
    return f"{lo:.1f}×" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}–{hi:.1f}×"


def page_values(v_reg: Verdict, v_sched: Verdict, table: pd.DataFrame, picked: dict[str, float],
                cost: pd.DataFrame) -> dict[str, str]:
    """The phrases the chapter's summary and prose quote (glued by the notebook under ``12-<key>``): every number
    is the one the verdicts use, worded by code so that it reads right whatever the sign."""
    gaps = gap_intervals(table, picked)
    out = {"nfr-status": STATUS_WORDS[v_reg.status], "nfr-effect": effect_phrase(v_reg),
           "schedule-status": STATUS_WORDS[v_sched.status], "schedule-effect": effect_phrase(v_sched),
           "schedule-over-random": over_random_phrase(v_sched, where=False),
           "nfr-cost": _cost_phrase(cost, NFR), "schedule-cost": _cost_phrase(cost, FISHER)}
    for regime in REGIME_METRIC:
        s = picked.get(regime)
        out[f"gap-{regime}"] = (f"{gaps[regime].points()} in {metric_words(REGIME_METRIC[regime])} at s = {s:g}"
                                if regime in gaps else "not measured")
        out[f"s-{regime}"] = f"{s:g}" if s is not None else "–"
    return out


def _paper_row(quantity: str, paper: str, v: Verdict | None, ours: str, note: str) -> tuple[str, str, str, str]:
    return (quantity, paper, (f"{STATUS_WORDS[v.status]}: " if v is not None else "") + ours, note)


def paper_vs_ours_rows(v_reg: Verdict, v_sched: Verdict, gaps: pd.DataFrame, table: pd.DataFrame,
                       picked: dict[str, float], cost: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """Rows for :func:`sparsegap.tables.paper_vs_ours`: what Section 4 of the paper proposes and expects (it
    tests neither remedy and gives no number) beside what this chapter measured."""
    rows = [
        _paper_row("(i) negative Fisher regularization, first epochs only",
                   "proposed (Section 4.1) to encourage memorization early and so close part of the gap; "
                   "not tested, no number", v_reg, effect_phrase(v_reg, words=False),
                   "λ and the duration chosen on a validation split; paired over seeds"),
        _paper_row("(ii) Fisher data schedule (memorization, then consolidating phase)",
                   "proposed (Section 4.2), per-sample Fisher as the proxy of hardness; expected to close part "
                   "of the gap; not tested, no number", v_sched, effect_phrase(v_sched, words=False),
                   "over a random schedule of the same sizes: "
                   + over_random_phrase(v_sched, where=False, words=False)),
    ]
    judged = gaps[gaps.metric == gaps.regime.map(REGIME_METRIC)] if len(gaps) else gaps
    base = []
    for regime, s in picked.items():
        r = judged[(judged.regime == regime) & (judged.remedy == DISAGREE)] if len(judged) else judged
        if len(r) and r.iloc[0].seeds:
            base.append(f"{paired_interval(r.iloc[0], 'gain').points(words=False)} ({regime} regime, s = {s:g}, "
                        f"{metric_words(REGIME_METRIC[regime])})")
    rows.append(("hard samples + sparse/dense disagreement, the paper's [57]",
                 "cited as the closest prior work; the paper warns that repeating the hardest (partly noisy) "
                 "samples may harm; not tested, no number", "; ".join(base) or "no run finished",
                 "baseline with the Fisher schedule's subset sizes"))
    gi = gap_intervals(table, picked)
    rows.append(("the gap to close, Sol-F − Sol-S",
                 "large: a test gap at near-optimal training accuracy (generalization regime), train and test "
                 "gaps beyond it (optimization regime); ResNet32 on CIFAR-100, read off Fig. 1, no number",
                 "; ".join(f"{iv.points(words=False)} ({regime} regime, s = {picked[regime]:g}, "
                           f"{metric_words(REGIME_METRIC[regime])})" for regime, iv in gi.items()) or "not measured",
                 "the paired seeds of this comparison"))
    rows.append(("training time of a remedy, relative to plain Sol-S", "not discussed",
                 f"(i) {_cost_phrase(cost, NFR)}, (ii) {_cost_phrase(cost, FISHER)}",
                 "one seed on the validation split; the penalty needs a second backward pass"))
    return rows


def regime_rows(regimes: pd.DataFrame, picked: dict[str, float]) -> pd.DataFrame:
    """Chapter 1's classification with the two sparsities picked here marked (for the page's table)."""
    mark = {s: r for r, s in picked.items()}
    return regimes.assign(picked=regimes.sparsity.map(lambda s: f"← {mark[s]}" if s in mark else ""))


def gains_rows(gaps: pd.DataFrame, *, judged: bool) -> pd.DataFrame:
    """The rows of :func:`gap_closed` on each regime's own metric (``judged``) or on the other one, with the
    intervals as text (points)."""
    if not len(gaps):
        return gaps.assign(gain_text=[], share_text=[], over_text=[], where=[])
    own = gaps.metric == gaps.regime.map(REGIME_METRIC)
    d = gaps[own if judged else ~own].copy()

    def share(r) -> str:
        if not math.isfinite(r.share):
            return "–"
        lo, hi = (f"{100 * v:.0f}".replace("-", "−") if math.isfinite(v) else ("−∞" if v < 0 else "∞")
                  for v in (r.share_lo, r.share_hi))
        return f"{100 * r.share:.0f}".replace("-", "−") + f" [{lo}, {hi}]"
    rows = [r for _, r in d.iterrows()]
    d["gain_text"] = [paired_interval(r, "gain").points(words=False) if r.seeds else "–" for r in rows]
    d["share_text"] = [share(r) for r in rows]
    d["over_text"] = [paired_interval(r, "over_random").points(words=False) if math.isfinite(r.over_random)
                      else "–" for r in rows]
    d["where"] = [f"{r.regime}, s = {r.sparsity:g}" for r in rows]
    return d.reset_index(drop=True)
