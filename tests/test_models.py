"""Tests for sparsegap.models: shapes, sizes, seeding, the output layer and input checks."""

import math

import pytest
import torch
from torch import nn

from sparsegap.models import MODELS, build_model, output_layer_name

# (name, input_shape, extra kwargs) covering every model and the input shapes the book uses.
CASES = [
    ("lenet300-100", (784,), {}),
    ("lenet300-100", (1, 28, 28), {}),
    ("lenet5", (1, 28, 28), {}),
    ("lenet5", (3, 32, 32), {}),
    ("mlp", (40,), {"hidden": (16, 8)}),
    ("mlp", (12,), {"hidden": (64, 32, 32, 18, 18, 6, 6)}),
    ("mlp", (1, 28, 28), {"hidden": ()}),
    ("resnet20", (3, 32, 32), {}),
    ("resnet20", (1, 28, 28), {"width": 2}),
    ("resnet32", (3, 32, 32), {}),
    ("resnet18", (3, 32, 32), {}),
    ("resnet18", (1, 28, 28), {}),
]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, shape, kwargs", CASES)
def test_output_shape(name, shape, kwargs):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, input_shape=shape, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_every_model_is_covered():
    assert {c[0] for c in CASES} == set(MODELS)


def test_lenet300_100_parameter_count():
    model = build_model("lenet300-100", num_classes=10, input_shape=(784,))
    assert n_params(model) == 266_610
    assert [n for n, _ in model.named_parameters() if n.endswith("weight")] == ["fc1.weight", "fc2.weight", "fc3.weight"]


def cifar_resnet_params(depth: int, width: int, in_channels: int, num_classes: int) -> int:
    """Parameter count of a ResNet-(6n+2) with option-A (parameter-free) shortcuts."""
    n = (depth - 2) // 6
    conv = lambda cin, cout: 9 * cin * cout  # 3x3, no bias
    bn = lambda c: 2 * c
    planes = [round(16 * width), round(32 * width), round(64 * width)]
    total = conv(in_channels, planes[0]) + bn(planes[0])
    cin = planes[0]
    for c in planes:
        for _ in range(n):
            total += conv(cin, c) + bn(c) + conv(c, c) + bn(c)
            cin = c
    return total + planes[-1] * num_classes + num_classes


def test_resnet20_parameter_count():
    model = build_model("resnet20", num_classes=10, input_shape=(3, 32, 32))
    expected = cifar_resnet_params(20, 1, 3, 10)
    assert n_params(model) == expected
    assert 0.26e6 < expected < 0.28e6  # He et al. report 0.27M


def test_resnet32_width_scales_parameters_quadratically():
    base = build_model("resnet32", num_classes=100, input_shape=(3, 32, 32))
    wide = build_model("resnet32", num_classes=100, input_shape=(3, 32, 32), width=4)
    assert n_params(wide) == cifar_resnet_params(32, 4, 3, 100)
    # Conv weights grow 16x; only the stem, BN and classifier grow 4x.
    assert 15 < n_params(wide) / n_params(base) < 16


def test_resnet18_at_a_fraction_of_its_width_is_torchvisions_network_narrowed():
    full = build_model("resnet18", num_classes=10, input_shape=(3, 32, 32), seed=0)
    narrow = build_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=0.25, seed=0)
    assert type(narrow).__mro__[1] is type(full)      # torchvision's ResNet class, and its blocks
    assert [type(m) for m in list(narrow.modules())[1:]] == [type(m) for m in list(full.modules())[1:]]
    shapes = {k: v.shape for k, v in full.state_dict().items()}
    for k, v in narrow.state_dict().items():           # every channel count a quarter, inputs and classes kept
        expected = [d if i > 1 or d in (3, 10) else d // 4 for i, d in enumerate(shapes[k])]  # kernels kept
        assert list(v.shape) == expected, k
    assert narrow.conv1.stride == (1, 1) and isinstance(narrow.maxpool, nn.Identity)
    assert narrow(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert 15 < n_params(full) / n_params(narrow) < 16.1
    # width 1 is torchvision's resnet18 itself, with the same initial weights as before widths existed
    again = build_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=1.0, seed=0)
    assert type(again) is type(full) and all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                                                 full.state_dict().values()))


