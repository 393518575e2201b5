"""A sweep SIGKILLed 20 times in a row ends exactly as an uninterrupted one (issue 7, section 2).

A sweep of 10 tiny runs (2 dense, 8 sparse) runs in a child process (tests/_store_worker.py) that
is SIGKILLed, then started again on the same store, 20 times: the even kills land right after a
file write (the child kills itself at its N-th write point, see ``SPARSEGAP_FAULT_AFTER_WRITE`` in
sparsegap/runs/atomic.py), the odd ones at a random moment while it trains. A last child then completes
the sweep. Every run must be complete and undamaged, no temporary, checkpoint or lock may remain,
and the weights must equal, bit for bit, those of the same sweep run without interruption in
another store.

Where the kills landed is printed: ``pytest tests/test_fault_injection.py -rP`` shows it.

A second test damages, between kills, every unfinished run that has a checkpoint (issue 25): bit flips and
swaps must be caught on resume, and the sweep still end bitwise as an uninterrupted one.
"""

import json
import os
import random
import signal
import time
import warnings
from pathlib import Path

import pytest
import torch

from _damage import DAMAGES, damage
from _store_worker import Zygote
from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.runs import RunStore

KILLS = 20
SEED = 7        # of the kill schedule; the report gives it
EPOCHS = 6


def sweep_configs() -> list[RunConfig]:
    def dense(seed):
        return RunConfig("dense", DataConfig("tishby", train_size=300), ModelConfig("mlp", hidden=(32,)),
                         TrainConfig(epochs=EPOCHS, batch_size=50, lr=0.05), seed=seed)

    return [RunConfig(kind, d.data, d.model, d.train, seed=d.seed, sparsity=s, exclude_output=True, parent=d)
            for d in (dense(0), dense(1)) for kind in ("finetune", "scratch") for s in (0.5, 0.8)]


def all_runs() -> list[RunConfig]:
    return list(dict.fromkeys([c.parent for c in sweep_configs()] + sweep_configs()))


def run_child(zygote: Zygote, root: Path, log_dir: Path, name: str, *, fault_after: int | None = None,
              kill_after: float | None = None) -> tuple[int, str, int]:
    """One sweep process on ``root``: its exit code (-9: killed), its stderr and its pid.

    ``fault_after=N``: the child kills itself at its N-th write point. ``kill_after=s``: this test
    kills it ``s`` seconds after it has taken its first lock, that is, while it trains a run
    (``fault_after`` is then a backstop, for a loaded machine where this test sees the lock late).
    """
    job = {"root": str(root), "configs": [c.full_dict() for c in sweep_configs()], "sweep": True,
           "log": str(log_dir / "trainings.log"), "out": str(log_dir / f"{name}.out.json"),
           "stderr": str(log_dir / f"{name}.stderr"),
           "env": {"SPARSEGAP_FAULT_AFTER_WRITE": str(fault_after)} if fault_after else {}}
    pid = zygote.start(job)
    if kill_after is not None:
        deadline = time.monotonic() + 60
        while not (locked_by(root, pid) or Path(job["out"]).exists() or time.monotonic() > deadline):
            time.sleep(0.001)
        time.sleep(kill_after)
        os.kill(pid, signal.SIGKILL)   # a zombie until the zygote reaps it below: never another process
    code = zygote.wait(pid)
    stderr = Path(job["stderr"]).read_text() if Path(job["stderr"]).exists() else ""
    return code, stderr, pid


def locked_by(root: Path, pid: int) -> list[str]:
    """The runs whose lock ``pid`` holds (or held when it was killed)."""
    held = []
    for lock in (root / ".locks").glob("*.lock"):
        try:
            if json.loads(lock.read_text())["pid"] == pid:
                held.append(lock.stem)
        except (OSError, ValueError, KeyError):
            continue
    return held


def points_left(root: Path) -> int:
    """A lower bound of the write points (a temporary written, then renamed: 2 per file) that the
    sweep has yet to pass: each epoch not checkpointed but the last (whose checkpoint is not written),
    then weights, history, meta and DONE.
    A child told to die at a write point up to this many dies before it can finish the sweep."""
    left = 0
    for cfg in all_runs():
        path = root / cfg.run_id
        if (path / "DONE").exists():
            continue
        ckpt = path / "checkpoint.pt"
        epochs_done = torch.load(ckpt, weights_only=True)["epoch"] if ckpt.exists() else 0
        left += 2 * (EPOCHS - 1 - epochs_done + 4)
    return left


