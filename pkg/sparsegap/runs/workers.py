"""What a worker process does before its first run, whoever started it: a process pool (``processes:N``),
a Dask worker (at its start, by a plugin) or a Slurm job. It pays its one-time costs (imports, torch's
lazy start-up) and takes the thread policy of a worker: one torch thread.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from .threads import THREADS_ENV, WORKERS_ENV


def warm_up() -> float:
    """Pay a new worker process's one-time costs before its first run: import the training code and take one
    SGD step of a tiny network, which loads what torch imports lazily on first use (its compiler front end,
    behind every ``optimizer.step``). Measured here: the first LeNet-300-100 run in a fresh worker took
    2.8 s against 1.5 s for the next ones, and 1.7 s after this warm-up. Returns the seconds it took."""
    import time
    t0 = time.perf_counter()
    import torch
    from .. import train  # noqa: F401  (the modules a run needs, and what they import)
    from . import job, store  # noqa: F401
    with torch.random.fork_rng():          # the caller's random stream is left as it was
        net = torch.nn.Linear(4, 2)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        torch.nn.functional.cross_entropy(net(torch.randn(8, 4)), torch.arange(8) % 2).backward()
        opt.step()
    _WARM["seconds"] = time.perf_counter() - t0
    return _WARM["seconds"]


_WARM: dict[str, float] = {}


def warm_up_seconds() -> float | None:
    """How long :func:`warm_up` took in this process, or None if it has not run here."""
    return _WARM.get("seconds")


def init_worker(n: int) -> None:
    import torch
    os.environ[WORKERS_ENV] = str(n)   # the thread policy of every run in this worker (sparsegap.runs.threads)
    torch.set_num_threads(1)
    warm_up()


def one_thread(fn: Callable, item: Any) -> Any:
    """A dask task: the run's thread policy pinned to one thread, whatever the worker was started with."""
    import torch
    os.environ[THREADS_ENV] = "1"
    torch.set_num_threads(1)
    return fn(item)
