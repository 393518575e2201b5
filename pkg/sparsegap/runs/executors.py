"""Where the runs of a sweep train: one keyword for :func:`sparsegap.runs.run_all`, the notebooks (their
``executor`` parameter) and the book build (``--executor``).

* ``"local"``: in this process, one run (or one batched group of small runs) after another;
* ``"processes:N"``: a pool of N spawned processes on this machine, one torch thread each. N above
  :data:`MAX_PROCESSES_PER_CORE` times the cores this process may use (or above :data:`MAX_PROCESSES`) is
  refused, not clamped: so many single-threaded workers only thrash and each holds a copy of torch (about 1 GB
  measured), so such an N is a typo, and a silently smaller pool would hide it;
* ``"auto"``: ``processes:k`` with k = the cores this process may use divided by the training
  processes already sharing the machine (``$SPARSEGAP_WORKERS``, set by a parallel book build),
  and ``"local"`` when k < 2. Alone on two cores that is two processes; inside a two-job book
  build it is ``"local"``, so the build never oversubscribes the cores;
* ``"gpus"``: a pool of one spawned process per GPU this process sees (``CUDA_VISIBLE_DEVICES``), each pinned
  to its own GPU (:func:`sparsegap.runs.workers.claim_gpu`: its runs see it as ``cuda:0``) with the cores shared
  out as torch threads; ``"gpus:0,2"`` names the GPUs, ``"gpus*4"`` (or ``"gpus:0,2*4"``) runs 4 workers on each:
  at the papers' batch sizes a run's steps are launch-bound, so several runs in processes of their own keep one GPU
  busier than one run can. Without CUDA it is an error, not a silent CPU pool;
* ``"dask"``: a ``dask.distributed.LocalCluster`` on this machine (one single-threaded worker process
  per free core, on the loopback interface); ``"dask:ADDRESS"`` (e.g. ``"dask:tls://10.0.0.5:8786"``):
  a running scheduler;
* ``"slurm:PATH"``: a ``dask_jobqueue.SLURMCluster`` described by the YAML file at PATH (see
  :func:`slurm_cluster`). Dask, dask-jobqueue and cryptography come with the extra ``pkg[dask]``.

What each one exposes. A dask scheduler runs whatever task a connected client sends, as the user who
started its workers, so whoever can connect can run code as the sweep's user:

* ``local``: nothing; ``processes:N`` and ``gpus``: nothing either (the pool talks to its workers through pipes, and a
  worker ends when its parent dies: :func:`sparsegap.runs.workers.follow_parent`);
* ``dask``: a scheduler and workers listening on 127.0.0.1, so reachable by every local user, but with TLS
  and client certificates (``Security.temporary()``: a key and certificate made for this cluster, kept in
  memory and handed to its workers only): a client without them cannot connect;
* ``dask:ADDRESS``: nothing of its own; it connects to a scheduler someone else started, as secure as that
  scheduler is. Give such a scheduler TLS (a ``tls://`` address, certificates in dask's configuration
  ``distributed.comm.tls``, which the client here reads too);
* ``slurm:PATH``: a scheduler on this host listening on every interface (the compute nodes must reach
  it), by default with TLS and a temporary certificate (``security: temporary``) whose worker copy is
  written, readable by this user only, to ``shared_temp_directory`` (a folder the compute nodes see;
  default the home folder); or with the certificates named in the YAML; ``security: none`` turns TLS off
  (with a warning): then anyone who can reach the scheduler can run code as this user.

The run store makes every run independent, idempotent and lock-protected, so an executor is only a way
of calling ``get_or_train`` on several configs at once. Each task is one run, or one batched group of
small runs (never split over workers). On Dask every task runs with one torch thread
(``torch.set_num_threads(1)`` inside the task: two workers with default threads on two cores thrash),
with ``pure=False``, a key made from the run hash, and retries: a run lost with its worker is run again
and resumes from its last checkpoint.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import math
import multiprocessing
import os
import re
import uuid
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .threads import cores, workers
from .workers import init_gpu_worker, init_worker, one_thread, visible_gpus

EXECUTORS = ("local", "processes:N", "auto", "gpus", "gpus:IDS", "gpus*K", "dask", "dask:ADDRESS", "slurm:PATH")
MAX_PER_GPU = 16     # gpus*K: more workers than this on one GPU is refused (each holds a CUDA context, ~0.5 GB)
MAX_PROCESSES_PER_CORE = 4   # processes:N above this many per core is refused (see the module docstring)
MAX_PROCESSES = 1024
CONNECT_TIMEOUT = 5.0   # seconds to reach a dask scheduler before saying it is unreachable
RETRIES = 2             # times a dask task lost with its worker is run again
# Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, so that glibc hands freed memory back to
# the system at once; torch frees and allocates the same buffers at every step, and that cost a small network
# 30% of its speed here (tests/bench/bench_dask.py). glibc's own default (128 KiB, adaptive) instead; and no
# statistical profiler sampling every thread's stack every 10 ms. The dashboard's system monitor (every 0.5 s)
# and the event loop's health tick (every 20 ms) are slowed to 5 s and 1 s: on two cores shared with the
# training, the defaults cost a sweep of 8 small runs 4% (6.75 s against 6.50 s, means of 6 runs each).
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                 "distributed.worker.profile.enabled": False,
                 "distributed.admin.system-monitor.interval": "5s",
                 "distributed.admin.tick.interval": "1s"}
# The same on Slurm's compute nodes, through dask's environment variables (glibc's default threshold is 128 KiB
# and adaptive; a fixed 128 MiB trims as rarely).
SLURM_PROLOGUE = ("export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_=134217728",
                  "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False",
                  "export DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL=5s",
                  "export DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL=1s")
SLURM_KEYS = {
    "cores": "cores per job (each core one single-threaded worker process, unless gpus is set)",
    "gpus": "GPUs per job: one worker per GPU, pinned to it, with the job's cores shared out as its threads "
            "(adds --gres=gpu:N unless job_extra_directives asks for GPUs itself)",
    "memory": 'memory per job, e.g. "16GB"',
    "walltime": 'the job\'s time limit, "HH:MM:SS"',
    "jobs": "how many jobs to keep running (default 1)",
    "job_extra_directives": 'extra #SBATCH lines, e.g. ["--gres=gpu:1", "--partition=gpu"]',
    "queue": "the partition (same as --partition)",
    "account": "the account to charge",
    "lifetime_margin": "minutes before the walltime at which a worker retires (default 10% of it, at least 2)",
    "job_script_prologue": 'shell lines run before the worker starts, e.g. ["source ~/venv/bin/activate"]',
    "local_directory": "scratch folder of the workers on the compute nodes",
    "security": 'TLS between scheduler, workers and client: "temporary" (default: a certificate made for this '
                'cluster), a mapping {ca_file, cert, key} of PEM files, or "none" (no TLS: anyone who reaches the '
                'scheduler can run code as you)',
    "shared_temp_directory": 'with security "temporary": a folder the compute nodes see, where the workers\' '
                             'copy of the certificate is written (default "~")',
}
SLURM_TLS_FILES = ("ca_file", "cert", "key")


@dataclass(frozen=True)
class ExecutorSpec:
    kind: str            # local, processes, gpus, dask, slurm
    workers: int = 0     # processes / LocalCluster workers
    gpus: tuple[str, ...] = ()   # the gpus pool's devices, as CUDA_VISIBLE_DEVICES names them
    per_gpu: int = 1             # the gpus pool's workers on each device
    address: str = ""    # dask scheduler address
    path: str = ""       # slurm YAML file


def parse_executor(spec: object) -> ExecutorSpec:
    """What ``spec`` asks for (see the module docstring); a clear error for anything else."""
    if not isinstance(spec, str):
        raise TypeError(f"executor must be a string, one of {EXECUTORS}, got {spec!r} of type {type(spec).__name__}")
    key = spec.strip()
    low = key.lower()
    if low == "local":
        return ExecutorSpec("local")
    if low == "auto":
        n = cores() // workers()
        return ExecutorSpec("processes", n) if n >= 2 else ExecutorSpec("local")
    if low.startswith("processes:"):
        count = low.split(":", 1)[1].strip()
        if count.isdecimal() and int(count) >= 1:
            n, limit = int(count), min(MAX_PROCESSES, MAX_PROCESSES_PER_CORE * cores())
            if n > limit:
                raise ValueError(f"executor={spec!r}: {n} processes is more than {limit} ({MAX_PROCESSES_PER_CORE} per "
                                 f"core of the {cores()} this process may use, at most {MAX_PROCESSES}); each is a "
                                 f"single-threaded worker holding its own torch, so more only thrash. Use "
                                 f"processes:N with 1 <= N <= {limit}, or 'auto'")
            return ExecutorSpec("processes", n)
    if low == "gpus" or low.startswith(("gpus:", "gpus*")):
        body, _, per = low[4:].partition("*")
        if per and not (per.strip().isdecimal() and 1 <= int(per) <= MAX_PER_GPU):
            raise ValueError(f"executor={spec!r}: gpus*K takes K workers per GPU, an int in [1, {MAX_PER_GPU}]")
        listed = body[1:].strip() if body.startswith(":") else None
        if body and listed is None:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {spec!r}")
        ids = visible_gpus() if listed is None else [x.strip() for x in listed.split(",")]
        if listed is not None and (not all(x.isdecimal() for x in ids) or len(set(ids)) != len(ids)):
            raise ValueError(f"executor={spec!r}: gpus:IDS takes distinct GPU numbers separated by commas, e.g. "
                             f"'gpus:0,1'")
        if not ids:
            raise ValueError(f"executor={spec!r} trains one worker per GPU, but this process sees no CUDA GPU "
                             f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); use 'auto' or "
                             f"'processes:N' on the CPU")
        k = int(per) if per else 1
        return ExecutorSpec("gpus", len(ids) * k, gpus=tuple(ids), per_gpu=k)
    if low == "dask":
        return ExecutorSpec("dask", max(1, cores() // workers()))
    if low.startswith("dask:") and key[5:].strip():
        return ExecutorSpec("dask", address=key[5:].strip())
    if low.startswith("slurm:") and key[6:].strip():
        return ExecutorSpec("slurm", path=key[6:].strip())
    raise ValueError(f"executor must be one of {EXECUTORS} (N a positive int, IDS GPU numbers such as 0,1, ADDRESS a "
                     f"dask scheduler's address, PATH a Slurm YAML file), got {spec!r}")


def check_executor(executor: object) -> None:
    """A clear TypeError for what ``run_all(executor=...)`` cannot use: it takes None (this process), a keyword
    (:func:`parse_executor` checks it) or an object with a ``map`` method (a process pool, a
    :class:`DaskExecutor`)."""
    if executor is None or isinstance(executor, str) or callable(getattr(executor, "map", None)):
        return
    raise TypeError(f"executor must be None (train in this process), one of {EXECUTORS} (N a positive int, "
                    f"ADDRESS a dask scheduler's address, PATH a Slurm YAML file), or an executor with a map method "
                    f"(a process pool, a DaskExecutor); got {executor!r} of type {type(executor).__name__}")


# ----------------------------------------------------------------------------------- process pools

def stop_workers(pool: ProcessPoolExecutor, grace: float = 10.0) -> None:
    """Stop a process pool's workers now: SIGTERM (a worker's ``finally`` blocks run), then SIGKILL for any
    still alive after ``grace`` seconds. A run they were training resumes from its checkpoint next time.

    The pool's own management thread also reaps workers that die, so a ``join`` here can return before the
    exit is recorded: poll ``is_alive`` until every worker is seen gone."""
    import time
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for wait, then_kill in ((grace, True), (5.0, False)):
        deadline = time.monotonic() + wait
        while any(p.is_alive() for p in processes) and time.monotonic() < deadline:
            time.sleep(0.05)
        for proc in processes:
            if then_kill and proc.is_alive():
                proc.kill()


# ------------------------------------------------------------------------------------------- dask

def _task_key(item: Any) -> str:
    """A readable, unique dask key from the run hash (a group: its first run and how many more)."""
    from ..config import RunConfig
    if isinstance(item, (list, tuple)) and item and isinstance(item[0], RunConfig):
        name = item[0].run_id + (f"+{len(item) - 1}" if len(item) > 1 else "")
    elif isinstance(item, RunConfig):
        name = item.run_id
    else:
        name = type(item).__name__
    return f"sparsegap-{name}-{uuid.uuid4().hex[:8]}"


class DaskExecutor:
    """``map`` over a ``dask.distributed.Client``: every item one task, results in order; the object
    :func:`sparsegap.runs.run_all` needs."""

    def __init__(self, client, retries: int = RETRIES):
        self.client = client
        self.retries = retries

    def map(self, fn: Callable, items: Iterable) -> list:
        items = list(items)
        if not items:
            return []
        futures = self.client.map(functools.partial(one_thread, fn), items, key=[_task_key(i) for i in items],
                                  pure=False, retries=self.retries)
        return self.client.gather(futures)


def connect(address: str, timeout: float = CONNECT_TIMEOUT):
    """A client of the dask scheduler at ``address``; a ValueError within ``timeout`` seconds if none answers."""
    from distributed import Client
    try:
        return Client(address, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        raise ValueError(f"executor='dask:{address}': no dask scheduler answers at {address!r} within {timeout:g} s "
                         f"({type(e).__name__}: {e})") from None


def read_slurm_file(path: str | os.PathLike) -> dict:
    """The Slurm YAML file's settings, checked: known keys only (:data:`SLURM_KEYS`), cores, memory and
    walltime required, each value of its type and range (a clear error naming the key, the value and what is
    allowed)."""
    import yaml
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as e:
        raise ValueError(f"executor='slurm:{path}': cannot read the Slurm YAML file ({type(e).__name__}: {e})") from None
    try:
        conf = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"executor='slurm:{path}': the file is not valid YAML ({e})") from None
    if not isinstance(conf, dict):
        raise ValueError(f"executor='slurm:{path}': the file must hold a mapping of settings "
                         f"({', '.join(SLURM_KEYS)}), got {type(conf).__name__}")
    unknown = sorted(set(conf) - set(SLURM_KEYS), key=str)
    if unknown:
        raise ValueError(f"executor='slurm:{path}': unknown setting(s) {unknown}; allowed: {', '.join(SLURM_KEYS)}")
    missing = [k for k in ("cores", "memory", "walltime") if k not in conf]
    if missing:
        raise ValueError(f"executor='slurm:{path}': missing {missing}; a job needs cores, memory and walltime")

    def bad(key: str, allowed: str):
        return ValueError(f"executor='slurm:{path}': {key} must be {allowed}, got {conf[key]!r}"
                          f" ({type(conf[key]).__name__})")

    for key in ("cores", "jobs", "gpus"):
        v = conf.get(key, 1)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise bad(key, "a positive int")
    if conf.get("gpus", 1) > conf["cores"]:
        raise bad("gpus", f"at most cores ({conf['cores']}): each GPU's worker needs a core of its own")
    if _size_bytes(conf["memory"]) is None:
        raise bad("memory", 'a size of at least 1MB with its unit, e.g. "16GB", "512MB", "4GiB"')
    wall = _walltime_seconds(conf["walltime"], path)
    for key in ("queue", "account", "local_directory", "shared_temp_directory"):
        if key in conf and not (isinstance(conf[key], str) and conf[key].strip() and "\n" not in conf[key]):
            raise bad(key, "one non-empty string (several partitions: one string, \"a,b\")" if key == "queue"
                      else "one non-empty string")
    for key in ("job_extra_directives", "job_script_prologue"):
        if key in conf and not (isinstance(conf[key], list) and all(isinstance(x, str) for x in conf[key])):
            raise bad(key, "a list of strings")
    if "lifetime_margin" in conf:
        m = conf["lifetime_margin"]
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m * 60 < wall:
            raise bad("lifetime_margin", f"a number of minutes > 0 and below the walltime ({wall / 60:g} minutes)")
    _slurm_security(conf, path)
    return conf


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]i?b?|b)\s*", re.IGNORECASE)
_UNITS = {"b": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15}


def _size_bytes(size: object) -> float | None:
    """Bytes of a size like dask's "16GB" (the unit required: a bare 16 would be 16 bytes), None if not one
    or below 1MB."""
    match = _SIZE.fullmatch(size) if isinstance(size, str) else None
    if match is None:
        return None
    unit = match.group(2).lower()
    n = float(match.group(1)) * (1024 ** " kmgtp".index(unit[0]) if "i" in unit else _UNITS[unit[0]])
    return n if n >= 1e6 else None


def _slurm_security(conf: dict, path):
    """The ``security`` setting, checked: "temporary", None for "none", or the mapping of its files (paths
    expanded). The certificate itself is made (or read) only with the cluster (:func:`_security_object`)."""
    sec = conf.get("security", "temporary")
    if sec == "temporary":
        folder = Path(conf.get("shared_temp_directory", "~")).expanduser()
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"executor='slurm:{path}': shared_temp_directory must be a folder you can write to, "
                             f"which the compute nodes see (the workers' copy of the temporary certificate goes "
                             f"there), got {conf.get('shared_temp_directory', '~')!r} ({folder})")
        return "temporary"
    if sec == "none":
        return None
    if isinstance(sec, dict) and set(sec) == set(SLURM_TLS_FILES) and all(isinstance(v, str) for v in sec.values()):
        files = {k: Path(v).expanduser() for k, v in sec.items()}
        unreadable = [f"{k}={str(f)!r}" for k, f in files.items() if not (f.is_file() and os.access(f, os.R_OK))]
        if not unreadable:
            return {k: str(f) for k, f in files.items()}
        raise ValueError(f"executor='slurm:{path}': security names files that are not readable files here: "
                         f"{', '.join(unreadable)}")
    raise ValueError(f"executor='slurm:{path}': security must be \"temporary\" (the default), \"none\" or a mapping "
                     f"of {', '.join(SLURM_TLS_FILES)} to PEM files (the CA's certificate, and the certificate and "
                     f"key of the scheduler, workers and client), got {sec!r}")


def _security_object(setting):
    """The ``Security`` of a checked ``security`` setting (:func:`_slurm_security`)."""
    if setting is None:
        return None
    from distributed.security import Security
    if setting == "temporary":
        return temporary_security("slurm")
    cert, key = setting["cert"], setting["key"]
    return Security(tls_ca_file=setting["ca_file"], tls_scheduler_cert=cert, tls_scheduler_key=key,
                    tls_worker_cert=cert, tls_worker_key=key, tls_client_cert=cert, tls_client_key=key,
                    require_encryption=True)


def temporary_security(kind: str):
    """A ``Security`` with a key and certificate made now, for one cluster (needs ``cryptography``)."""
    from distributed.security import Security
    try:
        return Security.temporary()
    except ImportError:
        raise ImportError(f"executor={kind!r} secures its cluster with TLS (distributed's Security.temporary), which "
                          f"needs the package cryptography: pip install -e 'pkg[dask]' (or pip install "
                          f"cryptography)") from None


def _walltime_seconds(walltime: object, path) -> int:
    parts = str(walltime).split(":")
    if len(parts) not in (2, 3) or not all(x.isdecimal() for x in parts):
        hint = (" (YAML reads an unquoted 1:00:00 as a number of seconds: quote it, \"1:00:00\")"
                if isinstance(walltime, int) and not isinstance(walltime, bool) else "")
        raise ValueError(f"executor='slurm:{path}': walltime must be \"HH:MM:SS\" (or \"MM:SS\"), got "
                         f"{walltime!r}{hint}")
    seconds = 0
    for x in parts:
        seconds = seconds * 60 + int(x)
    if seconds <= 0:
        raise ValueError(f"executor='slurm:{path}': walltime must be positive, got {walltime!r}")
    return seconds


def slurm_cluster(path: str | os.PathLike, **overrides):
    """A ``dask_jobqueue.SLURMCluster`` from the YAML file at ``path`` (not yet scaled: nothing is submitted).

    One single-threaded worker process per core of a job. Workers retire ``lifetime_margin`` minutes before the
    walltime (default 10% of it, at least 2), staggered, so that Slurm never kills one in the middle of a run it
    could have finished: its task goes to another worker and the run resumes from its checkpoint. Scheduler,
    workers and client talk TLS as the YAML's ``security`` says (default ``temporary``; see the module
    docstring)."""
    from dask_jobqueue import SLURMCluster
    conf = read_slurm_file(path)
    wall = _walltime_seconds(conf["walltime"], path)
    margin = conf.get("lifetime_margin")
    margin_s = int(margin * 60) if margin is not None else max(120, math.ceil(0.1 * wall))
    lifetime = max(60, wall - margin_s)
    gpus = conf.get("gpus")
    directives = list(conf.get("job_extra_directives", []))
    if gpus and not any("--gres=gpu" in d or "--gpus" in d for d in directives):
        directives.append(f"--gres=gpu:{gpus}")
    kwargs = dict(cores=conf["cores"], processes=gpus or conf["cores"], memory=str(conf["memory"]),
                  walltime=str(conf["walltime"]), job_extra_directives=directives,
                  worker_extra_args=["--lifetime", f"{lifetime}s", "--lifetime-stagger", f"{min(300, margin_s // 2)}s"],
                  job_script_prologue=[*SLURM_PROLOGUE, *conf.get("job_script_prologue", [])])
    for k in ("queue", "account", "local_directory"):
        if k in conf:
            kwargs[k] = conf[k]
    setting = _slurm_security(conf, path)
    if setting is None:
        warnings.warn(f"executor='slurm:{path}': security: none, so the scheduler listens on every interface "
                      f"without TLS: anyone who can reach it can run code as this user")
    else:
        kwargs["security"] = _security_object(setting)
        if setting == "temporary":
            # the workers' copy of the key, created readable by this user only, removed when the cluster closes
            kwargs["shared_temp_directory"] = str(Path(conf.get("shared_temp_directory", "~")).expanduser())
    kwargs.update(overrides)
    return SLURMCluster(**kwargs), conf.get("jobs", 1)


# ---------------------------------------------------------------------------------- the keyword

@contextlib.contextmanager
def executor_for(spec: str = "local") -> Iterator[Any]:
    """``with executor_for("auto") as ex: run_all(configs, store, executor=ex)``: None (train in this process),
    a process pool, or a :class:`DaskExecutor`. Whatever it started (pool workers, a local or Slurm cluster)
    is stopped when the block ends, also on an error or Ctrl-C."""
    s = parse_executor(spec)
    if s.kind == "local":
        yield None
        return
    if s.kind in ("processes", "gpus"):
        lock_dir = None
        if s.kind == "gpus":   # the lock files by which each worker claims its GPU, for this pool alone
            import tempfile
            lock_dir = tempfile.mkdtemp(prefix="sparsegap-gpus-")
        init, args = (init_worker, (s.workers,)) if s.kind == "processes" else (
            init_gpu_worker, (s.workers, list(s.gpus), lock_dir, s.per_gpu))
        pool = ProcessPoolExecutor(max_workers=s.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=init, initargs=args)
        try:
            try:
                yield pool
            except BaseException:
                stop_workers(pool)
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
        finally:
            if lock_dir is not None:
                import shutil
                shutil.rmtree(lock_dir, ignore_errors=True)
        return
    with contextlib.ExitStack() as stack:
        yield DaskExecutor(_dask_client(s, stack))


def _dask_client(s: ExecutorSpec, stack: contextlib.ExitStack):
    try:
        import dask
        import distributed
    except ImportError:
        raise ImportError(f"executor={s.kind!r} needs dask.distributed{' and dask-jobqueue' if s.kind == 'slurm' else ''}: "
                          f"pip install -e 'pkg[dask]'") from None
    if s.address:
        client = connect(s.address)
        stack.callback(client.close)
        _warm_workers(client)
        return client
    if s.kind == "slurm":
        cluster, jobs = slurm_cluster(s.path)
        stack.callback(cluster.close)
        cluster.scale(jobs=jobs)
    else:
        # TLS with client certificates: loopback is reachable by every local user, and a client runs code
        security = temporary_security("dask")
        with dask.config.set(WORKER_CONFIG):
            cluster = distributed.LocalCluster(n_workers=s.workers, threads_per_worker=1, processes=True,
                                               host="127.0.0.1", dashboard_address=None, security=security)
        stack.callback(cluster.close)
    client = distributed.Client(cluster, set_as_default=False)
    stack.callback(client.close)
    _warm_workers(client, gpus=s.kind == "slurm" and bool(read_slurm_file(s.path).get("gpus")))
    return client


def _warm_workers(client, gpus: bool = False) -> None:
    """Every worker of ``client`` warmed up (:func:`warm_up`) now, and every worker that joins later (a Slurm
    job that starts, a worker that replaces a lost one) when it starts; with ``gpus``, each pinned to a GPU of
    its job first."""
    from ._dask_plugin import WarmUp
    client.register_plugin(WarmUp(gpus=gpus))


# ------------------------------------------------------------------- the executor a notebook keeps

_ACTIVE: dict[str, Any] = {}


def activate(spec: str = "local") -> Any:
    """Keep the executor of ``spec`` running in this process (a notebook's kernel, from its ``executor``
    parameter), so that every sweep that names ``spec`` reuses its workers instead of starting new ones
    (:func:`named`); what it starts is stopped at exit or on the next activation. Sweeps that name no executor
    still train in this process: nothing is used that a caller did not name. Returns the executor (None for
    "local")."""
    parse_executor(spec)                      # a clear error before anything stops or starts
    if _ACTIVE.get("spec") == spec:
        return _ACTIVE["executor"]
    deactivate()
    stack = contextlib.ExitStack()
    executor = stack.enter_context(executor_for(spec))
    _ACTIVE.update(spec=spec, executor=executor, stack=stack)
    return executor


def deactivate() -> None:
    stack = _ACTIVE.pop("stack", None)
    _ACTIVE.clear()
    if stack is not None:
        stack.close()


@contextlib.contextmanager
def named(spec: str) -> Iterator[Any]:
    """The executor a sweep names by its keyword: the one this process keeps for ``spec`` (:func:`activate`),
    used and left running; else one started for the block and stopped after it (:func:`executor_for`)."""
    if _ACTIVE and _ACTIVE.get("spec") == spec:
        yield _ACTIVE["executor"]
        return
    with executor_for(spec) as executor:
        yield executor


atexit.register(deactivate)
