"""Where the runs of a sweep train: one keyword for :func:`sparsegap.runs.run_all` and the notebooks.

* ``"local"``: in this process, one run (or one batched group of small runs) after another;
* ``"processes:N"``: a pool of N spawned processes on this machine, one torch thread each;
* ``"auto"``: ``processes:k`` with k = the cores this process may use divided by the training
  processes already sharing the machine (``$SPARSEGAP_WORKERS``, set by a parallel book build),
  and ``"local"`` when k < 2. Alone on two cores that is two processes; inside a two-job book
  build it is ``"local"``, so the build never oversubscribes the cores.

The run store makes every run independent and lock-protected, so a pool is only a way of running
``get_or_train`` on several configs at once; a pool trains runs one by one, unbatched (batching
small networks happens in the local path).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Iterator

from .threads import WORKERS_ENV, cores, workers

EXECUTORS = ("local", "processes:N", "auto")


def parse_executor(spec: object) -> int:
    """The number of worker processes that ``spec`` asks for; 0 means in this process."""
    if not isinstance(spec, str):
        raise TypeError(f"executor must be a string, one of {EXECUTORS}, got {spec!r} of type {type(spec).__name__}")
    key = spec.strip().lower()
    if key == "local":
        return 0
    if key == "auto":
        n = cores() // workers()
        return n if n >= 2 else 0
    if key.startswith("processes:"):
        count = key.split(":", 1)[1]
        if count.isdigit() and int(count) >= 1:
            return int(count)
    raise ValueError(f"executor must be one of {EXECUTORS} (N a positive int), got {spec!r}")


def _init_worker(n: int) -> None:
    import torch
    os.environ[WORKERS_ENV] = str(n)   # the thread policy of every run in this worker (sparsegap.threads)
    torch.set_num_threads(1)


@contextlib.contextmanager
def executor_for(spec: str = "local") -> Iterator[ProcessPoolExecutor | None]:
    """``with executor_for("auto") as ex: run_all(configs, store, executor=ex)``: a process pool, or None
    (train in this process). The pool's workers are stopped when the block ends, also on an error or Ctrl-C."""
    n = parse_executor(spec)
    if n == 0:
        yield None
        return
    pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(n,))
    try:
        yield pool
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's workers now (a run they were training resumes from its checkpoint next time).

    The pool's own management thread also reaps workers that die, so a ``join`` here can return before the
    exit is recorded: poll ``is_alive`` until every worker is seen gone."""
    import time
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for proc in processes:
        proc.terminate()
    for signal_, wait in (("terminate", 10.0), ("kill", 5.0)):
        deadline = time.monotonic() + wait
        while any(p.is_alive() for p in processes) and time.monotonic() < deadline:
            time.sleep(0.05)
        if signal_ == "terminate":
            for proc in processes:
                if proc.is_alive():
                    proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)
