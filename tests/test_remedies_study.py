"""The pure parts of chapter 12 (sparsegap.studies.remedies): Fieller's interval (now sparsegap.stats.ratio_interval,
which the gap-closed table uses), the gap-closed table, the
choice of sparsities and settings, the verdicts' status rules, and the configs of the selection and final
runs. Nothing trains here: the runs are stand-ins and the tables hand-made.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from sparsegap.stats import ratio_interval
from sparsegap.studies import remedies as R
from sparsegap.studies import remedies_page as page
from sparsegap.verdict import remedy_status
from sparsegap.studies.procedure import two_regime_configs
from sparsegap.studies.remedies import DISAGREE, FISHER, NFR, RANDOM, REMEDIES

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------- fieller

def fieller(d, g, level=0.95):
    """Fieller's interval as the chapter computes it: sparsegap.stats.ratio_interval."""
    iv = ratio_interval(d, g, level)
    return (iv.lo, iv.hi)


def accepted(d, g, thetas, level=0.95):
    """The θ of ``thetas`` where the paired t-test of d - θ g against 0 is not rejected at 1 - level."""
    x = np.asarray(d)[None, :] - thetas[:, None] * np.asarray(g)[None, :]
    p = stats.ttest_1samp(x, 0.0, axis=1).pvalue
    return thetas[p >= 1 - level]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("level", [0.95, 0.9])
def test_fieller_is_the_set_a_paired_t_test_does_not_reject(seed, level):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 12))
    g = rng.normal(0.1, 0.02, n)                         # the gap: clearly above 0
    d = rng.uniform(-0.2, 0.8) * g + rng.normal(0, 0.01, n)
    lo, hi = fieller(d, g, level)
    assert math.isfinite(lo) and math.isfinite(hi) and lo < d.mean() / g.mean() < hi
    width = hi - lo
    thetas = np.linspace(lo - width, hi + width, 60_001)
    step = thetas[1] - thetas[0]
    ok = accepted(d, g, thetas, level)
    assert len(ok)
    assert ok.min() == pytest.approx(lo, abs=1.5 * step)
    assert ok.max() == pytest.approx(hi, abs=1.5 * step)
    # one interval: every grid point between the ends is accepted
    inside = thetas[(thetas >= ok.min()) & (thetas <= ok.max())]
    assert len(inside) == len(ok)


@pytest.mark.parametrize("seed", range(4))
def test_fieller_is_unbounded_when_the_gap_is_not_clearly_away_from_zero(seed):
    rng = np.random.default_rng(100 + seed)
    g = rng.normal(0.0, 0.1, 6)
    g -= g.mean() - 0.01                                  # mean 0.01, spread 0.1: no significant gap
    assert stats.ttest_1samp(g, 0.0).pvalue > 0.05
    d = 0.5 * g + rng.normal(0, 0.01, 6)
    assert fieller(d, g) == (-math.inf, math.inf)
    # the brute-force set is unbounded too: it reaches the far ends of a wide grid
    ok = accepted(d, g, np.linspace(-1e4, 1e4, 20_001))
    assert ok.min() == -1e4 or ok.max() == 1e4


def test_fieller_with_fewer_than_two_samples_is_unbounded():
    assert fieller(np.array([0.1]), np.array([0.2])) == (-math.inf, math.inf)
    with pytest.raises(ValueError, match="at least one value"):
        fieller(np.array([]), np.array([]))


# ------------------------------------------------------------------------------------------ gap_closed

def hand_table() -> pd.DataFrame:
    """Two regimes, four seeds, plain Sol-S and Sol-F and two remedies; the regularizer diverged at seed 2
    of the generalization regime."""
    acc = {  # (regime, sparsity) -> variant -> per-seed (train_acc, test_acc)
        ("generalization", 0.5): {
            "Sol-S": [(1.00, 0.80), (0.99, 0.81), (1.00, 0.79), (1.00, 0.80)],
            "Sol-F": [(1.00, 0.85), (1.00, 0.86), (1.00, 0.84), (1.00, 0.86)],
            NFR: [(1.00, 0.82), (1.00, 0.82), (math.nan, math.nan), (0.99, 0.81)],
            FISHER: [(1.00, 0.81), (0.99, 0.80), (1.00, 0.80), (1.00, 0.82)],
        },
        ("optimization", 0.9): {
            "Sol-S": [(0.90, 0.70), (0.88, 0.69), (0.91, 0.71), (0.89, 0.70)],
            "Sol-F": [(0.97, 0.75), (0.96, 0.74), (0.98, 0.76), (0.97, 0.75)],
            NFR: [(0.92, 0.71), (0.91, 0.70), (0.92, 0.72), (0.90, 0.70)],
            FISHER: [(0.89, 0.70), (0.90, 0.69), (0.90, 0.70), (0.91, 0.71)],
        },
    }
    rows = []
    for (regime, s), variants in acc.items():
        for variant, values in variants.items():
            for seed, (tr, te) in enumerate(values):
                rows.append({"variant": variant, "regime": regime, "sparsity": s, "seed": seed,
                             "train_acc": tr, "test_acc": te, "fisher_trace": 1.0 + seed,
                             "diverged": math.isnan(tr)})
    return pd.DataFrame(rows)


