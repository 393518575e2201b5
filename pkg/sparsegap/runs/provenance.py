"""What a run records about the code and the machine that trained it, and the code epoch it is checked against.

A run's hash covers its config only, so an edit of the code that changes what training produces (a loss, an
initialisation, a data split) keeps every hash. :data:`CODE_EPOCH` is what tells the store that its runs are of
older code: ``meta.json`` and every checkpoint record the epoch they were written by, and a stored run or
checkpoint of another epoch is trained again, with a warning, never reused.

``meta.json`` also records the provenance below (:func:`provenance`), for people and for tools that look for
stale results: the package version, the git commit and whether the checkout had uncommitted changes, the torch
and CUDA versions, the device, the host and when the training started (UTC).
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

from .. import __version__

# Bump by hand, in the commit that makes it, when a change alters results (what a run trains to, bit for bit,
# or what it records): every stored run and checkpoint of another epoch is then trained again. Runs and
# checkpoints recorded before epochs existed carry none and count as epoch 1, so that the stores built by the
# code of then stay valid under epoch 1.
CODE_EPOCH = 1

UNRECORDED_EPOCH = 1   # the epoch of a meta.json or checkpoint that records none (written before epochs existed)

_CHECKOUT = Path(__file__).resolve().parents[3]   # <checkout>/pkg/sparsegap/runs/provenance.py


def current_epoch() -> int:
    """:data:`CODE_EPOCH`, read when asked (a test may change it)."""
    return CODE_EPOCH


def epoch_of(record: dict) -> int:
    """The code epoch a meta.json or checkpoint was written by."""
    return record.get("code_epoch", UNRECORDED_EPOCH)


def stale_reason(record: dict) -> str | None:
    """Why ``record`` (a meta.json or checkpoint) is of other code than this one ("written by code epoch ..."),
    or None."""
    epoch = epoch_of(record)
    if epoch == current_epoch():
        return None
    return (f"written by code epoch {epoch!r}, this code is epoch {current_epoch()} "
            f"(CODE_EPOCH in sparsegap/runs/provenance.py, bumped when a change alters results)")


@functools.cache
def git_state() -> tuple[str | None, bool | None]:
    """The commit of the checkout this package is imported from, and whether its tracked files differ from it;
    (None, None) if the package is not in a checkout (installed), or git is missing or fails. Read once per
    process: a process does not see its own code change."""
    if not (_CHECKOUT / ".git").exists() or not (_CHECKOUT / "pkg" / "sparsegap").is_dir():
        return None, None
    env = os.environ | {"GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}   # never write the index of a checkout in use

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(_CHECKOUT), *args], capture_output=True, text=True,
                                 timeout=20, env=env)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    # untracked files are left out: the book writes its outputs into the checkout, and they change no result
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, None if status is None else bool(status)


@functools.cache
def device_name(device: str) -> str:
    """What ``device`` is: the GPU's name, or the CPU's model."""
    d = torch.device(device)
    if d.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(d)
    if d.type == "cpu":
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine() or "cpu"
    return d.type


def provenance(device, started: float) -> dict:
    """The record of meta.json: the code epoch, what code and machine trained the run, and when it started
    (``started``: seconds since the epoch, as time.time())."""
    commit, dirty = git_state()
    return {"code_epoch": current_epoch(), "version": __version__, "git_commit": commit, "git_dirty": dirty,
            "torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
            "device_name": device_name(str(device)), "host": socket.gethostname(),
            "started_utc": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds")}
