"""Bad input never passes unnoticed (issue 7, sections 3 and 4; issue 25, item 8): one table across the library.

Each row calls a public function with one bad argument and names that argument. The call must raise
ValueError or TypeError whose message names the argument as a word ("x", "train_size", "masks[...]").

``python tests/test_bad_input.py`` sorts the rows into the issue's four outcomes against whichever
``sparsegap`` is importable (so also against an older checkout, via PYTHONPATH):
  clear     ValueError/TypeError naming the argument;
  unclear   another exception, or one that does not name the argument;
  silent    no error, and a (wrong) result: NaN, an empty layer, an unbalanced subset...;
  accepted  no error, and an invalid config, callback or validation that fails or misleads later.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, NamedTuple

import pytest
import torch
from torch import nn

from sparsegap import params
from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.data import load_dataset, make_tishby
from sparsegap.memorization import first_epoch_reaching, memorized_share, noisy_confusion
from sparsegap.metrics import (FisherTraceCallback, disagreement, evaluate, fisher_trace, hessian_trace,
                               jacobian_norm, per_sample_grad_norms_sq, predict_logits, prediction_entropy)
from sparsegap.models import build_model
from sparsegap.pruning import (apply_masks, check_masks, global_magnitude_masks, global_masks_from_scores,
                               gradient_scores, magnitude_scores, random_scores)
from sparsegap.trackers import make_trackers

INF, NAN = math.inf, math.nan


class Case(NamedTuple):
    id: str
    param: str               # the argument the error message must name
    call: Callable[[], Any]


# ----------------------------------------------------------------------------- shared inputs

def _mlp() -> nn.Module:
    return build_model("mlp", num_classes=3, input_shape=(12,), hidden=(7,), seed=0)


def _x(n: int = 6, width: int = 12, bad: float | None = None) -> torch.Tensor:
    x = torch.randn(n, width, generator=torch.Generator().manual_seed(0))
    if bad is not None:
        x[2, 3] = bad
    return x


def _y(n: int = 6, bad: int | None = None) -> torch.Tensor:
    y = torch.arange(n) % 3
    if bad is not None:
        y[1] = bad
    return y


def _scores(bad: float | None = None) -> dict[str, torch.Tensor]:
    s = {"a": torch.rand(10, generator=torch.Generator().manual_seed(0)) + 1, "b": torch.rand(5)}
    if bad is not None:
        s["b"][2] = bad
    return s


def _dense() -> RunConfig:
    return RunConfig("dense", DataConfig("digits", train_size=200), ModelConfig("lenet300-100"), TrainConfig(epochs=3))


def _sparse(**kw) -> RunConfig:
    d = _dense()
    return RunConfig("scratch", d.data, d.model, d.train, parent=d, **{"sparsity": 0.5, **kw})


def _small(kind: str = "dense", *, data: DataConfig | None = None, train: TrainConfig | None = None,
           **kw) -> RunConfig:
    """A run of an 8-unit MLP (2 layers, 592 prunable weights on digits): a sparse kind gets a dense parent."""
    data, model = data or DataConfig("digits", train_size=200), ModelConfig("mlp", hidden=(8,))
    train = train or TrainConfig(epochs=1)
    if kind in ("dense", "gradual"):
        return RunConfig(kind, data, model, train, **kw)
    return RunConfig(kind, data, model, train, parent=RunConfig("dense", data, model, train), **kw)


def _check_runnable(cfg: RunConfig):
    from sparsegap.runs import check_runnable
    return check_runnable(cfg)


def _linear_path(**kw):
    from sparsegap.landscape import linear_path
    return linear_path(_mlp(), _mlp(), None, subsets=[("toy", (_x(), _y()))], **kw)


def _notebook_parameter(param, name: str, value):
    return param.normalise(name, value)


def _memorized_history() -> dict:
    return {"test_acc": [0.5], "trace": {"accuracy:permuted": {"epoch": [0, 0], "step": [0, 5], "epochs": [0.0, 1.0],
                                                              "value": [0.1, 0.2]}}}


def _empty_layer_masks() -> tuple[nn.Module, dict]:
    net = _mlp()
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters() if n.endswith("weight")}
    masks["fc2.weight"][:] = False
    return net, masks


def _hessian(**kw):
    args = {"x": _x(), "y": _y(), "max_probes": 3, "min_probes": 2, **kw}
    return hessian_trace(_mlp(), args.pop("x"), args.pop("y"), **args)


# ----------------------------------------------------------------------------- the table

CASES = [
    # TrainConfig: every real-valued field, NaN and ±inf included
    Case("train.weight_decay=inf", "weight_decay", lambda: TrainConfig(weight_decay=INF)),
    Case("train.weight_decay=nan", "weight_decay", lambda: TrainConfig(weight_decay=NAN)),
    Case("train.weight_decay=-1", "weight_decay", lambda: TrainConfig(weight_decay=-1.0)),
    Case("train.lr=inf", "lr", lambda: TrainConfig(lr=INF)),
    Case("train.lr=nan", "lr", lambda: TrainConfig(lr=NAN)),
    Case("train.lr=0", "lr", lambda: TrainConfig(lr=0)),
    Case("train.lr=str", "lr", lambda: TrainConfig(lr="0.1")),
    Case("train.momentum=nan", "momentum", lambda: TrainConfig(momentum=NAN)),
    Case("train.momentum=-inf", "momentum", lambda: TrainConfig(momentum=-INF)),
    Case("train.momentum=1", "momentum", lambda: TrainConfig(momentum=1.0)),
    Case("train.gamma=inf", "gamma", lambda: TrainConfig(gamma=INF)),
    Case("train.gamma=nan", "gamma", lambda: TrainConfig(gamma=NAN)),
    Case("train.gamma=-0.1", "gamma", lambda: TrainConfig(gamma=-0.1)),
    Case("train.milestones=nan", "milestones", lambda: TrainConfig(milestones=(0.5, NAN))),
    Case("train.milestones=inf", "milestones", lambda: TrainConfig(milestones=(INF,))),
    Case("train.milestones=decreasing", "milestones", lambda: TrainConfig(milestones=(0.75, 0.5))),
    Case("train.milestones=str", "milestones", lambda: TrainConfig(milestones="0.5")),
    Case("train.epochs=0", "epochs", lambda: TrainConfig(epochs=0)),
    Case("train.epochs=inf", "epochs", lambda: TrainConfig(epochs=INF)),
    Case("train.batch_size=0", "batch_size", lambda: TrainConfig(batch_size=0)),
    Case("train.batch_size=True", "batch_size", lambda: TrainConfig(batch_size=True)),
    Case("train.schedule=step", "schedule", lambda: TrainConfig(schedule="step")),
    # DataConfig
    Case("data.name=imagenet", "name", lambda: DataConfig("imagenet")),
    Case("data.train_size=5<classes", "train_size", lambda: DataConfig("digits", train_size=5)),
    Case("data.test_size=3<classes", "test_size", lambda: DataConfig("digits", test_size=3)),
    Case("data.train_size=0", "train_size", lambda: DataConfig("digits", train_size=0)),
    Case("data.train_size=inf", "train_size", lambda: DataConfig("digits", train_size=INF)),
    Case("data.subset_seed=1.5", "subset_seed", lambda: DataConfig("digits", subset_seed=1.5)),
    Case("data.subset_seed=2**64", "subset_seed", lambda: DataConfig("digits", subset_seed=2**64)),
    Case("data.noise=1", "noise", lambda: DataConfig("digits", noise=1.0)),
    Case("data.noise=-0.1", "noise", lambda: DataConfig("digits", noise=-0.1)),
    Case("data.noise=nan", "noise", lambda: DataConfig("digits", noise=NAN)),
    Case("data.noise=inf", "noise", lambda: DataConfig("digits", noise=INF)),
    Case("data.noise=True", "noise", lambda: DataConfig("digits", noise=True)),
    Case("data.noise=str", "noise", lambda: DataConfig("digits", noise="0.3")),
    Case("data.noise_seed=2**32", "noise_seed", lambda: DataConfig("digits", noise=0.3, noise_seed=2**32)),
    Case("data.noise_seed=-1", "noise_seed", lambda: DataConfig("digits", noise=0.3, noise_seed=-1)),
    # ModelConfig
    Case("model.name=vgg16", "name", lambda: ModelConfig("vgg16")),
    Case("model.width=0", "width", lambda: ModelConfig(width=0)),
    Case("model.width=2 on lenet5", "width", lambda: ModelConfig("lenet5", width=2)),
    Case("model.hidden=(16,0)", "hidden", lambda: ModelConfig("mlp", hidden=(16, 0))),
    Case("model.hidden=nan", "hidden", lambda: ModelConfig("mlp", hidden=(16, NAN))),
    Case("model.mlp without hidden", "hidden", lambda: ModelConfig("mlp")),
    Case("model.hidden on lenet", "hidden", lambda: ModelConfig("lenet300-100", hidden=(16,))),
    Case("model.init=xavier", "init", lambda: ModelConfig(init="xavier")),
    # RunConfig
    Case("run.sparsity=inf", "sparsity", lambda: _sparse(sparsity=INF)),
    Case("run.sparsity=nan", "sparsity", lambda: _sparse(sparsity=NAN)),
    Case("run.sparsity=1", "sparsity", lambda: _sparse(sparsity=1.0)),
    Case("run.min_density=inf", "min_density", lambda: _sparse(min_density=INF)),
    Case("run.min_density=nan", "min_density", lambda: _sparse(min_density=NAN)),
    Case("run.min_density=1.5", "min_density", lambda: _sparse(min_density=1.5)),
    Case("run.seed=1.5", "seed", lambda: _sparse(seed=1.5)),
    Case("run.seed=2**64", "seed", lambda: _sparse(seed=2**64)),
    Case("run.kind=ticket", "kind", lambda: RunConfig("ticket")),
    Case("run.exclude_output=yes", "exclude_output", lambda: _sparse(exclude_output="yes")),
    Case("run.track=str", "track", lambda: _sparse(track="fisher_trace@5")),
    Case("run.data=str", "data", lambda: RunConfig("dense", data="digits")),
    Case("run.track unknown subset", "track", lambda: _sparse(track=("accuracy:memorized@1",))),
    Case("run.track unknown metric", "track", lambda: _sparse(track=("acc:permuted@1",))),
    Case("run.track bad every", "track", lambda: _sparse(track=("accuracy:permuted@0",))),
    # pruning
    Case("masks: 0 of 10 weights kept", "sparsity", lambda: global_masks_from_scores({"a": torch.rand(10)}, 0.999)),
    Case("masks: a layer emptied", "sparsity", lambda: global_masks_from_scores(_scores(), 0.9)),
    Case("masks: fresh lenet300-100 at 0.995", "sparsity", lambda: global_magnitude_masks(
        build_model("lenet300-100", num_classes=10, input_shape=(1, 28, 28), seed=0), 0.995)),
    Case("masks: nan score", "scores", lambda: global_masks_from_scores(_scores(NAN), 0.5)),
    Case("masks: inf score", "scores", lambda: global_masks_from_scores(_scores(INF), 0.5)),
    Case("masks: -inf score", "scores", lambda: global_masks_from_scores(_scores(-INF), 0.5)),
    Case("masks: scores a list", "scores", lambda: global_masks_from_scores([torch.rand(3)], 0.5)),
    Case("masks: scores empty", "scores", lambda: global_masks_from_scores({}, 0.5)),
    Case("masks: sparsity str", "sparsity", lambda: global_masks_from_scores(_scores(), "0.9")),
    Case("masks: min_density=nan", "min_density", lambda: global_masks_from_scores(_scores(), 0.5, min_density=NAN)),
    Case("masks: min_density=2", "min_density", lambda: global_masks_from_scores(_scores(), 0.5, min_density=2)),
    Case("masks: floor over budget", "min_density",
         lambda: global_masks_from_scores(_scores(), 0.9, min_density=0.5)),
    Case("check_masks: empty layer", "masks", lambda: check_masks(*_empty_layer_masks())),
    Case("check_masks: float mask", "masks", lambda: check_masks(_mlp(), {"fc1.weight": torch.ones(7, 12)})),
    Case("check_masks: a list", "masks", lambda: check_masks(_mlp(), [torch.ones(7, 12, dtype=torch.bool)])),
    # pruning, issue 25: a float or broadcast mask scaled or zeroed weights; a truthy string spared the output layer
    Case("apply_masks: float mask", "masks", lambda: apply_masks(_mlp(), {"fc1.weight": torch.full((7, 12), 0.5)})),
    Case("apply_masks: broadcastable shape", "masks",
         lambda: apply_masks(_mlp(), {"fc1.weight": torch.ones(12, dtype=torch.bool)})),
    Case("apply_masks: unbroadcastable shape", "masks",
         lambda: apply_masks(_mlp(), {"fc1.weight": torch.ones(5, 5, dtype=torch.bool)})),
    Case("apply_masks: unknown name", "masks", lambda: apply_masks(_mlp(), {"fc9.weight": torch.ones(7, 12) > 0})),
    Case("magnitude_scores: exclude_output='no'", "exclude_output",
         lambda: magnitude_scores(_mlp(), exclude_output="no")),
    Case("random_scores: exclude_output='no'", "exclude_output", lambda: random_scores(_mlp(), 0, exclude_output="no")),
    Case("gradient_scores: exclude_output='no'", "exclude_output",
         lambda: gradient_scores(_mlp(), _x(), _y(), exclude_output="no")),
    Case("global_magnitude_masks: exclude_output=1", "exclude_output",
         lambda: global_magnitude_masks(_mlp(), 0.5, exclude_output=1)),
    Case("random_scores: seed=1.7", "seed", lambda: random_scores(_mlp(), 1.7)),
    Case("random_scores: seed='a'", "seed", lambda: random_scores(_mlp(), "a")),
    Case("gradient_scores: y shorter than x", "y", lambda: gradient_scores(_mlp(), _x(), _y(5))),
    Case("gradient_scores: y >= classes", "y", lambda: gradient_scores(_mlp(), _x(), _y(bad=3))),
    Case("gradient_scores: float y", "y", lambda: gradient_scores(_mlp(), _x(), _y().float())),
    # runs, issue 25: what training refuses is refused before anything trains (and before a plan is shown)
    Case("runnable: scratch at 0.9999 keeps 0 weights", "sparsity",
         lambda: _check_runnable(_small("scratch", sparsity=0.9999))),
    Case("runnable: finetune keeps 1 weight, 2 layers", "sparsity",
         lambda: _check_runnable(_small("finetune", sparsity=0.999))),
    Case("runnable: gradual at 0.9999", "sparsity",
         lambda: _check_runnable(_small("gradual", sparsity=0.9999, update_every=1, update_end=0.5))),
    Case("runnable: min_density floor over budget", "min_density",
         lambda: _check_runnable(_small("scratch", sparsity=0.9, min_density=0.5))),
    Case("runnable: crop-flip on 1-D data", "augment", lambda: _check_runnable(
        _small(data=DataConfig("tishby", train_size=200), train=TrainConfig(epochs=1, augment="crop-flip")))),
    Case("runnable: channels_last on 1-D data", "channels_last", lambda: _check_runnable(
        _small(data=DataConfig("mnist1d", train_size=200), train=TrainConfig(epochs=1, channels_last=True)))),
    Case("runnable: train_size=10**7", "train_size",
         lambda: _check_runnable(_small(data=DataConfig("digits", train_size=10**7)))),
    Case("runnable: test_size=10**6", "test_size",
         lambda: _check_runnable(_small(data=DataConfig("digits", test_size=10**6)))),
    Case("runnable: validation > training set", "validation",
         lambda: _check_runnable(_small(data=DataConfig("digits", validation=1430)))),
    # estimators
    Case("fisher: nan x", "x", lambda: fisher_trace(_mlp(), _x(bad=NAN))),
    Case("fisher: inf x", "x", lambda: fisher_trace(_mlp(), _x(bad=INF))),
    Case("fisher: int64 x", "x", lambda: fisher_trace(_mlp(), _x().long())),
    Case("fisher: y >= classes", "y", lambda: fisher_trace(_mlp(), _x(), _y(bad=3), labels="empirical")),
    Case("fisher: y < 0", "y", lambda: fisher_trace(_mlp(), _x(), _y(bad=-1), labels="empirical")),
    Case("fisher: float y", "y", lambda: fisher_trace(_mlp(), _x(), _y().float(), labels="empirical")),
    Case("fisher: x too narrow", "x", lambda: fisher_trace(_mlp(), _x(width=10))),
    Case("fisher: x images", "x", lambda: fisher_trace(_mlp(), torch.randn(6, 1, 28, 28))),
    Case("fisher: labels=true", "labels", lambda: fisher_trace(_mlp(), _x(), labels="true")),
    Case("fisher: chunk_size=0", "chunk_size", lambda: fisher_trace(_mlp(), _x(), chunk_size=0)),
    Case("fisher: empty x", "x", lambda: fisher_trace(_mlp(), _x()[:0])),
    Case("hessian: nan x", "x", lambda: _hessian(x=_x(bad=NAN))),
    Case("hessian: int64 x", "x", lambda: _hessian(x=_x().long())),
    Case("hessian: y >= classes", "y", lambda: _hessian(y=_y(bad=5))),
    Case("hessian: y < 0", "y", lambda: _hessian(y=_y(bad=-2))),
    Case("hessian: x too wide", "x", lambda: _hessian(x=_x(width=13))),
    Case("hessian: target_rse=nan", "target_rse", lambda: _hessian(target_rse=NAN)),
    Case("hessian: target_rse=str", "target_rse", lambda: _hessian(target_rse="0.02")),
    Case("hessian: max_probes=0", "max_probes", lambda: _hessian(max_probes=0)),
    Case("hessian: batch_size=0", "batch_size", lambda: _hessian(batch_size=0)),
    Case("jacobian: nan x", "x", lambda: jacobian_norm(_mlp(), _x(bad=NAN))),
    Case("jacobian: -inf x", "x", lambda: jacobian_norm(_mlp(), _x(bad=-INF))),
    Case("jacobian: int64 x", "x", lambda: jacobian_norm(_mlp(), _x().long())),
    Case("jacobian: x too narrow", "x", lambda: jacobian_norm(_mlp(), _x(width=11))),
    Case("persample: nan x", "x", lambda: per_sample_grad_norms_sq(_mlp(), _x(bad=NAN), _y())),
    Case("persample: int64 x", "x", lambda: per_sample_grad_norms_sq(_mlp(), _x().long(), _y())),
    Case("persample: y >= classes", "y", lambda: per_sample_grad_norms_sq(_mlp(), _x(), _y(bad=3))),
    Case("persample: x too narrow", "x", lambda: per_sample_grad_norms_sq(_mlp(), _x(width=4), _y())),
    Case("persample: nan mask", "masks", lambda: per_sample_grad_norms_sq(
        _mlp(), _x(), _y(), masks={"fc1.weight": torch.full((7, 12), NAN)})),
    Case("fisher: model=None", "model", lambda: fisher_trace(None, _x())),
    Case("hessian: model=None", "model", lambda: hessian_trace(None, _x(), _y())),
    Case("linear_path: device=gpu", "device", lambda: _linear_path(device="gpu")),
    Case("linear_path: device=cuda:99", "device", lambda: _linear_path(device="cuda:99")),
    Case("linear_path: device=0.5", "device", lambda: _linear_path(device=0.5)),
    Case("callback: nan x", "x", lambda: FisherTraceCallback(_x(bad=NAN))),
    Case("callback: chunk_size=0", "chunk_size", lambda: FisherTraceCallback(_x(), chunk_size=0)),
    Case("callback: every=0", "every", lambda: FisherTraceCallback(_x(), every=0)),
    Case("callback: seed=0.5", "seed", lambda: FisherTraceCallback(_x(), seed=0.5)),
    # basic metrics
    Case("evaluate: nan x", "x", lambda: evaluate(_mlp(), _x(bad=NAN), _y())),
    Case("evaluate: y >= classes", "y", lambda: evaluate(_mlp(), _x(), _y(bad=3))),
    Case("predict_logits: batch_size=0", "batch_size", lambda: predict_logits(_mlp(), _x(), batch_size=0)),
    Case("disagreement: shapes", "logits_a", lambda: disagreement(torch.randn(6, 3), torch.randn(1, 3))),
    Case("prediction_entropy: 1-D", "logits", lambda: prediction_entropy(torch.randn(6))),
    # data
    Case("load: train_size=5<classes", "train_size", lambda: load_dataset("digits", train_size=5)),
    Case("load: test_size=5<classes", "test_size", lambda: load_dataset("digits", test_size=5)),
    Case("load: train_size=0", "train_size", lambda: load_dataset("digits", train_size=0)),
    Case("load: train_size=2.5", "train_size", lambda: load_dataset("digits", train_size=2.5)),
    Case("load: seed=1.5", "seed", lambda: load_dataset("digits", seed=1.5)),
    Case("load: seed=2**64", "seed", lambda: load_dataset("digits", seed=2**64)),
    Case("load: root=5", "root", lambda: load_dataset("digits", root=5)),
    Case("load: download='no'", "download", lambda: load_dataset("digits", download="no")),
    Case("load: name=imagenet", "name", lambda: load_dataset("imagenet")),
    Case("tishby: mutual_information=nan", "mutual_information", lambda: make_tishby(mutual_information=NAN)),
    Case("tishby: mutual_information=str", "mutual_information", lambda: make_tishby(mutual_information="0.9")),
    Case("tishby: label_noise='no'", "label_noise", lambda: make_tishby(label_noise="no")),
    Case("subset: idx out of range", "idx", lambda: load_dataset("tishby").subset(torch.tensor([0, 10**6]))),
    Case("load: noise=1", "noise", lambda: load_dataset("digits", noise=1.0)),
    Case("load: noise=nan", "noise", lambda: load_dataset("digits", noise=NAN)),
    Case("load: noise=True", "noise", lambda: load_dataset("digits", noise=True)),
    Case("load: noise_seed=-1", "noise_seed", lambda: load_dataset("digits", noise=0.2, noise_seed=-1)),
    Case("load: noise_seed=0.5", "noise_seed", lambda: load_dataset("digits", noise=0.2, noise_seed=0.5)),
    Case("split: unknown name", "name", lambda: load_dataset("digits").split("memorized")),
    Case("split: permuted without noise", "subset", lambda: load_dataset("digits").split("permuted")),
    Case("trackers: restored without noise", "subset", lambda: make_trackers(["fisher_trace:restored@1"],
                                                                             load_dataset("digits"))),
    # memorization statistics
    Case("memorized_share: no trace", "history", lambda: memorized_share({"test_acc": [0.5], "trace": {}})),
    Case("memorized_share: at=best", "at", lambda: memorized_share(_memorized_history(), at="best")),
    Case("first_epoch_reaching: threshold=nan", "threshold",
         lambda: first_epoch_reaching(_memorized_history(), "accuracy:permuted", NAN)),
    Case("noisy_confusion: wrong length", "predictions",
         lambda: noisy_confusion(load_dataset("digits", train_size=100, noise=0.2), [0, 1, 2])),
    Case("noisy_confusion: class 10", "predictions",
         lambda: noisy_confusion(load_dataset("digits", train_size=100, noise=0.2), [10] * 20)),
    # notebook parameters (papermill -p passes strings, ints and floats)
    Case("notebook: runs_dir=''", "runs_dir", lambda: _notebook_parameter(params.runs_dir(), "runs_dir", "")),
    Case("notebook: dataset=' '", "dataset", lambda: _notebook_parameter(params.Param("str"), "dataset", " ")),
    Case("notebook: plan_only='yes'", "plan_only", lambda: _notebook_parameter(params.plan_only(), "plan_only", "yes")),
    Case("notebook: plan_only=2", "plan_only", lambda: _notebook_parameter(params.plan_only(), "plan_only", 2)),
    Case("notebook: plan_only=1.0", "plan_only", lambda: _notebook_parameter(params.plan_only(), "plan_only", 1.0)),
    # models
    Case("build: num_classes=0", "num_classes", lambda: build_model("mlp", num_classes=0, input_shape=(12,),
                                                                      hidden=(4,))),
    Case("build: width=2 on lenet5", "width", lambda: build_model("lenet5", num_classes=10,
                                                                   input_shape=(1, 28, 28), width=2)),
    Case("build: seed=2**64", "seed", lambda: build_model("mlp", num_classes=2, input_shape=(12,), hidden=(4,),
                                                           seed=2**64)),
    Case("build: seed=1.0", "seed", lambda: build_model("mlp", num_classes=2, input_shape=(12,), hidden=(4,),
                                                         seed=1.0)),
    Case("build: mlp without hidden", "hidden", lambda: build_model("mlp", num_classes=2, input_shape=(12,))),
    Case("build: input_shape=(0,)", "input_shape", lambda: build_model("mlp", num_classes=2, input_shape=(0,),
                                                                        hidden=(4,))),
    Case("build: name=vgg16", "name", lambda: build_model("vgg16", num_classes=2, input_shape=(12,))),
    Case("build: init=xavier", "init", lambda: build_model("mlp", num_classes=2, input_shape=(12,), hidden=(4,),
                                                            init="xavier")),
]


def outcome(case: Case) -> tuple[str, str]:
    """(clear | unclear | silent | accepted, what happened)."""
    try:
        result = case.call()
    except (ValueError, TypeError) as err:
        named = re.search(rf"(?<!\w){re.escape(case.param)}(?!\w)", str(err))  # as a word: "x", not "6x10"
        return ("clear" if named else "unclear"), f"{type(err).__name__}: {err}"
    except Exception as err:  # noqa: BLE001 - any other exception is, by definition, unclear
        return "unclear", f"{type(err).__name__}: {err}"
    from sparsegap.config import _Canonical
    # A config, a callback or a validator's None is accepted now and fails (or misleads) later;
    # anything else is a result computed from bad input.
    kind = "accepted" if result is None or isinstance(result, (_Canonical, FisherTraceCallback)) else "silent"
    return kind, f"returned {' '.join(str(result).split())[:120]}"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_clear_error_naming_the_argument(case):
    kind, what = outcome(case)
    assert kind == "clear", f"{case.id}: expected a ValueError/TypeError naming {case.param!r}; {kind}: {what}"


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)


if __name__ == "__main__":
    import collections
    import sys
    import warnings

    warnings.simplefilter("ignore")
    counts: collections.Counter = collections.Counter()
    for c in CASES:
        kind, what = outcome(c)
        counts[kind] += 1
        if kind != "clear" or "-v" in sys.argv:
            print(f"{kind:9} {c.id:38} {what[:150]}")
    print(f"{len(CASES)} cases: " + " / ".join(f"{counts[k]} {k}" for k in ("clear", "unclear", "silent", "accepted")))