def expected_row(table, regime, remedy, metric, level=0.95):
    part = table[table.regime == regime].pivot(index="seed", columns="variant", values=metric)
    both = part[["Sol-S", "Sol-F", remedy]].dropna()
    gain = (both[remedy] - both["Sol-S"]).to_numpy()
    gap = (both["Sol-F"] - both["Sol-S"]).to_numpy()
    spread = np.std(gain) > 0
    lo, hi = stats.t.interval(level, len(gain) - 1, loc=gain.mean(), scale=stats.sem(gain)) if spread else (0, 0)
    return dict(seeds=len(gain), gain=gain.mean(), gain_lo=lo, gain_hi=hi, gap=gap.mean(),
                share=gain.mean() / gap.mean(),
                p_value=stats.ttest_rel(both[remedy], both["Sol-S"]).pvalue if spread else math.nan,
                gains=gain, gaps=gap)


def test_gap_closed_on_a_hand_made_table():
    table = hand_table()
    gaps = R.gap_closed(table)
    # one row per regime, remedy present and metric
    assert len(gaps) == 2 * 2 * 2
    assert set(gaps.remedy) == {NFR, FISHER} and set(gaps.metric) == {"train_acc", "test_acc"}
    for regime in ("generalization", "optimization"):
        for remedy in (NFR, FISHER):
            for metric in ("train_acc", "test_acc"):
                row = gaps[(gaps.regime == regime) & (gaps.remedy == remedy) & (gaps.metric == metric)]
                assert len(row) == 1
                row = row.iloc[0]
                e = expected_row(table, regime, remedy, metric)
                assert row.seeds == e["seeds"]
                assert row.sparsity == (0.5 if regime == "generalization" else 0.9)
                for key in ("gain", "gap", "share"):
                    assert row[key] == pytest.approx(e[key], rel=1e-9, abs=1e-12), (regime, remedy, metric, key)
                if np.std(e["gains"]) > 0:
                    for key in ("gain_lo", "gain_hi", "p_value"):
                        assert row[key] == pytest.approx(e[key], rel=1e-9, abs=1e-12), (regime, remedy, metric, key)
                else:   # equal gains at every seed (the schedule's train accuracy in generalization): no spread
                    assert row.gain_lo == row.gain_hi == pytest.approx(row.gain, abs=1e-12)
                    assert math.isnan(row.p_value)
                flo, fhi = fieller(e["gains"], e["gaps"])
                assert (row.share_lo, row.share_hi) == (pytest.approx(flo), pytest.approx(fhi))


def test_gap_closed_known_numbers():
    gaps = R.gap_closed(hand_table()).set_index(["regime", "remedy", "metric"])
    # generalization, test accuracy, the regularizer: seeds 0, 1, 3 (seed 2 diverged)
    # gains +0.02, +0.01, +0.01; gaps +0.05, +0.05, +0.06
    row = gaps.loc[("generalization", NFR, "test_acc")]
    assert row.seeds == 3
    assert row.gain == pytest.approx(0.04 / 3)
    assert row.gap == pytest.approx(0.16 / 3)
    assert row.share == pytest.approx(0.25)
    half = stats.t.ppf(0.975, 2) * np.std([0.02, 0.01, 0.01], ddof=1) / math.sqrt(3)
    assert (row.gain_lo, row.gain_hi) == (pytest.approx(0.04 / 3 - half), pytest.approx(0.04 / 3 + half))
    # the diverged seed is dropped for the regularizer only: the schedule keeps all four
    row = gaps.loc[("generalization", FISHER, "test_acc")]
    assert row.seeds == 4
    assert row.gain == pytest.approx((0.01 - 0.01 + 0.01 + 0.02) / 4)
    assert row.gap == pytest.approx((0.05 + 0.05 + 0.05 + 0.06) / 4)
    assert gaps.loc[("optimization", NFR, "train_acc")].seeds == 4


def test_gap_closed_drops_a_seed_where_plain_sol_s_is_missing_for_every_remedy():
    table = hand_table()
    bad = (table.variant == "Sol-S") & (table.regime == "optimization") & (table.seed == 0)
    table.loc[bad, ["train_acc", "test_acc"]] = math.nan
    gaps = R.gap_closed(table)
    opt = gaps[gaps.regime == "optimization"]
    assert set(opt.seeds) == {3}
    assert set(gaps[(gaps.regime == "generalization") & (gaps.remedy == FISHER)].seeds) == {4}


