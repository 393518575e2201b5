"""The parent of a ``processes:1`` pool, in a process of its own, for tests/test_worker_exit.py (a test kills it).

    python tests/_pool_parent.py MODE LOCK READY INFO

hold:   the worker takes the RunLock at LOCK, writes its pid to READY and "trains" (a Python loop of short
        sleeps) until it is stopped; the parent writes {"tracker": pid of multiprocessing's resource tracker}
        to INFO and waits for the task. hold-watchdog: the same, the worker's parent-death signal turned off.
thread: the worker is started by a thread that then ends (on Linux the kernel sends a worker its
        parent-death signal when that thread ends); the parent then uses the worker again and writes
        {"first": pid, "second": pid} to INFO.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path


def hold_and_train(lock: str, ready: str, watchdog_only: bool = False) -> None:
    from sparsegap.runs.lock import RunLock
    if watchdog_only:           # as on a system without parent-death signals: the watchdog thread alone
        import ctypes
        ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)       # PR_SET_PDEATHSIG, none
    with RunLock(Path(lock)):
        Path(ready).write_text(str(os.getpid()))
        while True:
            time.sleep(0.01)


def main(mode: str, lock: str, ready: str, info: str) -> None:
    from multiprocessing import resource_tracker

    from sparsegap.runs.executors import executor_for
    with executor_for("processes:1") as pool:
        if mode.startswith("hold"):
            future = pool.submit(hold_and_train, lock, ready, mode == "hold-watchdog")
            Path(info).write_text(json.dumps({"tracker": resource_tracker._resource_tracker._pid}))
            future.result()
        else:
            first = {}
            starter = threading.Thread(target=lambda: first.update(pid=pool.submit(os.getpid).result()))
            starter.start()
            starter.join()
            time.sleep(2)        # the signal, if any, has arrived
            Path(info).write_text(json.dumps({"first": first["pid"], "second": pool.submit(os.getpid).result()}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
