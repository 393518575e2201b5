"""What training refuses is refused before anything trains, and before a plan is shown (issue 25, item 8).

A sparse run whose mask cannot leave a weight per layer used to be refused only once its parent had trained; a
crop-flip on 1-D data only once its run folder existed; and ``plan_only`` showed the plan of a sweep that training
would refuse (``train_size`` beyond the dataset, ``sparsities [0.9999]`` where no mask keeps a weight per
layer). Which layers a *trained* network's globally largest weights leave empty is known only once the
parent has trained (LeNet-300-100 trained 2 epochs on 300 fashion-mnist images kept its 27 largest at 0.9999 all
in fc3): that refusal stays there, a clear error raised before the child's folder exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sparsegap import bookbuild, params
from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.runs import RunStore, get_or_train, run_all
from sparsegap.runs.plan import plan_notebook, plan_runs

ROOT = Path(__file__).resolve().parents[1]
DATA, MODEL = DataConfig("digits", train_size=100, test_size=50), ModelConfig("mlp", hidden=(8,))  # 592 weights
TRAIN = TrainConfig(epochs=1, batch_size=32, lr=0.05, schedule="constant")


def dense(data: DataConfig = DATA, train: TrainConfig = TRAIN) -> RunConfig:
    return RunConfig("dense", data, MODEL, train)


def nothing_written(store: RunStore) -> bool:
    """No run folder (the store's own hidden ones, such as its locks, aside)."""
    return not store.root.exists() or not [p for p in store.root.iterdir() if not p.name.startswith(".")]


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


@pytest.mark.parametrize("kind", ["scratch", "finetune"])
def test_a_sparse_run_no_mask_can_keep_connected_is_refused_before_its_parent_trains(store, kind):
    cfg = RunConfig(kind, DATA, MODEL, TRAIN, parent=dense(), sparsity=0.9999)
    match = r"RunConfig.sparsity=0.9999 keeps round\(\(1 - sparsity\) \* 592\) = 0 of the 592 .* at most 0.996"
    with pytest.raises(ValueError, match=match):
        get_or_train(cfg, store, progress=False)
    with pytest.raises(ValueError, match=match):
        run_all([cfg], store, progress=False)
    assert nothing_written(store)                        # the dense parent was not trained first


def test_the_runnability_check_agrees_with_global_pruning():
    """At the bound: the check refuses exactly the sparsities at which global_masks_from_scores, given any
    scores, cannot leave a weight in every layer, and min_density's floor is refused as the pruning refuses it."""
    import torch

    from sparsegap.models import build_model
    from sparsegap.pruning import global_masks_from_scores, magnitude_scores
    from sparsegap.runs import check_runnable
    net = build_model("mlp", num_classes=10, input_shape=(1, 8, 8), hidden=(8,), seed=0)
    # scores that favour no layer: the best weight of each layer ties with the best of the other
    scores = {n: torch.where(torch.arange(w.numel()).view_as(w) == 0, 2.0, 1.0)
              for n, w in magnitude_scores(net).items()}
    for s, ok in ((0.9966, True), (0.9984, False)):      # keeps round(0.0034 * 592) = 2, round(0.0016 * 592) = 1
        cfg = RunConfig("scratch", DATA, MODEL, TRAIN, parent=dense(), sparsity=s)
        if ok:
            check_runnable(cfg)
            assert all(m.any() for m in global_masks_from_scores(scores, s).values())
        else:
            with pytest.raises(ValueError, match="fewer than its 2 prunable layers"):
                check_runnable(cfg)
            with pytest.raises(ValueError, match="with no weight"):
                global_masks_from_scores(scores, s)
    floor = RunConfig("scratch", DATA, MODEL, TRAIN, parent=dense(), sparsity=0.9, min_density=0.2)
    with pytest.raises(ValueError, match=r"min_density=0.2 keeps 119 weights, more than the 59"):
        check_runnable(floor)
    with pytest.raises(ValueError, match=r"min_density=0.2 keeps 119 weights, more than the 59"):
        global_masks_from_scores(scores, 0.9, min_density=0.2)


def test_crop_flip_on_1d_data_is_refused_before_the_run_folder_exists(store):
    cfg = dense(DataConfig("tishby", train_size=100), TrainConfig(epochs=1, augment="crop-flip"))
    with pytest.raises(ValueError, match=r"TrainConfig.augment='crop-flip' applies to image inputs of shape "
                                         r"\(N, C, H, W\); tishby has inputs of shape \(12,\)"):
        get_or_train(cfg, store, progress=False)
    assert nothing_written(store)


def test_the_plan_runs_the_checks_of_training(store):
    too_many = dense(DataConfig("digits", train_size=10_000_000))
    with pytest.raises(ValueError, match=r"DataConfig.train_size must be an int in \[10, 1438\] .*got 10000000"):
        plan_runs([too_many], store, device="cpu")
    with pytest.raises(ValueError, match=r"sparsity=0.9999 keeps"):
        plan_runs([RunConfig("scratch", DATA, MODEL, TRAIN, parent=dense(), sparsity=0.9999)], store, device="cpu")
    with pytest.raises(ValueError, match=r"augment='crop-flip' applies to image inputs"):
        plan_runs([dense(DataConfig("tishby"), TrainConfig(epochs=1, augment="crop-flip"))], store, device="cpu")
    assert nothing_written(store)


@pytest.mark.parametrize("notebook, override, match", [
    ("01_two_regimes", {"train_size": 10_000_000}, r"DataConfig.train_size must be an int in \[10, 60000\]"),
    ("02_fisher_trajectory", {"sparsities": [0.9999], "unit_init_sparsities": []},
     r"sparsity=0.9999 keeps round\(\(1 - sparsity\) \* 4896\)"),
])
def test_a_notebooks_plan_refuses_what_its_training_would(tmp_path, notebook, override, match):
    """plan_only's plan (plan_notebook, which show_plan displays): chapter 1's subset, chapter 2's tishby MLP."""
    module, values = bookbuild.notebook_parameters(ROOT / "notebooks" / f"{notebook}.ipynb", "smoke")
    values = module.PARAMETERS.check({**values, **override, "runs_dir": str(tmp_path / "runs")}, show=False,
                                     activate=False)
    with pytest.raises(ValueError, match=match):
        plan_notebook(module.__name__, values, device="cpu")
    assert nothing_written(RunStore(tmp_path / "runs"))


@pytest.mark.parametrize("raw, expected", [("true", True), ("True", True), ("TRUE", True), ("1", True),
                                           ("false", False), ("False", False), ("0", False), (" true ", True)])
def test_plan_only_takes_papermills_forms_of_a_bool(raw, expected):
    from papermill.cli import _resolve_type          # what `papermill -p plan_only RAW` puts in the notebook
    assert params.plan_only().normalise("plan_only", _resolve_type(raw)) is expected


def test_the_readmes_plan_only_command_is_accepted():
    from papermill.cli import _resolve_type
    commands = re.findall(r"-p plan_only (\S+?)`", (ROOT / "README.md").read_text())
    assert commands, "the README shows a plan_only command"
    for raw in commands:
        assert params.plan_only().normalise("plan_only", _resolve_type(raw)) is True


@pytest.mark.parametrize("value", ["", "  ", "maybe", 2, 1.0, -1, [True]])
def test_other_bools_and_empty_strings_are_refused(value):
    with pytest.raises(ValueError, match=rf"plan_only={re.escape(repr(value))} is not allowed.*True or False"):
        params.plan_only().normalise("plan_only", value)


def test_an_empty_runs_dir_is_refused_and_none_is_the_default_store():
    with pytest.raises(ValueError, match=r"runs_dir='' is not allowed \(empty\): runs_dir must be a non-empty"):
        params.runs_dir().normalise("runs_dir", "")
    assert params.runs_dir().normalise("runs_dir", None) is None
