"""Tests for sparsegap.sparse_init: the per-neuron ("unit") and layer-wise sparse initialisations.

The statistical checks use fixed seeds and tolerances of several standard errors, so they are both
deterministic and robust to a change of seed.
"""

import math

import pytest
import torch
from torch import nn

from sparsegap.models import build_model
from sparsegap.pruning import global_masks_from_scores, random_scores
from sparsegap.sparse_init import SPARSE_INITS, masked_fan_in, sparse_init_

RELU_GAIN2 = 2.0  # calculate_gain("relu") ** 2


def exact_random_mask(shape, density, seed):
    """A mask keeping exactly round(density * numel) uniformly random entries."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=g)[: round(density * n)]] = True
    return keep.view(shape)


def two_layer(n_in=400, n_hidden=200, n_out=10):
    """Linear(400 -> 200) -> ReLU -> Linear(200 -> 10): "0" is a hidden layer (relu gain), "2" the output."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_out))


def masked_kaiming_(model, masks, seed):
    """The baseline: dense Kaiming normal (fan_in, relu gain everywhere), then masked."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight"):
                nn.init.kaiming_normal_(p, mode="fan_in", nonlinearity="relu")
                if name in masks:
                    p.mul_(masks[name])
            else:
                p.zero_()
    return model


def preact_variance_ratio(weight, n_samples=4000, seed=1):
    """Mean over neurons of Var(pre-activation) on N(0, 1) inputs, over the relu gain**2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_samples, weight.shape[1], generator=g)
    with torch.no_grad():
        return ((x @ weight.T).var(dim=0) / RELU_GAIN2).mean().item()


# ---------------------------------------------------------------- "unit": per-neuron variance

def test_unit_init_gives_unit_preactivation_variance_where_masked_kaiming_gives_the_density():
    mask = exact_random_mask((200, 400), 0.05, seed=3)
    masks = {"0.weight": mask}
    unit = sparse_init_(two_layer(), masks, "unit", seed=0)
    ratio_unit = preact_variance_ratio(unit[0].weight)
    ratio_dense = preact_variance_ratio(masked_kaiming_(two_layer(), masks, seed=0)[0].weight)
    # 200 neurons of ~20 inputs each: standard error of the mean about sqrt(2/4000) ~ 2.2%
    assert ratio_unit == pytest.approx(1.0, abs=0.07)
    assert ratio_dense == pytest.approx(0.05, abs=0.01)


def test_unit_init_scales_each_row_by_its_own_masked_fan_in():
    # Row i keeps a different fraction of its 400 inputs (1% ... 50%), so per-neuron and
    # layer-wise scaling disagree row by row.
    g = torch.Generator().manual_seed(5)
    densities = torch.linspace(0.01, 0.5, 200).unsqueeze(1)
    mask = torch.rand(200, 400, generator=g) < densities
    mask[:, 0] = True  # no empty row
    masks = {"0.weight": mask}
    w = sparse_init_(two_layer(), masks, "unit", seed=1)[0].weight.detach()
    n = masked_fan_in(mask).float()
    assert torch.equal(n, mask.sum(dim=1).float())
    # w_ij^2 * n_i / gain^2 has mean 1 for every kept entry; aggregate over the N kept entries
    # (chi-square with N degrees of freedom, relative standard error sqrt(2 / N) ~ 0.7%).
    normalised = (w ** 2 * n.unsqueeze(1) / RELU_GAIN2)[mask]
    assert normalised.mean().item() == pytest.approx(1.0, abs=0.04)
    # ... and in the sparse and the dense halves alike: the scale follows each row's fan-in.
    sparse_rows, dense_rows = slice(0, 100), slice(100, 200)
    for rows in (sparse_rows, dense_rows):
        row_ss = (w[rows] ** 2).sum(dim=1) / RELU_GAIN2  # per row: chi2_{n_i} / n_i, mean 1
        assert row_ss.mean().item() == pytest.approx(1.0, abs=0.1)
    # each row's sum of squares / gain^2 ~ chi2_{n_i} / n_i: no row is far off (largest |z| over 200 rows)
    row_ss = (w ** 2).sum(dim=1) / RELU_GAIN2
    z = (row_ss - 1.0) / torch.sqrt(2.0 / n)
    assert z.abs().max().item() < 5.0
    assert z.mean().abs().item() < 0.3  # 200 rows: standard error 0.07


def test_output_layer_gets_output_gain():
    masks = {"0.weight": exact_random_mask((200, 400), 0.1, seed=0),
             "2.weight": exact_random_mask((10, 200), 0.5, seed=1)}
    for output_gain, gain2 in ((1.0, 1.0), (None, RELU_GAIN2), (3.0, 9.0)):
        w = sparse_init_(two_layer(), masks, "unit", seed=2, output_gain=output_gain)[2].weight.detach()
        n = masked_fan_in(masks["2.weight"]).float()
        normalised = (w ** 2 * n.unsqueeze(1) / gain2)[masks["2.weight"]]
        assert normalised.mean().item() == pytest.approx(1.0, abs=0.15)  # 1000 kept entries


