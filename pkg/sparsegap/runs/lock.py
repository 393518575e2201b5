"""The lock of one run, shared by every process (and host) that uses the store.

A run is trained under ``<root>/.locks/<run id>.lock`` so that it is trained once: the others wait,
then load it. The lock names its owner (host, pid, start time); a lock whose owner is gone is taken
over, with a warning. On this host a lock is judged by its owner's pid alone (alive: it is held, whatever its
age); ``max_age`` judges only the owners on other hosts, whose pids cannot be checked.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import secrets
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("sparsegap.runs")


class RunLock:
    """An exclusive lock on one run, shared by every process (and host) that uses the store.

    The lock is a file created with ``O_CREAT | O_EXCL`` (atomic, also on NFS) that holds its
    owner's host, pid and start time; its mtime is refreshed after every epoch (:meth:`refresh`).
    A waiter polls until the file is gone. A lock whose owner is gone (a dead pid on this host) or
    that was not refreshed for ``max_age`` seconds (an owner on another host) is stale: it is taken
    over, with a warning. A live owner on this host is never taken over, however old its lock: an
    epoch longer than ``max_age`` must not get its run trained twice.
    """

    POLL = (0.02, 1.0)           # first and longest pause between two polls, in seconds
    LOG_AFTER = 10.0             # seconds of waiting before saying who holds the lock
    LOG_EVERY = 300.0
    WRITE_GRACE = 5.0            # an empty lock file younger than this is still being written

    def __init__(self, path: Path, *, timeout: float | None = None, max_age: float = 86400.0):
        self.path = Path(path)
        self.timeout = None if timeout is None else _seconds("timeout", timeout, zero=True)
        self.max_age = _seconds("max_age", max_age, zero=False)
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
            warnings.warn(f"the lock of run {self.run_id} was taken over while this process trained it: deleted "
                          f"by hand, or judged stale by a process on another host (lock_max_age={self.max_age} s "
                          f"shorter than an epoch, or this host's clock behind?)")

    def release(self) -> None:
        _RELEASING.append(self)     # a worker told to stop now lets this finish first (runs.workers._stop)
        try:
            if self._still_mine():
                self.path.unlink(missing_ok=True)
            self._mine = None
            _HELD.discard(self)
        finally:
            _RELEASING.remove(self)

    @property
    def run_id(self) -> str:
        return self.path.stem

    def _try_create(self) -> bool:
        # The lock appears with its owner already written in it: the owner goes to a temporary that
        # is then hard-linked to the lock's name (link is atomic and fails if the name exists, also
        # on NFS). A lock created empty and then written could be seen empty, for WRITE_GRACE
        # seconds not judged stale, after its creator was killed in between: a batch would then
        # leave that run out and it would train alone, not bitwise like the sweep never killed.
        self._make_folder()
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
        _HELD.add(self)
        return True

    def _create_then_write(self, owner: bytes) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(owner)
        self._mine = owner
        _HELD.add(self)
        return True

    def _make_folder(self) -> None:
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
            raise NotADirectoryError(
                f"run {self.run_id}: the lock folder {folder} cannot be made, since {blocker} is a file, not a "
                f"folder; it holds only the locks of runs in training, so move or delete that file (when no "
                f"process uses the store) and the locks are made there again") from None

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
        if owner.get("host") == socket.gethostname():
            # its pid tells for sure: an owner alive after max_age is still training (an epoch may be longer)
            return None if _process_alive(owner.get("pid"), owner.get("start_time")) else "its owner process is gone"
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


# The locks this process holds now: a worker that must stop (workers.py) waits until they are released.
_HELD: set[RunLock] = set()
_RELEASING: list[RunLock] = []


def held_locks() -> list[RunLock]:
    """The locks this process holds now."""
    return list(_HELD)


def releasing() -> bool:
    """Whether this process is in the middle of releasing a lock (a stop signal landed there)."""
    return bool(_RELEASING)


def _seconds(name: str, value, *, zero: bool) -> float:
    allowed = "a number of seconds >= 0" if zero else "a number of seconds > 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or value < 0 or (value == 0 and not zero):
        why = ("" if zero else "; max_age is how long the lock of an owner on another host may go unrefreshed "
               "before it is taken over (owners refresh it every epoch), so 0 would take over every such lock")
        raise ValueError(f"RunLock({name}=...) must be {allowed}, got {value!r}{why}")
    return float(value)


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
