"""The run store: every trained network, keyed by the hash of its config.

Layout of one run (``<root>/<kind>-<hash>/``)::

    config.json    the full config (written first)
    init.pt        the initial weights (Init-D, Init-F or Init-S), masked
    masks.pt       the masks of a sparse run (finetune, scratch, imp)
    weights-iter<k>.pt  the weights after training iteration k, for each k of ``save_weights_at``
                   (a dense run that imp rounds rewind to)
    checkpoint.pt  the last epoch checkpoint, while training (removed when done)
    weights.pt     the final weights (Sol-D, Sol-F or Sol-S)
    history.json   the per-epoch history
    meta.json      torch version, seconds, the epoch it resumed at, and its status: done or diverged
    DONE           written last: the run is complete, with the SHA-256 of every file above

Every file is written to a temporary name, fsynced and renamed, so a reader never sees half a
file, even after a power cut. A run interrupted mid-training resumes from ``checkpoint.pt``, which
carries the run's hash so that a checkpoint of another run is never resumed. A run directory that
claims to be done but does not load, or whose files do not match their checksums, is reported with
a warning and trained again, never a crash. Everything is read back with
``torch.load(weights_only=True)``: no arbitrary unpickling.

Many processes (a process pool, a cluster) may share one store. A run is trained under its lock,
``<root>/.locks/<run id>.lock``, so that it is trained once: the others wait and then load it.
A run whose loss became NaN or infinite is stored as *diverged* (``Run.diverged``) and, training
being deterministic, never trained again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import SPARSE_KINDS, UPDATER_KINDS, DataConfig, ModelConfig, RunConfig
from .pruning import (Masks, apply_masks, global_masks_from_scores, gradient_scores, magnitude_scores,
                      prunable_parameters, random_scores)
from .batched import engine_for, train_batched
from .trackers import make_trackers
from .threads import threads_for, use_threads, workers
from .train import HISTORY_KEYS, progress_enabled, resolve_device, train

REPO_ROOT = Path(__file__).resolve().parents[2]
# Init-S must not be Init-D (that would be a lottery ticket), so scratch runs draw their
# initial weights from another seed stream.
SCRATCH_INIT_OFFSET = 1_000_003

log = logging.getLogger(__name__)


def default_root() -> Path:
    return Path(os.environ.get("SPARSEGAP_RUNS_DIR") or REPO_ROOT / "data" / "runs")


# ---------------------------------------------------------------------------------------------
# Atomic, durable writes


def _atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    # Mode 0o666 lets the umask decide, as for any other file; mkstemp's 0600 would make a store
    # shared by a group unreadable to everyone but its writer.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())    # the bytes are on disk before a name points at them ...
        _fault_point(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)         # ... and the new name survives a power cut too
    _fault_point(path)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:                 # platforms that cannot open a directory (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save(obj, path: Path) -> None:
    _atomic(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: Path) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


_fault_count = 0


def _fault_point(written: Path) -> None:
    """Test hook of tests/test_fault_injection.py, inert unless SPARSEGAP_FAULT_AFTER_WRITE is set.

    With ``SPARSEGAP_FAULT_AFTER_WRITE=N`` the process SIGKILLs itself at the N-th fault point
    (a temporary file fully written, or a file renamed into place): the worst moments to die.
    """
    n = os.environ.get("SPARSEGAP_FAULT_AFTER_WRITE")
    if not n:
        return
    global _fault_count
    _fault_count += 1
    if _fault_count == int(n):
        print(f"fault injection: SIGKILL after writing {written.parent.name}/{written.name}",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# The lock of one run


class RunLock:
    """An exclusive lock on one run, shared by every process (and host) that uses the store.

    The lock is a file created with ``O_CREAT | O_EXCL`` (atomic, also on NFS) that holds its
    owner's host, pid and start time; its mtime is refreshed after every epoch (:meth:`refresh`).
    A waiter polls until the file is gone. A lock whose owner is gone (a dead pid on this host) or
    that was not refreshed for ``max_age`` seconds (an owner on another host) is stale: it is taken
    over, with a warning.
    """

    POLL = (0.02, 1.0)           # first and longest pause between two polls, in seconds
    LOG_AFTER = 10.0             # seconds of waiting before saying who holds the lock
    LOG_EVERY = 300.0
    WRITE_GRACE = 5.0            # an empty lock file younger than this is still being written

    def __init__(self, path: Path, *, timeout: float | None = None, max_age: float = 86400.0):
        self.path = path
        self.timeout = timeout
        self.max_age = max_age
        self._mine: bytes | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        start = time.monotonic()
        pause, next_log = self.POLL[0], start + self.LOG_AFTER
        while not self._try_create():
            holder = self._read()
            if holder is None:            # released between our two looks
                continue
            reason = self._stale(holder)
            if reason:
                self._take_over(holder, reason)
                continue
            waited = time.monotonic() - start
            if self.timeout is not None and waited >= self.timeout:
                raise TimeoutError(f"run {self.run_id} is still locked by {_describe(holder)} after {waited:.0f} s "
                                   f"(lock_timeout={self.timeout}); if that process is gone, delete {self.path}")
            if time.monotonic() >= next_log:
                log.warning("waiting %.0f s for run %s, locked by %s (lock file %s)",
                            waited, self.run_id, _describe(holder), self.path)
                next_log = time.monotonic() + self.LOG_EVERY
            time.sleep(pause)
            pause = min(2 * pause, self.POLL[1])

    def try_acquire(self) -> bool:
        """Take the lock if it is free (or stale, taken over as usual); False at once if a live owner holds it."""
        timeout, self.timeout = self.timeout, 0.0
        try:
            self.acquire()
            return True
        except TimeoutError:
            return False
        finally:
            self.timeout = timeout

    def refresh(self) -> None:
        """Tell waiters on other hosts that the owner is alive (the lock's mtime is its heartbeat)."""
        if self._still_mine():
            os.utime(self.path)
        else:
            warnings.warn(f"the lock of run {self.run_id} was taken over by another process while this one "
                          f"trained it (lock_max_age={self.max_age} s is shorter than an epoch?)")

    def release(self) -> None:
        if self._still_mine():
            self.path.unlink(missing_ok=True)
        self._mine = None

    @property
    def run_id(self) -> str:
        return self.path.stem

    def _try_create(self) -> bool:
        # The lock appears with its owner already written in it: the owner goes to a temporary that
        # is then hard-linked to the lock's name (link is atomic and fails if the name exists, also
        # on NFS). A lock created empty and then written could be seen empty, for WRITE_GRACE
        # seconds not judged stale, after its creator was killed in between: a batch would then
        # leave that run out and it would train alone, not bitwise like the sweep never killed.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sweep_temporaries()
        token = secrets.token_hex(8)
        owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start_time": time.time(),
                            "token": token}).encode()
        # the writer's host and pid in the name: a temporary left by a writer killed before it wrote its content
        # can still be judged by _sweep_temporaries
        tmp = self.path.with_name(f".{self.path.name}.{socket.gethostname()}.{os.getpid()}-{token}.tmp")
        try:
            tmp.write_bytes(owner)
            os.link(tmp, self.path)
        except FileExistsError:
            # NFS can report EEXIST for a link that was made (a retried request): the temporary's link count says
            if os.stat(tmp).st_nlink != 2:
                return False
        except OSError as e:          # a file system without hard links: create, then write
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            return self._create_then_write(owner)
        finally:
            tmp.unlink(missing_ok=True)
        self._mine = owner
        return True

    def _create_then_write(self, owner: bytes) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(owner)
        self._mine = owner
        return True

    def _sweep_temporaries(self) -> None:
        """Remove the lock temporaries whose writer is gone (killed between writing one and unlinking it), of
        every run: the run of one may be finished by another process and never locked again. The writer is
        judged by the host and pid in the name, not the content, which a writer killed early never wrote."""
        host = socket.gethostname()
        for tmp in self.path.parent.glob(".*.lock.*.tmp"):
            try:
                writer, pid = tmp.name[:-len(".tmp")].split(".lock.", 1)[1].rsplit(".", 1)
                pid, born = int(pid.split("-")[0]), os.stat(tmp).st_mtime
            except (ValueError, IndexError, FileNotFoundError):
                continue
            gone = (not _process_alive(pid, born)) if writer == host else time.time() - born > self.max_age
            if gone:
                tmp.unlink(missing_ok=True)

    def _still_mine(self) -> bool:
        try:
            return self._mine is not None and self.path.read_bytes() == self._mine
        except FileNotFoundError:
            return False

    def _read(self) -> _Holder | None:
        try:
            st = os.stat(self.path)
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            owner = json.loads(raw)
            owner = owner if isinstance(owner, dict) else None
        except ValueError:
            owner = None      # empty: its creator has not written it yet, or died before it could
        return _Holder(raw, owner, time.time() - st.st_mtime)

    def _stale(self, holder: _Holder) -> str | None:
        owner = holder.owner
        if owner is None:
            return (f"it is empty or unreadable and {holder.age:.0f} s old"
                    if holder.age > self.WRITE_GRACE else None)
        if owner.get("host") == socket.gethostname() and not _process_alive(owner.get("pid"), owner.get("start_time")):
            return "its owner process is gone"
        if holder.age > self.max_age:
            return f"it was not refreshed for {holder.age:.0f} s (lock_max_age={self.max_age} s)"
        return None

    def _take_over(self, holder: _Holder, reason: str) -> None:
        # Two waiters may judge the same lock stale; unserialised, the slower one could delete the
        # lock the faster one has just created. An flock on a side file serialises the takeovers
        # (the kernel releases it if its holder dies, so it can never go stale itself), and the
        # lock is deleted only if it is still the very file that was judged stale.
        import fcntl
        with open(self.path.parent / ".takeover", "a") as side:
            fcntl.flock(side, fcntl.LOCK_EX)
            now = self._read()
            if now is not None and now.raw == holder.raw:
                self.path.unlink(missing_ok=True)
                warnings.warn(f"run {self.run_id}: taking over the stale lock of {_describe(holder)}: {reason}")


