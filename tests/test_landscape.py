"""sparsegap.landscape: linear paths, BatchNorm re-estimation, filter-normalised directions, distances."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from sparsegap.data import DataSplits
from sparsegap.landscape import (check_same_architecture, distance_from_init, filter_normalized_direction,
                                 has_batchnorm, interpolate_state, linear_path, loss_along_direction,
                                 reestimate_bn)
from sparsegap.metrics.basic import evaluate
from sparsegap.models import build_model
from sparsegap.pruning import global_magnitude_masks


def toy_data(input_shape=(5,), n_train=48, n_test=24, num_classes=3, seed=0) -> DataSplits:
    gen = torch.Generator().manual_seed(seed)
    return DataSplits(name="toy",
                      x_train=torch.randn(n_train, *input_shape, generator=gen),
                      y_train=torch.randint(0, num_classes, (n_train,), generator=gen),
                      x_test=torch.randn(n_test, *input_shape, generator=gen),
                      y_test=torch.randint(0, num_classes, (n_test,), generator=gen),
                      num_classes=num_classes)


def mlp(seed, hidden=(8,)):
    return build_model("mlp", hidden=hidden, num_classes=3, input_shape=(5,), seed=seed)


def bn_net(seed):
    """BatchNorm after a ReLU: its input statistics are not linear in the weights."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def states_equal(a: nn.Module, b: dict) -> bool:
    sa = a.state_dict()
    return sa.keys() == b.keys() and all(torch.equal(sa[k], b[k]) for k in sa)


# ------------------------------------------------------------------------------------ linear path

def test_endpoints_reproduce_each_models_own_evaluation_and_models_are_untouched():
    a, b, data = mlp(0), mlp(1), toy_data()
    before_a, before_b = copy.deepcopy(a.state_dict()), copy.deepcopy(b.state_dict())
    df = linear_path(a, b, data)
    assert list(df.columns) == ["t", "subset", "loss", "accuracy"]
    assert len(df) == 21 * 2 and list(df["subset"][:2]) == ["train", "test"]
    for t, model in ((0.0, a), (1.0, b)):
        for subset in ("train", "test"):
            row = df[(df.t == t) & (df.subset == subset)].iloc[0]
            own = evaluate(model, *data.split(subset))
            assert row.loss == own.loss and row.accuracy == own.accuracy
    assert states_equal(a, before_a) and states_equal(b, before_b)


def test_extrapolation_and_midpoint_match_hand_built_models():
    a, b, data = mlp(0), mlp(1), toy_data()
    extra = ("extra", (data.x_test[:7], data.y_test[:7]))
    df = linear_path(a, b, data, ts=[-0.2, 0.5, 1.2], subsets=("train", extra))
    assert list(df.t) == [-0.2, -0.2, 0.5, 0.5, 1.2, 1.2]
    assert list(df.subset) == ["train", "extra"] * 3
    for t in (-0.2, 0.5, 1.2):
        hand = mlp(2)
        hand.load_state_dict(interpolate_state(a.state_dict(), b.state_dict(), t))
        for label, (x, y) in (("train", data.split("train")), extra):
            row = df[(df.t == t) & (df.subset == label)].iloc[0]
            ev = evaluate(hand, x, y)
            assert row.loss == ev.loss and row.accuracy == ev.accuracy
    w = interpolate_state(a, b, 1.2)["fc1.weight"]
    assert torch.allclose(w, -0.2 * a.fc1.weight + 1.2 * b.fc1.weight)


def test_interpolate_state_is_exact_at_the_endpoints_and_copies_integer_buffers():
    a, b = bn_net(0), bn_net(1)
    a[3].num_batches_tracked.fill_(7)
    b[3].num_batches_tracked.fill_(3)
    s0, s1 = interpolate_state(a.state_dict(), b.state_dict(), 0), interpolate_state(a, b, 1.0)
    assert all(torch.equal(s0[k], v) for k, v in a.state_dict().items())
    assert all(torch.equal(s1[k], v) for k, v in b.state_dict().items() if k != "3.num_batches_tracked")
    assert int(s1["3.num_batches_tracked"]) == 7


