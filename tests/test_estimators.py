"""Curvature estimators against brute-force references on tiny float64 networks.

Every fast estimator (closed-form per-sample norms, torch.func fallback, Hutchinson, batched
Jacobian) is compared with a per-sample autograd loop or an explicit Hessian/Jacobian.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsegap.metrics.callbacks import FisherTraceCallback
from sparsegap.metrics.fisher import fisher_trace
from sparsegap.metrics.hessian import HutchinsonResult, hessian_trace
from sparsegap.metrics.jacobian import jacobian_norm
from sparsegap.metrics.persample import per_sample_grad_norms_sq

# torch.func.hessian imports a module that warns about torch.jit.script; not ours to fix.
pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
              pytest.mark.usefixtures("float64")]   # conftest.float64: tight comparisons in float64




# ----------------------------------------------------------------------------- tiny models

class SeqMLP(nn.Module):
    """Linear layers applied at every position of a sequence: weight sharing over t (Gram form)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 40)
        self.out = nn.Linear(40, 3)

    def forward(self, x):  # x: (N, T, 6)
        return self.out(torch.relu(self.inp(x)).mean(1))


class Odd(nn.Module):
    """Parameters without a closed form (GroupNorm, LayerNorm, a grouped conv, a bare Parameter,
    a weight tied between two layers) go through torch.func; ``shared`` and ``twice`` are
    called twice each (sums of per-call gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.twice = nn.Conv2d(4, 4, 3, padding=1)
        self.gn = nn.GroupNorm(2, 4)
        self.grouped = nn.Conv2d(4, 4, 3, groups=2)
        self.fc = nn.Linear(4 * 6 * 6, 8)
        self.ln = nn.LayerNorm(8)
        self.shared = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)
        self.tied = nn.Linear(8, 3)
        self.tied.weight = self.head.weight
        self.scale = nn.Parameter(torch.full((3,), 1.5))

    def forward(self, x):  # x: (N, 2, 8, 8)
        h = self.twice(torch.relu(self.twice(self.conv(x))))
        h = self.grouped(torch.relu(self.gn(h)))
        h = self.shared(torch.tanh(self.shared(self.ln(self.fc(h.flatten(1))))))
        return (self.head(h) + self.tied(torch.tanh(h))) * self.scale


def mlp(act=nn.ReLU) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 7), act(), nn.Linear(7, 5), act(), nn.Linear(5, 3))


def cnn(bn: bool = False) -> nn.Module:
    torch.manual_seed(0)
    # 8x8 -> 4x4 (stride, padding), then 4x4 -> 2x2 with dilation: 4 positions and 36x16 weights,
    # where the Gram form is cheaper than per-sample gradient matrices (unless masked).
    layers = [nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(inplace=True),
              nn.Conv2d(4, 16, 3, dilation=2, padding=1, bias=False)]
    if bn:
        layers.append(nn.BatchNorm2d(16))
    layers += [nn.ReLU(), nn.Conv2d(16, 3, 1), nn.Flatten(), nn.Linear(3 * 2 * 2, 3)]
    model = nn.Sequential(*layers)
    if bn:
        with torch.no_grad():  # non-trivial eval-mode statistics
            bn_layer = model[3]
            bn_layer.running_mean.normal_()
            bn_layer.running_var.uniform_(0.5, 2.0)
            bn_layer.weight.normal_()
            bn_layer.bias.normal_()
    return model


def data(shape, n=9, classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def random_masks(model, density=0.5, seed=2):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) < density
            for n, p in model.named_parameters() if p.ndim > 1}


# ----------------------------------------------------------------------------- references

def grads_loop(model, x, labels, masks=None):
    """Per-sample (masked) gradient vectors of -log p(labels[i] | x_i), one autograd call each."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    rows = []
    model.eval()
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i:i + 1]), labels[i:i + 1])
        gs = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        flat = [(torch.zeros_like(p) if g is None else g) * (masks[n] if masks and n in masks else 1)
                for (n, p), g in zip(named, gs)]
        rows.append(torch.cat([f.flatten() for f in flat]))
    return torch.stack(rows)


def exact_fisher_loop(model, x, masks=None):
    model.eval()
    probs = F.softmax(model(x), 1).detach()
    total = 0.0
    for c in range(probs.shape[1]):
        sq = grads_loop(model, x, torch.full((len(x),), c), masks).pow(2).sum(1)
        total += float((probs[:, c] * sq).sum())
    return total / len(x)


