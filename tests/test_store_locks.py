"""Many processes, one store: each run is trained once, under its lock (issue 7, section 1).

The racing tests start real processes (tests/_store_worker.py), released together by a barrier.
"""

import errno
import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from _store_worker import Zygote, weights_digest
from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.runs import RunLock, RunStore, get_or_train


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


def dense_cfg(epochs=4, seed=0):
    # Tiny: the racers are released together and both look for the run within milliseconds.
    return RunConfig("dense", DataConfig("tishby", train_size=1000), ModelConfig("mlp", hidden=(32, 32)),
                     TrainConfig(epochs=epochs, batch_size=50, lr=0.05), seed=seed)


def finetune_cfg(parent, s=0.5):
    return RunConfig("finetune", parent.data, parent.model, parent.train, seed=parent.seed, sparsity=s,
                     parent=parent)


def job(tmp_path: Path, name: str, root: Path, configs, **extra) -> dict:
    return {"root": str(root), "configs": [c.full_dict() for c in configs], "log": str(tmp_path / "trainings.log"),
            "out": str(tmp_path / f"{name}.out.json"), "stderr": str(tmp_path / f"{name}.stderr")} | extra


def race(zygote: Zygote, tmp_path: Path, root: Path, configs, n: int = 2) -> list[dict]:
    """n processes on the same configs, released together; what each of them got."""
    go = tmp_path / "go"
    pids = [zygote.start(job(tmp_path, f"w{i}", root, configs, go=str(go))) for i in range(n)]
    go.touch()
    for i, pid in enumerate(pids):
        assert zygote.wait(pid) == 0, (tmp_path / f"w{i}.stderr").read_text()
    return [json.loads((tmp_path / f"w{i}.out.json").read_text()) for i in range(n)]


def trainings(tmp_path: Path) -> list[str]:
    log = tmp_path / "trainings.log"
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()] if log.exists() else []


def stored_digest(store: RunStore, cfg: RunConfig) -> str:
    return weights_digest(torch.load(store.path(cfg) / "weights.pt", weights_only=True))


def test_two_processes_racing_on_one_config_train_it_once(zygote, tmp_path):
    store = RunStore(tmp_path / "runs")
    parent = dense_cfg()
    child = finetune_cfg(parent)  # the parent is not cached either: both are raced for
    got = race(zygote, tmp_path, store.root, [child])
    assert sorted(trainings(tmp_path)) == ["dense seed=0", "finetune s=0.5 seed=0"]
    assert got[0] == got[1] == {child.run_id: stored_digest(store, child)}
    assert not list((store.root / ".locks").glob("*.lock"))


def test_two_processes_meeting_one_damaged_run_both_end_with_the_same_valid_run(zygote, tmp_path):
    store = RunStore(tmp_path / "runs")
    cfg = dense_cfg()
    good = get_or_train(cfg, store, device="cpu", progress=False)
    expected = weights_digest(good.weights)
    weights = store.path(cfg) / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:200])   # truncated: the run claims to be done but is not
    got = race(zygote, tmp_path, store.root, [cfg])
    assert trainings(tmp_path) == ["dense seed=0"]     # retrained once, by one of them
    assert got[0] == got[1] == {cfg.run_id: expected}
    assert weights_digest(store.load(cfg).weights) == expected


def test_a_lock_left_by_a_killed_owner_is_taken_over(zygote, tmp_path):
    store = RunStore(tmp_path / "runs")
    cfg = dense_cfg(epochs=2)
    hanging = tmp_path / "hanging"
    owner = zygote.start(job(tmp_path, "owner", store.root, [cfg], hang=str(hanging)))
    deadline = time.monotonic() + 60
    while not hanging.exists():   # the owner holds the lock and is "training"
        assert time.monotonic() < deadline, (tmp_path / "owner.stderr").read_text()
        time.sleep(0.01)
    lock = store.root / ".locks" / f"{cfg.run_id}.lock"
    assert json.loads(lock.read_text())["pid"] == owner
    os.kill(owner, signal.SIGKILL)
    assert zygote.wait(owner) == -signal.SIGKILL
    with pytest.warns(UserWarning, match="stale lock .* owner process is gone"):
        run = get_or_train(cfg, store, device="cpu", progress=False)
    assert len(run.history["epoch"]) == 2
    assert not lock.exists()