def test_gap_closed_with_one_seed_left_has_an_unbounded_interval():
    table = hand_table()
    table = table[table.seed.isin([0, 2])]               # NFR diverged at seed 2: one seed left in generalization
    row = R.gap_closed(table).set_index(["regime", "remedy", "metric"]).loc[("generalization", NFR, "test_acc")]
    assert row.seeds == 1
    assert row.gain == pytest.approx(0.02)
    assert row.gain_lo == -math.inf and row.gain_hi == math.inf
    assert math.isnan(row.p_value)
    assert (row.share_lo, row.share_hi) == (-math.inf, math.inf)


# ------------------------------------------------------------------------------------- pick_sparsities

def regimes_table(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["sparsity", "regime", "train_gap", "test_gap"])


def test_pick_sparsities_takes_the_widest_gap_of_each_regime():
    regimes = regimes_table([
        (0.5, "no gap", 0.0, -0.01),
        (0.8, "generalization", 0.002, 0.02),
        (0.9, "generalization", 0.005, 0.05),      # largest test gap of the generalization regime
        (0.95, "optimization", 0.03, 0.09),
        (0.97, "optimization", 0.12, 0.10),        # largest train gap of the optimization regime
        (0.99, "optimization", 0.08, 0.20),        # larger test gap, but the optimization regime goes by train gap
    ])
    picked, notes = R.pick_sparsities(regimes)
    assert picked == {"generalization": 0.9, "optimization": 0.97}
    assert list(picked) == ["generalization", "optimization"]         # by sparsity
    assert notes == []


def test_pick_sparsities_stand_ins_when_no_regime_is_found():
    regimes = regimes_table([(0.5, "both underfit", 0.0, 0.01), (0.8, "both underfit", 0.0, 0.04),
                             (0.9, "both underfit", 0.0, 0.02)])
    picked, notes = R.pick_sparsities(regimes)
    assert picked == {"generalization": 0.8, "optimization": 0.9}
    assert len(notes) == 2
    assert "no generalization regime" in notes[0] and "s=0.8" in notes[0]
    assert "no optimization regime" in notes[1] and "s=0.9" in notes[1]


def test_pick_sparsities_stand_in_for_optimization_is_the_highest_sparsity_left():
    # the largest test gap is at the highest sparsity: generalization takes it, optimization the next one
    regimes = regimes_table([(0.5, "both underfit", 0.0, 0.01), (0.8, "both underfit", 0.0, 0.02),
                             (0.9, "both underfit", 0.0, 0.05)])
    picked, notes = R.pick_sparsities(regimes)
    assert picked == {"optimization": 0.8, "generalization": 0.9}
    assert list(picked) == ["optimization", "generalization"]
    assert len(notes) == 2


def test_pick_sparsities_stand_in_for_one_missing_regime():
    # an optimization regime but no generalization one: the stand-in comes from outside the optimization regime
    regimes = regimes_table([(0.5, "no gap", 0.0, 0.001), (0.8, "both underfit", 0.0, 0.03),
                             (0.9, "optimization", 0.05, 0.3), (0.95, "optimization", 0.10, 0.2)])
    picked, notes = R.pick_sparsities(regimes)
    assert picked == {"generalization": 0.8, "optimization": 0.95}
    assert len(notes) == 1 and "no generalization regime" in notes[0] and "s=0.8" in notes[0]
    # a generalization regime but no optimization one
    regimes = regimes_table([(0.5, "generalization", 0.0, 0.03), (0.8, "generalization", 0.0, 0.01),
                             (0.9, "both underfit", 0.0, 0.0)])
    picked, notes = R.pick_sparsities(regimes)
    assert picked == {"generalization": 0.5, "optimization": 0.9}
    assert len(notes) == 1 and "no optimization regime" in notes[0] and "s=0.9" in notes[0]


def test_pick_sparsities_with_a_single_sparsity():
    picked, notes = R.pick_sparsities(regimes_table([(0.9, "both underfit", 0.0, 0.01)]))
    assert picked == {"generalization": 0.9}
    assert len(notes) == 1


# -------------------------------------------------------------------------------- candidates and choose

GRID = dict(reg_coefs=[-1.0, -0.1], reg_control=1.0, reg_epochs=[5, 10], reg_off="linear", subset=0.3,
            memorize_epochs=[5, 15], consolidate_epochs=10, rerank_every=5)


def test_candidates_are_the_grid():
    c = R.candidates(GRID)
    assert [(r, label) for r, label, _ in c] == [
        (NFR, "λ=-1, 5 ep"), (NFR, "λ=-1, 10 ep"), (NFR, "λ=-0.1, 5 ep"), (NFR, "λ=-0.1, 10 ep"),
        (NFR, "λ=1, 10 ep"),                                  # the control at the longest only
        (FISHER, "memorize 5 ep"), (FISHER, "memorize 15 ep")]
    assert c[1][2] == dict(fisher_reg=-1.0, fisher_reg_epochs=10, fisher_reg_off="linear")
    assert c[5][2] == dict(data_schedule="fisher", subset=0.3, memorize_epochs=5, consolidate_epochs=10,
                           rerank_every=5)


