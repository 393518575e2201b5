"""Data schedules, the second remedy of The Price of Sparsity's Section 4 (sparsegap.schedule), and the
validation split (DataConfig.validation, data.hold_out).

Tiny networks on tiny synthetic data: the whole file takes seconds.
"""

from __future__ import annotations

import copy
import io
import json
import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.data import hold_out, load_dataset
from sparsegap.metrics.fisher import fisher_trace, per_sample_fisher
from sparsegap.models import build_model
from sparsegap.pruning import apply_masks, global_magnitude_masks
from sparsegap.schedule import DataSchedule, check_schedule, difficulty, subset_size
from sparsegap.runs.threads import use_threads
from sparsegap.train import train

N, D, C = 96, 10, 3


def toy_data(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    w = torch.randn(D, C, generator=g)
    y = ((x @ w) + 0.5 * torch.randn(n, C, generator=g)).argmax(1)   # a little noise: some samples are hard
    return SimpleNamespace(x_train=x, y_train=y, x_test=x[:32] + 0.1, y_test=y[:32])


def tiny(seed=0, dtype=torch.float32):
    return build_model("mlp", hidden=(16,), num_classes=C, input_shape=(D,), seed=seed).to(dtype)


def masks_of(model, sparsity=0.5):
    # the floor keeps the small output layer connected
    return global_magnitude_masks(model, sparsity, min_density=0.1)


def base_cfg(**kw):
    return TrainConfig(**({"epochs": 4, "batch_size": 16, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3,
                           "schedule": "multistep", "milestones": (0.5,)} | kw))


def weights_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def without(history: dict, *keys) -> dict:
    return {k: v for k, v in history.items() if k not in keys}


def roundtrip(obj):
    """A checkpoint as the run store keeps it: saved, then loaded with weights_only=True."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


class Record:
    """Per epoch: the global step after every step, the row indices of every sample of every batch
    (found by matching the batch's rows against the training set), and state.indices."""

    def __init__(self, x_train):
        self.row = {tuple(r.tolist()): i for i, r in enumerate(x_train)}
        assert len(self.row) == len(x_train)          # rows are distinct, so a row names its sample
        self.steps, self.seen, self.indices = {}, {}, {}

    def on_step_end(self, state):
        self.steps.setdefault(state.epoch, []).append(state.step)
        self.seen.setdefault(state.epoch, []).extend(self.row[tuple(r.tolist())] for r in state.batch[0])
        self.indices[state.epoch] = None if state.indices is None else state.indices.clone()


# ---------------------------------------------------------------- 1. a whole-set schedule is plain training

@pytest.mark.parametrize("kind", ["fisher", "random"])
def test_a_schedule_whose_subset_is_the_whole_set_trains_bitwise_like_plain_training(kind):
    data = toy_data()
    plain_model, sched_model = tiny(), tiny()
    masks = masks_of(tiny())
    plain = train(plain_model, data, base_cfg(), masks=masks, seed=3, device="cpu", progress=False)
    sched = train(sched_model, data, base_cfg(data_schedule=kind, subset=1.0, memorize_epochs=2),
                  masks=masks, seed=3, device="cpu", progress=False)
    assert weights_equal(plain_model, sched_model)
    assert without(plain, "seconds", "trace") == without(sched, "seconds", "trace")
    assert sched["trace"]["samples"]["value"] == [N] * 4
    # the control: another seed does change the weights, so the comparison above can fail
    other = tiny()
    train(other, data, base_cfg(data_schedule=kind, subset=1.0, memorize_epochs=2), masks=masks, seed=4,
          device="cpu", progress=False)
    assert not weights_equal(other, sched_model)


# ------------------------------------------------------- 2. the memorization phase: the top-k by Fisher

def test_the_memorization_phase_trains_on_exactly_the_top_k_by_per_sample_fisher():
    data = toy_data()
    model = tiny()
    masks = masks_of(model)
    apply_masks(model, masks)                     # as train() does before ranking
    init = copy.deepcopy(model)
    cfg = base_cfg(data_schedule="fisher", subset=0.5, memorize_epochs=2, consolidate_epochs=1)
    k = round(0.5 * N)

    scores = difficulty("fisher", init, data.x_train, data.y_train, masks=masks, seed=7, epoch=0)
    assert scores.shape == (N,) and scores.dtype == torch.float64 and bool((scores > 0).all())
    ranked = torch.sort(scores, descending=True).values
    assert ranked[k - 1] > ranked[k]              # no tie at the cut: the top-k set is well defined
    top = set(torch.topk(scores, k).indices.tolist())

    rec = Record(data.x_train)
    h = train(model, data, cfg, masks=masks, seed=7, callbacks=[rec], device="cpu", progress=False)
    for epoch in (0, 1):                          # both memorization epochs, on the one ranking (rerank_every=0)
        assert set(rec.seen[epoch]) == top
        assert sorted(rec.seen[epoch]) == sorted(top)          # each of them exactly once
        assert rec.indices[epoch].tolist() == sorted(top)
        assert len(rec.steps[epoch]) == math.ceil(k / 16)
    k2 = subset_size(cfg, 2, N)                   # consolidating: the next-hardest samples join first
    assert ranked[k2 - 1] > ranked[k2]
    assert sorted(rec.seen[2]) == sorted(torch.topk(scores, k2).indices.tolist())
    assert sorted(rec.seen[3]) == list(range(N)) and rec.indices[3] is None
    assert h["trace"]["samples"]["value"] == [k, k, subset_size(cfg, 2, N), N]
    # the ranking used the masked init: without the masks the per-sample Fisher is another one
    assert not torch.equal(scores, difficulty("fisher", init, data.x_train, data.y_train, seed=7, epoch=0))


def test_per_sample_fisher_averages_to_fisher_trace_with_sampled_labels(float64):
    model = build_model("mlp", hidden=(6,), num_classes=4, input_shape=(5,), seed=0)
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(1))
    masks = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(2)) > 0.4
             for n, p in model.named_parameters() if p.ndim > 1}
    apply_masks(model, masks)
    for m in (None, masks):
        per = per_sample_fisher(model, x, masks=m, chunk_size=7, generator=torch.Generator().manual_seed(11))
        trace = fisher_trace(model, x, masks=m, labels="sampled", chunk_size=13,
                             generator=torch.Generator().manual_seed(11))
        assert float(per.mean()) == pytest.approx(trace, rel=1e-12)


