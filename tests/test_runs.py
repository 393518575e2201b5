import json
import os
from pathlib import Path

import pytest
import torch

from _damage import interrupted_after_epoch
from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.pruning import sparsity_of
from sparsegap.runs import RunStore, get_or_train, run_all


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def dense_cfg(epochs=3, seed=0):
    return RunConfig("dense", DataConfig("digits", train_size=300), ModelConfig("mlp", hidden=(32,)),
                     TrainConfig(epochs=epochs, batch_size=32, lr=0.05), seed=seed)


def sparse_cfg(kind, parent, s=0.8):
    return RunConfig(kind, parent.data, parent.model, parent.train, seed=parent.seed, sparsity=s, parent=parent)


def test_a_run_is_trained_once_and_then_loaded(store):
    cfg = dense_cfg()
    run = get_or_train(cfg, store, progress=False)
    files = {p.name for p in run.path.iterdir()}
    assert {"config.json", "init.pt", "weights.pt", "history.json", "DONE"} <= files
    assert "checkpoint.pt" not in files
    assert run.path.name == f"dense-{cfg.hash()}"
    mtime = (run.path / "weights.pt").stat().st_mtime_ns
    again = get_or_train(cfg, store, progress=False)
    assert (run.path / "weights.pt").stat().st_mtime_ns == mtime
    assert again.history == run.history
    assert json.loads((run.path / "config.json").read_text())["train"]["epochs"] == 3


def test_finetune_starts_from_masked_sol_d_and_scratch_from_a_fresh_init(store):
    d = dense_cfg()
    sol_d = get_or_train(d, store, progress=False)
    f = get_or_train(sparse_cfg("finetune", d), store, progress=False)
    s = get_or_train(sparse_cfg("scratch", d), store, progress=False)
    assert abs(sparsity_of(f.masks) - 0.8) < 1e-3
    assert all(torch.equal(f.masks[k], s.masks[k]) for k in f.masks)  # same mask
    for name, m in f.masks.items():
        assert torch.equal(f.init[name], sol_d.weights[name] * m)     # Init-F = Sol-D under the mask
        assert not torch.equal(s.init[name], f.init[name])             # Init-S is fresh
        assert not torch.equal(s.init[name], sol_d.init[name] * m)     # ... and not Init-D (no lottery)
        assert torch.count_nonzero(s.weights[name][~m]) == 0
        assert torch.count_nonzero(f.weights[name][~m]) == 0
    assert len(list(store.root.glob("dense-*"))) == 1


def test_interrupted_run_resumes_to_the_same_result(store, tmp_path, monkeypatch):
    cfg = dense_cfg(epochs=4)
    reference = get_or_train(cfg, RunStore(tmp_path / "reference"), progress=False)

    interrupted_after_epoch(cfg, store, 2, monkeypatch)
    path = store.path(cfg)
    assert not (path / "DONE").exists() and (path / "checkpoint.pt").exists()
    assert not list(path.glob("*.tmp"))  # nothing half-written left behind

    resumed = get_or_train(cfg, store, progress=False)
    assert json.loads((path / "meta.json").read_text())["resumed_at_epoch"] == 2
    assert resumed.history["train_loss"] == reference.history["train_loss"]
    assert all(torch.equal(resumed.weights[k], reference.weights[k]) for k in reference.weights)


@pytest.mark.parametrize("damage", ["truncate_weights", "delete_history", "garbage_config", "bad_checkpoint"])
def test_a_damaged_run_is_retrained_with_a_warning(store, damage):
    cfg = dense_cfg()
    run = get_or_train(cfg, store, progress=False)
    path = run.path
    if damage == "truncate_weights":
        (path / "weights.pt").write_bytes((path / "weights.pt").read_bytes()[:100])
    elif damage == "delete_history":
        (path / "history.json").unlink()
    elif damage == "garbage_config":
        (path / "config.json").write_text("{not json")
    else:
        (path / "DONE").unlink()
        (path / "checkpoint.pt").write_bytes(b"\x00garbage")
    with pytest.warns(UserWarning, match="damaged|unreadable"):
        again = get_or_train(cfg, store, progress=False)
    assert again.history["train_loss"] == run.history["train_loss"]
    assert (path / "DONE").exists()