def test_different_architectures_are_a_clear_error():
    with pytest.raises(ValueError, match=r"different architectures.*'fc1.weight'.*\(8, 5\) in a and \(9, 5\) in b"):
        linear_path(mlp(0), mlp(1, hidden=(9,)), toy_data())
    with pytest.raises(ValueError, match=r"different architectures.*'fc2.weight'.*\(3, 8\) in a and \(8, 8\) in b"):
        check_same_architecture(mlp(0), mlp(1, hidden=(8, 8)))
    with pytest.raises(ValueError, match=r"different architectures.*'fc3.weight'.*absent in a"):
        interpolate_state(mlp(0).state_dict(), mlp(1, hidden=(8, 3)).state_dict(), 0.5)
    check_same_architecture(mlp(0), mlp(1).state_dict())  # same shapes: no error


@pytest.mark.parametrize("ts", [[], [[0.0, 1.0]], [0.0, float("nan")], [float("inf")], "abc", 0.5, [True],
                                ["a", "b"]])
def test_bad_ts_is_a_clear_error(ts):
    with pytest.raises(ValueError, match="ts must be a non-empty 1-D sequence of finite floats"):
        linear_path(mlp(0), mlp(1), toy_data(), ts=ts)


def test_bad_subsets_are_clear_errors():
    a, b, data = mlp(0), mlp(1), toy_data()
    with pytest.raises(ValueError, match=r"unknown subset name 'valid'.*allowed names: train, test"):
        linear_path(a, b, data, subsets=("train", "valid"))
    with pytest.raises(ValueError, match=r"got the string 'train'; write \('train',\)"):
        linear_path(a, b, data, subsets="train")
    with pytest.raises(ValueError, match="label 'train' twice"):
        linear_path(a, b, data, subsets=("train", ("train", data.split("test"))))
    with pytest.raises(ValueError, match="subset 'permuted' of toy is empty"):  # DataSplits' own error
        linear_path(a, b, data, subsets=("permuted",))
    with pytest.raises(ValueError, match="reestimate_bn must be True, False or None"):
        linear_path(a, b, data, reestimate_bn="yes")
    with pytest.raises(TypeError, match="data must be a sparsegap.data.DataSplits"):
        linear_path(a, b, {"x": 1})
    # Without named subsets and without BatchNorm, data may be None.
    df = linear_path(a, b, None, ts=[0.5], subsets=(("mine", data.split("test")),))
    assert list(df.subset) == ["mine"]


# ------------------------------------------------------------------------------------ BatchNorm

def test_reestimate_bn_gives_the_exact_statistics_and_restores_momentum_and_mode():
    net, data = bn_net(0), toy_data()
    net.eval()
    net[3].momentum = 0.3
    reestimate_bn(net, data.x_train)  # 48 samples < batch_size: one batch, exact statistics
    with torch.no_grad():
        h = net[2](net[1](net[0](data.x_train)))
    assert torch.allclose(net[3].running_mean, h.mean(0), atol=1e-6)
    assert torch.allclose(net[3].running_var, h.var(0, unbiased=True), atol=1e-6)
    assert net[3].momentum == 0.3 and not any(m.training for m in net.modules())
    # Equal batches: the average of the batch means is the mean.
    reestimate_bn(net, data.x_train, batch_size=16)
    assert torch.allclose(net[3].running_mean, h.mean(0), atol=1e-6)
    reestimate_bn(net, data.x_train[:33], batch_size=16)  # trailing single sample joins the batch before
    assert int(net[3].num_batches_tracked) == 2
    plain = mlp(0)
    before = copy.deepcopy(plain.state_dict())
    assert reestimate_bn(plain, data.x_train) is plain and states_equal(plain, before)
    assert has_batchnorm(net) and not has_batchnorm(plain)


