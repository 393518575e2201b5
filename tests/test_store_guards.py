"""The store's guards (issue 25): a finished run is read without waiting for any lock (item 4), symbolic links
in place of run directories, the lock directory or lock files are refused before anything is touched (item 7),
and bad arguments are clear errors (item 8: an empty root, lock_max_age=0, a measurement name with a path).
"""

import json
import os
import socket
import time
import warnings

import pytest

from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.runs import RunStore, get_or_train, run_all
from sparsegap.runs.store import LinkedPath


def dense_cfg(epochs=1, seed=0):
    return RunConfig("dense", DataConfig("tishby", train_size=200), ModelConfig("mlp", hidden=(8,)),
                     TrainConfig(epochs=epochs, batch_size=50, lr=0.05), seed=seed)


def snapshot(folder):
    """Every path under ``folder`` with its bytes (files), link target (links) and mtime."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = os.lstat(p)
        out[str(p.relative_to(folder))] = (os.readlink(p) if p.is_symlink() else
                                           p.read_bytes() if p.is_file() else "dir", st.st_mtime_ns)
    return out


# --- item 4: reading a finished run never waits for a lock -----------------------------------------


@pytest.mark.parametrize("checkpoint_left", [False, True])
def test_a_finished_run_loads_at_once_while_another_host_holds_its_lock(tmp_path, checkpoint_left):
    store = RunStore(tmp_path / "runs", lock_timeout=5)
    cfg = dense_cfg()
    run = get_or_train(cfg, store, progress=False)
    lock = store.root / ".locks" / f"{cfg.run_id}.lock"
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"host": "another-host.example", "pid": 4242, "start_time": time.time(),
                                "token": "f00d"}))
    if checkpoint_left:            # a killed trainer's leftover: tidied by the lock's holder, not by a reader
        (run.path / "checkpoint.pt").write_bytes(b"left over")
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = get_or_train(cfg, store, progress=False)
    assert time.monotonic() - start < 2
    assert again.history == run.history
    assert lock.exists()           # the live holder's lock is left alone


def test_a_finished_run_with_a_dead_local_owner_is_tidied(tmp_path):
    store = RunStore(tmp_path / "runs")
    cfg = dense_cfg()
    run = get_or_train(cfg, store, progress=False)
    lock = store.root / ".locks" / f"{cfg.run_id}.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 2 ** 22 + 17, "start_time": time.time(),
                                "token": "dead"}))
    (run.path / "checkpoint.pt").write_bytes(b"left over")
    with pytest.warns(UserWarning, match="taking over the stale lock"):
        get_or_train(cfg, store, progress=False)
    assert not lock.exists() and not (run.path / "checkpoint.pt").exists()


# --- item 7: symbolic links are refused before anything is written or deleted ------------------------


def outside(tmp_path):
    target = tmp_path / "outside"
    target.mkdir()
    (target / "config.json").write_text("precious")
    (target / "notes.txt").write_text("keep me")
    (target / "checkpoint.pt").write_text("not a checkpoint")
    return target


@pytest.mark.parametrize("how", ["get_or_train", "run_all", "load"])
def test_a_symlinked_run_directory_is_refused_and_its_target_untouched(tmp_path, how):
    store, cfg = RunStore(tmp_path / "runs"), dense_cfg()
    target = outside(tmp_path)
    store.root.mkdir()
    (store.root / cfg.run_id).symlink_to(target, target_is_directory=True)
    before = snapshot(tmp_path)
    with pytest.raises(LinkedPath, match=rf"run directory of {cfg.run_id}: .* is a symbolic link \(to .*outside\); "
                                         r"the store refuses to write or delete through links"):
        if how == "get_or_train":
            get_or_train(cfg, store, progress=False)
        elif how == "run_all":
            run_all([cfg], store, progress=False)
        else:
            store.load(cfg)
    assert snapshot(tmp_path) == before


def test_a_symlinked_run_directory_of_a_finished_run_is_refused(tmp_path):
    cfg = dense_cfg()
    real = get_or_train(cfg, RunStore(tmp_path / "elsewhere"), progress=False)
    store = RunStore(tmp_path / "runs")
    store.root.mkdir()
    (store.root / cfg.run_id).symlink_to(real.path, target_is_directory=True)
    (real.path / "checkpoint.pt").write_bytes(b"left over")     # tidy_finished would delete it
    before = snapshot(tmp_path)
    with pytest.raises(LinkedPath, match="is a symbolic link"):
        get_or_train(cfg, store, progress=False)
    assert snapshot(tmp_path) == before


def test_a_symlinked_lock_directory_is_refused(tmp_path):
    store, cfg = RunStore(tmp_path / "runs"), dense_cfg()
    target = outside(tmp_path)
    store.root.mkdir()
    (store.root / ".locks").symlink_to(target, target_is_directory=True)
    before = snapshot(tmp_path)
    with pytest.raises(LinkedPath, match=r"the store's lock directory .*\.locks is a symbolic link"):
        get_or_train(cfg, store, progress=False)
    assert snapshot(tmp_path) == before


def test_a_symlinked_lock_file_is_refused(tmp_path):
    store, cfg = RunStore(tmp_path / "runs"), dense_cfg()
    target = outside(tmp_path)
    (store.root / ".locks").mkdir(parents=True)
    (store.root / ".locks" / f"{cfg.run_id}.lock").symlink_to(target / "notes.txt")
    before = snapshot(tmp_path)
    with pytest.raises(LinkedPath, match=rf"lock file of {cfg.run_id}: .* is a symbolic link"):
        get_or_train(cfg, store, progress=False)
    assert snapshot(tmp_path) == before


def test_a_symlinked_measurements_directory_is_refused(tmp_path):
    run = get_or_train(dense_cfg(), RunStore(tmp_path / "runs"), progress=False)
    target = outside(tmp_path)
    (run.path / "measurements").symlink_to(target, target_is_directory=True)
    before = snapshot(target)
    with pytest.raises(LinkedPath, match="measurements directory .* is a symbolic link"):
        run.measure("thing", {}, lambda: {"v": 1})
    assert snapshot(target) == before


# --- item 8: clear errors ------------------------------------------------------------------------------


def test_an_empty_root_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"RunStore\(root=...\) must be a directory path, got the empty path ''; "
                                         r"pass None for the default"):
        RunStore("")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("value", [0, 0.0])
def test_lock_max_age_must_be_positive(tmp_path, value):
    with pytest.raises(ValueError, match=rf"RunStore\(lock_max_age=...\) must be a finite number of seconds > 0, "
                                         rf"got {value!r}"):
        RunStore(tmp_path, lock_max_age=value)
    assert RunStore(tmp_path, lock_timeout=0).lock_timeout == 0.0      # lock_timeout=0: try once, allowed


@pytest.mark.parametrize("name", ["../../..", "../escape", "a/b", "", ".", "..", ".hidden", "a\\b", "nul\0"])
def test_a_measurement_name_must_be_a_plain_file_name_stem(tmp_path, name):
    run = get_or_train(dense_cfg(), RunStore(tmp_path / "store" / "runs"), progress=False)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"Run.measure\(name=...\) must be a plain file-name stem .*got "):
        run.measure(name, {}, lambda: {"v": 1})
    assert snapshot(tmp_path) == before
    with pytest.raises(TypeError, match=r"Run.measure\(name=...\) must be a str .*got 3 of type int"):
        run.measure(3, {}, lambda: {"v": 1})
