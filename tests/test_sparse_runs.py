"""Pruned, lottery, scratch, sparse-init dense and dynamic sparse runs in the store (issue 11)."""

import pytest
import torch

from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.pruning import sparsity_of
from sparsegap.runs import RunStore, get_or_train, run_all

DATA = DataConfig("digits", train_size=300, test_size=100)
MODEL = ModelConfig("mlp", hidden=(32, 16))
TRAIN = TrainConfig(epochs=3, batch_size=32, lr=0.05, schedule="constant")
GRADUAL = dict(update_start=0.1, update_end=0.6, update_every=5, exclude_output=True)


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def pruned(s=0.9, seed=0):
    return RunConfig("gradual", DATA, MODEL, TRAIN, seed=seed, sparsity=s, **GRADUAL)


def test_the_pruned_solution_ends_at_its_sparsity_and_stores_its_final_mask(store):
    run = get_or_train(pruned(), store, progress=False)
    n = sum(m.numel() for m in run.masks.values())
    assert abs(sparsity_of(run.masks) - 0.9) * n <= 1
    for name, m in run.masks.items():
        assert (run.weights[name][~m] == 0).all()
    dense = get_or_train(RunConfig("dense", DATA, MODEL, TRAIN), store, progress=False)
    assert all(torch.equal(run.init[k], dense.init[k]) for k in run.init)   # P-S starts from Init-D


def test_lottery_scratch_and_sparse_init_dense_take_the_pruned_mask(store):
    ps = pruned()
    ls, ss, zi = (RunConfig(k, DATA, MODEL, TRAIN, parent=ps, exclude_output=True)
                  for k in ("lottery", "scratch", "zeroinit"))
    p, lot, scr, zero = run_all([ps, ls, ss, zi], store, progress=False)
    assert lot.config.sparsity == scr.config.sparsity == 0.9
    for name, m in p.masks.items():
        assert torch.equal(lot.masks[name], m) and torch.equal(scr.masks[name], m)
        assert torch.equal(lot.init[name], p.init[name] * m)               # L-S: P-S's own init, masked
        assert not torch.equal(scr.init[name], lot.init[name])             # S-S: a new init
        assert torch.equal(zero.init[name], p.init[name] * m)              # sparse-init dense: same zeros ...
        assert (zero.weights[name][~m] != 0).any()                         # ... but every weight trains
    assert zero.masks is None


def test_sparse_init_rescales_the_scratch_init(store):
    ps = pruned(0.95)
    plain, unit = (RunConfig("scratch", DATA, MODEL, TRAIN, parent=ps, exclude_output=True, sparse_init=i)
                   for i in ("", "unit"))
    a, b = run_all([ps, plain, unit], store, progress=False)[1:]
    first = next(iter(a.masks))
    kept = a.masks[first]
    assert b.init[first][kept].std() > 2 * a.init[first][kept].std()   # about 1/sqrt(density) larger
    assert (b.init[first][~kept] == 0).all()


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_dynamic_sparse_runs_keep_each_layers_count_and_move_the_mask(store, method):
    cfg = RunConfig("dst", DATA, MODEL, TRAIN, sparsity=0.8, dst_method=method, drop_fraction=0.3,
                    update_every=5, update_end=0.75, exclude_output=True, distribution="erk")
    run = get_or_train(cfg, store, progress=False)
    initial = torch.load(run.path / "init.pt", weights_only=True)
    changed = False
    for name, m in run.masks.items():
        start = initial[name] != 0
        assert int(m.sum()) == int(start.sum())          # ERK densities preserved per layer
        changed |= not torch.equal(m, start)
        assert (run.weights[name][~m] == 0).all()
    assert changed


def test_random_zeroed_init_trains_dense(store):
    run = get_or_train(RunConfig("zeroinit", DATA, MODEL, TRAIN, sparsity=0.7, exclude_output=True), store,
                       progress=False)
    first = next(k for k in run.init if k.endswith("weight"))
    assert abs((run.init[first] == 0).float().mean().item() - 0.7) < 0.01
    assert (run.weights[first] != 0).float().mean() > 0.99


# ---------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kw, match", [
    (dict(update_start=0.5, update_end=0.4), "end precedes its start"),
    (dict(update_every=0), r"update_every .* must be an int >= 1"),
    (dict(sparsity=1.0), r"sparsity must be in \[0, 1\)"),
    (dict(sparsity=-0.1), r"sparsity must be in \[0, 1\)"),
])
def test_bad_gradual_schedules_are_refused(kw, match):
    fields = dict(sparsity=0.9, **GRADUAL) | kw
    with pytest.raises(ValueError, match=match):
        RunConfig("gradual", DATA, MODEL, TRAIN, **fields)


@pytest.mark.parametrize("drop", [0, 1, -0.1, 1.5])
def test_a_drop_fraction_outside_0_1_is_refused(drop):
    with pytest.raises(ValueError, match=r"drop_fraction must be a finite number in \(0, 1\)"):
        RunConfig("dst", DATA, MODEL, TRAIN, sparsity=0.8, dst_method="rigl", drop_fraction=drop,
                  update_every=5, update_end=0.75)


def test_dst_needs_a_known_method_and_an_update_interval():
    with pytest.raises(ValueError, match=r"dst_method must be one of \('set', 'rigl'\)"):
        RunConfig("dst", DATA, MODEL, TRAIN, sparsity=0.8, dst_method="snfs", drop_fraction=0.3,
                  update_every=5, update_end=0.75)
    with pytest.raises(ValueError, match="update_every"):
        RunConfig("dst", DATA, MODEL, TRAIN, sparsity=0.8, dst_method="set", drop_fraction=0.3, update_end=0.75)


def test_a_lottery_run_needs_a_pruned_solution_as_parent():
    dense = RunConfig("dense", DATA, MODEL, TRAIN)
    with pytest.raises(ValueError, match=r"lottery RunConfig needs parent=<a pruned solution"):
        RunConfig("lottery", DATA, MODEL, TRAIN, parent=dense)
    with pytest.raises(ValueError, match=r"lottery RunConfig needs parent=<a pruned solution"):
        RunConfig("lottery", DATA, MODEL, TRAIN)


@pytest.mark.parametrize("kind, kw, match", [
    ("dense", dict(update_every=5), "takes the defaults"),
    ("dense", dict(sparse_init="unit"), "sparse_init"),
    ("gradual", dict(distribution="erk"), "distribution"),
    ("gradual", dict(dst_method="set"), "belong to dst runs"),
])
def test_fields_on_the_wrong_kind_are_refused(kind, kw, match):
    extra = dict(sparsity=0.9, **GRADUAL) if kind == "gradual" else {}
    with pytest.raises(ValueError, match=match):
        RunConfig(kind, DATA, MODEL, TRAIN, **extra, **kw)


def test_erk_on_a_model_without_prunable_layers_is_refused():
    from sparsegap.dst import erk_densities
    with pytest.raises(ValueError, match="no prunable layer"):
        erk_densities(torch.nn.Sequential(torch.nn.ReLU()), 0.5)
