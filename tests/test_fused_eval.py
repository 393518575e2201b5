"""One pass where two read the same samples (issue 26): at the end of an epoch, trackers of the training set's
subsets and of the test set take their rows of the logits the trainer has just evaluated, in train() and in
train_batched(); elsewhere (the start, every N steps) they run their own forward pass; the values are those of a
direct evaluation of the same weights."""

from __future__ import annotations

import pytest
import torch

import sparsegap.metrics.callbacks as callbacks_module
from sparsegap.batched import train_batched
from sparsegap.config import TrainConfig
from sparsegap.data import load_dataset
from sparsegap.metrics import evaluate, predict_logits
from sparsegap.models import build_model
from sparsegap.trackers import make_trackers
from sparsegap.train import EpochLogits, train

TRACK = ("accuracy:permuted@1", "loss:unpermuted@1", "accuracy:restored@1", "predictions:test@1")
CFG = TrainConfig(epochs=3, batch_size=32, lr=0.05, momentum=0.9, weight_decay=0.0, schedule="constant")


@pytest.fixture(scope="module")
def noisy():
    return load_dataset("digits", train_size=200, noise=0.3, noise_seed=1)


def mlp(seed: int = 0):
    return build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=(16,), seed=seed)


@pytest.fixture
def passes(monkeypatch):
    """The forward passes the trackers run of their own: the number of samples of each."""
    seen = []

    def counted(model, x, **kw):
        seen.append(len(x))
        return predict_logits(model, x, **kw)
    monkeypatch.setattr(callbacks_module, "predict_logits", counted)
    return seen


def check_values(model, data, history) -> None:
    """The last logged values equal a direct evaluation of the final weights on each subset."""
    trace = history["trace"]
    for subset, key, metric in (("permuted", "accuracy:permuted", "accuracy"), ("unpermuted", "loss:unpermuted", "loss"),
                                ("restored", "accuracy:restored", "accuracy")):
        x, y = data.split(subset)
        want = getattr(evaluate(model, x, y), metric)
        assert trace[key]["value"][-1] == pytest.approx(want, rel=1e-6, abs=1e-7), key
    assert trace["predictions:test"]["value"][-1] == predict_logits(model, data.x_test).argmax(1).tolist()


def test_train_trackers_take_the_evaluations_logits_at_epoch_ends(noisy, passes):
    model = mlp()
    history = train(model, noisy, CFG, callbacks=make_trackers(TRACK, noisy), progress=False)
    # only the measurement at the start runs forward passes: once over the noisy rows (permuted and restored
    # share them), once over the clean ones, once over the test set; none at the three epoch ends
    assert sorted(passes) == sorted([int(noisy.noisy.sum()), int((~noisy.noisy).sum()), len(noisy.x_test)])
    assert all(len(t["value"]) == 4 for t in history["trace"].values())
    check_values(model, noisy, history)


def test_batched_trackers_take_the_evaluations_logits_too(noisy, passes):
    models = [mlp(s) for s in range(3)]
    hs = train_batched(models, noisy, CFG, callbacks=[make_trackers(TRACK, noisy) for _ in models],
                       seeds=[0, 1, 2], progress=False)
    assert len(passes) == 3 * 3          # the start of each member, nothing at its epoch ends
    for model, h in zip(models, hs):
        check_values(model, noisy, h)


def test_trackers_every_n_steps_run_their_own_pass(noisy, passes):
    """A measurement after a step mid-epoch must not read the last epoch's logits (other weights)."""
    model = mlp()
    history = train(model, noisy, CFG, callbacks=make_trackers(("accuracy:permuted@5step",), noisy), progress=False)
    assert len(passes) == len(history["trace"]["accuracy:permuted"]["value"])   # every one its own pass


def test_logits_of_other_weights_are_not_taken(noisy):
    from types import SimpleNamespace
    model = mlp()
    x, rows = noisy.split("permuted")[0], noisy.subset_indices("permuted")
    wrong = torch.zeros(len(noisy.x_train), 10)        # every class 0: logits no real pass gives
    test = torch.zeros(len(noisy.x_test), 10)

    def state(step: int, evaluated_at: int):
        return SimpleNamespace(model=model, step=step, history={"epoch": [1]},
                               logits=EpochLogits(evaluated_at, 1, wrong, test))
    shared = lambda: callbacks_module.SharedLogits(x, source=("train", rows))
    assert shared()(state(7, 6)).equal(predict_logits(model, x))      # evaluated a step earlier: a pass of its own
    assert shared()(state(7, 7)).equal(wrong[rows])                   # the same step and epochs: its rows
    assert callbacks_module.SharedLogits(x)(state(7, 7)).equal(predict_logits(model, x))   # no source: its own


def test_a_trace_keeps_one_standard_error_per_value():
    """A run resumed from a checkpoint written before its tracker logged standard errors: NaN for the old values,
    so that trace["se"][i] is always the error of trace["value"][i]."""
    import math
    from sparsegap.train import TrainState
    state = TrainState(mlp(), None, None, None, torch.device("cpu"), CFG, {"trace": {"f": {
        "epoch": [0], "step": [0], "epochs": [0.0], "value": [1.0]}}})
    state.log("f", 2.0, se=0.5)
    state.log("f", 3.0)
    se = state.history["trace"]["f"]["se"]
    assert len(se) == 3 and math.isnan(se[0]) and se[1] == 0.5 and math.isnan(se[2])
    state.log("g", 1.0)
    assert "se" not in state.history["trace"]["g"]
