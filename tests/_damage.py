"""Damage done to an unfinished run (one with a checkpoint), as the audit of issue 25 did it, and the crash that
leaves one: shared by tests/test_store_integrity.py, test_fault_injection.py, test_provenance.py and test_runs.py.

Each damage leaves files that load: before checkpoints and start files were verified, each one resumed into a
silently wrong run (or, for the NaN, a run stored as diverged).
"""

from __future__ import annotations

import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch

import sparsegap.runs.job as runs_job
from sparsegap.runs import get_or_train
from sparsegap.runs.atomic import content_sha256

DAMAGES = (
    "a flipped bit in its tensor data",
    "its masks set to None",
    "a sibling's masks",
    "another lr in its optimizer state",
    "a sibling's checkpoint with a forged run_hash",
    "init.pt swapped",
    "masks.pt swapped",
    "a NaN in its weights",
)
# and these with the checkpoint's checksum recomputed (a forger who knows the format): the other checks catch them
FORGED = ("its masks set to None", "a sibling's masks", "a sibling's checkpoint with a forged run_hash",
          "a NaN in its weights")


def flip_a_bit_in_tensor_data(path: Path) -> None:
    """Flip a low mantissa bit of a float32 in the middle of the largest tensor of a torch.save file: the zip
    records of tensor data are stored uncompressed, and torch.load does not check their CRC."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.file_size // 8 * 4 + 1] ^= 0x01
    path.write_bytes(bytes(raw))


def _resave(path: Path, change, forge: bool) -> None:
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    if forge:
        ckpt["sha256"] = content_sha256({k: v for k, v in ckpt.items() if k != "sha256"})
    torch.save(ckpt, path)


def damage(kind: str, run_dir: Path, sibling_dir: Path, run_hash: str, forge: bool = False) -> None:
    """Do ``kind`` (one of :data:`DAMAGES`) to the unfinished run in ``run_dir``; ``sibling_dir``: an unfinished
    run of the same shapes (another sparsity or seed), with a checkpoint and masks.pt if ``kind`` needs them."""
    ckpt = run_dir / "checkpoint.pt"
    if kind == "a flipped bit in its tensor data":
        flip_a_bit_in_tensor_data(ckpt)
    elif kind == "its masks set to None":
        _resave(ckpt, lambda c: c.update(masks=None), forge)
    elif kind == "a sibling's masks":
        theirs = torch.load(sibling_dir / "checkpoint.pt", weights_only=True)["masks"]
        _resave(ckpt, lambda c: c.update(masks=theirs), forge)
    elif kind == "another lr in its optimizer state":
        _resave(ckpt, lambda c: c["optimizer"]["param_groups"][0].update(lr=2 * c["optimizer"]["param_groups"][0]["lr"]),
                forge)
    elif kind == "a sibling's checkpoint with a forged run_hash":
        shutil.copy(sibling_dir / "checkpoint.pt", ckpt)
        _resave(ckpt, lambda c: c.update(run_hash=run_hash), forge)
    elif kind in ("init.pt swapped", "masks.pt swapped"):
        name = kind.split()[0]
        shutil.copy(sibling_dir / name, run_dir / name)
    elif kind == "a NaN in its weights":
        def plant(c):
            first = next(v for v in c["model"].values() if torch.is_floating_point(v))
            first.view(-1)[0] = float("nan")
        _resave(ckpt, plant, forge)
    else:
        raise ValueError(f"unknown damage {kind!r}")


def interrupted_after_epoch(cfg, store, epoch, monkeypatch):
    """Train ``cfg`` into ``store`` and stop it (as a crash would) after its checkpoint of ``epoch``."""
    real_save = runs_job.atomic_save

    class Killed(Exception):
        pass

    def dying_save(obj, path):
        real_save(obj, path)
        if path.name == "checkpoint.pt" and obj["epoch"] == epoch:
            raise Killed

    with monkeypatch.context() as m:
        m.setattr(runs_job, "atomic_save", dying_save)
        with pytest.raises(Killed):
            get_or_train(cfg, store, progress=False)
    return store.path(cfg) / "checkpoint.pt"
