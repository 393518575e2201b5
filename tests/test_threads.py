"""The thread policy: one torch thread unless a single large model trains alone."""

from __future__ import annotations

import json
import os

import pytest
import torch

from sparsegap.models import build_model
from sparsegap.runs.threads import (THREADS_ENV, THREADS_MIN_MACS, check_workers, cores, thread_env, threads_for,
                               use_threads)


@pytest.fixture
def two_cores(monkeypatch):
    """The policy as on the 2-core machines it was measured on, whatever runs the tests."""
    monkeypatch.setattr("sparsegap.runs.threads.cores", lambda: 2)
    monkeypatch.delenv(THREADS_ENV, raising=False)


def test_cores_is_the_affinity():
    assert cores() == len(os.sched_getaffinity(0))


def test_threads_for_follows_the_rule(two_cores):
    mlp12 = build_model("mlp", num_classes=2, input_shape=(12,), hidden=(64, 32, 32, 18, 18, 6, 6))
    lenet300 = build_model("lenet300-100", num_classes=10, input_shape=(1, 28, 28))
    lenet5 = build_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    assert threads_for(1) == 1                                        # no model: small
    assert threads_for(1, mlp12, batch_size=12) == 1
    assert threads_for(1, lenet300, batch_size=128) == 1              # 34M MACs
    assert threads_for(1, lenet5, batch_size=128, input_shape=(1, 28, 28)) == 2   # 53M MACs, alone
    assert threads_for(2, lenet5, batch_size=128, input_shape=(1, 28, 28)) == 1   # two workers
    assert threads_for(3, macs=10 * THREADS_MIN_MACS) == 1            # never oversubscribed
    assert threads_for(1, macs=34 * 34_000_000) == 2                  # 34 LeNet-300-100s as one batch
    assert threads_for(1, macs=THREADS_MIN_MACS - 1) == 1


def test_threads_for_on_a_larger_machine(monkeypatch):
    monkeypatch.setattr("sparsegap.runs.threads.cores", lambda: 8)
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert threads_for(2, macs=THREADS_MIN_MACS) == 4
    assert threads_for(8, macs=THREADS_MIN_MACS) == 1


def test_the_environment_overrides_the_rule(two_cores, monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "2")
    assert threads_for(1) == 2
    monkeypatch.setenv(THREADS_ENV, "zero")
    with pytest.raises(ValueError, match=THREADS_ENV):
        threads_for(1)


def test_use_threads_restores_the_old_count():
    old = torch.get_num_threads()
    with use_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == old
    with pytest.raises(RuntimeError), use_threads(1):
        raise RuntimeError("training failed")
    assert torch.get_num_threads() == old
    with pytest.raises(ValueError, match="positive int"):
        with use_threads(0):
            pass


def test_thread_env_for_child_processes():
    env = thread_env(1, {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def test_bad_worker_counts_are_refused(two_cores):
    assert check_workers(None) == 2
    assert check_workers(1) == 1
    with pytest.raises(ValueError, match="max_workers must be a positive int"):
        check_workers(0)
    with pytest.raises(ValueError, match="more than the 2 cores"):
        check_workers(3)
    assert check_workers(3, oversubscribe=True) == 3
    with pytest.raises(ValueError, match="n_workers"):
        threads_for(0)


def test_workers_come_from_the_book_build(monkeypatch):
    from sparsegap.runs.threads import WORKERS_ENV, workers
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert workers() == 1
    monkeypatch.setenv(WORKERS_ENV, "2")
    assert workers() == 2
    monkeypatch.setenv(WORKERS_ENV, "two")
    with pytest.raises(ValueError, match=WORKERS_ENV):
        workers()


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_book_build_trains_every_run_at_one_thread_whatever_its_jobs(two_cores, tmp_path, jobs):
    """-j1 and -j2 give the kernels (and the workers they start) the same thread count, for a run that trains alone
    with train() and would take both cores alone, and for a batched group of LeNet-300-100s (34 of them would take
    both cores at -j1 by the MAC count): one thread, so no reduction order depends on -j."""
    from sparsegap import kernels, runs
    from sparsegap.runs import job
    from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    data = DataConfig("fashion-mnist", train_size=200, test_size=100)
    lenet5 = RunConfig("dense", data, ModelConfig("lenet5"), TrainConfig(epochs=1, batch_size=128))
    group = [RunConfig("dense", data, ModelConfig("lenet300-100"), TrainConfig(epochs=1, batch_size=128), seed=s)
             for s in range(2)]
    with kernels.kernel_env(tmp_path / "runs", workers=jobs):
        assert os.environ[THREADS_ENV] == "1" and os.environ["OMP_NUM_THREADS"] == "1"
        assert job._threads(runs.build_model_for(lenet5.model, data), lenet5, runs.load_data(data)) == 1
        store = runs.RunStore(tmp_path / f"j{jobs}")
        runs.run_all(group, store, progress=False)
        metas = [json.loads((store.path(c) / "meta.json").read_text()) for c in group]
    assert [(m["batch"], m["threads"]) for m in metas] == [(2, 1), (2, 1)]
    os.environ.pop(THREADS_ENV, None)
    # outside a build the policy would give a single LeNet-5 both cores, and a batch still one thread
    assert job._threads(runs.build_model_for(lenet5.model, data), lenet5, runs.load_data(data)) == 2
