"""Mask updaters of sparsegap.dst: gradual pruning, SET, RigL, ERK densities, random masks."""

from __future__ import annotations

import math
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsegap.config import TrainConfig
from sparsegap.dst import (DynamicSparse, GradualPruning, cosine_drop_fraction, erk_densities, gradual_sparsity,
                           masks_for_densities, random_masks, uniform_densities)
from sparsegap.models import build_model
from sparsegap.pruning import prunable_parameters, sparsity_of
from sparsegap.train import train

N_IN, N_CLASSES = 12, 3


def tiny_data(n: int = 96, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_IN, generator=g)
    w = torch.randn(N_IN, N_CLASSES, generator=g)
    y = (x @ w).argmax(1)
    return types.SimpleNamespace(x_train=x, y_train=y, x_test=x[:32], y_test=y[:32])


def tiny_mlp(hidden=(16, 16), seed: int = 0) -> nn.Module:
    return build_model("mlp", hidden=hidden, num_classes=N_CLASSES, input_shape=(N_IN,), seed=seed)


def cfg(epochs: int = 4, batch_size: int = 16) -> TrainConfig:
    # 96 samples at batch 16: 6 steps per epoch
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=0.05, momentum=0.9, weight_decay=5e-4,
                       schedule="constant")


def run(model, callbacks, epochs=4, masks=None):
    return train(model, tiny_data(), cfg(epochs), masks=masks, callbacks=callbacks, device="cpu",
                 progress=False)


class Recorder:
    """Snapshots of masks and weights after every step (runs after the updaters in the list)."""

    def __init__(self):
        self.masks, self.weights = [], []

    def on_step_end(self, state):
        self.masks.append({n: m.clone() for n, m in state.masks.items()})
        params = dict(state.model.named_parameters())
        self.weights.append({n: params[n].detach().clone() for n in state.masks})


# ---------------------------------------------------------------- gradual schedule

