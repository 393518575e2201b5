"""Iterative pruning with rewinding, the pruning heuristics and re-dense training (issue 10)."""

import math

import pytest
import torch
import torch.nn.functional as F

from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig, imp_chain, redense_config
from sparsegap.models import build_model
from sparsegap.pruning import (global_masks_from_scores, gradient_scores, magnitude_scores, prunable_parameters,
                               random_scores, sparsity_of)
from sparsegap.runs import RunStore, check_runnable, get_or_train, run_all

DATA = DataConfig("digits", train_size=200, test_size=100)
MODEL = ModelConfig("mlp", hidden=(24, 16))
TRAIN = TrainConfig(epochs=2, batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="constant")


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def dense(**kw):
    return RunConfig("dense", kw.pop("data", DATA), MODEL, kw.pop("train", TRAIN), **kw)


@pytest.mark.parametrize("heuristic", ["magnitude", "gradient", "random"])
def test_r_rounds_at_rate_p_reach_the_sparsity_to_within_one_weight(store, heuristic):
    chain = imp_chain(dense(), 4, prune_rate=0.3, prune=heuristic, prune_seed=0 if heuristic == "magnitude" else 5)
    runs = run_all(chain, store, progress=False, batch=False)
    n = sum(m.numel() for m in runs[0].masks.values())
    previous = None
    for r, run in enumerate(runs, start=1):
        target = 1 - (1 - 0.3) ** r
        assert run.config.sparsity == pytest.approx(target)
        assert abs(sparsity_of(run.masks) - target) * n <= 1.0
        if previous is not None:  # nested: a round never keeps a weight the previous one removed
            assert all(not (m & ~previous[k]).any() for k, m in run.masks.items())
        previous = run.masks
        assert all((run.model().state_dict()[k][~m] == 0).all() for k, m in run.masks.items())


def test_rewinding_to_zero_restores_the_dense_init_under_the_new_mask(store):
    d = dense()
    chain = imp_chain(d, 2, prune_rate=0.5)
    runs = run_all(chain, store, progress=False, batch=False)
    root = get_or_train(d, store, progress=False)
    for run in runs:
        for name, w in run.init.items():
            expected = root.init[name] * run.masks[name] if name in run.masks else root.init[name]
            assert torch.equal(w, expected)


