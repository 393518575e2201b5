"""train()'s steps never wait for the device (issue 26): the check for a non-finite loss is read once per
epoch, and a run that diverges is still stopped at the first bad step, as when every step was checked."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import sparsegap.train as train_module
from sparsegap.config import TrainConfig
from sparsegap.train import epoch_permutation, train


@pytest.fixture(autouse=True)
def deferred_on_the_cpu(monkeypatch):
    """The CPU checks every step (a read costs nothing there, the epoch's snapshot would): these tests give the
    CPU an accelerator's deferred check, the path a GPU takes."""
    monkeypatch.setattr(train_module, "_defer_check", lambda device: True)


def toy_data(n=96, d=10, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x @ torch.randn(d, c, generator=g)).argmax(1)
    return SimpleNamespace(name="toy", x_train=x, y_train=y, x_test=x[:32] + 0.1, y_test=y[:32])


class Poisoned(nn.Module):
    """An MLP with BatchNorm whose training loss is NaN on any batch holding a sample with x[:, 0] > 100:
    a divergence at a step that the data fix (evaluation, in eval mode, stays finite)."""

    def __init__(self, seed=0):
        super().__init__()
        self.armed = True
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x):
        out = self.net(x)
        if self.training and self.armed:
            out = out + torch.where(x[:, :1] > 100, float("nan"), 0.0)
        return out


class ArmAfterEpoch1:
    """Poisons the model from epoch 2 on; it acts only at an epoch's end, so the steps stay unchecked."""

    wants_step_end = False

    def on_train_begin(self, state):
        state.model.armed = False

    def on_epoch_end(self, state):
        state.model.armed = True


class EveryStep:
    """A callback that acts at every step: train() then checks the loss at every step, as it always did."""

    def on_step_end(self, state):
        pass


def _count_syncs(monkeypatch):
    counts = {"n": 0}
    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            counts["n"] += 1
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_steps_make_no_host_sync(monkeypatch, precision):
    """The host reads the device as often with 2 steps an epoch as with 24: never in a step."""
    data = toy_data()
    counts = _count_syncs(monkeypatch)
    per_run = {}
    for bs in (48, 4):
        counts["n"] = 0
        cfg = TrainConfig(epochs=2, batch_size=bs, lr=0.05, precision=precision)
        h = train(Poisoned(), data, cfg, progress=False, device="cpu")
        assert len(h["epoch"]) == 2 and "diverged" not in h
        per_run[bs] = counts["n"]
    assert per_run[4] == per_run[48], per_run


def _run(cfg, data, callbacks=()):
    model = Poisoned()
    history = train(model, data, cfg, progress=False, device="cpu", callbacks=list(callbacks))
    return model, history


def _same(a, b):
    (ma, ha), (mb, hb) = a, b
    assert ha.keys() == hb.keys()
    for k in ha:
        if k != "seconds":
            assert ha[k] == hb[k], k
    sa, sb = ma.state_dict(), mb.state_dict()
    for k in sa:   # the weights, and BatchNorm's running statistics
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("epoch", [1, 2])
def test_a_mid_epoch_divergence_stops_at_its_step_with_the_weights_of_before(epoch):
    data = toy_data()
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05)
    # the sample at position 50 of the epoch's order poisons its 7th batch of 8 (12 batches an epoch)
    x = data.x_train.clone()
    x[int(epoch_permutation(96, 0, epoch - 1)[50]), 0] = 1000.0
    data = SimpleNamespace(**{**vars(data), "x_train": x})
    arm = [ArmAfterEpoch1()] if epoch == 2 else []
    deferred, every_step = _run(cfg, data, arm), _run(cfg, data, arm + [EveryStep()])
    _same(deferred, every_step)
    d = deferred[1]["diverged"]
    assert d == {"epoch": epoch, "step": 12 * (epoch - 1) + 7, "loss": "nan"}
    assert len(deferred[1]["epoch"]) == epoch - 1   # no row for the epoch it died in
    assert all(torch.isfinite(p).all() for p in deferred[0].parameters())   # the weights before that step
    assert len(deferred[1]["epoch"]) == d["epoch"] - 1
    assert all(torch.isfinite(p).all() for p in deferred[0].parameters())   # the weights before the bad step