@dataclass
class _Holder:
    raw: bytes
    owner: dict | None
    age: float          # seconds since the lock was created or last refreshed


def _describe(holder: _Holder) -> str:
    o = holder.owner
    if o is None:
        return "an unknown process (empty lock file)"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(o.get("start_time", 0)))
    return f"pid {o.get('pid')} on {o.get('host')} since {started}"


def _process_alive(pid, since) -> bool:
    """Whether ``pid`` on this host still runs the process that took the lock at ``since``."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # it exists, as another user
        return True
    try:  # Linux: a zombie (killed, not yet reaped) is gone; a process started later reuses the pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return True                 # no /proc (macOS): trust kill(0)
    if fields[0] == "Z":
        return False
    return not (isinstance(since, (int, float)) and started > since + 2)  # 2 s: btime has 1 s resolution


# ---------------------------------------------------------------------------------------------
# Runs and the store


class DamagedRun(Exception):
    """A finished run whose files are missing, unreadable or do not match their checksums."""


class MissingRun(LookupError):
    """The run is not (yet) in the store."""


@dataclass
class Run:
    """A finished run: its config, history, weights and masks, loaded from the store."""

    config: RunConfig
    path: Path
    history: dict
    weights: dict
    init: dict
    masks: Masks | None
    saved: dict[int, dict] = dataclasses.field(default_factory=dict)   # iteration -> weights (save_weights_at)

    def _build(self) -> nn.Module:
        return build_model_for(self.config.model, self.config.data)

    def model(self) -> nn.Module:
        """The trained network (Sol-D, Sol-F or Sol-S) on the CPU."""
        if self.config.kind == "curve":
            raise TypeError(f"run {self.config.run_id} is a curve (control points between two networks), not one "
                            f"network: use sparsegap.runs.load_curve(config, store), and its network_at(t)")
        m = self._build()
        m.load_state_dict(self.weights)
        return m

    def init_model(self) -> nn.Module:
        """The network at its initialisation (Init-D, Init-F, Init-S, an imp round's rewound weights,
        or a re-dense run's start: its sparse parent's solution)."""
        m = self._build()
        m.load_state_dict(self.init)
        return m

    def weights_at(self, iteration: int) -> dict:
        """The weights after training iteration ``iteration`` (0: the initialisation), kept because
        the config's ``save_weights_at`` asked for them."""
        if iteration == 0:
            return self.init
        if iteration not in self.saved:
            raise KeyError(f"run {self.config.run_id} kept no weights at iteration {iteration!r}; it keeps "
                           f"iteration 0 (init) and save_weights_at={self.config.save_weights_at!r}")
        return self.saved[iteration]

    def measure(self, name: str, params: dict, fn: Callable[[], dict]) -> dict:
        """A measurement on this run, computed once and kept beside it.

        ``fn()`` returns a JSON-serialisable dict; it is stored under
        ``measurements/<name>-<hash of params>.json`` so that rebuilding a chapter reuses it.
        """
        key = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]
        path = self.path / "measurements" / f"{name}-{key}.json"
        if path.exists():
            try:
                return json.loads(path.read_text())["value"]
            except (ValueError, KeyError):
                warnings.warn(f"measurement {path} is unreadable; measuring again")
        value = fn()
        atomic_write_text(json.dumps({"name": name, "params": params, "value": value}, default=str), path)
        return value

    @property
    def diverged(self) -> dict | None:
        """``{"epoch", "step", "loss"}`` if the training loss became NaN or infinite, else None.

        A diverged run stopped there: its history holds the epochs before ``epoch`` only, and its
        weights are not a trained network.
        """
        return self.history.get("diverged")

    @property
    def final(self) -> dict:
        """Last-epoch metrics."""
        return {k: v[-1] for k, v in self.history.items() if isinstance(v, list) and v}


