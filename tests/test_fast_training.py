"""The GPU-oriented training options, run on the CPU where torch allows it: mixed precision (bf16 autocast,
fp16 with a gradient scaler), channels_last, on-device crop-and-flip augmentation; and dataset downloads."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
import torch.nn.functional as F

from sparsegap import data as D
from sparsegap.augment import crop_flip
from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.data import DataSplits
from sparsegap.models import build_model
from sparsegap.pruning import global_magnitude_masks
from sparsegap.train import train


def images(n: int = 96, seed: int = 0) -> DataSplits:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return DataSplits("tiny-images", x, y, x[:32], y[:32], 4)


def resnet():
    return build_model("resnet20", num_classes=4, input_shape=(3, 8, 8), seed=0)


def fit(cfg: TrainConfig, data: DataSplits | None = None, masks=None, **kw):
    model = resnet()
    h = train(model, data or images(), cfg, masks=masks, seed=0, device="cpu", progress=False, **kw)
    return model, h


BASE = TrainConfig(epochs=2, batch_size=32, lr=0.05, schedule="constant", weight_decay=5e-4)


# ------------------------------------------------------------------------------------ augmentation

def reference_crop_flip(x, offsets, flips, padding=4):
    out = []
    for img, (dy, dx), f in zip(x, offsets.tolist(), flips.tolist()):
        p = F.pad(img, (padding,) * 4)
        c = p[:, dy: dy + img.shape[1], dx: dx + img.shape[2]]
        out.append(c.flip(2) if f else c)
    return torch.stack(out)


def test_crop_flip_is_a_padded_random_crop_and_a_flip_per_image():
    x = torch.randn(16, 3, 8, 10)
    g = torch.Generator().manual_seed(5)
    offsets = torch.randint(0, 9, (16, 2), generator=g)
    flips = torch.rand(16, generator=g) < 0.5
    out = crop_flip(x, torch.Generator().manual_seed(5))
    assert torch.equal(out, reference_crop_flip(x, offsets, flips))
    assert 0 < int(flips.sum()) < 16                      # both branches were exercised
    assert out.is_contiguous()
    cl = crop_flip(x.contiguous(memory_format=torch.channels_last), torch.Generator().manual_seed(5))
    assert torch.equal(cl, out) and cl.is_contiguous(memory_format=torch.channels_last)


def test_augmentation_changes_training_reproducibly_and_needs_images():
    cfg = dataclasses.replace(BASE, augment="crop-flip")
    a, _ = fit(cfg)
    b, _ = fit(cfg)
    plain, _ = fit(BASE)
    wa, wb, wp = (torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (a, b, plain))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wp)
    flat = DataSplits("flat", torch.randn(40, 12), torch.randint(0, 3, (40,)), torch.randn(8, 12),
                      torch.randint(0, 3, (8,)), 3)
    with pytest.raises(ValueError, match=r"augment='crop-flip' applies to image inputs of shape \(N, C, H, W\)"):
        train(build_model("mlp", num_classes=3, input_shape=(12,), hidden=(4,)), flat, cfg, device="cpu",
              progress=False)


# ----------------------------------------------------------------------------- mixed precision

def test_bf16_autocast_trains_close_to_fp32_and_keeps_pruned_weights_at_zero():
    model = resnet()
    masks = global_magnitude_masks(model, 0.8)
    fp32, h32 = fit(BASE, masks=masks)
    bf16, h16 = fit(dataclasses.replace(BASE, precision="bf16"), masks=masks)
    assert h16["train_loss"][-1] < h16["train_loss"][0] + 1.0 and all(torch.isfinite(torch.tensor(h16["train_loss"])))
    w32 = torch.cat([p.detach().flatten() for p in fp32.parameters()])
    w16 = torch.cat([p.detach().flatten() for p in bf16.parameters()])
    assert not torch.equal(w32, w16)                      # autocast did run in bf16 ...
    assert (w32 - w16).norm() / w32.norm() < 0.1          # ... and trained the same network, roughly
    params = dict(bf16.named_parameters())
    for name, m in masks.items():
        assert params[name].dtype == torch.float32       # master weights stay fp32
        assert torch.count_nonzero(params[name].detach()[~m]) == 0


def test_fp16_trains_with_a_scaler_that_the_checkpoint_keeps():
    cfg = dataclasses.replace(BASE, precision="fp16", epochs=3)
    straight, h = fit(cfg)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])))
    ckpts = []
    first = resnet()
    def keep(ckpt):        # as the run store does: written out (the live optimizer state changes afterwards)
        buf = io.BytesIO()
        torch.save(ckpt, buf)
        buf.seek(0)
        ckpts.append(torch.load(buf, weights_only=True))
    train(first, images(), cfg, seed=0, device="cpu", progress=False, on_epoch_end=keep)
    assert "scaler" in ckpts[0] and ckpts[0]["scaler"]["scale"] > 0
    resumed = resnet()
    train(resumed, images(), cfg, seed=0, device="cpu", progress=False, checkpoint=ckpts[1])
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_channels_last_trains_the_same_network_to_float_precision():
    a, _ = fit(BASE)
    b, _ = fit(dataclasses.replace(BASE, channels_last=True))
    conv = next(p for p in b.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    wa = torch.cat([p.detach().flatten() for p in a.parameters()])
    wb = torch.cat([p.detach().flatten() for p in b.parameters()])
    assert (wa - wb).norm() / wa.norm() < 1e-4          # other kernels sum in another order: not bitwise


def test_the_options_enter_the_hash_only_when_set_and_train_alone_in_a_sweep():
    assert TrainConfig().to_dict() == TrainConfig(precision="fp32", channels_last=False, augment="none").to_dict()
    for kw in (dict(precision="bf16"), dict(channels_last=True), dict(augment="crop-flip")):
        assert TrainConfig(**kw).hash() != TrainConfig().hash()
    from sparsegap.batched import check_compatible
    from sparsegap.runs.sweep import _groups
    with pytest.raises(ValueError, match="mixed precision, channels_last and augmentation"):
        check_compatible([TrainConfig(precision="bf16"), TrainConfig(precision="bf16", lr=0.2)])
    d, m = DataConfig("digits", train_size=100, test_size=50), ModelConfig("mlp", hidden=(4,))
    fast = [RunConfig("dense", d, m, TrainConfig(epochs=1, precision="bf16"), seed=s) for s in (0, 1)]
    assert _groups(fast) == []


@pytest.mark.parametrize("kw, match", [
    (dict(precision="fp8"), r"TrainConfig.precision must be one of \('fp32', 'bf16', 'fp16'\), got 'fp8'"),
    (dict(channels_last=1), r"TrainConfig.channels_last must be True or False, got 1"),
    (dict(augment="mixup"), r"TrainConfig.augment must be one of \('none', 'crop-flip'\), got 'mixup'"),
])
def test_bad_fast_options_are_refused(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TrainConfig(**kw)


# ----------------------------------------------------------------------------------- downloads

def test_the_download_switch_reaches_load_dataset(monkeypatch):
    from sparsegap import runs
    seen = []
    monkeypatch.setattr(D, "load_dataset", lambda *a, **kw: seen.append(kw["download"]) or images())
    runs.load_data.cache_clear()
    try:
        D.allow_downloads(True)
        runs.load_data(DataConfig("cifar10", train_size=40, test_size=20))
        D.allow_downloads(False)
        runs.load_data(DataConfig("cifar10", train_size=50, test_size=20))
    finally:
        D.allow_downloads(False)
        runs.load_data.cache_clear()
    assert seen == [True, False]
    with pytest.raises(TypeError, match="download must be True or False, got 'yes'"):
        D.allow_downloads("yes")


def test_a_notebook_download_parameter_sets_the_switch():
    from sparsegap.studies.two_regimes import PARAMETERS
    import yaml
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    import json
    cell = next(c for c in json.loads((root / "notebooks" / "01_two_regimes.ipynb").read_text())["cells"]
                if "parameters" in c.get("metadata", {}).get("tags", []))
    namespace: dict = {}
    exec("".join(cell["source"]), namespace)
    namespace.pop("__builtins__")
    namespace.update(yaml.safe_load((root / "notebooks" / "params" / "paper" / "01_two_regimes.yaml").read_text()))
    try:
        PARAMETERS.check(namespace, show=False)
        assert D.downloads_allowed() is True             # the paper profile downloads what is missing
    finally:
        D.allow_downloads(False)


def test_no_network_is_said_at_once_with_the_folder_to_fill(tmp_path, monkeypatch):
    import time
    import urllib.error

    import torchvision

    class Offline:
        def __init__(self, *a, **kw):
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError) as info:
        D.load_dataset("cifar10", root=tmp_path, download=True)
    message = str(info.value)
    assert "no network" in message and str(tmp_path / "cifar-10-batches-py") in message
    assert "Fill the folder named above by hand" in message
    assert time.monotonic() - t0 < 5