def test_rewinding_to_iteration_k_restores_the_stored_weights_of_iteration_k(store):
    steps = -(-200 // 32)                     # 7 iterations per epoch
    d = dense(save_weights_at=(steps,))
    root = get_or_train(d, store, progress=False)
    # the weights kept at iteration k are those of an otherwise equal run stopped after k iterations
    one_epoch = get_or_train(dense(train=TrainConfig(**{**TRAIN.full_dict(), "epochs": 1})), store, progress=False)
    for name, w in one_epoch.weights.items():
        assert torch.equal(root.weights_at(steps)[name], w)
    assert (root.path / f"weights-iter{steps}.pt").exists()
    run = get_or_train(imp_chain(d, 1, prune_rate=0.5, rewind_iter=steps)[0], store, progress=False)
    for name, w in run.init.items():
        kept = root.weights_at(steps)[name]
        assert torch.equal(w, kept * run.masks[name] if name in run.masks else kept)
    with pytest.raises(KeyError, match="iteration 3"):
        root.weights_at(3)


def test_kept_weights_survive_batched_training(store):
    steps = -(-200 // 32)
    cfgs = [dense(seed=s, save_weights_at=(steps + 2,)) for s in (0, 1)]
    runs = run_all(cfgs, store, progress=False, batch=True)
    assert all((r.path / f"weights-iter{steps + 2}.pt").exists() for r in runs)
    assert all(r.saved[steps + 2].keys() == r.weights.keys() for r in runs)


def test_more_rounds_train_only_the_new_ones(store, monkeypatch):
    chain = imp_chain(dense(), 5, prune_rate=0.4)
    run_all(chain[:3], store, progress=False, batch=False)
    mtimes = {c.run_id: (store.path(c) / "DONE").stat().st_mtime_ns for c in chain[:3]}
    import sparsegap.runs.sweep as runs_mod
    trained = []
    original = runs_mod.train_locked
    monkeypatch.setattr(runs_mod, "train_locked", lambda cfg, *a, **k: trained.append(cfg) or original(cfg, *a, **k))
    run_all(chain, store, progress=False, batch=False)
    assert [c.imp_round for c in trained] == [4, 5]
    assert all((store.path(c) / "DONE").stat().st_mtime_ns == t for c, t in zip(chain[:3], mtimes.values()))


def test_a_chain_trains_through_an_executor_stage_by_stage(store):
    chain = imp_chain(dense(), 3, prune_rate=0.5)

    class Serial:
        def map(self, fn, items):
            return [fn(i) for i in items]
    runs = run_all(chain[-1:], store, progress=False, executor=Serial())
    assert runs[0].config.imp_round == 3 and all(store.is_done(c) for c in chain)


def test_redense_starts_from_the_sparse_solution_with_pruned_weights_at_zero(store):
    sparse = imp_chain(dense(), 2, prune_rate=0.6)[-1]
    rd_cfg = redense_config(sparse)
    assert rd_cfg.train.schedule == "constant" and rd_cfg.train.lr == TRAIN.last_lr()
    sp, rd = (run_all([sparse, rd_cfg], store, progress=False, batch=False))
    assert rd.masks is None
    for name, w in rd.init.items():
        assert torch.equal(w, sp.weights[name])
    for name, m in sp.masks.items():
        assert (rd.init[name][~m] == 0).all()
        assert (rd.weights[name][~m] != 0).any()     # the returned weights train again


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_last_lr_is_the_schedulers_last_epoch_lr():
    from sparsegap.train import make_optimizer, make_scheduler
    for cfg in (TrainConfig(epochs=10, schedule="multistep", milestones=(0.5, 0.9)),
                TrainConfig(epochs=7, schedule="cosine"), TrainConfig(epochs=3, schedule="constant", lr=0.3)):
        opt = make_optimizer(torch.nn.Linear(2, 2), cfg)
        sched = make_scheduler(opt, cfg)
        for _ in range(cfg.epochs - 1):
            sched.step()
        assert cfg.last_lr() == pytest.approx(opt.param_groups[0]["lr"])


def test_batched_training_across_noise_levels_matches_single_training(store, tmp_path):
    cfgs = [dense(data=DataConfig("digits", train_size=200, test_size=100, noise=e, noise_seed=1), seed=s)
            for e, s in ((0.2, 0), (0.6, 1), (0.0, 2))]
    batched = run_all(cfgs, store, progress=False, batch=True)
    assert all(r.path.joinpath("meta.json").read_text().count('"batch": 3') for r in batched)
    single = run_all(cfgs, RunStore(tmp_path / "single"), progress=False, batch=False)
    for b, s in zip(batched, single):
        assert b.history["train_acc"] == pytest.approx(s.history["train_acc"], abs=0.011)
        for k in b.weights:
            assert torch.allclose(b.weights[k], s.weights[k], atol=1e-4)


def test_gradient_scores_are_g_times_w_by_hand():
    model = build_model("mlp", hidden=(5,), num_classes=3, input_shape=(4,), seed=0)
    x, y = torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0, 1, 2])
    mask = {"net.0.weight": torch.rand(5, 4, generator=torch.Generator().manual_seed(2)) > 0.3} \
        if "net.0.weight" in dict(model.named_parameters()) else None
    scores = gradient_scores(model, x, y, masks=None)
    # by hand: the gradient of the mean cross-entropy, times the weight
    w = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    out = torch.func.functional_call(model, w, (x,))
    F.cross_entropy(out, y).backward()
    for name in prunable_parameters(model):
        assert torch.allclose(scores[name], (w[name].grad * w[name].detach()).abs(), atol=1e-7, rtol=0)
    assert all(p.grad is None for p in model.parameters())      # the model itself is untouched
    if mask:
        masked = gradient_scores(model, x, y, masks=mask)
        assert (masked["net.0.weight"][~mask["net.0.weight"]] == 0).all()


def test_random_scores_are_uniform_and_seeded():
    model = build_model("mlp", hidden=(50,), num_classes=3, input_shape=(40,), seed=0)
    a, b, c = random_scores(model, 3), random_scores(model, 3), random_scores(model, 4)
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)
    flat = torch.cat([v.flatten() for v in a.values()])
    assert 0 <= flat.min() and flat.max() < 1 and abs(flat.mean().item() - 0.5) < 0.02


def test_within_keeps_masks_nested_and_refuses_to_grow():
    model = build_model("mlp", hidden=(20,), num_classes=3, input_shape=(10,), seed=0)
    scores = magnitude_scores(model)
    first = global_masks_from_scores(scores, 0.5)
    second = global_masks_from_scores(random_scores(model, 1), 0.75, within=first)
    assert all(not (second[k] & ~first[k]).any() for k in first)
    with pytest.raises(ValueError, match="only removes"):
        global_masks_from_scores(scores, 0.25, within=first)


