"""What a worker process does before its first run, whoever started it: a process pool (``processes:N``),
a Dask worker (at its start, by a plugin) or a Slurm job. It pays its one-time costs (imports, torch's
lazy start-up) and takes the thread policy of a worker: one torch thread. A pool worker also ends with its
parent, releasing the locks of the runs it trains (:func:`follow_parent`).
"""

from __future__ import annotations

import os
from pathlib import Path
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


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as the ids ``CUDA_VISIBLE_DEVICES`` names them (its list when set,
    else 0 .. torch.cuda.device_count() - 1; none without CUDA)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [x.strip() for x in listed.split(",") if x.strip() and x.strip() != "-1"]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


_GPU_LOCKS: list[int] = []


def claim_gpu(ids: list[str], lock_dir: str | os.PathLike, per_gpu: int = 1) -> str:
    """Pin this process to the first GPU of ``ids`` that no other process holds, before CUDA starts in it: a lock
    file per GPU in ``lock_dir`` (held for the process's life, released by the system when it ends, so a worker
    that replaces a dead one takes over its GPU), then ``CUDA_VISIBLE_DEVICES`` set to that one id, which the
    process's runs see as ``cuda:0``. The pool of :func:`~.executors.executor_for` ("gpus") and the dask workers
    of a Slurm job with ``gpus`` pin themselves so, one worker per GPU (``per_gpu`` workers each: a lock per slot,
    the GPUs filled one slot at a time, so that the workers spread over all of them)."""
    import fcntl
    Path(lock_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    for slot, gid in ((slot, gid) for slot in range(per_gpu) for gid in ids):
        fd = os.open(Path(lock_dir) / f"gpu-{gid}-{slot}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _GPU_LOCKS.append(fd)
        os.environ["CUDA_VISIBLE_DEVICES"] = gid
        return gid
    raise RuntimeError(f"every GPU of {ids} is held by other workers ({per_gpu} each; lock files in {lock_dir}): "
                       f"a pool of more workers than that")


def init_gpu_worker(n: int, ids: list[str], lock_dir: str, per_gpu: int = 1) -> None:
    """The start of a worker of the "gpus" pool: it follows its parent, pins itself to one GPU of ``ids``
    (:func:`claim_gpu`), takes the cores shared out among the ``n`` workers as its torch threads, and warms up."""
    import torch

    from .threads import cores
    follow_parent()
    claim_gpu(ids, lock_dir, per_gpu)
    os.environ[WORKERS_ENV] = str(n)
    torch.set_num_threads(max(1, cores() // n))
    warm_up()


def init_worker(n: int) -> None:
    """The start of a ``processes:N`` pool worker: it follows its parent (:func:`follow_parent`), takes the thread
    policy of a worker and warms up."""
    import torch
    follow_parent()
    os.environ[WORKERS_ENV] = str(n)   # the thread policy of every run in this worker (sparsegap.runs.threads)
    torch.set_num_threads(1)
    warm_up()


# ------------------------------------------------------------------------------ a worker's end
# A pool worker whose parent was killed (SIGKILL, SIGTERM) is reparented to init and, left alone, trains the
# runs still queued, then idles forever holding its memory (measured: a 1.05 GB worker, 4 kills out of 4).
# It must end, and release the locks of the runs it trained: a lock left behind would be taken over (its pid
# is dead), but only with a warning, and a SIGTERM (the pool's stop_workers, the default action) used to
# end a worker without unwinding the ``with lock`` blocks. So: SIGTERM raises SystemExit in the main thread,
# which unwinds those blocks (the run resumes from its last checkpoint next time), and a reaper thread ends
# the process once no lock is held, since the pool's worker loop catches every exception of a task and would
# wait for the next one. The parent's death is seen at once on Linux (a parent-death signal) and within
# PARENT_POLL seconds elsewhere (a watchdog thread comparing os.getppid() with the parent it started with).

PARENT_POLL = 0.5     # seconds between two looks of the watchdog at the parent
# Seconds a stopping worker waits for its locks to be released before it releases them itself and ends: below
# the pool's own grace (executors.stop_workers, 10 s) before its SIGKILL, which would leave the locks behind.
STOP_GRACE = 5.0
_FOLLOW: dict[str, Any] = {}


def follow_parent(parent: int | None = None) -> None:
    """End this process when ``parent`` dies or when it gets SIGTERM, releasing the run locks it holds first.
    ``parent``: default the process that started this one (multiprocessing's parent, which is known even if it
    died before this call), else the parent now. Call it in the main thread of a worker process, at its start."""
    import multiprocessing
    import signal
    import threading
    if parent is None:
        started_by = multiprocessing.parent_process()
        parent = started_by.pid if started_by is not None else os.getppid()
    _FOLLOW.update(parent=parent, stopping=False)
    signal.signal(signal.SIGTERM, _on_stop_signal)
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, _on_parent_death_signal)
        _parent_death_signal(signal.SIGUSR1)
    threading.Thread(target=_watch_parent, args=(parent,), name="sparsegap-parent-watchdog", daemon=True).start()


def _parent_death_signal(sig: int) -> None:
    """Linux: have the kernel send ``sig`` when the parent dies. The kernel sends it when the parent *thread*
    that started this process ends (a pool starts its workers from whichever thread submits first), so its
    handler checks that the parent process itself is gone."""
    import sys
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass            # the watchdog thread still sees it


def _parent_gone() -> bool:
    return os.getppid() != _FOLLOW.get("parent")


def _on_parent_death_signal(signum, frame) -> None:
    if _parent_gone():
        _stop(f"its parent process {_FOLLOW.get('parent')} is gone")


def _on_stop_signal(signum, frame) -> None:
    _stop(f"signal {signum}")


def _watch_parent(parent: int) -> None:
    import signal
    import time
    import threading
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    # to the main thread, which runs the handler (and is woken from a blocking read by it)
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
    else:
        os.kill(os.getpid(), signal.SIGTERM)


def _stop(reason: str) -> None:
    """In the main thread: end the process, after unwinding the run it trains (if it holds a run's lock)."""
    import threading
    from .lock import held_locks, releasing
    if not held_locks():
        os._exit(1)
    if not _FOLLOW.get("stopping"):
        _FOLLOW["stopping"] = True
        threading.Thread(target=_end_when_unlocked, name="sparsegap-worker-reaper", daemon=True).start()
        # A stop that lands inside a lock's release (a Ctrl-C's KeyboardInterrupt unwinding the run, then the
        # pool's SIGTERM) lets the release finish: raised there, it would leave the lock file behind. The reaper
        # ends the process once the lock is gone.
        if not releasing():
            raise SystemExit(f"sparsegap worker {os.getpid()} stops: {reason}")


def _end_when_unlocked() -> None:
    import time
    from .lock import held_locks
    deadline = time.monotonic() + STOP_GRACE
    while held_locks() and time.monotonic() < deadline:
        time.sleep(0.02)
    # Still held: the main thread is stuck in a long call, or the stop landed inside the release itself (a
    # Ctrl-C's KeyboardInterrupt, then the pool's SIGTERM). The process ends right after: no write follows.
    for lock in held_locks():
        lock.release()
    os._exit(1)


def one_thread(fn: Callable, item: Any) -> Any:
    """A dask task: the run's thread policy pinned to one thread, whatever the worker was started with."""
    import torch
    os.environ[THREADS_ENV] = "1"
    torch.set_num_threads(1)
    return fn(item)