def fake(acc, diverged=False):
    return SimpleNamespace(final={"test_acc": acc, "train_acc": 1.0},
                           diverged={"epoch": 1, "step": 3, "loss": math.nan} if diverged else None, config=None)


def selection_of(accs: dict, sparsities=(0.5, 0.9), diverged=()) -> dict:
    """Fake runs in grid order: accs maps a label to its validation accuracy (same at every sparsity)."""
    out = {}
    for s in sparsities:
        out[("Sol-S", "", s)] = fake(0.99)                   # plain Sol-S: never a candidate
        for remedy, label, _ in R.candidates(GRID):
            out[(remedy, label, s)] = fake(accs[label], diverged=label in diverged)
    return out


def test_choose_picks_the_best_validation_accuracy_never_the_control_nor_a_diverged_run():
    accs = {"λ=-1, 5 ep": 0.70, "λ=-1, 10 ep": 0.95, "λ=-0.1, 5 ep": 0.80, "λ=-0.1, 10 ep": 0.75,
            "λ=1, 10 ep": 0.99, "memorize 5 ep": 0.60, "memorize 15 ep": 0.65}
    chosen = R.choose(selection_of(accs, diverged={"λ=-1, 10 ep"}), GRID)
    assert set(chosen) == {(NFR, 0.5), (NFR, 0.9), (FISHER, 0.5), (FISHER, 0.9)}
    grid = {(r, label): f for r, label, f in R.candidates(GRID)}
    for s in (0.5, 0.9):
        assert chosen[(NFR, s)] == {"label": "λ=-0.1, 5 ep", "fields": grid[(NFR, "λ=-0.1, 5 ep")], "val_acc": 0.80}
        assert chosen[(FISHER, s)] == {"label": "memorize 15 ep", "fields": grid[(FISHER, "memorize 15 ep")],
                                       "val_acc": 0.65}


def test_choose_ties_go_to_the_first_in_grid_order():
    accs = {"λ=-1, 5 ep": 0.70, "λ=-1, 10 ep": 0.80, "λ=-0.1, 5 ep": 0.80, "λ=-0.1, 10 ep": 0.80,
            "λ=1, 10 ep": 0.80, "memorize 5 ep": 0.65, "memorize 15 ep": 0.65}
    chosen = R.choose(selection_of(accs), GRID)
    assert chosen[(NFR, 0.5)]["label"] == "λ=-1, 10 ep"
    assert chosen[(FISHER, 0.9)]["label"] == "memorize 5 ep"


def test_choose_leaves_out_a_remedy_whose_candidates_all_diverged():
    accs = dict.fromkeys([label for _, label, _ in R.candidates(GRID)], 0.5)
    chosen = R.choose(selection_of(accs, diverged={"memorize 5 ep", "memorize 15 ep"}), GRID)
    assert set(chosen) == {(NFR, 0.5), (NFR, 0.9)}
    # only the control left: nothing chosen either
    negative = {label for r, label, f in R.candidates(GRID) if r == NFR and f["fisher_reg"] < 0}
    chosen = R.choose(selection_of(accs, diverged=negative), GRID)
    assert set(chosen) == {(FISHER, 0.5), (FISHER, 0.9)}


# ------------------------------------------------------------------------------------------- verdicts

PICKED = {"generalization": 0.5, "optimization": 0.9}


def gaps_table(rows, over=None) -> pd.DataFrame:
    """rows: (regime, remedy, metric, gain, gain_lo, gain_hi); the other columns filled in. ``over``: per
    (regime, remedy, metric), the gain over the random schedule (estimate, lo, hi)."""
    out = []
    for regime, remedy, metric, gain, lo, hi in rows:
        o = (over or {}).get((regime, remedy, metric), (math.nan, -math.inf, math.inf))
        out.append({"regime": regime, "sparsity": PICKED[regime], "remedy": remedy, "metric": metric, "seeds": 3,
                    "gain": gain, "gain_lo": lo, "gain_hi": hi, "p_value": 0.01, "gap": 0.04,
                    "share": gain / 0.04, "share_lo": math.nan if lo < 0 else 0.1,
                    "share_hi": math.nan if lo < 0 else 0.9,
                    "over_random": o[0], "over_random_lo": o[1], "over_random_hi": o[2]})
    return pd.DataFrame(out)


def regimes_rows(remedy, gen, opt, *, other_metric=(0.05, 0.04, 0.06)):
    """gen/opt: (gain, lo, hi) on each regime's own metric; the other metric gets ``other_metric``."""
    return [("generalization", remedy, "test_acc", *gen), ("generalization", remedy, "train_acc", *other_metric),
            ("optimization", remedy, "train_acc", *opt), ("optimization", remedy, "test_acc", *other_metric)]


