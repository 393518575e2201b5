"""Tiny files in the official formats of MNIST-like sets (idx, gzipped or not) and CIFAR (pickled batches),
written by the tests themselves: the real loaders read them, and no test needs the internet."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

N_TRAIN, N_TEST = 20, 10


def write_idx(path: Path, arr: np.ndarray, *, gz: bool = True, magic: bytes | None = None) -> None:
    header = magic if magic is not None else bytes([0, 0, 0x08, arr.ndim])
    raw = header + np.asarray(arr.shape, dtype=">u4").tobytes() + arr.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(raw)


def write_mnist_like(folder: Path, *, gz: bool = True, seed: int = 0, n_train: int = N_TRAIN,
                     n_test: int = N_TEST) -> dict[str, np.ndarray]:
    """Random images; the labels cycle through the 10 classes (so every class has its share)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    for stem, arr in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), arr, gz=gz)
    return arrays


def write_cifar(root: Path, name: str, *, protocol: int = 2, str_keys: bool = False, seed: int = 0,
                n_train: int = N_TRAIN, n_test: int = N_TEST,
                balanced: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Official layout: dicts with (N, 3072) uint8 rows (R, G, B planes) and a label list; CIFAR-10's training
    set in 5 batches. Labels are random, or with ``balanced`` cycle through the classes (across CIFAR-10's 5
    training files: 10 training images are one of each class)."""
    rng = np.random.default_rng(seed)
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    classes = 10 if name == "cifar10" else 100
    if name == "cifar10":
        folder, label_key = root / "cifar-10-batches-py", "labels"
        files = {f"data_batch_{i}": n_train // 5 for i in range(1, 6)} | {"test_batch": n_test}
    else:
        folder, label_key = root / "cifar-100-python", "fine_labels"
        files = {"train": n_train, "test": n_test}
    folder.mkdir(parents=True)
    written = {}
    first = 0       # the labels of a balanced training set cycle through the classes across its batch files
    for i, (fname, n) in enumerate(files.items()):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        if fname in ("test_batch", "test"):
            first = 0
        y = [int(v) for v in ((first + np.arange(n)) % classes if balanced else rng.integers(0, classes, n))]
        first += n
        batch = {key("data"): x, key(label_key): y, key("batch_label"): key(f"batch {i}")}
        if name == "cifar100":
            batch[key("coarse_labels")] = [v // 5 for v in y]
        with open(folder / fname, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
        written[fname] = (x, np.array(y))
    return written
