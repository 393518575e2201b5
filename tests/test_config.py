import json

import pytest

from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig


def dense(**kw):
    return RunConfig("dense", DataConfig("digits", train_size=200), ModelConfig("lenet300-100"),
                     TrainConfig(epochs=3), **kw)


def test_hash_is_stable_across_processes_and_versions():
    # The hash is a pure function of the canonical JSON, so it is pinned here: if this ever changes,
    # every stored run would silently be retrained. Change it only on purpose.
    cfg = dense(seed=1)
    assert cfg.to_dict() == {"kind": "dense", "data": {"name": "digits", "train_size": 200},
                             "model": {}, "train": {"epochs": 3}, "seed": 1}
    assert cfg.hash() == dense(seed=1).hash()
    assert len(cfg.hash()) == 16
    assert cfg.hash() != dense(seed=2).hash()


def test_hash_ignores_defaults_so_new_fields_keep_old_hashes():
    a = RunConfig("dense", DataConfig("digits"), ModelConfig(), TrainConfig())
    b = RunConfig("dense", DataConfig("digits", subset_seed=0), ModelConfig(width=1), TrainConfig(gamma=0.1))
    assert a.hash() == b.hash()


def test_names_are_canonicalised_before_hashing():
    assert DataConfig("Fashion_MNIST").name == "fashion-mnist"
    assert DataConfig("Fashion_MNIST").hash() == DataConfig("fashion-mnist").hash()


def test_round_trip_through_json():
    d = dense(seed=3)
    s = RunConfig("scratch", d.data, d.model, d.train, seed=3, sparsity=0.9, parent=d)
    back = RunConfig.from_dict(json.loads(json.dumps(s.full_dict())))
    assert back == s and back.hash() == s.hash()


def test_sparse_runs_hash_their_parent():
    d1, d2 = dense(seed=0), dense(seed=1)
    s1 = RunConfig("finetune", d1.data, d1.model, d1.train, sparsity=0.9, parent=d1)
    s2 = RunConfig("finetune", d2.data, d2.model, d2.train, sparsity=0.9, parent=d2)
    assert s1.hash() != s2.hash()
    assert s1.run_id.startswith("finetune-")


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"epochs": 0}, ValueError, "TrainConfig.epochs"),
    ({"epochs": "10"}, TypeError, "TrainConfig.epochs"),
    ({"lr": -1.0}, ValueError, "TrainConfig.lr"),
    ({"momentum": 1.0}, ValueError, "TrainConfig.momentum"),
    ({"schedule": "step"}, ValueError, "multistep"),
    ({"milestones": (0.5, 1.5)}, ValueError, "milestones"),
    ({"milestones": (0.75, 0.5)}, ValueError, "increasing"),
    ({"batch_size": 12.5}, TypeError, "batch_size"),
])
def test_bad_train_config(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        TrainConfig(**kwargs)


def test_bad_names_and_sparsity():
    with pytest.raises(ValueError, match="DataConfig.name must be one of"):
        DataConfig("imagenet")
    with pytest.raises(ValueError, match="ModelConfig.name must be one of"):
        ModelConfig("vgg16")
    d = dense()
    with pytest.raises(ValueError, match=r"RunConfig.sparsity must be in \[0, 1\)"):
        RunConfig("scratch", d.data, d.model, d.train, sparsity=1.0, parent=d)
    with pytest.raises(ValueError, match="needs parent"):
        RunConfig("scratch", d.data, d.model, d.train, sparsity=0.5)
    with pytest.raises(ValueError, match="RunConfig.kind"):
        RunConfig("ticket", d.data, d.model, d.train)
    with pytest.raises(ValueError, match="DataConfig.train_size"):
        DataConfig("digits", train_size=-5)


def test_milestones_are_fractions_of_epochs():
    assert TrainConfig(epochs=250, milestones=(0.4, 0.6, 0.8)).milestone_epochs() == [100, 150, 200]


# Every real-valued field rejects NaN and ±inf with a message naming the field, the value and the range.
INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("cls, field, value, interval", [
    (TrainConfig, "weight_decay", INF, r"\[0, inf\)"),
    (TrainConfig, "weight_decay", NAN, r"\[0, inf\)"),
    (TrainConfig, "lr", INF, r"\(0, inf\)"),
    (TrainConfig, "lr", NAN, r"\(0, inf\)"),
    (TrainConfig, "momentum", NAN, r"\[0, 1\)"),
    (TrainConfig, "momentum", -INF, r"\[0, 1\)"),
    (TrainConfig, "gamma", INF, r"\[0, 1\]"),
    (TrainConfig, "gamma", NAN, r"\[0, 1\]"),
    (TrainConfig, "milestones", (0.5, NAN), r"\(0, 1\)"),
    (TrainConfig, "milestones", (INF,), r"\(0, 1\)"),
])
def test_non_finite_train_fields_are_rejected(cls, field, value, interval):
    shown = repr(value[-1] if isinstance(value, tuple) else value)
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field}.*finite number in {interval}, got {shown}"):
        cls(**{field: value})


