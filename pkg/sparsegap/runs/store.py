"""The run store: every trained network, keyed by the hash of its config.

Layout of one run (``<root>/<kind>-<hash>/``)::

    config.json    the full config (written first)
    init.pt        the initial weights (Init-D, Init-F or Init-S), masked
    masks.pt       the masks of a sparse run (config.SPARSE_KINDS)
    weights-iter<k>.pt  the weights after training iteration k, for each k of ``save_weights_at``
                   (a dense run that imp rounds rewind to)
    checkpoint.pt  the last epoch checkpoint, while training (removed when done)
    weights.pt     the final weights (Sol-D, Sol-F or Sol-S)
    history.json   the per-epoch history
    meta.json      seconds, threads, the epoch it resumed at, its status (done or diverged), the code
                   epoch and provenance (:mod:`.provenance`)
    DONE           written last: the run is complete, with the SHA-256 of every file above

A run directory that claims to be done but does not load, or whose files do not match their
checksums, is reported as :class:`DamagedRun` (the sweep warns and trains it again, never crashes);
one trained by another code epoch as :class:`StaleRun`. Everything is read back with
``torch.load(weights_only=True)``: no arbitrary unpickling. The store never reads, writes or deletes
through a symbolic link in place of a run directory or a lock (:class:`LinkedPath`).
"""

from __future__ import annotations

import dataclasses
import warnings
import functools
import hashlib
import io
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .. import paths
from ..config import RUN_KINDS, SPARSE_KINDS, RunConfig
from ..pruning import Masks
from . import provenance
from .atomic import atomic_save, atomic_write_text, sha256, to_cpu
from .lock import RunLock
from .materials import build_model_for

# Kept for code that imports it: three folders above this file (the checkout's root, when run from one).
REPO_ROOT = Path(__file__).resolve().parents[3]

# The name of a run directory, <kind>-<16 hex digits of the config hash>: anything else in the store is not a run.
RUN_ID = re.compile(rf"(?:{'|'.join(map(re.escape, RUN_KINDS))})-[0-9a-f]{{16}}")


def default_root() -> Path:
    """``$SPARSEGAP_RUNS_DIR``, else the checkout's ``data/runs``, else the user cache (:mod:`sparsegap.paths`)."""
    return paths.runs_dir()


class DamagedRun(Exception):
    """A finished run whose files are missing, unreadable or do not match their checksums."""


class StaleRun(DamagedRun):
    """A finished run trained by another code epoch (:data:`.provenance.CODE_EPOCH`): trained again, never reused."""


class FilesChanged(DamagedRun):
    """A file written before training (init, masks, kept weights) changed while the run trained: not stored."""


class MissingRun(LookupError):
    """The run is not (yet) in the store."""


class LinkedPath(OSError):
    """A run directory, measurements directory, ``.locks`` or lock file that is a symbolic link: the store
    refuses it, since its writes and deletions would follow the link out of the store."""


