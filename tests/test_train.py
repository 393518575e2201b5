from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sparsegap.bookkeeping import HISTORY_KEYS
from sparsegap.config import TrainConfig
from sparsegap.pruning import global_magnitude_masks
from sparsegap.train import resolve_device, train


def toy_data(n=96, d=10, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, c, generator=g)
    y = (x @ w).argmax(1)
    return SimpleNamespace(x_train=x, y_train=y, x_test=x[:32] + 0.1, y_test=y[:32])


def toy_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))


def test_history_has_every_metric_per_epoch_and_learns():
    cfg = TrainConfig(epochs=8, batch_size=16, lr=0.1, milestones=(0.5,))
    h = train(toy_model(), toy_data(), cfg, progress=False, device="cpu")
    for k in HISTORY_KEYS:
        assert len(h[k]) == 8, k
    assert h["epoch"] == list(range(1, 9))
    assert h["train_acc"][-1] > 0.9
    assert h["train_loss"][-1] < h["train_loss"][0]
    assert h["lr"][:4] == [0.1] * 4 and h["lr"][4] == pytest.approx(0.01)


def test_training_is_deterministic_given_the_seed():
    cfg = TrainConfig(epochs=3, batch_size=16)
    a, b, c = toy_model(), toy_model(), toy_model()
    train(a, toy_data(), cfg, seed=5, progress=False, device="cpu")
    train(b, toy_data(), cfg, seed=5, progress=False, device="cpu")
    train(c, toy_data(), cfg, seed=6, progress=False, device="cpu")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_masks_hold_during_training():
    model = toy_model()
    # the floor keeps the small output layer connected: without it global pruning emptied it
    masks = global_magnitude_masks(model, 0.8, min_density=0.05)
    train(model, toy_data(), TrainConfig(epochs=3, batch_size=16, weight_decay=1e-2), masks=masks,
          progress=False, device="cpu")
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert torch.count_nonzero(params[n][~m]) == 0


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run():
    cfg = TrainConfig(epochs=6, batch_size=16, milestones=(0.3, 0.6))
    data, masks = toy_data(), global_magnitude_masks(toy_model(), 0.5)
    full = toy_model()
    h_full = train(full, data, cfg, masks=masks, seed=3, progress=False, device="cpu")

    saved = []

    class Interrupt(Exception):
        pass

    def save(ckpt):
        saved.append(torch.load(_roundtrip(ckpt), weights_only=True))  # as the run store does
        if ckpt["epoch"] == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(toy_model(), data, cfg, masks=masks, seed=3, on_epoch_end=save, progress=False, device="cpu")
    resumed = toy_model(seed=99)  # whatever it starts from, the checkpoint overrides it
    h_res = train(resumed, data, cfg, masks=masks, seed=3, checkpoint=saved[-1], progress=False, device="cpu")
    assert all(torch.equal(p, q) for p, q in zip(full.parameters(), resumed.parameters()))
    assert h_res["train_loss"] == h_full["train_loss"] and h_res["lr"] == h_full["lr"]


def _roundtrip(obj):
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_callbacks_see_steps_and_can_log():
    class Counter:
        def __init__(self):
            self.steps = 0

        def on_step_end(self, state):
            self.steps += 1

        def on_epoch_end(self, state):
            state.log("weight_norm", sum(p.norm() ** 2 for p in state.model.parameters()).item())

    cb = Counter()
    h = train(toy_model(), toy_data(n=64), TrainConfig(epochs=2, batch_size=16), callbacks=[cb],
              progress=False, device="cpu")
    assert cb.steps == 8
    assert h["trace"]["weight_norm"]["epoch"] == [0, 1]
    assert h["trace"]["weight_norm"]["step"] == [4, 8]
    assert h["trace"]["weight_norm"]["epochs"] == [1.0, 2.0]


def test_device_auto_and_bad_device():
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu0")


def test_wrong_config_type():
    with pytest.raises(TypeError, match="TrainConfig"):
        train(toy_model(), toy_data(), {"epochs": 1})