@pytest.mark.parametrize("field, value", [("sparsity", INF), ("sparsity", NAN), ("min_density", INF),
                                          ("min_density", NAN), ("min_density", -INF)])
def test_non_finite_run_fields_are_rejected(field, value):
    d = dense()
    with pytest.raises(ValueError, match=rf"RunConfig\.{field} must .*got {value!r}"):
        RunConfig("scratch", d.data, d.model, d.train, parent=d, **{"sparsity": 0.5, field: value})


def test_integer_fields_reject_non_finite_floats():
    for cls, field in ((DataConfig, "train_size"), (DataConfig, "subset_seed"),
                       (TrainConfig, "epochs"), (TrainConfig, "batch_size")):
        with pytest.raises(TypeError, match=rf"{cls.__name__}\.{field}"):
            cls(**{field: INF})
    with pytest.raises(TypeError, match=r"ModelConfig\.hidden\[1\]"):
        ModelConfig("mlp", hidden=(16, NAN))
    with pytest.raises(TypeError, match=r"RunConfig\.seed"):
        dense(seed=NAN)


def test_seeds_stay_in_the_range_every_rng_takes():
    with pytest.raises(ValueError, match=r"RunConfig\.seed must be an int in \[0, 2\*\*32\), got 18446744073709551616"):
        dense(seed=2**64)
    with pytest.raises(ValueError, match=r"DataConfig\.subset_seed"):
        DataConfig("digits", subset_seed=-1)


@pytest.mark.parametrize("size", [1, 5, 9])
def test_a_class_balanced_subset_needs_one_sample_per_class(size):
    for field in ("train_size", "test_size"):
        with pytest.raises(ValueError, match=rf"DataConfig\.{field} must be at least the 10 classes.*got {size}"):
            DataConfig("digits", **{field: size})
    assert DataConfig("tishby", train_size=2).train_size == 2  # two classes


def test_model_fields_that_build_model_would_reject_fail_at_config_time():
    with pytest.raises(ValueError, match=r"ModelConfig\.width must be 1 for lenet5.*got 2"):
        ModelConfig("lenet5", width=2)
    with pytest.raises(ValueError, match=r"ModelConfig\.hidden.*got hidden=None for mlp"):
        ModelConfig("mlp")
    with pytest.raises(ValueError, match=r"ModelConfig\.hidden.*got hidden=\(16,\) for lenet300-100"):
        ModelConfig(hidden=(16,))
    assert ModelConfig("resnet32", width=4).width == 4
    for width in (INF, NAN, 0, -1):
        with pytest.raises(ValueError, match=rf"ModelConfig\.width must be a finite number in \(0, inf\), got {width!r}"):
            ModelConfig("resnet32", width=width)
    with pytest.raises(ValueError, match=r"ModelConfig\.width must make the first stage's channels \(64 x width\) a "
                                         r"whole number >= 1 for resnet18, got 0.1"):
        ModelConfig("resnet18", width=0.1)


def test_a_whole_width_is_one_config_and_a_fraction_another():
    assert ModelConfig("resnet32", width=4.0) == ModelConfig("resnet32", width=4)
    assert isinstance(ModelConfig("resnet32", width=4.0).width, int)
    assert ModelConfig("resnet32", width=4.0).hash() == ModelConfig("resnet32", width=4).hash()
    assert ModelConfig("resnet18", width=1.0).hash() == ModelConfig("resnet18").hash()
    quarter = ModelConfig("resnet18", width=0.25)
    assert quarter.hash() != ModelConfig("resnet18").hash() and quarter.width == 0.25
    assert ModelConfig.from_dict(quarter.to_dict()) == quarter


def test_the_scale_a_verdict_states_names_the_width():
    from sparsegap.studies.procedure import describe_scale
    assert [ModelConfig(n, width=w).label for n, w in (("resnet32", 4.0), ("resnet18", 0.25), ("lenet5", 1))] == \
        ["resnet32 x4", "resnet18 x0.25", "lenet5"]
    assert describe_scale(DataConfig("cifar100"), ModelConfig("resnet32", width=4), [0, 1], 250).startswith(
        "resnet32 x4 on cifar100 (the full training set), 2 seeds")


def test_valid_values_keep_their_hashes():
    # The checks only reject: every value accepted before still gives the same canonical dict.
    t = TrainConfig(epochs=250, lr=0.1, momentum=0.9, weight_decay=2e-4, milestones=(0.4, 0.6, 0.8), gamma=0.1)
    assert t.to_dict() == {"epochs": 250, "weight_decay": 2e-4, "milestones": [0.4, 0.6, 0.8]}
    assert TrainConfig(momentum=0, weight_decay=0, gamma=0).to_dict() == {"momentum": 0, "weight_decay": 0,
                                                                          "gamma": 0}