def test_run_all_trains_each_parent_once(store):
    d0, d1 = dense_cfg(seed=0, epochs=2), dense_cfg(seed=1, epochs=2)
    cfgs = [sparse_cfg(k, d, s) for d in (d0, d1) for k in ("finetune", "scratch") for s in (0.5, 0.9)]
    runs = run_all(cfgs, store, progress=False)
    assert [r.config for r in runs] == cfgs
    assert len(list(store.root.glob("dense-*/DONE"))) == 2
    assert len(store.runs()) == 10


def test_get_or_train_rejects_wrong_types(store):
    with pytest.raises(TypeError, match="RunConfig"):
        get_or_train({"kind": "dense"}, store)


def test_measurements_are_cached_beside_the_run(store):
    run = get_or_train(dense_cfg(epochs=1), store, progress=False)
    calls = []

    def measure():
        calls.append(1)
        return {"value": 3.5}

    assert run.measure("thing", {"n": 10}, measure) == {"value": 3.5}
    assert run.measure("thing", {"n": 10}, measure) == {"value": 3.5}
    assert len(calls) == 1
    kept = json.loads(next((run.path / "measurements").glob("thing-*.json")).read_text())
    assert kept["value"] == {"value": 3.5} and kept["params"] == {"n": 10}
    assert kept["seconds"] >= 0 and kept["threads"] == torch.get_num_threads()   # beside the value, for a plan
    run.measure("thing", {"n": 20}, measure)
    assert len(calls) == 2
    for f in (run.path / "measurements").glob("thing-*.json"):
        f.write_text("garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        assert run.measure("thing", {"n": 10}, measure) == {"value": 3.5}
    assert len(calls) == 3


def test_run_all_plugs_into_a_process_pool(store):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    d = dense_cfg(epochs=1)
    cfgs = [sparse_cfg(k, d, 0.5) for k in ("finetune", "scratch")]
    # spawn, not fork: forking after torch has started its thread pool can deadlock
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = run_all(cfgs, store, executor=pool, progress=False)
    assert [r.config for r in runs] == cfgs
    assert len(store.runs()) == 3  # the parent once, then both children


# --- clear errors (issue 7, section 4): each names the parameter, the value and what is allowed ---


def test_run_store_rejects_a_non_path(tmp_path):
    with pytest.raises(TypeError, match=r"RunStore\(root=...\) must be a directory path .* got 3 of type int"):
        RunStore(3)


def test_run_store_rejects_a_file(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("")
    with pytest.raises(NotADirectoryError, match=r"RunStore\(root=.*a-file.*is a file, not a directory"):
        RunStore(f)
    with pytest.raises(NotADirectoryError, match="is a file"):
        RunStore(f / "runs")  # a directory that could never be created


def test_run_store_rejects_a_read_only_directory(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root may write anywhere: pretend it may not
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    with pytest.raises(PermissionError, match=r"RunStore\(root=.*ro.*is not writable .*os.access"):
        RunStore(ro / "runs")


@pytest.mark.parametrize("value", [-1, float("inf"), "10"])
def test_run_store_rejects_bad_lock_settings(tmp_path, value):
    with pytest.raises(ValueError, match=rf"RunStore\(lock_max_age=...\) must be a finite number of seconds"):
        RunStore(tmp_path, lock_max_age=value)


def test_get_or_train_rejects_a_path_as_store(tmp_path):
    with pytest.raises(TypeError, match=r"get_or_train\(store=...\) must be a RunStore .* got the str 'a/path'; "
                                        r"pass store=RunStore\('a/path'\)"):
        get_or_train(dense_cfg(), "a/path")


def test_run_all_names_the_config_that_is_not_one(store):
    with pytest.raises(TypeError, match=r"configs\[1\] must be a RunConfig, got 'not a config' of type str"):
        run_all([dense_cfg(), "not a config"], store)
    with pytest.raises(TypeError, match=r"single RunConfig; pass \[cfg\]"):
        run_all(dense_cfg(), store)
    assert not store.root.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda")])
def test_cuda_without_a_gpu_is_an_error_before_anything_is_written(store, device):
    with pytest.raises(ValueError, match=r"device=.*cuda.*no CUDA GPU is available.*device='auto' picks CUDA, "
                                         r"then MPS, else the CPU \(here: the CPU\)"):
        get_or_train(dense_cfg(), store, device=device)
    assert not store.root.exists()


def test_device_must_be_a_string(store):
    with pytest.raises(TypeError, match="device must be 'auto', 'cpu'.*got 0 of type int"):
        get_or_train(dense_cfg(), store, device=0)
