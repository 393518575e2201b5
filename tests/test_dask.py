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


JOB = "cores: 2\nmemory: 1GB\nwalltime: '01:00:00'\n"
SLURM_YAML = """\
cores: 4
memory: 16GB
walltime: "02:00:00"
jobs: 3
job_extra_directives: ["--gres=gpu:1", "--partition=gpu"]
"""


def job_script(tmp_path, text: str) -> tuple[str, int]:
    """The Slurm job script (and the jobs) that the YAML ``text`` makes; nothing is submitted."""
    pytest.importorskip("dask_jobqueue")
    path = tmp_path / "cluster.yaml"
    path.write_text(text + f"shared_temp_directory: {str(tmp_path)!r}\n")
    cluster, jobs = slurm_cluster(path, scheduler_options={"host": "127.0.0.1", "dashboard_address": None})
    try:
        return cluster.job_script(), jobs
    finally:
        cluster.close()


def test_the_slurm_job_script_holds_what_the_yaml_asks_for(tmp_path):
    script, jobs = job_script(tmp_path, SLURM_YAML)
    assert jobs == 3
    assert "#SBATCH --cpus-per-task=4" in script
    assert "#SBATCH --mem=15G" in script           # dask-jobqueue writes 16GB as 15G (GiB)
    assert "#SBATCH -t 02:00:00" in script
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH --partition=gpu" in script
    assert "--nworkers 4" in script and "--nthreads 1" in script     # one thread per worker process
    assert "--lifetime 6480s" in script            # retires 10% (12 min) before the 2 h walltime
    assert "MALLOC_TRIM_THRESHOLD_=134217728" in script   # not dask's 64 KiB, which slows torch down
    assert "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL=1s" in script
    # TLS by default (security: temporary): the workers' copy of the certificate and key, this user's only
    assert " tls://" in script and " tcp://" not in script
    key = next(tmp_path.glob(".dask-jobqueue.worker.key.*"), None)
    assert key is None or key.stat().st_mode & 0o077 == 0         # gone with the cluster, or private


def test_a_slurm_job_with_gpus_runs_one_worker_per_gpu(tmp_path):
    script, _ = job_script(tmp_path, "cores: 8\nmemory: 64GB\nwalltime: '04:00:00'\ngpus: 4\n")
    assert "#SBATCH --gres=gpu:4" in script and "#SBATCH --cpus-per-task=8" in script
    assert "--nworkers 4" in script and "--nthreads 2" in script


def _pem_files(folder) -> dict:
    from distributed.security import Security
    sec = Security.temporary()
    files = {"ca_file": sec.tls_ca_file, "cert": sec.tls_scheduler_cert, "key": sec.tls_scheduler_key}
    for name, pem in files.items():
        (folder / f"{name}.pem").write_text(pem)
    return {name: str(folder / f"{name}.pem") for name in files}


def test_the_slurm_yaml_can_name_its_certificates_or_turn_tls_off(tmp_path):
    pytest.importorskip("dask_jobqueue")
    local = {"scheduler_options": {"host": "127.0.0.1", "dashboard_address": None}}
    files = _pem_files(tmp_path)
    path = tmp_path / "cluster.yaml"
    path.write_text(SLURM_YAML + "security:\n" + "".join(f"  {k}: {v!r}\n" for k, v in files.items()))
    cluster, _ = slurm_cluster(path, **local)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert " tls://" in script and all(f in script for f in (files["ca_file"], files["cert"], files["key"]))
    path.write_text(SLURM_YAML + "security: none\n")
    with pytest.warns(UserWarning, match="security: none.*anyone who can reach it can run code"):
        cluster, _ = slurm_cluster(path, **local)
    try:
        assert " tcp://" in cluster.job_script() and "--tls" not in cluster.job_script()
    finally:
        cluster.close()


