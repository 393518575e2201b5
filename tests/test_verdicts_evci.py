"""The verdict rules of chapters 9, 10 and 11 (Evci et al. 2019 and 2022: E-F1, E-F3 to E-F8, G-1 to G-3) on
made-up per-seed numbers whose answer is known: each rule tests what the paper says, with paired 95%
intervals where the runs share a seed, and says "inconclusive" when the seeds cannot decide."""

import json
import math

import pandas as pd
import pytest

from sparsegap.claims import CLAIMS
from sparsegap.runs import Run
from sparsegap.studies import difficulty as dif
from sparsegap.studies import energy as en
from sparsegap.studies import gradient_flow as gf

SEEDS = (0, 1, 2)
# A per-seed offset shared by every solution of a seed (one Init-D, one mask), and a small noise of its own.
SEED_SHIFT = {0: -0.03, 1: 0.0, 2: 0.03}
NOISE = {0: 0.002, 1: -0.001, 2: -0.001}


def fake_results(acc: dict, seeds=SEEDS, shared=SEED_SHIFT, noise=NOISE):
    """Results whose runs end at ``acc[(key, sparsity)]`` plus the seed's shared shift and a small noise that
    differs between keys (so that paired differences are not exactly constant)."""
    runs = {}
    for i, ((key, s), a) in enumerate(acc.items()):
        for seed in seeds:
            v = a + shared.get(seed, 0.0) + noise.get(seed, 0.0) * (-1.0, 1.0, 0.5, -0.5)[i % 4]
            runs[(key, s, seed)] = Run(None, None, {"train_acc": [v], "test_acc": [v]}, {}, {}, None)
    return dif.Results(runs)


def _check(v, status, claim_id):
    assert v.status == status, (v.status, v.finding, [e.text for e in v.evidence], v.reasons)
    assert v.claim_id == claim_id and v.finding and v.finding.endswith(".")
    json.dumps(v.to_dict())  # the ledger reads it back


# ----------------------------------------------------------------------------------------- E-F1 (a)

def test_gap_rule_pairs_the_seeds_and_puts_the_key_gap_first():
    res = fake_results({("P-S", 0.9): 0.85, ("L-S", 0.9): 0.82, ("S-S", 0.9): 0.81,
                        ("P-S", 0.98): 0.80, ("L-S", 0.98): 0.75, ("S-S", 0.98): 0.74})
    v = dif.gap_verdict(res, [0.9, 0.98], 0.9)
    _check(v, "reproduced", "E-F1")
    assert v.part == "a" and v.seeds == SEEDS
    key = v.key_effect
    assert key.name == "P-S − S-S, test accuracy, s = 0.98" and key.effect.method == "paired t"
    assert key.effect.estimate == pytest.approx(0.06, abs=0.005) and key.effect.n == 3 and key.paper
    assert all(e.outcome == "holds" for e in v.evidence) and len(v.evidence) == 4
    assert any("smallest gap these seeds detect" in r for r in v.reasons)
    # the seeds' shared shift (±3 points) is much larger than the gap's noise: only pairing sees the gap
    from sparsegap import stats
    _, x, y = res.paired(("P-S", 0.98), ("S-S", 0.98))
    assert not stats.welch_difference(x, y).clear and stats.paired_difference(x, y).clear


def test_gap_rule_says_inconclusive_with_the_detectable_gap_when_every_gap_is_within_noise():
    """E-F1 (a): "when all gaps are within noise, the verdict says so" (it said "not reproduced")."""
    noisy = {0: 0.02, 1: -0.03, 2: 0.01}
    res = fake_results({("P-S", 0.9): 0.80, ("L-S", 0.9): 0.80, ("S-S", 0.9): 0.801}, noise=noisy)
    v = dif.gap_verdict(res, [0.9], 0.9)
    _check(v, "inconclusive", "E-F1")
    assert "within noise" in v.finding and "smallest effect these 3 seeds detect" in v.finding
    assert all(e.outcome == "undecided" for e in v.evidence)


def test_gap_rule_not_reproduced_only_when_pruning_is_clearly_behind():
    res = fake_results({("P-S", 0.9): 0.75, ("L-S", 0.9): 0.80, ("S-S", 0.9): 0.81})
    _check(dif.gap_verdict(res, [0.9], 0.9), "not reproduced", "E-F1")
    half = fake_results({("P-S", 0.9): 0.85, ("L-S", 0.9): 0.85, ("S-S", 0.9): 0.70},
                        noise={0: 0.02, 1: -0.03, 2: 0.01})
    _check(dif.gap_verdict(half, [0.9], 0.9), "partly", "E-F1")


