"""Per-sample gradient cosines against a per-sample autograd loop on tiny float64 networks."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsegap.metrics.cosines import per_sample_cosines, top_fraction_classes
from sparsegap.models import build_model
from sparsegap.pruning import global_magnitude_masks




pytestmark = pytest.mark.usefixtures("float64")   # conftest.float64: tight comparisons in float64


# ----------------------------------------------------------------------------- helpers

def data(shape, n=7, classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def random_direction(model, seed=3, skip=()):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters() if n not in skip}


def random_masks(model, density=0.5, seed=2):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < density
            for n, p in model.named_parameters() if p.ndim > 1}


def cosines_loop(model, x, y, direction, masks=None):
    """cos(-g_i, d) from one autograd call per sample, both vectors masked, frozen params left out."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def flat(tensors):
        return torch.cat([(t if t is not None else torch.zeros_like(p)).flatten()
                          * (masks[n].flatten() if masks and n in masks else 1)
                          for (n, p), t in zip(named, tensors)])

    d = flat([direction.get(n) for n, _ in named])
    was_training = model.training
    model.eval()
    out = []
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        g = flat(torch.autograd.grad(loss, [p for _, p in named], allow_unused=True))
        out.append(-(g @ d) / (g.norm() * d.norm()))
    model.train(was_training)
    return torch.stack(out)


def bn_ln_model():
    """Conv2d, BatchNorm and Linear (closed forms) and a LayerNorm (torch.func fallback)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3))
    with torch.no_grad():  # non-trivial eval-mode statistics
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.normal_()
        model[1].bias.normal_()
        model[5].weight.normal_()
    return model


# ----------------------------------------------------------------------------- against the loop

@pytest.mark.parametrize("masked", [False, True])
def test_mlp_with_biases_matches_autograd_loop(masked):
    model = build_model("mlp", num_classes=3, input_shape=(6,), hidden=(7, 5), seed=0).double()
    x, y = data((6,))
    masks = random_masks(model) if masked else None
    if masked:
        masks["fc2.bias"] = torch.tensor([True, False, True, True, False])  # a masked bias too
    direction = random_direction(model, skip=("fc1.bias",))  # a missing parameter counts as zero
    got = per_sample_cosines(model, x, y, direction, masks=masks, chunk_size=3)
    assert got.shape == (len(x),) and got.dtype == torch.float64
    torch.testing.assert_close(got, cosines_loop(model, x, y, direction, masks), atol=1e-10, rtol=0)


@pytest.mark.parametrize("masked", [False, True])
def test_lenet5_matches_autograd_loop(masked):
    """lenet5 on 1x28x28 with Sol-F − Init-S style directions and global magnitude masks."""
    init_s = build_model("lenet5", num_classes=10, input_shape=(1, 28, 28), seed=0).double()
    sol_f = build_model("lenet5", num_classes=10, input_shape=(1, 28, 28), seed=1).double()
    masks = global_magnitude_masks(init_s, 0.8) if masked else None
    direction = {n: p.detach() - dict(init_s.named_parameters())[n].detach()
                 for n, p in sol_f.named_parameters()}
    x, y = data((1, 28, 28), n=5, classes=10)
    got = per_sample_cosines(init_s, x, y, direction, masks=masks, chunk_size=2)
    torch.testing.assert_close(got, cosines_loop(init_s, x, y, direction, masks), atol=1e-10, rtol=0)


@pytest.mark.parametrize("masked", [False, True])
def test_batchnorm_and_fallback_parameters_match_autograd_loop(masked):
    from sparsegap.metrics.persample import _plan

    model = bn_ln_model()
    assert _plan(model).fallback == ["5.weight", "5.bias"]  # LayerNorm: torch.func; BatchNorm: closed form
    x, y = data((2, 8, 8))
    masks = random_masks(model) if masked else None
    direction = random_direction(model)
    got = per_sample_cosines(model, x, y, direction, masks=masks)
    torch.testing.assert_close(got, cosines_loop(model, x, y, direction, masks), atol=1e-10, rtol=0)
    # Only the fallback (LayerNorm) parameters in the direction: exercises the torch.func dot alone.
    only_ln = {k: v for k, v in direction.items() if k.startswith("5.")}
    torch.testing.assert_close(per_sample_cosines(model, x, y, only_ln, masks=masks),
                               cosines_loop(model, x, y, only_ln, masks), atol=1e-10, rtol=0)


def test_sparse_mask_product_path_matches_loop():
    """lenet300-100 at 90% sparsity: fc1's mask is large and sparse enough for the CSR product."""
    model = build_model("lenet300-100", num_classes=10, input_shape=(1, 28, 28), seed=0).double()
    masks = global_magnitude_masks(model, 0.9)
    assert masks["fc1.weight"].double().mean() <= 0.15
    x, y = data((1, 28, 28), n=4, classes=10)
    direction = random_direction(model)
    got = per_sample_cosines(model, x, y, direction, masks=masks)
    torch.testing.assert_close(got, cosines_loop(model, x, y, direction, masks), atol=1e-10, rtol=0)


