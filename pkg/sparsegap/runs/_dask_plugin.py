"""The dask worker plugin of :mod:`sparsegap.runs.executors`, in a module of its own because it subclasses a class of
``distributed`` (the extra ``pkg[dask]``), which the rest of the package does not import."""

from __future__ import annotations

from distributed import WorkerPlugin


class WarmUp(WorkerPlugin):
    """On every worker, at its start: one torch thread, and :func:`sparsegap.runs.workers.warm_up`. With ``gpus``
    (a Slurm job's ``gpus``: one worker per GPU), the worker first pins itself to a GPU of its job that no other
    worker of the job holds (:func:`sparsegap.runs.workers.claim_gpu`, lock files per job in the node's temporary
    folder) and takes the job's cores shared out among its GPUs as torch threads."""

    name = "sparsegap-warm-up"

    def __init__(self, gpus: bool = False):
        self.gpus = gpus

    def setup(self, worker) -> None:
        import os
        import tempfile

        import torch

        from .threads import cores
        from .workers import claim_gpu, visible_gpus, warm_up
        threads = 1
        if self.gpus:
            ids = visible_gpus()
            job = os.environ.get("SLURM_JOB_ID", str(os.getppid()))    # the lock files of this job's workers
            claim_gpu(ids, os.path.join(tempfile.gettempdir(), f"sparsegap-gpus-{job}"))
            threads = max(1, cores() // max(1, len(ids)))
        torch.set_num_threads(threads)
        warm_up()
