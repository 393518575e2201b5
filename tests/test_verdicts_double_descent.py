"""Chapters 7 and 8 (seed 001, D-F1 to D-F7): each verdict rule does what the paper says, on made-up
per-seed numbers whose answer is known. Rounds of one chain share a seed (and the dense run), so the
rules pair them; a re-dense run pairs with its own seed's sparse run."""

import numpy as np
import pandas as pd
import pytest

from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig, imp_chain
from sparsegap.runs import Run
from sparsegap.studies import double_descent as dd
from sparsegap.studies import redense as rd

TRAIN = TrainConfig(epochs=2)
FITS = [1.0, 1.0, 1.0, 1.0, 0.9, 0.7, 0.5, 0.4]          # train accuracy by round (clean share at ε=0.4: 0.6)
DD = [0.70, 0.68, 0.60, 0.55, 0.62, 0.75, 0.72, 0.20]     # a double descent: dip at 3, peak at 5


def chains_of(curves: dict, seeds=(0, 1, 2), noise_sd=0.0, best=None, rng=0):
    """Fake chains: ``curves`` maps (heuristic, ε) to (test, train) lists by round; each (round, seed) gets
    its own noise of sd ``noise_sd`` (so paired differences keep a spread); best-epoch test accuracy is
    ``best`` (by round) or the last epoch's."""
    g = np.random.default_rng(rng)
    runs = {}
    for (h, eps), (test, train) in curves.items():
        data = DataConfig("digits", train_size=100, noise=eps)
        for seed in seeds:
            dense = RunConfig("dense", data, ModelConfig("mlp", hidden=(8,)), TRAIN, seed=seed)
            cfgs = [dense, *imp_chain(dense, len(test) - 1, prune_rate=0.5)]
            for r, cfg in enumerate(cfgs):
                t = test[r] + g.normal(0, noise_sd)
                trace = {k: {"epoch": [1, 2], "step": [1, 2], "epochs": [1.0, 2.0], "value": [0.5, v]}
                         for k, v in (("accuracy:permuted", train[r]), ("accuracy:unpermuted", 0.95),
                                      ("accuracy:restored", 0.3))}
                history = {"epoch": [1, 2], "train_acc": [0.5, train[r]],
                           "test_acc": [max(t, best[r]) if best else 0.1, t], "trace": trace}
                runs[(h, eps, r, seed)] = Run(cfg, None, history, {}, {}, None)
    return dd.Chains(runs)


def summary_chain(test, train, best=None):
    return pd.DataFrame({"test_acc": test, "train_acc": train, "test_best": best or test,
                         "sparsity": 1 - 0.5 ** np.arange(len(test))})


# ------------------------------------------------------------------------- D-F2: characteristic rounds

def test_underfitting_is_sparser_than_the_sweet_spot_and_tests_below_dense():
    """The issue's case: the old rule called round 6 'underfitting' although it tests above dense (and at
    other noise levels it came before the sweet spot). Underfitting is where both the best and the last
    test accuracy suffer, after the sweet spot."""
    keys = dd.characteristic_rounds(summary_chain(DD, FITS), 0.4)
    assert keys == {"dense": 0, "overfitting": 3, "sweet spot": 5, "underfitting": 7}
    # the old rule's case: train accuracy falls below 1 - ε before the test peak
    early_drop = [1.0, 1.0, 0.9, 0.5, 0.45, 0.4, 0.35, 0.3]
    keys = dd.characteristic_rounds(summary_chain(DD, early_drop), 0.4)
    assert keys["overfitting"] == 2 and keys["sweet spot"] == 5 and keys["underfitting"] == 7


