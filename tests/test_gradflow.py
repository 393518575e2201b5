"""Gradient flow (issue "gradient flow"): the gradient norm, the authors' minibatch SNR and Liu et
al.'s per-sample GSNR, each against a direct autograd computation on tiny networks; their trackers;
and the comparison of two networks (distance, disagreement, ensemble)."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsegap.config import DataConfig, RunConfig, TrainConfig
from sparsegap.metrics.compare import compare, disagreement, ensemble_accuracy, l2_distance
from sparsegap.metrics.gradflow import (GradNormCallback, GradSNRCallback, GSNRCallback, fixed_batch, grad_norm,
                                        gsnr_per_layer)
from sparsegap.models import build_model
from sparsegap.pruning import apply_masks
from sparsegap.trackers import TrackerSpec, make_trackers, parse_tracker
from sparsegap.train import train

N_IN, N_CLASSES = 6, 3
CFG = TrainConfig(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-3, schedule="constant")


def mlp(seed: int = 0, hidden=(8, 5)) -> nn.Module:
    return build_model("mlp", hidden=hidden, num_classes=N_CLASSES, input_shape=(N_IN,), seed=seed)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(96, N_IN, generator=g), torch.randn(40, N_IN, generator=g)
    w = torch.randn(N_IN, N_CLASSES, generator=g)
    y, yt = (x @ w).argmax(1), (xt @ w).argmax(1)
    y[:10] = torch.randint(0, N_CLASSES, (10,), generator=g)  # some noise: gradients that do not vanish
    return SimpleNamespace(x_train=x, y_train=y, x_test=xt, y_test=yt)


def random_masks(model: nn.Module, names=("fc1.weight", "fc2.weight"), density=0.5, seed=1) -> dict:
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    masks = {}
    for n in names:
        m = torch.rand(params[n].shape, generator=g) < density
        m.view(-1)[0] = True
        masks[n] = m
    return masks


# ------------------------------------------------------------------------------------ grad_norm

def direct_grad_norm(model, x, y, masks=None) -> float:
    work = copy.deepcopy(model)
    F.cross_entropy(work(x), y).backward()
    masks = masks or {}
    return math.sqrt(sum(float(((p.grad * masks[n]) if n in masks else p.grad).double().pow(2).sum())
                         for n, p in work.named_parameters()))


def test_grad_norm_equals_autograd_with_pruned_entries_left_out(data):
    model = mlp()
    masks = random_masks(model)
    apply_masks(model, masks)
    x, y = data.x_train[:50], data.y_train[:50]
    dense, sparse = grad_norm(model, x, y), grad_norm(model, x, y, masks)
    assert dense == pytest.approx(direct_grad_norm(model, x, y), rel=1e-6)
    assert sparse == pytest.approx(direct_grad_norm(model, x, y, masks), rel=1e-6)
    assert sparse < dense  # the pruned entries' gradients are not zero, and are left out
    assert all(p.grad is None for p in model.parameters())


def test_grad_norm_runs_in_the_current_mode_and_leaves_the_model_as_it_was(data):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(N_IN, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, N_CLASSES))
    x, y = data.x_train[:40], data.y_train[:40]
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    value = grad_norm(model, x, y)
    assert torch.equal(torch.get_rng_state(), rng)             # dropout's draws did not move the stream
    for k, v in model.state_dict().items():                     # nor BatchNorm's running statistics
        assert torch.equal(v, before[k]), k
    assert model.training and all(p.grad is None for p in model.parameters())
    torch.manual_seed(5)                                        # train mode: batch statistics, same dropout
    assert value == pytest.approx(direct_grad_norm(model, x, y), rel=1e-6)
    model.eval()
    assert grad_norm(model, x, y) == pytest.approx(direct_grad_norm(model, x, y), rel=1e-6)


def test_grad_norm_errors_name_the_parameter(data):
    model = mlp()
    with pytest.raises(ValueError, match=r"masks\['fc1.weight'\] must have shape \(8, 6\)"):
        grad_norm(model, data.x_train, data.y_train, {"fc1.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="does not fit the model"):
        grad_norm(model, torch.randn(4, 5), data.y_train[:4])
    with pytest.raises(ValueError, match="max_samples must be a positive int"):
        GradNormCallback(data.x_train, data.y_train, max_samples=0)
    with pytest.raises(ValueError, match="unit must be one of"):
        GradNormCallback(data.x_train, data.y_train, unit="epochs")


# ------------------------------------------------------------------------------------ grad_snr

class RecordGradients:
    """Every minibatch gradient of the prunable weights, masked as train() masks it, per epoch."""

    def __init__(self, names):
        self.names, self.grads = names, {}

    def on_after_backward(self, state):
        params = dict(state.model.named_parameters())
        masks = state.masks or {}
        for n in self.names:
            g = params[n].grad.detach().clone()
            g = g * masks[n] if n in masks else g
            self.grads.setdefault(state.epoch, {}).setdefault(n, []).append(g)


def test_grad_snr_matches_a_direct_computation_over_the_epochs_minibatches(data):
    model = mlp()
    masks = random_masks(model)
    names = ["fc1.weight", "fc2.weight", "fc3.weight"]
    rec = RecordGradients(names)
    cfg = TrainConfig(epochs=4, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-3, schedule="constant")
    trackers = make_trackers(["grad_snr@2"], data)
    h = train(model, data, cfg, masks=masks, callbacks=[rec, *trackers], device="cpu", progress=False)
    trace = h["trace"]
    terms = {k for k in trace if k.startswith(("grad_snr_mean/", "grad_snr_std/"))}
    assert terms == {f"grad_snr_{t}/{n}" for t in ("mean", "std") for n in ("fc1", "fc2", "fc3")}
    for n in ("fc1", "fc2", "fc3"):   # the SNR is the ratio of its two logged terms
        snr, mean, std = (trace[f"grad_snr{t}/{n}"]["value"] for t in ("", "_mean", "_std"))
        assert snr == pytest.approx([a / b for a, b in zip(mean, std)])
    assert set(trace) - terms == {"grad_snr/fc1", "grad_snr/fc2", "grad_snr/fc3"}
    for t in trace.values():
        assert t["epochs"] == [2.0, 4.0] and t["epoch"] == [1, 3] and t["step"] == [12, 24]
    for k, epoch in enumerate((1, 3)):
        for n in names:
            g = torch.stack(rec.grads[epoch][n]).double()
            assert len(g) == 6
            mean, std = g.mean(0), g.std(0, unbiased=False)
            if n in masks:
                mean, std = mean * masks[n], std * masks[n]
            direct = float(mean.norm() / std.norm())
            assert trace[f"grad_snr/{n[:-7]}"]["value"][k] == pytest.approx(direct, rel=1e-6), (epoch, n)


def test_grad_snr_accumulators_are_per_epoch_and_need_separate_gradients(data):
    cb = GradSNRCallback(every=1)
    assert cb.wants_step_end and cb.snr() == {}
    model = mlp()
    state = SimpleNamespace(model=model, masks=None, epoch=0, logged=[])
    state.log = lambda name, value: state.logged.append((name, value))
    cb.on_train_begin(state)
    assert state.logged == []                                # nothing at the start
    with pytest.raises(RuntimeError, match="never writes p.grad"):
        cb.on_step_end(state)                               # as in sparsegap.batched
    F.cross_entropy(model(data.x_train[:8]), data.y_train[:8]).backward()
    cb.on_step_end(state)
    with pytest.raises(RuntimeError, match="p.grad has not changed since the last step"):
        cb.on_step_end(state)                               # a stale gradient is not a new minibatch's
    cb.on_epoch_end(state)                                  # one minibatch: no spread, NaN
    assert [n for n, _ in state.logged if n.startswith("grad_snr/")] == ["grad_snr/fc1", "grad_snr/fc2", "grad_snr/fc3"]
    assert all(math.isnan(v) for n, v in state.logged if n.startswith("grad_snr/"))
    assert cb.steps == 0 and cb.snr() == {}                  # reset for the next epoch


# ------------------------------------------------------------------------------------ gsnr

def direct_gsnr(model, x, y, masks=None) -> dict[str, float]:
    layers = ["fc1", "fc2", "fc3"]
    params = dict(model.named_parameters())
    per = {n: [] for n in layers}
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i: i + 1]), y[i: i + 1])
        for n, g in zip(layers, torch.autograd.grad(loss, [params[f"{n}.weight"] for n in layers])):
            per[n].append(g.double())
    out = {}
    for n in layers:
        g = torch.stack(per[n])
        mean, var = g.mean(0), g.var(0, unbiased=False)
        keep = var > 0
        if masks and f"{n}.weight" in masks:
            keep &= masks[f"{n}.weight"]
        out[n] = float((mean[keep] ** 2 / var[keep]).mean())
    return out


def test_gsnr_per_layer_equals_a_per_sample_autograd_loop(data):
    model = mlp(seed=3)
    with torch.no_grad():                                   # a dead ReLU unit: 0/0 ratios, left out
        model.fc1.weight[2] = 0.0
        model.fc1.bias[2] = -1.0
    masks = random_masks(model, names=("fc1.weight", "fc3.weight"))
    apply_masks(model, masks)
    x, y = data.x_train[:45], data.y_train[:45]
    direct = direct_gsnr(model, x, y, masks)
    for chunk in (7, 64):
        got = gsnr_per_layer(model, x, y, masks, chunk_size=chunk)
        assert list(got) == ["fc1", "fc2", "fc3"]
        for n in got:
            assert got[n] == pytest.approx(direct[n], rel=1e-4), (chunk, n)
    assert all(p.grad is None for p in model.parameters()) and model.training
    sub_x, sub_y = fixed_batch(x, y, 20, seed=4)
    subset = gsnr_per_layer(model, x, y, max_samples=20, seed=4)
    assert subset == pytest.approx(direct_gsnr(model, sub_x, sub_y), rel=1e-4)
    with pytest.raises(ValueError, match="at least 2 samples"):
        gsnr_per_layer(model, x[:1], y[:1])
    with pytest.raises(ValueError, match="chunk_size must be a positive int, got 0"):
        gsnr_per_layer(model, x, y, chunk_size=0)


# ------------------------------------------------------------------------------------ trackers

@pytest.mark.parametrize("spec, match", [
    ("grad_snr:test@1", r"grad_snr is measured over the training minibatches.*'grad_snr@<N>'"),
    ("grad_snr@2step", r"no '@<N>step'"),
    ("gradnorm@1", r"unknown metric 'gradnorm'.*grad_norm, grad_snr, gsnr"),
    ("gsnr:bogus@1", r"unknown subset 'bogus'"),
    ("grad_norm@0", "must look like"),
])
def test_bad_gradient_specs_are_clear_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_tracker(spec)
    with pytest.raises(ValueError, match=match):
        RunConfig("dense", DataConfig("digits"), track=(spec,))


def test_gradient_trackers_parse_and_log_at_the_expected_epochs(data):
    assert parse_tracker("grad_norm@1") == TrackerSpec("grad_norm", "train", 1, "epoch", "grad_norm")
    assert parse_tracker("grad_norm:test@2") == TrackerSpec("grad_norm", "test", 2, "epoch", "grad_norm:test")
    assert parse_tracker("grad_snr@2") == TrackerSpec("grad_snr", "train", 2, "epoch", "grad_snr")
    assert parse_tracker("gsnr@3step") == TrackerSpec("gsnr", "train", 3, "step", "gsnr")
    specs = ["grad_norm@1", "grad_norm:test@2", "grad_snr@2", "gsnr@1", "gsnr:test@4step"]
    cbs = make_trackers(specs, data)
    assert [type(c) for c in cbs] == [GradNormCallback, GradNormCallback, GradSNRCallback, GSNRCallback, GSNRCallback]
    assert [c.wants_step_end for c in cbs] == [False, False, True, False, True]
    assert len(cbs[0].x) == 96 and len(cbs[1].x) == 40      # min(len(x), 256) samples
    model = mlp()
    masks = random_masks(model)
    h = train(model, data, CFG, masks=masks, callbacks=cbs, device="cpu", progress=False)
    trace = h["trace"]
    layers = ("fc1", "fc2", "fc3")
    assert {k for k in trace if not k.startswith(("grad_snr_mean/", "grad_snr_std/"))} == {
        "grad_norm", "grad_norm:test", *(f"{k}/{n}" for k in ("grad_snr", "gsnr", "gsnr:test")
                                                           for n in layers)}
    assert trace["grad_norm"]["epochs"] == [0.0, 1.0, 2.0]
    assert trace["grad_norm:test"]["epochs"] == [0.0, 2.0]
    for n in layers:
        assert trace[f"grad_snr/{n}"]["epochs"] == [2.0]
        assert trace[f"gsnr/{n}"]["epochs"] == [0.0, 1.0, 2.0]
        assert trace[f"gsnr:test/{n}"]["step"] == [0, 4, 8, 12]
    # the last values are those of the trained weights on the fixed batch, with the run's masks
    xb, yb = fixed_batch(data.x_train, data.y_train, 256)
    assert trace["grad_norm"]["value"][-1] == pytest.approx(grad_norm(model, xb, yb, masks), rel=1e-6)
    xt, yt = fixed_batch(data.x_test, data.y_test, 256)
    assert trace["grad_norm:test"]["value"][-1] == pytest.approx(grad_norm(model, xt, yt, masks), rel=1e-6)
    last = gsnr_per_layer(model, xb, yb, masks)
    for n in layers:
        assert trace[f"gsnr/{n}"]["value"][-1] == pytest.approx(last[n], rel=1e-6)
        assert all(v > 0 for v in trace[f"gsnr/{n}"]["value"])


# ------------------------------------------------------------------------------------ compare

def linear(weight, bias) -> nn.Module:
    m = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor(weight))
        m[0].bias.copy_(torch.tensor(bias))
    return m


def test_a_model_compared_with_itself(data):
    model = mlp()
    train(model, data, CFG, device="cpu", progress=False)
    x, y = data.x_test, data.y_test
    acc = float((model(x).argmax(1) == y).float().mean())
    assert disagreement(model, model, x) == 0.0
    assert ensemble_accuracy(model, model, x, y) == pytest.approx(acc)
    assert l2_distance(model, model) == 0.0
    sparse = copy.deepcopy(model)
    masks = random_masks(sparse)
    apply_masks(sparse, masks)                               # other masks, one architecture
    out = compare(model, sparse, x, y)
    assert set(out) == {"l2_distance", "disagreement", "ensemble_accuracy", "accuracy_a", "accuracy_b"}
    assert out["accuracy_a"] == pytest.approx(acc)
    pruned = math.sqrt(sum(float((model.state_dict()[n][~m] ** 2).sum()) for n, m in masks.items()))
    assert out["l2_distance"] == pytest.approx(pruned, rel=1e-6)


def test_compare_on_a_hand_computed_case():
    a = linear([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])        # predicts the larger coordinate
    b = linear([[0.0, 0.0], [0.0, 0.0]], [0.0, 3.0])        # always class 1, with p = 1 / (1 + e^-3)
    x = torch.tensor([[2.0, 0.0], [5.0, 0.0], [0.0, 1.0], [1.0, 0.5]])
    y = torch.tensor([0, 0, 1, 1])
    # a: 0, 0, 1, 0 (3 of 4 right); b: 1, 1, 1, 1 (2 of 4); they differ on samples 0, 1 and 3
    # ensemble: p0 = (softmax_a(0) + 1/(1+e^3)) / 2 > 1/2 where softmax_a(0) = sigmoid(x0 - x1) > sigmoid(3),
    # i.e. x0 - x1 > 3: only sample 1 -> predictions 1, 0, 1, 1 -> 3 of 4 right
    out = compare(a, b, x, y)
    assert out == pytest.approx({"l2_distance": math.sqrt(1 + 1 + 9), "disagreement": 0.75,
                                 "ensemble_accuracy": 0.75, "accuracy_a": 0.75, "accuracy_b": 0.5})
    assert disagreement(a, b, x) == 0.75 and ensemble_accuracy(a, b, x, y) == 0.75
    assert l2_distance(a, b) == pytest.approx(math.sqrt(11))


def test_different_architectures_raise(data):
    a, b = mlp(hidden=(8, 5)), mlp(hidden=(8, 4))
    for fn in (lambda: l2_distance(a, b), lambda: compare(a, b, data.x_test, data.y_test)):
        with pytest.raises(ValueError, match=r"a and b must share one architecture.*'fc2.weight'.*\(5, 8\).*\(4, 8\)"):
            fn()
    other = build_model("mlp", hidden=(4,), num_classes=4, input_shape=(N_IN,), seed=0)
    with pytest.raises(ValueError, match=r"a and b must predict the same classes.*\(40, 3\).*\(40, 4\)"):
        disagreement(a, other, data.x_test)
    with pytest.raises(TypeError, match="b must be an nn.Module, got str"):
        compare(a, "model", data.x_test, data.y_test)
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 3\)"):
        ensemble_accuracy(a, a, data.x_test, data.y_test + 3)


def test_disagreement_classes_count_the_disagreeing_samples_per_true_class():
    from sparsegap.metrics.compare import disagreement, disagreement_classes
    torch.manual_seed(0)
    a = build_model("mlp", hidden=(8,), num_classes=3, input_shape=(5,), seed=0)
    b = build_model("mlp", hidden=(8,), num_classes=3, input_shape=(5,), seed=1)
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    counts = disagreement_classes(a, b, x, y)
    with torch.no_grad():
        differ = a(x).argmax(1) != b(x).argmax(1)
    assert counts.tolist() == [int((differ & (y == c)).sum()) for c in range(3)]
    assert int(counts.sum()) == round(disagreement(a, b, x) * 40)
    assert disagreement_classes(a, a, x, y).sum() == 0
