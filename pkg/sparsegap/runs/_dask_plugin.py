"""The dask worker plugin of :mod:`sparsegap.runs.executors`, in a module of its own because it subclasses a class of
``distributed`` (the extra ``pkg[dask]``), which the rest of the package does not import."""

from __future__ import annotations

from distributed import WorkerPlugin


class WarmUp(WorkerPlugin):
    """On every worker, at its start: one torch thread, and :func:`sparsegap.runs.workers.warm_up`."""

    name = "sparsegap-warm-up"

    def setup(self, worker) -> None:
        import torch

        from .workers import warm_up
        torch.set_num_threads(1)
        warm_up()