def flat_hessian_trace(model, x, y, masks=None):
    """Trace of torch.func.hessian of the mean loss w.r.t. the flattened unpruned parameters."""
    from torch.func import functional_call, hessian

    model.eval()
    names = [n for n, p in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(t):
        params = {n: c.view(s) for n, c, s in zip(names, t.split(sizes), shapes)}
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    diag = hessian(loss)(theta).diagonal()
    keep = torch.cat([(masks[n] if masks and n in masks else torch.ones(s, dtype=torch.bool)).flatten()
                      for n, s in zip(names, shapes)])
    return float(diag[keep].sum())


# ----------------------------------------------------------------------------- per-sample norms

CASES = {
    "mlp": (lambda: mlp(), (12,)),
    "mlp_inplace": (lambda: mlp(lambda: nn.ReLU(inplace=True)), (12,)),
    "cnn": (lambda: cnn(), (2, 8, 8)),
    "cnn_bn": (lambda: cnn(bn=True), (2, 8, 8)),
    "seq": (lambda: (torch.manual_seed(0), SeqMLP())[1], (5, 6)),
    "odd": (lambda: (torch.manual_seed(0), Odd())[1], (2, 8, 8)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("masked", [False, True])
def test_per_sample_norms_match_autograd_loop(case, masked):
    build, shape = CASES[case]
    model = build()
    x, y = data(shape)
    masks = random_masks(model) if masked else None
    ref = grads_loop(model, x, y, masks).pow(2).sum(1)
    got = per_sample_grad_norms_sq(model, x, y, masks=masks, chunk_size=4)
    assert got.shape == (len(x),)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("masked", [False, True])
def test_batchnorm_closed_form_matches_torch_func_fallback(masked, monkeypatch):
    import sparsegap.metrics.persample as persample

    model = cnn(bn=True)
    x, y = data((2, 8, 8))
    masks = random_masks(model) if masked else None
    closed = per_sample_grad_norms_sq(model, x, y, masks=masks)
    monkeypatch.setattr(persample, "_BN_TYPES", ())  # no closed form: BatchNorm via torch.func
    assert "3.weight" in persample._plan(model).fallback
    torch.testing.assert_close(per_sample_grad_norms_sq(model, x, y, masks=masks), closed)


def test_sparse_mask_product_matches_dense(monkeypatch):
    import sparsegap.metrics.persample as persample

    model = mlp()
    x, y = data((12,))
    masks = random_masks(model, density=0.1, seed=5)
    dense = per_sample_grad_norms_sq(model, x, y, masks=masks)
    monkeypatch.setattr(persample, "_CSR_MIN_ELEMENTS", 0)
    monkeypatch.setattr(persample, "_CSR_MAX_DENSITY", 1.0)
    torch.testing.assert_close(per_sample_grad_norms_sq(model, x, y, masks=masks), dense)
    torch.testing.assert_close(dense, grads_loop(model, x, y, masks).pow(2).sum(1))
    masks["1.weight"][0] = True  # edited in place: the cached sparse copy must not be reused
    torch.testing.assert_close(per_sample_grad_norms_sq(model, x, y, masks=masks),
                               grads_loop(model, x, y, masks).pow(2).sum(1))


def test_frozen_params_do_not_count_and_model_is_left_untouched():
    model = cnn(bn=True).train()
    model[0].weight.requires_grad_(False)
    model[3].bias.requires_grad_(False)  # a fallback parameter
    x, y = data((2, 8, 8))
    got = per_sample_grad_norms_sq(model, x, y)
    torch.testing.assert_close(got, grads_loop(model.train(), x, y).pow(2).sum(1))
    model.train()
    running = model[3].running_mean.clone()
    fisher_trace(model, x, y, labels="exact")
    hessian_trace(model, x, y, max_probes=2, min_probes=2)
    jacobian_norm(model, x)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad
    assert torch.equal(model[3].running_mean, running)  # eval mode: BN statistics untouched


def test_submodule_modes_are_restored_individually():
    model = mlp()
    model.train()
    model[1].eval()
    x, y = data((12,))
    per_sample_grad_norms_sq(model, x, y)
    assert model.training and not model[1].training and model[3].training


def test_masked_norms_are_at_most_unmasked():
    model = cnn(bn=True)
    x, y = data((2, 8, 8))
    dense = per_sample_grad_norms_sq(model, x, y)
    sparse = per_sample_grad_norms_sq(model, x, y, masks=random_masks(model, 0.3))
    assert (sparse <= dense + 1e-12).all() and (sparse < dense).any()


# ----------------------------------------------------------------------------- Fisher

@pytest.mark.parametrize("masked", [False, True])
def test_exact_fisher_matches_loop_over_samples_and_classes(masked):
    model = cnn(bn=True)
    x, _ = data((2, 8, 8))
    masks = random_masks(model) if masked else None
    got = fisher_trace(model, x, masks=masks, labels="exact", chunk_size=4)
    assert got == pytest.approx(exact_fisher_loop(model, x, masks), rel=1e-10)


def test_sampled_fisher_uses_labels_from_the_generator():
    model = mlp()
    x, y = data((12,), n=30)
    got = fisher_trace(model, x, labels="sampled", chunk_size=7, generator=torch.Generator().manual_seed(5))
    # Reproduce the documented sampling: inverse CDF of one uniform per sample, drawn up front.
    u = torch.rand(len(x), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        cdf = F.softmax(model.eval()(x), 1).cumsum(1)
    labels = torch.searchsorted(cdf, u[:, None]).squeeze(1).clamp(max=2)
    assert not torch.equal(labels, y)  # otherwise the comparison below would prove little
    assert got == pytest.approx(fisher_trace(model, x, labels, labels="empirical"), rel=1e-12)
    again = fisher_trace(model, x, chunk_size=100, generator=torch.Generator().manual_seed(5))
    assert again == pytest.approx(got, rel=1e-12)


def test_sampled_fisher_is_unbiased_for_exact():
    model = mlp()
    x, _ = data((12,), n=20)
    exact = fisher_trace(model, x, labels="exact")
    draws = torch.tensor([fisher_trace(model, x, generator=torch.Generator().manual_seed(s))
                          for s in range(150)])
    stderr = float(draws.std() / len(draws) ** 0.5)
    assert abs(float(draws.mean()) - exact) < 4 * stderr
    assert draws.std() > 0


def test_pruning_a_whole_weight_equals_excluding_it():
    model = mlp()
    x, y = data((12,))
    masks = {"3.weight": torch.zeros(5, 7, dtype=torch.bool)}
    masked = fisher_trace(model, x, masks=masks, labels="exact")
    dense = fisher_trace(model, x, labels="exact")
    model[3].weight.requires_grad_(False)
    assert masked == pytest.approx(fisher_trace(model, x, labels="exact"), rel=1e-12)
    assert masked < dense
    model[3].weight.requires_grad_(True)
    g = torch.Generator
    assert (fisher_trace(model, x, masks=random_masks(model), generator=g().manual_seed(0))
            <= fisher_trace(model, x, generator=g().manual_seed(0)))


# ----------------------------------------------------------------------------- Hessian

def test_hutchinson_matches_explicit_hessian_trace():
    model = mlp(nn.Tanh)  # smooth: Tr(H) differs from the Fisher trace here
    x, y = data((12,), n=15)
    masks = random_masks(model)
    exact = flat_hessian_trace(model, x, y, masks)
    r = hessian_trace(model, x, y, masks=masks, max_probes=400, target_rse=0.0,
                      generator=torch.Generator().manual_seed(0))
    assert isinstance(r, HutchinsonResult) and r.n_probes == 400
    assert abs(r.mean - exact) < 3 * r.stderr
    assert exact != pytest.approx(fisher_trace(model, x, masks=masks, labels="exact"), rel=1e-3)


def test_relu_hessian_trace_equals_exact_fisher_trace():
    model = mlp()
    x, y = data((12,), n=15)
    fisher = fisher_trace(model, x, labels="exact")
    # Piecewise-linear network: the Hessian's diagonal is the Gauss-Newton diagonal, i.e. Tr(F).
    assert flat_hessian_trace(model, x, y) == pytest.approx(fisher, rel=1e-10)
    r = hessian_trace(model, x, y, max_probes=300, target_rse=0.0, generator=torch.Generator().manual_seed(1))
    assert abs(r.mean - fisher) < 3 * r.stderr


def test_hutchinson_stops_at_target_and_ignores_batching():
    model = mlp(nn.Tanh)
    x, y = data((12,), n=20)
    kw = dict(min_probes=5, max_probes=500, target_rse=0.2)
    full = hessian_trace(model, x, y, generator=torch.Generator().manual_seed(3), **kw)
    assert 5 <= full.n_probes < 500 and full.stderr <= 0.2 * abs(full.mean)
    batched = hessian_trace(model, x, y, batch_size=7, generator=torch.Generator().manual_seed(3), **kw)
    assert batched.n_probes == full.n_probes
    assert batched.mean == pytest.approx(full.mean, rel=1e-9)
    capped = hessian_trace(model, x, y, min_probes=3, max_probes=4, target_rse=0.0)
    assert capped.n_probes == 4


# ----------------------------------------------------------------------------- Jacobian

@pytest.mark.parametrize("case", ["mlp", "cnn_bn"])
def test_jacobian_norm_matches_jacrev_loop(case):
    from torch.func import jacrev

    build, shape = CASES[case]
    model = build()
    x, _ = data(shape)
    got = jacobian_norm(model, x, chunk_size=4)
    model.eval()
    ref = sum(float(jacrev(lambda xi: model(xi[None])[0])(x[i]).detach().pow(2).sum()) for i in range(len(x)))
    assert got == pytest.approx(ref / len(x), rel=1e-10)


# ----------------------------------------------------------------------------- errors

def test_bad_inputs_raise_clear_errors():
    model = mlp()
    x, y = data((12,))
    with pytest.raises(ValueError, match="labels must be one of"):
        fisher_trace(model, x, y, labels="true")
    with pytest.raises(ValueError, match="y is required"):
        fisher_trace(model, x, labels="empirical")
    with pytest.raises(ValueError, match="at least one sample"):
        fisher_trace(model, x[:0])
    with pytest.raises(ValueError, match="at least one sample"):
        jacobian_norm(model, x[:0])
    with pytest.raises(ValueError, match="y must have shape"):
        per_sample_grad_norms_sq(model, x, y[:-1])
    with pytest.raises(ValueError, match="y must have shape"):
        hessian_trace(model, x, y[:-1])
    with pytest.raises(ValueError, match="unknown parameter names"):
        fisher_trace(model, x, masks={"fc9.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"masks\['1.weight'\] must have shape \(7, 12\)"):
        per_sample_grad_norms_sq(model, x, y, masks={"1.weight": torch.ones(12, 7, dtype=torch.bool)})
    with pytest.raises(ValueError, match="chunk_size"):
        per_sample_grad_norms_sq(model, x, y, chunk_size=0)
    with pytest.raises(ValueError, match="min_probes"):
        hessian_trace(model, x, y, min_probes=20, max_probes=10)
    with pytest.raises(ValueError, match="unit must be one of"):
        FisherTraceCallback(x, unit="batch")


# ----------------------------------------------------------------------------- callback

class FakeState:
    def __init__(self, model, masks=None):
        self.model, self.masks, self.epoch, self.step = model, masks, 0, 0
        self.history = {"trace": {}}

    def log(self, name, value, se=None):       # as TrainState.log
        t = self.history["trace"].setdefault(name, {"epoch": [], "step": [], "value": []})
        t["epoch"].append(self.epoch)
        t["step"].append(self.step)
        t["value"].append(value)
        if se is not None:
            t.setdefault("se", []).append(se)


def run_fake_training(cb, state, epochs=4, steps_per_epoch=3):
    cb.on_train_begin(state)
    for epoch in range(epochs):
        state.epoch = epoch
        for _ in range(steps_per_epoch):
            state.step += 1
            cb.on_step_end(state)
        cb.on_epoch_end(state)
    return state.history["trace"].get("fisher_trace")


def test_callback_logs_at_the_requested_interval():
    model = mlp()
    x, y = data((12,), n=30)
    masks = random_masks(model)
    trace = run_fake_training(FisherTraceCallback(x, every=2, max_samples=10, seed=4),
                              FakeState(model, masks))
    assert trace["epoch"] == [0, 1, 3] and trace["step"] == [0, 6, 12]
    keep = torch.randperm(30, generator=torch.Generator().manual_seed(4))[:10]
    expected = fisher_trace(model, x[keep], masks=masks, generator=torch.Generator().manual_seed(4))
    assert trace["value"] == pytest.approx([expected] * 3, rel=1e-12)
    assert len(trace["se"]) == 3 and trace["se"][0] > 0       # tests/test_fisher_subset.py checks its value

    trace = run_fake_training(FisherTraceCallback(x, y, every=5, unit="step", labels="empirical",
                                                  at_start=False, masks_from_state=False),
                              FakeState(model, masks))
    assert trace["step"] == [5, 10]
    assert trace["value"][0] == pytest.approx(fisher_trace(model, x, y, labels="empirical"), rel=1e-12)


# ----------------------------------------------------------------------------- bad data

ESTIMATORS = {
    "fisher_trace": lambda model, x, y: fisher_trace(model, x, y, labels="empirical"),
    "fisher_sampled": lambda model, x, y: fisher_trace(model, x),
    "hessian_trace": lambda model, x, y: hessian_trace(model, x, y, max_probes=2, min_probes=2),
    "jacobian_norm": lambda model, x, y: jacobian_norm(model, x),
    "per_sample_grad_norms_sq": lambda model, x, y: per_sample_grad_norms_sq(model, x, y),
}


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_x_is_an_error(estimator, bad):
    x, y = data((12,))
    x[4, 7] = bad  # fisher_trace used to return nan
    with pytest.raises(ValueError, match=r"x must hold finite values, got 1 NaN or infinite value\(s\) "
                                         r"\(first in row 4 of x, shape \(9, 12\)\)"):
        ESTIMATORS[estimator](mlp(), x, y)


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_integer_x_is_an_error(estimator):
    x, y = data((12,))
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor .*got dtype torch.int64"):
        ESTIMATORS[estimator](mlp(), x.round().long(), y)


@pytest.mark.parametrize("estimator", ["fisher_trace", "hessian_trace", "per_sample_grad_norms_sq"])
@pytest.mark.parametrize("bad, match", [(3, r"y must hold class indices in \[0, 3\) \(the model has 3 outputs\), "
                                                r"got 3 \(row 2 of y\)"),
                                        (-1, r"y must hold class indices >= 0, got -1 \(row 2 of y\)")])
def test_out_of_range_y_is_an_error(estimator, bad, match):
    x, y = data((12,))
    y[2] = bad
    with pytest.raises(ValueError, match=match):
        ESTIMATORS[estimator](mlp(), x, y)


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_x_of_the_wrong_width_names_x_and_what_the_model_expects(estimator):
    x, y = data((10,))
    with pytest.raises(ValueError, match=r"x of shape \(9, 10\) \(dtype torch.float64\) does not fit the model; "
                                         r"its first layer '1' is Linear\(in_features=12\), so each sample must "
                                         r"hold 12 values"):
        ESTIMATORS[estimator](mlp(), x, y)
    x, y = data((3, 8, 8))
    with pytest.raises(ValueError, match=r"x of shape \(9, 3, 8, 8\).*first layer '0' is Conv2d\(in_channels=2\), "
                                         r"so x must have shape \(N, 2, H, W\)"):
        ESTIMATORS[estimator](cnn(), x, y)


def test_integer_x_is_fine_for_a_model_that_embeds_indices():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 4), nn.Flatten(), nn.Linear(12, 3))
    x = torch.randint(0, 20, (6, 3))
    y = torch.randint(0, 3, (6,))
    assert fisher_trace(model, x, y, labels="empirical") > 0
    with pytest.raises(ValueError, match=r"first layer '0' is Embedding\(20, \.\.\.\), so x must hold integer "
                                         r"indices in \[0, 20\)"):
        fisher_trace(model, x + 20)


def test_callback_checks_its_arguments_at_construction():
    x, _ = data((12,))
    with pytest.raises(ValueError, match="chunk_size"):
        FisherTraceCallback(x, chunk_size=0)  # used to fail only at the first measurement, mid-training
    with pytest.raises(ValueError, match=r"seed must be an int"):
        FisherTraceCallback(x, seed=0.5)
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x must hold finite values"):
        FisherTraceCallback(x)


def test_hessian_target_rse_must_be_a_number():
    x, y = data((12,))
    for bad in ("0.1", float("nan"), -1, True):
        with pytest.raises(ValueError, match="target_rse must be a number >= 0"):
            hessian_trace(mlp(), x, y, target_rse=bad)


def test_basic_metrics_check_their_inputs():
    from sparsegap.metrics.basic import disagreement, evaluate, predict_logits, prediction_entropy

    model = mlp()
    x, y = data((12,))
    x[1, 1] = float("nan")
    with pytest.raises(ValueError, match="x must hold finite values"):
        evaluate(model, x, y)  # a NaN input used to give a NaN loss, as if the network had diverged
    x, y = data((12,))
    y[0] = 3
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 3\).*got a maximum of 3"):
        evaluate(model, x, y)
    with pytest.raises(ValueError, match="batch_size"):
        predict_logits(model, x, batch_size=0)
    with pytest.raises(ValueError, match=r"logits_a and logits_b must have the same shape, got \(9, 3\) and \(1, 3\)"):
        disagreement(torch.randn(9, 3), torch.randn(1, 3))  # used to broadcast silently
    with pytest.raises(ValueError, match=r"logits must be a tensor of shape \(N, classes\), got \(9,\)"):
        prediction_entropy(torch.randn(9))
    with torch.no_grad():  # a diverged model still evaluates: the NaN loss is how divergence shows
        model[1].weight.fill_(float("nan"))
    assert math.isnan(evaluate(model, *data((12,))).loss)
