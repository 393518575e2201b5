"""The paper profile, end to end, without a GPU and without the internet (issue 15, section 4).

Every notebook runs with its ``params/paper/`` file (the papers' datasets, architectures, optimisers,
schedules, crop-flip augmentation, channels-last, ``download: true``) plus the overrides below, which keep it
to seconds: 1 epoch, 1 seed, 2 sparsities, the shortest loops. The data are tiny files in the official CIFAR
and MNIST formats that this test writes (random images, a few per class), read by the real loaders: with
``download: true`` and the files present, nothing is fetched.

The architectures are the papers': ResNet-18 with the CIFAR stem, LeNet-300-100, the Tishby MLP, and
ResNet-32, but the two ResNets are narrowed, which the width factor does with the same code (the same
classes, blocks and forward pass; ``ModelConfig.width``, tested in test_models.py):

- ResNet-32 at width 0.5 (8, 16 and 32 channels), not the paper's x4: at x4 chapter 1 alone took 181 s here
  (5 runs of one epoch on 200 images, about 33 s each with the Tr(F) tracker); at width 1 (ResNet-18 at 0.25) the
  whole test took 107 s, chapter 12 alone 79 s of it (about 30 ResNet-32 runs); a training epoch on 200 images takes
  0.51 s at width 0.5 and 1.10 s at width 1 (one thread).
- ResNet-18 at width 0.25 (16 to 128 channels): at full width each run and curve writes, hashes and reads
  back 45 MB weight files, and chapters 7 to 11 took 145 s of kernel time in this test, against 47 s
  at a quarter (chapters 9, 10 and 11 alone, one after another: 89 s against 26 s).

What this proves: the paper settings parse, the paper architectures build and train with masks (and with
the paper profile's training options), and every figure and verdict cell runs on them. The numbers mean
nothing at this scale.

It takes about 75 s here (two kernels side by side; 145-155 s with both ResNets at width 1). About half of
that is fixed cost: each of the 12 kernels spends about 6 s starting, importing torch and loading torch's
compiler front end (at the first optimizer step).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from _formats import write_cifar, write_mnist_like
from sparsegap import bookbuild

REPO_ROOT = Path(__file__).resolve().parents[1]

COMMON = {"epochs": 1, "seeds": [0], "width": 0.5}    # width: ResNet-32 at half its base width (see above)
# Sparsities are chosen so that chapters share runs through the store, as the book's do: the CIFAR-100
# chapters (1, 3, 5, 12) one dense run and its Sol-F and Sol-S at 0.5 and 0.9; chapters 9, 10 and 11 the
# ResNet-18 dense and gradual runs at 0.91. They are lower than the paper's highest: after one epoch
# global magnitude pruning at 0.95 (ResNet-32) or 0.98 (ResNet-18) takes every weight of the output layer,
# which sparsegap refuses with a clear error (pruning.global_masks_from_scores).
# The CIFAR-100 chapters train with batches of 16, not 128: chapter 12's memorization phase trains on 30% of
# the training set left after its validation split, which must hold a batch; at 128 that takes 600 images,
# and chapter 12 alone then took 4 minutes here.
CIFAR100 = {"batch_size": 16}
# ResNet-18 at a quarter of its width (16 to 128 channels): torchvision's classes and forward pass, 1/16 of the
# weights (see the module docstring).
RESNET18 = {"width": 0.25}
OVERRIDES: dict[str, dict] = {
    "01_two_regimes": CIFAR100 | {"sparsities": [0.5, 0.9]},
    "02_fisher_trajectory": {"dense_epochs": 1, "sparse_epochs": 1, "sparsities": [0.5, 0.9],
                             "unit_init_sparsities": [0.9], "fisher_every": 1},
    "03_curvature": CIFAR100 | {"sparsities": [0.5, 0.9], "max_probes": 2, "measure_size": 10},
    "04_memorization": {"sparsity": 0.9, "fisher_every": 1, "predictions_every": 1},
    "07_sparse_double_descent": RESNET18 | {"rounds": 2, "rewind_iter": 1, "noises": [0.4], "heuristic_noises": [0.4]},
    "08_redense_and_landscape": RESNET18 | {"rounds": 2, "rewind_iter": 1, "path_points": 3, "curve_points": 3},
    "09_difficulty_of_sparse_training": RESNET18 | {"prune_every": 1, "sparsities": [0.8, 0.91], "zero_fractions": [0.99]},
    "10_gradient_flow": RESNET18 | {"prune_every": 1, "sparsities": [0.91], "update_every": 1},
    "06_gradient_snr": {},
    "05_paths_and_cosines": CIFAR100 | {"sparsity": 0.9, "path_points": 3, "alphas": [0.3, 0.9], "permutations": 10},
    "11_energy_landscape": RESNET18 | {"prune_every": 1, "path_points": 3, "curve_points": 3, "curve_epochs": 1},
    "12_remedies": CIFAR100 | {"sparsities": [0.5, 0.9], "remedy_seeds": [0], "validation": 100, "measure_size": 20,
                    "reg_coefs": [-0.1],
                    "reg_epochs": [1], "memorize_epochs": [1], "consolidate_epochs": 0, "rerank_every": 1},
}


LONGEST_FIRST = ["12_remedies", "11_energy_landscape", "09_difficulty_of_sparse_training", "08_redense_and_landscape",
                 "10_gradient_flow", "07_sparse_double_descent", "03_curvature", "01_two_regimes",
                 "05_paths_and_cosines", "04_memorization", "06_gradient_snr", "02_fisher_trajectory"]


def overrides() -> dict[str, dict]:
    """OVERRIDES over COMMON, whose keys apply where the paper file sets them (width: the ResNet-32 chapters)."""
    out = {}
    for nb, extra in OVERRIDES.items():
        declared = bookbuild.load_parameters(REPO_ROOT / "notebooks" / f"{nb}.ipynb", "paper")
        out[nb] = {k: v for k, v in COMMON.items() if k in declared} | {k: v for k, v in extra.items() if v is not None}
    return out


@pytest.fixture(scope="module")
def paper_book(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper-profile")
    data = root / "data"
    # CIFAR-10: one image of each class. CIFAR-100: two of each, since chapter 12 holds one of each out as its
    # validation split; 50 test images (a split that misses classes, which chapter 5's verdicts must allow).
    write_cifar(data, "cifar10", n_train=10, n_test=10, balanced=True)
    write_cifar(data, "cifar100", n_train=200, n_test=50, balanced=True)
    write_mnist_like(data / "mnist", n_train=300, n_test=100)   # 3 minibatches: a gradient SNR
    mp = pytest.MonkeyPatch()
    mp.setenv("SPARSEGAP_DATA_DIR", str(data))     # the kernels inherit it
    try:
        # the longest first (measured), so that two kernels finish close together
        runs = bookbuild.execute_notebooks("paper", root / "book", REPO_ROOT / "notebooks", runs_dir=root / "runs",
                                           log=print, jobs=2, overrides=overrides(), only=LONGEST_FIRST)
    finally:
        mp.undo()
    return {r.name: r for r in runs}


def test_overrides_cover_every_notebook_and_keep_the_paper_architectures():
    notebooks = [p.stem for p in bookbuild.find_notebooks(REPO_ROOT / "notebooks")]
    assert sorted(OVERRIDES) == sorted(LONGEST_FIRST) == notebooks
    for nb in notebooks:
        paper = bookbuild.load_parameters(REPO_ROOT / "notebooks" / f"{nb}.ipynb", "paper")
        kept = {"model", "dataset", "hidden", "lr", "momentum", "weight_decay", "augment", "channels_last", "download"}
        assert not kept & set(overrides()[nb]), nb


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_every_notebook_runs_with_the_paper_settings(paper_book, name):
    nb = nbformat.read(paper_book[name].output, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} drew no figure"


def _paper_model(nb: str) -> str:
    return bookbuild.load_parameters(REPO_ROOT / "notebooks" / f"{nb}.ipynb", "paper").get("model", "")


@pytest.mark.parametrize("name", [nb for nb in sorted(OVERRIDES) if _paper_model(nb).startswith("resnet")])
def test_every_resnet_page_states_the_width_it_ran_at(paper_book, name):
    """The narrowed ResNets are named as such in the verdicts' scale lines, never as the paper's networks."""
    model, text = _paper_model(name), Path(paper_book[name].output).read_text()
    assert f"{model} x{overrides()[name]['width']:g} on " in text
    assert f"{model} on " not in text