def where(root: Path, stderr: str, pid: int) -> str:
    """Where a kill landed: the file just written (self-kills), the run the child was in, that
    run's last checkpoint and the temporaries left, and how far the sweep was."""
    parts = [line.split("after writing ", 1)[1] for line in stderr.splitlines() if "fault injection:" in line]
    for run_id in locked_by(root, pid):
        path = root / run_id
        ckpt = path / "checkpoint.pt"
        epoch = torch.load(ckpt, weights_only=True)["epoch"] if ckpt.exists() else 0
        tmps = len(list(path.glob(".*.tmp")))
        state = "DONE written" if (path / "DONE").exists() else f"checkpoint epoch {epoch}"
        parts.append(f"in {run_id} ({state}{f', {tmps} temp file left' if tmps else ''})")
    if not parts:
        parts.append("outside any run (loading the finished ones)")
    return "; ".join(parts) + f"; {len(list(root.glob('*/DONE')))}/10 runs done"


@pytest.mark.timeout(300)   # a guard against a hang; it takes about 15 s
def test_a_sweep_killed_twenty_times_ends_as_an_uninterrupted_one(tmp_path):
    zygote = Zygote()
    try:
        # The first sweep pages torch's libraries in (seconds, once); the second one, timed, sets the
        # window of the timed kills.
        code, err, _ = run_child(zygote, tmp_path / "warmup", tmp_path, "warmup")
        assert code == 0, err
        start = time.perf_counter()
        code, err, _ = run_child(zygote, tmp_path / "reference", tmp_path, "reference")
        assert code == 0, err
        reference_seconds = time.perf_counter() - start

        # Spread the kills over the sweep, never letting a child finish it: a self-kill lands
        # within the write points left but the last (at the last, the DONE of the last run, the sweep
        # would be complete and leave no run to kill), a timed kill within a third of the time left.
        root, rng, report = tmp_path / "runs", random.Random(SEED), []
        total = points_left(root)
        for i in range(KILLS):
            left = points_left(root)
            if i % 2 == 0:   # right after a write: of the temporary (before its rename), or of the file
                n = rng.randint(1, min(30, left - 1))
                code, err, pid = run_child(zygote, root, tmp_path, f"kill{i}", fault_after=n)
                how = f"at write point {n}"
            else:            # anywhere in a run
                delay = rng.uniform(0, min(reference_seconds / 4, reference_seconds * left / total / 3))
                code, err, pid = run_child(zygote, root, tmp_path, f"kill{i}", kill_after=delay,
                                           fault_after=left - 1)
                how = f"{1000 * delay:.0f} ms into a run"
                if "fault injection" in err:
                    how += " (too late: the backstop killed it)"
            assert code == -signal.SIGKILL, f"kill {i + 1} ({how}) did not land: exit {code}\n{err}"
            report.append(f"kill {i + 1:2d} {how:>19}: {where(root, err, pid)}")

        code, err, _ = run_child(zygote, root, tmp_path, "final")
        assert code == 0, err
    finally:
        zygote.close()

    warned = [line for p in tmp_path.glob("*.stderr") for line in p.read_text().splitlines() if "UserWarning" in line]
    print(f"\nfault injection (seed {SEED}); the uninterrupted sweep took {reference_seconds:.1f} s")
    print("\n".join(report))
    print(f"warnings: {sum('taking over the stale lock' in w for w in warned)} stale locks taken over, "
          f"{sum('checkpoint' in w for w in warned)} checkpoints discarded, "
          f"{sum('damaged' in w for w in warned)} damaged runs")

    store, reference = RunStore(root), RunStore(tmp_path / "reference")
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no run is damaged: each loads, its checksums verified
        for cfg in all_runs():
            got, want = store.load(cfg), reference.load(cfg)
            assert got.weights.keys() == want.weights.keys()
            assert all(torch.equal(got.weights[k], want.weights[k]) for k in want.weights), cfg.run_id
            assert got.history["train_loss"] == want.history["train_loss"]
    assert json.loads((tmp_path / "final.out.json").read_text()) == \
        json.loads((tmp_path / "reference.out.json").read_text())
    assert len(all_runs()) == len(list(root.glob("*/DONE"))) == 10
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name == "checkpoint.pt"]
    assert not leftovers and not list((root / ".locks").glob("*.lock"))