def test_linear_path_reestimates_bn_and_interpolated_statistics_are_wrong():
    data = toy_data()
    a, b = bn_net(0), bn_net(1)
    for net in (a, b):  # endpoints with their exact statistics
        reestimate_bn(net, data.x_train)
    df = linear_path(a, b, data, ts=[0.0, 0.5, 1.0], subsets=("train", "test"))  # reestimate_bn=None -> True
    naive = linear_path(a, b, data, ts=[0.5], subsets=("train", "test"), reestimate_bn=False)

    state = interpolate_state(a, b, 0.5)
    hand = bn_net(2)
    hand.load_state_dict(state)
    with torch.no_grad():
        h = hand[2](hand[1](hand[0](data.x_train)))
        mean, var = h.mean(0), h.var(0, unbiased=True)
        hand[3].running_mean.copy_(mean)
        hand[3].running_var.copy_(var)
    for subset in ("train", "test"):
        row = df[(df.t == 0.5) & (df.subset == subset)].iloc[0]
        ev = evaluate(hand, *data.split(subset))
        assert row.loss == pytest.approx(ev.loss, rel=1e-5) and row.accuracy == ev.accuracy
    # The pitfall: the interpolated running statistics are not those of the interpolated weights.
    # (Interpolating two nearly orthogonal networks shrinks the activations, and their variance most.)
    assert ((state["3.running_var"] - var).abs() / var).min() > 0.2
    assert not torch.allclose(state["3.running_mean"], mean, rtol=0.1, atol=1e-3)
    # ... and change the loss (a little here: untrained networks have small logits), far beyond float noise.
    assert abs(naive.loss.iloc[0] - df[(df.t == 0.5) & (df.subset == "train")].loss.iloc[0]) > 1e-5
    # Endpoints keep the models' own statistics and reproduce their evaluations.
    for t, net in ((0.0, a), (1.0, b)):
        row = df[(df.t == t) & (df.subset == "test")].iloc[0]
        assert row.loss == evaluate(net, *data.split("test")).loss


def test_tiny_resnet20_endpoints_with_batchnorm():
    data = toy_data(input_shape=(3, 8, 8), n_train=16, n_test=8)
    a = build_model("resnet20", num_classes=3, input_shape=(3, 8, 8), seed=0)
    b = build_model("resnet20", num_classes=3, input_shape=(3, 8, 8), seed=1)
    for reestimate in (True, False):     # the endpoints are the two networks, with BN re-estimation on and off
        df = linear_path(a, b, data, ts=[0.0, 0.5, 1.0], subsets=("test",), reestimate_bn=reestimate)
        assert df.loss.iloc[0] == evaluate(a, *data.split("test")).loss
        assert df.loss.iloc[2] == evaluate(b, *data.split("test")).loss
        assert np.isfinite(df.loss).all()


# ------------------------------------------------------------------------------------ directions