def test_resnet32_below_width_one():
    narrow = build_model("resnet32", num_classes=10, input_shape=(3, 32, 32), width=0.5)
    assert n_params(narrow) == cifar_resnet_params(32, 0.5, 3, 10)
    assert narrow.conv1.out_channels == 8 and narrow.fc.in_features == 32


def test_resnet18_has_cifar_stem():
    model = build_model("resnet18", num_classes=10, input_shape=(1, 32, 32))
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.conv1.in_channels == 1
    assert isinstance(model.maxpool, nn.Identity)
    # No stride-2 stem: the last stage still sees 4x4 maps on 32x32 inputs.
    feats = {}
    model.layer4.register_forward_hook(lambda m, i, o: feats.setdefault("x", o))
    model.eval()(torch.randn(2, 1, 32, 32))
    assert feats["x"].shape[-2:] == (4, 4)


def test_lenet5_flatten_size_follows_input():
    small = build_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    big = build_model("lenet5", num_classes=10, input_shape=(3, 32, 32))
    assert small.fc1.in_features == big.fc1.in_features == 16 * 5 * 5
    wide = build_model("lenet5", num_classes=10, input_shape=(1, 40, 48))
    assert wide.fc1.in_features == 16 * 7 * 9
    assert big.conv1.in_channels == 3