@lru_cache(maxsize=8)
def load_data(cfg: DataConfig):
    """Datasets are small and shared by many runs: load each once per process."""
    from .data import downloads_allowed, load_dataset
    return load_dataset(cfg.name, train_size=cfg.train_size, test_size=cfg.test_size, seed=cfg.subset_seed,
                        download=downloads_allowed(),
                        noise=cfg.noise, noise_seed=cfg.noise_seed, validation=cfg.validation)


def build_model_for(model_cfg: ModelConfig, data_cfg: DataConfig, seed: int | None = None) -> nn.Module:
    from .models import build_model
    data = load_data(data_cfg)
    return build_model(model_cfg.name, num_classes=data.num_classes, input_shape=tuple(data.input_shape),
                       width=model_cfg.width, hidden=model_cfg.hidden, seed=seed, init=model_cfg.init)


def _stored_files(cfg: RunConfig) -> tuple[str, ...]:
    """The files a finished run keeps, each with its SHA-256 in DONE."""
    masks = ("masks.pt",) if cfg.kind in SPARSE_KINDS else ()
    saved = tuple(_saved_name(k) for k in cfg.save_weights_at)
    return ("config.json", "init.pt", *masks, *saved, "weights.pt", "history.json", "meta.json")


def _saved_name(iteration: int) -> str:
    return f"weights-iter{iteration}.pt"


@lru_cache(maxsize=32)
def _prunable_counts(model_cfg: ModelConfig, data_cfg: DataConfig, exclude_output: bool) -> tuple[int, int]:
    """(prunable weights, prunable layers) of the model."""
    params = prunable_parameters(build_model_for(model_cfg, data_cfg), exclude_output=exclude_output)
    return sum(p.numel() for p in params.values()), len(params)


def check_runnable(cfg: RunConfig) -> None:
    """What a config alone cannot know, checked against its data and model before anything trains:
    kept iterations within the dense run's length, imp chains that leave a weight per layer, and a data
    schedule's memorization subset of at least one batch."""
    for c in _chain(cfg):
        if c.train.data_schedule != "full":
            from .schedule import check_schedule
            check_schedule(c.train, len(load_data(c.data).y_train))
        if c.data.validation:
            load_data(c.data)          # a validation split too large for the training set fails here
        if c.save_weights_at:
            n = len(load_data(c.data).y_train)
            steps = -(-n // c.train.batch_size)
            total = c.train.epochs * steps
            late = [k for k in c.save_weights_at if k > total]
            if late:
                raise ValueError(f"RunConfig.save_weights_at={c.save_weights_at!r} asks for iteration(s) {late}, "
                                 f"beyond the dense run's {total} iterations ({c.train.epochs} epochs x {steps} "
                                 f"steps of batch {c.train.batch_size} on {n} samples); an imp round can only "
                                 f"rewind to an iteration the dense run reaches")
        if c.kind == "imp":
            n, layers = _prunable_counts(c.model, c.data, c.exclude_output)
            kept = round((1.0 - c.sparsity) * n)
            if kept < layers:
                rate = c.prune_rate
                most = 0
                while round((1 - rate) ** (most + 1) * n) >= layers:
                    most += 1
                raise ValueError(f"an imp chain of {c.imp_round} rounds (sparsity {c.sparsity:.6g}) keeps "
                                 f"{kept} of {n} prunable weights, fewer than its {layers} layers: no mask can "
                                 f"leave one weight per layer. At prune_rate={rate:g}, use at most {most} rounds")


def _chain(cfg: RunConfig) -> list[RunConfig]:
    """``cfg`` and every run it needs first (parents, and a curve's partner with its own parents),
    each after what it needs."""
    out = []
    for before in (cfg.parent, cfg.partner):
        if before is not None:
            out += [c for c in _chain(before) if c not in out]
    return out + [cfg]


def _needs(cfg: RunConfig) -> list[RunConfig]:
    return [c for c in (cfg.parent, cfg.partner) if c is not None]


def _seconds(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"RunStore({name}=...) must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _check_root(root) -> Path:
    """The store's directory, or a clear error naming ``root`` and what is allowed."""
    if root is None:
        root = default_root()
    elif isinstance(root, bool) or not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"RunStore(root=...) must be a directory path (str or pathlib.Path), or None for the "
                        f"default data/runs ($SPARSEGAP_RUNS_DIR); got {root!r} of type {type(root).__name__}")
    root = Path(root)
    existing = root
    while not existing.exists():   # the store creates missing directories: check where it would start
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"RunStore(root={str(root)!r}): {existing} is a file, not a directory; "
                                 f"root must be a directory (it is created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"RunStore(root={str(root)!r}): {existing} is not writable by this user "
                              f"(os.access); the store writes runs and their locks there, so root must be "
                              f"a directory you can write to")
    return root


