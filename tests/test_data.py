"""Tests for sparsegap.data: real loaders on tiny files in the official formats, bundled sets, tishby."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsegap import data as D
from sparsegap import datasets, datasplits
from sparsegap.data import DATASETS, DataSplits, data_root, load_dataset, make_tishby, read_idx

from _formats import N_TEST, N_TRAIN, write_cifar, write_idx, write_mnist_like


def unnormalise(d: DataSplits, x: torch.Tensor) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    return x * torch.tensor(d.std).view(shape) + torch.tensor(d.mean).view(shape)


# --------------------------------------------------------------------------------- idx loaders

@pytest.mark.parametrize("name,subdir,gz", [
    ("mnist", "mnist", True), ("mnist", "MNIST/raw", False), ("fashion-mnist", "fashion-mnist", True)])
def test_idx_loader_reads_official_format(tmp_path, name, subdir, gz):
    arrays = write_mnist_like(tmp_path / subdir, gz=gz)
    d = load_dataset(name, root=tmp_path)
    assert d.name == name and d.num_classes == 10 and d.input_shape == (1, 28, 28)
    assert d.x_train.shape == (N_TRAIN, 1, 28, 28) and d.x_test.shape == (N_TEST, 1, 28, 28)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert d.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    # Pixels come back in the written order once the standardisation is undone.
    for x, stem in ((d.x_train, "train-images-idx3-ubyte"), (d.x_test, "t10k-images-idx3-ubyte")):
        expected = torch.tensor(arrays[stem][:, None] / 255.0, dtype=torch.float32)
        torch.testing.assert_close(unnormalise(d, x), expected, atol=1e-5, rtol=0)
    train01 = arrays["train-images-idx3-ubyte"] / 255.0
    assert d.mean[0] == pytest.approx(train01.mean(), rel=1e-6)
    assert d.std[0] == pytest.approx(train01.std(), rel=1e-6)
    assert abs(d.x_train.mean().item()) < 1e-5
    assert d.x_train.std(unbiased=False).item() == pytest.approx(1, abs=1e-4)


def test_root_wins_over_system_dir(tmp_path, monkeypatch):
    sysdir = tmp_path / "system"
    write_mnist_like(sysdir, seed=1)
    mine = write_mnist_like(tmp_path / "root" / "fashion-mnist", seed=2)
    monkeypatch.setattr(datasets, "_SYSTEM_DIRS", {"fashion-mnist": (sysdir,)})
    d = load_dataset("Fashion_MNIST", root=tmp_path / "root")  # case and "_" are forgiven
    expected = torch.tensor(mine["train-images-idx3-ubyte"][:, None] / 255.0, dtype=torch.float32)
    torch.testing.assert_close(unnormalise(d, d.x_train), expected, atol=1e-5, rtol=0)
    # Without a copy under root the system directory is used.
    assert len(load_dataset("fashion-mnist", root=tmp_path / "elsewhere").y_train) == N_TRAIN


def test_missing_idx_files_say_where_and_how(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("mnist", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "mnist") in msg and str(tmp_path / "MNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg and "download=True" in msg

    monkeypatch.setattr(datasets, "_SYSTEM_DIRS", {"fashion-mnist": (tmp_path / "nowhere",)})
    (tmp_path / "fashion-mnist").mkdir()
    write_idx(tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28)))  # 1 of 4
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("fashion-mnist", root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "fashion-mnist") in msg and str(tmp_path / "nowhere") in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_malformed_idx_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.gz"
    write_idx(bad, np.zeros(5), magic=b"\x12\x34\x08\x01")
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short"
    write_idx(short, np.zeros(5), gz=False)
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(ValueError, match="malformed idx file.*holds 4"):
        read_idx(short)
    notgz = tmp_path / "plain.gz"
    notgz.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="malformed idx file"):
        read_idx(notgz)
    # A well-formed file with the wrong layout (labels of 3 dims) is caught by the loader.
    arrays = write_mnist_like(tmp_path / "mnist")
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", np.zeros((N_TRAIN, 2, 2)))
    with pytest.raises(ValueError, match="labels"):
        load_dataset("mnist", root=tmp_path)
    assert arrays  # the other three files were fine


# ------------------------------------------------------------------------------- CIFAR loaders

@pytest.mark.parametrize("name,protocol,str_keys", [
    ("cifar10", 2, False), ("cifar10", 5, True), ("cifar100", 2, False), ("cifar100", 4, True)])
def test_cifar_loader_reads_official_format(tmp_path, name, protocol, str_keys):
    written = write_cifar(tmp_path, name, protocol=protocol, str_keys=str_keys)
    d = load_dataset(name, root=tmp_path)
    classes = 10 if name == "cifar10" else 100
    assert d.num_classes == classes and d.input_shape == (3, 32, 32)
    assert d.x_train.shape == (N_TRAIN, 3, 32, 32) and d.x_test.shape == (N_TEST, 3, 32, 32)
    assert d.x_train.dtype == torch.float32 and d.y_test.dtype == torch.int64
    train_files = [f for f in written if f not in ("test_batch", "test")]  # batches concatenated in order
    x_raw = np.concatenate([written[f][0] for f in train_files])
    assert d.y_train.tolist() == np.concatenate([written[f][1] for f in train_files]).tolist()
    assert d.y_test.tolist() == written["test_batch" if name == "cifar10" else "test"][1].tolist()
    assert len(d.mean) == len(d.std) == 3
    pixels = unnormalise(d, d.x_train) * 255
    # Row layout: 1024 red values, then green, then blue, each plane row-major.
    for i, r, c in ((0, 0, 1), (3, 31, 0), (N_TRAIN - 1, 17, 5)):
        for ch in range(3):
            assert pixels[i, ch, r, c].item() == pytest.approx(x_raw[i, 1024 * ch + 32 * r + c], abs=1e-3)
    torch.testing.assert_close(pixels, torch.tensor(x_raw.reshape(-1, 3, 32, 32), dtype=torch.float32),
                               atol=1e-3, rtol=0)


@pytest.mark.parametrize("name,folder", [
    ("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_cifar_says_where(tmp_path, name, folder):
    with pytest.raises(FileNotFoundError, match="download=True") as err:
        load_dataset(name, root=tmp_path)
    assert str(tmp_path / folder) in str(err.value)


def test_cifar_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for f in ("train", "test"):
        (folder / f).write_bytes(pickle.dumps({b"data": Evil(), b"fine_labels": []}))
    with pytest.raises(ValueError, match="refusing"):
        load_dataset("cifar100", root=tmp_path)


# ------------------------------------------------------------------------ subsets and arguments

def test_train_subset_is_balanced_and_seeded(tmp_path):
    write_mnist_like(tmp_path / "mnist")  # 2 training images per class
    d10 = load_dataset("mnist", root=tmp_path, train_size=10, seed=0)
    assert torch.bincount(d10.y_train, minlength=10).tolist() == [1] * 10
    assert len(d10.y_test) == N_TEST  # test set kept whole by default
    d15 = load_dataset("mnist", root=tmp_path, train_size=15, seed=0)
    assert sorted(set(torch.bincount(d15.y_train, minlength=10).tolist())) == [1, 2]
    again = load_dataset("mnist", root=tmp_path, train_size=10, seed=0)
    assert torch.equal(d10.x_train, again.x_train)
    others = [load_dataset("mnist", root=tmp_path, train_size=10, seed=s).x_train for s in range(1, 6)]
    assert not all(torch.equal(d10.x_train, o) for o in others)
    dt = load_dataset("mnist", root=tmp_path, test_size=10, seed=0)
    assert len(dt.y_test) == 10 and len(set(dt.y_test.tolist())) == 10 and len(dt.y_train) == N_TRAIN


def test_stratified_fills_small_classes_first():
    y = torch.tensor([0] + [1] * 10 + [2] * 10)
    idx = datasplits.stratified(y, 9, 3, torch.Generator().manual_seed(0))
    assert torch.bincount(y[idx], minlength=3).tolist() == [1, 4, 4]
    assert torch.equal(idx, torch.sort(idx).values) and len(set(idx.tolist())) == 9


@pytest.mark.parametrize("param", ["train_size", "test_size"])
@pytest.mark.parametrize("bad", [0, -3, 10_000, 2.5, True])
def test_bad_sizes_are_value_errors(param, bad):
    with pytest.raises(ValueError, match=param) as err:
        load_dataset("digits", **{param: bad})
    assert repr(bad) in str(err.value)


def test_unknown_name_lists_the_datasets():
    with pytest.raises(ValueError, match="unknown dataset") as err:
        load_dataset("imagenet")
    assert all(n in str(err.value) for n in DATASETS)


def test_subset_validates_and_keeps_test():
    d = load_dataset("digits")
    s = d.subset(torch.tensor([0, 5, 7]))
    assert len(s.y_train) == 3 and torch.equal(s.x_train[1], d.x_train[5]) and s.x_test is d.x_test
    assert len(d.subset(d.y_train == 3).y_train) == int((d.y_train == 3).sum())
    with pytest.raises(ValueError, match="idx"):
        d.subset(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="idx"):
        d.subset(torch.tensor([len(d.y_train)]))
    assert repr(d) == ("DataSplits(name='digits', train=1438, test=359, input_shape=(1, 8, 8), "
                       "num_classes=10)")


def test_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSEGAP_DATA_DIR", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("SPARSEGAP_DATA_DIR")
    assert data_root() == Path(D.__file__).resolve().parents[2] / "data"


# ------------------------------------------------------------------------------ bundled datasets

def test_mnist5k_and_digits():
    m = load_dataset("mnist-5k")
    assert m.x_train.shape == (4000, 1, 28, 28) and m.x_test.shape == (1000, 1, 28, 28)
    assert torch.bincount(m.y_train).tolist() == [400] * 10
    assert torch.bincount(m.y_test).tolist() == [100] * 10
    assert abs(m.x_train.mean().item()) < 1e-4 and 0 < m.mean[0] < 1
    d = load_dataset("digits", train_size=100, seed=1)
    assert d.x_train.shape == (100, 1, 8, 8) and d.x_test.shape == (359, 1, 8, 8)
    assert torch.bincount(d.y_train).tolist() == [10] * 10 and d.num_classes == 10
    tr, te = datasets._split(np.asarray(load_dataset("digits").y_train), 0.2, 10)
    assert not set(tr.tolist()) & set(te.tolist())


def test_mnist1d_is_generated_deterministically_without_touching_global_rngs():
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    d = load_dataset("mnist1d")
    assert (random.random(), np.random.rand()) == before
    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40) and d.input_shape == (40,)
    assert d.x_train.dtype == torch.float32 and set(d.y_train.unique().tolist()) == set(range(10))
    fresh = datasets._mnist1d_arrays.__wrapped__()  # bypass the cache: a second generation must agree
    np.testing.assert_array_equal(fresh[0].astype(np.float32), d.x_train.numpy())
    assert np.array_equal(fresh[3], d.y_test.numpy())


# -------------------------------------------------------------------------------------- tishby

def _rotation_perm(axis: np.ndarray, angle: float, v: np.ndarray) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    moved = v @ rot.T
    perm = np.argmin(np.linalg.norm(moved[:, None] - v[None], axis=2), axis=1)
    assert np.allclose(moved, v[perm], atol=1e-9)  # the rotation maps the icosahedron to itself
    return perm


def test_tishby_inputs_labels_and_symmetry():
    x, y = make_tishby()
    assert x.shape == (4096, 12) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(x.unique().tolist()) == {0.0, 1.0} and len(torch.unique(x, dim=0)) == 4096
    assert set(y.unique().tolist()) == {0, 1} and 0.45 < y.float().mean().item() < 0.55
    # Labels depend on where the ones sit, not only on how many there are.
    ones = x.sum(1)
    assert any(len(y[ones == k].unique()) == 2 for k in range(13))
    # Invariance under rotations of the sphere that permute the 12 points.
    v = datasets._icosahedron_vertices()
    assert np.allclose(np.linalg.norm(v, axis=1), 1) and np.allclose(v.sum(0), 0)
    codes = 2 ** torch.arange(11, -1, -1)
    for axis, angle in ((v[0], 2 * np.pi / 5), (v[1], 2 * np.pi / 5), (v[0] + v[1], np.pi)):
        perm = _rotation_perm(axis, angle, v)
        moved = torch.zeros_like(x)
        moved[:, torch.as_tensor(perm)] = x  # the bit of point i goes to point perm[i]
        assert torch.equal(y[(moved * codes).sum(1).long()], y)


def test_tishby_noise_is_seeded_and_dataset_split():
    clean = make_tishby()[1]
    assert torch.equal(make_tishby(seed=5)[1], clean)  # the noise-free rule ignores the seed
    a, b = make_tishby(label_noise=True, mutual_information=0.7, seed=1)[1], \
        make_tishby(label_noise=True, mutual_information=0.7, seed=1)[1]
    assert torch.equal(a, b)
    flips = (a != clean).float().mean().item()
    assert 0 < flips < 0.3
    assert not torch.equal(a, make_tishby(label_noise=True, mutual_information=0.7, seed=2)[1])
    with pytest.raises(ValueError, match="mutual_information"):
        make_tishby(label_noise=True, mutual_information=1.5)
    d = load_dataset("tishby")
    assert d.x_train.shape == (3482, 12) and d.x_test.shape == (614, 12) and d.num_classes == 2
    assert len(torch.unique(torch.cat([d.x_train, d.x_test]), dim=0)) == 4096
    s = load_dataset("tishby", train_size=100, seed=3)
    assert torch.bincount(s.y_train).tolist() == [50, 50]


# ---------------------------------------------------------------------- the machine's real data

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package(tmp_path):
    d = load_dataset("fashion-mnist", root=tmp_path)
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(d.y_train).tolist() == [6000] * 10
    assert torch.bincount(d.y_test).tolist() == [1000] * 10
    assert d.mean[0] == pytest.approx(0.286, abs=1e-3) and d.std[0] == pytest.approx(0.353, abs=1e-3)


def test_download_goes_through_torchvision_and_failures_are_reported(tmp_path, monkeypatch):
    import torchvision

    calls = []

    class FakeMNIST:  # stands in for the network: writes what torchvision's download would leave
        def __init__(self, root, train, download):
            calls.append((root, download))
            write_mnist_like(Path(root) / "MNIST" / "raw", gz=False)

    class OfflineCIFAR10:
        def __init__(self, root, train, download):
            raise RuntimeError("no network here")

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", OfflineCIFAR10)
    with pytest.raises(FileNotFoundError):
        load_dataset("mnist", root=tmp_path)  # no download unless asked
    assert calls == []
    d = load_dataset("mnist", root=tmp_path, download=True)
    assert calls == [(str(tmp_path), True)] and len(d.y_train) == N_TRAIN
    with pytest.raises(FileNotFoundError, match="no network here"):
        load_dataset("cifar10", root=tmp_path, download=True)


@pytest.mark.parametrize("param", ["train_size", "test_size"])
@pytest.mark.parametrize("size", [1, 5, 9])
def test_a_class_balanced_subset_smaller_than_the_classes_is_an_error(param, size):
    # digits has 10 classes: 5 samples cannot hold one of each (it used to return 5 unbalanced ones).
    with pytest.raises(ValueError, match=rf"{param} must be an int >= 10 \(a class-balanced subset needs one "
                                         rf"sample for each of the 10 classes\) or None, got {size}"):
        load_dataset("digits", **{param: size})
    tishby = load_dataset("tishby", **{param: 2})  # two classes: two samples are enough
    assert len(tishby.y_train if param == "train_size" else tishby.y_test) == 2


def test_num_classes_table_matches_the_loaders():
    assert set(D.NUM_CLASSES) == set(DATASETS)
    for name in ("digits", "tishby", "mnist-5k", "mnist1d"):
        assert load_dataset(name).num_classes == D.NUM_CLASSES[name], name


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"root": 5}, TypeError, r"root must be a path .* got 5 of type int"),
    ({"download": "no"}, TypeError, r"download must be True or False, got 'no'"),
    ({"seed": 2**64}, ValueError, r"seed must be an int in \[-2\*\*63, 2\*\*64\)"),
    ({"seed": 1.5}, ValueError, r"seed must be an int"),
])
def test_bad_loader_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        load_dataset("digits", **kwargs)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"label_noise": "no"}, TypeError, r"label_noise must be True or False, got 'no'"),
    ({"mutual_information": "0.9"}, ValueError, r"mutual_information must be a number in \(0, 1\)"),
    ({"mutual_information": float("nan")}, ValueError, r"mutual_information must be a number in \(0, 1\)"),
    ({"mutual_information": float("inf")}, ValueError, r"mutual_information must be a number in \(0, 1\)"),
])
def test_bad_tishby_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make_tishby(**kwargs)