def test_a_waiter_times_out_naming_the_owner_and_logs_while_it_waits(tmp_path, monkeypatch, caplog):
    store = RunStore(tmp_path / "runs", lock_timeout=0.3)
    cfg = dense_cfg(epochs=1)
    monkeypatch.setattr(RunLock, "LOG_AFTER", 0.0)
    with store.lock(cfg):  # held by a live process (this one)
        with caplog.at_level(logging.WARNING, logger="sparsegap.runs"), \
                pytest.raises(TimeoutError, match=f"locked by pid {os.getpid()} on .*lock_timeout=0.3"):
            get_or_train(cfg, store, device="cpu", progress=False)
    assert "waiting" in caplog.text and cfg.run_id in caplog.text
    assert not store.is_done(cfg)


def test_a_lock_not_refreshed_for_lock_max_age_is_taken_over(tmp_path):
    store = RunStore(tmp_path / "runs", lock_max_age=60)
    cfg = dense_cfg(epochs=1)
    lock = store.root / ".locks" / f"{cfg.run_id}.lock"
    lock.parent.mkdir(parents=True)
    # An owner on another host: its pid cannot be checked, only its age.
    lock.write_text(json.dumps({"host": "another-" + socket.gethostname(), "pid": 1, "start_time": time.time() - 600}))
    os.utime(lock, (time.time() - 120, time.time() - 120))
    with pytest.warns(UserWarning, match="stale lock .* not refreshed for 1[0-9][0-9] s"):
        get_or_train(cfg, store, device="cpu", progress=False)
    assert store.is_done(cfg) and not lock.exists()


def test_the_owner_refreshes_its_lock_every_epoch(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    refreshed = []
    real = RunLock.refresh
    monkeypatch.setattr(RunLock, "refresh", lambda self: (refreshed.append(self.path.stat().st_mtime), real(self)))
    get_or_train(dense_cfg(epochs=3), store, device="cpu", progress=False)
    assert len(refreshed) == 3



def test_a_lock_appears_with_its_owner_written_and_leaves_no_temporary(tmp_path, monkeypatch):
    # Created empty and then written, a lock could be seen empty (not stale for WRITE_GRACE
    # seconds) after its creator was killed in between; the fault-injection sweep then once
    # trained a run alone that the uninterrupted sweep had trained in a batch.
    lock = RunLock(tmp_path / ".locks" / "r.lock")
    seen = []
    real_link = os.link
    monkeypatch.setattr(os, "link", lambda src, dst: (real_link(src, dst), seen.append(Path(dst).read_bytes()))[0])
    with lock:
        assert seen and json.loads(seen[0])["pid"] == os.getpid()
        assert [p.name for p in lock.path.parent.iterdir()] == ["r.lock"]
    assert not list(lock.path.parent.iterdir())


def test_without_hard_links_the_lock_is_created_then_written(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_links)
    lock = RunLock(tmp_path / ".locks" / "r.lock")
    assert lock.try_acquire()
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not RunLock(lock.path).try_acquire()          # held by a live process
    lock.release()
    assert not list(lock.path.parent.iterdir())


def test_lock_temporaries_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    locks = tmp_path / ".locks"
    locks.mkdir()
    host, dead = socket.gethostname(), _reaped_pid()
    orphan = locks / f".r.lock.{host}.{dead}-00.tmp"
    orphan.write_text(json.dumps({"host": host, "pid": dead, "start_time": time.time()}))
    empty = locks / f".r.lock.{host}.{dead}-01.tmp"       # killed before it could write: judged by its name
    empty.write_bytes(b"")
    live = locks / f".r.lock.{host}.{os.getpid()}-02.tmp"
    live.write_bytes(b"")
    other = locks / f".s.lock.{host}.{dead}-03.tmp"       # another run's, which may never be locked again (done)
    other.write_bytes(b"")
    remote = locks / f".r.lock.another-{host}.{dead}-04.tmp"   # another host's pid: only its age tells
    remote.write_bytes(b"")
    with RunLock(locks / "r.lock"):
        pass
    assert sorted(p.name for p in locks.iterdir()) == sorted([live.name, remote.name])
    os.utime(remote, (time.time() - 200, time.time() - 200))
    with RunLock(locks / "r.lock", max_age=100):
        pass
    assert [p.name for p in locks.iterdir()] == [live.name]


def _reaped_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_batch_member_whose_lock_a_killed_sweep_left_still_trains_in_the_batch(tmp_path):
    from sparsegap.runs import run_all
    parent = dense_cfg(epochs=2)
    group = [RunConfig(kind, parent.data, parent.model, parent.train, seed=0, sparsity=s, parent=parent)
             for kind in ("finetune", "scratch") for s in (0.5, 0.8)]
    reference = run_all(group, RunStore(tmp_path / "reference"), device="cpu", progress=False, batch=True)
    store = RunStore(tmp_path / "runs")
    run_all([parent], store, device="cpu", progress=False)
    lock = store.root / ".locks" / f"{group[0].run_id}.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": _reaped_pid(), "start_time": time.time()}))
    with pytest.warns(UserWarning, match="stale lock"):
        got = run_all(group, store, device="cpu", progress=False, batch=True)
    for cfg, want, have in zip(group, reference, got):
        assert json.loads((store.path(cfg) / "meta.json").read_text())["batch"] == len(group), cfg.run_id
        assert all(torch.equal(want.weights[k], have.weights[k]) for k in want.weights), cfg.run_id