def test_gradual_schedule_values():
    assert gradual_sparsity(0, 0.9, 10, 50) == 0.0
    assert gradual_sparsity(10, 0.9, 10, 50) == 0.0
    assert gradual_sparsity(50, 0.9, 10, 50) == 0.9
    assert gradual_sparsity(1000, 0.9, 10, 50) == 0.9
    assert gradual_sparsity(30, 0.8, 10, 50) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    values = [gradual_sparsity(s, 0.95, 3, 40) for s in range(60)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert values[:4] == [0.0] * 4 and values[40:] == [0.95] * 20


@pytest.mark.parametrize("args, match", [
    ((5, 1.0, 0, 10), r"final must be in \[0, 1\)"),
    ((5, -0.1, 0, 10), r"final must be in \[0, 1\)"),
    ((5, 0.5, 10, 5), "end precedes its start"),
    ((5, 0.5, 10, 10), "end precedes its start"),
    ((5, 0.5, -1, 10), "start must be >= 0"),
])
def test_gradual_schedule_errors(args, match):
    with pytest.raises(ValueError, match=match):
        gradual_sparsity(*args)


def test_gradual_pruning_constructor_errors():
    with pytest.raises(ValueError, match=r"final_sparsity must be in \[0, 1\)"):
        GradualPruning(1.0, 0, 10, 1)
    with pytest.raises(ValueError, match="end precedes its start"):
        GradualPruning(0.5, 10, 3, 1)
    with pytest.raises(ValueError, match="every must be a positive int.*got 0"):
        GradualPruning(0.5, 0, 10, 0)


def test_gradual_pruning_reaches_final_sparsity_with_nested_masks():
    model = tiny_mlp()
    gp, rec = GradualPruning(0.8, start_step=2, end_step=15, every=3), Recorder()
    run(model, [gp, rec], epochs=4)                                   # 24 steps
    total = sum(m.numel() for m in rec.masks[-1].values())
    kept = sum(int(m.sum()) for m in rec.masks[-1].values())
    assert abs(kept - 0.2 * total) <= 1
    assert abs(sparsity_of(rec.masks[14]) - 0.8) <= 1 / total          # step 15 = end_step
    for before, after in zip(rec.masks, rec.masks[1:]):               # nested: pruned weights never return
        for n in before:
            assert not (after[n] & ~before[n]).any()
    sparsities = [sparsity_of(m) for m in rec.masks]
    assert sparsities[:4] == [0.0] * 4 and sparsities[4] > 0           # step 2's target is 0; step 5 prunes
    assert all(a <= b for a, b in zip(sparsities, sparsities[1:]))
    for step, s in enumerate(sparsities, start=1):                     # follows the schedule at update steps
        if gp.is_update_step(step):
            assert abs(s - gp.target(step)) <= 1 / total
    assert list(rec.masks[-1]) == list(prunable_parameters(model))


def test_gradual_pruning_is_a_function_of_step_and_masks():
    """Two runs with different callback objects (as after a resume) prune identically."""
    a, b = Recorder(), Recorder()
    run(tiny_mlp(), [GradualPruning(0.7, 0, 12, 2), a], epochs=3)
    run(tiny_mlp(), [GradualPruning(0.7, 0, 12, 2), b], epochs=3)
    for ma, mb in zip(a.masks, b.masks):
        assert all(torch.equal(ma[n], mb[n]) for n in ma)


def _pruned_weights_stay_zero(zero_momentum: bool):
    model, rec = tiny_mlp(), Recorder()
    gp = GradualPruning(0.6, 1, 10, 3, zero_momentum=zero_momentum)
    run(model, [gp, rec], epochs=3)                                   # 18 steps, updates at 1, 4, 7, 10
    moved = 0
    for t, masks in enumerate(rec.masks):
        for n, m in masks.items():
            # every weight pruned at or before step t+1, at every later step
            for later in rec.weights[t:]:
                moved += int((later[n][~m] != 0).sum())
    return moved, gp


def test_pruned_weights_stay_exactly_zero_with_momentum_and_weight_decay():
    moved, gp = _pruned_weights_stay_zero(zero_momentum=True)
    assert moved == 0
    # the pitfall is real: at the last update, the pruned weights had non-zero momentum entries
    assert gp.last_update["stale_momentum"] > 0


def test_without_zeroing_the_momentum_pruned_weights_revive():
    moved, _ = _pruned_weights_stay_zero(zero_momentum=False)
    assert moved > 0


# ---------------------------------------------------------------- densities and random masks

def test_uniform_densities_and_random_masks_counts():
    model = tiny_mlp()
    d = uniform_densities(model, 0.3)
    assert d == {"fc1.weight": 0.3, "fc2.weight": 0.3, "fc3.weight": 0.3}
    masks = random_masks(model, d, seed=1)
    params = prunable_parameters(model)
    for n, m in masks.items():
        assert m.dtype == torch.bool and m.shape == params[n].shape
        assert int(m.sum()) == max(1, round(0.3 * m.numel()))
    assert all(torch.equal(masks[n], random_masks(model, d, seed=1)[n]) for n in masks)
    assert not all(torch.equal(masks[n], random_masks(model, d, seed=2)[n]) for n in masks)
    assert int(random_masks(model, {"fc3.weight": 1e-6}, seed=0)["fc3.weight"].sum()) == 1


@pytest.mark.parametrize("hidden, density", [((16, 16), 0.2), ((64, 8), 0.1), ((2,), 0.5), ((200, 3), 0.5),
                                             ((1, 400), 0.3)])
def test_erk_densities_capped_and_meet_the_budget(hidden, density):
    model = tiny_mlp(hidden)
    d = erk_densities(model, density)
    params = prunable_parameters(model)
    assert all(0 < v <= 1 for v in d.values())
    total = sum(p.numel() for p in params.values())
    assert sum(d[n] * params[n].numel() for n in d) == pytest.approx(density * total, abs=1e-6)
    kept = sum(int(m.sum()) for m in random_masks(model, d, seed=0).values())
    assert abs(kept - density * total) <= max(1, len(d) / 2)


def test_erk_capping_is_needed_for_a_tiny_layer_next_to_a_huge_one():
    # fc1: 2 -> 100 (200 weights, ratio 0.51), fc2: 100 -> 100 (10000 weights, ratio 0.02)
    model = nn.Sequential(nn.Linear(2, 100), nn.Linear(100, 100))
    sizes = {"0.weight": 200, "1.weight": 10000}
    raw = {"0.weight": 102 / 200, "1.weight": 200 / 10000}
    total = sum(sizes.values())
    eps = 0.5 * total / sum(raw[n] * sizes[n] for n in sizes)
    assert eps * raw["0.weight"] > 1                                  # the pitfall: naive ERK exceeds 1
    d = erk_densities(model, 0.5)
    assert d["0.weight"] == 1.0
    assert d["1.weight"] == pytest.approx((0.5 * total - 200) / 10000)
    kept = sum(int(m.sum()) for m in random_masks(model, d, seed=0).values())
    assert abs(kept - 0.5 * total) <= 1
    # ERK gives the small layer more density than the large one
    d2 = erk_densities(tiny_mlp((64, 8)), 0.2)
    assert d2["fc3.weight"] > d2["fc1.weight"]


def test_erk_conv_ratio():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 5))
    d = erk_densities(model, 0.1)
    ratio = (3 + 8 + 3 + 3) / (3 * 8 * 9) / ((8 + 5) / 40)
    assert d["0.weight"] / d["2.weight"] == pytest.approx(ratio)
    assert erk_densities(model, 1.0) == {"0.weight": 1.0, "2.weight": 1.0}