def test_gap_rule_with_one_seed_or_no_high_sparsity_is_inconclusive():
    one = fake_results({("P-S", 0.9): 0.85, ("L-S", 0.9): 0.80, ("S-S", 0.9): 0.78}, seeds=(0,))
    v = dif.gap_verdict(one, [0.9], 0.9)
    _check(v, "inconclusive", "E-F1")
    assert "can detect no effect" in v.finding and math.isinf(v.key_effect.effect.hi)
    _check(dif.gap_verdict(one, [0.8], 0.9), "inconclusive", "E-F1")


# ----------------------------------------------------------------------------------- E-F1 (b), E-F5

def test_sparse_init_dense_matches_dense_within_the_tolerance():
    """The paper: sparse-init dense reaches the dense network's accuracy (App. B): it must not be clearly worse
    than dense by more than the tolerance."""
    small = {0: 0.001, 1: -0.0005, 2: -0.0005}
    ok = fake_results({("dense", 0.0): 0.85, ("sparse-init dense", 0.9): 0.848}, noise=small)
    v = dif.init_verdict(ok, [0.9], 0.01)
    _check(v, "reproduced", "E-F1")
    assert v.part == "b" and v.key_effect.effect.method == "paired t"
    worse = fake_results({("dense", 0.0): 0.85, ("sparse-init dense", 0.9): 0.70})
    _check(dif.init_verdict(worse, [0.9], 0.01), "not reproduced", "E-F1")
    noisy = fake_results({("dense", 0.0): 0.85, ("sparse-init dense", 0.9): 0.84}, noise={0: 0.05, 1: -0.04, 2: 0.0})
    v = dif.init_verdict(noisy, [0.9], 0.01)
    _check(v, "inconclusive", "E-F1")
    assert "cannot tell" in v.finding


def test_zeroed_init_flat_up_to_99_percent_then_a_drop():
    zero = fake_results({(0.0, 0.0): 0.85, (0.9, 0.9): 0.85, (0.99, 0.99): 0.848, (0.999, 0.999): 0.6},
                        noise={0: 0.001, 1: -0.0005, 2: -0.0005})
    v = dif.zero_verdict(zero, [0.9, 0.99, 0.999], 0.01)
    _check(v, "reproduced", "E-F5")
    assert v.key_effect.name.startswith("drop in test accuracy, 0 → 0.999") and v.key_effect.outcome == "holds"
    early = fake_results({(0.0, 0.0): 0.85, (0.9, 0.9): 0.70, (0.999, 0.999): 0.6})
    _check(dif.zero_verdict(early, [0.9, 0.999], 0.01), "partly", "E-F5")
    no_drop = fake_results({(0.0, 0.0): 0.85, (0.9, 0.9): 0.85, (0.999, 0.999): 0.85})
    _check(dif.zero_verdict(no_drop, [0.9, 0.999], 0.01), "partly", "E-F5")   # flat holds, the drop fails
    # without a fraction above 0.99 the drop cannot be tested: at most partly
    v = dif.zero_verdict(zero, [0.9, 0.99], 0.01)
    _check(v, "partly", "E-F5")
    assert "cannot be tested" in v.finding


# ---------------------------------------------------------------------------------------- G-1, G-2, G-3

def _norms(init: dict, during: dict, seeds=SEEDS):
    rows = []
    for sol in set(init) | set(during):
        for seed in seeds:
            # a large per-seed factor shared by the solutions, and a small one of each solution's own
            j = 1 + 0.2 * (seed - 1) + 0.01 * ((seed + len(sol)) % 3 - 1)
            rows.append({"solution": sol, "sparsity": 0.9, "seed": seed, "epochs": 0.0,
                         "grad_norm": init.get(sol, 1.0) * j})
            for e in (1.0, 2.0):
                rows.append({"solution": sol, "sparsity": 0.9, "seed": seed, "epochs": e,
                             "grad_norm": during.get(sol, 1.0) * j})
    return pd.DataFrame(rows)


def test_gradient_norm_rules_of_g1():
    norms = _norms({"S-S": 0.1, "S-S unit": 1.0}, {"S-S": 0.2, "SET": 0.5, "RigL": 0.6})
    v = gf.init_verdict(norms, [0.9])
    _check(v, "reproduced", "G-1")
    assert v.part == "a" and v.key_effect.effect.method == "paired t" and v.seeds == SEEDS
    _check(gf.dst_verdict(norms, [0.9]), "reproduced", "G-1")
    lower = _norms({"S-S": 1.0, "S-S unit": 0.5}, {"S-S": 0.5, "SET": 0.2, "RigL": 0.6})
    _check(gf.init_verdict(lower, [0.9]), "not reproduced", "G-1")
    _check(gf.dst_verdict(lower, [0.9]), "partly", "G-1")
    flat = _norms({"S-S": 1.0, "S-S unit": 1.0}, {})
    v = gf.init_verdict(flat, [0.9])
    _check(v, "inconclusive", "G-1")
    assert "Within noise" in v.finding