@pytest.mark.parametrize("name, shape, kwargs", [c for c in CASES if c[1] != (1, 28, 28)])
def test_seed_determinism_and_global_rng_untouched(name, shape, kwargs):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_model(name, num_classes=5, input_shape=shape, seed=1, **kwargs)
    b = build_model(name, num_classes=5, input_shape=shape, seed=1, **kwargs)
    c = build_model(name, num_classes=5, input_shape=shape, seed=2, **kwargs)
    assert torch.equal(torch.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    weights = [k for k, _ in a.named_parameters() if k.endswith("weight") and sa[k].dim() > 1]
    assert all(not torch.equal(sa[k], sc[k]) for k in weights)


def test_unseeded_build_uses_global_rng():
    torch.manual_seed(0)
    a = build_model("lenet300-100", num_classes=10, input_shape=(20,))
    torch.manual_seed(0)
    b = build_model("lenet300-100", num_classes=10, input_shape=(20,))
    c = build_model("lenet300-100", num_classes=10, input_shape=(20,))
    assert torch.equal(a.fc1.weight, b.fc1.weight)
    assert not torch.equal(b.fc1.weight, c.fc1.weight)


EXPECTED_OUTPUT = {
    "lenet300-100": "fc3", "lenet5": "fc3", "mlp": "fc3", "resnet20": "fc", "resnet32": "fc", "resnet18": "fc",
}


@pytest.mark.parametrize("name", MODELS)
def test_output_layer_name_is_the_classifier(name):
    shape = (3, 32, 32) if name in ("lenet5", "resnet20", "resnet32", "resnet18") else (40,)
    kwargs = {"hidden": (16, 8)} if name == "mlp" else {}
    model = build_model(name, num_classes=6, input_shape=shape, seed=0, **kwargs).eval()
    layer_name = output_layer_name(model)
    assert layer_name == EXPECTED_OUTPUT[name]
    layer = model.get_submodule(layer_name)
    assert isinstance(layer, nn.Linear) and layer.out_features == 6
    assert f"{layer_name}.weight" in dict(model.named_parameters())
    # It really is the last layer: zeroing it zeroes the logits.
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
        out = model(torch.randn(2, *shape))
    assert torch.equal(out, torch.zeros_like(out))


def test_output_layer_name_without_linear():
    with pytest.raises(ValueError, match="no nn.Linear"):
        output_layer_name(nn.Sequential(nn.Conv2d(1, 2, 3)))


@pytest.mark.parametrize("alias, canonical", [
    ("LeNet_300_100", "lenet300-100"), ("lenet300_100", "lenet300-100"), ("LENET-5", "lenet5"),
    ("ResNet_20", "resnet20"), ("resnet-32", "resnet32"), ("ResNet18", "resnet18"),
])
def test_aliases(alias, canonical):
    shape = (3, 32, 32) if canonical != "lenet300-100" else (784,)
    a = build_model(alias, num_classes=10, input_shape=shape, seed=0)
    b = build_model(canonical, num_classes=10, input_shape=shape, seed=0)
    assert type(a) is type(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"name": "vgg16"}, r"name='vgg16'.*lenet300-100, lenet5, mlp, resnet20, resnet32, resnet18"),
    ({"name": 3}, r"name=3"),
    ({"num_classes": 0}, r"num_classes must be a positive int, got 0"),
    ({"width": 0}, r"width=0.*positive number"),
    ({"width": float("nan")}, r"width=nan.*positive number"),
    ({"width": True}, r"width=True.*positive number"),
    ({"width": 0.3}, r"width=0.3.*resnet20.*16 x 0.3 = 4.8 channels.*whole number"),
    ({"width": 0.01, "name": "resnet18"}, r"width=0.01.*resnet18.*64 x 0.01 = 0.64 channels.*whole number >= 1"),
    ({"width": 2, "name": "lenet5"}, r"width=2.*lenet5.*resnet20, resnet32, resnet18"),
    ({"input_shape": (3, 0, 32)}, r"input_shape=\(3, 0, 32\).*positive ints"),
    ({"input_shape": ()}, r"input_shape=\(\).*non-empty"),
    ({"input_shape": "3x32x32"}, r"input_shape='3x32x32'"),
    ({"input_shape": (3072,)}, r"input_shape=\(3072,\).*resnet20.*\(channels, height, width\)"),
    ({"input_shape": (1, 8, 8), "name": "lenet5"}, r"input_shape=\(1, 8, 8\).*too small.*12x12"),
    ({"name": "mlp", "input_shape": (40,)}, r"hidden=None.*mlp"),
    ({"name": "mlp", "input_shape": (40,), "hidden": (16, 0)}, r"hidden=\(16, 0\).*positive ints"),
    ({"hidden": (16,)}, r"hidden=\(16,\).*only mlp"),
    ({"seed": 1.0}, r"seed must be an int .* or None, got 1.0"),
    ({"seed": 2**64}, r"seed must be an int in \[-2\*\*63, 2\*\*64\) .*or None, got 18446744073709551616"),
])
def test_bad_inputs_raise_clear_errors(kwargs, pattern):
    args = {"name": "resnet20", "num_classes": 10, "input_shape": (3, 32, 32), **kwargs}
    name = args.pop("name")
    with pytest.raises(ValueError, match=pattern):
        build_model(name, **args)


@pytest.mark.parametrize("num_classes, pattern", [(2.5, r"num_classes must be a positive int, got 2.5 of type float"),
                                                   (True, r"num_classes must be a positive int, got True \(bool\)")])
def test_num_classes_of_another_type_is_a_type_error(num_classes, pattern):
    with pytest.raises(TypeError, match=pattern):
        build_model("resnet20", num_classes=num_classes, input_shape=(3, 32, 32))


def test_kaiming_init_keeps_the_signal_through_a_deep_narrow_relu_mlp():
    hidden = (64, 32, 32, 18, 18, 6, 6)
    he = build_model("mlp", num_classes=2, input_shape=(12,), hidden=hidden, seed=0, init="kaiming")
    for name, p in he.named_parameters():
        if name.endswith("weight"):
            fan_in = p.shape[1]
            assert abs(p.std().item() - (2 / fan_in) ** 0.5) < 0.35 * (2 / fan_in) ** 0.5, name
        else:
            assert torch.count_nonzero(p) == 0, name
    default = build_model("mlp", num_classes=2, input_shape=(12,), hidden=hidden, seed=0)
    x = torch.randn(512, 12)
    assert he(x).std() > 10 * default(x).std()  # the default init lets the signal fade
    with pytest.raises(ValueError, match="init"):
        build_model("mlp", num_classes=2, input_shape=(12,), hidden=hidden, init="xavier")
