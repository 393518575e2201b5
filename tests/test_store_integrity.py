"""What the store keeps is what the run produced (issue 7, sections 2 and 3).

Checkpoints are tied to their run, every stored file is checked against its SHA-256 in DONE,
temporaries do not outlive a crash, writes are fsynced and readable by the group, and a run whose
loss became NaN is stored as diverged.
"""

import json
import os
import shutil
import stat
import warnings

import pytest
import torch

import sparsegap.runs.job as runs_mod
from sparsegap.runs.atomic import sha256
from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.runs import RunStore, get_or_train
from sparsegap.bookkeeping import diverged_at
from sparsegap.train import train


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


@pytest.fixture
def strict():
    """Any warning is an error: for the paths that must be silent."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def dense_cfg(epochs=3, seed=0, **train):
    return RunConfig("dense", DataConfig("tishby", train_size=300), ModelConfig("mlp", hidden=(16,)),
                     TrainConfig(epochs=epochs, batch_size=50, **({"lr": 0.05} | train)), seed=seed)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def interrupted_after_epoch(cfg, store, epoch, monkeypatch):
    """Train ``cfg`` into ``store`` and stop it (as a crash would) after its checkpoint of ``epoch``."""
    real_save = runs_mod.atomic_save

    class Killed(Exception):
        pass

    def dying_save(obj, path):
        real_save(obj, path)
        if path.name == "checkpoint.pt" and obj["epoch"] == epoch:
            raise Killed

    with monkeypatch.context() as m:
        m.setattr(runs_mod, "atomic_save", dying_save)
        with pytest.raises(Killed):
            get_or_train(cfg, store, progress=False)
    return store.path(cfg) / "checkpoint.pt"


# --- checkpoints ---------------------------------------------------------------------------------


def test_a_checkpoint_carries_its_run_hash(store, monkeypatch):
    cfg = dense_cfg(epochs=3)
    ckpt = torch.load(interrupted_after_epoch(cfg, store, 1, monkeypatch), weights_only=True)
    assert ckpt["run_hash"] == cfg.hash() and ckpt["epoch"] == 1


def test_a_checkpoint_of_another_run_is_refused_and_discarded(store, tmp_path, monkeypatch):
    mine, other = dense_cfg(seed=0), dense_cfg(seed=1)   # same shapes: the checkpoint would load
    reference = get_or_train(mine, RunStore(tmp_path / "reference"), progress=False)
    foreign = interrupted_after_epoch(other, store, 2, monkeypatch)
    store.path(mine).mkdir(parents=True)
    shutil.copy(foreign, store.path(mine) / "checkpoint.pt")
    with pytest.warns(UserWarning, match="checkpoint belongs to another run.*discarded"):
        run = get_or_train(mine, store, progress=False)
    assert same_weights(run.weights, reference.weights)
    assert json.loads((run.path / "meta.json").read_text())["resumed_at_epoch"] == 0


@pytest.mark.parametrize("content", [
    {"epoch": 2},                                                       # the audit's case
    "right hash, no keys",
    "wrong types",
    "weights of another shape",
    ["not", "a", "dict"],
])
def test_a_malformed_checkpoint_is_discarded_and_training_starts_over(store, tmp_path, monkeypatch, content):
    cfg = dense_cfg(epochs=3)
    reference = get_or_train(cfg, RunStore(tmp_path / "reference"), progress=False)
    good = torch.load(interrupted_after_epoch(cfg, store, 2, monkeypatch), weights_only=True)
    if content == "right hash, no keys":
        content = {"epoch": 2, "run_hash": cfg.hash()}
    elif content == "wrong types":
        content = good | {"epoch": "2", "model": "weights"}
    elif content == "weights of another shape":
        content = good | {"model": {k: v[:1] for k, v in good["model"].items()}}
    torch.save(content, store.path(cfg) / "checkpoint.pt")
    with pytest.warns(UserWarning, match="checkpoint .*(malformed|unreadable).*discarded"):
        run = get_or_train(cfg, store, progress=False)
    assert same_weights(run.weights, reference.weights)
    assert not (run.path / "checkpoint.pt").exists()


# --- checksums -----------------------------------------------------------------------------------


def test_done_records_the_sha256_of_every_stored_file(store):
    d = dense_cfg()
    f = RunConfig("finetune", d.data, d.model, d.train, sparsity=0.5, parent=d)
    for cfg, files in ((d, {"config.json", "init.pt", "weights.pt", "history.json", "meta.json"}),
                       (f, {"config.json", "init.pt", "masks.pt", "weights.pt", "history.json", "meta.json"})):
        run = get_or_train(cfg, store, progress=False)
        done = json.loads((run.path / "DONE").read_text())
        assert done["run_hash"] == cfg.hash() and set(done["sha256"]) == files
        assert done["sha256"]["weights.pt"] == sha256((run.path / "weights.pt").read_bytes())


@pytest.mark.parametrize("swapped", ["weights.pt", "history.json", "init.pt", "meta.json"])
def test_a_file_swapped_from_another_seed_is_a_damaged_run(store, swapped):
    mine, other = dense_cfg(seed=0), dense_cfg(seed=1)
    run = get_or_train(mine, store, progress=False)
    get_or_train(other, store, progress=False)
    shutil.copy(store.path(other) / swapped, store.path(mine) / swapped)
    with pytest.warns(UserWarning, match=f"damaged .*{swapped} does not match its SHA-256"):
        again = get_or_train(mine, store, progress=False)
    assert same_weights(again.weights, run.weights)
    assert again.history["train_loss"] == run.history["train_loss"]


def test_a_run_with_an_old_done_marker_still_loads(store, strict):
    cfg = dense_cfg()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = get_or_train(cfg, store, progress=False)
    (run.path / "DONE").write_text(cfg.hash())   # the format before checksums: the bare config hash
    mtime = (run.path / "weights.pt").stat().st_mtime_ns
    again = get_or_train(cfg, store, progress=False)
    assert same_weights(again.weights, run.weights)
    assert (run.path / "weights.pt").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("marker", ["garbage", "0123456789abcdef", '{"run_hash": "x", "sha256": {}}'])
def test_a_bad_done_marker_is_a_damaged_run(store, marker):
    cfg = dense_cfg()
    run = get_or_train(cfg, store, progress=False)
    (run.path / "DONE").write_text(marker)
    with pytest.warns(UserWarning, match="damaged .*DONE"):
        again = get_or_train(cfg, store, progress=False)
    assert same_weights(again.weights, run.weights)


# --- temporaries, fsync, modes -------------------------------------------------------------------


def test_orphan_temporaries_are_swept_when_the_lock_is_taken(store, monkeypatch):
    cfg = dense_cfg(epochs=3)
    path = interrupted_after_epoch(cfg, store, 1, monkeypatch).parent
    orphans = [path / ".checkpoint.pt.4242-deadbeef.tmp", path / ".weights.pt.4242-0badf00d.tmp"]
    for o in orphans:
        o.write_bytes(b"half a file")
    get_or_train(cfg, store, progress=False)
    assert not list(path.glob("*.tmp")) and not list(path.glob(".*.tmp"))


def test_writes_are_fsynced_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    runs_mod.atomic_write_text("hello", tmp_path / "greeting.txt")
    assert events == [("fsync", "file"), ("replace", "greeting.txt"), ("fsync", "dir")]
    assert (tmp_path / "greeting.txt").read_text() == "hello"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_stored_files_respect_the_umask(store, umask):
    old = os.umask(umask)
    try:
        run = get_or_train(dense_cfg(epochs=1), store, progress=False)
        run.measure("thing", {}, lambda: {"v": 1})
    finally:
        os.umask(old)
    files = [p for p in run.path.rglob("*") if p.is_file()]
    assert len(files) >= 7
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p.name


# --- diverged runs -------------------------------------------------------------------------------


def test_train_stops_at_the_first_non_finite_loss():
    from sparsegap.runs import build_model_for, load_data
    cfg = dense_cfg(epochs=4, lr=1e10)
    history = train(build_model_for(cfg.model, cfg.data, seed=0), load_data(cfg.data), cfg.train,
                    progress=False, device="cpu")
    d = history["diverged"]
    assert d["loss"] == "nan" and d["epoch"] == 1 and 1 <= d["step"] <= 6   # 6 steps per epoch
    assert all(len(history[k]) == d["epoch"] - 1 for k in ("epoch", "train_loss", "test_acc"))
    assert diverged_at(3, 17, float("inf")) == {"epoch": 3, "step": 17, "loss": "inf"}
    assert diverged_at(3, 17, float("-inf"))["loss"] == "inf"


@pytest.mark.parametrize("train_cfg, epoch", [({"lr": 1e10}, 1), ({"lr": 1.0, "weight_decay": 1e3}, 2)])
def test_a_diverged_run_is_stored_as_diverged_and_never_trained_again(store, train_cfg, epoch):
    cfg = dense_cfg(epochs=4, **train_cfg)
    with pytest.warns(UserWarning, match=f"diverged: loss nan at epoch {epoch}"):
        run = get_or_train(cfg, store, progress=False)
    assert run.diverged is not None and run.diverged["epoch"] == epoch and run.diverged["loss"] == "nan"
    assert len(run.history["epoch"]) == epoch - 1 < cfg.train.epochs
    assert json.loads((run.path / "meta.json").read_text())["status"] == "diverged"
    assert store.is_done(cfg) and not (run.path / "checkpoint.pt").exists()
    mtime = (run.path / "weights.pt").stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = get_or_train(cfg, store, progress=False)   # loaded, silently: it is deterministic
    assert again.diverged == run.diverged
    assert (run.path / "weights.pt").stat().st_mtime_ns == mtime


def test_a_finished_run_is_not_diverged(store):
    run = get_or_train(dense_cfg(epochs=1), store, progress=False)
    assert run.diverged is None
    assert json.loads((run.path / "meta.json").read_text())["status"] == "done"