@pytest.mark.parametrize("seed", range(40))
def test_characteristic_rounds_keep_the_order_of_sparsity(seed):
    g = np.random.default_rng(seed)
    n = int(g.integers(2, 12))
    test = g.uniform(0.1, 0.9, n)
    train = np.sort(g.uniform(0.2, 1.0, n))[::-1]
    best = test + g.uniform(0, 0.1, n)
    keys = dd.characteristic_rounds(summary_chain(list(test), list(train), list(best)), 0.4)
    order = [keys[k] for k in dd.CHARACTERISTIC]
    present = [r for r in order if r is not None]
    assert present == sorted(set(present)) and present[0] == 0
    assert order[:len(present)] == present                  # a missing round is never followed by a present one
    if keys["underfitting"] is not None:
        u, s = keys["underfitting"], keys["sweet spot"]
        assert test[u] < min(test[0], test[s]) and best[u] < min(best[0], best[s])
    if keys["overfitting"] is not None:
        assert train[keys["overfitting"]] >= 0.6 and train[0] >= 0.6


def test_no_round_that_fits_means_no_overfitting_round():
    keys = dd.characteristic_rounds(summary_chain(DD, [0.5] * 8), 0.4)    # the dense network does not fit
    assert keys == {"dense": 0, "overfitting": None, "sweet spot": None, "underfitting": None}


# ------------------------------------------------------------------------------- D-F1: the double descent

def test_double_descent_is_reproduced_with_an_interior_peak_and_shows_early_stopping():
    v = dd.double_descent_verdict(chains_of({("magnitude", 0.4): (DD, FITS)}, noise_sd=0.003,
                                            best=[0.8] * 8))
    assert v.status == "reproduced" and v.seeds == (0, 1, 2)
    assert v.key_effect.name.startswith("magnitude, ε = 0.4: sweet spot") and v.key_effect.outcome == "holds"
    assert v.key_effect.effect.lo > 0 and v.key_effect.effect.n == 3
    early = [e for e in v.evidence if "early-stopped" in e.name]
    assert early and early[0].outcome == "" and early[0].effect.estimate == pytest.approx(0.75 - 0.8, abs=0.01)
    assert any("smallest" in r for r in v.reasons) and "1 of 1 chains" in v.finding


def test_a_best_round_at_the_last_sparsity_is_no_peak():
    """The descent after a peak at the sweep's last point is unobserved: that chain cannot show the
    double descent (undecided), however far above dense it tests."""
    rising = [0.70, 0.68, 0.60, 0.55, 0.62, 0.70, 0.75, 0.80]
    v = dd.double_descent_verdict(chains_of({("magnitude", 0.4): (rising, FITS)}, noise_sd=0.003))
    assert v.status == "inconclusive"
    assert v.key_effect.outcome == "undecided" and v.key_effect.effect.lo > 0
    assert any("last sparsity tested" in r for r in v.reasons)


def test_a_peak_within_the_seeds_scatter_is_undecided_not_a_peak():
    small = [0.70, 0.68, 0.60, 0.55, 0.62, 0.705, 0.69, 0.20]
    v = dd.double_descent_verdict(chains_of({("magnitude", 0.4): (small, FITS)}, noise_sd=0.02, rng=3))
    assert v.status == "inconclusive" and v.key_effect.outcome == "undecided"


def test_extreme_noise_is_context_and_does_not_drag_the_verdict_down():
    flat = [0.30, 0.28, 0.26, 0.24, 0.22, 0.20, 0.18, 0.10]              # no double descent at ε = 0.8
    fits = [1.0] * 6 + [0.1, 0.1]
    v = dd.double_descent_verdict(chains_of({("magnitude", 0.4): (DD, FITS), ("magnitude", 0.8): (flat, fits)},
                                            noise_sd=0.003))
    assert v.status == "reproduced"
    extreme = [e for e in v.evidence if "ε = 0.8" in e.name]
    assert extreme and all(e.outcome == "" for e in extreme) and "context" in extreme[0].name
    # without the exclusion, the same chain would contradict the claim
    assert dd.double_descent_verdict(chains_of({("magnitude", 0.8): (flat, fits)}, noise_sd=0.003),
                                     extreme=0.9).status == "not reproduced"


def test_a_monotone_fall_contradicts_the_double_descent():
    fall = [0.70, 0.69, 0.66, 0.63, 0.60, 0.58, 0.56, 0.20]
    v = dd.double_descent_verdict(chains_of({("magnitude", 0.4): (fall, FITS)}, noise_sd=0.003))
    assert v.status == "not reproduced" and v.key_effect.outcome == "fails"


