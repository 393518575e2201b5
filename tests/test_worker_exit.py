"""A ``processes:N`` worker ends with its parent and leaves no lock behind (issue 25, item 5).

Each test starts a real parent process (tests/_pool_parent.py) whose pool worker holds a run's lock and
trains; the parent is then killed (SIGKILL, SIGTERM) or interrupted (SIGINT, as Ctrl-C), and the worker must
be gone within seconds, its lock released (not merely left to be taken over).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparsegap.runs.lock import _process_alive

HERE = Path(__file__).resolve().parent
ENV = os.environ | {"PYTHONPATH": str(HERE.parent / "pkg"), "OMP_NUM_THREADS": "1", "SPARSEGAP_PROGRESS": "0"}
EXIT_WITHIN = 5.0       # seconds


def start_parent(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, Path, Path, Path]:
    lock, ready, info = tmp_path / ".locks" / "r.lock", tmp_path / "ready", tmp_path / "info.json"
    with open(tmp_path / "parent.stderr", "wb") as stderr:
        parent = subprocess.Popen([sys.executable, str(HERE / "_pool_parent.py"), mode, str(lock), str(ready),
                                   str(info)], env=ENV, stderr=stderr, start_new_session=True)
    return parent, lock, ready, info


def wait_for(path: Path, parent: subprocess.Popen, tmp_path: Path, seconds: float = 120) -> str:
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text()):
        assert parent.poll() is None, (tmp_path / "parent.stderr").read_text()
        assert time.monotonic() < deadline, f"{path.name} never came"
        time.sleep(0.02)
    return path.read_text()


def gone_within(pid: int, seconds: float) -> bool:
    """Whether ``pid`` ends (or is a zombie: ended, not reaped by the init it was left to) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while _process_alive(pid, None):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT", "Ctrl-C", "SIGKILL, watchdog only"])
def test_a_worker_ends_with_its_parent_and_releases_its_lock(tmp_path, how):
    if how.endswith("watchdog only") and not sys.platform.startswith("linux"):
        pytest.skip("without a parent-death signal every case is the watchdog's")
    parent, lock, ready, info = start_parent(tmp_path, "hold-watchdog" if how.endswith("watchdog only") else "hold")
    worker = None
    try:
        worker = int(wait_for(ready, parent, tmp_path))
        tracker = json.loads(wait_for(info, parent, tmp_path))["tracker"]
        assert json.loads(lock.read_text())["pid"] == worker
        if how == "Ctrl-C":               # the terminal signals the whole foreground group
            os.killpg(parent.pid, signal.SIGINT)
        else:
            parent.send_signal(getattr(signal, how.split(",")[0]))
        parent.wait(timeout=60)
        assert gone_within(worker, EXIT_WITHIN), f"the worker outlived its parent ({how})"
        assert not lock.exists(), f"the worker left its lock behind ({how}): {lock.read_text()}"
        if tracker:
            assert gone_within(tracker, EXIT_WITHIN), "multiprocessing's resource tracker outlived the pool"
    finally:
        for pid in (parent.pid, worker):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        parent.wait(timeout=60)


def test_a_worker_outlives_the_thread_that_started_it(tmp_path):
    # The parent-death signal comes when the parent *thread* that started the worker ends; a pool starts
    # its workers from whichever thread submits first. The parent lives on, so the worker must too.
    parent, _, _, info = start_parent(tmp_path, "thread")
    assert parent.wait(timeout=180) == 0, (tmp_path / "parent.stderr").read_text()
    pids = json.loads(info.read_text())
    assert pids["first"] == pids["second"]
