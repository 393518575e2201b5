"""The run store as a package: every trained network kept under the hash of its config, trained once.

One concept per module, each importing only the ones above it in this list:

* :mod:`.atomic`: durable atomic writes (temporary, fsync, rename) and the fault-injection hook;
* :mod:`.lock`: :class:`RunLock`, the per-run lock that many processes and hosts share;
* :mod:`.materials`: a config's data and network, built alike in every process;
* :mod:`.store`: :class:`Run`, :class:`RunStore`, the on-disk format and its checksums;
* :mod:`.recipes`: one :class:`~.recipes.Recipe` per run kind (start state, mask updater, label,
  runnability check) in the :data:`~.recipes.RECIPES` registry;
* :mod:`.threads`: the torch thread policy; :mod:`.job`: one run trained into the store under its lock;
* :mod:`.sweep`: :func:`get_or_train`, :func:`run_all`, waves and batched groups;
* :mod:`.workers`: what a worker process does first; :mod:`.executors`: where a sweep's runs train
  (in process, a process pool, Dask, Slurm); :mod:`.plan`: what a sweep will cost before it runs.

``from sparsegap.runs import RunStore, run_all, ...`` is the public surface; the names below are it.
"""

from .atomic import atomic_save, atomic_write_text
from .lock import RunLock
from .materials import build_model_for, load_data
from .recipes import PRUNE_STREAM, RECIPES, SCRATCH_INIT_OFFSET, Recipe, check_runnable, load_curve, pruning_masks
from .store import REPO_ROOT, DamagedRun, FilesChanged, LinkedPath, MissingRun, Run, RunStore, StaleRun, default_root
from .job import batch_eligible
from .sweep import MAX_BATCH, get_or_train, run_all

__all__ = ["MAX_BATCH", "PRUNE_STREAM", "RECIPES", "REPO_ROOT", "SCRATCH_INIT_OFFSET", "DamagedRun", "FilesChanged",
           "LinkedPath", "MissingRun", "Recipe", "Run", "RunLock", "RunStore", "StaleRun", "atomic_save",
           "atomic_write_text", "batch_eligible", "build_model_for", "check_runnable", "default_root", "get_or_train",
           "load_curve", "load_data", "pruning_masks", "run_all"]