def test_density_errors():
    with pytest.raises(ValueError, match="ERK on a model with no prunable layer"):
        erk_densities(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)), 0.5)
    with pytest.raises(ValueError, match="ERK on a model with no prunable layer"):
        erk_densities(nn.Sequential(nn.Linear(3, 2)), 0.5, exclude_output=True)
    for bad in (0.0, 1.5, -0.2, float("nan")):
        with pytest.raises(ValueError, match=r"density must be a number in \(0, 1\]"):
            erk_densities(tiny_mlp(), bad)
    with pytest.raises(ValueError, match="not a prunable weight"):
        random_masks(tiny_mlp(), {"fc1.bias": 0.5}, seed=0)
    with pytest.raises(ValueError, match="distribution must be one of"):
        masks_for_densities(tiny_mlp(), 0.5, distribution="gaussian")


# ---------------------------------------------------------------- cosine drop fraction, DST errors

def test_cosine_drop_fraction_values():
    assert cosine_drop_fraction(0, 0.3, 100) == pytest.approx(0.3)
    assert cosine_drop_fraction(50, 0.3, 100) == pytest.approx(0.15)
    assert cosine_drop_fraction(25, 0.3, 100) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))
    assert cosine_drop_fraction(100, 0.3, 100) == pytest.approx(0.0, abs=1e-15)
    assert cosine_drop_fraction(101, 0.3, 100) == 0.0
    values = [cosine_drop_fraction(s, 0.5, 40) for s in range(45)]
    assert all(a >= b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="set", drop_fraction=0.0, every=2, end_step=10), r"drop_fraction must be a number in \(0, 1\)"),
    (dict(method="rigl", drop_fraction=1.0, every=2, end_step=10), r"drop_fraction must be .*got 1.0"),
    (dict(method="set", drop_fraction=-0.1, every=2, end_step=10), "drop_fraction"),
    (dict(method="set", drop_fraction=0.3, every=0, end_step=10), "every must be a positive int.*got 0"),
    (dict(method="set", drop_fraction=0.3, every=2, end_step=0), "end_step must be a positive int"),
    (dict(method="snip", drop_fraction=0.3, every=2, end_step=10), r"method must be one of \('set', 'rigl'\)"),
])
def test_dynamic_sparse_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DynamicSparse(**kwargs)


def test_dynamic_sparse_needs_initial_masks():
    with pytest.raises(ValueError, match="needs the run's initial sparse masks"):
        run(tiny_mlp(), [DynamicSparse("set", 0.3, 2, 10)], epochs=1)


# ---------------------------------------------------------------- SET and RigL

class UpdateWatcher:
    """After the updater's on_step_end: per-update masks before/after, weights and momentum buffers.
    Also keeps the dense gradient of each step, computed by hand (a second forward/backward on a copy)."""

    def __init__(self, dst: DynamicSparse):
        self.dst, self.before, self.records, self.hand_grads = dst, None, [], {}

    def on_train_begin(self, state):
        self.before = {n: m.clone() for n, m in state.masks.items()}

    def on_after_backward(self, state):
        if self.dst.is_update_step(state.step + 1):
            import copy
            net = copy.deepcopy(state.model)
            net.zero_grad(set_to_none=True)
            xb, yb = state.batch
            F.cross_entropy(net(xb), yb).backward()
            params = dict(net.named_parameters())
            self.hand_grads[state.step + 1] = {n: params[n].grad.abs().clone() for n in state.masks}
            # the loop's own dense gradient agrees with the hand-computed one
            own = dict(state.model.named_parameters())
            for n in state.masks:
                assert torch.allclose(own[n].grad, params[n].grad, atol=1e-6)

    def on_step_end(self, state):
        after = {n: m.clone() for n, m in state.masks.items()}
        if self.dst.is_update_step(state.step):
            params = dict(state.model.named_parameters())
            self.records.append({
                "step": state.step, "before": self.before, "after": after,
                "weights": {n: params[n].detach().clone() for n in after},
                "buf": {n: state.optimizer.state[params[n]]["momentum_buffer"].clone() for n in after},
                "changed": dict(self.dst.last_update["changed"]),
            })
        self.before = after


class PreUpdate:
    """Before the updater's on_step_end: the weights after the optimizer step, before the update."""

    def __init__(self, watch: UpdateWatcher):
        self.watch, self.weights = watch, {}

    def on_step_end(self, state):
        if self.watch.dst.is_update_step(state.step):
            params = dict(state.model.named_parameters())
            self.weights[state.step] = {n: params[n].detach().clone() for n in state.masks}