@pytest.mark.parametrize("text, match", [
    (None, "cannot read the Slurm YAML file"),
    ("cores: [4\n", "not valid YAML"),
    ("- 1\n", "must hold a mapping"),
    ("cores: 4\nmemory: 1GB\nwalltime: '01:00:00'\ngpu: 2\n", r"unknown setting\(s\) \['gpu'\]"),
    ("cores: 4\nmemory: 1GB\n", r"missing \['walltime'\]"),
    ("cores: 0\nmemory: 1GB\nwalltime: '01:00:00'\n", "cores must be a positive int"),
    ("cores: 2\nmemory: 1GB\nwalltime: 'two hours'\n", "walltime must be"),
    ("cores: 2\nmemory: 1GB\nwalltime: '01:00:00'\njobs: 0\n", "jobs must be a positive int"),
    # issue 25: types and ranges, each error naming the key, the value and what is allowed
    (f"{JOB}queue: [a, b]\n", r"queue must be one non-empty string \(several partitions: one string, \"a,b\"\), "
                               r"got \['a', 'b'\] \(list\)"),
    (f"{JOB}queue: ''\n", "queue must be one non-empty string"),
    (f"{JOB}account: 5\n", r"account must be one non-empty string, got 5 \(int\)"),
    (f"{JOB}local_directory: [x]\n", "local_directory must be one non-empty string"),
    ("cores: 2\nmemory: -5\nwalltime: '01:00:00'\n", r"memory must be a size of at least 1MB with its unit, "
                                                     r"e.g. \"16GB\".*got -5 \(int\)"),
    ("cores: 2\nmemory: 16\nwalltime: '01:00:00'\n", r"memory must be a size .*got 16 \(int\)"),
    ("cores: 2\nmemory: 0GB\nwalltime: '01:00:00'\n", r"memory must be a size .*got '0GB'"),
    ("cores: 2\nmemory: 16 parsecs\nwalltime: '01:00:00'\n", r"memory must be a size .*got '16 parsecs'"),
    ("cores: 2\nmemory: [16GB]\nwalltime: '01:00:00'\n", r"memory must be a size .*\(list\)"),
    ("cores: true\nmemory: 1GB\nwalltime: '01:00:00'\n", "cores must be a positive int, got True"),
    ("cores: 2\nmemory: 1GB\nwalltime: 1:00:00\n", r"walltime must be .*got 3600 \(YAML reads an unquoted 1:00:00 "
                                                   r"as a number of seconds: quote it, \"1:00:00\"\)"),
    (f"{JOB}lifetime_margin: 0\n", r"lifetime_margin must be a number of minutes > 0 and below the walltime "
                                    r"\(60 minutes\), got 0"),
    (f"{JOB}lifetime_margin: 90\n", "lifetime_margin must be a number of minutes > 0 and below"),
    (f"{JOB}lifetime_margin: ten\n", "lifetime_margin must be a number of minutes"),
    (f"{JOB}job_script_prologue: source x\n", "job_script_prologue must be a list of strings, got 'source x'"),
    (f"{JOB}security: yes\n", r"security must be \"temporary\" \(the default\), \"none\" or a mapping of "
                               r"ca_file, cert, key .*got True"),
    (f"{JOB}security: {{cert: a.pem}}\n", r"security must be .*got \{'cert': 'a.pem'\}"),
    (f"{JOB}security: {{ca_file: /nonexistent/ca.pem, cert: /nonexistent/c.pem, key: /nonexistent/k.pem}}\n",
     r"security names files that are not readable files here: ca_file='/nonexistent/ca.pem', cert="),
    (f"{JOB}shared_temp_directory: /nonexistent/shared\n",
     r"shared_temp_directory must be a folder you can write to, which the compute nodes see .*'/nonexistent/shared'"),
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


def test_a_local_cluster_refuses_a_client_without_its_certificate(tmp_path):
    # loopback is reachable by every local user, and a connected client runs code in the workers
    from distributed import Client
    from distributed.security import Security
    ran = tmp_path / "ran"

    def outsider_task():
        ran.write_text("an unauthenticated client ran code in a worker")
        return 1

    with executor_for("dask") as ex:
        address = ex.client.scheduler.address
        assert address.startswith("tls://127.0.0.1:"), address
        # plain TCP, and TLS with a certificate of its own (not signed by the cluster's)
        for attempt, security in ((address.replace("tls://", "tcp://"), None), (address.replace("tls://", ""), None),
                                  (address, Security.temporary())):
            with pytest.raises((OSError, TimeoutError)):
                intruder = Client(attempt, timeout="3s", set_as_default=False, security=security)
                try:
                    intruder.submit(outsider_task, pure=False).result(timeout=10)
                finally:
                    intruder.close()
        assert ex.map(abs, [-1, -2, 3]) == [1, 2, 3]                 # our own client still works
    assert not ran.exists()


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
