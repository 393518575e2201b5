"""The grouped engine (issue 26): ResNets with BatchNorm trained as one grouped network agree, member by member,
with each trained alone by train(), to float tolerance, with masks, momentum, weight decay, crop-flip,
channels_last and bf16, through divergence and the deferred non-finite check."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import sparsegap.batched as batched
from sparsegap.batched import check_compatible, train_batched
from sparsegap.config import TrainConfig
from sparsegap.grouped import check_groupable, grouped_network, GroupedEngine
from sparsegap.models import build_model
from sparsegap.pruning import global_magnitude_masks
from sparsegap.stacked import Stack, engine_for
from sparsegap.train import train

SHAPE = (3, 12, 12)
CLASSES = 5


def make_data(n: int = 40):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *SHAPE, generator=g)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return SimpleNamespace(name="toy", x_train=x, y_train=y, x_test=x[:9], y_test=y[:9])


def resnet(seed: int, name: str = "resnet20") -> nn.Module:
    return build_model(name, num_classes=CLASSES, input_shape=SHAPE, width=0.5, seed=seed)


def cfg(lr: float = 0.05, **kw) -> TrainConfig:
    # 40 samples in batches of 16: 3 steps an epoch, the last one short; the lr drops after the first epoch
    return TrainConfig(**{"epochs": 2, "batch_size": 16, "lr": lr, "momentum": 0.9, "weight_decay": 5e-4,
                          "milestones": (0.5,)} | kw)


def close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    a, b = a.detach().double(), b.detach().double()
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-12)
    return float((a - b).abs().max()) <= rtol * scale


def assert_same(single: nn.Module, grouped: nn.Module, rtol: float = 1e-4) -> None:
    ts, tg = single.state_dict(), grouped.state_dict()
    assert ts.keys() == tg.keys()
    for k in ts:
        if ts[k].is_floating_point():
            assert close(ts[k], tg[k], rtol), f"{k}: grouped and single differ"
        else:
            assert torch.equal(ts[k], tg[k]), f"{k}: {ts[k]} != {tg[k]}"


@pytest.mark.parametrize("arch", ["resnet20", "resnet18"])   # option-A shortcuts; torchvision's 1x1 downsampling
def test_the_grouped_network_computes_each_members_forward_pass_and_statistics(arch):
    models = [build_model(arch, num_classes=CLASSES, input_shape=SHAPE, width=0.25, seed=s) for s in range(3)]
    engine = GroupedEngine(models[0], [n for n, _ in models[0].named_parameters()],
                           [n for n, _ in models[0].named_buffers()])
    P = [torch.stack([dict(m.named_parameters())[n].detach() for m in models]).requires_grad_()
         for n, _ in models[0].named_parameters()]
    R = [torch.stack([dict(m.named_buffers())[n] for m in models]) for n, _ in models[0].named_buffers()]
    g = torch.Generator().manual_seed(1)
    xb = torch.randn(3, 8, *SHAPE, generator=g)
    yb = torch.randint(0, CLASSES, (3, 8), generator=g)
    losses = engine.losses(P, xb, yb, R)
    grads = engine.grads(P)
    names = [n for n, _ in models[0].named_buffers()]
    for k, m in enumerate(models):
        m.train()
        loss = nn.functional.cross_entropy(m(xb[k]), yb[k])
        assert close(losses[k], loss, 1e-5)
        own = torch.autograd.grad(loss, list(m.parameters()))
        for gk, o in zip(grads, own):
            assert close(gk[k], o, 1e-4)
        for n, r in zip(names, R):   # running statistics, counters included, updated by the member's own batch
            b = dict(m.named_buffers())[n]
            assert (torch.equal(r[k], b) if not b.is_floating_point() else close(r[k], b, 1e-5)), n


@pytest.mark.parametrize("arch", ["resnet20", "lenet5"])
def test_members_trained_grouped_agree_with_train(arch):
    data = make_data()
    lrs, seeds = (0.05, 0.02, 0.1), [3, 1, 4]
    build = (lambda s: build_model("lenet5", num_classes=CLASSES, input_shape=SHAPE, seed=s)) if arch == "lenet5" \
        else resnet
    singles = [build(s) for s in range(3)]
    masks = [None, global_magnitude_masks(singles[1], 0.5), global_magnitude_masks(singles[2], 0.8)]
    groups = [copy.deepcopy(m) for m in singles]
    augment = "none" if arch == "lenet5" else "crop-flip"
    hs = [train(m, data, cfg(lr, augment=augment), masks=k, seed=s, progress=False)
          for m, lr, k, s in zip(singles, lrs, masks, seeds)]
    hg = train_batched(groups, data, [cfg(lr, augment=augment) for lr in lrs], masks=masks, seeds=seeds,
                       progress=False, engine="grouped")
    for s, g, a, b, k in zip(singles, groups, hs, hg, masks):
        assert_same(s, g)
        for key in ("train_loss", "test_loss", "train_acc"):
            assert torch.allclose(torch.tensor(a[key]), torch.tensor(b[key]), rtol=1e-4, atol=1e-6), key
        if k is not None:   # pruned weights stay exactly 0 through momentum and weight decay
            params = dict(g.named_parameters())
            for n, mask in k.items():
                assert not bool(params[n].detach()[~mask].any()), n


def test_auto_picks_the_grouped_engine_for_batchnorm_and_the_others_refuse_it():
    assert engine_for(resnet(0)) == "grouped"
    with pytest.raises(ValueError, match="engine='grouped'"):
        engine_for(resnet(0), "vmap")
    with pytest.raises(ValueError, match="buffers"):
        train_batched([resnet(0), resnet(1)], make_data(), cfg(), engine="bmm", progress=False)


def test_channels_last_gives_the_same_run_to_float_tolerance():
    data = make_data()
    a, b = resnet(0), resnet(0)
    train_batched([a], data, cfg(channels_last=True), progress=False, engine="grouped")
    train(b, data, cfg(), progress=False)
    assert_same(b, a)


def test_bf16_trains_under_autocast_like_train():
    data = make_data()
    a, b, c = resnet(0), resnet(0), resnet(0)
    train_batched([a], data, cfg(precision="bf16", epochs=1), progress=False, engine="grouped")
    train(b, data, cfg(precision="bf16", epochs=1), progress=False)
    train(c, data, cfg(epochs=1), progress=False)
    wa, wb, wc = (m.conv1.weight.detach() for m in (a, b, c))
    # bf16 rounding (8 bits of mantissa) separates both bf16 runs from fp32 more than from each other
    assert float((wa - wb).abs().max()) < float((wa - wc).abs().max()) * 2
    assert float((wa - wb).abs().max()) < 1e-2
    assert not torch.equal(wa, wc)


@pytest.mark.parametrize("deferred", [False, True], ids=["checked every step", "checked at the epoch's end"])
def test_a_diverging_member_stops_and_leaves_the_others_statistics_as_they_were(monkeypatch, deferred):
    """It diverges at its second step, mid-epoch: the others' forward pass of that step runs again without it, and
    their BatchNorm statistics must count that step once (counted twice, they end at 7 batches, not 6)."""
    monkeypatch.setattr(batched, "_defer_check", lambda device: deferred)
    data = make_data()
    lrs = (0.05, 1e30, 0.02)
    singles = [resnet(s) for s in range(3)]
    groups = [copy.deepcopy(m) for m in singles]
    hs = [train(m, data, cfg(lr, momentum=0.0), seed=s, progress=False) for s, (m, lr) in enumerate(zip(singles, lrs))]
    hg = train_batched(groups, data, [cfg(lr, momentum=0.0) for lr in lrs], seeds=[0, 1, 2], progress=False,
                       engine="grouped")
    assert "diverged" in hs[1] and hg[1]["diverged"]["step"] == hs[1]["diverged"]["step"]
    for k in (0, 2):
        assert "diverged" not in hg[k]
        assert_same(singles[k], groups[k])
    assert groups[1].bn1.num_batches_tracked == singles[1].bn1.num_batches_tracked
    for (n, p), q in zip(singles[1].named_parameters(), groups[1].parameters()):   # the weights before the bad step
        assert close(p, q, 1e-4), n


def test_restore_buffers_keeps_the_rows_asked_for():
    models = [resnet(s) for s in range(2)]
    names = [n for n, _ in models[0].named_parameters()]
    bnames = [n for n, _ in models[0].named_buffers()]
    stack = Stack([0, 1], [dict(m.named_parameters()) for m in models], [None, None], [None, None], names,
                  GroupedEngine(models[0], names, bnames), [dict(m.named_buffers()) for m in models], bnames)
    saved = stack.save_buffers()
    for r in stack.R:
        r.add_(1)
    stack.restore_buffers(saved, keep_rows=[1])
    assert all(torch.equal(r[0], s[0]) and torch.equal(r[1], s[1] + 1) for r, s in zip(stack.R, saved))
    # the member modules show the stack's rows, and get their own copies back on release
    assert models[1].bn1.num_batches_tracked == saved[bnames.index("bn1.num_batches_tracked")][1] + 1
    stack.release([None, None])
    assert models[0].bn1.running_mean.data_ptr() != stack.R[bnames.index("bn1.running_mean")].data_ptr()


def test_refusals_name_what_is_allowed():
    with pytest.raises(ValueError, match="fp16"):
        check_compatible([cfg(precision="fp16")], "grouped")
    with pytest.raises(ValueError, match="compile"):
        check_compatible([cfg(compile="default")], "grouped")
    with pytest.raises(ValueError, match="grouped"):
        check_compatible([cfg(augment="crop-flip")], "bmm")
    with pytest.raises(ValueError, match="Dropout"):
        check_groupable(nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Dropout(0.1)))
    with pytest.raises(ValueError, match="momentum"):
        check_groupable(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=None)))
    flat = SimpleNamespace(name="flat", x_train=torch.randn(8, 12), y_train=torch.zeros(8, dtype=torch.long),
                           x_test=torch.randn(2, 12), y_test=torch.zeros(2, dtype=torch.long))
    mlp_bn = nn.Sequential(nn.Linear(12, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="BatchNorm1d"):
        train_batched([mlp_bn], flat, cfg(), progress=False)


def test_the_grouped_layout_is_member_by_member():
    net = grouped_network(resnet(0), 4)
    assert net.conv1.groups == 4 and net.conv1.out_channels == 4 * resnet(0).conv1.out_channels
    assert net.bn1.num_features == 4 * resnet(0).bn1.num_features
