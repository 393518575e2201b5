"""Sweeps: the run of one config (:func:`get_or_train`) or of many (:func:`run_all`), parents first.

A sweep trains in waves: every run whose parents are done is ready, the ready runs train (batched where
they can), which makes their children ready, and so on down the chains. Where the runs train is an
executor's business (:mod:`sparsegap.runs.executors`); many processes may share one store, since each
run is trained under its lock.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from typing import Sequence

from tqdm.auto import tqdm

from ..config import RunConfig
from ..train import progress_enabled, resolve_device
from .job import Job, batch_eligible, prepare, tidy_finished, train_jobs, train_locked
from .materials import own_random_state
from .recipes import chain, check_runnable, needs
from .store import DamagedRun, FilesChanged, MissingRun, Run, RunStore, check_config, check_store


def get_or_train(cfg: RunConfig, store: RunStore | None = None, *, device: str = "auto",
                 progress: bool = True) -> Run:
    """The run for ``cfg``: from the store if it is there, else trained (its parent first) and stored.

    Safe for many processes sharing one store: the run is trained under its lock, once; the others
    wait for it and load it. A finished run is loaded without waiting for any lock.
    """
    check_config(cfg, "cfg")
    store = check_store(store, "get_or_train")
    device = resolve_device(device)           # a bad device fails here, before any directory exists
    check_runnable(cfg)
    try:
        run = store.load(cfg)                 # no lock needed: DONE comes last, checksums catch the rest
    except (MissingRun, DamagedRun):
        pass                                  # decided under the lock
    else:
        tidy_finished(run, store)
        return run
    # The parent first, and outside this run's lock: a process never holds one lock while it
    # waits for another, so no two processes can wait for each other.
    parent = get_or_train(cfg.parent, store, device=device, progress=progress) if cfg.parent else None
    if cfg.partner is not None:
        get_or_train(cfg.partner, store, device=device, progress=progress)
    try:
        with store.lock(cfg) as lock, own_random_state():
            return train_locked(cfg, store, parent, lock, device, progress)
    except FilesChanged as e:   # someone swapped a file while it trained: once more, from the start
        warnings.warn(f"{e}; training it again")
        with store.lock(cfg) as lock, own_random_state():
            return train_locked(cfg, store, parent, lock, device, progress)


def run_all(configs: Sequence[RunConfig], store: RunStore | None = None, *, executor=None,
            device: str = "auto", progress: bool = True, batch: bool | None = None) -> list[Run]:
    """Train (or load) a sweep of independent configs.

    Parents are trained first, once each and stage by stage down their chains (dense runs, their
    sparse children, an imp chain's later rounds), so that runs sharing a parent never train it
    twice; a run whose ancestors are missing gets them trained too. ``executor`` is a keyword of
    :mod:`sparsegap.runs.executors` ("local", "processes:N", "auto", "dask", "dask:ADDRESS", "slurm:PATH"),
    the one this process keeps for it if a notebook activated it, else one started for this sweep; or anything
    with ``map`` (a process pool, :class:`~sparsegap.runs.executors.DaskExecutor`). None: this process, always
    (a notebook passes its ``executor`` parameter explicitly). With an executor, each batchable group is one task and every
    other run a task of its own. Processes sharing the store (this sweep's workers, or other sweeps)
    never train a run twice: each run is trained under its lock.

    Configs that the batched trainer takes (:func:`batch_eligible`: plain MLPs of the measured size, no mask
    updater, data schedule, Fisher regularizer or gradient tracker) always train through it
    (:mod:`sparsegap.batched`), in this process or a worker, alone or with others; the rest through
    :func:`~sparsegap.train.train`. ``batch=None`` or ``True``: the ready runs of a wave that share a model,
    data and training schedule (seeds, masks, sparsities, learning rates and trackers may differ) train as one
    batched model, in chunks of :data:`MAX_BATCH`; ``False`` (or ``SPARSEGAP_BATCH=0`` in the environment, e.g.
    for a whole book build): each alone. Neither changes a run's bits: a member's weights and history are
    bitwise those it gets alone (one torch thread), so what a run stores does not depend on the batch, the
    executor or the process that trained it. The store still sees ordinary runs, each with its own checkpoint
    and lock; a member's meta.json records the size of its batch.
    """
    if isinstance(configs, RunConfig):
        raise TypeError("run_all(configs=...) takes a list of RunConfig, got a single RunConfig; pass [cfg]")
    from .executors import check_executor, named
    check_executor(executor)                   # a clear error before anything starts
    if isinstance(executor, str):              # the keyword: kept by this process (a notebook's), or started for this sweep
        with named(executor) as ex:
            return run_all(configs, store, executor=ex, device=device, progress=progress, batch=batch)
    configs = list(configs)
    for i, c in enumerate(configs):
        check_config(c, f"run_all(configs=...): configs[{i}]")
    if batch is not None and not isinstance(batch, bool):
        raise TypeError(f"run_all(batch=...) must be None (automatic), True or False, got {batch!r}")
    store = check_store(store, "run_all")
    device = resolve_device(device)
    for c in dict.fromkeys(configs):
        check_runnable(c)                  # every config, before anything trains
    # Waves: every run whose parent is done (or that has none) is ready; the ready runs train (batched
    # where they can), which makes their children ready, and so on down the chains. A child's mask
    # and start need its parent's solution. Runs of different depths train together when ready
    # together (an imp chain's next round beside the re-dense run of the round before).
    todo = [c for c in dict.fromkeys(a for c in configs for a in chain(c))]
    # A partial of a module-level function, not a lambda, so that process pools can pickle it.
    # workers of a pool print no progress bars (they would interleave in the same terminal)
    work = functools.partial(get_or_train, store=store, device=device, progress=progress and executor is None)
    if batch is None and os.environ.get("SPARSEGAP_BATCH", "1") == "0":
        batch = False
    pending = [c for c in todo if not store.is_done(c)]
    loaded: dict[RunConfig, Run] = {}
    with tqdm(total=len(todo), initial=len(todo) - len(pending), desc=f"runs ({len(pending)} to train)",
              disable=not progress_enabled(progress), leave=False) as bar:
        while pending:
            ready = [c for c in pending if all(store.is_done(n) for n in needs(c))]
            # none ready: their parents are being trained by another process; get_or_train waits for them
            ready = ready or pending
            if executor is not None:
                # a batched group is one task (never split over workers); the rest one run per task
                tasks = _tasks(ready, batch)
                group_work = functools.partial(_work_on_group, store=store, device=device)
                for task, runs in zip(tasks, executor.map(group_work, tasks)):
                    loaded |= dict(zip(task, runs))
            else:
                if batch is not False:
                    for group in _groups(ready):
                        if len(group) > 1:
                            _train_group(group, store, device, progress)
                for c in ready:            # trains (or waits for) what no group trained
                    loaded[c] = work(c)
            bar.update(len(ready))
            pending = [c for c in pending if c not in set(ready) and not store.is_done(c)]
    rest = [c for c in dict.fromkeys(configs) if c not in loaded]   # trained before this call: load them
    if rest:
        loaded |= dict(zip(rest, map(work, rest)))   # finished already: loaded here, not shipped to workers
    return [loaded[c] for c in configs]


# Largest batch run_all trains as one model. Beyond about 16 members the gain of batching small
# networks has flattened out (sparsegap.batched), while smaller batches let another process that
# needs runs of the same sweep (the curvature chapter beside the two-regimes one) lock and train the
# rest of it instead of waiting for one long batch.
MAX_BATCH = 16


def _groups(configs: list[RunConfig]) -> list[list[RunConfig]]:
    """Configs that one batched model can train: batch-eligible, with equal model, data (but for the label noise:
    the inputs are the same) and training schedule (all but lr), in chunks of at most MAX_BATCH."""
    groups: dict = {}
    for c in configs:
        if not batch_eligible(c):
            continue
        key = (c.model, dataclasses.replace(c.data, noise=0.0, noise_seed=0), dataclasses.replace(c.train, lr=1.0))
        groups.setdefault(key, []).append(c)
    return [g[i: i + MAX_BATCH] for g in groups.values() for i in range(0, len(g), MAX_BATCH)]


def _tasks(ready: list[RunConfig], batch: bool | None) -> list[list[RunConfig]]:
    """The tasks of one wave for an executor: each group of two or more batch-eligible runs is one task, every
    other run a task of its own (``batch=False``: one run per task)."""
    groups = [g for g in _groups(ready) if len(g) > 1] if batch is not False else []
    grouped = {c for g in groups for c in g}
    return groups + [[c] for c in ready if c not in grouped]


def _work_on_group(task: list[RunConfig], *, store: RunStore, device) -> list[Run]:
    """One executor task: a group trained as one batched model, then every member loaded (or trained, if
    another process held it). No progress bars in workers."""
    if len(task) > 1:
        _train_group(task, store, device, False)
    return [get_or_train(c, store, device=device, progress=False) for c in task]


def _train_group(group: list[RunConfig], store: RunStore, device, progress: bool) -> None:
    """Train the members of ``group`` (batch-eligible runs of one model, data and schedule) that no other
    process is training as one batched model.

    A member locked by another process is left to it (run_all's loading pass waits for it); a member that
    is alone, or left over after a crash, later trains alone by the same trainer, to the same bits.
    """
    parents = {c.parent: get_or_train(c.parent, store, device=device, progress=progress)
               for c in group if c.parent is not None}
    jobs: list[Job] = []
    try:
        with own_random_state():
            for cfg in group:
                lock = store.lock(cfg)
                if not lock.try_acquire():
                    continue
                job = prepare(cfg, store, parents.get(cfg.parent), lock)
                if isinstance(job, Run):
                    lock.release()
                else:
                    jobs.append(job)
            if jobs:
                train_jobs(jobs, store, device, progress)
    except FilesChanged as e:   # that member is left without DONE: run_all's loading pass trains it again
        warnings.warn(f"{e}; it trains again")
    finally:
        for job in jobs:
            job.lock.release()