@pytest.mark.parametrize("name, kw, shape, n, density", [
    ("mlp", dict(hidden=(6,), num_classes=4), (5,), 30, 0.6),
    ("lenet300-100", dict(num_classes=10), (1, 28, 28), 6, 0.1),   # large sparse layers: the CSR path
])
def test_per_sample_fisher_matches_a_per_sample_autograd_loop(float64, name, kw, shape, n, density):
    model = build_model(name, input_shape=shape, seed=0, **kw)
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(1))
    masks = {k: torch.rand(p.shape, generator=torch.Generator().manual_seed(2)) < density
             for k, p in model.named_parameters() if p.ndim > 1}
    apply_masks(model, masks)
    got = per_sample_fisher(model, x, masks=masks, chunk_size=4, generator=torch.Generator().manual_seed(5))

    u = torch.rand(len(x), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    named = list(model.named_parameters())
    expected, labels = [], []
    for i in range(len(x)):
        logits = model(x[i: i + 1])
        probs = torch.softmax(logits.detach()[0], 0).tolist()
        label, acc = len(probs) - 1, 0.0          # inverse CDF: the first class whose CDF reaches u_i
        for c, p in enumerate(probs):
            acc += p
            if acc >= u[i]:
                label = c
                break
        labels.append(label)
        grads = torch.autograd.grad(-F.log_softmax(logits, 1)[0, label], [p for _, p in named])
        expected.append(sum(float(((g * masks[n]) if n in masks else g).pow(2).sum())
                            for (n, _), g in zip(named, grads)))
    assert len(set(labels)) > 1                   # the labels really are sampled, not the argmax
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=0)


