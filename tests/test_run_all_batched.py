"""run_all trains groups of small networks as one batched model, and the store sees ordinary runs.

A batch-eligible run stores the same bits however it was trained: in a batch of any size, alone, resumed
from its checkpoint, or left over after a crash between the DONE markers of its batch."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from sparsegap import runs
from sparsegap.runs import job as runs_job, sweep as runs_sweep
from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.runs import RunStore, run_all

REPO_ROOT = Path(__file__).resolve().parents[1]


def sweep(epochs: int = 1, *, data=DataConfig("digits", train_size=200), hidden=(32,), batch_size=64,
          lrs=(0.1, 0.05)) -> list[RunConfig]:
    model = ModelConfig("mlp", hidden=hidden)
    out = []
    for seed in (0, 1):
        dense = RunConfig("dense", data, model, TrainConfig(epochs=epochs, batch_size=batch_size), seed=seed)
        for kind, lr in zip(("finetune", "scratch"), lrs):
            out.append(RunConfig(kind, data, model, TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr),
                                 seed=seed, sparsity=0.7, parent=dense, track=("fisher_trace@1",)))
    return out


def meta(store: RunStore, cfg: RunConfig) -> dict:
    return json.loads((store.path(cfg) / "meta.json").read_text())


def assert_same_run(a: runs.Run, b: runs.Run) -> None:
    """Bitwise the same weights, masks and history (but the wall time of each epoch)."""
    assert a.config == b.config
    assert a.weights.keys() == b.weights.keys() and all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert (a.masks is None) == (b.masks is None)
    assert a.masks is None or all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks)
    assert {k: v for k, v in a.history.items() if k != "seconds"} == {k: v for k, v in b.history.items() if k != "seconds"}


def test_batched_sweep_equals_the_runs_trained_alone_bitwise(tmp_path):
    cfgs = sweep(epochs=1)
    single = run_all(cfgs, RunStore(tmp_path / "single"), progress=False, batch=False)
    batched = run_all(cfgs, RunStore(tmp_path / "batched"), progress=False, batch=True)
    for s, b, cfg in zip(single, batched, cfgs):
        assert s.config == b.config == cfg
        assert_same_run(s, b)                                              # the Fisher trace tracked too
        assert meta(RunStore(tmp_path / "single"), cfg)["batch"] == 1      # alone, by the batched trainer
        assert meta(RunStore(tmp_path / "batched"), cfg)["batch"] == 4     # 2 seeds x (Sol-F, Sol-S)
        assert meta(RunStore(tmp_path / "batched"), cfg)["threads"] == 1
    assert meta(RunStore(tmp_path / "batched"), cfgs[0].parent)["batch"] == 2  # the two Sol-Ds


def test_runs_the_batched_trainer_does_not_take_train_alone_with_train(tmp_path):
    cfg = sweep(epochs=1)[0]
    assert runs.batch_eligible(cfg) and runs.batch_eligible(cfg.parent)
    wide = dataclasses.replace(cfg.parent, model=ModelConfig("mlp", hidden=(1000, 300)))  # 367k weights: too large
    snr = dataclasses.replace(cfg, track=("grad_snr@1",))                                 # reads p.grad
    # LeNet-5 at batch 8 would pay batched (vmap), but the vmap engine is not batch-invariant
    lenet5 = dataclasses.replace(cfg.parent, model=ModelConfig("lenet5"), data=DataConfig("fashion-mnist", train_size=200),
                                 train=TrainConfig(epochs=1, batch_size=8))
    assert not any(runs.batch_eligible(c) for c in (wide, snr, lenet5))
    store = RunStore(tmp_path)
    run_all([wide], store, progress=False)
    assert "batch" not in meta(store, wide)


def test_large_groups_are_trained_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(runs_sweep, "MAX_BATCH", 3)
    cfgs = sweep(epochs=1)
    run_all(cfgs, RunStore(tmp_path), progress=False, batch=True)
    assert sorted(meta(RunStore(tmp_path), c).get("batch", 1) for c in cfgs) == [1, 3, 3, 3]


def test_automatic_batching_and_the_off_switch(tmp_path, monkeypatch):
    cfgs = sweep(epochs=1)
    run_all(cfgs, RunStore(tmp_path / "auto"), progress=False)  # tiny MLPs: should_batch says yes
    assert meta(RunStore(tmp_path / "auto"), cfgs[0])["batch"] == 4
    monkeypatch.setenv("SPARSEGAP_BATCH", "0")
    off = run_all(cfgs, RunStore(tmp_path / "off"), progress=False)
    assert meta(RunStore(tmp_path / "off"), cfgs[0])["batch"] == 1     # each alone, to the same bits
    for a, b in zip(off, run_all(cfgs, RunStore(tmp_path / "auto"), progress=False)):
        assert_same_run(a, b)
    with pytest.raises(TypeError, match="batch"):
        run_all(cfgs, RunStore(tmp_path / "x"), batch="yes")


def test_a_member_locked_by_another_process_is_left_to_it(tmp_path):
    store = RunStore(tmp_path)
    cfgs = sweep(epochs=1)
    run_all([c.parent for c in cfgs], store, progress=False)
    held = store.lock(cfgs[0])
    held.acquire()      # another process (as far as the group can tell) trains cfgs[0]
    try:
        runs_sweep._train_group(cfgs, store, torch.device("cpu"), False)
    finally:
        held.release()
    assert not store.is_done(cfgs[0])
    assert all(meta(store, c)["batch"] == 3 for c in cfgs[1:])


WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_run_all_batched import resume_sweep
    from sparsegap.runs import RunStore, run_all
    run_all(resume_sweep(), RunStore({root!r}), progress=False, batch=True)
""")


