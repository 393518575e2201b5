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


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 0.97, 0.999])
def test_achieved_sparsity_within_one_weight(sparsity):
    net = small_net()
    masks = global_magnitude_masks(net, sparsity)
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
    plain = global_magnitude_masks(net, 0.9)
    assert plain["4.weight"].sum() == 0
    floored = global_magnitude_masks(net, 0.9, min_density=0.05)
    total = sum(m.numel() for m in floored.values())
    assert abs(sum(int(m.sum()) for m in floored.values()) - 0.1 * total) <= 1
    for name, m in floored.items():
        assert m.float().mean() >= 0.05, name
    assert floored["4.weight"].sum() == 1  # the floor, no more: the small weights still lose globally
    with pytest.raises(ValueError, match="min_density=0.25 keeps"):
        global_magnitude_masks(net, 0.9, min_density=0.25)