def test_rigl_rule_is_inconclusive_without_a_gap_to_close():
    """G-2: "when there is no gap to close, the verdict is inconclusive (precondition failed)"."""
    no_gap = fake_results({("P-S", 0.9): 0.80, ("S-S", 0.9): 0.80, ("RigL", 0.9): 0.70, ("SET", 0.9): 0.70},
                          noise={0: 0.02, 1: -0.03, 2: 0.01})
    v = gf.rigl_verdict(no_gap, [0.9])
    _check(v, "inconclusive", "G-2")
    assert "no gap for RigL to close" in v.finding and any("Precondition failed" in r for r in v.reasons)
    assert v.key_effect.name.startswith("P-S − S-S") and v.seeds == SEEDS
    # P-S clearly *below* S-S is no gap either
    below = fake_results({("P-S", 0.9): 0.70, ("S-S", 0.9): 0.80, ("RigL", 0.9): 0.60, ("SET", 0.9): 0.70})
    _check(gf.rigl_verdict(below, [0.9]), "inconclusive", "G-2")


def test_rigl_rule_with_a_gap():
    res = fake_results({("P-S", 0.9): 0.85, ("S-S", 0.9): 0.75, ("RigL", 0.9): 0.80, ("SET", 0.9): 0.77})
    v = gf.rigl_verdict(res, [0.9])
    _check(v, "reproduced", "G-2")
    assert v.key_effect.name == "RigL − S-S, test accuracy, s = 0.9" and v.key_effect.outcome == "holds"
    share = next(e for e in v.evidence if e.name.startswith("share of the gap"))
    assert share.effect.method == "fieller" and share.effect.estimate == pytest.approx(0.5, abs=0.05)
    behind = fake_results({("P-S", 0.9): 0.85, ("S-S", 0.9): 0.75, ("RigL", 0.9): 0.70, ("SET", 0.9): 0.77})
    _check(gf.rigl_verdict(behind, [0.9]), "not reproduced", "G-2")


def test_lottery_rule_pairs_ls_and_ss_of_one_pruned_solution():
    pairs = pd.DataFrame([{"pair": p, "sparsity": 0.9, "seed": s, "distance": d + 0.5 * s + 0.01 * (s == 1),
                           "disagreement": g + 0.02 * s + 0.001 * (s == 2), "ensemble_accuracy": 0.8}
                          for p, d, g in (("L-S ↔ P-S", 1.0, 0.05), ("S-S ↔ P-S", 8.0, 0.2)) for s in SEEDS])
    v = gf.lottery_verdict(pairs)
    _check(v, "reproduced", "G-3")
    assert v.key_effect.name.startswith("L2 distance to P-S, S-S − L-S") and v.key_effect.effect.method == "paired t"
    swapped = pairs.assign(pair=pairs.pair.map({"L-S ↔ P-S": "S-S ↔ P-S", "S-S ↔ P-S": "L-S ↔ P-S"}))
    _check(gf.lottery_verdict(swapped), "not reproduced", "G-3")


# ------------------------------------------------------------------------------------ E-F3, E-F4, E-F8

def _paths(height, *, noise=(0.0, 0.0, 0.0), seeds=SEEDS, **cols):
    return pd.DataFrame([{"t": t, "subset": "train", "seed": s, **cols,
                          "loss": 0.2 + 0.1 * s + (height + noise[i]) * 4 * t * (1 - t)}
                         for t in (0.0, 0.25, 0.5, 0.75, 1.0) for i, s in enumerate(seeds)])


def test_barrier_rule_uses_the_interval_of_the_heights_not_twice_a_spread():
    assert en.barrier(_paths(0.5)[lambda d: d.seed == 0]) == pytest.approx(0.5)
    line = _paths(0.5, noise=(0.01, -0.02, 0.0), path="line")
    v = en.line_verdict(line, 0.01)
    _check(v, "reproduced", "E-F4")
    assert v.part == "a" and v.key_effect.effect.method == "t" and v.key_effect.effect.n == 3
    # no barrier: every seed's height is clearly below the floor (the old rule said only "no barrier")
    _check(en.line_verdict(_paths(0.0, noise=(0.001, 0.0, -0.001), path="line"), 0.01), "not reproduced", "E-F4")
    # one seed with a high bump, two without: the seeds cannot decide
    v = en.line_verdict(_paths(0.0, noise=(0.5, 0.0, 0.0), path="line"), 0.01)
    _check(v, "inconclusive", "E-F4")
    assert "detect" in v.finding