def test_float32_model_is_within_1e5_of_float64_loop():
    model = build_model("mlp", num_classes=3, input_shape=(6,), hidden=(7, 5), seed=0)
    model.float()
    x, y = data((6,))
    direction = random_direction(model)
    got = per_sample_cosines(model, x.float(), y, {k: v.float() for k, v in direction.items()})
    ref = cosines_loop(model.double(), x, y, direction)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_direction_along_one_samples_descent_step_gives_cosine_one():
    model = build_model("mlp", num_classes=3, input_shape=(6,), hidden=(7, 5), seed=0).double()
    x, y = data((6,), n=3)
    loss = F.cross_entropy(model.eval()(x[:1]), y[:1])
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(loss, list(model.parameters()))
    step = {n: -g for n, g in zip(names, grads)}
    got = per_sample_cosines(model, x, y, step)
    assert math.isclose(float(got[0]), 1.0, abs_tol=1e-12)
    assert (got.abs() <= 1).all()
    got_neg = per_sample_cosines(model, x, y, {n: -v for n, v in step.items()})
    torch.testing.assert_close(got_neg, -got)


def test_chunk_size_does_not_change_the_result():
    model = bn_ln_model()
    x, y = data((2, 8, 8), n=9)
    direction = random_direction(model)
    torch.testing.assert_close(per_sample_cosines(model, x, y, direction, chunk_size=2),
                               per_sample_cosines(model, x, y, direction, chunk_size=100))


def test_frozen_parameters_are_left_out_and_model_is_untouched():
    model = bn_ln_model().train()
    model[0].weight.requires_grad_(False)
    model[1].bias.requires_grad_(False)
    model[7].weight.grad = torch.ones_like(model[7].weight)
    x, y = data((2, 8, 8))
    direction = random_direction(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    got = per_sample_cosines(model, x, y, direction, masks=random_masks(model))
    torch.testing.assert_close(got, cosines_loop(model, x, y, direction, random_masks(model)),
                               atol=1e-10, rtol=0)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(model[7].weight.grad, torch.ones_like(model[7].weight))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "7.weight")
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad


def test_zero_gradient_sample_gets_nan():
    model = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1000.0, 0.0], [0.0, 0.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])  # sample 0: p(y) == 1 in floating point, so its gradient is exactly 0
    got = per_sample_cosines(model, x, y, {"0.weight": torch.ones(2, 2)})
    assert torch.isnan(got[0]) and not torch.isnan(got[1])


# ----------------------------------------------------------------------------- top classes

def test_top_fraction_classes_counts_the_top_samples():
    cos = torch.tensor([0.9, -0.1, 0.8, 0.3, 0.7, 0.5, 0.1, 0.2, 0.0, 0.6])
    y = torch.tensor([2, 0, 2, 1, 0, 1, 0, 0, 1, 3])
    assert top_fraction_classes(cos, y, 0.2).tolist() == [0, 0, 2, 0]  # 0.9 and 0.8: class 2
    assert top_fraction_classes(cos, y, 0.3).tolist() == [1, 0, 2, 0]  # then 0.7: class 0
    assert top_fraction_classes(cos, y, 0.4).tolist() == [1, 0, 2, 1]  # then 0.6: class 3
    assert top_fraction_classes(cos, y, 1.0).tolist() == [4, 3, 2, 1]
    assert top_fraction_classes(cos, y, 0.01).tolist() == [0, 0, 1, 0]  # at least one sample
    hist = top_fraction_classes(cos, y, 0.2, num_classes=6)
    assert hist.tolist() == [0, 0, 2, 0, 0, 0] and hist.dtype == torch.int64
    # ties at the cut: the earlier sample wins
    assert top_fraction_classes(torch.zeros(4), torch.tensor([3, 1, 2, 0]), 0.5).tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("fraction", [0, 0.0, -0.1, 1.5, float("nan"), True, "0.05", None])
