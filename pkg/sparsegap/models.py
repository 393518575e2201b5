"""Every network in the book, by name: LeNets, plain MLPs and CIFAR ResNets.

`build_model("resnet32", num_classes=100, input_shape=(3, 32, 32), width=4)` is the paper's
"ResNet32 x4"; `width` multiplies every channel count of the ResNets, also below 1 (ResNet-18 at
`width=0.25` has 16 to 128 channels instead of 64 to 512). Layers get readable attribute names
(`fc1`, `conv1`, `layer2.0.conv1`, ...) because pruning masks are keyed by parameter names.

The LeNets and MLPs are `nn.Sequential` of standard modules, so that BackPACK-style tools
that walk a sequential graph (per-sample gradients, Fisher and Hessian traces) can use them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .checks import positive_int, torch_seed

MODELS: tuple[str, ...] = ("lenet300-100", "lenet5", "mlp", "resnet20", "resnet32", "resnet18")

WIDTH_MODELS: tuple[str, ...] = ("resnet20", "resnet32", "resnet18")  # the only ones with a width factor
# Channels of each width model's first stage at width 1: width times this must be a whole number.
BASE_CHANNELS: dict[str, int] = {"resnet20": 16, "resnet32": 16, "resnet18": 64}
_CONV_MODELS = ("lenet5", "resnet20", "resnet32", "resnet18")  # need input_shape (C, H, W)


# ---------------------------------------------------------------- fully connected

def _mlp(in_features: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    """flatten -> [Linear -> ReLU] per hidden width -> Linear, layers named fc1 ... fcK."""
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    widths = [in_features, *hidden]
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        layers += [(f"fc{i}", nn.Linear(fan_in, fan_out)), (f"relu{i}", nn.ReLU())]
    layers.append((f"fc{len(widths)}", nn.Linear(widths[-1], num_classes)))
    return nn.Sequential(OrderedDict(layers))


def _lenet5(input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling.

    The original expects 32x32 inputs; smaller images (MNIST's 28x28) get 2 pixels of zero
    padding in the first conv, the usual way to keep the 5x5 feature maps of the original.
    """
    channels, height, width = input_shape
    pad = 2 if min(height, width) < 32 else 0

    def after_convs(size: int) -> int:  # conv5(pad) -> pool2 -> conv5 -> pool2
        return ((size + 2 * pad - 4) // 2 - 4) // 2

    out_h, out_w = after_convs(height), after_convs(width)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"input_shape={input_shape} is too small for lenet5: the two conv+pool stages "
            "need images of at least 12x12 pixels"
        )
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(channels, 6, 5, padding=pad)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(6, 16, 5)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(16 * out_h * out_w, 120)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(120, 84)), ("relu4", nn.ReLU()),
        ("fc3", nn.Linear(84, num_classes)),
    ]))


# ---------------------------------------------------------------- CIFAR ResNets