def test_linear_nonlinearity_uses_gain_one():
    mask = exact_random_mask((200, 400), 0.2, seed=0)
    w = sparse_init_(two_layer(), {"0.weight": mask}, "unit", seed=0, nonlinearity="linear")[0].weight.detach()
    n = masked_fan_in(mask).float()
    assert (w ** 2 * n.unsqueeze(1))[mask].mean().item() == pytest.approx(1.0, abs=0.04)


# ---------------------------------------------------------------- "layer"

def test_layer_init_is_kaiming_over_sqrt_density():
    density = 0.05
    mask = exact_random_mask((200, 400), density, seed=3)
    w = sparse_init_(two_layer(), {"0.weight": mask}, "layer", seed=0)[0].weight.detach()
    expected_std = math.sqrt(RELU_GAIN2) / math.sqrt(400) / math.sqrt(density)
    assert w[mask].std().item() == pytest.approx(expected_std, rel=0.05)  # 4000 kept: se ~1.1%
    # on average over the neurons the pre-activation variance is gain^2 again
    assert preact_variance_ratio(w) == pytest.approx(1.0, abs=0.07)


def test_unit_and_layer_draw_the_same_normals_and_agree_on_a_dense_mask():
    full = {"0.weight": torch.ones(200, 400, dtype=torch.bool), "2.weight": torch.ones(10, 200, dtype=torch.bool)}
    unit = sparse_init_(two_layer(), full, "unit", seed=4)
    layer = sparse_init_(two_layer(), full, "layer", seed=4)
    unmasked = sparse_init_(two_layer(), {}, "unit", seed=4)
    for a, b, c in zip(unit.parameters(), layer.parameters(), unmasked.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c)
    # under a sparse mask the kept entries differ only by a per-row factor
    mask = exact_random_mask((200, 400), 0.1, seed=0)
    wu = sparse_init_(two_layer(), {"0.weight": mask}, "unit", seed=4)[0].weight.detach()
    wl = sparse_init_(two_layer(), {"0.weight": mask}, "layer", seed=4)[0].weight.detach()
    factor = torch.sqrt(torch.tensor(400 * 0.1) / masked_fan_in(mask).float()).unsqueeze(1)
    torch.testing.assert_close(wu[mask], (wl * factor)[mask])


# ---------------------------------------------------------------- zeros, determinism, untouched parts

@pytest.mark.parametrize("method", SPARSE_INITS)
def test_masked_entries_exactly_zero_biases_zero_and_deterministic(method):
    masks = {"0.weight": exact_random_mask((200, 400), 0.05, seed=0)}
    a = sparse_init_(two_layer(), masks, method, seed=7)
    b = sparse_init_(two_layer(), masks, method, seed=7)
    c = sparse_init_(two_layer(), masks, method, seed=8)
    w = a[0].weight.detach()
    assert torch.all(w[~masks["0.weight"]] == 0)
    assert not torch.signbit(w[~masks["0.weight"]]).any()  # +0.0, not -0.0
    assert (w[masks["0.weight"]] != 0).all()
    assert torch.all(a[0].bias == 0) and torch.all(a[2].bias == 0)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a[0].weight, c[0].weight)
    # the unmasked output layer got the dense Kaiming scale with output gain 1
    assert a[2].weight.std().item() == pytest.approx(1 / math.sqrt(200), rel=0.1)


def test_global_rng_is_untouched():
    masks = {"0.weight": exact_random_mask((200, 400), 0.05, seed=0)}
    torch.manual_seed(123)
    expected = torch.rand(3)
    layer = nn.Linear(400, 200)
    torch.manual_seed(123)
    sparse_init_(layer, {"weight": masks["0.weight"]}, "unit", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_row_without_incoming_weight_gets_zeros():
    mask = exact_random_mask((200, 400), 0.05, seed=0)
    mask[17] = False
    w = sparse_init_(two_layer(), {"0.weight": mask}, "unit", seed=0)[0].weight.detach()
    assert torch.all(w[17] == 0) and torch.isfinite(w).all()


def test_normalisation_layers_untouched_and_resnet_runs():
    model = build_model("resnet20", num_classes=10, input_shape=(3, 32, 32), seed=0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(0.5), m.bias.fill_(0.25)
    masks = global_masks_from_scores(random_scores(model, 0), 0.9)
    sparse_init_(model, masks, "unit", seed=0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 0.5) and torch.all(m.bias == 0.25)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0)
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.randn(2, 3, 32, 32))).all()


# ---------------------------------------------------------------- convolutions