def test_top_fraction_classes_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"fraction must be a number in \(0, 1\]"):
        top_fraction_classes(torch.zeros(4), torch.zeros(4, dtype=torch.long), fraction)


def test_top_fraction_classes_rejects_bad_inputs():
    cos, y = torch.rand(5), torch.tensor([0, 1, 2, 1, 0])
    with pytest.raises(ValueError, match="y must have shape"):
        top_fraction_classes(cos, y[:-1])
    with pytest.raises(TypeError, match="integer class indices"):
        top_fraction_classes(cos, y.double())
    with pytest.raises(ValueError, match=r"num_classes=2 is too small.*at least 3"):
        top_fraction_classes(cos, y, num_classes=2)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        top_fraction_classes(cos, y, num_classes=0)
    with pytest.raises(ValueError, match="1 NaN"):
        top_fraction_classes(torch.tensor([0.1, float("nan"), 0.2, 0.3, 0.4]), y)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        top_fraction_classes(torch.zeros(0), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match=">= 0"):
        top_fraction_classes(cos, -y - 1)


# ----------------------------------------------------------------------------- bad input

def test_per_sample_cosines_rejects_bad_inputs():
    model = bn_ln_model()
    x, y = data((2, 8, 8))
    good = random_direction(model)
    with pytest.raises(ValueError, match=r"'nope\.weight'.*not parameters of the model"):
        per_sample_cosines(model, x, y, {**good, "nope.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"buffers.*named_parameters\(\), not from a state_dict"):
        per_sample_cosines(model, x, y, {**good, "1.running_mean": torch.zeros(4)})
    with pytest.raises(ValueError, match=r"direction\['7.weight'\] must have the parameter's shape \(3, 6\), got \(6, 3\)"):
        per_sample_cosines(model, x, y, {**good, "7.weight": torch.zeros(6, 3)})
    with pytest.raises(TypeError, match=r"direction\['7.bias'\] must be a torch.Tensor"):
        per_sample_cosines(model, x, y, {**good, "7.bias": [0.0, 1.0, 2.0]})
    with pytest.raises(TypeError, match="floating-point"):
        per_sample_cosines(model, x, y, {**good, "7.bias": torch.ones(3, dtype=torch.long)})
    with pytest.raises(ValueError, match="finite values"):
        per_sample_cosines(model, x, y, {**good, "7.bias": torch.tensor([0.0, float("nan"), 1.0])})
    with pytest.raises(TypeError, match="direction must be a dict"):
        per_sample_cosines(model, x, y, [good])
    with pytest.raises(ValueError, match="direction is zero"):
        per_sample_cosines(model, x, y, {})
    with pytest.raises(ValueError, match="direction is zero"):  # zero on the unpruned coordinates
        per_sample_cosines(model, x, y, {"7.weight": torch.ones(3, 6)},
                           masks={"7.weight": torch.zeros(3, 6, dtype=torch.bool)})
    with pytest.raises(ValueError, match="at least one sample"):
        per_sample_cosines(model, x[:0], y[:0], good)
    with pytest.raises(ValueError, match="y must have shape"):
        per_sample_cosines(model, x, y[:-1], good)
    with pytest.raises(ValueError, match=r"masks\['7.weight'\] must have shape"):
        per_sample_cosines(model, x, y, good, masks={"7.weight": torch.ones(6, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        per_sample_cosines(model, x, y, good, chunk_size=0)
    with pytest.raises(ValueError, match="does not fit the model"):
        per_sample_cosines(model, torch.randn(3, 3, 8, 8), y[:3], good)
