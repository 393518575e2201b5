import pytest
import torch
from torch import nn

from sparsegap.pruning import (apply_masks, check_masks, global_magnitude_masks, global_masks_from_scores,
                               mask_gradients, prunable_parameters, sparsity_of)


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 3))


def test_prunable_parameters_are_conv_and_linear_weights_only():
    names = list(prunable_parameters(small_net()))
    assert names == ["0.weight", "4.weight", "6.weight"]
    assert list(prunable_parameters(small_net(), exclude_output=True)) == ["0.weight", "4.weight"]


@pytest.mark.parametrize("sparsity, min_density", [(0.0, 0), (0.1, 0), (0.5, 0), (0.9, 0), (0.97, 0),
                                                   (0.99, 0.005)])
def test_achieved_sparsity_within_one_weight(sparsity, min_density):
    net = small_net()
    masks = global_magnitude_masks(net, sparsity, min_density=min_density)
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert abs(kept - (1 - sparsity) * total) <= 1
    assert abs(sparsity_of(masks) - sparsity) <= 1 / total


def test_ties_do_not_break_the_count():
    scores = {"a": torch.ones(10, 10), "b": torch.ones(50)}
    masks = global_masks_from_scores(scores, 0.37)
    assert sum(int(m.sum()) for m in masks.values()) == round(0.63 * 150)


def test_magnitude_pruning_keeps_exactly_the_largest_weights():
    net = small_net()
    masks = global_magnitude_masks(net, 0.8)
    params = prunable_parameters(net)
    kept = torch.cat([params[n].detach().abs()[m] for n, m in masks.items()])
    dropped = torch.cat([params[n].detach().abs()[~m] for n, m in masks.items()])
    assert kept.min() >= dropped.max()
    all_w = torch.cat([p.detach().abs().flatten() for p in params.values()])
    assert torch.equal(torch.sort(kept).values, torch.sort(all_w).values[-len(kept):])


def test_exclude_output_leaves_the_classifier_dense():
    net = small_net()
    masks = global_magnitude_masks(net, 0.9, exclude_output=True)
    assert "6.weight" not in masks
    assert abs(sparsity_of(masks) - 0.9) < 0.01


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_sparsity_out_of_range_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        global_magnitude_masks(small_net(), bad)


@pytest.mark.parametrize("bad", ["0.9", None, True])
def test_sparsity_of_wrong_type_is_a_clear_error(bad):
    with pytest.raises(TypeError, match="sparsity must be a number"):
        global_magnitude_masks(small_net(), bad)


def test_check_masks_rejects_unknown_names_and_shapes():
    net = small_net()
    with pytest.raises(ValueError, match="nope.weight"):
        check_masks(net, {"nope.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        check_masks(net, {"6.weight": torch.ones(3, dtype=torch.bool)})


@pytest.mark.parametrize("nesterov", [False, True])
def test_masked_weights_stay_exactly_zero_through_momentum_and_weight_decay(nesterov):
    net = small_net()
    masks = global_magnitude_masks(net, 0.9)
    apply_masks(net, masks)
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-3, nesterov=nesterov)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,))
    params = dict(net.named_parameters())
    before = {n: params[n].detach().clone() for n in masks}
    for _ in range(25):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        mask_gradients(net, masks)
        opt.step()
    for n, m in masks.items():
        assert torch.count_nonzero(params[n][~m]) == 0, n
        assert not torch.equal(params[n][m], before[n][m])  # the kept weights did train
        buf = opt.state[params[n]]["momentum_buffer"]
        assert torch.count_nonzero(buf[~m]) == 0


def test_gradient_masker_follows_mask_changes():
    from sparsegap.pruning import GradientMasker
    net = small_net()
    masks = global_magnitude_masks(net, 0.5)
    masker = GradientMasker(net)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))

    def grads_after_masking(m):
        net.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        masker(m)
        return {n: p.grad.clone() for n, p in net.named_parameters() if n in m}

    g = grads_after_masking(masks)
    assert all(torch.count_nonzero(g[n][~m]) == 0 and torch.count_nonzero(g[n][m]) > 0 for n, m in masks.items())
    masks["4.weight"].logical_not_()  # a mask updater changing a mask in place
    g = grads_after_masking(masks)
    assert torch.count_nonzero(g["4.weight"][~masks["4.weight"]]) == 0
    masks["6.weight"] = torch.zeros_like(masks["6.weight"])  # ... or replacing one
    assert torch.count_nonzero(grads_after_masking(masks)["6.weight"]) == 0


def test_layer_density_floor_keeps_narrow_layers_connected():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.no_grad():
        net[4].weight.mul_(1e-3)  # tiny output weights: plain global pruning removes the whole layer
    with pytest.raises(ValueError, match=r"sparsity=0.9 leaves layer\(s\) .*'4.weight' \(12 weights\) with no weight"):
        global_magnitude_masks(net, 0.9)  # plain global pruning would remove the whole output layer
    floored = global_magnitude_masks(net, 0.9, min_density=0.05)
    total = sum(m.numel() for m in floored.values())
    assert abs(sum(int(m.sum()) for m in floored.values()) - 0.1 * total) <= 1
    for name, m in floored.items():
        assert m.float().mean() >= 0.05, name
    assert floored["4.weight"].sum() == 1  # the floor, no more: the small weights still lose globally
    with pytest.raises(ValueError, match="min_density=0.25 keeps"):
        global_magnitude_masks(net, 0.9, min_density=0.25)