def test_one_shot_masks_by_any_heuristic(store):
    d = dense()
    for h, seed in (("magnitude", 0), ("gradient", 3), ("random", 3)):
        run = get_or_train(RunConfig("scratch", DATA, MODEL, TRAIN, sparsity=0.7, parent=d, prune=h,
                                     prune_seed=seed), store, progress=False)
        assert abs(sparsity_of(run.masks) - 0.7) < 0.01


# ---------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("rate", [0, 1, -0.2, 1.5, float("nan"), float("inf")])
def test_a_pruning_rate_outside_0_1_is_refused(rate):
    with pytest.raises(ValueError, match=r"prune_rate must be a finite number in \(0, 1\)"):
        RunConfig("imp", DATA, MODEL, TRAIN, parent=dense(), prune_rate=rate)


def test_an_imp_round_needs_a_rate_and_other_kinds_take_none():
    with pytest.raises(TypeError, match="prune_rate"):
        RunConfig("imp", DATA, MODEL, TRAIN, parent=dense())
    with pytest.raises(ValueError, match="prune_rate is the fraction removed per round"):
        RunConfig("scratch", DATA, MODEL, TRAIN, sparsity=0.5, parent=dense(), prune_rate=0.2)


def test_more_rounds_than_leave_one_weight_per_layer_are_refused():
    chain = imp_chain(dense(), 18, prune_rate=0.5)     # 2,080 prunable weights in 3 layers: round 10 keeps 2
    with pytest.raises(ValueError, match=r"chain of 10 rounds .* keeps 2 of 2080 .* fewer than its 3 layers.*"
                                         r"at most 9 rounds"):
        check_runnable(chain[-1])


def test_a_rewind_iteration_beyond_the_dense_run_is_refused(store):
    d = dense(save_weights_at=(15,))                   # 2 epochs x 7 steps = 14 iterations
    cfg = imp_chain(d, 1, prune_rate=0.5, rewind_iter=15)[0]
    with pytest.raises(ValueError, match=r"iteration\(s\) \[15\], beyond the dense run's 14 iterations"):
        get_or_train(cfg, store, progress=False)
    assert not store.root.exists() or not any(store.root.glob("*/config.json"))   # nothing half-written


def test_a_rewind_iteration_the_dense_run_does_not_keep_is_refused():
    with pytest.raises(ValueError, match=r"save_weights_at=\(5,\)"):
        imp_chain(dense(), 1, prune_rate=0.5, rewind_iter=5)


@pytest.mark.parametrize("heuristic", ["magnitud", "", None, "snip"])
def test_an_unknown_heuristic_is_refused(heuristic):
    with pytest.raises(ValueError, match=r"RunConfig.prune must be one of \('magnitude', 'gradient', 'random'\)"):
        RunConfig("scratch", DATA, MODEL, TRAIN, sparsity=0.5, parent=dense(), prune=heuristic)


@pytest.mark.parametrize("kw, match", [
    (dict(kind="dense", prune="gradient"), "a dense run does not"),
    (dict(kind="scratch", prune_seed=3), "magnitude pruning draws nothing"),
    (dict(kind="scratch", save_weights_at=(3,)), "a scratch run takes"),
    (dict(kind="dense", save_weights_at=(5, 3)), "increasing"),
    (dict(kind="dense", rewind_iter=2), "0 except for an imp run"),
])
def test_pruning_fields_on_the_wrong_kind_are_refused(kw, match):
    kind = kw.pop("kind")
    extra = {} if kind == "dense" else dict(sparsity=0.5, parent=dense())
    with pytest.raises(ValueError, match=match):
        RunConfig(kind, DATA, MODEL, TRAIN, **extra, **kw)


def test_redense_needs_a_sparse_parent():
    with pytest.raises(ValueError, match="needs parent=<the sparse RunConfig"):
        RunConfig("redense", DATA, MODEL, TRAIN, parent=dense())
    with pytest.raises(TypeError, match="redense_config"):
        redense_config(dense())


def test_old_run_hashes_do_not_move():
    """New fields at their defaults stay out of the hash: every run trained before them is still found."""
    d = dense()
    cfg = RunConfig("finetune", DATA, MODEL, TRAIN, sparsity=0.5, parent=d)
    assert "prune" not in cfg.to_dict() and "prune_rate" not in cfg.to_dict()
    assert RunConfig.from_dict(cfg.to_dict()).hash() == cfg.hash()
    chain = imp_chain(d, 3, prune_rate=0.2)
    assert RunConfig.from_dict(chain[-1].to_dict()).hash() == chain[-1].hash()
    assert math.isclose(chain[-1].sparsity, 1 - 0.8 ** 3)