def test_one_seed_gives_inconclusive_not_a_crash():
    v = dd.double_descent_verdict(chains_of({("magnitude", 0.4): (DD, FITS)}, seeds=(0,)))
    assert v.status == "inconclusive"
    assert dd.memorization_verdict(chains_of({("magnitude", 0.4): (DD, FITS)}, seeds=(0,)),
                                   "magnitude", 0.4).status == "inconclusive"


# ---------------------------------------------------------------------------------- D-F3: memorization

def test_memorization_verdict_is_inconclusive_without_a_sweet_spot():
    v = dd.memorization_verdict(chains_of({("magnitude", 0.4): (DD, [0.5] * 8)}), "magnitude", 0.4)
    assert v.status == "inconclusive" and "no overfitting round" in v.finding


# ----------------------------------------------------------------------------------- chapter 8 tables

def redense_table(sparse_test, redense_test, sparse_perm, redense_perm, sd=0.005, seeds=(0, 1, 2), rng=0):
    g = np.random.default_rng(rng)
    rows = []
    for seed in seeds:
        for r in range(len(sparse_test)):
            e = lambda: g.normal(0, sd)  # noqa: E731
            rows.append({"round": r, "seed": seed, "sparsity": 1 - 0.5 ** r,
                         "sparse_test_acc": sparse_test[r] + e(), "redense_test_acc": redense_test[r] + e(),
                         "sparse_permuted": sparse_perm[r] + e(), "redense_permuted": redense_perm[r] + e()})
    return pd.DataFrame(rows)


KEYS = {"dense": 0, "overfitting": 2, "sweet spot": 4, "underfitting": 5}


def test_redense_verdict_pairs_each_seeds_sparse_and_redense_runs():
    n = 6
    worse = redense_table([0.7] * n, [0.6] * n, [0.2] * n, [0.9] * n)
    v = rd.redense_verdict(worse, KEYS)
    assert v.status == "reproduced" and v.key_effect.effect.estimate == pytest.approx(0.1, abs=0.02)
    better = redense_table([0.6] * n, [0.7] * n, [0.2] * n, [0.9] * n)
    assert rd.redense_verdict(better, KEYS).status == "partly"
    same = redense_table([0.7] * n, [0.7] * n, [0.5] * n, [0.5] * n, sd=0.05)
    assert rd.redense_verdict(same, KEYS).status == "inconclusive"
    assert rd.redense_verdict(worse, KEYS | {"sweet spot": None}).status == "inconclusive"


def paths_table(losses_by_seed, rnd=4):
    rows = [{"round": rnd, "seed": s, "sparsity": 1 - 0.5 ** rnd, "subset": "train", "t": t, "loss": v}
            for s, losses in enumerate(losses_by_seed) for t, v in zip(np.linspace(0, 1, len(losses)), losses)]
    return pd.DataFrame(rows)


def test_path_verdict_needs_a_monotone_drop_on_every_seed():
    down = paths_table([[2.0, 1.5, 1.0, 0.5, 0.2], [2.1, 1.4, 1.1, 0.6, 0.3], [1.9, 1.6, 0.9, 0.4, 0.2]])
    assert rd.path_verdict(down, {"sweet spot": 4}).status == "reproduced"
    bump = paths_table([[2.0, 1.5, 1.9, 0.5, 0.2], [2.0, 1.4, 1.8, 0.6, 0.3], [2.0, 1.6, 2.0, 0.4, 0.2]])
    v = rd.path_verdict(bump, {"sweet spot": 4})
    assert v.status == "partly" and v.key_effect.outcome == "fails"      # it drops, but over a barrier
    up = paths_table([[0.2, 0.5, 1.0]] * 3)
    assert rd.path_verdict(up, {"sweet spot": 4}).status == "not reproduced"
    assert rd.path_verdict(down, {"sweet spot": None, "underfitting": None}).status == "inconclusive"
    assert rd.climb([2.0, 1.0, 1.5, 0.5]) == pytest.approx(0.25)