CLEAR, UNCLEAR, HURTS = (0.02, 0.01, 0.03), (0.01, -0.005, 0.025), (-0.02, -0.03, -0.01)
NONE = (0.001, -0.004, 0.006)          # inside ±1 point (the margin): no effect


@pytest.mark.parametrize("gen, opt, status", [
    (CLEAR, CLEAR, "tested: helps"),
    (CLEAR, UNCLEAR, "tested: helps"),          # helps in one regime, hurts in none
    (HURTS, CLEAR, "inconclusive"),             # helps in one, hurts in the other
    (UNCLEAR, HURTS, "tested: hurts"),
    (UNCLEAR, UNCLEAR, "inconclusive"),         # compatible with a gain of a point and with none
    (NONE, NONE, "tested: no effect"),          # every effect of a point or more excluded
    (NONE, UNCLEAR, "inconclusive"),
])
def test_verdict_regularizer_status(gen, opt, status):
    """P-S4 is not a claim of the paper: its verdicts are tested: helps / no effect / hurts, or inconclusive."""
    v = R.verdict_regularizer(gaps_table(regimes_rows(NFR, gen, opt)), PICKED, {}, seeds=(0, 1, 2))
    assert v.status == status
    assert v.claim_id == "P-S4" and v.part == "i" and v.seeds == (0, 1, 2)
    assert len(v.reasons) == 3
    # the key effect (the first evidence line, which the ledger shows) is the one that decided a helps / hurts:
    # the generalization regime's unless only the optimization regime has the overall status
    first = "optimization" if status == "tested: hurts" and gen != HURTS else "generalization"
    assert v.key_effect.name.startswith(f"{NFR} − plain Sol-S, {first} regime")
    assert v.key_effect.effect.estimate == (gen if first == "generalization" else opt)[0]
    assert v.key_effect.effect.method == "paired t"
    assert "generalization regime" in v.finding and "optimization regime" in v.finding
    assert v.finding.index(f"{first} regime") < v.finding.index(
        f"{'optimization' if first == 'generalization' else 'generalization'} regime")


def test_the_box_shows_first_the_effect_that_decided_its_status():
    """The cpu build's case of P-S4 (ii): +0.30% [−0.49, 1.08] in the generalization regime (inconclusive: wider
    than the ±1-point margin) and a clear loss in the optimization regime. The rule says hurts (hurts in one
    regime, helps in none); the box must not open with the inconclusive effect that did not decide it."""
    gen, opt = (0.0030, -0.0049, 0.0108), HURTS
    rows = regimes_rows(FISHER, gen, opt) + regimes_rows(RANDOM, NONE, NONE)
    over = {("generalization", FISHER, "test_acc"): (0.002, -0.004, 0.008),
            ("optimization", FISHER, "train_acc"): (-0.02, -0.03, -0.01)}
    v = R.verdict_schedule(gaps_table(rows, over), PICKED, {})
    assert v.status == "tested: hurts"
    assert v.key_effect.name.startswith(f"{FISHER} − plain Sol-S, optimization regime")
    assert v.key_effect.effect.hi < 0
    regimes = [("optimization" if ", optimization regime" in e.name else "generalization") for e in v.evidence]
    assert regimes == sorted(regimes, key=lambda r: r != "optimization")   # the deciding regime's lines first
    assert v.finding.index("optimization regime") < v.finding.index("generalization regime")
    assert v.finding.endswith("it hurts in one regime and helps in neither.")
    # helps and no-effect / inconclusive verdicts keep the regimes in their order
    v = R.verdict_regularizer(gaps_table(regimes_rows(NFR, UNCLEAR, UNCLEAR)), PICKED, {})
    assert v.status == "inconclusive" and ", generalization regime" in v.key_effect.name


def test_remedy_margin_is_one_point():
    assert R.REMEDY_MARGIN == 0.01


def test_verdicts_judge_each_regime_on_its_own_metric():
    # clear gains on the wrong metric of each regime (train in generalization, test in optimization) do not count
    rows = regimes_rows(NFR, UNCLEAR, UNCLEAR, other_metric=CLEAR)
    assert R.verdict_regularizer(gaps_table(rows), PICKED, {}).status == "inconclusive"


def test_verdict_with_a_missing_regime_does_not_count_it():
    rows = regimes_rows(NFR, CLEAR, CLEAR)[:2]          # no run of the regularizer finished at s=0.9
    v = R.verdict_regularizer(gaps_table(rows), PICKED, {})
    assert v.status == "tested: helps"
    assert any("no run of" in r for r in v.reasons)
    rows = regimes_rows(NFR, NONE, NONE)[:2]            # no effect where measured is not "no effect" overall
    assert R.verdict_regularizer(gaps_table(rows), PICKED, {}).status == "inconclusive"


