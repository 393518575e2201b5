"""Symmetric label noise (issue 9): exactly round(ε·n) labels flipped, never onto the true class,
the permuted / unpermuted / restored subsets, and noise as part of the data's identity."""

from __future__ import annotations

import math

import pytest
import torch

from sparsegap import data as D
from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.data import SUBSETS, add_label_noise, load_dataset
from sparsegap.runs import load_data


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")  # 1438 training samples, 10 classes


@pytest.mark.parametrize("train_size, eps", [(None, 0.3), (200, 0.3), (200, 0.0025), (200, 0.0075), (100, 0.99),
                                             (1000, 0.05)])
def test_exactly_round_eps_n_labels_flipped_none_onto_its_true_class(train_size, eps):
    d = load_dataset("digits", train_size=train_size, noise=eps, noise_seed=3)
    n = len(d.y_train)
    flipped = d.y_train != d.y_train_true
    assert int(flipped.sum()) == round(eps * n) == int(d.noisy.sum())  # 0.5 -> 0, 1.5 -> 2 (Python's round)
    assert torch.equal(flipped, d.noisy)
    assert d.noise == eps and d.y_train.dtype == d.y_train_true.dtype == torch.int64
    clean = load_dataset("digits", train_size=train_size)
    assert torch.equal(d.y_train_true, clean.y_train) and torch.equal(d.x_train, clean.x_train)


def test_flipped_labels_spread_over_the_other_classes(digits):
    """The offset (noisy - true) mod C is uniform on 1..C-1: a chi-square bound far in the tail
    (the seeds are fixed, so this is a sanity check, never a flaky one)."""
    for seed in range(3):
        d = add_label_noise(digits, 0.5, seed)
        offset = (d.y_train[d.noisy] - d.y_train_true[d.noisy]) % 10
        counts = torch.bincount(offset, minlength=10).double()
        assert counts[0] == 0
        expected = len(offset) / 9
        chi2 = float(((counts[1:] - expected) ** 2 / expected).sum())
        assert chi2 < 40, f"seed {seed}: offsets {counts.tolist()} (chi2 {chi2:.1f}, 8 dof)"
        for c in range(10):  # every class both loses samples to noise and receives noisy labels
            assert int(d.noisy[d.y_train_true == c].sum()) > 0 and int((d.y_train[d.noisy] == c).sum()) > 0


def test_subsets_are_disjoint_and_cover_the_training_set():
    d = load_dataset("digits", train_size=300, noise=0.3, noise_seed=1)
    n = len(d.y_train)
    perm, clean, rest = (d.subset_indices(s) for s in ("permuted", "unpermuted", "restored"))
    assert torch.equal(perm, rest) and len(perm) == 90 and len(clean) == 210
    assert not set(perm.tolist()) & set(clean.tolist())
    assert torch.equal(torch.sort(torch.cat([perm, clean])).values, torch.arange(n))
    assert torch.equal(d.subset_indices("train"), torch.arange(n))
    xp, yp = d.split("permuted")
    xu, yu = d.split("unpermuted")
    xr, yr = d.split("restored")
    assert torch.equal(xp, d.x_train[perm]) and torch.equal(yp, d.y_train[perm])
    assert torch.equal(xr, xp) and torch.equal(yr, d.y_train_true[perm]) and bool((yr != yp).all())
    assert torch.equal(xu, d.x_train[clean]) and torch.equal(yu, d.y_train_true[clean])
    assert torch.equal(yu, d.y_train[clean])
    xt, yt = d.split("train")
    assert xt is d.x_train and yt is d.y_train  # the labels trained on: the noisy ones
    assert d.split("test") == (d.x_test, d.y_test)
    assert SUBSETS == ("train", "test", "permuted", "unpermuted", "restored")


def test_same_seed_same_noise_another_seed_another_noise_test_set_untouched(digits):
    a = load_dataset("digits", train_size=400, noise=0.2, noise_seed=5)
    b = load_dataset("digits", train_size=400, noise=0.2, noise_seed=5)
    c = load_dataset("digits", train_size=400, noise=0.2, noise_seed=6)
    clean = load_dataset("digits", train_size=400)
    assert torch.equal(a.y_train, b.y_train) and torch.equal(a.noisy, b.noisy)
    assert not torch.equal(a.noisy, c.noisy) and not torch.equal(a.y_train, c.y_train)
    for d in (a, c):
        assert torch.equal(d.x_test, clean.x_test) and torch.equal(d.y_test, clean.y_test)
        assert torch.equal(d.x_test, digits.x_test)
    # the noise seed is independent of the subset seed: another subset, the same count
    e = load_dataset("digits", train_size=400, noise=0.2, noise_seed=5, seed=1)
    assert int(e.noisy.sum()) == 80 and not torch.equal(e.x_train, a.x_train)


def test_clean_data_have_true_labels_and_no_noisy_subset(digits):
    assert digits.y_train_true is digits.y_train and not bool(digits.noisy.any()) and digits.noise == 0.0
    assert len(digits.noisy) == len(digits.y_train)
    for name in ("permuted", "restored"):
        with pytest.raises(ValueError, match=rf"subset '{name}' of digits is empty"):
            digits.split(name)
    assert torch.equal(digits.split("unpermuted")[1], digits.y_train)
    with pytest.raises(ValueError, match="unknown subset.*train, test, permuted, unpermuted, restored"):
        digits.split("memorized")
    with pytest.raises(ValueError, match="subset 'unpermuted' .* is empty"):
        load_dataset("digits", train_size=10, noise=0.96).split("unpermuted")  # round(9.6) = all 10


