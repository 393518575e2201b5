"""run_all trains groups of small networks as one batched model, and the store sees ordinary runs."""

from __future__ import annotations

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


def assert_close(a: dict, b: dict, rtol: float = 1e-5) -> None:
    for k in a:
        scale = max(float(a[k].abs().max()), 1e-12)
        assert float((a[k] - b[k]).abs().max()) <= rtol * scale, k


def test_batched_sweep_agrees_with_single_runs(tmp_path):
    cfgs = sweep(epochs=1)
    single = run_all(cfgs, RunStore(tmp_path / "single"), progress=False, batch=False)
    batched = run_all(cfgs, RunStore(tmp_path / "batched"), progress=False, batch=True)
    for s, b, cfg in zip(single, batched, cfgs):
        assert s.config == b.config == cfg
        assert_close(s.weights, b.weights)
        assert torch.equal(s.masks["fc1.weight"], b.masks["fc1.weight"])
        for key in ("train_loss", "test_acc"):
            assert b.history[key] == pytest.approx(s.history[key], rel=1e-5)
        tracked = b.history["trace"]["fisher_trace"]["value"]
        assert tracked == pytest.approx(s.history["trace"]["fisher_trace"]["value"], rel=1e-5)
        assert "batch" not in meta(RunStore(tmp_path / "single"), cfg)
        assert meta(RunStore(tmp_path / "batched"), cfg)["batch"] == 4    # 2 seeds x (Sol-F, Sol-S)
    assert meta(RunStore(tmp_path / "batched"), cfgs[0].parent)["batch"] == 2  # the two Sol-Ds


def test_large_groups_are_trained_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "MAX_BATCH", 3)
    cfgs = sweep(epochs=1)
    run_all(cfgs, RunStore(tmp_path), progress=False, batch=True)
    assert sorted(meta(RunStore(tmp_path), c).get("batch", 1) for c in cfgs) == [1, 3, 3, 3]


def test_automatic_batching_and_the_off_switch(tmp_path, monkeypatch):
    cfgs = sweep(epochs=1)
    run_all(cfgs, RunStore(tmp_path / "auto"), progress=False)  # tiny MLPs: should_batch says yes
    assert meta(RunStore(tmp_path / "auto"), cfgs[0])["batch"] == 4
    monkeypatch.setenv("SPARSEGAP_BATCH", "0")
    run_all(cfgs, RunStore(tmp_path / "off"), progress=False)
    assert "batch" not in meta(RunStore(tmp_path / "off"), cfgs[0])
    with pytest.raises(TypeError, match="batch"):
        run_all(cfgs, RunStore(tmp_path / "x"), batch="yes")


def test_a_member_locked_by_another_process_is_left_to_it(tmp_path):
    store = RunStore(tmp_path)
    cfgs = sweep(epochs=1)
    run_all([c.parent for c in cfgs], store, progress=False)
    held = store.lock(cfgs[0])
    held.acquire()      # another process (as far as the group can tell) trains cfgs[0]
    try:
        runs._train_group(cfgs, store, torch.device("cpu"), False, force=True)
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
        deadline = time.monotonic() + 120
        # Kill once every member of the sparse batch has written a checkpoint of epoch 2 or later.
        while time.monotonic() < deadline and child.poll() is None:
            epochs = []
            for c in cfgs:
                try:
                    epochs.append(torch.load(store.path(c) / "checkpoint.pt", weights_only=True)["epoch"])
                except Exception:
                    break
            if len(epochs) == len(cfgs) and min(epochs) >= 2:
                break
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
        assert_close(b.weights, a.weights)
        assert len(a.history["epoch"]) == 6