@pytest.mark.parametrize("fisher, random_gains, status", [
    ((CLEAR, CLEAR), (0.0, 0.0), "tested: helps"),
    ((CLEAR, CLEAR), (0.02, 0.0), "tested: helps"),     # random as good as Fisher in generalization: that regime
    ((CLEAR, CLEAR), (0.0, 0.03), "tested: helps"),     # is inconclusive, the other still helps
    ((CLEAR, CLEAR), (0.05, 0.05), "inconclusive"),     # the random schedule does it: the ranking is not shown to
    ((CLEAR, UNCLEAR), (0.0, 0.0), "tested: helps"),
    ((CLEAR, UNCLEAR), (0.03, 0.0), "inconclusive"),
    ((UNCLEAR, UNCLEAR), (-0.1, -0.1), "inconclusive"),
    ((HURTS, HURTS), (0.0, 0.0), "tested: hurts"),
])
def test_verdict_schedule_status(fisher, random_gains, status):
    rows = regimes_rows(FISHER, *fisher)
    rg, ro = random_gains
    rows += regimes_rows(RANDOM, (rg, rg - 0.01, rg + 0.01), (ro, ro - 0.01, ro + 0.01))
    rows += regimes_rows(DISAGREE, CLEAR, CLEAR)
    over = {("generalization", FISHER, "test_acc"): (fisher[0][0] - rg, fisher[0][0] - rg - 0.005,
                                                     fisher[0][0] - rg + 0.005),
            ("optimization", FISHER, "train_acc"): (fisher[1][0] - ro, fisher[1][0] - ro - 0.005,
                                                    fisher[1][0] - ro + 0.005)}
    v = R.verdict_schedule(gaps_table(rows, over), PICKED, {})
    assert v.status == status
    assert v.claim_id == "P-S4" and v.part == "ii"
    assert sum("random schedule" in r for r in v.reasons) == 2
    assert sum(e.name.startswith(f"{FISHER} − {RANDOM}") for e in v.evidence) == 2


def test_verdicts_from_gap_closed_and_chosen_settings():
    """The hand-made table through gap_closed into the verdicts."""
    table = hand_table()
    gaps = R.gap_closed(table)
    chosen = {(NFR, 0.5): {"label": "λ=-0.1, 5 ep", "fields": {}, "val_acc": 0.81},
              (FISHER, 0.5): {"label": "memorize 5 ep", "fields": {}, "val_acc": 0.8}}
    v = R.verdict_regularizer(gaps, PICKED, chosen)
    g = gaps.set_index(["regime", "remedy", "metric"])
    expected = {}
    for regime, metric in (("generalization", "test_acc"), ("optimization", "train_acc")):
        r = g.loc[(regime, NFR, metric)]
        expected[regime] = remedy_status(stats_interval(r), R.REMEDY_MARGIN)
    assert v.status == R._overall(expected)
    assert any("λ=-0.1, 5 ep" in r for r in v.reasons)
    v = R.verdict_schedule(gaps, PICKED, chosen)
    assert any("memorize 5 ep" in r for r in v.reasons)


def stats_interval(r):
    from sparsegap.stats import Interval
    return Interval(r.gain, r.gain_lo, r.gain_hi, int(r.seeds), int(r.seeds) - 1, "paired t")


def test_gap_closed_compares_each_remedy_with_the_random_schedule_paired():
    table = hand_table()
    rnd = table[table.variant == FISHER].assign(variant=RANDOM)
    rnd["test_acc"] = rnd.test_acc - 0.01 * (1 + rnd.seed % 2)     # the random schedule 1 or 2 points lower
    gaps = R.gap_closed(pd.concat([table, rnd], ignore_index=True)).set_index(["regime", "remedy", "metric"])
    row = gaps.loc[("generalization", FISHER, "test_acc")]
    assert row.over_random == pytest.approx(0.015)
    assert row.over_random_lo > 0                               # paired: the seed scatter cancels
    assert math.isnan(gaps.loc[("generalization", RANDOM, "test_acc")].over_random)


# ------------------------------------------------------------------------------------------- configs

def smoke_params() -> dict:
    """The notebook's parameters cell merged with the smoke profile, checked as the notebook checks them."""
    nb = json.loads((ROOT / "notebooks" / "12_remedies.ipynb").read_text())
    cell, = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    tree = ast.parse("".join(cell["source"]))
    values = {t.targets[0].id: ast.literal_eval(t.value) for t in tree.body if isinstance(t, ast.Assign)}
    values |= yaml.safe_load((ROOT / "notebooks" / "params" / "smoke" / "12_remedies.yaml").read_text())
    return R.PARAMETERS.check(values, show=False)


@pytest.fixture(scope="module")
def p():
    p = smoke_params()
    # the setting the assertions below rely on: an extra seed beyond chapter 1's, and Tr(F) tracked there
    assert set(p["seeds"]) < set(p["remedy_seeds"]) and p["fisher_every"] > 0
    return p