def test_restricting_the_training_set_keeps_the_noise_marks():
    d = load_dataset("digits", train_size=100, noise=0.5, noise_seed=2)
    idx = torch.tensor([0, 3, 5, 7, 11, 42])
    s = d.subset(idx)
    assert torch.equal(s.noisy, d.noisy[idx]) and torch.equal(s.y_train_true, d.y_train_true[idx])
    assert torch.equal(s.y_train, d.y_train[idx])
    clean = d.subset(~d.noisy)
    assert not bool(clean.noisy.any()) and torch.equal(clean.y_train_true, clean.y_train)


def test_repr_mentions_the_noise(digits):
    d = load_dataset("digits", train_size=200, noise=0.3)
    assert "noise=0.3 (60 labels flipped)" in repr(d)
    assert "noise" not in repr(digits)


def test_noise_on_noisy_data_is_refused():
    d = load_dataset("digits", train_size=100, noise=0.1)
    with pytest.raises(ValueError, match="noisy already"):
        add_label_noise(d, 0.1, 1)


# ------------------------------------------------------------------------------ the config and the store

OLD_HASHES = {  # computed with the code before DataConfig had noise fields
    DataConfig("digits"): "efd7bdb5bad101f0",
    DataConfig("fashion-mnist", train_size=4000): "bbc86248d2806040",
    DataConfig("fashion-mnist", train_size=5000, test_size=1000, subset_seed=3): "103c5ac9a297e845",
    DataConfig("tishby"): "2cd32247286e84dc",
}


def test_every_old_hash_is_unchanged_and_noise_changes_the_hash():
    for cfg, h in OLD_HASHES.items():
        assert cfg.hash() == h
        assert "noise" not in cfg.to_dict() and "noise_seed" not in cfg.to_dict()
    d = RunConfig("dense", DataConfig("fashion-mnist", train_size=5000), ModelConfig("lenet300-100"),
                  TrainConfig(epochs=80, lr=0.05, weight_decay=2e-4), seed=2, track=("fisher_trace@4",))
    s = RunConfig("scratch", d.data, d.model, d.train, seed=2, sparsity=0.95, parent=d, track=("fisher_trace@4",))
    assert (d.run_id, s.run_id) == ("dense-9b03eeb98d11892e", "scratch-44ea3be7bb4a7910")
    base = DataConfig("fashion-mnist", train_size=5000)
    noisy = DataConfig("fashion-mnist", train_size=5000, noise=0.3)
    other_seed = DataConfig("fashion-mnist", train_size=5000, noise=0.3, noise_seed=1)
    assert len({base.hash(), noisy.hash(), other_seed.hash()}) == 3
    assert noisy.to_dict() == {"train_size": 5000, "noise": 0.3}  # the name is the default one
    assert DataConfig.from_dict(other_seed.to_dict()) == other_seed
    assert RunConfig("dense", noisy).hash() != RunConfig("dense", base).hash()
    # explicit defaults, an int 0, and a noise seed without noise (it picks nothing) are the clean data
    for same in (DataConfig("fashion-mnist", train_size=5000, noise=0.0, noise_seed=0),
                 DataConfig("fashion-mnist", train_size=5000, noise=0, noise_seed=7)):
        assert same.hash() == base.hash() and same == base
    assert DataConfig("digits", noise=1 / 4) == DataConfig("digits", noise=0.25)


@pytest.mark.parametrize("kw, match", [
    ({"noise": 1.0}, r"noise must be a finite number in \[0, 1\)"),
    ({"noise": -0.1}, "noise"), ({"noise": math.nan}, "noise"), ({"noise": math.inf}, "noise"),
    ({"noise": True}, "noise"), ({"noise": "0.3"}, "noise"), ({"noise": None}, "noise"),
    ({"noise": 0.3, "noise_seed": -1}, "noise_seed"), ({"noise": 0.3, "noise_seed": 2**32}, "noise_seed"),
    ({"noise": 0.3, "noise_seed": 1.5}, "noise_seed"), ({"noise": 0.3, "noise_seed": True}, "noise_seed"),
])
def test_bad_noise_fields_are_clear_errors(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        DataConfig("digits", **kw)
    with pytest.raises((ValueError, TypeError), match=match):
        load_dataset("digits", train_size=20, **kw)


def test_noise_on_a_one_class_dataset_is_refused(monkeypatch):
    monkeypatch.setitem(D.NUM_CLASSES, "tishby", 1)
    with pytest.raises(ValueError, match=r"DataConfig.noise must be 0 for tishby, which has 1 class"):
        DataConfig("tishby", noise=0.1)
    assert DataConfig("tishby").noise == 0.0
    with pytest.raises(ValueError, match="noise must be 0 for a dataset with 1 class"):
        load_dataset("tishby", noise=0.1)


def test_the_run_store_loads_the_noisy_data():
    cfg = DataConfig("digits", train_size=100, noise=0.2, noise_seed=4)
    d = load_data(cfg)
    ref = load_dataset("digits", train_size=100, noise=0.2, noise_seed=4)
    assert int(d.noisy.sum()) == 20 and torch.equal(d.y_train, ref.y_train)
    assert not bool(load_data(DataConfig("digits", train_size=100)).noisy.any())
