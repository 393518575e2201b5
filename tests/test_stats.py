"""sparsegap.stats against scipy.stats on known cases, and the outcome rules every verdict uses."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from sparsegap import stats
from sparsegap.verdict import Evidence, Verdict, status_of, remedy_status


def test_mean_interval_is_scipys_t_interval():
    x = [0.71, 0.74, 0.69, 0.73]
    iv = stats.mean_interval(x)
    lo, hi = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert (iv.lo, iv.hi) == pytest.approx((lo, hi), rel=1e-12)
    assert iv.df == 3 and iv.n == 4 and iv.method == "t"


def test_paired_difference_matches_ttest_rel_and_its_interval():
    a, b = np.array([0.80, 0.83, 0.79]), np.array([0.78, 0.80, 0.78])
    iv = stats.paired_difference(a, b)
    res = sps.ttest_rel(a, b)
    ci = res.confidence_interval(0.95)
    assert (iv.lo, iv.hi) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert iv.clear == (res.pvalue < 0.05)


def test_welch_difference_matches_scipys_welch_test():
    a, b = [0.80, 0.83, 0.79, 0.84], [0.70, 0.76, 0.71]
    iv = stats.welch_difference(a, b)
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (iv.lo, iv.hi) == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_two_standard_errors_from_two_seeds_is_not_clear_at_95_percent():
    # the old rule ("gap > 2 standard errors") called this clear; with 1 degree of freedom it is ~70% confidence
    a, b = [0.80, 0.82], [0.78, 0.79]
    se = math.sqrt(np.var(a, ddof=1) / 2 + np.var(b, ddof=1) / 2)
    assert np.mean(a) - np.mean(b) > 2 * se
    assert not stats.welch_difference(a, b).clear
    assert not stats.paired_difference(a, b).clear


def test_one_seed_decides_nothing():
    assert stats.mean_interval([0.5]).lo == -math.inf
    assert stats.paired_difference([0.9], [0.1]).test() == "undecided"
    assert stats.detectable_effect(0.01, 1, paired=True) == math.inf


def test_outcomes_of_a_claimed_direction():
    up = stats.Interval(0.02, 0.01, 0.03, 3, 2, "paired t")
    down = stats.Interval(-0.02, -0.03, -0.01, 3, 2, "paired t")
    wide = stats.Interval(0.0, -0.05, 0.05, 3, 2, "paired t")
    tight = stats.Interval(0.0, -0.004, 0.004, 3, 2, "paired t")
    assert up.test(1) == "holds" and down.test(-1) == "holds"
    assert down.test(1) == "fails" and up.test(-1) == "fails"
    assert wide.test(1) == "undecided"
    # an interval that excludes every effect of the claimed size contradicts the claim
    assert tight.test(1, margin=0.01) == "fails" and wide.test(1, margin=0.01) == "undecided"


def test_ratio_interval_contains_the_ratio_and_matches_a_paired_test_at_its_ends():
    d = np.array([0.010, 0.020, 0.015, 0.012])
    g = np.array([0.10, 0.12, 0.11, 0.09])
    iv = stats.ratio_interval(d, g)
    assert iv.lo < d.mean() / g.mean() < iv.hi
    for theta in (iv.lo, iv.hi):   # at its ends the paired t-test of d - θ g sits exactly at p = 0.05
        assert sps.ttest_1samp(d - theta * g, 0).pvalue == pytest.approx(0.05, rel=1e-6)


def test_detectable_effect_against_a_simulation():
    # paired design: with the computed effect, the t-interval excludes zero in about 80% of experiments
    n, sd = 5, 1.0
    mde = stats.detectable_effect(sd, n, paired=True)
    rng = np.random.default_rng(0)
    hits = np.mean([stats.mean_interval(rng.normal(mde, sd, n)).lo > 0 for _ in range(4000)])
    assert 0.72 < hits < 0.86     # the t+t approximation of the noncentral t power, within simulation noise


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="as many values in a as in b"):
        stats.paired_difference([1, 2], [1])
    with pytest.raises(ValueError, match="finite"):
        stats.mean_interval([1.0, float("nan")])
    with pytest.raises(ValueError, match="level"):
        stats.mean_interval([1, 2], level=95)
    with pytest.raises(ValueError, match="direction"):
        stats.Interval(0, 0, 0, 1, 1, "t").test(0)


def test_status_rules():
    assert status_of(["holds", "holds"]) == "reproduced"
    assert status_of(["holds", "undecided"]) == "partly"
    assert status_of(["fails", "undecided"]) == "not reproduced"
    assert status_of(["undecided", "undecided"]) == "inconclusive"
    with pytest.raises(ValueError, match="outcomes"):
        status_of(["maybe"])
    iv = stats.Interval
    assert remedy_status(iv(0.02, 0.01, 0.03, 3, 2, "paired t"), 0.01) == "tested: helps"
    assert remedy_status(iv(-0.02, -0.03, -0.01, 3, 2, "paired t"), 0.01) == "tested: hurts"
    assert remedy_status(iv(0.0, -0.005, 0.005, 3, 2, "paired t"), 0.01) == "tested: no effect"
    assert remedy_status(iv(0.0, -0.05, 0.05, 3, 2, "paired t"), 0.01) == "inconclusive"


def test_a_verdict_carries_its_evidence_as_data():
    ev = Evidence("Sol-F − Sol-S, test accuracy", stats.paired_difference([0.8, 0.82, 0.81], [0.7, 0.73, 0.7]),
                  ".1%", paper="+9 points", outcome="holds")
    v = Verdict("P-F1", "claim", "reproduced", ("a reason",), "scale", finding="Sol-F leads.", evidence=(ev,),
                seeds=(0, 1, 2))
    d = v.to_dict()
    assert d["evidence"][0]["effect"]["n"] == 3 and d["seeds"] == [0, 1, 2]
    assert Verdict.from_dict(d).to_dict() == d
    assert v.key_effect is ev
    html = v._repr_html_()
    assert html.index("Sol-F leads.") < html.index("Verdict P-F1") and "paper: +9 points" in html
    with pytest.raises(ValueError, match="status"):
        Verdict("P-F1", "claim", "clearly reproduced")


def test_seed_summary_gives_means_spreads_and_t_intervals_per_group():
    import pandas as pd
    t = pd.DataFrame({"s": [0.9, 0.9, 0.9, 0.95, 0.95], "acc": [0.7, 0.72, 0.74, 0.5, 0.6]})
    out = stats.seed_summary(t, ["s"], ["acc"], ci=True).set_index("s")
    assert out.loc[0.9, "acc"] == pytest.approx(0.72) and out.loc[0.9, "acc_std"] == pytest.approx(0.02)
    assert out.loc[0.9, "seeds"] == 3
    iv = stats.mean_interval([0.7, 0.72, 0.74])
    assert (out.loc[0.9, "acc_lo"], out.loc[0.9, "acc_hi"]) == pytest.approx((iv.lo, iv.hi))


def test_an_interval_knows_what_its_design_detects_and_how_many_seeds_an_effect_needs():
    rng = np.random.default_rng(1)
    d = rng.normal(0.01, 0.02, 3)
    iv = stats.mean_interval(d)
    sd = float(np.std(d, ddof=1))
    assert iv.standard_error == pytest.approx(sd / math.sqrt(3))
    assert iv.detectable() == pytest.approx(stats.detectable_effect(sd, 3, paired=True))
    need = iv.seeds_needed(0.01)
    assert stats.detectable_effect(sd, need, paired=True) <= 0.01 < stats.detectable_effect(sd, need - 1, paired=True)
    w = stats.welch_difference([1.0, 1.2, 1.1], [0.9, 1.0, 0.8])
    assert w.detectable() > abs(w.estimate) * 0 and math.isfinite(w.detectable())
    assert stats.mean_interval([0.3]).detectable() == math.inf and stats.mean_interval([0.3]).seeds_needed(0.1) is None
    s = iv.shifted(0.5)
    assert (s.lo, s.hi, s.estimate) == pytest.approx((iv.lo + 0.5, iv.hi + 0.5, iv.estimate + 0.5))


def test_the_detectable_line_and_all_of():
    from sparsegap.verdict import all_of, detectable_line
    iv = stats.paired_difference([0.80, 0.83, 0.79], [0.79, 0.80, 0.80])
    line = detectable_line("gap", iv, ".1%")
    assert line.startswith("With 3 seeds the smallest gap these seeds detect (80% power) is ")
    assert "seeds would decide one of the size measured" in line
    assert "no gap can be detected" in detectable_line("gap", stats.paired_difference([0.8], [0.7]))
    assert all_of(["holds", "holds"]) == "holds" and all_of(["holds", "undecided"]) == "undecided"
    assert all_of(["holds", "fails"]) == "fails" and all_of([]) == "undecided"


def test_interval_in_words_points_and_mapped():
    import math

    from sparsegap.stats import Interval

    iv = Interval(0.003, -0.0049, 0.0108, 3, 2.0, "paired t")
    assert iv.points() == "+0.30 points [95% CI −0.49, +1.08]"
    assert iv.points(1, words=False) == "+0.3 [−0.5, +1.1]"
    assert iv.words(".2f") == "0.00 [95% CI −0.00, 0.01]"
    assert Interval(0.003, -math.inf, math.inf, 1, 0.0, "paired t").points() == "+0.30 points (no interval: 1 seed)"
    assert Interval.exact(0.25).words(".2f", unit=" s") == "0.25 s"
    assert Interval(math.nan, math.nan, math.nan, 0, math.nan, "t").points() == "not measured"
    r = Interval(-0.3, -1.0, 0.5, 3, 2.0, "t").mapped(lambda v: 10 ** v)
    assert (r.lo, r.hi, r.n, r.method) == (0.1, 10 ** 0.5, 3, "t")
    assert r.words(".2g") == "0.5 [95% CI 0.1, 3.2]"
