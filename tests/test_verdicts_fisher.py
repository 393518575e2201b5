"""The verdict rules of chapters 2, 4, 6 and 12 on hand-made per-seed tables: each rule tests what the paper
says (issue 22), with 95% intervals over seeds, and says *inconclusive* when a precondition fails."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sparsegap import stats
from sparsegap.studies import fisher_trajectory as ft

# ----------------------------------------------------------------------------- chapter 2: P-F3 and P-T1

REGIMES = pd.DataFrame({"sparsity": [0.5, 0.9], "regime": ["generalization", "optimization"]})


def trends(*, gen_final_s=8.0, gen_final_f=4.0, dense_final=2.0, gen_drop=0.6, opt_drop=0.05, opt_peak=9.5,
           opt_acc=0.8, gen_acc=1.0, seeds=(0, 1, 2)):
    """Per-seed trajectories with a small scatter (chance 0.5: a binary task)."""
    rows = []
    for seed in seeds:
        j = 1 + 0.02 * (seed - 1)
        rows += [("Sol-D", 0.0, seed, 1.0, 0.1, 3.0 * j, dense_final * j, 0.3),
                 ("Sol-S", 0.5, seed, gen_acc, 0.1, 20.0 * j, gen_final_s * j, gen_drop * j),
                 ("Sol-F", 0.5, seed, 1.0, 0.1, 6.0 * j, gen_final_f * j, 0.3),
                 ("Sol-S", 0.9, seed, opt_acc, 0.1, opt_peak * j, opt_peak * 0.95 * j, opt_drop * j),
                 ("Sol-F", 0.9, seed, 1.0, 0.1, 4.0 * j, 3.0 * j, 0.25)]
    return pd.DataFrame(rows, columns=["stage", "sparsity", "seed", "train_acc", "initial", "peak", "final", "drop"]
                        ).assign(chance=0.5)


def test_fisher_trajectory_reproduced_when_both_shapes_hold_over_seeds():
    v = ft.fisher_trajectory_verdict(trends(), REGIMES)
    assert v.status == "reproduced" and v.seeds == (0, 1, 2)
    assert v.key_effect.name.startswith("log10 final Tr(F), Sol-S − Sol-D")
    assert v.key_effect.effect.n == 3 and v.key_effect.outcome == "holds"
    assert any("smallest effect" in r for r in v.reasons)


def test_fisher_trajectory_is_inconclusive_when_sol_s_never_leaves_chance():
    """P-F3: a Sol-S that stays at chance in the optimization regime has a flat trajectory that says nothing of
    'rises and hardly falls': the claim cannot be tested there, and the verdict says so with the seed count."""
    v = ft.fisher_trajectory_verdict(trends(opt_acc=0.5, opt_peak=0.1), REGIMES)
    assert v.status == "inconclusive"
    assert "cannot be tested" in v.finding and "3 of 3 seeds" in v.finding and "optimization" in v.finding
    assert any(r.startswith("Precondition failed") for r in v.reasons)
    # at chance everywhere: inconclusive too, never "not reproduced"
    v = ft.fisher_trajectory_verdict(trends(opt_acc=0.5, gen_acc=0.52), REGIMES)
    assert v.status == "inconclusive" and "3 of 3 seeds stay at chance at every sparsity" in v.finding
    # a missing regime is a failed precondition as well
    v = ft.fisher_trajectory_verdict(trends(), REGIMES.assign(regime="generalization"))
    assert v.status == "inconclusive" and "no optimization regime" in v.finding


def test_fisher_trajectory_p_t1_compares_with_sol_f_as_table_1_does():
    """P-T1: Sol-S's final Tr(F) above Sol-F's (Table 1), not above Sol-D's. Here Sol-S ends above Sol-D but below
    Sol-F: P-F3 holds, P-T1's generalization part fails."""
    t = trends(gen_final_s=3.0, gen_final_f=6.0, dense_final=1.0)
    assert ft.fisher_trajectory_verdict(t, REGIMES, claim_id="P-F3").status == "reproduced"
    v = ft.fisher_trajectory_verdict(t, REGIMES, claim_id="P-T1")
    assert v.status == "partly"
    assert v.key_effect.name.startswith("log10 final Tr(F), Sol-S − Sol-F") and v.key_effect.outcome == "fails"
    assert v.key_effect.effect.estimate == pytest.approx(math.log10(3 / 6))