def refuse_link(path: Path, what: str) -> Path:
    if path.is_symlink():
        raise LinkedPath(f"{what} {path} is a symbolic link (to {os.readlink(path)}); the store refuses to write "
                         f"or delete through links, which can lead out of the store: replace the link with a real "
                         f"directory (or remove it)")
    return path


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
        ``measurements/<name>-<hash of params>.json``, with the seconds it took and the torch threads it had,
        so that rebuilding a chapter reuses it. ``name``
        is a plain file-name stem (no path: it must not lead out of the run's directory).
        """
        if not isinstance(name, str):
            raise TypeError(f"Run.measure(name=...) must be a str (a plain file-name stem), got {name!r} of type "
                            f"{type(name).__name__}")
        if not name or name.startswith(".") or any(c in name for c in "/\\\0"):
            raise ValueError(f"Run.measure(name=...) must be a plain file-name stem (not empty, no '/', '\\', "
                             f"NUL or leading '.'), such as 'path_from_init_s'; got {name!r}")
        key = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]
        folder = refuse_link(refuse_link(self.path, "run directory") / "measurements", "measurements directory")
        path = folder / f"{name}-{key}.json"
        if path.exists():
            try:
                return json.loads(path.read_text())["value"]
            except (ValueError, KeyError):
                warnings.warn(f"measurement {path} is unreadable; measuring again")
        t0 = time.perf_counter()
        value = fn()
        # the wall time sits beside the value, not in it: a plan checks its estimate against it, and the
        # determinism test leaves it out of what must be bitwise equal
        seconds = round(time.perf_counter() - t0, 3)
        atomic_write_text(json.dumps({"name": name, "params": params, "value": value, "seconds": seconds,
                                      "threads": torch.get_num_threads()}, default=str), path)
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


def stored_files(cfg: RunConfig) -> tuple[str, ...]:
    """The files a finished run keeps, each with its SHA-256 in DONE."""
    masks = ("masks.pt",) if cfg.kind in SPARSE_KINDS else ()
    saved = tuple(saved_name(k) for k in cfg.save_weights_at)
    return ("config.json", "init.pt", *masks, *saved, "weights.pt", "history.json", "meta.json")


def saved_name(iteration: int) -> str:
    return f"weights-iter{iteration}.pt"


def _seconds(name: str, value, *, positive: bool = False) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf")
            or (positive and value == 0)):
        raise ValueError(f"RunStore({name}=...) must be a finite number of seconds {'> 0' if positive else '>= 0'}, "
                         f"got {value!r}")
    return float(value)


def _check_root(root) -> Path:
    """The store's directory, or a clear error naming ``root`` and what is allowed."""
    if root is None:
        root = default_root()
    elif isinstance(root, bool) or not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"RunStore(root=...) must be a directory path (str or pathlib.Path), or None for the "
                        f"default data/runs ($SPARSEGAP_RUNS_DIR); got {root!r} of type {type(root).__name__}")
    if not os.fspath(root):   # Path("") is the working directory: a store there is never what was meant
        raise ValueError(f"RunStore(root=...) must be a directory path, got the empty path {root!r}; pass None "
                         f"for the default data/runs ($SPARSEGAP_RUNS_DIR), or '.' for the working directory")
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
    raises ``TimeoutError`` (None: as long as it takes). ``lock_max_age``: seconds (> 0) after which a
    lock on another host that its owner stopped refreshing is stale; owners refresh it every epoch. On this
    host a live owner keeps its lock whatever its age, and a lock whose owner died is stale at once.
    """

    def __init__(self, root: str | Path | None = None, *, lock_timeout: float | None = None,
                 lock_max_age: float = 86400.0):
        self.root = _check_root(root)
        self.lock_timeout = None if lock_timeout is None else _seconds("lock_timeout", lock_timeout)
        self.lock_max_age = _seconds("lock_max_age", lock_max_age, positive=True)

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def path(self, cfg: RunConfig | str) -> Path:
        """The run's directory (``cfg``: its config, or its run id); :class:`LinkedPath` if it is a symbolic
        link (checked at every use, so before anything is read, written or deleted there)."""
        run_id = _run_id(cfg)
        return refuse_link(self.root / run_id, f"run directory of {run_id}:")

    def lock(self, cfg: RunConfig | str) -> RunLock:
        """The lock under which ``cfg`` (a config, or a run id) is trained (a context manager); :class:`LinkedPath`
        if ``.locks`` or the lock file is a symbolic link."""
        run_id = _run_id(cfg)
        locks = refuse_link(self.root / ".locks", "the store's lock directory")
        return RunLock(refuse_link(locks / f"{run_id}.lock", f"lock file of {run_id}:"),
                       timeout=self.lock_timeout, max_age=self.lock_max_age)

    def holder(self, cfg: RunConfig | str) -> str | None:
        """Who holds the lock of ``cfg`` (a config, or a run id) now, as "pid ... on HOST since ...": a live owner
        on this host, or one on another host that refreshed it within ``lock_max_age``; None if it is free or its
        owner is gone (then the next process takes it over). Only looks: creates, takes over and deletes nothing."""
        from .lock import _describe
        lock = self.lock(cfg)
        found = lock._read()
        return None if found is None or lock._stale(found) else _describe(found)

    def run_dirs(self) -> list[Path]:
        """Every run directory in the store, finished or not (named ``<kind>-<hash>``), sorted by name; symbolic
        links are left out (the store refuses them)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if RUN_ID.fullmatch(p.name) and p.is_dir() and not p.is_symlink())

    def is_done(self, cfg: RunConfig) -> bool:
        return (self.path(cfg) / "DONE").exists()

    def is_current(self, cfg: RunConfig) -> bool:
        """Done and trained by this code epoch, by its meta.json (not checksummed: a plan's cheap look; loading
        checks everything)."""
        path = self.path(cfg)
        if not (path / "DONE").exists():
            return False
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(meta, dict) and provenance.stale_reason(meta) is None

    def load(self, cfg: RunConfig) -> Run:
        """Load a finished run: MissingRun if it is not finished, DamagedRun if anything is
        missing, unreadable or does not match its checksum in DONE, StaleRun if it was trained by
        another code epoch."""
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
            stale = provenance.stale_reason(json.loads(read("meta.json")))
            if stale:
                raise StaleRun(f"it was {stale}")
            history = json.loads(read("history.json"))
            _check_history(history, cfg)
            weights = _load_tensors(read("weights.pt"))
            init = _load_tensors(read("init.pt"))
            masks = _load_tensors(read("masks.pt")) if cfg.kind in SPARSE_KINDS else None
            saved = {k: _load_tensors(read(saved_name(k))) for k in cfg.save_weights_at}
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


