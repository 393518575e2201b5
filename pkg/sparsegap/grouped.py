"""Many networks with BatchNorm -- the CIFAR ResNets, ResNet-18, LeNet-5 -- as one grouped network.

The ``grouped`` engine of :mod:`sparsegap.batched` (issue 26). A stack of ``K`` members becomes one network
whose every channel belongs to one member: a convolution of ``C`` to ``D`` channels becomes one of ``K*C`` to
``K*D`` channels in ``K`` groups (member ``k``'s filters see only member ``k``'s channels), a BatchNorm of ``C``
channels one of ``K*C`` channels (statistics are per channel, so per member: each member's batch is normalised
by its own mean and variance), a Linear layer a batched product per member, and parameter-free modules that mix
channels (the option-A shortcut, which pads channels) run member by member. Elementwise and per-channel modules
(ReLU, pooling, flattening) need nothing. Each member's parameter of shape ``(D, ...)`` is row ``k`` of the stack's
``(K, D, ...)`` tensor, and the grouped network's is the same memory seen as ``(K*D, ...)``: the grouped network
computes every member's forward pass with the member's own weights, batch, statistics and, through autograd,
gradients, in one launch per layer instead of ``K``.

The members' inputs are their own batches side by side on the channel axis, ``(B, K*C, H, W)``; their logits
come out side by side too, ``(B, K*classes)``.

This is the mechanism the GPU needs (a ResNet-32 step at batch 128 is launch-bound on an H200): it is tested
on the CPU to agree with each member trained alone by :func:`sparsegap.train.train` to float tolerance
(``tests/test_grouped.py``). It is not bitwise batch-invariant (a grouped convolution sums in another order than
a plain one, and may choose its kernel by the number of groups), which is why the run store does not use it on
its own (:func:`sparsegap.batched.trains_batched`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .stacked import AutogradEngine, _member_losses

__all__ = ["GroupedEngine", "check_groupable", "grouped_network"]

# Modules that act on each channel (or each element) alone: a grouped network keeps them as they are.
_CHANNELWISE = (nn.ReLU, nn.Identity, nn.Flatten, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                nn.AdaptiveMaxPool2d)


class _GroupedLinear(nn.Module):
    """``K`` Linear layers of ``in -> out`` features as one: inputs ``(B, K*in)``, outputs ``(B, K*out)``;
    the weight ``(K*out, in)`` (member ``k``'s rows ``k*out .. k*out+out``) and the bias ``(K*out,)``."""

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members * out_features, in_features, device="meta"))
        self.bias = nn.Parameter(torch.empty(members * out_features, device="meta")) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, b = self.members, x.shape[0]
        h = x.reshape(b, k, self.in_features).transpose(0, 1)               # (K, B, in)
        w = self.weight.view(k, self.out_features, self.in_features).transpose(1, 2)
        out = torch.bmm(h, w) if self.bias is None else torch.baddbmm(self.bias.view(k, 1, -1), h, w)
        return out.transpose(0, 1).reshape(b, k * self.out_features)


