"""train_batched: N networks trained as one agree with N runs of train(), member by member."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sparsegap.batched import check_compatible, forward_macs, should_batch, train_batched
from sparsegap.config import TrainConfig
from sparsegap.models import build_model
from sparsegap.pruning import apply_masks, global_magnitude_masks
from sparsegap.trackers import make_trackers
from sparsegap.train import train

RTOL = 1e-5
SHAPES = {"mlp": (12,), "lenet5": (1, 16, 16)}


def make_data(arch: str, n: int = 20, classes: int = 3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *SHAPES[arch], generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return SimpleNamespace(x_train=x, y_train=y, x_test=x[:7], y_test=y[:7])


def make_model(arch: str, seed: int) -> nn.Module:
    if arch == "mlp":
        return build_model("mlp", num_classes=3, input_shape=SHAPES[arch], hidden=(16, 8), seed=seed)
    return build_model("lenet5", num_classes=3, input_shape=SHAPES[arch], seed=seed)


def cfg(lr: float = 0.1, **kw) -> TrainConfig:
    # 20 samples in batches of 8: 3 steps per epoch, the last one short
    return TrainConfig(**{"epochs": 1, "batch_size": 8, "lr": lr, "momentum": 0.9, "weight_decay": 5e-4} | kw)


def members(arch: str, lrs=(0.1, 0.05, 0.2), sparsities=(None, 0.5, 0.8), **kw):
    """Models, configs, masks and seeds that differ in everything a batch lets them differ in."""
    models = [make_model(arch, seed) for seed in range(len(lrs))]
    masks = [None if s is None else global_magnitude_masks(m, s) for m, s in zip(models, sparsities)]
    return models, [cfg(lr, **kw) for lr in lrs], masks, [3, 1, 4][:len(lrs)]


def assert_close(a, b, what: str) -> None:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    assert a.shape == b.shape, f"{what}: shapes {tuple(a.shape)} and {tuple(b.shape)}"
    if a.numel() == 0:
        return
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-12)
    assert float((a - b).abs().max()) <= RTOL * scale, f"{what}: batched and single differ"


def assert_same_run(single: nn.Module, batched: nn.Module, h_single: dict, h_batched: dict) -> None:
    for (name, p), (_, q) in zip(single.named_parameters(), batched.named_parameters()):
        assert_close(p.detach(), q.detach(), name)
    assert set(h_single) == set(h_batched)
    for key, values in h_single.items():
        if key == "seconds":
            assert len(values) == len(h_batched[key])
        elif key == "trace":
            assert set(values) == set(h_batched["trace"])
            for name, trace in values.items():
                other = h_batched["trace"][name]
                for k in ("epoch", "step", "epochs"):
                    assert trace[k] == other[k], f"trace {name}: {k}"
                assert_close(trace["value"], other["value"], f"trace {name}")
        elif key == "diverged":
            assert values == h_batched[key]
        else:
            assert_close(values, h_batched[key], key)


def train_singles(models, data, cfgs, masks, seeds, callbacks=None):
    copies = [copy.deepcopy(m) for m in models]
    callbacks = callbacks or [[] for _ in models]
    histories = [train(m, data, c, masks=mk, seed=s, callbacks=cb, device="cpu", progress=False)
                 for m, c, mk, s, cb in zip(copies, cfgs, masks, seeds, callbacks)]
    return copies, histories


@pytest.mark.parametrize("arch", ["mlp", "lenet5"])
def test_batched_matches_single_runs(arch):
    """3 steps (one epoch) with different seeds, masks and learning rates, momentum and weight decay."""
    data = make_data(arch)
    models, cfgs, masks, seeds = members(arch)
    singles, h_singles = train_singles(models, data, cfgs, masks, seeds)
    h_batched = train_batched(models, data, cfgs, masks=masks, seeds=seeds, device="cpu", progress=False)
    for single, batched, hs, hb in zip(singles, models, h_singles, h_batched):
        assert_same_run(single, batched, hs, hb)
    for m, mk in zip(models, masks):  # pruned weights stayed exactly zero
        for name, keep in (mk or {}).items():
            assert not dict(m.named_parameters())[name][~keep].any()
    for p in models[0].parameters():  # members own their weights again, not a view of the stack
        assert p.untyped_storage().nbytes() == p.numel() * p.element_size()


def test_both_engines_and_the_schedule_agree():
    """The bmm and vmap engines give the same MLP runs, over epochs with a multistep lr decay."""
    data = make_data("mlp")
    models, cfgs, masks, seeds = members("mlp", epochs=2)
    singles, h_singles = train_singles(models, data, cfgs, masks, seeds)
    for engine in ("bmm", "vmap"):
        batch = [copy.deepcopy(m) for m in models]
        h_batched = train_batched(batch, data, cfgs, masks=masks, seeds=seeds, device="cpu", progress=False,
                                  engine=engine)
        for single, batched, hs, hb in zip(singles, batch, h_singles, h_batched):
            assert hb["lr"] == hs["lr"] and hb["lr"][1] < hb["lr"][0]
            assert_same_run(single, batched, hs, hb)


def test_trackers_in_a_batch_equal_single_runs():
    """fisher_trace every epoch and every 2 steps, through make_trackers, as the run store does."""
    data = make_data("mlp")
    models, cfgs, masks, seeds = members("mlp", epochs=2)
    specs = ["fisher_trace@1", "fisher_trace@2step"]

    def trackers():
        cbs = make_trackers(specs, data)
        cbs[1].name = "fisher_trace_steps"  # both log under one name otherwise
        return cbs

    singles, h_singles = train_singles(models, data, cfgs, masks, seeds, [trackers() for _ in models])
    h_batched = train_batched(models, data, cfgs, masks=masks, seeds=seeds, device="cpu", progress=False,
                              callbacks=[trackers() for _ in models])
    for single, batched, hs, hb in zip(singles, models, h_singles, h_batched):
        assert len(hb["trace"]["fisher_trace"]["value"]) == 3  # at the start, then after epochs 1 and 2
        assert hb["trace"]["fisher_trace_steps"]["step"] == [0, 2, 4, 6]
        assert_same_run(single, batched, hs, hb)


@pytest.mark.parametrize("arch", ["mlp", "lenet5"])
def test_a_diverging_member_stops_and_the_others_finish(arch):
    data = make_data(arch)
    models, cfgs, masks, seeds = members(arch, lrs=(0.1, 1e12, 0.05), epochs=2)
    singles, h_singles = train_singles(models, data, cfgs, masks, seeds)
    h_batched = train_batched(models, data, cfgs, masks=masks, seeds=seeds, device="cpu", progress=False)
    record = h_batched[1]["diverged"]
    assert set(record) == {"epoch", "step", "loss"} and record["loss"] in ("nan", "inf")
    assert record["epoch"] == 1 + (record["step"] - 1) // 3 and 2 <= record["step"] <= 6
    assert len(h_batched[1]["epoch"]) == record["epoch"] - 1  # no row for the epoch it died in
    assert all(torch.isfinite(p).all() for p in models[1].parameters())  # the weights before that step
    for single, batched, hs, hb in zip(singles, models, h_singles, h_batched):
        assert_same_run(single, batched, hs, hb)  # the diverged member too: train() stops the same way
    assert "diverged" not in h_batched[0] and len(h_batched[2]["epoch"]) == 2


class PruneMore:
    """A mask updater: at global step 2, drop the smallest half of fc2's kept weights, in place."""

    def on_step_end(self, state):
        if state.step == 2 and state.masks is not None:
            w, keep = state.model.fc2.weight.detach(), state.masks["fc2.weight"]
            kept = w.abs()[keep]
            keep &= w.abs() > kept.median()
            apply_masks(state.model, state.masks)