def test_runs_that_do_not_diverge_are_unchanged_by_the_deferred_check():
    data = toy_data()
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05)
    _same(_run(cfg, data), _run(cfg, data, [EveryStep()]))


def test_the_cpu_checks_every_step_without_a_snapshot(monkeypatch):
    """Where a read is free (the CPU), no epoch pays for a snapshot it would never use."""
    monkeypatch.undo()
    assert not train_module._defer_check(torch.device("cpu")) and train_module._defer_check(torch.device("cuda"))
    taken = []
    monkeypatch.setattr(train_module, "_snapshot", lambda *a: taken.append(1))
    train(Poisoned(), toy_data(), TrainConfig(epochs=2, batch_size=8, lr=0.05), progress=False, device="cpu")
    assert taken == []


# ----------------------------------------------------------------------------- the batched trainer

def _batched(defer: bool, monkeypatch, lrs=(0.1, 1e12, 0.05), epochs=3, count=False):
    import sparsegap.batched as batched_module
    from sparsegap.batched import train_batched
    from sparsegap.models import build_model
    monkeypatch.setattr(batched_module, "_defer_check", lambda device: defer)
    data = toy_data()
    models = [build_model("mlp", num_classes=3, input_shape=(10,), hidden=(16,), seed=s) for s in range(len(lrs))]
    cfgs = [TrainConfig(epochs=epochs, batch_size=8, lr=lr) for lr in lrs]
    counts = _count_syncs(monkeypatch) if count else None
    hs = train_batched(models, data, cfgs, seeds=list(range(len(lrs))), device="cpu", progress=False)
    if count:
        monkeypatch.undo()
    return models, hs, counts


def test_a_batched_member_that_diverges_stops_as_when_every_step_is_checked(monkeypatch):
    """One member's lr of 1e12 makes its loss non-finite in the first epoch: the deferred check replays the
    epoch and the diverged member and the others end bitwise as with a check at every step."""
    (m_d, h_d, _), (m_e, h_e, _) = _batched(True, monkeypatch), _batched(False, monkeypatch)
    assert "diverged" in h_d[1] and "diverged" not in h_d[0] and "diverged" not in h_d[2]
    for a, b, ha, hb in zip(m_d, m_e, h_d, h_e):
        assert {k: v for k, v in ha.items() if k != "seconds"} == {k: v for k, v in hb.items() if k != "seconds"}
        for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
            assert torch.equal(p, q), n
    assert all(torch.isfinite(p).all() for p in m_d[1].parameters())   # the weights from before the bad step


def test_batched_steps_make_no_host_sync(monkeypatch):
    """Deferred, the host reads as often with 12 steps an epoch as it must per epoch (evaluation, the check),
    never per step: counted over 1 and over 3 epochs, the difference is a multiple of the epochs, and the same
    whether an epoch has 12 steps or 3."""
    def syncs(batch_size):
        import sparsegap.batched as batched_module
        from sparsegap.batched import train_batched
        from sparsegap.models import build_model
        monkeypatch.setattr(batched_module, "_defer_check", lambda device: True)
        data = toy_data()
        models = [build_model("mlp", num_classes=3, input_shape=(10,), hidden=(16,), seed=s) for s in range(2)]
        counts = _count_syncs(monkeypatch)
        train_batched(models, data, TrainConfig(epochs=2, batch_size=batch_size, lr=0.05), device="cpu",
                      progress=False)
        n = counts["n"]
        monkeypatch.undo()
        return n
    assert syncs(8) == syncs(32)