def dst_run(method, hidden=(16, 16), density=0.3, every=3, end_step=15, epochs=3, distribution="uniform"):
    model = tiny_mlp(hidden)
    masks = masks_for_densities(model, density, distribution=distribution, seed=3)
    dst = DynamicSparse(method, 0.4, every, end_step, seed=5)
    watch = UpdateWatcher(dst)
    watch.pre = PreUpdate(watch)
    run(model, [watch.pre, dst, watch], epochs=epochs, masks=masks)
    return dst, watch


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_updates_keep_layer_counts_change_the_mask_and_zero_regrown_weights(method):
    dst, watch = dst_run(method)
    assert [r["step"] for r in watch.records] == [3, 6, 9, 12, 15]
    assert dst.n_updates == 5 and dst.last_update["step"] == 15
    for r in watch.records:
        f = cosine_drop_fraction(r["step"], 0.4, 15)
        for n, before in r["before"].items():
            after = r["after"][n]
            assert int(after.sum()) == int(before.sum())              # each layer keeps its active count
            grown = after & ~before
            dropped = before & ~after
            k = min(round(f * int(before.sum())), int((~before).sum()))
            assert int(grown.sum()) == int(dropped.sum()) == k == r["changed"][n]
            assert (r["weights"][n][grown] == 0).all()                 # regrown weights start at exactly 0
            assert (r["buf"][n][grown] == 0).all()                     # ... with no momentum
            assert (r["buf"][n][dropped] == 0).all()
            assert (r["weights"][n][~after] == 0).all()
    # the mask really changed (the last update has f = 0: nothing changes then)
    assert any(not torch.equal(r["before"][n], r["after"][n]) for r in watch.records for n in r["after"])


def test_rigl_grows_exactly_the_top_gradient_inactive_weights():
    dst, watch = dst_run("rigl")
    checked = 0
    for r in watch.records:
        grad = watch.hand_grads[r["step"]]
        for n, before in r["before"].items():
            after = r["after"][n]
            grown = (after & ~before).reshape(-1)
            k = int(grown.sum())
            if k == 0:
                continue
            g = grad[n].reshape(-1).clone()
            g[before.reshape(-1)] = -1.0                               # only weights inactive before
            expected = torch.sort(g, descending=True, stable=True).indices[:k]
            # compare as sets of values (robust to last-bit ties) and as positions
            assert torch.equal(torch.sort(grown.nonzero().reshape(-1)).values, torch.sort(expected).values)
            checked += 1
    assert checked >= 3


def test_set_drops_smallest_magnitudes_and_is_seeded():
    _, a = dst_run("set")
    _, b = dst_run("set")
    for ra, rb in zip(a.records, b.records):
        assert all(torch.equal(ra["after"][n], rb["after"][n]) for n in ra["after"])
    # the dropped weights are the active ones of smallest |w| (after the optimizer step, before the update)
    checked = 0
    for r in a.records:
        w = a.pre.weights[r["step"]]
        for n, before in r["before"].items():
            dropped, survived = before & ~r["after"][n], before & r["after"][n]
            if dropped.any():
                assert w[n].abs()[dropped].max() <= w[n].abs()[survived].min()
                checked += 1
    assert checked >= 3


def test_erk_dst_run_keeps_global_density():
    dst, watch = dst_run("rigl", hidden=(32, 8), density=0.25, distribution="erk")
    first, last = watch.records[0]["before"], watch.records[-1]["after"]
    assert sum(int(m.sum()) for m in first.values()) == sum(int(m.sum()) for m in last.values())


# ---------------------------------------------------------------- resume

@pytest.mark.parametrize("make", [lambda: GradualPruning(0.75, 2, 20, 3),
                                  lambda: DynamicSparse("set", 0.4, 4, 20, seed=1),
                                  lambda: DynamicSparse("rigl", 0.4, 4, 20)], ids=["gradual", "set", "rigl"])
def test_resumed_run_matches_an_uninterrupted_one(make):
    import copy
    dynamic = not isinstance(make(), GradualPruning)

    def start_masks():
        return masks_for_densities(tiny_mlp(), 0.3, seed=0) if dynamic else None

    class Final:
        def on_epoch_end(self, state):
            self.masks = {n: m.clone() for n, m in state.masks.items()}

    ckpts, fa, fb = [], Final(), Final()
    full = tiny_mlp()
    train(full, tiny_data(), cfg(4), masks=start_masks(), callbacks=[make(), fa], device="cpu", progress=False,
          on_epoch_end=lambda c: ckpts.append(copy.deepcopy(c)))
    resumed = tiny_mlp()
    train(resumed, tiny_data(), cfg(4), masks=start_masks(), callbacks=[make(), fb], device="cpu",
          progress=False, checkpoint=ckpts[1])                         # resume after epoch 2 (step 12)
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))
    assert all(torch.equal(fa.masks[n], fb.masks[n]) for n in fa.masks)
    assert not all(torch.equal(fa.masks[n], ckpts[1]["masks"][n]) for n in fa.masks)   # updates after the resume