class RunStore:
    """Finished runs under ``root`` (default: ``data/runs`` or ``$SPARSEGAP_RUNS_DIR``).

    ``lock_timeout``: seconds a process waits for another one training the same run before it
    raises ``TimeoutError`` (None: as long as it takes). ``lock_max_age``: seconds after which a
    lock that its owner stopped refreshing is stale; owners refresh it every epoch, and a lock
    whose owner died on this host is stale at once.
    """

    def __init__(self, root: str | Path | None = None, *, lock_timeout: float | None = None,
                 lock_max_age: float = 86400.0):
        self.root = _check_root(root)
        self.lock_timeout = None if lock_timeout is None else _seconds("lock_timeout", lock_timeout)
        self.lock_max_age = _seconds("lock_max_age", lock_max_age)

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def path(self, cfg: RunConfig) -> Path:
        return self.root / cfg.run_id

    def lock(self, cfg: RunConfig) -> RunLock:
        """The lock under which ``cfg`` is trained (a context manager)."""
        return RunLock(self.root / ".locks" / f"{cfg.run_id}.lock", timeout=self.lock_timeout,
                       max_age=self.lock_max_age)

    def is_done(self, cfg: RunConfig) -> bool:
        return (self.path(cfg) / "DONE").exists()

    def load(self, cfg: RunConfig) -> Run:
        """Load a finished run: MissingRun if it is not finished, DamagedRun if anything is
        missing, unreadable or does not match its checksum in DONE."""
        path = self.path(cfg)
        try:
            marker = (path / "DONE").read_bytes()
        except FileNotFoundError:
            raise MissingRun(f"run {cfg.run_id} is not in {self.root}") from None
        except OSError as e:
            raise DamagedRun(f"DONE unreadable: {e}") from e
        checksums = _checksums(marker, cfg)
        read = functools.partial(_read_checked, path, checksums)
        try:
            stored = json.loads(read("config.json"))
            if RunConfig.from_dict(stored).hash() != cfg.hash():
                raise DamagedRun("config.json does not match the directory's hash")
            history = json.loads(read("history.json"))
            _check_history(history, cfg)
            weights = _load_tensors(read("weights.pt"))
            init = _load_tensors(read("init.pt"))
            masks = _load_tensors(read("masks.pt")) if cfg.kind in SPARSE_KINDS else None
            saved = {k: _load_tensors(read(_saved_name(k))) for k in cfg.save_weights_at}
            if checksums is not None:          # old stores may have no meta.json
                json.loads(read("meta.json"))
        except DamagedRun:
            raise
        except Exception as e:  # unreadable json, truncated or missing tensor files, ...
            raise DamagedRun(f"{type(e).__name__}: {e}") from e
        return Run(cfg, path, history, weights, init, masks, saved)

    def runs(self) -> list[RunConfig]:
        """Configs of every finished run in the store."""
        out = []
        for d in sorted(self.root.glob("*/DONE")):
            try:
                out.append(RunConfig.from_dict(json.loads((d.parent / "config.json").read_text())))
            except Exception:
                continue
        return out


def _checksums(marker: bytes, cfg: RunConfig) -> dict[str, str] | None:
    """The SHA-256 of each file recorded in DONE; None for a marker of the old format (the bare
    config hash, written before checksums existed), whose files are trusted as they are."""
    text = marker.decode(errors="replace").strip()
    if text == cfg.hash():
        return None
    try:
        done = json.loads(text)
        ok = done["run_hash"] == cfg.hash() and set(done["sha256"]) == set(_stored_files(cfg))
    except (ValueError, KeyError, TypeError):
        raise DamagedRun("DONE is not a valid marker") from None
    if not ok:
        raise DamagedRun("DONE belongs to another run, or does not list every file")
    return done["sha256"]


def _read_checked(path: Path, checksums: dict[str, str] | None, name: str) -> bytes:
    data = (path / name).read_bytes()
    if checksums is not None and _sha256(data) != checksums[name]:
        raise DamagedRun(f"{name} does not match its SHA-256 in DONE (swapped or corrupted)")
    return data


