"""The torch thread policy: how many intra-op threads a training process uses.

PyTorch starts as many threads as there are cores. For the book's networks that is the wrong
default: a step of a small network is a few dozen tiny kernels, and splitting each of them over
two threads costs more in synchronisation than it saves in arithmetic. When another process
computes on the same cores, each barrier waits for a descheduled thread, and a small network
crawls (measured: an estimator check went from 6 s with one thread to more than 60 s with two,
next to another torch process).

The rule (:func:`threads_for`):

* a model (or a batched stack of models: pass ``macs = members x forward MACs``) whose forward pass
  of one batch costs less than :data:`THREADS_MIN_MACS` (50M multiply-accumulates): one thread;
* a larger one: the cores shared out among the parallel workers, ``cores // n_workers``; on two
  cores that means two threads only for a single large model training alone;
* ``$SPARSEGAP_THREADS``, when set, overrides the rule (a machine where it is measured otherwise).

Measured on this kind of machine (2 cores), one training step of one network at 1 and 2 threads,
best of interleaved repetitions (``tests/bench/bench_batched.py`` prints the table again). The
machine is shared, and the spread is the point: with the second core free two threads help the
larger networks; with anything else running they lose, badly for small steps.

==============================  ========  ========  =====================  =====================
model, batch                    fwd MACs  1 thread  2 threads, core free   2 threads, core busy
==============================  ========  ========  =====================  =====================
12-bit MLP, batch 12              0.06M    0.6 ms   0.87x                  0.34x
LeNet-300-100, batch 128           34M     2.0 ms   1.25x                  0.14-0.74x
LeNet-5 28x28, batch 128           53M      14 ms   1.85x                  0.34-0.94x
12-bit MLP x18 batched, batch 12    1M   (epoch)    0.97x
LeNet-300-100 x34 batched         1.2G   (epoch)    1.71x
==============================  ========  ========  =====================  =====================

So one thread is never far from the best and two can be 3-7x worse; two threads are kept for
steps of at least 50M MACs, where they are measured to gain 1.7-1.85x.

A thread count can change the order in which a product or a reduction sums, hence a run's bits, so
two places fix it whatever the parallelism (issue 22, deterministic builds): the run store trains
every run of the batched trainer at one thread (a member's count then never depends on how many
members its batch has: :func:`sparsegap.runs.batch_eligible`), and the book build gives every kernel,
and the workers an executor starts from it, one thread (``$SPARSEGAP_THREADS=1``) at any ``-j``; so the
stacked LeNet-300-100s, which a one-kernel build used to give both cores, now train at one thread
there too (``tests/bench/bench_batched.py`` prints what that costs).

:func:`use_threads` sets the count for a block and restores it; :func:`thread_env` gives the
environment variables that fix it in a child process (a notebook kernel, a pool worker) before
torch is imported there; :func:`check_workers` refuses 0 workers, or more workers than cores
unless asked for.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from torch import nn

__all__ = ["THREADS_ENV", "THREADS_MIN_MACS", "WORKERS_ENV", "check_workers", "cores", "threads_for", "thread_env",
           "use_threads", "workers"]

# One forward pass of a training batch must cost at least this many multiply-accumulates before a
# single training process uses more than one thread (see the module docstring for the measurements).
THREADS_MIN_MACS = 50_000_000
THREADS_ENV = "SPARSEGAP_THREADS"


def cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def check_workers(max_workers: int | None, *, oversubscribe: bool = False) -> int:
    """The number of parallel worker processes to use: ``None`` means one per core.

    0, negative or non-int values are errors, and so is more workers than cores unless
    ``oversubscribe=True`` says that it is meant.
    """
    n_cores = cores()
    if max_workers is None:
        return n_cores
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ValueError(f"max_workers must be a positive int or None (one per core), got {max_workers!r}")
    if max_workers > n_cores and not oversubscribe:
        raise ValueError(f"max_workers={max_workers} is more than the {n_cores} cores this process may use; "
                         "each worker would slow the others down. Use at most "
                         f"{n_cores}, or pass oversubscribe=True if you mean it")
    return max_workers


WORKERS_ENV = "SPARSEGAP_WORKERS"


def workers() -> int:
    """Training processes sharing this machine, as the book build announces them to its kernels
    (``$SPARSEGAP_WORKERS``); 1 when unset."""
    value = os.environ.get(WORKERS_ENV, "")
    if not value:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"${WORKERS_ENV} must be a positive int, got {value!r}")
    return int(value)


def threads_for(n_workers: int = 1, model: nn.Module | None = None, *, batch_size: int = 1,
                input_shape: tuple[int, ...] | None = None, macs: int | None = None) -> int:
    """Torch threads for each of ``n_workers`` processes training ``model`` at ``batch_size``.

    One thread for a model whose forward pass of one batch costs less than
    :data:`THREADS_MIN_MACS`; otherwise the cores shared out among the workers (``cores //
    n_workers``, at least 1), which on 2 cores means 2 threads only for a single large model.
    For a batch of N networks trained as one, pass ``macs=N * forward_macs(model, batch_size)``.
    ``$SPARSEGAP_THREADS`` overrides the rule. Pass ``macs`` directly, or ``model`` (and ``input_shape`` for a model
    that starts with a convolution) to have it counted; with neither, the model counts as small.
    """
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be a positive int, got {n_workers!r}")
    forced = os.environ.get(THREADS_ENV)
    if forced:
        if not forced.isdigit() or int(forced) < 1:
            raise ValueError(f"${THREADS_ENV} must be a positive int, got {forced!r}")
        return int(forced)
    if not _large(model, batch_size, input_shape, macs):
        return 1
    return max(1, cores() // n_workers)  # the cores shared out, never oversubscribed


def _large(model, batch_size, input_shape, macs) -> bool:
    if macs is None:
        if model is None:
            return False
        from ..batched import forward_macs
        macs = forward_macs(model, batch_size, input_shape)
    return macs >= THREADS_MIN_MACS


@contextlib.contextmanager
def use_threads(n: int) -> Iterator[int]:
    """``with use_threads(1): train(...)``: torch's intra-op thread count for the block, then the old one."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of threads must be a positive int, got {n!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(old)


def thread_env(n: int, env: dict | None = None) -> dict:
    """``env`` (default: this process's) with the thread count of the BLAS/OpenMP pools set to ``n``,
    for a child process that imports torch afterwards."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of threads must be a positive int, got {n!r}")
    out = dict(os.environ if env is None else env)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        out[var] = str(n)
    return out
