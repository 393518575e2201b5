"""Durable atomic writes: a reader never sees half a file, even after a power cut.

Every file of a run is written to a temporary name in its directory, fsynced, renamed into place,
and the directory fsynced, so that the new name survives too. ``SPARSEGAP_FAULT_AFTER_WRITE=N`` makes
the process kill itself at the N-th of these moments (tests/test_fault_injection.py).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import BinaryIO, Callable

import torch


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
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
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: Path) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_sha256(obj) -> str:
    """The SHA-256 of what a checkpoint holds (nested dicts, lists and tuples of tensors and plain values),
    as loaded, not of its file: a checkpoint carries it inside, so it must not depend on the bytes it is
    written to, and a bit flipped in a tensor's data (which torch.load does not notice) changes it.
    Dict keys are taken sorted: the same contents give the same digest whatever their order."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj) -> None:
    # every item is tagged with its type and length, so that no two different structures feed the same bytes
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for k, v in sorted(obj.items(), key=lambda kv: repr(kv[0])):
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__}{len(obj)}:".encode())
        for v in obj:
            _feed(h, v)
    else:   # str, int, float (repr round-trips exactly, nan included), bool, None
        r = f"{type(obj).__name__}:{obj!r}".encode()
        h.update(f"S{len(r)}:".encode() + r)


def to_cpu(obj):
    """Tensors (in dicts, lists and tuples) on the CPU and detached: what is saved never holds a device."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj
