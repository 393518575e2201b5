"""The rules of the double-descent and re-dense chapters (05, 06), on made-up chains whose answer is known."""

import numpy as np
import pandas as pd
import pytest

from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig, imp_chain
from sparsegap.runs import Run
from sparsegap.studies import double_descent as dd
from sparsegap.studies import redense as rd

DATA = DataConfig("digits", train_size=100, noise=0.4)
TRAIN = TrainConfig(epochs=2)


def fake_chains(test_by_round, train_by_round, permuted_by_round=None, seeds=(0, 1, 2), jitter=0.004):
    """Chains of fake runs whose last-epoch numbers are given per round (plus a small seed jitter)."""
    runs = {}
    for seed in seeds:
        dense = RunConfig("dense", DATA, ModelConfig("mlp", hidden=(8,)), TRAIN, seed=seed)
        cfgs = [dense, *imp_chain(dense, len(test_by_round) - 1, prune_rate=0.5)]
        for r, cfg in enumerate(cfgs):
            j = jitter * (seed - 1)
            perm = (permuted_by_round or train_by_round)[r]
            trace = {k: {"epoch": [1, 2], "step": [1, 2], "epochs": [1.0, 2.0], "value": [0.5, v]}
                     for k, v in (("accuracy:permuted", perm + j), ("accuracy:unpermuted", 0.95 + j),
                                  ("accuracy:restored", 0.3 + j))}
            history = {"epoch": [1, 2], "train_acc": [0.5, train_by_round[r] + j],
                       "test_acc": [0.5, test_by_round[r] + j], "trace": trace}
            runs[("magnitude", 0.4, r, seed)] = Run(cfg, None, history, {}, {}, None)
    return dd.Chains(runs)


TRAIN_FITS = [1.0, 1.0, 1.0, 1.0, 0.9, 0.7, 0.5, 0.4]


def test_characteristic_rounds_follow_the_stated_rule():
    ch = fake_chains([0.70, 0.68, 0.60, 0.55, 0.62, 0.75, 0.72, 0.20], TRAIN_FITS)
    keys = dd.characteristic_rounds(ch.chain("magnitude", 0.4), 0.4)
    # overfitting: the worst test among the rounds that still fit the clean share 1 - 0.4 (not the collapse
    # at round 7); sweet spot: the best test after it; underfitting: the first round after the sweet spot
    # whose last and best test accuracy fall below the dense network's (round 6 still tests above dense)
    assert keys == {"dense": 0, "overfitting": 3, "sweet spot": 5, "underfitting": 7}


def test_double_descent_is_found_when_it_is_there_and_not_when_it_is_not():
    there = fake_chains([0.70, 0.68, 0.60, 0.55, 0.62, 0.75, 0.72, 0.20], TRAIN_FITS)
    assert dd.double_descent_verdict(there).status == "reproduced"
    monotone_fall = fake_chains([0.70, 0.69, 0.66, 0.63, 0.60, 0.58, 0.56, 0.20], TRAIN_FITS)
    v = dd.double_descent_verdict(monotone_fall)
    assert v.status == "not reproduced" and v.evidence[0].outcome == "fails"
    # a peak within the seeds' scatter: tests/test_verdicts_double_descent.py (paired over seeds, the shared
    # jitter of fake_chains cancels)


def test_memorization_verdict_needs_the_permuted_samples_to_fall():
    test = [0.70, 0.68, 0.60, 0.55, 0.62, 0.75, 0.72, 0.20]
    falls = fake_chains(test, TRAIN_FITS, permuted_by_round=[1.0, 1.0, 1.0, 0.95, 0.6, 0.1, 0.08, 0.05])
    assert dd.memorization_verdict(falls, "magnitude", 0.4).status == "reproduced"
    stays = fake_chains(test, TRAIN_FITS, permuted_by_round=[1.0, 1.0, 1.0, 0.95, 0.96, 0.97, 0.9, 0.9])
    assert dd.memorization_verdict(stays, "magnitude", 0.4).status != "reproduced"


def test_sweep_configs_share_dense_runs_and_refuse_bad_grids():
    p = dict(dataset="digits", train_size=100, test_size=None, model="mlp", width=1, init="default", prune_rate=0.5,
             rounds=2, rewind_iter=0, prune_seed=0, seeds=[0], epochs=1, batch_size=32, lr=0.1, momentum=0.0,
             weight_decay=0.0, schedule="constant", milestones=[], gamma=0.1, exclude_output=True, noise_seed=0,
             noises=[0.2, 0.4], heuristics=["magnitude", "random"], heuristic_noises=[0.4])
    with pytest.raises(ValueError):          # an mlp needs hidden widths
        dd.sweep_configs(p)
    p["model"] = "lenet300-100"
    p["dataset"] = "mnist-5k"
    cfgs = dd.sweep_configs(p)
    assert len(cfgs) == 3 * 3 and len(set(cfgs.values())) == 2 + 3 * 2   # one dense per ε, shared
    assert cfgs[("random", 0.4, 0, 0)] is cfgs[("magnitude", 0.4, 0, 0)] or \
        cfgs[("random", 0.4, 0, 0)] == cfgs[("magnitude", 0.4, 0, 0)]
    with pytest.raises(ValueError, match="heuristic_noises must be drawn from noises"):
        dd.sweep_configs(p | {"heuristic_noises": [0.3]})
    with pytest.raises(ValueError, match="heuristics must be a non-empty list drawn from"):
        dd.sweep_configs(p | {"heuristics": ["magnitude", "snip"]})


def test_monotone_paths():
    assert rd.monotone([2.0, 1.5, 1.0, 0.2])
    assert rd.monotone([2.0, 1.5, 1.505, 0.2])          # a rise within 1% of the total drop is float noise
    assert not rd.monotone([2.0, 1.5, 1.9, 0.2])         # a barrier
    assert not rd.monotone([0.2, 0.5, 1.0])              # uphill


def test_sharpness_is_the_mean_rise_at_plus_and_minus_alpha():
    a = np.linspace(-1, 1, 21)
    curves = pd.DataFrame({"alpha": a, "loss": 0.1 + 2 * a ** 2, "solution": "re-dense", "round": 1, "seed": 0,
                           "sparsity": 0.5, "subset": "train"})
    s = rd.sharpness(curves, 0.5)
    assert s.sharpness.iloc[0] == pytest.approx(2 * 0.25)


# The distance verdict (D-F7, the paper's LeNet criterion): tests/test_verdicts_double_descent.py