# ------------------------------------------------------------------ issue 25, item 4: lock_max_age and .locks

def test_a_live_owner_on_this_host_keeps_its_lock_whatever_its_age(zygote, tmp_path):
    # lock_max_age=1 with a 3-second epoch used to take the live owner's lock over and train the run twice
    root = tmp_path / "runs"
    cfg = dense_cfg(epochs=2)
    hanging = tmp_path / "hanging"
    owner = zygote.start(job(tmp_path, "owner", root, [cfg], hang=str(hanging)))
    try:
        deadline = time.monotonic() + 60
        while not hanging.exists():   # the owner holds the lock and "trains" without refreshing it
            assert time.monotonic() < deadline, (tmp_path / "owner.stderr").read_text()
            time.sleep(0.01)
        lock = root / ".locks" / f"{cfg.run_id}.lock"
        os.utime(lock, (time.time() - 100, time.time() - 100))     # 100 times lock_max_age
        store = RunStore(root, lock_max_age=1, lock_timeout=3)
        with pytest.raises(TimeoutError, match=f"locked by pid {owner} "):
            get_or_train(cfg, store, device="cpu", progress=False)
        assert json.loads(lock.read_text())["pid"] == owner
        assert trainings(tmp_path) == ["dense seed=0"]               # the owner's, once
        assert not store.is_done(cfg)
    finally:
        os.kill(owner, signal.SIGKILL)
        zygote.wait(owner)


def test_a_live_owner_in_this_process_is_not_taken_over_after_max_age(tmp_path):
    path = tmp_path / ".locks" / "r.lock"
    with RunLock(path, max_age=1):
        os.utime(path, (time.time() - 60, time.time() - 60))
        assert not RunLock(path, max_age=1).try_acquire()
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_an_owner_on_another_host_is_still_judged_by_max_age(tmp_path):
    path = tmp_path / ".locks" / "r.lock"
    path.parent.mkdir()
    path.write_text(json.dumps({"host": "another-" + socket.gethostname(), "pid": os.getpid(),
                                "start_time": time.time()}))
    assert not RunLock(path, max_age=30).try_acquire()           # refreshed 0 s ago
    os.utime(path, (time.time() - 60, time.time() - 60))
    with pytest.warns(UserWarning, match="not refreshed for 60 s"):
        assert RunLock(path, max_age=30).try_acquire()


@pytest.mark.parametrize("kwargs", [dict(max_age=0), dict(max_age=-5), dict(max_age=float("nan")),
                                    dict(max_age="60"), dict(max_age=True), dict(timeout=-1), dict(timeout="1")])
def test_a_lock_refuses_a_max_age_or_timeout_it_cannot_use(tmp_path, kwargs):
    (name, value), = kwargs.items()
    with pytest.raises(ValueError, match=rf"RunLock\({name}=\.\.\.\) must be a number of seconds .*got {value!r}"):
        RunLock(tmp_path / "r.lock", **kwargs)


def test_a_locks_file_in_place_of_the_lock_folder_gets_a_clear_error(tmp_path):
    store = RunStore(tmp_path / "runs")
    store.root.mkdir()
    (store.root / ".locks").write_text("not a folder")
    cfg = dense_cfg(epochs=1)
    with pytest.raises(NotADirectoryError, match=rf"lock folder .*\.locks cannot be made, since .*\.locks is a file, "
                                                 rf"not a folder.* move or delete that file"):
        get_or_train(cfg, store, device="cpu", progress=False)
    assert not store.path(cfg).exists()                       # nothing half-written
    assert (store.root / ".locks").read_text() == "not a folder"