class _PerMember(nn.Module):
    """A parameter-free module that mixes channels (the option-A shortcut pads them), applied to each member's
    channels alone: ``(B, K*C, ...)`` is seen as ``(B*K, C, ...)``, and the result put back side by side."""

    def __init__(self, module: nn.Module, members: int) -> None:
        super().__init__()
        self.module, self.members = module, members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, kc = x.shape[:2]
        y = self.module(x.reshape(b * self.members, kc // self.members, *x.shape[2:]))
        return y.reshape(b, self.members * y.shape[1], *y.shape[2:])


def _is_per_member(module: nn.Module) -> bool:
    from .models import _PadShortcut
    return isinstance(module, _PadShortcut)


def check_groupable(model: nn.Module) -> None:
    """A ValueError naming the first module the grouped engine cannot group, and what it can."""
    for name, mod in model.named_modules():
        if list(mod.children()):
            if any(True for _ in mod.parameters(recurse=False)) or any(True for _ in mod.buffers(recurse=False)):
                raise ValueError(f"the grouped engine cannot group module {name or '<root>'} "
                                 f"({type(mod).__name__}): it holds parameters of its own beside its children")
            continue
        if isinstance(mod, nn.BatchNorm2d):
            if not mod.track_running_stats or mod.momentum is None:
                raise ValueError(f"the grouped engine needs BatchNorm with running statistics at a fixed momentum; "
                                 f"module {name} has track_running_stats={mod.track_running_stats}, "
                                 f"momentum={mod.momentum}")
        elif not isinstance(mod, (nn.Conv2d, nn.Linear, *_CHANNELWISE)) and not _is_per_member(mod):
            raise ValueError(f"the grouped engine cannot group module {name} ({type(mod).__name__}); it groups "
                             "Conv2d, BatchNorm2d, Linear, ReLU, pooling, Flatten, Identity and the option-A shortcut")


def grouped_network(model: nn.Module, members: int) -> nn.Module:
    """``members`` copies of ``model`` as one grouped network, on the meta device (its tensors are given at each
    call through ``torch.func.functional_call``: :meth:`GroupedEngine.tensors`)."""
    check_groupable(model)
    net = copy.deepcopy(model).to("meta")
    k = members

    def swap(parent: nn.Module) -> None:
        for name, mod in parent.named_children():
            if isinstance(mod, nn.Conv2d):
                new: nn.Module = nn.Conv2d(k * mod.in_channels, k * mod.out_channels, mod.kernel_size, mod.stride,
                                           mod.padding, mod.dilation, k * mod.groups, mod.bias is not None,
                                           mod.padding_mode, device="meta")
            elif isinstance(mod, nn.BatchNorm2d):
                new = nn.BatchNorm2d(k * mod.num_features, mod.eps, mod.momentum, mod.affine, device="meta")
            elif isinstance(mod, nn.Linear):
                new = _GroupedLinear(k, mod.in_features, mod.out_features, mod.bias is not None)
            elif _is_per_member(mod):
                new = _PerMember(mod, k)
            else:
                swap(mod)
                continue
            setattr(parent, name, new)

    swap(net)
    return net


class GroupedEngine(AutogradEngine):
    """The stacked forward pass of :class:`sparsegap.stacked.Stack` through a grouped network, gradients by
    autograd. ``R`` are the stack's buffers (BatchNorm's running statistics), ``(K, C)`` each; the counters
    ``num_batches_tracked`` are counted here, one step per training forward pass.

    ``amp_dtype`` (bf16) runs the forward pass under autocast, as :func:`sparsegap.train.train` does;
    ``channels_last`` gives the grouped network its input in that memory format."""

    def __init__(self, model: nn.Module, names: list[str], buffer_names: list[str], *,
                 amp_dtype: torch.dtype | None = None, channels_last: bool = False) -> None:
        check_groupable(model)
        self.model, self.names, self.buffer_names = model, names, buffer_names
        self.amp_dtype, self.channels_last = amp_dtype, channels_last
        self.counters = [k for k, n in enumerate(buffer_names) if n.endswith("num_batches_tracked")]
        self._nets: dict[int, nn.Module] = {}
        self._member = copy.deepcopy(model).to("meta").eval()

    def _net(self, members: int) -> nn.Module:
        if members not in self._nets:
            self._nets[members] = grouped_network(self.model, members).train()
        return self._nets[members]

    def tensors(self, P, R) -> dict[str, torch.Tensor]:
        """The grouped network's parameters and buffers: the stack's, ``(K, D, ...)`` seen as ``(K*D, ...)``
        (a counter, unused at a fixed momentum, gets a scratch tensor)."""
        out = {n: p.flatten(0, 1) for n, p in zip(self.names, P)}
        for k, (n, r) in enumerate(zip(self.buffer_names, R)):
            out[n] = torch.zeros((), dtype=r.dtype, device=r.device) if k in self.counters else r.flatten(0, 1)
        return out

    def losses(self, P, xb, yb, R=()):
        """Each member's mean cross-entropy on its own batch: ``xb`` of shape ``(K, B, C, H, W)`` (or ``(K, B, D)``)."""
        from torch.func import functional_call
        k, b = xb.shape[:2]
        x = xb.transpose(0, 1).reshape(b, k * xb.shape[2], *xb.shape[3:])
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = functional_call(self._net(k), self.tensors(P, R), (x,))
            losses = _member_losses(logits.view(b, k, -1).transpose(0, 1).float(), yb)
        with torch.no_grad():
            for c in self.counters:
                R[c].add_(1)
        return self._keep(losses)

    @torch.no_grad()
    def logits_member(self, P, row: int, x, R=()):
        """Member ``row``'s logits in eval mode (its running statistics), as :func:`sparsegap.metrics.basic.evaluate`."""
        from torch.func import functional_call
        tensors = {n: p[row] for n, p in zip(self.names, P)} | {n: r[row] for n, r in zip(self.buffer_names, R)}
        return functional_call(self._member, tensors, (x,))
