"""Early Fisher regularization, the first remedy of The Price of Sparsity's Section 4 (issue 13)."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from sparsegap.batched import train_batched
from sparsegap.config import TrainConfig
from sparsegap.models import build_model
from sparsegap.train import fisher_penalty, train


def tiny(seed=0, dtype=torch.float64):
    return build_model("mlp", hidden=(6,), num_classes=3, input_shape=(4,), seed=seed).to(dtype)


def test_the_penalty_is_the_squared_gradient_norm_with_sampled_labels():
    model = tiny()
    x = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    logits = model(x)
    r = fisher_penalty(model, logits, generator=torch.Generator().manual_seed(5))
    labels = torch.multinomial(torch.softmax(logits.detach().float(), 1), 1,
                               generator=torch.Generator().manual_seed(5)).squeeze(1)
    g = torch.autograd.grad(F.cross_entropy(model(x), labels), list(model.parameters()))
    assert float(r.detach()) == pytest.approx(float(sum((v ** 2).sum() for v in g)), rel=1e-12)


def test_its_gradient_matches_finite_differences():
    """The regularizer is differentiated through (double backward): check d R / d θ along a direction."""
    model = tiny()
    x = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def r_at(eps, d):
        with torch.no_grad():
            for p, v in zip(model.parameters(), d):
                p.add_(eps * v)
        value = fisher_penalty(model, model(x), generator=torch.Generator().manual_seed(5)).detach()
        with torch.no_grad():
            for p, v in zip(model.parameters(), d):
                p.sub_(eps * v)
        return value

    d = [torch.randn_like(p, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(model.parameters())]
    r = fisher_penalty(model, model(x), generator=torch.Generator().manual_seed(5))
    grads = torch.autograd.grad(r, list(model.parameters()))
    analytic = float(sum((g * v).sum() for g, v in zip(grads, d)))
    eps = 1e-5
    numeric = (float(r_at(eps, d)) - float(r_at(-eps, d))) / (2 * eps)
    assert analytic == pytest.approx(numeric, rel=1e-5)


def test_masks_leave_pruned_weights_out():
    model = tiny()
    x = torch.randn(10, 4, dtype=torch.float64)
    masks = {"net.0.weight": torch.zeros(6, 4, dtype=torch.bool)} if "net.0.weight" in dict(
        model.named_parameters()) else {n: torch.zeros_like(p, dtype=torch.bool) for n, p in
                                         list(model.named_parameters())[:1]}
    full = fisher_penalty(model, model(x), generator=torch.Generator().manual_seed(5))
    masked = fisher_penalty(model, model(x), masks, generator=torch.Generator().manual_seed(5))
    assert float(masked.detach()) < float(full.detach())


def test_the_coefficient_schedule():
    step = TrainConfig(epochs=10, fisher_reg=-0.5, fisher_reg_epochs=4)
    assert [step.fisher_reg_at(e) for e in range(6)] == [-0.5] * 4 + [0.0, 0.0]
    ramp = TrainConfig(epochs=10, fisher_reg=0.4, fisher_reg_epochs=4, fisher_reg_off="linear")
    assert [ramp.fisher_reg_at(e) for e in range(5)] == pytest.approx([0.4, 0.3, 0.2, 0.1, 0.0])
    assert TrainConfig().to_dict() == {}        # off by default, and out of every existing run's hash


def test_training_with_the_regularizer_changes_only_its_epochs():
    g = torch.Generator().manual_seed(0)
    data = SimpleNamespace(x_train=torch.randn(64, 4, generator=g), y_train=torch.randint(0, 3, (64,), generator=g),
                           x_test=torch.randn(16, 4, generator=g), y_test=torch.randint(0, 3, (16,), generator=g))
    base = dict(epochs=3, batch_size=16, lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant")
    plain = train(tiny(dtype=torch.float32), data, TrainConfig(**base), progress=False)
    reg = train(tiny(dtype=torch.float32), data, TrainConfig(**base, fisher_reg=-0.5, fisher_reg_epochs=1),
                progress=False)
    assert reg["train_loss"][0] != plain["train_loss"][0]
    again = train(tiny(dtype=torch.float32), data, TrainConfig(**base, fisher_reg=-0.5, fisher_reg_epochs=1),
                  progress=False)
    assert again["train_loss"] == reg["train_loss"]            # deterministic (labels from a seeded stream)
    with pytest.raises(ValueError, match="Fisher regularizer"):
        train_batched([tiny(dtype=torch.float32), tiny(1, torch.float32)], data,
                      TrainConfig(**base, fisher_reg=-0.5, fisher_reg_epochs=1), progress=False)


@pytest.mark.parametrize("kw, match", [
    (dict(fisher_reg=-0.5), "go together"),
    (dict(fisher_reg_epochs=2), "go together"),
    (dict(fisher_reg=-0.5, fisher_reg_epochs=40), r"fisher_reg_epochs must be an int in \[0, epochs=30\]"),
    (dict(fisher_reg=float("nan"), fisher_reg_epochs=2), "fisher_reg must be a finite number"),
    (dict(fisher_reg=-0.5, fisher_reg_epochs=2, fisher_reg_off="cosine"), r"fisher_reg_off must be one of"),
])
def test_bad_regularizer_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_runs_with_the_regularizer_train_alone_in_a_sweep(tmp_path):
    import json
    from sparsegap.config import DataConfig, ModelConfig, RunConfig
    from sparsegap.runs import RunStore, run_all
    train_cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, schedule="constant", fisher_reg=-0.1, fisher_reg_epochs=1)
    cfgs = [RunConfig("dense", DataConfig("digits", train_size=100, test_size=50), ModelConfig("mlp", hidden=(8,)),
                      train_cfg, seed=s) for s in (0, 1)]
    runs = run_all(cfgs, RunStore(tmp_path / "runs"), progress=False, batch=True)
    assert all("batch" not in json.loads((r.path / "meta.json").read_text()) for r in runs)
    assert runs[0].history["train_loss"] != runs[1].history["train_loss"]