def resume_sweep() -> list[RunConfig]:
    # The 12-bit MLP at batch 12: about 300 steps an epoch, so a kill lands mid-sweep.
    return sweep(epochs=6, data=DataConfig("tishby"), hidden=(64, 32, 32, 18, 18, 6, 6), batch_size=12,
                 lrs=(0.01, 0.01))


def test_a_killed_batch_resumes_every_member_from_its_own_checkpoint(tmp_path):
    cfgs = resume_sweep()
    store = RunStore(tmp_path / "killed")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "pkg"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    script = WORKER.format(tests=str(REPO_ROOT / "tests"), root=str(store.root))
    child = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        # Kill once every member of the sparse batch has written a checkpoint of epoch 2 or later. The deadline
        # only stops a hung child: a loaded machine (the whole suite beside a build) slows the sweep several times,
        # and a kill before epoch 2 would test less, so it fails the test rather than killing early.
        deadline, epochs = time.monotonic() + 900, []
        while child.poll() is None:
            epochs = []
            for c in cfgs:
                try:
                    epochs.append(torch.load(store.path(c) / "checkpoint.pt", weights_only=True)["epoch"])
                except Exception:
                    break
            if len(epochs) == len(cfgs) and min(epochs) >= 2:
                break
            assert time.monotonic() < deadline, f"no checkpoint of epoch 2 in 900 s (epochs {epochs})"
            time.sleep(0.05)
        assert child.poll() is None, "the sweep ended before it could be killed; make it longer"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert not any(store.is_done(c) for c in cfgs)
    with pytest.warns(UserWarning, match="stale lock"):
        resumed = run_all(cfgs, store, progress=False, batch=True)
    for c in cfgs:
        m = meta(store, c)
        assert m["resumed_at_epoch"] >= 2 and m["batch"] == 4
    uninterrupted = run_all(cfgs, RunStore(tmp_path / "whole"), progress=False, batch=True)
    for a, b in zip(resumed, uninterrupted):
        assert_same_run(a, b)
        assert len(a.history["epoch"]) == 6


@pytest.mark.parametrize("keep_checkpoint", [True, False], ids=["checkpoint kept", "checkpoint lost"])
def test_a_member_left_over_by_a_crash_between_done_markers_trains_alone_to_the_same_bits(
        tmp_path, monkeypatch, keep_checkpoint):
    """A batch dies after two of its members are stored: the others, trained later alone (from their checkpoint
    of the epoch before the last, or from the start), store the bits of the batch that was not interrupted."""
    cfgs = sweep(epochs=2)
    store = RunStore(tmp_path / "crashed")
    run_all([c.parent for c in cfgs], store, progress=False)
    finish, stored = runs_job.finish, []

    def dies_after_two(job, *args, **kw):
        if len(stored) == 2:
            raise KeyboardInterrupt("killed between two DONE markers")
        stored.append(job.cfg)
        return finish(job, *args, **kw)

    monkeypatch.setattr(runs_job, "finish", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_all(cfgs, store, progress=False)
    monkeypatch.setattr(runs_job, "finish", finish)
    left = [c for c in cfgs if not store.is_done(c)]
    assert len(left) == 2 and all((store.path(c) / "checkpoint.pt").exists() for c in left)
    if not keep_checkpoint:
        for c in left:
            (store.path(c) / "checkpoint.pt").unlink()
    alone = [runs.get_or_train(c, store, device="cpu", progress=False) for c in left]
    for c in left:
        m = meta(store, c)
        assert m["batch"] == 1 and m["resumed_at_epoch"] == (1 if keep_checkpoint else 0)
    whole = dict(zip(cfgs, run_all(cfgs, RunStore(tmp_path / "whole"), progress=False)))
    assert all(meta(RunStore(tmp_path / "whole"), c)["batch"] == 4 for c in cfgs)
    for run in alone:
        assert_same_run(run, whole[run.config])


def test_training_leaves_the_callers_random_state_alone(tmp_path):
    """What a notebook draws after run_all must not depend on whether its runs were trained here or loaded."""
    import random

    import numpy as np
    cfgs = sweep(epochs=1)
    runs_job._ELIGIBLE.clear()              # the probe of the rule is built (drawing weights) in this process too
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    run_all(cfgs + [dataclasses.replace(cfgs[0].parent, model=ModelConfig("mlp", hidden=(1000, 300)))],
            RunStore(tmp_path), progress=False)                      # batched, alone and with train()
    after = torch.rand(3), np.random.rand(), random.random()
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    assert torch.equal(after[0], torch.rand(3)) and after[1:] == (np.random.rand(), random.random())