def test_mask_updaters_in_a_batch_equal_single_runs():
    data = make_data("mlp")
    models, cfgs, masks, seeds = members("mlp", epochs=2)
    masks = [None if m is None else {k: v.clone() for k, v in m.items()} for m in masks]
    singles, h_singles = train_singles(models, data, cfgs, [None if m is None else {k: v.clone() for k, v in m.items()}
                                                            for m in masks], seeds, [[PruneMore()] for _ in models])
    h_batched = train_batched(models, data, cfgs, masks=masks, seeds=seeds, device="cpu", progress=False,
                              callbacks=[[PruneMore()] for _ in models])
    for single, batched, hs, hb in zip(singles, models, h_singles, h_batched):
        assert_same_run(single, batched, hs, hb)
    assert masks[1]["fc2.weight"].sum() < global_magnitude_masks(make_model("mlp", 1), 0.5)["fc2.weight"].sum()


def test_resume_from_member_checkpoints_equals_an_uninterrupted_batch():
    """Members resume from their own checkpoints at different epochs (and one from scratch)."""
    data = make_data("mlp")
    models, cfgs, masks, seeds = members("mlp", epochs=3)
    start = [copy.deepcopy(m) for m in models]
    saved = [[] for _ in models]
    hooks = [lambda ck, i=i: saved[i].append(copy.deepcopy(ck)) for i in range(len(models))]
    full = train_batched(models, data, cfgs, masks=masks, seeds=seeds, device="cpu", progress=False,
                         on_epoch_end=hooks)
    assert [ck["epoch"] for ck in saved[0]] == [1, 2, 3]
    for t in [*saved[0][0]["model"].values(), saved[0][0]["optimizer"]["state"][0]["momentum_buffer"]]:
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()  # torch.save writes this member only

    # member 2's checkpoint comes from train() alone: the format is the same
    single_saved = []
    train(copy.deepcopy(start[2]), data, cfgs[2], masks=masks[2], seed=seeds[2], device="cpu", progress=False,
          on_epoch_end=lambda ck: single_saved.append(copy.deepcopy(ck)))

    for ck2 in (None, single_saved[0]):
        resumed_models = [copy.deepcopy(m) for m in start]
        checkpoints = [saved[0][0], saved[1][1], ck2]  # epoch 1, epoch 2, from the start or epoch 1
        resumed = train_batched(resumed_models, data, cfgs, masks=masks, seeds=seeds, device="cpu",
                                progress=False, checkpoints=copy.deepcopy(checkpoints))
        for a, b, ha, hb in zip(models, resumed_models, full, resumed):
            assert_same_run(a, b, ha, hb)

    # A member's checkpoint is train()'s own format: it resumes alone and ends where the batch did.
    alone = copy.deepcopy(start[1])
    h_alone = train(alone, data, cfgs[1], masks=masks[1], seed=seeds[1], device="cpu", progress=False,
                    checkpoint=copy.deepcopy(saved[1][0]))
    assert_same_run(models[1], alone, full[1], h_alone)
    single_opt = torch.optim.SGD(start[1].parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    torch.optim.lr_scheduler.MultiStepLR(single_opt, [1])
    assert saved[1][0]["optimizer"]["param_groups"][0].keys() == single_opt.state_dict()["param_groups"][0].keys()


def test_incompatible_configs_name_the_field():
    data = make_data("mlp")
    models = [make_model("mlp", s) for s in range(2)]
    with pytest.raises(ValueError, match=r"momentum.*cfgs\[0\]\.momentum=0\.9, cfgs\[1\]\.momentum=0\.0"):
        train_batched(models, data, [cfg(), cfg(momentum=0.0)], device="cpu", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        check_compatible([cfg(), cfg(0.01), cfg(batch_size=4)])
    check_compatible([cfg(0.1), cfg(0.01)])  # lr alone may differ
    with pytest.raises(ValueError, match="one entry per model"):
        train_batched(models, data, cfg(), seeds=[0], device="cpu", progress=False)


def test_models_it_cannot_batch_are_refused():
    data = make_data("mlp")
    with pytest.raises(ValueError, match="BatchNorm"):
        train_batched([nn.Sequential(nn.Linear(12, 4), nn.BatchNorm1d(4)) for _ in range(2)], data, cfg(),
                      device="cpu", progress=False)
    with pytest.raises(ValueError, match="another architecture"):
        train_batched([make_model("mlp", 0), build_model("mlp", num_classes=3, input_shape=(12,), hidden=(8,))],
                      data, cfg(), device="cpu", progress=False)
    with pytest.raises(ValueError, match="plain MLP"):
        train_batched([make_model("lenet5", 0)], make_data("lenet5"), cfg(), device="cpu", progress=False,
                      engine="bmm")


def test_should_batch_follows_the_measured_rule():
    mlp12 = build_model("mlp", num_classes=2, input_shape=(12,), hidden=(64, 32, 32, 18, 18, 6, 6))
    lenet300 = build_model("lenet300-100", num_classes=10, input_shape=(1, 28, 28))
    lenet5 = build_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    wide = build_model("mlp", num_classes=10, input_shape=(784,), hidden=(1000,))
    assert forward_macs(lenet300, 1) == 784 * 300 + 300 * 100 + 100 * 10
    convs = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 150
    assert forward_macs(lenet5, 1, (1, 28, 28)) == convs + 400 * 120 + 120 * 84 + 84 * 10
    assert should_batch(mlp12, 12, 18)
    assert not should_batch(mlp12, 12, 1)                          # nothing to batch
    assert should_batch(lenet300, 128, 34)                         # 267k weights, 34M MACs: 1.1-1.3x
    assert not should_batch(wide, 16, 8)                           # 795k weights: the stack spills the caches
    assert should_batch(lenet5, 4, 8, input_shape=(1, 28, 28))     # vmap, 1.7M MACs: 1.6x
    assert not should_batch(lenet5, 128, 34, input_shape=(1, 28, 28))  # 53M MACs: grouped convs lose
    assert not should_batch(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), 8, 10)
    with pytest.raises(ValueError, match="input_shape"):
        forward_macs(lenet5, 1)


def test_trains_batched_is_the_static_rule_of_the_run_store():
    """Independent of the member count, and only for the bmm engine (the vmap engine is not batch-invariant)."""
    from sparsegap.batched import trains_batched
    mlp12 = build_model("mlp", num_classes=2, input_shape=(12,), hidden=(64, 32, 32, 18, 18, 6, 6))
    lenet300 = build_model("lenet300-100", num_classes=10, input_shape=(1, 28, 28))
    lenet5 = build_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    wide = build_model("mlp", num_classes=10, input_shape=(784,), hidden=(1000,))
    assert trains_batched(mlp12, 12) and trains_batched(lenet300, 128, input_shape=(1, 28, 28))
    assert not trains_batched(wide, 16)
    assert not trains_batched(lenet5, 4, input_shape=(1, 28, 28))   # should_batch says it pays, but vmap
    assert not trains_batched(lenet300, 256, input_shape=(1, 28, 28))  # 68M MACs


def _fingerprint(model: nn.Module, history: dict) -> tuple:
    return ([v.detach().clone() for v in model.state_dict().values()],
            {k: v for k, v in history.items() if k != "seconds"})


@pytest.mark.parametrize("chapter", ["lenet300-100 fashion-mnist", "12-bit mlp tishby"])
def test_a_member_is_bitwise_the_same_in_a_batch_of_any_size_and_at_any_position(chapter):
    """What lets the run store train a run alone, in any batch, or resume it, to the same bits (one thread, as the
    store trains): members of batches of 1, 2, 6 and 16, in two orders, with their own seeds, masks and lrs."""
    from sparsegap.config import DataConfig, ModelConfig
    from sparsegap.pruning import global_magnitude_masks
    from sparsegap.runs import build_model_for, load_data
    from sparsegap.runs.threads import use_threads
    if chapter.startswith("lenet"):
        dc, mc, bs = DataConfig("fashion-mnist", train_size=300, test_size=500), ModelConfig("lenet300-100"), 128
    else:
        dc, mc, bs = DataConfig("tishby", train_size=240, test_size=96), ModelConfig("mlp", hidden=(64, 32, 32, 18, 18, 6, 6)), 12
    data = load_data(dc)
    base = TrainConfig(epochs=2, batch_size=bs, momentum=0.9, weight_decay=5e-4, milestones=(0.5,))

    def train_members(seeds):
        models = [build_model_for(mc, dc, seed=s) for s in seeds]
        masks = [global_magnitude_masks(m, 0.6) if s % 2 else None for m, s in zip(models, seeds)]
        cfgs = [TrainConfig(**{**base.__dict__, "lr": 0.05 + 0.005 * s}) for s in seeds]
        with use_threads(1):
            hs = train_batched(models, data, cfgs, masks=masks, seeds=list(seeds), device="cpu", progress=False)
        return {s: _fingerprint(m, h) for s, m, h in zip(seeds, models, hs)}

    seen: dict = {}
    for seeds in ([5], [5, 7], [7, 5], list(range(6)), list(range(16)), list(range(15, -1, -1))):
        for s, (weights, history) in train_members(seeds).items():
            if s not in seen:
                seen[s] = (weights, history, len(seeds))
                continue
            w0, h0, n0 = seen[s]
            assert all(torch.equal(a, b) for a, b in zip(w0, weights)), f"member {s}: batch of {n0} vs {len(seeds)}"
            assert h0 == history, f"member {s}: history, batch of {n0} vs {len(seeds)}"