def _run_id(cfg: RunConfig | str) -> str:
    if isinstance(cfg, RunConfig):
        return cfg.run_id
    if isinstance(cfg, str) and RUN_ID.fullmatch(cfg):
        return cfg
    raise ValueError(f"a run must be given as a RunConfig or a run id (<kind>-<16 hex digits>, kind one of "
                     f"{', '.join(RUN_KINDS)}), got {cfg!r:.80}")


def _checksums(marker: bytes, cfg: RunConfig) -> dict[str, str]:
    """The SHA-256 of each file recorded in DONE.

    A marker of the old format (the bare config hash, written before checksums existed) is a damaged
    run, trained again: it records nothing its files could be checked against, and upgrading it
    (checksumming the files as they are now) would bless whatever was swapped in before the upgrade."""
    text = marker.decode(errors="replace").strip()
    if text == cfg.hash():
        raise DamagedRun("DONE is of the old format (the bare config hash, written before DONE held checksums): "
                         "its files cannot be verified")
    try:
        done = json.loads(text)
        ok = done["run_hash"] == cfg.hash() and set(done["sha256"]) == set(stored_files(cfg))
    except (ValueError, KeyError, TypeError):
        raise DamagedRun("DONE is not a valid marker") from None
    if not ok:
        raise DamagedRun("DONE belongs to another run, or does not list every file")
    return done["sha256"]


def _read_checked(path: Path, checksums: dict[str, str], name: str) -> bytes:
    data = (path / name).read_bytes()
    if sha256(data) != checksums[name]:
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


def write_result(path: Path, cfg: RunConfig, model: nn.Module, history: dict, meta: dict,
                 written: dict[str, str]) -> None:
    """Store the result, DONE last. ``written``: the SHA-256 of the files written before training (config,
    init, masks, kept weights), recorded when they were written; DONE is not written if any of them changed
    since (its checkpoint is deleted: a retry trains from the start)."""
    atomic_save(to_cpu(model.state_dict()), path / "weights.pt")
    atomic_write_text(json.dumps(history), path / "history.json")
    atomic_write_text(json.dumps(meta), path / "meta.json")
    sha = {name: sha256((path / name).read_bytes()) for name in stored_files(cfg)}
    changed = [name for name, digest in written.items() if sha.get(name, digest) != digest]
    if changed:
        (path / "checkpoint.pt").unlink(missing_ok=True)
        raise FilesChanged(f"run {path.name}: {', '.join(changed)} changed while the run trained (swapped or "
                           f"corrupted); it is not stored, and trains from the start when asked for again")
    atomic_write_text(json.dumps({"run_hash": cfg.hash(), "sha256": sha}, indent=1), path / "DONE")
    (path / "checkpoint.pt").unlink(missing_ok=True)


def sweep_temporaries(path: Path) -> None:
    """Temporaries left by a process killed mid-write. Only the lock's holder writes in a run
    directory (measurements go to measurements/), so every one found here is an orphan."""
    for tmp in path.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def check_config(cfg, where: str) -> None:
    if not isinstance(cfg, RunConfig):
        raise TypeError(f"{where} must be a RunConfig, got {cfg!r:.80} of type {type(cfg).__name__}")


def check_store(store, where: str) -> RunStore:
    if store is None:
        return RunStore()
    if isinstance(store, (str, os.PathLike)):
        raise TypeError(f"{where}(store=...) must be a RunStore or None (the default store), got the "
                        f"{type(store).__name__} {str(store)!r}; pass store=RunStore({str(store)!r})")
    if not isinstance(store, RunStore):
        raise TypeError(f"{where}(store=...) must be a RunStore or None (the default store), "
                        f"got {store!r:.80} of type {type(store).__name__}")
    return store