# ----------------------------------------------------------------------------- masks that cut the network

def test_a_mask_with_no_weight_at_all_is_an_error():
    with pytest.raises(ValueError, match=r"sparsity=0.999 keeps .* = 0 of the 10 prunable weights.*at most 0.9"):
        global_masks_from_scores({"a": torch.rand(10)}, 0.999)
    assert int(global_masks_from_scores({"a": torch.rand(10)}, 0.9)["a"].sum()) == 1


def test_a_mask_that_empties_one_layer_names_the_sparsity_and_the_layer():
    scores = {"big": torch.rand(100) + 1, "small": torch.rand(5)}  # every "small" score loses globally
    with pytest.raises(ValueError, match=r"sparsity=0.9 leaves layer\(s\) 'small' \(5 weights\) with no weight"):
        global_masks_from_scores(scores, 0.9)
    masks = global_masks_from_scores(scores, 0.9, min_density=0.01)  # the floor keeps it connected
    assert int(masks["small"].sum()) == 1 and sum(int(m.sum()) for m in masks.values()) == round(0.1 * 105)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scores_are_an_error(bad):
    scores = {"a": torch.rand(10), "b": torch.rand(20)}
    scores["b"][3] = bad  # topk ranks NaN highest: it used to be kept
    with pytest.raises(ValueError, match=r"scores\['b'\] holds 1 NaN or infinite value\(s\) among 20"):
        global_masks_from_scores(scores, 0.5)


def test_diverged_weights_are_refused_as_magnitude_scores():
    net = small_net()
    with torch.no_grad():
        net[4].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"scores\['4.weight'\].*diverged"):
        global_magnitude_masks(net, 0.5)


@pytest.mark.parametrize("scores, exc, match", [
    ([torch.rand(3)], TypeError, "scores must be a dict"),
    ({}, ValueError, "scores is empty"),
    ({"a": [1.0, 2.0]}, TypeError, r"scores\['a'\] must be a torch.Tensor"),
    ({"a": torch.rand(3), "b": torch.rand(0)}, ValueError, r"scores\['b'\] is empty"),
])
def test_malformed_scores_are_clear_errors(scores, exc, match):
    with pytest.raises(exc, match=match):
        global_masks_from_scores(scores, 0.5)


def test_check_masks_refuses_an_empty_layer_and_non_dicts():
    net = small_net()
    masks = global_magnitude_masks(net, 0.5)
    check_masks(net, masks)
    masks["6.weight"] = torch.zeros_like(masks["6.weight"])
    with pytest.raises(ValueError, match=r"masks\['6.weight'\] keeps no weight of its 48"):
        check_masks(net, masks)
    with pytest.raises(TypeError, match="masks must be a dict"):
        check_masks(net, list(masks.values()))


# The book's configurations (notebooks/*.ipynb parameters and notebooks/params) must still give masks.

def test_lenet300_100_global_magnitude_masks_and_layer_collapse_at_init():
    from sparsegap.models import build_model

    net = build_model("lenet300-100", num_classes=10, input_shape=(1, 28, 28), seed=0)
    for s in (0.5, 0.8, 0.9, 0.95):
        assert all(m.any() for m in global_magnitude_masks(net, s).values()), s
    # At init fc1 has the smallest weights (PyTorch's bound 1/sqrt(784)), so global magnitude pruning
    # takes all of them from about 96% on: an error now. Chapter 01 prunes the *trained* Sol-D, which
    # at 99.5% keeps ~440 fc1 and ~390 fc3 weights (cpu profile, measured); its smoke profile (2
    # epochs on 300 images) is still at init and hits this at 0.99.
    with pytest.raises(ValueError, match=r"sparsity=0.995 leaves layer\(s\) 'fc1.weight' \(235200 weights\)"):
        global_magnitude_masks(net, 0.995)
    masks = global_magnitude_masks(net, 0.995, exclude_output=True, min_density=0.001)
    assert all(m.any() for m in masks.values())


@pytest.mark.parametrize("init", ["kaiming", "default"])
def test_twelve_bit_mlp_with_the_chapter_floor_keeps_every_layer(init):
    from sparsegap.models import build_model

    net = build_model("mlp", num_classes=2, input_shape=(12,), hidden=(64, 32, 32, 18, 18, 6, 6), init=init, seed=0)
    for s in (0.5, 0.7, 0.8, 0.9, 0.94):  # the chapter's sparsities, and the most min_density=0.05 allows
        masks = global_magnitude_masks(net, s, min_density=0.05)
        assert all(m.float().mean() >= 0.05 for m in masks.values()), s
    # 4896 weights: the 5% floor alone keeps 249, more than 0.95 allows (245). The paper profile's 0.95
    # needs a lower min_density.
    with pytest.raises(ValueError, match="min_density=0.05 keeps 249 weights, more than the 245"):
        global_magnitude_masks(net, 0.95, min_density=0.05)
    assert all(m.any() for m in global_magnitude_masks(net, 0.99, min_density=0.005).values())