def test_fisher_trajectory_parts_fail_on_the_wrong_shape():
    # the optimization regime's Tr(F) comes back down: that part fails; the generalization part holds
    assert ft.fisher_trajectory_verdict(trends(opt_drop=0.9), REGIMES).status == "partly"
    # and the generalization regime's does not come down either: nothing holds
    assert ft.fisher_trajectory_verdict(trends(opt_drop=0.9, gen_drop=0.05), REGIMES).status == "not reproduced"


def test_fisher_trajectory_with_one_seed_is_inconclusive_not_a_crash():
    v = ft.fisher_trajectory_verdict(trends(seeds=(0,)), REGIMES)
    assert v.status == "inconclusive" and v.seeds == (0,)


# ------------------------------------------------------------------------------ chapter 4: P-F4 and P-F5

def noise_history(memorized, test_acc, fisher_noisy, fisher_clean):
    """A history with the chapter's traces: one value per epoch 0..E (trackers), test accuracy per epoch 1..E."""
    epochs = [float(e) for e in range(len(memorized))]

    def trace(v):
        return {"epoch": list(range(len(v))), "step": list(range(len(v))), "epochs": epochs[:len(v)], "value": list(v)}
    return {"epoch": list(range(1, len(test_acc) + 1)), "test_acc": list(test_acc),
            "trace": {"accuracy:permuted": trace(memorized), "fisher_trace:permuted": trace(fisher_noisy),
                      "fisher_trace:unpermuted": trace(fisher_clean)}}


def noisy_runs(*, s_test=(0.66, 0.70, 0.72), d_test=(0.60, 0.62, 0.60), f_test=(0.55, 0.57, 0.56),
               s_fisher=(1, 20, 30, 31), f_fisher=(10, 30, 15, 12), seed_shift=(0.0, 0.03, -0.02)):
    """Three seeds; every solution of one seed shares that seed's shift (their Sol-D is one network), so the
    seeds scatter by more than the per-seed differences."""
    def runs(mem, test, fn, fc):
        return [noise_history([m + d for m in mem], [t + d + 0.001 * i for t in test],
                              [x * (1 + d) for x in fn], [x * (1 + d) for x in fc])
                for i, d in enumerate(seed_shift)]
    return {"Sol-D": runs([0.1, 0.4, 0.7, 0.8], d_test, [10, 40, 20, 15], [5, 10, 8, 7]),
            "Sol-F": runs([0.6, 0.8, 0.9, 0.95], f_test, f_fisher, [5, 8, 6, 6]),
            "Sol-S": runs([0.05, 0.1, 0.2, 0.3], s_test, s_fisher, [1, 10, 12, 12])}


def test_memorization_rules_pair_the_solutions_of_a_seed():
    from sparsegap.studies import memorization as m
    a = m.memorization_verdict(noisy_runs(), threshold=0.5, seeds=[4, 5, 6])
    assert (a.claim_id, a.part, a.status) == ("P-F4", "a", "reproduced") and a.seeds == (4, 5, 6)
    assert a.key_effect.name.startswith("memorized share at the last epoch, Sol-F − Sol-S")
    assert a.key_effect.effect.method == "paired t" and a.key_effect.effect.n == 3
    assert a.key_effect.effect.estimate == pytest.approx(0.65)
    assert any("smallest difference" in r for r in a.reasons)


def test_robustness_headline_is_sol_s_against_sol_d_and_against_sol_f():
    """P-F4 (b): benign obliviscence is Sol-S testing above Sol-D (about +12%) and above Sol-F (about +10%):
    both comparisons are judged, Sol-D's first."""
    from sparsegap.studies import memorization as m
    b = m.robustness_verdict(noisy_runs())
    assert b.status == "reproduced"
    assert [e.name for e in b.evidence[:2]] == ["test accuracy at the last epoch, Sol-S − Sol-D",
                                                "test accuracy at the last epoch, Sol-S − Sol-F"]
    assert b.evidence[0].paper and b.evidence[1].paper
    assert b.evidence[0].effect.estimate == pytest.approx(0.72 - 0.60, abs=1e-9)
    # above Sol-F but below Sol-D: only half the headline
    b = m.robustness_verdict(noisy_runs(s_test=(0.58, 0.58, 0.58)))
    assert b.status == "partly"
    assert [e.outcome for e in b.evidence[:2]] == ["fails", "holds"]
    # level with both at every seed: the paired differences are zero, which neither supports nor contradicts it
    b = m.robustness_verdict(noisy_runs(s_test=(0.6, 0.62, 0.6), d_test=(0.6, 0.62, 0.6), f_test=(0.6, 0.62, 0.6)))
    assert b.status == "inconclusive"


