"""Trackers on subsets (issue 9): "accuracy:permuted@1", "fisher_trace:restored@2"...; their values
match a direct evaluation on the subset, in train() and through run_all's batched trainer; and the
memorization statistics computed from a run's history."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.data import SUBSETS, load_dataset
from sparsegap.memorization import (first_epoch_reaching, memorization_table, memorized_share,
                                    noisy_confusion)
from sparsegap.metrics import FisherTraceCallback, evaluate, fisher_trace, predict_logits
from sparsegap.models import build_model
from sparsegap.runs import RunStore, run_all
from sparsegap.trackers import TrackerSpec, check_trackers, make_trackers, parse_tracker
from sparsegap.bookkeeping import new_history
from sparsegap.train import TrainState, train

CFG = TrainConfig(epochs=2, batch_size=32, lr=0.05, momentum=0.9, weight_decay=0.0)


@pytest.fixture(scope="module")
def noisy():
    return load_dataset("digits", train_size=200, noise=0.3, noise_seed=1)


def mlp(seed: int = 0):
    return build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=(16,), seed=seed)


# ------------------------------------------------------------------------------------ specs

def test_specs_parse_into_metric_subset_every_unit_and_key():
    assert parse_tracker("fisher_trace") == TrackerSpec("fisher_trace", "train", 1, "epoch", "fisher_trace")
    assert parse_tracker("fisher_trace@5") == TrackerSpec("fisher_trace", "train", 5, "epoch", "fisher_trace")
    assert parse_tracker("accuracy:permuted@1") == TrackerSpec("accuracy", "permuted", 1, "epoch", "accuracy:permuted")
    assert parse_tracker("loss:test@3step") == TrackerSpec("loss", "test", 3, "step", "loss:test")
    assert parse_tracker("predictions:restored") == TrackerSpec("predictions", "restored", 1, "epoch",
                                                                "predictions:restored")
    assert parse_tracker("fisher_trace:unpermuted@2epoch").key == "fisher_trace:unpermuted"


@pytest.mark.parametrize("spec, match", [
    ("acc:permuted@1", r"unknown metric 'acc'.*accuracy, loss, fisher_trace, predictions"),
    ("accuracy:memorized@1", r"unknown subset 'memorized'.*train, test, permuted, unpermuted, restored"),
    ("accuracy:permuted@0", "must look like"), ("accuracy:@1", "must look like"),
    ("accuracy:permuted:test", "must look like"), ("Accuracy", "must look like"), (5, "must look like"),
])
def test_bad_specs_are_refused_when_the_run_config_is_built(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_tracker(spec)
    with pytest.raises(ValueError, match=match):
        RunConfig("dense", DataConfig("digits", noise=0.3), track=(spec,))


def test_a_subset_tracker_is_part_of_the_run_identity():
    d = DataConfig("digits", train_size=200, noise=0.3)
    a, b = RunConfig("dense", d, track=("accuracy:permuted@1",)), RunConfig("dense", d, track=("accuracy:permuted@2",))
    assert a.hash() != b.hash() != RunConfig("dense", d).hash()


def test_empty_subsets_and_other_data_are_clear_errors(noisy):
    clean = load_dataset("digits", train_size=200)
    for spec in ("accuracy:permuted@1", "fisher_trace:restored", "predictions:permuted@2"):
        with pytest.raises(ValueError, match="is empty: no training label is noisy"):
            make_trackers([spec], clean)
        with pytest.raises(ValueError, match="reads the noisy samples, but the data has none"):
            check_trackers([spec], DataConfig("digits"))
    check_trackers(["accuracy:permuted@1", "accuracy:unpermuted", "fisher_trace@5"], DataConfig("digits", noise=0.1))
    with pytest.raises(ValueError, match="one key 'accuracy:test'"):
        check_trackers(["accuracy:test@1", "accuracy:test@2step"], DataConfig("digits"))
    from types import SimpleNamespace
    plain = SimpleNamespace(x_train=noisy.x_train, y_train=noisy.y_train, x_test=noisy.x_test, y_test=noisy.y_test)
    assert len(make_trackers(["fisher_trace@2", "accuracy:test"], plain)) == 2
    with pytest.raises(TypeError, match="DataSplits"):
        make_trackers(["accuracy:permuted"], plain)


def test_only_step_trackers_want_the_step_end(noisy):
    cbs = make_trackers(["accuracy:permuted@1", "loss:test", "predictions:permuted@3", "fisher_trace:restored@2",
                         "accuracy:unpermuted@4step", "fisher_trace@2step"], noisy)
    assert [cb.wants_step_end for cb in cbs] == [False, False, False, False, True, True]
    perm, rest = cbs[0], cbs[3]
    assert perm.x is rest.x and perm.logits is cbs[2].logits  # subsets resolved once, one forward pass shared


# ------------------------------------------------------------------------------------ values

ALL_SPECS = [f"{m}:{s}@1" for m in ("accuracy", "loss", "predictions") for s in SUBSETS] + \
            [f"fisher_trace:{s}@1" for s in ("permuted", "unpermuted", "restored", "test")] + \
            ["fisher_trace@1", "accuracy@1"]


def test_subset_trackers_match_a_direct_evaluation(noisy):
    model = mlp()
    h = train(model, noisy, CFG, callbacks=make_trackers(ALL_SPECS, noisy), device="cpu", progress=False)
    trace = h["trace"]
    assert set(trace) == {s.split("@")[0] for s in ALL_SPECS}
    for key, t in trace.items():
        assert t["epochs"] == [0.0, 1.0, 2.0] and t["epoch"] == [0, 0, 1] and t["step"] == [0, 7, 14], key
    logits = {s: predict_logits(model, noisy.split(s)[0]) for s in SUBSETS}
    for s in SUBSETS:
        x, y = noisy.split(s)
        ev = evaluate(model, x, y)
        assert trace[f"accuracy:{s}"]["value"][-1] == pytest.approx(ev.accuracy, rel=1e-6, abs=1e-9)
        assert trace[f"loss:{s}"]["value"][-1] == pytest.approx(ev.loss, rel=1e-6)
        preds = trace[f"predictions:{s}"]["value"][-1]
        assert isinstance(preds, list) and all(type(p) is int for p in preds)
        assert preds == logits[s].argmax(1).tolist()
        assert np.mean(np.array(preds) == y.numpy()) == pytest.approx(ev.accuracy)
    for s in ("permuted", "unpermuted", "restored", "test"):
        x, y = noisy.split(s)
        direct = fisher_trace(model, x, y, generator=torch.Generator().manual_seed(0))
        assert trace[f"fisher_trace:{s}"]["value"][-1] == pytest.approx(direct, rel=1e-6)
    # the plain trackers keep their old meaning and keys
    assert trace["accuracy"]["value"][1:] == h["train_acc"] and trace["accuracy:test"]["value"][1:] == h["test_acc"]
    assert trace["loss:test"]["value"][1:] == h["test_loss"]
    direct = fisher_trace(model, noisy.x_train, generator=torch.Generator().manual_seed(0))
    assert trace["fisher_trace"]["value"][-1] == pytest.approx(direct, rel=1e-6)
    # permuted and restored are the same samples: the same predictions, and complementary-ish accuracies
    assert trace["predictions:permuted"]["value"] == trace["predictions:restored"]["value"]
    assert trace["accuracy:permuted"]["value"][-1] + trace["accuracy:restored"]["value"][-1] <= 1.0
    json.dumps(h)  # the history stays plain JSON


def test_step_trackers(noisy):
    model = mlp()
    h = train(model, noisy, CFG, callbacks=make_trackers(["loss:permuted@3step", "predictions:test@5step"], noisy),
              device="cpu", progress=False)
    t = h["trace"]["loss:permuted"]  # 7 steps per epoch
    assert t["step"] == [0, 3, 6, 9, 12] and t["epoch"] == [0, 0, 0, 1, 1]
    assert t["epochs"] == pytest.approx([0, 3 / 7, 6 / 7, 9 / 7, 12 / 7])
    assert h["trace"]["predictions:test"]["step"] == [0, 5, 10]
    x, y = noisy.split("permuted")
    model = mlp()
    h = train(model, noisy, TrainConfig(epochs=1, batch_size=32, lr=0.05, momentum=0.9, weight_decay=0.0),
              callbacks=make_trackers(["loss:permuted@7step"], noisy), device="cpu", progress=False)
    assert h["trace"]["loss:permuted"]["step"] == [0, 7]
    assert h["trace"]["loss:permuted"]["value"][-1] == pytest.approx(evaluate(model, x, y).loss, rel=1e-6)


def test_plain_fisher_trace_tracker_is_todays_callback(noisy):
    (cb,) = make_trackers(["fisher_trace@5"], noisy)
    assert isinstance(cb, FisherTraceCallback) and cb.name == "fisher_trace" and cb.every == 5
    assert cb.x is noisy.x_train and cb.labels == "sampled" and cb.at_start


def test_train_state_logs_lists_as_ints():
    st = TrainState(mlp(), None, None, None, "cpu", CFG, new_history(), steps_per_epoch=4)
    st.log("predictions:test", torch.tensor([3, 1]).tolist())
    st.log("predictions:test", (np.int64(2), 0))
    st.log("accuracy:test", np.float32(0.5))
    assert st.history["trace"]["predictions:test"]["value"] == [[3, 1], [2, 0]]
    assert type(st.history["trace"]["predictions:test"]["value"][1][0]) is int
    assert st.history["trace"]["accuracy:test"]["value"] == [0.5]


def test_batched_run_all_gives_the_same_traces_as_single_runs(tmp_path):
    data = DataConfig("digits", train_size=200, noise=0.3, noise_seed=2)
    model = ModelConfig("mlp", hidden=(32,))
    track = ("accuracy:permuted@1", "accuracy:unpermuted@1", "accuracy:restored@1", "loss:test@1",
             "fisher_trace:permuted@1", "fisher_trace:unpermuted@2", "predictions:permuted@1")
    dense = [RunConfig("dense", data, model, TrainConfig(epochs=2, batch_size=32, lr=lr), seed=s, track=track)
             for s, lr in ((0, 0.1), (1, 0.05))]
    single = run_all(dense, RunStore(tmp_path / "single"), progress=False, batch=False)
    batched = run_all(dense, RunStore(tmp_path / "batched"), progress=False)  # tiny MLPs: batched automatically
    assert json.loads((RunStore(tmp_path / "batched").path(dense[0]) / "meta.json").read_text())["batch"] == 2
    for s, b in zip(single, batched):
        ts, tb = s.history["trace"], b.history["trace"]
        assert set(ts) == set(tb) == {k.split("@")[0] for k in track}
        for key in ts:
            assert tb[key]["epochs"] == ts[key]["epochs"] and tb[key]["step"] == ts[key]["step"]
            if key.startswith("predictions"):
                ps, pb = np.array(ts[key]["value"]), np.array(tb[key]["value"])
                assert ps.shape == pb.shape and (ps == pb).mean() >= 0.98, key
            else:
                assert tb[key]["value"] == pytest.approx(ts[key]["value"], rel=1e-5), key


# ------------------------------------------------------------------------------------ memorization

def history(memorized, test_acc, epochs=None, key="accuracy:permuted"):
    epochs = list(range(len(memorized))) if epochs is None else epochs
    return {"test_acc": test_acc,
            "trace": {key: {"epoch": [max(0, int(e) - 1) for e in epochs], "step": [10 * e for e in epochs],
                            "epochs": [float(e) for e in epochs], "value": memorized}}}


def test_first_epoch_reaching_and_memorized_share():
    h = history([0.1, 0.2, 0.5, 0.7, 0.9], [0.5, 0.8, 0.7, 0.6])  # best test after epoch 2
    assert first_epoch_reaching(h, "accuracy:permuted", 0.5) == 2.0
    assert first_epoch_reaching(h, "accuracy:permuted", 0.05) == 0.0
    assert first_epoch_reaching(h, "accuracy:permuted", 0.95) is None
    assert memorized_share(h) == memorized_share(h, at="end") == 0.9
    assert memorized_share(h, at="best_test") == 0.5
    # measured every 2 epochs: the last measurement at or before the best-test epoch (3)
    h2 = history([0.0, 0.3, 0.6], [0.4, 0.6, 0.9, 0.7], epochs=[0, 2, 4])
    assert memorized_share(h2, at="best_test") == 0.3 and first_epoch_reaching(h2, "accuracy:permuted", 0.6) == 4.0
    with pytest.raises(ValueError, match="no 'accuracy:permuted' trace.*'accuracy:permuted@1' in RunConfig.track"):
        memorized_share(history([0.1], [0.5], key="accuracy:test"))
    with pytest.raises(ValueError, match="at must be one of"):
        memorized_share(h, at="best")


def test_memorization_table_means_and_stds_over_seeds():
    hs = {"Sol-D": [history([0.0, 0.6, 1.0], [0.7, 0.6]), history([0.0, 0.4, 0.8], [0.6, 0.8])],
          "Sol-S": [history([0.0, 0.1, 0.2], [0.7, 0.9])]}
    t = memorization_table(hs, threshold=0.5)
    assert list(t.index) == ["Sol-D", "Sol-S"]
    d = t.loc["Sol-D"]
    assert d["memorized_end_mean"] == pytest.approx(0.9) and d["memorized_end_std"] == pytest.approx(np.std([1, 0.8], ddof=1))
    assert d["memorized_best_mean"] == pytest.approx(0.7)      # epoch 1 (0.6) and epoch 2 (0.8)
    assert d["reach_epoch_mean"] == pytest.approx(1.5) and d["reached"] == 2 and d["seeds"] == 2
    assert d["test_acc_final_mean"] == pytest.approx(0.7) and d["test_acc_best_mean"] == pytest.approx(0.75)
    s = t.loc["Sol-S"]
    assert np.isnan(s["reach_epoch_mean"]) and s["reached"] == 0 and s["memorized_end_std"] == 0.0
    assert s["memorized_best_mean"] == pytest.approx(0.2) and s["test_acc_best_mean"] == pytest.approx(0.9)


def test_noisy_confusion_counts_the_memorized_samples_by_true_and_noisy_class(noisy):
    perm = noisy.subset_indices("permuted")
    true, lab = noisy.y_train_true[perm], noisy.y_train[perm]
    all_memorized = noisy_confusion(noisy, lab.tolist())
    assert all_memorized.shape == (10, 10) and all_memorized.sum() == len(perm) and np.trace(all_memorized) == 0
    assert all_memorized[int(true[0]), int(lab[0])] >= 1
    assert noisy_confusion(noisy, true.tolist()).sum() == 0   # all restored: nothing memorized
    half = lab.clone()
    half[::2] = true[::2]
    assert noisy_confusion(noisy, half.numpy()).sum() == len(perm) // 2
    with pytest.raises(ValueError, match="one class per noisy sample"):
        noisy_confusion(noisy, [0, 1])


def test_every_metric_a_spec_may_name_has_a_factory():
    """The spec language (sparsegap.tracker_specs, which RunConfig checks) and the factories (sparsegap.trackers,
    which training uses) live in two layers; their vocabularies must be one."""
    from sparsegap.tracker_specs import TRACKER_METRICS
    from sparsegap.trackers import TRACKERS
    assert tuple(TRACKERS) == TRACKER_METRICS