def row_norms(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(len(t), -1).norm(dim=1)


def test_filter_normalization_of_linear_and_conv_layers():
    model = build_model("lenet5", num_classes=3, input_shape=(1, 12, 12), seed=0)
    d = filter_normalized_direction(model, seed=3)
    assert list(d) == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"]  # no biases
    params = dict(model.named_parameters())
    for name, v in d.items():
        assert v.shape == params[name].shape
        assert torch.allclose(row_norms(v), row_norms(params[name].detach()), rtol=1e-5)
    again = filter_normalized_direction(model, seed=3)
    assert all(torch.equal(again[k], d[k]) for k in d)
    assert not torch.equal(filter_normalized_direction(model, seed=4)["fc1.weight"], d["fc1.weight"])


def test_filter_normalization_with_masks_and_zero_rows():
    model = build_model("lenet5", num_classes=3, input_shape=(1, 12, 12), seed=0)
    with torch.no_grad():
        model.fc2.weight[5] = 0.0       # an all-zero weight row
        model.conv2.weight[2] = 0.0     # an all-zero filter
    masks = global_magnitude_masks(model, 0.6)
    masks["fc1.weight"][0] = False      # a row with nothing kept
    d = filter_normalized_direction(model, masks=masks)
    params = dict(model.named_parameters())
    for name, v in d.items():
        assert not v[~masks[name]].any()                 # pruned entries are zero in the direction
        w = params[name].detach() * masks[name]
        assert torch.allclose(row_norms(v), row_norms(w), rtol=1e-5)
    assert not d["fc2.weight"][5].any() and not d["conv2.weight"][2].any() and not d["fc1.weight"][0].any()
    assert d["fc2.weight"][4].any()
    with pytest.raises(ValueError, match="'fc1.bias', which is not a Conv or Linear weight"):
        filter_normalized_direction(model, masks={"fc1.bias": torch.ones(120, dtype=torch.bool)})
    with pytest.raises(ValueError, match="seed must be an int"):
        filter_normalized_direction(model, seed=1.5)


def test_loss_along_direction_matches_hand_built_models():
    model, data = mlp(0), toy_data()
    d = filter_normalized_direction(model, seed=1)
    df = loss_along_direction(model, d, data, alphas=[-0.5, 0.0, 0.5], subsets=("train", "test"))
    assert list(df.columns) == ["alpha", "subset", "loss", "accuracy"] and len(df) == 6
    assert df[(df.alpha == 0.0) & (df.subset == "test")].loss.iloc[0] == evaluate(model, *data.split("test")).loss
    hand = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in hand.named_parameters():
            if name in d:
                p.add_(0.5 * d[name])
    assert df[(df.alpha == 0.5) & (df.subset == "train")].loss.iloc[0] == pytest.approx(
        evaluate(hand, *data.split("train")).loss, rel=1e-6)
    assert len(loss_along_direction(model, d, data)) == 41
    with pytest.raises(ValueError, match="direction has parameter name 'nope'"):
        loss_along_direction(model, {"nope": torch.zeros(3)}, data)
    with pytest.raises(ValueError, match=r"direction\['fc1.weight'\] has shape \(3,\)"):
        loss_along_direction(model, {"fc1.weight": torch.zeros(3)}, data)
    with pytest.raises(ValueError, match="alphas must be a non-empty 1-D sequence"):
        loss_along_direction(model, d, data, alphas=[])


# ------------------------------------------------------------------------------------ distances

def test_distance_from_init_matches_a_hand_computation():
    trained, init = mlp(0), mlp(1)
    dist = distance_from_init(trained, init)
    assert list(dist["per_layer"]) == ["fc1", "fc2"]
    s, s0 = trained.state_dict(), init.state_dict()
    hand = math.sqrt(sum(float((s[k].double() - s0[k].double()).pow(2).sum()) for k in s))
    assert dist["total"] == pytest.approx(hand, rel=1e-12)
    assert dist["total"] == pytest.approx(math.sqrt(sum(v ** 2 for v in dist["per_layer"].values())), rel=1e-12)
    fc1 = math.sqrt(float((s["fc1.weight"].double() - s0["fc1.weight"].double()).pow(2).sum()
                          + (s["fc1.bias"].double() - s0["fc1.bias"].double()).pow(2).sum()))
    assert dist["per_layer"]["fc1"] == pytest.approx(fc1, rel=1e-12)
    assert distance_from_init(s, s0) == dist  # state dicts alone give the same layers
    assert distance_from_init(trained, trained)["total"] == 0.0


def test_distance_from_init_leaves_out_batchnorm_and_checks_architecture():
    a, b = bn_net(0), bn_net(1)
    with torch.no_grad():
        b[3].weight.add_(5.0)
        b[3].running_mean.add_(5.0)
    dist = distance_from_init(a, b)
    assert list(dist["per_layer"]) == ["0", "2", "5"]
    assert dist == distance_from_init(a.state_dict(), b.state_dict())
    s, s0 = a.state_dict(), b.state_dict()
    keys = [f"{i}.{p}" for i in (0, 2, 5) for p in ("weight", "bias")]
    assert dist["total"] == pytest.approx(math.sqrt(sum(float((s[k].double() - s0[k].double()).pow(2).sum())
                                                        for k in keys)), rel=1e-12)
    with pytest.raises(ValueError, match="different architectures"):
        distance_from_init(mlp(0), mlp(0, hidden=(4,)))


def test_linear_path_reports_the_l2_term_and_the_objective_apart():
    """E-F6/7: with a weight-decay coefficient the objective's two terms come apart."""
    import pandas as pd
    from sparsegap.landscape import linear_path
    torch.manual_seed(0)
    a = build_model("mlp", hidden=(8,), num_classes=3, input_shape=(5,), seed=0)
    b = build_model("mlp", hidden=(8,), num_classes=3, input_shape=(5,), seed=1)
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    plain = linear_path(a, b, None, ts=[0.0, 0.5, 1.0], subsets=[("mine", (x, y))])
    assert list(plain.columns) == ["t", "subset", "loss", "accuracy"]
    path = linear_path(a, b, None, ts=[0.0, 0.5, 1.0], subsets=[("mine", (x, y))], weight_decay=1e-3)
    norm_a = sum(float(p.detach().double().pow(2).sum()) for p in a.parameters())
    assert path.l2.iloc[0] == pytest.approx(0.5e-3 * norm_a)
    assert (path.objective == path.loss + path.l2).all()
    assert pd.Series(path.loss).equals(pd.Series(plain.loss))
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        linear_path(a, b, None, subsets=[("mine", (x, y))], weight_decay=-1.0)