def test_selection_configs(p):
    st = R.setting(p)
    picked = {"generalization": 0.5, "optimization": 0.9}
    sel = R.selection_configs(p, picked)
    cands = R.candidates(p)
    assert len(sel) == len(picked) * (1 + len(cands))
    parents = {c.parent for c in sel.values()}
    assert len(parents) == 1
    dense, = parents
    assert dense.kind == "dense" and dense.parent is None and dense.seed == p["select_seed"]
    assert dense.data.validation == p["validation"] > 0
    assert dense.data == dataclasses.replace(st.data, validation=p["validation"])
    assert dense.model == st.model and dense.train == st.train
    for (remedy, label, s), c in sel.items():
        assert c.kind == "scratch" and c.sparsity == s and s in picked.values()
        assert c.data == dense.data and c.model == dense.model          # the same data as its parent
        assert c.seed == p["select_seed"] and c.exclude_output == p["exclude_output"]
        if remedy == "Sol-S":
            assert label == "" and c.train == st.train
        else:
            fields = {(r, lab): f for r, lab, f in cands}[(remedy, label)]
            assert c.train == dataclasses.replace(st.train, **fields)
    assert {(r, label) for r, label, _ in sel} == {("Sol-S", "")} | {(r, label) for r, label, _ in cands}


def chosen_for(p, picked, *, without=()):
    cands = R.candidates(p)
    nfr = next((label, f) for r, label, f in cands if r == NFR and f["fisher_reg"] < 0)
    fis = next((label, f) for r, label, f in cands if r == FISHER)
    out = {}
    for s in picked.values():
        out[(NFR, s)] = {"label": nfr[0], "fields": nfr[1], "val_acc": 0.5}
        out[(FISHER, s)] = {"label": fis[0], "fields": fis[1], "val_acc": 0.5}
    return {k: v for k, v in out.items() if k not in without}


def test_final_configs(p):
    st = R.setting(p)
    picked = {"generalization": 0.5, "optimization": 0.9}
    chosen = chosen_for(p, picked)
    final = R.final_configs(p, picked, chosen)
    seeds = p["remedy_seeds"]
    assert len(final) == len(seeds) * (1 + len(picked) * (2 + len(REMEDIES)))
    for seed in seeds:
        dense = final[("Sol-D", 0.0, seed)]
        assert dense.kind == "dense" and dense.seed == seed and dense.data == st.data
        assert dense.data.validation == 0                    # the comparison trains on the whole training set
        track = (f"fisher_trace@{p['fisher_every']}",) if seed in p["seeds"] else ()
        assert dense.track == track
        for s in picked.values():
            plain_s, plain_f = final[("Sol-S", s, seed)], final[("Sol-F", s, seed)]
            assert plain_s.kind == "scratch" and plain_f.kind == "finetune"
            assert plain_s.parent == plain_f.parent == dense
            assert plain_s.track == plain_f.track == track
            for remedy in REMEDIES:
                c = final[(remedy, s, seed)]
                # the same dense run and the same mask as plain Sol-S: only the training differs
                assert dataclasses.replace(c, train=plain_s.train, track=plain_s.track) == plain_s
                assert c.parent is dense or c.parent == dense
            nfr, fis = final[(NFR, s, seed)], final[(FISHER, s, seed)]
            assert nfr.train == dataclasses.replace(st.train, **chosen[(NFR, s)]["fields"])
            assert fis.train == dataclasses.replace(st.train, **chosen[(FISHER, s)]["fields"])
            # the baselines take the Fisher schedule's phases, only the ranking differs
            for remedy, kind in ((DISAGREE, "disagree"), (RANDOM, "random")):
                b = final[(remedy, s, seed)].train
                assert b.data_schedule == kind
                assert dataclasses.replace(b, data_schedule="fisher") == fis.train
                assert (b.subset, b.memorize_epochs, b.consolidate_epochs, b.rerank_every) == (
                    p["subset"], fis.train.memorize_epochs, p["consolidate_epochs"], p["rerank_every"])


def test_final_configs_share_chapter_ones_runs(p):
    """The plain runs of chapter 1's seeds are its configs (its trackers included), so they load from the store."""
    st = R.setting(p)
    picked = {"generalization": 0.5, "optimization": 0.9}
    final = R.final_configs(p, picked, chosen_for(p, picked))
    chapter_one = two_regime_configs(st.data, st.model, st.train, p["sparsities"], p["seeds"],
                                     exclude_output=p["exclude_output"], track=st.track)
    for seed in p["seeds"]:
        for key in [("Sol-D", 0.0, seed)] + [(stage, s, seed) for stage in R.PLAIN for s in picked.values()]:
            assert final[key] == chapter_one[key]
    extra = [seed for seed in p["remedy_seeds"] if seed not in p["seeds"]]
    assert extra
    for seed in extra:
        assert all(c.track == () for (v, s, sd), c in final.items() if sd == seed)
        assert all(c.track == () and (c.parent is None or c.parent.track == ())
                   for (v, s, sd), c in final.items() if sd == seed)


