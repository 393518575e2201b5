"""Verdict rules of chapters 1, 3 and 5 (P-F1, P-T2, P-F6, P-F7/8, P-F9/10) on made-up per-seed numbers:
each rule does what the paper says, on 95% intervals over seeds, and cannot decide from too few."""

import numpy as np
import pandas as pd
import pytest

from sparsegap.studies import paths as pt
from sparsegap.studies.curvature import curvature_summary, curvature_verdict
from sparsegap.studies.two_regimes import classify_regimes, two_regimes_verdict
from sparsegap.verdict import STATUSES

# ------------------------------------------------------------------ P-F1 (chapter 1)

# (train acc F, train acc S, test acc F, test acc S) per sparsity: a generalization regime, then an optimization one
FIG1 = {0.8: (1.0, 1.0, 0.85, 0.83), 0.9: (1.0, 0.998, 0.85, 0.82), 0.97: (0.99, 0.90, 0.83, 0.78),
        0.99: (0.95, 0.80, 0.80, 0.70)}


def fig1_table(seeds=(0, 1, 2), fig=FIG1, noise=0.003, seed_effect=0.02):
    """Per-seed final metrics; each seed shifts Sol-F and Sol-S alike (they share a Sol-D and a mask)."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in seeds:
        shift = seed_effect * (seed - 1)
        rows.append(dict(stage="Sol-D", sparsity=0.0, seed=seed, train_acc=1.0, test_acc=0.86 + shift,
                         test_loss=0.5, train_entropy=0.01))
        for s, (trf, trs, tef, tes) in fig.items():
            e = rng.normal(0, noise, 2)
            rows.append(dict(stage="Sol-F", sparsity=s, seed=seed, train_acc=trf, test_acc=tef + shift + e[0],
                             test_loss=0.5 - (tef + e[0]), train_entropy=0.02 + e[1] / 10))
            rows.append(dict(stage="Sol-S", sparsity=s, seed=seed, train_acc=trs - abs(e[1]) / 10,
                             test_acc=tes + shift + e[1], test_loss=0.5 - (tes + e[1]), train_entropy=0.05 + e[0] / 10))
    return pd.DataFrame(rows)


def regimes_of(table):
    summary = table.groupby(["stage", "sparsity"])[["train_acc", "test_acc", "test_loss", "train_entropy"]].mean()
    return classify_regimes(summary.reset_index())


def test_p_f1_reproduced_from_paired_seeds():
    t = fig1_table()
    v = two_regimes_verdict(regimes_of(t), t)
    assert v.status == "reproduced" and v.seeds == (0, 1, 2)
    assert v.evidence[0].name.startswith("Sol-F − Sol-S test accuracy, mean over")      # the key effect first
    assert v.evidence[0].effect.n == 3 and v.evidence[0].effect.method == "paired t"
    assert "points" in v.finding and "precedes" in v.finding
    assert any("smallest test-accuracy gap" in r for r in v.reasons)


def test_p_f1_pairs_sol_f_and_sol_s_of_one_seed():
    """A seed effect ten times the gap (each seed's Sol-D better or worse) does not hide a gap that every
    seed shows: the comparison is paired, Sol-F and Sol-S of one seed share their Sol-D."""
    t = fig1_table(seed_effect=0.2)
    assert two_regimes_verdict(regimes_of(t), t).evidence[0].effect.lo > 0


def test_p_f1_sol_s_clearly_better_at_one_sparsity_contradicts_at_every_sparsity():
    fig = dict(FIG1)
    fig[0.8] = (1.0, 1.0, 0.83, 0.86)            # Sol-S tests 3 points better at 0.8, in every seed
    t = fig1_table(fig=fig)
    v = two_regimes_verdict(regimes_of(t), t)
    assert v.evidence[0].outcome == "fails" and v.status == "partly"


def test_p_f1_a_sweep_without_an_optimization_regime_cannot_test_the_two_regimes():
    fig = {s: v for s, v in FIG1.items() if s < 0.95}
    t = fig1_table(fig=fig)
    v = two_regimes_verdict(regimes_of(t), t)
    assert v.status == "partly"
    assert any("cannot be tested" in r and "optimization regime" in r for r in v.reasons)


def test_p_f1_too_few_seeds_is_inconclusive():
    t = fig1_table(seeds=(0,))
    assert two_regimes_verdict(regimes_of(t), t).status == "inconclusive"
    # a summary of means (no seed column) is one "seed": nothing can be decided from it
    summary = t.groupby(["stage", "sparsity"])[["train_acc", "test_acc", "test_loss", "train_entropy"]].mean()
    assert two_regimes_verdict(regimes_of(t), summary.reset_index()).status == "inconclusive"


# ------------------------------------------------------------------ P-T2 (chapter 3)

def curvature_table(ratio=(3.0, 4.0, 1.3), seeds=(0, 1, 2), sparsities=(0.9, 0.95, 0.97), seed_scale=10.0,
                    noise=0.05):
    """Sol-S = ratio × Sol-F per seed (with a little noise), and seeds that differ by a factor ``seed_scale``."""
    rng = np.random.default_rng(1)
    rows = []
    for seed in seeds:
        scale = seed_scale ** (seed - 1)
        rows.append(("Sol-D", 0.0, seed, scale, scale, scale))
        for s in sparsities:
            f = np.array([2.0, 3.0, 4.0]) * scale
            rows += [("Sol-F", s, seed, *f),
                     ("Sol-S", s, seed, *(f * np.array(ratio) * np.exp(rng.normal(0, noise, 3))))]
    return pd.DataFrame(rows, columns=["stage", "sparsity", "seed", "fisher_trace", "hessian_trace", "jacobian_norm"])


def test_p_t2_is_a_paired_log_ratio_with_the_papers_numbers():
    t = curvature_table()
    v = curvature_verdict(t)
    assert v.status == "reproduced" and v.seeds == (0, 1, 2)
    assert [e.name.split(",")[0] for e in v.evidence] == [
        "log10 (Sol-S / Sol-F) Tr(F)", "log10 (Sol-S / Sol-F) Tr(H)", "log10 (Sol-S / Sol-F) Jacobian norm"]
    assert v.evidence[0].effect.estimate == pytest.approx(np.log10(3.0), abs=0.05)
    assert v.evidence[0].paper.startswith("0.61 (×4.1")       # Table 2, mean over its three sparsities
    assert "×3.0" in v.finding or "×2.9" in v.finding or "×3.1" in v.finding


def test_p_t2_one_measurement_clearly_lower_contradicts_the_claim():
    t = curvature_table(ratio=(3.0, 4.0, 0.7))     # Sol-S's Jacobian norm lower at every sparsity
    v = curvature_verdict(t)
    assert v.status == "partly" and v.evidence[2].outcome == "fails"
    assert curvature_verdict(curvature_table(ratio=(0.5, 0.5, 0.5))).status == "not reproduced"


def test_p_t2_one_seed_cannot_decide():
    """The old rule called one seed whose Sol-S means exceed Sol-F's reproduced; one seed decides nothing."""
    assert curvature_verdict(curvature_table(seeds=(0,))).status == "inconclusive"


def test_curvature_summary_takes_its_spread_from_stats():
    t = curvature_table(seeds=(0, 1), seed_scale=1.0, noise=0.0)
    t["hessian_trace_se"] = 0.1
    out = curvature_summary(t)
    assert out.loc[("Sol-F", 0.9), "Tr(F)"] == "2 ± 0" and out.loc[("Sol-S", 0.9), "Tr(F)"] == "6 ± 0 ↑"


# ------------------------------------------------------------------ P-F6, P-F7/8 (chapter 5)

def path_table(losses_by_seed):
    return pd.DataFrame([{"alpha": a, "subset": "train", "loss": loss, "seed": s}
                         for s, losses in losses_by_seed.items()
                         for a, loss in zip(np.linspace(0, 1, len(losses)), losses)])


def test_p_f6_monotone_on_every_seed():
    down = {s: 2.3 * np.exp(-np.linspace(0, 4 + 0.1 * s, 6)) for s in range(3)}
    v = pt.path_verdict(path_table(down))
    assert v.status == "reproduced" and v.evidence[0].effect.hi < 0.01
    bump = {s: np.r_[2.3, 1.5, 2.0 + 0.05 * s, 0.8, 0.4, 0.1] for s in range(3)}
    assert pt.path_verdict(path_table(bump)).status == "not reproduced"
    assert pt.path_verdict(path_table({0: down[0]})).status == "inconclusive"      # one seed decides nothing


def test_p_f7_8_excess_over_random_subsets():
    y = np.repeat(np.arange(10), 100)
    rng = np.random.default_rng(0)
    skewed = [np.bincount(rng.choice(3, 50), minlength=10) for _ in range(3)]           # classes 0-2 only
    flat = [np.bincount(rng.choice(y, 50, replace=False), minlength=10) for _ in range(3)]
    flat2 = [np.bincount(rng.choice(y, 50, replace=False), minlength=10) for _ in range(3)]
    v = pt.classes_verdict({0.3: skewed, 0.9: flat}, y, 50, 100)
    assert v.status == "reproduced" and v.seeds == (0, 1, 2)
    assert pt.classes_verdict({0.3: flat, 0.9: flat2}, y, 50, 100).status in ("not reproduced", "inconclusive")


# ------------------------------------------------------------------ P-F9/10 (chapter 5)

# Fashion-MNIST: any two networks disagree mostly on T-shirt/top (0), pullover (2), coat (4) and shirt (6)
CONFUSED = np.array([0.18, 0.01, 0.2, 0.04, 0.2, 0.02, 0.3, 0.02, 0.01, 0.02])


def disagreement_counts(p_sf, p_ff, n_sf=1500, n_ff=800, seeds=3, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    draw = lambda p, n: rng.multinomial(n, p / p.sum())  # noqa: E731
    counts = [{"train": draw(p_sf, n_sf), "test": draw(p_sf, n_sf)} for _ in range(seeds)]
    baseline = [{"train": draw(p_ff, n_ff), "test": draw(p_ff, n_ff)} for _ in range(seeds)]
    return counts, baseline


LABELS = {"train": np.repeat(np.arange(10), 400), "test": np.repeat(np.arange(10), 1000)}
NAMES = pt.class_names("fashion-mnist", 10)


def test_p_f9_10_classes_every_model_confuses_are_not_a_finding():
    """Sol-S-vs-Sol-F disagreements as concentrated on shirt/T-shirt/pullover/coat as two Sol-F seeds' are:
    far from the data's class distribution (the old rule, against random subsets, called this skewed), but not
    skewed beyond the seed-vs-seed baseline: no class counts, and the claim is not reproduced."""
    counts, baseline = disagreement_counts(CONFUSED, CONFUSED)
    y = LABELS["train"]
    hist = np.bincount(y, minlength=10)
    old_rule_skewed = pt.tv(counts[0]["train"], hist) > np.quantile(pt.random_tv(y, 1500, hist, 50), 0.95)
    assert old_rule_skewed
    v = pt.disagreement_verdict(counts, baseline, LABELS, 50, names=NAMES)
    assert v.status == "not reproduced"
    assert "classes concentrated beyond the baseline: none" in " ".join(v.reasons)
    assert [e.outcome for e in v.evidence] == ["fails", "fails"] and len(v.evidence) == 2
    assert "beyond where two Sol-F seeds disagree" in v.finding


def test_p_f9_10_a_class_counts_only_beyond_the_baseline():
    """Sol-S-vs-Sol-F disagreements with shirt (6) and pullover (2) raised beyond the baseline: reproduced, and
    those classes count on both splits, while T-shirt and coat (as concentrated as in the baseline) do not."""
    p = CONFUSED.copy()
    p[6] += 0.25
    p[2] += 0.15
    counts, baseline = disagreement_counts(p, CONFUSED)
    v = pt.disagreement_verdict(counts, baseline, LABELS, 50, names=NAMES, seeds=(0, 1, 2))
    assert v.status == "reproduced" and v.seeds == (0, 1, 2)
    assert [e.outcome for e in v.evidence[:2]] == ["holds", "holds"]
    counted = {e.name.split(" class ")[1].split(",")[0] for e in v.evidence[2:]}
    assert counted == {"Shirt", "Pullover"}
    assert "Classes concentrated beyond the baseline on both splits: Pullover, Shirt." in v.reasons


def test_p_f9_10_needs_a_seed_vs_seed_baseline():
    counts, baseline = disagreement_counts(CONFUSED, CONFUSED, seeds=1)
    v = pt.disagreement_verdict(counts, [], LABELS, 20)
    assert v.status == "inconclusive" and "baseline" in v.finding
    counts, baseline = disagreement_counts(CONFUSED * 0 + 0.1, CONFUSED, seeds=2)      # two seeds: no crash
    assert pt.disagreement_verdict(counts, baseline, LABELS, 20).status in STATUSES


def test_seed_pairs_give_one_baseline_pair_per_seed():
    assert pt.seed_pairs([0, 1, 2]) == [(0, 1), (1, 2), (2, 0)]
    assert pt.seed_pairs([3]) == []
