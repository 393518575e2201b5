"""Bézier curves between two solutions, as runs in the store (issue 12)."""

import pytest
import torch

from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.curves import BezierCurve, curve_path
from sparsegap.metrics.basic import evaluate
from sparsegap.runs import RunStore, get_or_train, load_curve, load_data, run_all

DATA = DataConfig("digits", train_size=200, test_size=100)
MODEL = ModelConfig("mlp", hidden=(16,))
TRAIN = TrainConfig(epochs=2, batch_size=32, lr=0.05, schedule="constant")
CURVE_TRAIN = TrainConfig(epochs=2, batch_size=32, lr=0.05, momentum=0.9, weight_decay=1e-4, schedule="constant")


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def endpoints():
    ps = RunConfig("gradual", DATA, MODEL, TRAIN, sparsity=0.8, update_start=0.1, update_end=0.6, update_every=2)
    return RunConfig("scratch", DATA, MODEL, TRAIN, parent=ps), ps


def curve_cfg(mode="sparse", degree=2):
    a, b = endpoints()
    return RunConfig("curve", DATA, MODEL, CURVE_TRAIN, parent=a, partner=b, curve_degree=degree, curve_mode=mode)


@pytest.mark.parametrize("mode, degree", [("sparse", 2), ("dense", 2), ("sparse", 3)])
def test_endpoints_are_the_two_solutions_before_and_after_training(store, mode, degree):
    cfg = curve_cfg(mode, degree)
    run = run_all([cfg], store, progress=False)[0]
    a, b = store.load(cfg.parent), store.load(cfg.partner)
    data = load_data(DATA)
    for trained in (False, True):
        curve = load_curve(cfg, store, trained=trained)
        for t, end in ((0.0, a), (1.0, b)):
            net = curve.network_at(t)
            assert all(torch.equal(net.state_dict()[k], end.weights[k]) for k in end.weights)
            assert evaluate(net, data.x_test, data.y_test).loss == evaluate(end.model(), data.x_test, data.y_test).loss
    assert len(run.history["train_loss"]) == 2


def test_sparse_control_points_stay_on_the_mask_and_dense_ones_leave_it(store):
    for mode in ("sparse", "dense"):
        cfg = curve_cfg(mode)
        run_all([cfg], store, progress=False)
        curve = load_curve(cfg, store)
        mask = store.load(cfg.partner).masks
        off = [(curve.point(0.5)[k][~m] != 0).any().item() for k, m in mask.items()]
        start = load_curve(cfg, store, trained=False)
        moved = any(not torch.equal(c, s) for c, s in zip(curve.controls, start.controls))
        assert moved
        assert not any(off) if mode == "sparse" else any(off)


def test_a_curve_is_trained_once_and_resumes_through_the_store(store):
    cfg = curve_cfg()
    first = get_or_train(cfg, store, progress=False)
    mtime = (first.path / "weights.pt").stat().st_mtime_ns
    again = get_or_train(cfg, store, progress=False)
    assert (again.path / "weights.pt").stat().st_mtime_ns == mtime
    with pytest.raises(TypeError, match="is a curve"):
        again.model()


def test_the_curve_path_reports_the_objective_terms(store):
    cfg = curve_cfg("dense")
    run_all([cfg], store, progress=False)
    path = curve_path(load_curve(cfg, store), load_data(DATA), ts=[0.0, 0.5, 1.0], weight_decay=1e-4)
    assert (path.objective == path.loss + path.l2).all()


# ---------------------------------------------------------------------------------- bad input

def test_a_curve_order_other_than_2_or_3_is_refused():
    a, b = endpoints()
    for degree in (1, 4, 0):
        with pytest.raises(ValueError, match=r"curve_degree \(the curve's order\) must be one of \(2, 3\)"):
            RunConfig("curve", DATA, MODEL, CURVE_TRAIN, parent=a, partner=b, curve_degree=degree, curve_mode="sparse")
    with pytest.raises(ValueError, match="degree"):
        BezierCurve(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).state_dict(), torch.nn.Linear(2, 2).state_dict(), 4)


def test_endpoints_of_different_architectures_are_refused():
    a, b = endpoints()
    other = RunConfig("dense", DATA, ModelConfig("mlp", hidden=(8,)), TRAIN)
    with pytest.raises(ValueError, match="endpoints of a curve must have the curve's architecture"):
        RunConfig("curve", DATA, MODEL, CURVE_TRAIN, parent=a, partner=other, curve_degree=2, curve_mode="dense")


def test_endpoints_with_different_masks_are_refused_in_the_sparse_mode(store):
    a, _ = endpoints()
    other = RunConfig("gradual", DATA, MODEL, TRAIN, seed=1, sparsity=0.8, update_start=0.1, update_end=0.6,
                      update_every=2)
    cfg = RunConfig("curve", DATA, MODEL, CURVE_TRAIN, parent=a, partner=other, curve_degree=2, curve_mode="sparse")
    with pytest.raises(ValueError, match="a sparse curve needs endpoints with one shared mask"):
        get_or_train(cfg, store, progress=False)


def test_an_empty_t_grid_is_refused(store):
    cfg = curve_cfg("dense")
    run_all([cfg], store, progress=False)
    with pytest.raises(ValueError, match="ts"):
        curve_path(load_curve(cfg, store), load_data(DATA), ts=[])


def test_a_curve_is_evaluated_on_the_device_it_is_given_and_a_bad_one_is_refused(store):
    cfg = curve_cfg("dense")
    run_all([cfg], store, progress=False)
    curve, data = load_curve(cfg, store), load_data(DATA)
    assert curve_path(curve, data, ts=[0.0, 0.5, 1.0], device="cpu").equals(curve_path(curve, data, ts=[0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="device"):
        curve_path(curve, data, ts=[0.5], device="no-such-device")


def test_a_curves_stored_state_does_not_depend_on_the_global_random_state(store):
    """The base network's unused weights are part of a curve's state_dict (init.pt, weights.pt): they must come
    from the curve's seed, or two builds store different bits for the same curve (found by test_determinism)."""
    cfg = curve_cfg()
    run_all([cfg.parent, cfg.partner], store, progress=False)
    states = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        states.append(load_curve(cfg, store, trained=False).state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