def _load_tensors(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _check_history(history: dict, cfg: RunConfig) -> None:
    epochs = len(history.get("epoch", []))
    diverged = history.get("diverged")
    if diverged is not None:   # it stopped at the epoch where the loss became NaN or infinite
        if not isinstance(diverged, dict) or epochs != diverged.get("epoch", 0) - 1:
            raise DamagedRun(f"history of a diverged run has {epochs} epochs but diverged={diverged!r}")
    elif epochs != cfg.train.epochs:
        raise DamagedRun(f"history has {epochs} epochs, config says {cfg.train.epochs}")


# ---------------------------------------------------------------------------------------------
# Training into the store


def get_or_train(cfg: RunConfig, store: RunStore | None = None, *, device: str = "auto",
                 progress: bool = True) -> Run:
    """The run for ``cfg``: from the store if it is there, else trained (its parent first) and stored.

    Safe for many processes sharing one store: the run is trained under its lock, once; the others
    wait for it and load it.
    """
    _check_config(cfg, "cfg")
    store = _check_store(store, "get_or_train")
    device = resolve_device(device)           # a bad device fails here, before any directory exists
    check_runnable(cfg)
    try:
        run = store.load(cfg)                 # no lock needed: DONE comes last, checksums catch the rest
    except (MissingRun, DamagedRun):
        pass                                  # decided under the lock
    else:
        _tidy_finished(run, store)
        return run
    # The parent first, and outside this run's lock: a process never holds one lock while it
    # waits for another, so no two processes can wait for each other.
    parent = get_or_train(cfg.parent, store, device=device, progress=progress) if cfg.parent else None
    if cfg.partner is not None:
        get_or_train(cfg.partner, store, device=device, progress=progress)
    with store.lock(cfg) as lock, _own_random_state():
        return _train_locked(cfg, store, parent, lock, device, progress)


def _tidy_finished(run: Run, store: RunStore) -> None:
    """Remove what a process killed between writing DONE and releasing the lock left behind: its
    checkpoint (as large as the weights and their momentum) and its lock."""
    lock = store.lock(run.config)
    if (run.path / "checkpoint.pt").exists() or lock.path.exists():
        with lock:
            (run.path / "checkpoint.pt").unlink(missing_ok=True)
            _sweep_temporaries(run.path)


@dataclass
class _Job:
    """A run being trained under its lock: its initial state and the checkpoint to resume from."""

    cfg: RunConfig
    path: Path
    lock: RunLock
    model: nn.Module
    masks: Masks | None
    checkpoint: dict | None
    final_masks: Masks | None = None     # the masks at the last epoch end (mask updaters change them)

    def save_checkpoint(self, ckpt: dict) -> None:
        """The checkpoint of an epoch, but the last: the run's result is written right after it, and a process
        killed before that trains the last epoch again from the checkpoint before (the same weights)."""
        self.final_masks = _to_cpu(ckpt.get("masks"))
        if ckpt["epoch"] < self.cfg.train.epochs:
            atomic_save(_to_cpu(ckpt) | {"run_hash": self.cfg.hash()}, self.path / "checkpoint.pt")
        self.lock.refresh()

    @property
    def label(self) -> str:
        cfg = self.cfg
        if cfg.kind == "dense":
            what = "dense"
        elif cfg.kind == "imp":
            what = f"imp round {cfg.imp_round} s={cfg.sparsity:.4g}"
        elif cfg.kind == "redense":
            what = f"redense from s={cfg.parent.sparsity:.4g}"
        else:
            what = f"{cfg.kind} s={cfg.sparsity:g}"
        return what + f" seed={cfg.seed}"

    def callbacks(self, data) -> list:
        """The run's mask updater (gradual pruning, SET, RigL), its trackers, and the keeper of the
        weights at ``save_weights_at``. The updater comes first, so trackers see the updated mask."""
        cfg = self.cfg
        cbs = []
        if cfg.kind in UPDATER_KINDS:
            from .dst import DynamicSparse, GradualPruning
            total = cfg.train.epochs * -(-len(data.y_train) // cfg.train.batch_size)
            end = max(1, round(cfg.update_end * total))
            if cfg.kind == "gradual":
                cbs.append(GradualPruning(cfg.sparsity, round(cfg.update_start * total), end, cfg.update_every,
                                          exclude_output=cfg.exclude_output, min_density=cfg.min_density))
            else:
                cbs.append(DynamicSparse(cfg.dst_method, cfg.drop_fraction, cfg.update_every, end, seed=cfg.seed))
        cbs += make_trackers(cfg.track, data)
        if cfg.save_weights_at:
            cbs.append(_KeepWeights(cfg.save_weights_at, self.path))
        return cbs


class _KeepWeights:
    """Writes the weights after each training iteration in ``iterations`` (``weights-iter<k>.pt``),
    the points imp rounds rewind to. Written before the epoch's checkpoint, so a resumed run past k has it."""

    def __init__(self, iterations: tuple[int, ...], path: Path):
        self.iterations = set(iterations)
        self.path = path

    def on_step_end(self, state) -> None:
        if state.step in self.iterations:
            atomic_save(_to_cpu(state.model.state_dict()), self.path / _saved_name(state.step))


def _prepare(cfg: RunConfig, store: RunStore, parent: Run | None, lock: RunLock) -> Run | _Job:
    """Under the lock: the finished run if another process trained it meanwhile, else the job to train."""
    path = store.path(cfg)
    if (path / "DONE").exists():              # trained meanwhile by the process we waited for, or damaged
        try:
            return store.load(cfg)
        except DamagedRun as e:
            warnings.warn(f"run {path.name} in {store.root} is damaged ({e}); training it again")
            shutil.rmtree(path)
    _sweep_temporaries(path)
    model, masks = _initial_state(cfg, parent, store)
    checkpoint = _load_checkpoint(path, cfg, model)
    if checkpoint is not None and cfg.save_weights_at:
        steps = checkpoint.get("step", checkpoint["epoch"] * -(-len(load_data(cfg.data).y_train) // cfg.train.batch_size))
        lost = [k for k in cfg.save_weights_at if k <= steps and not (path / _saved_name(k)).exists()]
        if lost:
            warnings.warn(f"run {path.name}: the weights of iteration(s) {lost} are missing although the "
                          f"checkpoint is past them; discarded, training from the start")
            (path / "checkpoint.pt").unlink(missing_ok=True)
            checkpoint = None
    # Written before the first checkpoint; a resume writes one again only if it was lost.
    fresh = checkpoint is None
    if fresh or not (path / "config.json").exists():
        atomic_write_text(json.dumps(cfg.full_dict(), indent=2), path / "config.json")
    if fresh or not (path / "init.pt").exists():
        atomic_save(_to_cpu(model.state_dict()), path / "init.pt")
    if masks is not None and (fresh or not (path / "masks.pt").exists()):
        atomic_save(_to_cpu(masks), path / "masks.pt")
    return _Job(cfg, path, lock, model, masks, checkpoint)


def _finish(job: _Job, store: RunStore, history: dict, seconds: float, threads: int, batch: int | None = None,
            engine: str = "") -> Run:
    """Store a trained job's result, DONE last. ``threads``: the torch threads it trained with; ``batch``: the size
    of the batch it was trained in by the batched trainer (None: trained by train())."""
    if "diverged" in history:
        d = history["diverged"]
        warnings.warn(f"run {job.path.name} diverged: loss {d['loss']} at epoch {d['epoch']}, step {d['step']}; "
                      f"it is stored as diverged and will not be trained again")
    meta = {"torch": torch.__version__, "seconds": seconds, "threads": threads,
            "resumed_at_epoch": job.checkpoint["epoch"] if job.checkpoint else 0,
            "status": "diverged" if "diverged" in history else "done"}
    if batch is not None:  # trained by the batched trainer as one member of this many networks (1: alone)
        meta |= {"batch": batch, "engine": engine}
    if job.cfg.kind in UPDATER_KINDS:   # the mask the updater ended with (children take it)
        final = job.final_masks or job.masks or {n: torch.ones_like(p, dtype=torch.bool) for n, p in
                                                 prunable_parameters(job.model, exclude_output=job.cfg.exclude_output).items()}
        atomic_save(_to_cpu(final), job.path / "masks.pt")
    _write_result(job.path, job.cfg, job.model, history, meta)
    return store.load(job.cfg)


def _train_locked(cfg: RunConfig, store: RunStore, parent: Run | None, lock: RunLock, device,
                  progress: bool) -> Run:
    job = _prepare(cfg, store, parent, lock)
    if isinstance(job, Run):
        return job
    if job.checkpoint is not None:
        job.final_masks = job.checkpoint.get("masks")
    t0 = time.time()
    data = load_data(cfg.data)
    if cfg.kind == "curve":
        from .curves import train_curve
        with use_threads(_threads(job.model.base, cfg, data)) as threads:
            history = train_curve(job.model, data, cfg.train, seed=cfg.seed, checkpoint=job.checkpoint,
                                  on_epoch_end=job.save_checkpoint, progress=progress)
        return _finish(job, store, history, time.time() - t0, threads)
    if batch_eligible(cfg):   # alone, but by the batched trainer: the bits it has in any batch
        return _train_jobs([job], store, device, progress)[0]
    reference = _dense_predictions(cfg, store, data) if cfg.train.data_schedule == "disagree" else None
    with use_threads(_threads(job.model, cfg, data)) as threads:
        history = train(job.model, data, cfg.train, masks=job.masks, seed=cfg.seed, device=device,
                        callbacks=job.callbacks(data), checkpoint=job.checkpoint,
                        on_epoch_end=job.save_checkpoint, progress=progress, desc=job.label, reference=reference)
    return _finish(job, store, history, time.time() - t0, threads)


def _dense_predictions(cfg: RunConfig, store: RunStore, data) -> torch.Tensor:
    """The predicted class of every training sample by the dense run at the root of ``cfg``'s chain (the
    reference of the "disagree" data schedule), computed on the CPU in eval mode."""
    from .metrics.basic import predict_logits
    return predict_logits(store.load(cfg.root).model(), data.x_train).argmax(1)  # RunConfig checked the root


def _threads(model: nn.Module, cfg: RunConfig, data) -> int:
    """Torch threads for training one run of ``model`` with train(), by the policy of sparsegap.threads.
    (The batched trainer always uses one: :func:`_train_jobs`.)"""
    from .batched import forward_macs
    return threads_for(workers(), macs=forward_macs(model, cfg.train.batch_size, tuple(data.input_shape)))


@contextlib.contextmanager
def _own_random_state():
    """Training seeds the global random generators (torch, numpy, random), and building a model without a seed
    draws from them; the caller's are restored after it, so that what a notebook draws after run_all does not
    depend on whether its runs were trained in its process or by another one and loaded."""
    import random

    import numpy as np
    saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])


def _write_result(path: Path, cfg: RunConfig, model: nn.Module, history: dict, meta: dict) -> None:
    atomic_save(_to_cpu(model.state_dict()), path / "weights.pt")
    atomic_write_text(json.dumps(history), path / "history.json")
    atomic_write_text(json.dumps(meta), path / "meta.json")
    sha = {name: _sha256((path / name).read_bytes()) for name in _stored_files(cfg)}
    atomic_write_text(json.dumps({"run_hash": cfg.hash(), "sha256": sha}, indent=1), path / "DONE")
    (path / "checkpoint.pt").unlink(missing_ok=True)


def _sweep_temporaries(path: Path) -> None:
    """Temporaries left by a process killed mid-write. Only the lock's holder writes in a run
    directory (measurements go to measurements/), so every one found here is an orphan."""
    for tmp in path.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def _initial_state(cfg: RunConfig, parent: Run | None, store: RunStore) -> tuple[nn.Module, Masks | None]:
    if cfg.kind == "curve":
        return load_curve(cfg, store, trained=False), None
    if cfg.kind in ("dense", "gradual"):   # P-S starts dense, from its own init; its pruner makes the mask
        return build_model_for(cfg.model, cfg.data, seed=cfg.seed), None
    if cfg.kind == "dst" or (cfg.kind == "zeroinit" and parent is None):
        return _random_mask_state(cfg)
    if cfg.kind in ("lottery", "zeroinit") or (cfg.kind == "scratch" and parent.config.kind != "dense"):
        return _parent_mask_state(cfg, parent, store)
    solution = parent.model()
    if cfg.kind == "redense":            # the sparse solution, pruned weights at zero, and no mask
        apply_masks(solution, parent.masks)
        return solution, None
    masks = pruning_masks(cfg, solution, parent.masks)
    if cfg.kind == "finetune":
        model = solution                                          # Init-F: Sol-D under the mask
    elif cfg.kind == "scratch":
        model = build_model_for(cfg.model, cfg.data, seed=cfg.seed + SCRATCH_INIT_OFFSET)  # Init-S
    else:                                                         # imp: rewound to the root's iteration k
        root = parent if parent.config.kind == "dense" else store.load(cfg.root)
        model = build_model_for(cfg.model, cfg.data)
        model.load_state_dict(root.weights_at(cfg.rewind_iter))
    if cfg.sparse_init:
        _sparse_init(cfg, model, masks)
    apply_masks(model, masks)
    return model, masks


def load_curve(cfg: RunConfig, store: RunStore | None = None, *, trained: bool = True):
    """The :class:`sparsegap.curves.BezierCurve` of a curve run between its two (stored) endpoints:
    trained (its stored control points), or as it starts (``trained=False``, on the straight line).
    In the sparse mode the endpoints must share one mask."""
    from .curves import BezierCurve
    store = _check_store(store, "load_curve")
    a, b = store.load(cfg.parent), store.load(cfg.partner)
    masks = None
    if cfg.curve_mode == "sparse":
        ma, mb = a.masks, b.masks
        same = ma is not None and mb is not None and ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
        if not same:
            raise ValueError(f"a sparse curve needs endpoints with one shared mask, but {cfg.parent.run_id} and "
                             f"{cfg.partner.run_id} have different masks (or one has none); use curve_mode='dense'")
        masks = ma
    # The base network only lends the curve its architecture, but its (unused) weights are part of the curve's
    # stored state: built from the curve's seed, not from the global generator, so that they are the same
    # whichever process and kernel builds the curve.
    base = build_model_for(a.config.model, a.config.data, seed=cfg.seed)
    curve = BezierCurve(base, a.weights, b.weights, cfg.curve_degree, masks=masks)
    if trained:
        curve.load_state_dict(store.load(cfg).weights)
    return curve


def _sparse_init(cfg: RunConfig, model: nn.Module, masks: Masks) -> None:
    from .sparse_init import sparse_init_
    sparse_init_(model, masks, cfg.sparse_init, seed=cfg.seed + SCRATCH_INIT_OFFSET)


def _parent_mask_state(cfg: RunConfig, parent: Run, store: RunStore) -> tuple[nn.Module, Masks | None]:
    """Lottery (the pruned solution's root init), scratch (a fresh init) or zeroinit (the dense init,
    trained dense) under the final mask of a pruned solution."""
    masks = parent.masks
    if cfg.kind == "scratch":
        model = build_model_for(cfg.model, cfg.data, seed=cfg.seed + SCRATCH_INIT_OFFSET)
        if cfg.sparse_init:
            _sparse_init(cfg, model, masks)
    else:
        root = parent if parent.config.kind in ("dense", "gradual") else store.load(parent.config.root)
        model = root.init_model() if cfg.kind == "lottery" else build_model_for(cfg.model, cfg.data, seed=cfg.seed)
    apply_masks(model, masks)
    return model, (None if cfg.kind == "zeroinit" else masks)


def _random_mask_state(cfg: RunConfig) -> tuple[nn.Module, Masks | None]:
    """A random mask with the config's layer densities: the start of a dst run (a fresh init under it),
    or the zeros of a zeroinit run (the dense init, trained dense)."""
    from .dst import erk_densities, random_masks, uniform_densities
    if cfg.kind == "dst":
        model = build_model_for(cfg.model, cfg.data, seed=cfg.seed + SCRATCH_INIT_OFFSET)
    else:
        model = build_model_for(cfg.model, cfg.data, seed=cfg.seed)
    dens = (erk_densities if cfg.distribution == "erk" else uniform_densities)(
        model, 1.0 - cfg.sparsity, exclude_output=cfg.exclude_output)
    masks = random_masks(model, dens, seed=cfg.seed * PRUNE_STREAM + 1)
    if cfg.sparse_init:
        _sparse_init(cfg, model, masks)
    apply_masks(model, masks)
    return model, (masks if cfg.kind == "dst" else None)


# Seeds of the gradient heuristic's batch and the random heuristic's scores: (prune_seed, round)
# mixed so that every round of a chain draws afresh.
PRUNE_STREAM = 7_919


def pruning_masks(cfg: RunConfig, solution: nn.Module, within: Masks | None = None) -> Masks:
    """The mask of a sparse run: ``cfg.prune``'s scores of ``solution`` (the parent's trained
    network), the globally best kept to ``cfg.sparsity``; nested in ``within`` (the previous imp round's masks)."""
    stream = cfg.prune_seed * PRUNE_STREAM + cfg.imp_round
    if cfg.prune == "magnitude":
        scores = magnitude_scores(solution, exclude_output=cfg.exclude_output)
    elif cfg.prune == "random":
        scores = random_scores(solution, stream, exclude_output=cfg.exclude_output)
    else:   # gradient: one training batch (of the run's batch size), drawn by the stream
        data = load_data(cfg.data)
        g = torch.Generator().manual_seed(stream)
        idx = torch.randperm(len(data.y_train), generator=g)[: cfg.train.batch_size]
        scores = gradient_scores(solution, data.x_train[idx], data.y_train[idx], exclude_output=cfg.exclude_output,
                                 masks=within)
    return global_masks_from_scores(scores, cfg.sparsity, min_density=cfg.min_density, within=within)


def _load_checkpoint(path: Path, cfg: RunConfig, model: nn.Module) -> dict | None:
    """The checkpoint to resume from, or None. One that is unreadable, malformed or of another
    run is discarded with a warning (kept, it would fail, or mislead, every retry)."""
    ckpt_path = path / "checkpoint.pt"
    if not ckpt_path.exists():
        return None
    try:
        ckpt = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        problem = _checkpoint_problem(ckpt, cfg, model)
    except Exception as e:
        problem = f"unreadable ({type(e).__name__})"
    if problem is None:
        return ckpt
    warnings.warn(f"run {path.name}: checkpoint {problem}; discarded, training from the start")
    ckpt_path.unlink(missing_ok=True)
    return None


def _checkpoint_problem(ckpt, cfg: RunConfig, model: nn.Module) -> str | None:
    if not isinstance(ckpt, dict):
        return f"unreadable (a {type(ckpt).__name__}, not a dict)"
    missing = {"model", "optimizer", "history", "epoch", "masks"} - set(ckpt)
    if missing:
        return f"unreadable: malformed, without {sorted(missing)}"
    if "run_hash" not in ckpt:
        return "carries no run hash (written before checkpoints did), so it may belong to another run"
    if ckpt["run_hash"] != cfg.hash():
        return f"belongs to another run (run_hash {ckpt['run_hash']!r}, this run is {cfg.hash()!r})"
    epoch, history, state = ckpt["epoch"], ckpt["history"], ckpt["model"]
    if not (isinstance(epoch, int) and 1 <= epoch <= cfg.train.epochs):
        return f"unreadable: malformed, epoch={epoch!r}"
    if not (isinstance(history, dict) and all(len(history.get(k, ())) == epoch for k in HISTORY_KEYS)):
        return "unreadable: malformed history"
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if not (isinstance(state, dict) and {k: getattr(v, "shape", None) for k, v in state.items()} == expected):
        return "unreadable: its weights do not fit the model"
    if not isinstance(ckpt["optimizer"], dict) or not {"state", "param_groups"} <= set(ckpt["optimizer"]):
        return "unreadable: malformed optimizer state"
    return None


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _check_config(cfg, where: str) -> None:
    if not isinstance(cfg, RunConfig):
        raise TypeError(f"{where} must be a RunConfig, got {cfg!r:.80} of type {type(cfg).__name__}")


def _check_store(store, where: str) -> RunStore:
    if store is None:
        return RunStore()
    if isinstance(store, (str, os.PathLike)):
        raise TypeError(f"{where}(store=...) must be a RunStore or None (the default store), got the "
                        f"{type(store).__name__} {str(store)!r}; pass store=RunStore({str(store)!r})")
    if not isinstance(store, RunStore):
        raise TypeError(f"{where}(store=...) must be a RunStore or None (the default store), "
                        f"got {store!r:.80} of type {type(store).__name__}")
    return store


def run_all(configs: Sequence[RunConfig], store: RunStore | None = None, *, executor=None,
            device: str = "auto", progress: bool = True, batch: bool | None = None) -> list[Run]:
    """Train (or load) a sweep of independent configs.

    Parents are trained first, once each and stage by stage down their chains (dense runs, their
    sparse children, an imp chain's later rounds), so that runs sharing a parent never train it
    twice; a run whose ancestors are missing gets them trained too. ``executor`` is a keyword of
    :mod:`sparsegap.executors` ("local", "processes:N", "auto", "dask", "dask:ADDRESS", "slurm:PATH"), or
    anything with ``map`` (a process pool, :class:`~sparsegap.executors.DaskExecutor`); None means the one a
    notebook activated, else this process. With an executor, each batchable group is one task and every
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
    if isinstance(executor, str):              # the keyword: started for this sweep, stopped after it
        from .executors import executor_for
        with executor_for(executor) as ex:
            return run_all(configs, store, executor=ex, device=device, progress=progress, batch=batch)
    if executor is None:                       # a notebook's executor parameter (sparsegap.executors.activate)
        from .executors import active
        executor = active()
    configs = list(configs)
    for i, c in enumerate(configs):
        _check_config(c, f"run_all(configs=...): configs[{i}]")
    if batch is not None and not isinstance(batch, bool):
        raise TypeError(f"run_all(batch=...) must be None (automatic), True or False, got {batch!r}")
    store = _check_store(store, "run_all")
    device = resolve_device(device)
    for c in dict.fromkeys(configs):
        check_runnable(c)                  # every config, before anything trains
    # Waves: every run whose parent is done (or that has none) is ready; the ready runs train (batched
    # where they can), which makes their children ready, and so on down the chains. A child's mask
    # and start need its parent's solution. Runs of different depths train together when ready
    # together (an imp chain's next round beside the re-dense run of the round before).
    todo = [c for c in dict.fromkeys(a for c in configs for a in _chain(c))]
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
            ready = [c for c in pending if all(store.is_done(n) for n in _needs(c))]
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


def batch_eligible(cfg: RunConfig) -> bool:
    """Whether ``cfg`` trains through the batched trainer (:func:`sparsegap.batched.train_batched`), alone or in a
    batch, wherever and by whomever it is trained: a model that :func:`sparsegap.batched.trains_batched` accepts
    (a plain MLP of the measured size) at the run's batch size, and none of what needs a run of its own (a mask
    updater touches the optimizer state, a gradient tracker reads p.grad, a data schedule picks each run's
    samples, the Fisher regularizer needs its own double backward, the GPU options are for large networks).
    A static rule: it depends on the config alone, never on the runs trained beside it."""
    if (cfg.kind in UPDATER_KINDS or cfg.kind == "curve" or cfg.train.fisher_reg or cfg.train.data_schedule != "full"
            or cfg.train.gpu_options or any(t.startswith("grad_snr") for t in cfg.track)):
        return False
    key = (cfg.model, cfg.data.name, cfg.train.batch_size)
    if key not in _ELIGIBLE:
        from .batched import trains_batched
        with _own_random_state():     # the probe draws its weights from the global generator
            _ELIGIBLE[key] = trains_batched(build_model_for(cfg.model, cfg.data), cfg.train.batch_size,
                                            input_shape=tuple(load_data(cfg.data).input_shape))
    return _ELIGIBLE[key]


_ELIGIBLE: dict = {}    # (model config, dataset name, batch size) -> trains_batched (the architecture needs no more)


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
    jobs: list[_Job] = []
    try:
        with _own_random_state():
            for cfg in group:
                lock = store.lock(cfg)
                if not lock.try_acquire():
                    continue
                job = _prepare(cfg, store, parents.get(cfg.parent), lock)
                if isinstance(job, Run):
                    lock.release()
                else:
                    jobs.append(job)
            if jobs:
                _train_jobs(jobs, store, device, progress)
    finally:
        for job in jobs:
            job.lock.release()


def _train_jobs(jobs: list[_Job], store: RunStore, device, progress: bool) -> list[Run]:
    """Train batch-eligible jobs (locked, prepared) as one batched model, and store them.

    Always at one torch thread: a member's arithmetic is then the same in a batch of any size (with more, the
    product of a member alone is split over the threads, in a batch the members are; measured to differ in
    the last bits). The members are one model's (:func:`_groups`)."""
    t0 = time.time()
    datas = [load_data(j.cfg.data) for j in jobs]
    with use_threads(1):
        histories = train_batched(
            [j.model for j in jobs], datas, [j.cfg.train for j in jobs], masks=[j.masks for j in jobs],
            seeds=[j.cfg.seed for j in jobs], callbacks=[j.callbacks(d) for j, d in zip(jobs, datas)],
            device=device, checkpoints=[j.checkpoint for j in jobs],
            on_epoch_end=[j.save_checkpoint for j in jobs], progress=progress,
            desc=(f"batch of {len(jobs)}: {jobs[0].label.split(' seed')[0]} ..." if len(jobs) > 1 else jobs[0].label))
    seconds = (time.time() - t0) / len(jobs)
    engine = engine_for(jobs[0].model)
    return [_finish(job, store, history, seconds, 1, batch=len(jobs), engine=engine)
            for job, history in zip(jobs, histories)]