def test_ranking_leaves_the_model_and_the_training_rng_alone():
    """Scores are computed in eval mode (BatchNorm statistics untouched), with their own generators."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(D, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, C)).train()
    data = toy_data()
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    ref = torch.zeros(N, dtype=torch.int64)
    for kind in ("fisher", "random", "disagree"):
        difficulty(kind, model, data.x_train, data.y_train, seed=1, epoch=0, reference=ref)
        assert model.training
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), kind
        assert torch.equal(torch.get_rng_state(), rng), kind


# --------------------------------------------------------------------------------- 3. subset sizes

def test_subset_size_memorize_then_linear_widening_then_the_whole_set():
    cfg = TrainConfig(epochs=8, data_schedule="fisher", subset=0.2, memorize_epochs=2, consolidate_epochs=3)
    assert [subset_size(cfg, e, 100) for e in range(8)] == [20, 20, 40, 60, 80, 100, 100, 100]
    cfg = TrainConfig(epochs=3, data_schedule="random", subset=0.25, memorize_epochs=0, consolidate_epochs=1)
    assert [subset_size(cfg, e, 10) for e in range(3)] == [6, 10, 10]     # round(2.5)=2, then 2 + round(8/2)
    tiny_subset = TrainConfig(epochs=2, data_schedule="random", subset=1e-4, memorize_epochs=1)
    assert subset_size(tiny_subset, 0, 100) == 1                           # at least one sample
    assert [subset_size(TrainConfig(epochs=3), e, 100) for e in range(3)] == [100] * 3


def test_the_trace_samples_and_the_step_count_follow_subset_size():
    n, bs = 100, 16
    data = toy_data(n)
    cfg = base_cfg(epochs=6, batch_size=bs, data_schedule="random", subset=0.2, memorize_epochs=2,
                   consolidate_epochs=3)
    sizes = [subset_size(cfg, e, n) for e in range(6)]
    assert sizes == [20, 20, 40, 60, 80, 100]
    rec = Record(data.x_train)
    h = train(tiny(), data, cfg, seed=1, callbacks=[rec], device="cpu", progress=False)
    samples = h["trace"]["samples"]
    assert samples["value"] == [float(s) for s in sizes]
    assert samples["epoch"] == list(range(6))
    steps = [math.ceil(s / bs) for s in sizes]
    assert samples["step"] == [sum(steps[:e]) for e in range(6)]           # logged at the start of each epoch
    assert [len(rec.seen[e]) for e in range(6)] == sizes
    assert [len(rec.steps[e]) for e in range(6)] == steps
    assert rec.steps[5][-1] == sum(steps)


# ----------------------------------------------------------------------------- 4. random and disagree

def test_the_random_schedule_is_seeded():
    data = toy_data()
    model = tiny()
    cfg = base_cfg(data_schedule="random", subset=0.5, memorize_epochs=2, rerank_every=1)

    def subsets(seed):
        s = DataSchedule(cfg, N, seed=seed)
        return [s.indices(e, model, data.x_train, data.y_train).tolist() for e in range(2)]

    a, b, c = subsets(0), subsets(0), subsets(1)
    assert a == b and a != c
    assert all(len(ix) == 48 and ix == sorted(set(ix)) for ix in a)
    assert a[0] != a[1]                                           # re-ranked at epoch 1 (rerank_every=1)
    assert torch.equal(difficulty("random", model, data.x_train, data.y_train, seed=5, epoch=3),
                       difficulty("random", tiny(9), data.x_train, data.y_train, seed=5, epoch=3))  # model-free

    def trained(seed):
        rec = Record(data.x_train)
        train(tiny(), data, cfg, seed=seed, callbacks=[rec], device="cpu", progress=False)
        return [sorted(set(rec.seen[e])) for e in range(4)]

    ta, tb, tc = trained(0), trained(0), trained(1)
    assert ta == tb and ta[:2] != tc[:2]
    assert ta[:2] == a                                            # train() uses DataSchedule's subsets


def test_the_disagree_schedule_puts_the_samples_where_the_model_differs_from_the_reference_first():
    data = toy_data()
    model = tiny()
    with torch.no_grad():
        model.fc2.weight.mul_(30)             # confident predictions: EL2N spreads over (0, sqrt(2))
        logits = model(data.x_train)
    pred = logits.argmax(1)
    el2n = (F.softmax(logits.double(), 1) - F.one_hot(data.y_train, C).double()).norm(dim=1)
    assert float(el2n.max() - el2n.min()) > 1.2
    differ = sorted(torch.argsort(el2n)[:6].tolist())   # the easiest by EL2N: only disagreeing ranks them first
    reference = pred.clone()
    reference[differ] = (pred[differ] + 1) % C
    scores = difficulty("disagree", model, data.x_train, data.y_train, reference=reference)
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    assert sorted(order[:len(differ)]) == differ
    # each group ordered by EL2N, ||softmax - onehot(y)||, hardest first
    for group in (order[:len(differ)], order[len(differ):]):
        assert el2n[group].tolist() == sorted(el2n[group].tolist(), reverse=True)

    # through train(): the memorization epoch trains on exactly the samples that disagree
    cfg = base_cfg(batch_size=6, data_schedule="disagree", subset=len(differ) / N, memorize_epochs=1)
    rec = Record(data.x_train)
    train(model, data, cfg, seed=0, callbacks=[rec], reference=reference, device="cpu", progress=False)
    assert sorted(rec.seen[0]) == differ
    assert len(rec.seen[1]) == N


# ---------------------------------------------------------------------------------------- 5. resume

class Interrupt(Exception):
    pass


@pytest.mark.parametrize("kind, rerank_every", [("fisher", 0), ("fisher", 3), ("random", 1)])
def test_resuming_a_scheduled_run_equals_an_uninterrupted_one(kind, rerank_every):
    data = toy_data()
    masks = masks_of(tiny())
    cfg = base_cfg(data_schedule=kind, subset=0.5, memorize_epochs=2, consolidate_epochs=2,
                   rerank_every=rerank_every)
    straight_model, straight_rec = tiny(), Record(data.x_train)
    straight = train(straight_model, data, cfg, masks=masks, seed=2, callbacks=[straight_rec], device="cpu",
                     progress=False)

    saved = []

    def save(ckpt):
        saved.append(roundtrip(ckpt))
        if ckpt["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny(), data, cfg, masks=masks, seed=2, on_epoch_end=save, device="cpu", progress=False)
    ckpt = saved[-1]
    steps_before = sum(len(straight_rec.steps[e]) for e in range(2))
    assert ckpt["step"] == steps_before == 2 * 3        # 48 samples a memorization epoch: 3 batches, not 6
    assert ckpt["schedule"]["ranked_at"] == (0 if rerank_every != 1 else 1)

    resumed_model, resumed_rec = tiny(seed=99), Record(data.x_train)   # the checkpoint overrides the start
    resumed = train(resumed_model, data, cfg, masks=masks, seed=2, checkpoint=ckpt, callbacks=[resumed_rec],
                    device="cpu", progress=False)
    assert weights_equal(straight_model, resumed_model)
    assert without(resumed, "seconds") == without(straight, "seconds")     # trace "samples" with its steps too
    assert resumed_rec.steps == {e: straight_rec.steps[e] for e in (2, 3)}
    assert resumed_rec.steps[2][0] == steps_before + 1
    assert resumed_rec.seen == {e: straight_rec.seen[e] for e in (2, 3)}

    if rerank_every != 1:
        # the control: without the ranking kept in the checkpoint, the resumed run ranks anew and goes elsewhere
        lost = tiny()
        train(lost, data, cfg, masks=masks, seed=2, checkpoint=without(ckpt, "schedule"), device="cpu",
              progress=False)
        assert not weights_equal(straight_model, lost)


# ----------------------------------------------------------------------------------- 6. validation

def rows(x):
    return [tuple(r.flatten().tolist()) for r in x]


def test_the_validation_split_is_carved_out_of_the_training_subset():
    base = load_dataset("digits", train_size=200, seed=3)
    val = load_dataset("digits", train_size=200, seed=3, validation=50)
    assert base.evaluation == "test" and val.evaluation == "validation"
    assert len(val.y_train) == 150 and len(val.y_test) == 50
    assert len(set(rows(base.x_train))) == 200                             # rows name samples
    label_of = dict(zip(rows(base.x_train), base.y_train.tolist()))
    held, kept = rows(val.x_test), rows(val.x_train)
    assert not set(held) & set(kept)                                       # disjoint
    assert Counter(held + kept) == Counter(list(label_of))                     # the union is the training subset
    assert [label_of[r] for r in held] == val.y_test.tolist()              # labels travel with their rows
    assert [label_of[r] for r in kept] == val.y_train.tolist()
    assert torch.bincount(val.y_test, minlength=10).tolist() == [5] * 10   # class-balanced
    again = load_dataset("digits", train_size=200, seed=3, validation=50)
    assert torch.equal(again.x_test, val.x_test) and torch.equal(again.x_train, val.x_train)   # deterministic
    # hold_out is the same split, and its seed picks another one
    assert torch.equal(hold_out(base, 50, seed=3).x_test, val.x_test)
    assert set(rows(hold_out(base, 50, seed=4).x_test)) != set(held)
    # through the run config: DataConfig(validation=...) evaluates on it
    from sparsegap.runs import load_data
    via_cfg = load_data(DataConfig("digits", train_size=200, subset_seed=3, validation=50))
    assert via_cfg.evaluation == "validation" and torch.equal(via_cfg.x_test, val.x_test)
    assert DataConfig("digits", validation=0).to_dict() == {"name": "digits"}    # out of existing hashes


def test_label_noise_goes_to_the_samples_left_for_training_only():
    clean = load_dataset("digits", train_size=200, seed=3, validation=50)
    noisy = load_dataset("digits", train_size=200, seed=3, validation=50, noise=0.4, noise_seed=1)
    assert torch.equal(noisy.x_test, clean.x_test) and torch.equal(noisy.y_test, clean.y_test)
    assert torch.equal(noisy.x_train, clean.x_train)
    assert int(noisy.noisy.sum()) == round(0.4 * 150)


# ---------------------------------------------------------------------------------------- 7. bad input

NAN, INF = float("nan"), float("inf")
SCHED = dict(epochs=4, data_schedule="fisher", subset=0.5, memorize_epochs=1)


@pytest.mark.parametrize("kw, exc, match", [
    (SCHED | dict(memorize_epochs=-1), ValueError, r"memorize_epochs must be an int in \[0, epochs=4\], got -1"),
    (SCHED | dict(consolidate_epochs=-2), ValueError, r"consolidate_epochs must be an int .*got -2"),
    (SCHED | dict(rerank_every=-1), ValueError, r"rerank_every must be an int .*got -1"),
    (SCHED | dict(rerank_every=5), ValueError, r"rerank_every must be an int in \[0, epochs=4\], got 5"),
    (SCHED | dict(memorize_epochs=1.5), TypeError, r"memorize_epochs must be .*got 1\.5"),
    (SCHED | dict(subset=1.5), ValueError, r"subset must be a finite number in \(0, 1\], got 1\.5"),
    (SCHED | dict(subset=0.0), ValueError, r"subset must be a finite number in \(0, 1\], got 0\.0"),
    (SCHED | dict(subset=-0.2), ValueError, r"subset must be .*got -0\.2"),
    (SCHED | dict(subset=NAN), ValueError, r"subset must be a finite number .*got nan"),
    (SCHED | dict(subset=True), TypeError, r"subset must be .*got True"),
    (SCHED | dict(memorize_epochs=3, consolidate_epochs=2), ValueError,
     r"memorize_epochs \+ consolidate_epochs must fit in epochs=4, got 3 \+ 2 = 5"),
    (SCHED | dict(memorize_epochs=0), ValueError, r"subset=0\.5 needs a phase"),
    (dict(subset=0.5), ValueError, r"subset=0\.5 only apply to a subset schedule"),
    (dict(epochs=4, memorize_epochs=2), ValueError, r"memorize_epochs=2 only apply to a subset schedule"),
    (dict(epochs=4, rerank_every=1), ValueError, r"rerank_every=1 only apply"),
    (SCHED | dict(data_schedule="hardest"), ValueError, r"data_schedule must be one of .*got 'hardest'"),
    (SCHED | dict(data_schedule=None), ValueError, r"data_schedule must be one of .*got None"),
    (dict(fisher_reg=NAN, fisher_reg_epochs=1), ValueError, r"fisher_reg must be a finite number.*got nan"),
    (dict(fisher_reg=INF, fisher_reg_epochs=1), ValueError, r"fisher_reg must be a finite number.*got inf"),
    (dict(fisher_reg=-INF, fisher_reg_epochs=1), ValueError, r"fisher_reg must be a finite number.*got -inf"),
])
def test_bad_schedule_settings_are_refused(kw, exc, match):
    with pytest.raises(exc, match=match):
        TrainConfig(**kw)


def test_a_subset_below_one_batch_is_refused_with_the_training_set_size():
    cfg = TrainConfig(epochs=2, batch_size=32, data_schedule="fisher", subset=0.1, memorize_epochs=1)
    with pytest.raises(ValueError, match=r"subset=0\.1 keeps 10 of the 100 training samples, fewer than one "
                                         r"batch \(batch_size=32\); allowed: a fraction in \[0\.32, 1\]"):
        check_schedule(cfg, 100)
    data = toy_data(100)
    with pytest.raises(ValueError, match=r"subset=0\.1 keeps 10 of the 100"):
        train(tiny(), data, cfg, device="cpu", progress=False)
    check_schedule(cfg, 320)                              # 32 samples: one batch is enough
    with pytest.raises(ValueError, match=r"keeps 10 of the 20 .*allowed: a fraction in \[1, 1\]"):
        check_schedule(TrainConfig(epochs=2, batch_size=32, data_schedule="fisher", subset=0.5, memorize_epochs=1), 20)


@pytest.mark.parametrize("kw, match", [
    (dict(train_size=100, validation=95), r"validation must be 0 .*\[10, 90\].*got 95"),
    (dict(train_size=100, validation=91), r"validation must be .*\[10, 90\].*got 91"),
    (dict(train_size=100, validation=5), r"validation must be .*got 5"),
    (dict(train_size=100, validation=-1), r"validation must be .*got -1"),
    (dict(validation=3), r"validation must be .*got 3"),
])
def test_bad_validation_sizes_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        DataConfig("digits", **kw)


def test_bad_validation_type_and_hold_out_bounds():
    with pytest.raises(TypeError, match=r"validation must be an int >= 0, got 2\.5"):
        DataConfig("digits", train_size=100, validation=2.5)
    DataConfig("digits", train_size=100, validation=90)   # the largest: one sample per class left to train on
    base = load_dataset("digits", train_size=100)
    for bad in (0, 9, 91, 100, True):
        with pytest.raises(ValueError, match=rf"validation must be an int in \[10, 90\] .*of 100\), got {bad!r}"):
            hold_out(base, bad)
    with pytest.raises(ValueError, match="validation must be an int in"):
        load_dataset("digits", train_size=100, validation=95)


def test_disagree_needs_a_reference():
    data = toy_data()
    cfg = base_cfg(data_schedule="disagree", subset=0.5, memorize_epochs=1)
    with pytest.raises(ValueError, match=rf"'disagree' needs reference=.*{N} training samples, got None"):
        train(tiny(), data, cfg, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"'disagree' needs reference=.*got \(10,\)"):
        train(tiny(), data, cfg, reference=torch.zeros(10, dtype=torch.int64), device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"difficulty kind must be one of .*got 'hardest'"):
        difficulty("hardest", tiny(), data.x_train, data.y_train)


# -------------------------------------------------------------------------------------- 8. in a sweep

def test_scheduled_runs_train_alone_in_a_sweep_and_disagree_takes_the_dense_parent(tmp_path):
    from sparsegap.batched import check_compatible
    from sparsegap.runs import RunStore, load_data, run_all

    data_cfg, model_cfg = DataConfig("digits", train_size=100, test_size=50), ModelConfig("mlp", hidden=(8,))
    plain = dict(epochs=2, batch_size=16, lr=0.05, schedule="constant")
    dense = [RunConfig("dense", data_cfg, model_cfg, TrainConfig(**plain), seed=s) for s in (0, 1)]
    disagree = TrainConfig(**plain, data_schedule="disagree", subset=0.5, memorize_epochs=1)
    scratch = [RunConfig("scratch", data_cfg, model_cfg, disagree, seed=s, sparsity=0.5, parent=dense[0])
               for s in (0, 1)]
    # Init-F is the dense solution pruned: it agrees with its parent on most samples, so the reference
    # (not EL2N alone) decides which samples the memorization epoch takes
    finetune = RunConfig("finetune", data_cfg, model_cfg, disagree, sparsity=0.3, parent=dense[0])
    rand = [RunConfig("dense", data_cfg, model_cfg,
                      TrainConfig(**plain, data_schedule="random", subset=0.5, memorize_epochs=1), seed=s)
            for s in (0, 1)]
    store = RunStore(tmp_path / "runs")
    runs = run_all(dense + scratch + [finetune] + rand, store, progress=False, batch=True)
    meta = [json.loads((r.path / "meta.json").read_text()) for r in runs]
    assert [m.get("batch") for m in meta[:2]] == [2, 2]       # the control: plain runs of one schedule are batched
    assert all("batch" not in m for m in meta[2:])            # scheduled runs are not
    for r in runs[2:]:
        assert r.history["trace"]["samples"]["value"] == [50.0, 100.0]
    assert runs[2].history["train_loss"] != runs[3].history["train_loss"]

    # the reference was the dense parent's predictions: training the runs again by hand with it gives their
    # weights bitwise, and with another reference (the dense run's init) other weights
    data = load_data(data_cfg)
    with torch.no_grad():
        reference = store.load(dense[0]).model().eval()(data.x_train).argmax(1)
        other = store.load(dense[0]).init_model().eval()(data.x_train).argmax(1)
        init_f = runs[4].init_model().eval()(data.x_train).argmax(1)
    assert 0 < int((init_f != reference).sum()) < 50 < int((init_f != other).sum())

    def again(run, cfg, ref):
        model = run.init_model()
        with use_threads(1):
            train(model, data, cfg.train, masks=run.masks, seed=cfg.seed, reference=ref, device="cpu",
                  progress=False)
        return model.state_dict()

    for run, cfg in ((runs[2], scratch[0]), (runs[4], finetune)):
        assert all(torch.equal(v, run.weights[k]) for k, v in again(run, cfg, reference).items()), cfg.kind
    assert not all(torch.equal(v, runs[4].weights[k]) for k, v in again(runs[4], finetune, other).items())
    with pytest.raises(ValueError, match="data schedule"):
        check_compatible([disagree, disagree])