def sibling_for(kind: str, cfg: RunConfig, root: Path) -> Path | None:
    """Another run of the sweep (same shapes) that ``kind`` of damage can take a file from, whose file differs."""
    needs_ckpt = kind in ("a sibling's masks", "a sibling's checkpoint with a forged run_hash")
    name = {"a sibling's masks": "masks.pt", "masks.pt swapped": "masks.pt", "init.pt swapped": "init.pt"}.get(kind)
    for other in all_runs():
        there = root / other.run_id
        if other == cfg or (needs_ckpt and not (there / "checkpoint.pt").exists()):
            continue
        if name and not ((there / name).exists() and (root / cfg.run_id / name).exists()
                         and (there / name).read_bytes() != (root / cfg.run_id / name).read_bytes()):
            continue
        return there
    return None


@pytest.mark.timeout(300)   # a guard against a hang; it takes about 15 s
def test_bit_flips_and_swaps_in_unfinished_runs_end_as_an_uninterrupted_sweep(tmp_path):
    """Issue 25, item 1: the sweep is killed at write points, and after each kill every unfinished run that has a
    checkpoint is damaged once, as the audit did (a bit flipped in the checkpoint's tensor data, its masks set to
    None or a sibling's, another lr, a sibling's checkpoint under a forged run_hash, init.pt or masks.pt swapped,
    a NaN planted). Each damaged run must warn and train from the start, and the sweep end bitwise as an
    uninterrupted one, no run stored as diverged."""
    zygote = Zygote()
    applied: dict[str, str] = {}             # run id -> the damage done to it
    try:
        code, err, _ = run_child(zygote, tmp_path / "reference", tmp_path, "reference")
        assert code == 0, err
        root, rng = tmp_path / "runs", random.Random(SEED)
        for i in range(KILLS):
            left = points_left(root)
            if left < 8 or set(applied.values()) == set(DAMAGES):
                break
            code, err, _ = run_child(zygote, root, tmp_path, f"damage{i}", fault_after=rng.randint(4, min(40, left - 1)))
            assert code == -signal.SIGKILL, f"kill {i + 1} did not land: exit {code}\n{err}"
            for cfg in all_runs():
                path = root / cfg.run_id
                if cfg.run_id in applied or (path / "DONE").exists() or not (path / "checkpoint.pt").exists():
                    continue
                order = sorted(DAMAGES, key=lambda k: list(applied.values()).count(k))   # the least done first
                for kind in order:
                    if kind in ("its masks set to None", "a sibling's masks", "masks.pt swapped") and cfg.kind == "dense":
                        continue             # a dense run has no masks
                    sibling = sibling_for(kind, cfg, root)
                    if sibling is None and kind not in ("a flipped bit in its tensor data", "its masks set to None",
                                                        "another lr in its optimizer state", "a NaN in its weights"):
                        continue
                    damage(kind, path, sibling, cfg.hash())
                    applied[cfg.run_id] = kind
                    break
        code, err, _ = run_child(zygote, root, tmp_path, "final")
        assert code == 0, err
    finally:
        zygote.close()

    print("\n".join(f"{run_id}: {kind}" for run_id, kind in applied.items()))
    assert set(applied.values()) == set(DAMAGES), f"not every damage was done: {sorted(set(applied.values()))}"
    warned = [line for p in tmp_path.glob("damage*.stderr") for line in p.read_text().splitlines()]
    warned += (tmp_path / "final.stderr").read_text().splitlines()
    for run_id, kind in applied.items():
        assert any(run_id in w and "discarded, training from the start" in w for w in warned), (run_id, kind)
    store, reference = RunStore(root), RunStore(tmp_path / "reference")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for cfg in all_runs():
            got, want = store.load(cfg), reference.load(cfg)
            assert got.diverged is None, cfg.run_id
            assert all(torch.equal(got.weights[k], want.weights[k]) for k in want.weights), cfg.run_id
            assert all(torch.equal(got.init[k], want.init[k]) for k in want.init), cfg.run_id
            assert (got.masks is None) == (want.masks is None), cfg.run_id
            assert got.masks is None or all(torch.equal(got.masks[k], want.masks[k]) for k in want.masks), cfg.run_id
            assert got.history["train_loss"] == want.history["train_loss"], cfg.run_id
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name == "checkpoint.pt"]