def test_final_configs_skip_a_remedy_with_nothing_chosen(p):
    picked = {"generalization": 0.5, "optimization": 0.9}
    final = R.final_configs(p, picked, chosen_for(p, picked, without={(FISHER, 0.9)}))
    for seed in p["remedy_seeds"]:
        assert (NFR, 0.9, seed) in final and (FISHER, 0.5, seed) in final
        for remedy in (FISHER, DISAGREE, RANDOM):
            assert (remedy, 0.9, seed) not in final


# ------------------------------------------------------------------------------------ Tr(F) of a solution

def test_fisher_of_measures_on_measure_size_samples_and_caches_each_size_apart(tmp_path):
    import torch

    from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from sparsegap.metrics.fisher import fisher_trace
    from sparsegap.runs import RunStore, get_or_train, load_data
    from sparsegap.studies.procedure import measurement_data
    cfg = RunConfig("dense", DataConfig("tishby", train_size=200), ModelConfig("mlp", hidden=(8,)),
                    TrainConfig(epochs=1, batch_size=50, lr=0.05), seed=0)
    run = get_or_train(cfg, RunStore(tmp_path), progress=False)
    data = load_data(cfg.data)
    x, _ = measurement_data(data.x_train, data.y_train, 30, seed=0)
    expected = fisher_trace(run.model(), x, labels="sampled", generator=torch.Generator().manual_seed(0))
    assert R.fisher_of(run, size=30) == pytest.approx(expected, rel=1e-12)
    whole = R.fisher_of(run)
    assert whole != R.fisher_of(run, size=30)                       # not the subset's value, cached or not
    assert R.fisher_of(run, size=len(data.x_train)) == whole        # every sample: the same measurement
    assert len(list((run.path / "measurements").glob("final_fisher-*.json"))) == 2
    with pytest.raises(ValueError, match="measure_size=0 must be None"):
        R.fisher_of(run, size=0)


def test_page_phrases_and_paper_table_quote_the_verdicts_numbers():
    """The summary's glued phrases and the paper-vs-ours rows are the verdicts' own numbers, in points."""
    from sparsegap.tables import paper_vs_ours
    table = hand_table()
    gaps = R.gap_closed(table)
    chosen = {(NFR, 0.5): {"label": "λ=-0.1, 5 ep", "fields": {}, "val_acc": 0.81}}
    cost = pd.DataFrame([{"remedy": NFR, "sparsity": 0.5, "setting": "λ=-0.1, 5 ep", "run_cost": 1.84}])
    v_reg, v_sched = R.verdict_regularizer(gaps, PICKED, chosen), R.verdict_schedule(gaps, PICKED, chosen)
    values = page.page_values(v_reg, v_sched, table, PICKED, cost)
    assert values["nfr-status"] == page.STATUS_WORDS[v_reg.status]
    e = v_reg.key_effect.effect
    assert values["nfr-effect"].startswith(f"{100 * e.estimate:+.2f}".replace("-", "−") + " points [95% CI ")
    assert values["nfr-cost"] == "1.8×" and values["schedule-cost"] == "–"
    assert values["gap-generalization"].startswith("+5.25 points") and "test accuracy at s = 0.5" in \
        values["gap-generalization"]
    assert values["schedule-over-random"] == "not measured"      # no random schedule in the hand-made table
    rows = page.paper_vs_ours_rows(v_reg, v_sched, gaps, table, PICKED, cost)
    t = paper_vs_ours(rows)
    assert len(t.rows) == 5 and all("not tested" in r[1] for r in t.rows[:3])
    assert page.effect_phrase(v_reg, words=False) in t.rows[0][2]
    judged = page.gains_rows(gaps, judged=True)
    assert set(judged.metric) == {"test_acc", "train_acc"}
    assert (judged.metric == judged.regime.map(R.REGIME_METRIC)).all()
    assert R.Interval(0.003, -math.inf, math.inf, 1, 0.0, "paired t").points() == "+0.30 points (no interval: 1 seed)"


def test_a_fisher_regularizer_trains_eagerly_whatever_compile_mode_is():
    from sparsegap.config import TrainConfig
    compiled = TrainConfig(compile="reduce-overhead")
    assert R.remedy_train(compiled, fisher_reg=-0.1, fisher_reg_epochs=5).compile == "off"
    assert R.remedy_train(compiled, data_schedule="fisher", subset=0.3, memorize_epochs=5).compile == "reduce-overhead"
    assert R.remedy_train(TrainConfig(), fisher_reg=-0.1, fisher_reg_epochs=5).hash() == TrainConfig(
        fisher_reg=-0.1, fisher_reg_epochs=5).hash()