def sharp_table(redense_by_round, dense=0.1, sd=0.01, rng=0):
    g = np.random.default_rng(rng)
    rows = []
    for seed in range(3):
        rows.append({"solution": "dense", "round": 0, "seed": seed, "sparsity": 0.0, "sharpness": dense + g.normal(0, sd)})
        for r, v in redense_by_round.items():
            rows.append({"solution": "re-dense", "round": r, "seed": seed, "sparsity": 1 - 0.5 ** r,
                         "sharpness": v + g.normal(0, sd)})
    return pd.DataFrame(rows)


def test_sharpness_verdict_reads_the_steps_between_characteristic_sparsities():
    sharper = sharp_table({2: 0.3, 4: 0.6, 5: 1.0})
    assert rd.sharpness_verdict(sharper, KEYS, 0.5).status == "reproduced"
    flatter = sharp_table({2: 1.0, 4: 0.6, 5: 0.3})
    assert rd.sharpness_verdict(flatter, KEYS, 0.5).status == "partly"      # sharper than dense, not with sparsity
    assert rd.sharpness_verdict(sharp_table({}), {"dense": 0}, 0.5).status == "inconclusive"


# ------------------------------------------------------------------------------ D-F7: the LeNet criterion

def distance_table(sparse_dist, sparse_acc, redense_dist, redense_acc, sd=0.05, rng=0):
    g = np.random.default_rng(rng)
    rows = []
    for seed in range(3):
        for r in range(len(sparse_dist)):
            rows.append({"round": r, "seed": seed, "sparsity": 1 - 0.5 ** r,
                         "sparse_distance": sparse_dist[r] + g.normal(0, sd), "sparse_test_acc": sparse_acc[r] + g.normal(0, 0.003),
                         "redense_distance": redense_dist[r] + g.normal(0, sd) if r else np.nan,
                         "redense_test_acc": redense_acc[r] + g.normal(0, 0.003) if r else np.nan})
    return pd.DataFrame(rows)


def test_distance_verdict_is_the_papers_lenet_criterion():
    """LeNet (Fig. 7, left): the sparse distance against sparsity is double-descent-like (a hump inside the
    sweep) and mirrors the test accuracy, for sparse and re-dense solutions."""
    acc = np.array([0.70, 0.68, 0.60, 0.55, 0.62, 0.75, 0.72, 0.20])
    hump = 10 - 8 * acc + np.array([0, 0.2, 0.5, 0.8, 0.6, 0.3, 0.1, -3])   # rises to round 3, falls after
    v = rd.distance_verdict(distance_table(hump, acc, hump + 1, acc - 0.05))
    assert v.status == "reproduced" and "rises to a peak inside the sweep" in v.finding
    assert v.key_effect.name.startswith("sparse distance from initialization, peak (87.50%)")
    # the ResNet description (distance declining steadily with sparsity) is not the LeNet criterion
    steady = np.linspace(10, 2, 8)
    v = rd.distance_verdict(distance_table(steady, acc, steady + 1, acc - 0.05))
    assert v.key_effect.outcome == "fails" and v.status != "reproduced"
    # no mirror: distance and accuracy rise together
    v = rd.distance_verdict(distance_table(hump, hump / 20, hump + 1, hump / 20))
    assert [e.outcome for e in v.evidence[2:]] == ["fails", "fails"] and v.status == "partly"


def test_the_two_chapters_share_their_chain_defaults():
    """Chapter 8 studies chapter 7's chain: the chain parameters must agree (tests/test_notebooks.py checks
    every profile; this one the decided seeds)."""
    import json
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "notebooks"
    values = {}
    for stem in ("07_sparse_double_descent", "08_redense_and_landscape"):
        cell = next(c for c in json.loads((root / f"{stem}.ipynb").read_text())["cells"]
                    if "parameters" in c.get("metadata", {}).get("tags", []))
        ns: dict = {}
        exec("".join(cell["source"]), ns)
        values[stem] = ns
    a, b = values.values()
    assert all(a[k] == b[k] for k in dd.CHAIN_PARAMETERS)
    assert a["seeds"] == [0, 1, 2]
