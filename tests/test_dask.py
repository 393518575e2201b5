"""Sweeps on dask: a real LocalCluster on loopback, a worker killed mid-run, the Slurm job script, bad input."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest
import torch

pytest.importorskip("distributed")
import dask  # noqa: E402

from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from sparsegap.runs.executors import connect, executor_for, read_slurm_file, slurm_cluster  # noqa: E402
from sparsegap.runs import RunStore, run_all  # noqa: E402

DATA = DataConfig("digits", train_size=200, test_size=50)
MLP = ModelConfig("mlp", hidden=(8,))


def _sweep(epochs: int = 2) -> list[RunConfig]:
    t = TrainConfig(epochs=epochs, batch_size=32, lr=0.05, schedule="constant")
    dense = [RunConfig("dense", DATA, MLP, t, seed=s) for s in (0, 1)]
    return [*dense, RunConfig("scratch", DATA, MLP, t, seed=0, sparsity=0.5, parent=dense[0])]


def test_local_workers_do_not_trim_memory_at_every_free():
    with executor_for("dask") as ex:
        env = ex.client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        ticks = ex.client.run(lambda: (dask.config.get("distributed.admin.tick.interval"),
                                       dask.config.get("distributed.admin.system-monitor.interval"),
                                       dask.config.get("distributed.worker.profile.enabled")))
    assert set(env.values()) == {None}
    assert set(ticks.values()) == {("1s", "5s", False)}   # the workers got the settings, not dask's defaults


def test_every_worker_is_warmed_up_before_its_first_task():
    from sparsegap.runs.workers import warm_up_seconds
    with executor_for("dask") as ex:
        warmed = ex.client.run(warm_up_seconds)
        modules = ex.client.run(lambda: sorted({"torch._dynamo", "sparsegap.train"} & set(sys.modules)))
    assert len(warmed) >= 1 and all(s is not None and s > 0 for s in warmed.values()), warmed
    assert all(m == ["sparsegap.train", "torch._dynamo"] for m in modules.values()), modules


def test_a_local_cluster_trains_a_sweep_bitwise_like_this_process(tmp_path):
    configs = _sweep()
    here = run_all(configs, RunStore(tmp_path / "here"), progress=False, batch=False)
    with executor_for("dask") as ex:
        assert len(ex.client.scheduler_info()["workers"]) >= 1
        there = run_all(configs, RunStore(tmp_path / "dask"), executor=ex, progress=False, batch=False)
    for a, b in zip(here, there):
        assert a.config == b.config
        for k, v in a.weights.items():
            assert torch.equal(v, b.weights[k]), k
        assert {k: v for k, v in a.history.items() if k != "seconds"} == \
            {k: v for k, v in b.history.items() if k != "seconds"}


def test_the_keyword_works_in_run_all_itself(tmp_path):
    runs = run_all(_sweep()[:1], RunStore(tmp_path), executor="dask", progress=False)
    assert runs[0].final["train_acc"] > 0


def test_a_worker_killed_in_mid_run_is_retried_and_the_run_resumes_from_its_checkpoint(tmp_path):
    # long enough to be caught in the middle: a few seconds of small epochs
    slow = RunConfig("dense", DataConfig("digits"), ModelConfig("mlp", hidden=(256, 256)),
                     TrainConfig(epochs=20, batch_size=4, lr=0.01, schedule="constant"), seed=3)
    store = RunStore(tmp_path)
    with executor_for("dask") as ex:
        client = ex.client
        future = client.submit(lambda: None)   # warm the workers up (imports) before timing anything
        future.result()
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(1) as side:
            result = side.submit(run_all, [slow], store, executor=ex, progress=False)
            ckpt = store.path(slow) / "checkpoint.pt"
            deadline = time.monotonic() + 120
            while not ckpt.exists() and time.monotonic() < deadline and not result.done():
                time.sleep(0.05)
            assert ckpt.exists(), "the run finished (or never checkpointed) before it could be killed"
            busy = [w for w, keys in client.processing().items() if keys]
            assert len(busy) == 1
            pids = client.run(os.getpid, workers=busy)
            os.kill(pids[busy[0]], signal.SIGKILL)
            run = result.result(timeout=300)[0]
    meta = json.loads((store.path(slow) / "meta.json").read_text())
    assert meta["status"] == "done" and meta["resumed_at_epoch"] >= 1
    assert len(run.history["train_acc"]) == 20


SLURM_YAML = """\
cores: 4
memory: 16GB
walltime: "02:00:00"
jobs: 3
job_extra_directives: ["--gres=gpu:1", "--partition=gpu"]
"""


def test_the_slurm_job_script_holds_what_the_yaml_asks_for(tmp_path):
    pytest.importorskip("dask_jobqueue")
    path = tmp_path / "cluster.yaml"
    path.write_text(SLURM_YAML)
    cluster, jobs = slurm_cluster(path, scheduler_options={"host": "127.0.0.1", "dashboard_address": None})
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert jobs == 3
    assert "#SBATCH --cpus-per-task=4" in script
    assert "#SBATCH --mem=15G" in script           # dask-jobqueue writes 16GB as 15G (GiB)
    assert "#SBATCH -t 02:00:00" in script
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH --partition=gpu" in script
    assert "--nworkers 4" in script and "--nthreads 1" in script     # one thread per worker process
    assert "--lifetime 6480s" in script            # retires 10% (12 min) before the 2 h walltime
    assert "MALLOC_TRIM_THRESHOLD_=134217728" in script   # not dask's 64 KiB, which slows torch down
    assert "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL=1s" in script


@pytest.mark.parametrize("text, match", [
    (None, "cannot read the Slurm YAML file"),
    ("cores: [4\n", "not valid YAML"),
    ("- 1\n", "must hold a mapping"),
    ("cores: 4\nmemory: 1GB\nwalltime: '01:00:00'\ngpus: 2\n", r"unknown setting\(s\) \['gpus'\]"),
    ("cores: 4\nmemory: 1GB\n", r"missing \['walltime'\]"),
    ("cores: 0\nmemory: 1GB\nwalltime: '01:00:00'\n", "cores must be a positive int"),
    ("cores: 2\nmemory: 1GB\nwalltime: 'two hours'\n", "walltime must be"),
    ("cores: 2\nmemory: 1GB\nwalltime: '01:00:00'\njobs: 0\n", "jobs must be a positive int"),
])
def test_an_unreadable_slurm_yaml_gets_a_clear_error(tmp_path, text, match):
    path = tmp_path / "cluster.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_slurm_file(path)
    with pytest.raises(ValueError, match=match):          # the keyword fails the same way, before any cluster
        with executor_for(f"slurm:{path}"):
            pass


def test_an_unreachable_scheduler_is_an_error_within_seconds():
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"no dask scheduler answers at 'tcp://127.0.0.1:9'"):
        connect("tcp://127.0.0.1:9", timeout=2)
    assert time.monotonic() - t0 < 30


def test_an_unknown_executor_name_is_refused_at_once(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"executor must be one of .*got 'ray'"):
        run_all(_sweep()[:1], RunStore(tmp_path), executor="ray", progress=False)
    assert time.monotonic() - t0 < 5