def test_conv_uses_per_filter_masked_fan_in():
    model = build_model("lenet5", num_classes=10, input_shape=(1, 28, 28), seed=0)
    masks = global_masks_from_scores(random_scores(model, 1), 0.8)
    sparse_init_(model, masks, "unit", seed=3)
    w, mask = model.conv2.weight.detach(), masks["conv2.weight"]  # (16, 6, 5, 5)
    n = masked_fan_in(mask).float()
    assert torch.equal(n, mask.sum(dim=(1, 2, 3)).float()) and n.max() <= 6 * 5 * 5
    normalised = (w ** 2 * n.view(-1, 1, 1, 1) / RELU_GAIN2)[mask]  # ~480 kept entries
    assert normalised.mean().item() == pytest.approx(1.0, abs=0.2)
    filter_ss = (w ** 2).sum(dim=(1, 2, 3)) / RELU_GAIN2  # chi2_{n_o} / n_o per filter
    assert ((filter_ss - 1) / torch.sqrt(2 / n)).abs().max().item() < 5
    for name, m in masks.items():
        assert torch.all(dict(model.named_parameters())[name][~m] == 0)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(4, 1, 28, 28))).all()


# ---------------------------------------------------------------- the gradient-flow argument

def _output_variance(model, x):
    with torch.no_grad():
        return model(x).var().item()


def test_deep_sparse_mlp_keeps_its_signal_under_unit_init_and_loses_it_under_masked_kaiming():
    width, depth, sparsity = 256, 8, 0.95
    make = lambda: build_model("mlp", num_classes=width, input_shape=(width,), hidden=(width,) * depth, seed=0)
    model = make()
    masks = {name: exact_random_mask(p.shape, 1 - sparsity, seed=i)
             for i, (name, p) in enumerate(model.named_parameters()) if name.endswith("weight")}
    x = torch.randn(1000, width, generator=torch.Generator().manual_seed(0))
    var_unit = _output_variance(sparse_init_(make(), masks, "unit", seed=0), x)
    var_layer = _output_variance(sparse_init_(make(), masks, "layer", seed=0), x)
    var_dense = _output_variance(masked_kaiming_(make(), masks, seed=0), x)
    # He scaling keeps E[h^2]: pre-activations of variance 2 through the ReLU layers, logits ~ 1
    assert 0.2 < var_unit < 5
    assert 0.05 < var_layer < 20
    # masked Kaiming loses a factor ~density per layer: 0.05^9 ~ 2e-12 relative
    assert var_dense < 1e-6 * var_unit
    # ... and with it the gradient reaching the first layer
    grads = {}
    for label, net in (("unit", sparse_init_(make(), masks, "unit", seed=0)),
                       ("dense", masked_kaiming_(make(), masks, seed=0))):
        net(x).pow(2).mean().backward()
        grads[label] = net.fc1.weight.grad[masks["fc1.weight"]].norm().item()
    assert grads["dense"] < 1e-4 * grads["unit"]


# ---------------------------------------------------------------- bad input

def test_errors_name_the_argument():
    masks = {"0.weight": exact_random_mask((200, 400), 0.1, seed=0)}
    with pytest.raises(ValueError, match=r"method='erk'.*\('unit', 'layer'\)"):
        sparse_init_(two_layer(), masks, "erk", seed=0)
    with pytest.raises(ValueError, match="seed"):
        sparse_init_(two_layer(), masks, "unit", seed=1.5)
    with pytest.raises(ValueError, match="seed"):
        sparse_init_(two_layer(), masks, "unit", seed=True)
    with pytest.raises(ValueError, match="nonlinearity='gelu'"):
        sparse_init_(two_layer(), masks, "unit", seed=0, nonlinearity="gelu")
    for bad in (0, -1.0, float("nan"), "1"):
        with pytest.raises(ValueError, match="output_gain"):
            sparse_init_(two_layer(), masks, "unit", seed=0, output_gain=bad)
    with pytest.raises(ValueError, match="fc9.weight"):
        sparse_init_(two_layer(), {"fc9.weight": masks["0.weight"]}, "unit", seed=0)
    with pytest.raises(ValueError, match="shape"):
        sparse_init_(two_layer(), {"0.weight": masks["0.weight"][:, :10]}, "unit", seed=0)
    with pytest.raises(TypeError, match="bool"):
        sparse_init_(two_layer(), {"0.weight": masks["0.weight"].float()}, "unit", seed=0)
    with pytest.raises(ValueError, match="keeps no weight"):
        sparse_init_(two_layer(), {"0.weight": torch.zeros(200, 400, dtype=torch.bool)}, "unit", seed=0)
    with pytest.raises(ValueError, match="not Conv/Linear weights"):
        sparse_init_(two_layer(), {"0.bias": torch.ones(200, dtype=torch.bool)}, "unit", seed=0)
    with pytest.raises(TypeError, match="masks"):
        sparse_init_(two_layer(), [masks["0.weight"]], "unit", seed=0)
