"""The bookkeeping the three training loops share: history rows, divergence and the epoch checkpoint.

Stored histories and checkpoints depend on these exact keys and their order; the loops' own tests
(test_train, test_batched, test_curves) check the numbers that go into them.
"""

from types import SimpleNamespace

import torch

from sparsegap import batched, stacked
from sparsegap.bookkeeping import (HISTORY_KEYS, diverged_after_epoch, diverged_at, epoch_checkpoint, has_diverged,
                                   new_history, record_divergence, record_epoch)
from sparsegap.config import TrainConfig
from sparsegap.curves import BezierCurve, train_curve
from sparsegap.models import build_model
from sparsegap.train import train


def test_history_keys_and_order():
    assert HISTORY_KEYS == ("epoch", "lr", "train_loss", "train_acc", "train_entropy",
                            "test_loss", "test_acc", "test_entropy", "seconds")
    h = new_history()
    assert list(h) == [*HISTORY_KEYS, "trace"]
    assert all(h[k] == [] for k in HISTORY_KEYS) and h["trace"] == {}
    assert new_history() is not new_history()


def test_record_epoch_appends_one_row():
    h = new_history()
    tr = SimpleNamespace(loss=0.5, accuracy=0.75, entropy=0.25)
    te = SimpleNamespace(loss=0.6, accuracy=0.7, entropy=0.3)
    record_epoch(h, 1, 0.1, tr, te, 2.0)
    record_epoch(h, 2, 0.01, te, tr, 3.0)
    assert [h[k] for k in HISTORY_KEYS] == [[1, 2], [0.1, 0.01], [0.5, 0.6], [0.75, 0.7], [0.25, 0.3],
                                            [0.6, 0.5], [0.7, 0.75], [0.3, 0.25], [2.0, 3.0]]


def test_divergence():
    assert diverged_at(3, 17, float("nan")) == {"epoch": 3, "step": 17, "loss": "nan"}
    assert diverged_at(3, 17, float("-inf"))["loss"] == "inf"
    h = new_history()
    assert not has_diverged(h)
    assert not diverged_after_epoch(h, 1, 5, 0.3) and not has_diverged(h)
    assert diverged_after_epoch(h, 2, 10, float("inf"))
    assert h["diverged"] == {"epoch": 2, "step": 10, "loss": "inf"} and has_diverged(h)
    h = new_history()
    record_divergence(h, 1, 4, float("nan"))
    assert h["diverged"] == {"epoch": 1, "step": 4, "loss": "nan"}


def test_checkpoint_keys_keep_their_order():
    assert list(epoch_checkpoint("m", "o", None, {}, 3)) == ["model", "optimizer", "masks", "history", "epoch"]
    assert list(epoch_checkpoint("m", "o", None, {}, 3, step=12)) == [
        "model", "optimizer", "masks", "step", "history", "epoch"]
    full = epoch_checkpoint("m", "o", {}, {"a": 1}, 3, step=0, schedule={"order": None}, scaler={})
    assert list(full) == ["model", "optimizer", "masks", "step", "schedule", "scaler", "history", "epoch"]
    assert full["step"] == 0 and full["scaler"] == {} and full["epoch"] == 3


def _data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 6, generator=g), torch.randint(0, 3, (20,), generator=g)
    return SimpleNamespace(x_train=x, y_train=y, x_test=x[:7], y_test=y[:7], name="toy")


def _mlp(seed):
    return build_model("mlp", num_classes=3, input_shape=(6,), hidden=(8,), seed=seed)


def test_the_three_loops_write_the_same_shapes():
    data, cfg = _data(), TrainConfig(epochs=2, batch_size=8, lr=0.1, momentum=0.9)
    ckpts = {"train": [], "batched": [], "curve": []}
    h_train = train(_mlp(0), data, cfg, seed=1, progress=False, on_epoch_end=ckpts["train"].append)
    (h_batched,) = batched.train_batched([_mlp(0)], data, cfg, seeds=[1], progress=False,
                                         on_epoch_end=[ckpts["batched"].append])
    a, b = _mlp(1), _mlp(2)
    h_curve = train_curve(BezierCurve(_mlp(0), a.state_dict(), b.state_dict(), 2), data, cfg, seed=1,
                          progress=False, on_epoch_end=ckpts["curve"].append)
    for h in (h_train, h_batched, h_curve):
        assert list(h) == [*HISTORY_KEYS, "trace"] and h["epoch"] == [1, 2]
    assert list(ckpts["train"][-1]) == ["model", "optimizer", "masks", "step", "history", "epoch"]
    assert list(ckpts["batched"][-1]) == list(ckpts["curve"][-1]) == ["model", "optimizer", "masks", "history",
                                                                      "epoch"]
    assert [c["epoch"] for c in ckpts["batched"]] == [1, 2]


def test_batched_keeps_its_names():
    """The stacked model moved to sparsegap.stacked; sparsegap.batched still offers what it offered."""
    for name in ("ENGINES", "BATCH_MAX_MACS", "BATCH_MAX_PARAMS", "check_batchable", "check_compatible", "engine_for",
                 "forward_macs", "should_batch", "train_batched", "trains_batched"):
        assert hasattr(batched, name), name
    assert batched.ENGINES is stacked.ENGINES and batched.engine_for is stacked.engine_for
    assert batched.check_batchable is stacked.check_batchable
