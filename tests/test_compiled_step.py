"""The opt-in compiled step (issue 26): TrainConfig.compile runs the forward pass and loss of every full batch as
one torch.compile'd function. It must train the same network as the eager loop to float tolerance, leave the last,
shorter batch eager, and change no existing run's hash. Compiling takes 10-30 s on the CPU, so one network is
compiled once for the whole module."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import sparsegap.train as train_module
from sparsegap.config import COMPILE_MODES, TrainConfig
from sparsegap.train import train


def toy_data(n=20, d=10, c=3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = (x @ torch.randn(d, c, generator=g)).argmax(1)
    return SimpleNamespace(name="toy", x_train=x, y_train=y, x_test=x[:8] + 0.1, y_test=y[:8])


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def test_compile_changes_no_existing_hash_and_is_checked():
    assert COMPILE_MODES[0] == "off"
    assert TrainConfig().hash() == TrainConfig(compile="off").hash()
    assert "compile" not in TrainConfig().to_dict()
    assert TrainConfig(compile="reduce-overhead").hash() != TrainConfig().hash()
    assert TrainConfig(compile="default").gpu_options           # never batched: the batched trainer has no compile
    with pytest.raises(ValueError, match=r"TrainConfig.compile must be one of \('off', 'default', "
                                         r"'reduce-overhead'\), got 'max'"):
        TrainConfig(compile="max")
    with pytest.raises(ValueError, match=r"compile=.default. with fisher_reg=0.1: set compile=.off."):
        TrainConfig(compile="default", fisher_reg=0.1, fisher_reg_epochs=1)


@pytest.fixture(scope="module")
def runs():
    """The same network trained eager and compiled (3 epochs of 20 samples in batches of 8: two full batches and
    one of 4 each epoch), with the compiled function's calls counted."""
    import torch._inductor.config as inductor
    inductor.compile_threads = 1            # no pool of compile workers beside the test
    calls = []
    original = train_module._compiled_loss

    def counted(model, mode):
        fn = original(model, mode)
        if fn is None:
            return None

        def wrapped(xb, yb):
            calls.append(len(xb))
            return fn(xb, yb)
        return wrapped
    out = {}
    data = toy_data()
    for mode in ("off", "default"):
        model = net()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(train_module, "_compiled_loss", counted)
            h = train(model, data, TrainConfig(epochs=3, batch_size=8, lr=0.05, compile=mode), device="cpu",
                      progress=False)
        out[mode] = (model, h)
    return out, calls


def test_the_compiled_step_trains_the_eager_network_to_float_tolerance(runs):
    (eager, h_e), (compiled, h_c) = runs[0]["off"], runs[0]["default"]
    for (n, p), (_, q) in zip(eager.state_dict().items(), compiled.state_dict().items()):
        assert torch.allclose(p.float(), q.float(), rtol=1e-4, atol=1e-5), n
    for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
        assert h_e[key] == pytest.approx(h_c[key], rel=1e-4, abs=1e-5), key


def test_only_full_batches_are_compiled(runs):
    assert runs[1] == [8, 8] * 3      # the batch of 4 that ends each epoch went through the eager model