class _PadShortcut(nn.Module):
    """Option-A shortcut of He et al. (2016): subsample, then zero-pad the new channels.

    It has no parameters, so the CIFAR ResNets keep their published sizes (0.27M weights for
    ResNet-20) and every prunable weight sits on the residual branch.
    """

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        front = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, front, self.extra_channels - front))


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = _PadShortcut(stride, planes - in_planes)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for CIFAR (He et al. 2016, Sec. 4.2) with option-A shortcuts.

    Stem conv3x3 -> three stages of n basic blocks with 16, 32, 64 channels (times `width`),
    the last two starting with stride 2 -> global average pool -> `fc`.
    """

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3, width: int | float = 1) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth={depth} is not a CIFAR ResNet depth; allowed: 6n+2 (20, 32, 44, 56, ...)")
        n = (depth - 2) // 6
        planes = [round(16 * width), round(32 * width), round(64 * width)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        in_planes = planes[0]
        stages = []
        for stage, out_planes in enumerate(planes):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_planes, out_planes, stride))
                in_planes = out_planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(planes[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


class _ScaledResNet(torchvision.models.ResNet):
    """torchvision's ResNet with every stage's channels times ``width`` (its blocks and forward pass unchanged)."""

    def __init__(self, width: float, *args, **kwargs) -> None:
        self._scale = width                    # read by _make_layer, which torchvision's __init__ calls
        super().__init__(*args, **kwargs)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        if planes == 64:                       # the first stage: its input is the stem's output
            self.inplanes = round(64 * self._scale)
        return super()._make_layer(block, round(planes * self._scale), blocks, stride, dilate)


def _resnet18_cifar(in_channels: int, num_classes: int, width: int | float = 1) -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem: 3x3 stride-1 first conv and no max-pool.

    At width 1 this is ``torchvision.models.resnet18`` itself; another width builds the same classes
    with 64 x width channels in the first stage (and twice as many in each of the next three).
    """
    if width == 1:
        model = torchvision.models.resnet18(num_classes=num_classes)
    else:
        model = _ScaledResNet(width, torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        model.bn1 = nn.BatchNorm2d(model.layer1[0].conv1.in_channels)
        model.fc = nn.Linear(model.layer4[-1].conv2.out_channels, num_classes)
    stem = model.layer1[0].conv1.in_channels
    model.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
    # torchvision initialised its own stem; give the replacement the same Kaiming init.
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


# ---------------------------------------------------------------- public API

def _canonical_name(name: object) -> str:
    if not isinstance(name, str):
        raise ValueError(f"name={name!r} must be a string; allowed: {', '.join(MODELS)}")
    # Dashes and underscores carry no meaning: "LeNet_300_100" and "lenet300-100" are one model.
    def squash(s: str) -> str:
        return s.lower().replace("-", "").replace("_", "").replace(" ", "")
    for canonical in MODELS:
        if squash(name) == squash(canonical):
            return canonical
    raise ValueError(f"name={name!r} is not a known model; allowed (case-insensitive): {', '.join(MODELS)}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_width(name: str, width: object, param: str = "width") -> int | float:
    """``width`` for model ``name``, checked: 1 for a model without a width factor; for the ResNets a
    positive number that makes the first stage's channels (:data:`BASE_CHANNELS` times width) a whole
    number. A whole width is returned as an int, so that 4.0 and 4 are one configuration (and one hash)."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"{param}={width!r} is not allowed; {param} must be a positive number (1 for models "
                         f"without a width factor)")
    if float(width).is_integer():
        width = int(width)
    if width != 1 and name not in WIDTH_MODELS:
        raise ValueError(f"{param}={width!r} is not allowed for {name}; only {', '.join(WIDTH_MODELS)} take a "
                         f"width factor (use width=1)")
    if name in WIDTH_MODELS:
        channels = BASE_CHANNELS[name] * width
        if channels < 1 or abs(channels - round(channels)) > 1e-9:
            raise ValueError(f"{param}={width!r} is not allowed for {name}: its first stage would have "
                             f"{BASE_CHANNELS[name]} x {width!r} = {channels:g} channels; {param} must make that a "
                             f"whole number >= 1 (e.g. {1 / BASE_CHANNELS[name]:g}, 0.25, 0.5, 1, 2, 4)")
    return width


def _check_input_shape(name: str, input_shape: object) -> tuple[int, ...]:
    if (not isinstance(input_shape, Sequence) or isinstance(input_shape, str) or len(input_shape) == 0
            or not all(_is_int(d) and d >= 1 for d in input_shape)):
        raise ValueError(
            f"input_shape={input_shape!r} is not allowed; it must be a non-empty tuple of positive "
            "ints, one sample's shape without the batch dimension, e.g. (1, 28, 28) or (784,)"
        )
    shape = tuple(input_shape)
    if name in _CONV_MODELS and len(shape) != 3:
        raise ValueError(
            f"input_shape={shape} is not allowed for {name}: it needs an image shape "
            "(channels, height, width), e.g. (3, 32, 32)"
        )
    return shape


def build_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    width: int | float = 1,
    hidden: tuple[int, ...] | None = None,
    seed: int | None = None,
    init: str = "default",
) -> nn.Module:
    """Build one of `MODELS` for inputs of `input_shape` (no batch dim) and `num_classes` logits.

    width: channel multiplier of resnet20/resnet32/resnet18 (the paper's "x4"; fractions such as 0.25
        narrow them), such that the first stage's channels are a whole number; must be 1 elsewhere.
    hidden: hidden widths of `mlp` (required there, rejected elsewhere).
    seed: if given, the initial weights depend only on it, and the global RNG state is left
        as it was; if None, the global RNG is used (and advanced) as usual.
    init: "default" keeps each layer's own initialisation (PyTorch's for Linear layers, Kaiming for
        the ResNets' convolutions); "kaiming" redraws every Linear and Conv weight from He et al.'s
        normal distribution for ReLU (std sqrt(2 / fan_in)) with zero biases. PyTorch's Linear default
        shrinks the signal's variance about sixfold per ReLU layer, which stalls deep narrow MLPs
        such as the 8-layer 12-bit network; He initialisation keeps it constant.
    """
    if init not in INITS:
        raise ValueError(f"init={init!r} is not allowed; it must be one of {INITS}")
    name = _canonical_name(name)
    positive_int(None, "num_classes", num_classes)
    width = check_width(name, width)
    shape = _check_input_shape(name, input_shape)
    if name == "mlp":
        if hidden is None:
            raise ValueError("hidden=None is not allowed for mlp: pass the hidden widths, e.g. hidden=(64, 32, 32, 18, 18, 6, 6)")
        if (not isinstance(hidden, Sequence) or isinstance(hidden, str)
                or not all(_is_int(h) and h >= 1 for h in hidden)):
            raise ValueError(f"hidden={hidden!r} is not allowed; it must be a tuple of positive ints")
    elif hidden is not None:
        raise ValueError(f"hidden={hidden!r} is not allowed for {name}; only mlp takes hidden widths (use hidden=None)")
    seed = torch_seed("seed", seed, optional=True)

    in_features = math.prod(shape)
    builders: dict[str, Callable[[], nn.Module]] = {
        "lenet300-100": lambda: _mlp(in_features, (300, 100), num_classes),
        "lenet5": lambda: _lenet5(shape, num_classes),
        "mlp": lambda: _mlp(in_features, tuple(hidden or ()), num_classes),
        "resnet20": lambda: CifarResNet(20, num_classes, shape[0], width),
        "resnet32": lambda: CifarResNet(32, num_classes, shape[0], width),
        "resnet18": lambda: _resnet18_cifar(shape[0], num_classes, width),
    }
    def build() -> nn.Module:
        model = builders[name]()
        if init == "kaiming":
            _kaiming_init(model)
        return model

    if seed is None:
        return build()
    # fork_rng restores the CPU (and CUDA) generators on exit, so seeding here leaves the
    # caller's random stream exactly where it was.
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        return build()


INITS = ("default", "kaiming")


@torch.no_grad()
def _kaiming_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def output_layer_name(model: nn.Module) -> str:
    """Name prefix of the final classifier layer, e.g. "fc3" (its weight is "fc3.weight").

    For every model built here that is the last `nn.Linear` in registration order.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"model of type {type(model).__name__} has no nn.Linear layer, so no output layer to name")
    return names[-1]
