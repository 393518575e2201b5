"""What a run records about the code that trained it, and the code epoch (issue 25, item 2).

meta.json records the package version, git commit and dirty flag, torch and CUDA versions, the device, the
host and the UTC start time; meta.json and checkpoints record the code epoch, and a run or checkpoint of
another epoch is trained again with a warning. Runs recorded before epochs existed are epoch 1.
"""

import json
import shutil
import socket
import subprocess
import time
import warnings
from datetime import datetime

import pytest
import torch

import sparsegap
from _damage import interrupted_after_epoch
from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.runs import RunStore, get_or_train, run_all
from sparsegap.runs import provenance
from sparsegap.runs.atomic import sha256
from sparsegap.runs.store import StaleRun


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def dense_cfg(epochs=2, seed=0):
    return RunConfig("dense", DataConfig("tishby", train_size=200), ModelConfig("mlp", hidden=(8,)),
                     TrainConfig(epochs=epochs, batch_size=50, lr=0.05), seed=seed)


def meta(run) -> dict:
    return json.loads((run.path / "meta.json").read_text())


def test_meta_records_the_provenance_of_the_run(store):
    before = time.time()
    run = get_or_train(dense_cfg(), store, device="cpu", progress=False)
    m = meta(run)
    assert m["code_epoch"] == provenance.CODE_EPOCH
    assert m["version"] == sparsegap.__version__
    assert m["torch"] == torch.__version__ and m["cuda"] == torch.version.cuda
    assert m["device"] == "cpu" and isinstance(m["device_name"], str) and m["device_name"]
    assert m["host"] == socket.gethostname()
    started = datetime.fromisoformat(m["started_utc"])
    assert started.utcoffset().total_seconds() == 0 and before - 2 <= started.timestamp() <= time.time()
    checkout = provenance._CHECKOUT
    if (checkout / ".git").exists() and shutil.which("git"):
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
        if head.returncode == 0:
            assert m["git_commit"] == head.stdout.strip() and isinstance(m["git_dirty"], bool)
    assert m["status"] == "done" and m["resumed_at_epoch"] == 0   # what it recorded before stays


def test_without_git_the_commit_is_none(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    provenance.git_state.cache_clear()
    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    try:
        assert provenance.git_state() == (None, None)
    finally:
        provenance.git_state.cache_clear()


def test_a_run_of_another_code_epoch_is_trained_again_with_a_warning(store, monkeypatch):
    cfg = dense_cfg()
    run = get_or_train(cfg, store, progress=False)
    monkeypatch.setattr(provenance, "CODE_EPOCH", 2)
    with pytest.raises(StaleRun, match="written by code epoch 1, this code is epoch 2"):
        store.load(cfg)
    with pytest.warns(UserWarning, match="is stale .*code epoch 1, this code is epoch 2.*training it again"):
        again = get_or_train(cfg, store, progress=False)
    assert meta(again)["code_epoch"] == 2
    assert all(torch.equal(again.weights[k], run.weights[k]) for k in run.weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_or_train(cfg, store, progress=False)                 # now of this epoch: loaded, silently


def test_a_sweep_retrains_the_stale_runs_of_its_chains(store, monkeypatch):
    d = dense_cfg()
    f = RunConfig("finetune", d.data, d.model, d.train, sparsity=0.5, parent=d)
    run_all([f], store, progress=False)
    monkeypatch.setattr(provenance, "CODE_EPOCH", 2)
    with pytest.warns(UserWarning, match="stale"):
        run_all([f], store, progress=False)
    assert meta(store.load(d))["code_epoch"] == meta(store.load(f))["code_epoch"] == 2


def test_a_run_recorded_before_code_epochs_is_epoch_1(store, monkeypatch):
    """The runs of the book's store record no epoch: they are epoch 1, valid until the epoch is bumped."""
    cfg = dense_cfg()
    run = get_or_train(cfg, store, progress=False)
    old = {k: v for k, v in meta(run).items() if k in ("torch", "seconds", "threads", "resumed_at_epoch", "status")}
    (run.path / "meta.json").write_text(json.dumps(old))
    done = json.loads((run.path / "DONE").read_text())
    done["sha256"]["meta.json"] = sha256((run.path / "meta.json").read_bytes())
    (run.path / "DONE").write_text(json.dumps(done))
    mtime = (run.path / "weights.pt").stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_or_train(cfg, store, progress=False)
    assert (run.path / "weights.pt").stat().st_mtime_ns == mtime
    monkeypatch.setattr(provenance, "CODE_EPOCH", 2)
    with pytest.raises(StaleRun, match="code epoch 1"):
        store.load(cfg)


def test_a_checkpoint_of_another_code_epoch_is_discarded(store, tmp_path, monkeypatch):
    cfg = dense_cfg(epochs=3)
    interrupted_after_epoch(cfg, store, 2, monkeypatch)
    assert torch.load(store.path(cfg) / "checkpoint.pt", weights_only=True)["code_epoch"] == 1
    monkeypatch.setattr(provenance, "CODE_EPOCH", 2)
    with pytest.warns(UserWarning, match="checkpoint was written by code epoch 1, this code is epoch 2.*"
                                         "discarded, training from the start"):
        run = get_or_train(cfg, store, progress=False)
    assert meta(run)["resumed_at_epoch"] == 0 and meta(run)["code_epoch"] == 2


def test_a_plan_counts_a_run_of_another_code_epoch_as_to_train(tmp_path, monkeypatch):
    """The plan must not promise a run the store will retrain: a stale run is not 'in store'."""
    from sparsegap.runs import provenance
    from sparsegap.runs.plan import plan_runs
    cfg = dense_cfg()
    store = RunStore(tmp_path)
    get_or_train(cfg, store, progress=False)
    assert store.is_current(cfg) and plan_runs([cfg], store, device="cpu")["in store"].all()
    monkeypatch.setattr(provenance, "CODE_EPOCH", provenance.CODE_EPOCH + 1)
    assert store.is_done(cfg) and not store.is_current(cfg)
    assert not plan_runs([cfg], store, device="cpu")["in store"].any()