def test_curves_and_cubic_rules():
    both = pd.concat([_paths(0.3, noise=(0.01, -0.01, 0.0), path="quadratic, sparse"),
                      _paths(0.0, noise=(0.001, -0.001, 0.0), path="quadratic, dense"),
                      _paths(0.2, noise=(0.0, 0.01, -0.01), path="cubic, sparse")])
    v = en.curves_verdict(both, 0.01)
    _check(v, "reproduced", "E-F4")
    assert [e.outcome for e in v.evidence[:2]] == ["holds", "holds"] and v.evidence[2].name.startswith("barrier height, sparse")
    flat = both.assign(path=both.path.map({"quadratic, sparse": "quadratic, dense", "quadratic, dense": "quadratic, sparse",
                                           "cubic, sparse": "cubic, sparse"}))
    _check(en.curves_verdict(flat, 0.01), "not reproduced", "E-F4")
    v = en.cubic_verdict(both, 0.01)
    _check(v, "reproduced", "E-F8")
    assert v.evidence[1].name == "barrier height, cubic − quadratic sparse curve"


def test_monotone_paths_rule():
    ramp = pd.DataFrame([{"t": t, "subset": "train", "seed": s, "start": st, "loss": 2 - t + 0.1 * s}
                         for t in (-0.2, 0.0, 0.5, 1.0, 1.2) for s in SEEDS
                         for st in ("dense init", "dense init on the mask", "random sparse init")])
    v = en.init_verdict(ramp)
    _check(v, "reproduced", "E-F3")
    assert "9 of 9 paths" in v.finding
    bump = ramp.assign(loss=ramp.loss + 0.8 * ((ramp.t == 0.5) & (ramp.start == "dense init")))
    _check(en.init_verdict(bump), "partly", "E-F3")
    one = bump.assign(loss=bump.loss - 0.8 * ((bump.t == 0.5) & (bump.seed > 0) & (bump.start == "dense init")))   # one seed of three rises
    v = en.init_verdict(one)
    _check(v, "partly", "E-F3")
    assert v.key_effect.outcome == "undecided"


# ----------------------------------------------------------------------------------------------- E-F6/7

def _norm_table(init, sol, seeds=SEEDS, masked=0.5):
    """‖θ‖₂ per seed: P-S, L-S, S-S end at ``sol``; Init-D is ``init``, the sparse starts ``masked`` × it."""
    rows = []
    for s in seeds:
        f = 1 + 0.3 * s                      # a large per-seed factor, shared by the networks of the seed
        rows += [{"seed": s, "network": n, "norm": v * f + 0.01 * (s == 1) * (i % 2)} for i, (n, v) in enumerate(
            (("P-S", sol), ("L-S", sol), ("S-S", sol), ("dense init", init), ("dense init on the mask", init * masked),
             ("random sparse init", init * masked)))]
    return pd.DataFrame(rows)


def test_e_f6_7_is_a_claim_with_a_verdict_on_the_norms():
    """Appendix C: "the solutions found are consistently of lower weight magnitude than their initialization",
    read off Fig. 6, the L2 term along the paths from the three starts to P-S."""
    assert CLAIMS["E-F6/7"].verdict and not CLAIMS["E-F6/7"].shown_in
    v = en.norm_verdict(_norm_table(20.0, 8.0))
    _check(v, "reproduced", "E-F6/7")
    assert v.key_effect.name == "‖P-S‖₂ − ‖dense init‖₂" and v.key_effect.effect.method == "paired t"
    assert v.key_effect.effect.estimate < 0 and v.key_effect.paper and v.seeds == SEEDS
    assert [e.outcome for e in v.evidence] == ["holds"] * 3 + ["", ""]     # L-S and S-S beside, no verdict
    assert "40% of Init-D's" in v.finding
    # smaller than Init-D but larger than the sparse starts: partly
    _check(en.norm_verdict(_norm_table(20.0, 12.0, masked=0.3)), "partly", "E-F6/7")
    _check(en.norm_verdict(_norm_table(12.0, 20.0)), "not reproduced", "E-F6/7")
    _check(en.norm_verdict(_norm_table(20.0, 12.0, seeds=(0,))), "inconclusive", "E-F6/7")


# ------------------------------------------------------------------------------------------ the settings

@pytest.mark.parametrize("stem", ["09_difficulty_of_sparse_training", "10_gradient_flow", "11_energy_landscape"])
def test_three_seeds_in_the_cpu_and_paper_profiles(stem):
    from pathlib import Path

    import nbformat
    import yaml
    root = Path(__file__).resolve().parents[1]
    cell = next(c for c in nbformat.read(root / "notebooks" / f"{stem}.ipynb", as_version=4).cells
                if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cell.source, namespace)
    assert len(namespace["seeds"]) >= 3
    assert len(yaml.safe_load((root / "notebooks" / "params" / "paper" / f"{stem}.yaml").read_text())["seeds"]) >= 3