def test_fisher_noise_rule_includes_sol_s_having_the_higher_fisher_trace():
    """P-F5 (Fig. 5's text): 'sparse scratch has a higher Fisher information': a Sol-S whose Tr(F) on the noisy
    samples ends below Sol-F's cannot reproduce the claim, whatever the noisy/clean ordering."""
    from sparsegap.studies import memorization as m
    c = m.fisher_noise_verdict(noisy_runs(), memorized=0.5, drop_threshold=0.3)
    assert c.claim_id == "P-F5" and c.status == "reproduced", c.reasons
    assert c.key_effect.name.startswith("log10 Tr(F) on the noisy samples at the end, Sol-S − Sol-F")
    low = m.fisher_noise_verdict(noisy_runs(s_fisher=(1, 5, 6, 6), f_fisher=(10, 30, 15, 12)),
                                 memorized=0.5, drop_threshold=0.3)
    assert low.status == "partly"
    assert low.key_effect.outcome == "fails"


# ----------------------------------------------------------------------------------- chapter 6: P-F11

def snr_table(*, s_mean, s_std, s_first=None, s_acc=0.95, seeds=(0, 1, 2)):
    """Sol-D and Sol-F with gradients of size 1 and std 1; Sol-S's given (first epoch mean: s_first)."""
    rows = []
    for stage in ("Sol-D", "Sol-F", "Sol-S"):
        for s in ((0.0,) if stage == "Sol-D" else (0.6, 0.95)):
            for seed in seeds:
                j = 1 + 0.05 * (seed - 1)                 # a seed scatter that the pairing cancels
                for e in (1.0, 2.0, 3.0, 4.0):
                    mean, std = (1.0, 1.0) if stage != "Sol-S" else (
                        s_first if (e == 1.0 and s_first is not None) else s_mean, s_std)
                    k = j * (1 + 0.001 * seed * (stage == "Sol-S"))
                    rows.append({"stage": stage, "sparsity": s, "seed": seed, "layer": "fc1", "epochs": e,
                                 "snr": mean / std, "mean": mean * k, "std": std * j,
                                 "train_acc": s_acc if stage == "Sol-S" else 1.0})
    return pd.DataFrame(rows)


def test_diffusion_compares_the_normalized_spread_not_the_raw_std():
    """P-F11 (a): a Sol-S whose gradients are half the size with half the std has a lower raw std but the same
    SNR: no less diffusion. The old rule (raw std) called it reproduced."""
    from sparsegap.studies import gradient_snr as gs
    t = snr_table(s_mean=0.5, s_std=0.5)
    assert t[(t.stage == "Sol-S")].groupby("seed")["std"].mean().max() < 1      # lower raw std
    v = gs.diffusion_verdict(t, 0.6)
    assert v.status != "reproduced"
    assert v.key_effect.name.startswith("log10 gradient SNR") and v.key_effect.effect.estimate == pytest.approx(0, abs=1e-3)
    # a relatively smaller spread (SNR twice as high) is less diffusion
    assert gs.diffusion_verdict(snr_table(s_mean=1.0, s_std=0.5), 0.6).status == "reproduced"
    # and a relatively larger one contradicts the claim
    assert gs.diffusion_verdict(snr_table(s_mean=1.0, s_std=2.0), 0.6).status == "not reproduced"


def test_diffusion_is_inconclusive_when_sol_s_has_not_trained():
    from sparsegap.studies import gradient_snr as gs
    v = gs.diffusion_verdict(snr_table(s_mean=1.0, s_std=0.5, s_acc=0.25), 0.95)
    assert v.status == "inconclusive"
    assert "has not trained" in v.finding and "3 of 3 seeds" in v.finding
    assert any(r.startswith("Precondition failed") for r in v.reasons)


def test_hike_rule_over_seeds():
    from sparsegap.studies import gradient_snr as gs
    v = gs.hike_verdict(snr_table(s_mean=0.5, s_std=1.0, s_first=0.05), 0.95)
    assert v.status == "reproduced" and v.seeds == (0, 1, 2) and v.key_effect.outcome == "holds"
    v = gs.hike_verdict(snr_table(s_mean=1.0, s_std=1.0, s_first=1.0), 0.95)
    assert v.status == "not reproduced"
    v = gs.hike_verdict(snr_table(s_mean=0.5, s_std=1.0, s_first=0.05, seeds=(0,)), 0.95)
    assert v.status == "inconclusive"
