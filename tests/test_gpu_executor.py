"""One worker per GPU (issue 26): the "gpus" executor, the Slurm file's ``gpus`` (its job script: tests/test_dask.py),
and how a worker claims its GPU.

No GPU is needed: the devices are named through ``CUDA_VISIBLE_DEVICES``, and what is checked is that each worker
of the pool is pinned to a GPU of its own before CUDA starts in it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sparsegap.runs import workers
from sparsegap.runs.executors import ExecutorSpec, executor_for, parse_executor, read_slurm_file


def test_gpus_is_one_worker_per_visible_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5,7")
    assert parse_executor("gpus") == ExecutorSpec("gpus", 3, gpus=("2", "5", "7"))
    assert parse_executor(" GPUS:1,0 ") == ExecutorSpec("gpus", 2, gpus=("1", "0"))
    assert parse_executor("gpus*4") == ExecutorSpec("gpus", 12, gpus=("2", "5", "7"), per_gpu=4)
    assert parse_executor("gpus:0*2") == ExecutorSpec("gpus", 2, gpus=("0",), per_gpu=2)


@pytest.mark.parametrize("spec, match", [("gpus*0", r"gpus\*K takes K workers per GPU, an int in \[1, 16\]"),
                                         ("gpus*17", "an int in"), ("gpus*x", "an int in"),
                                         ("gpusy", "executor must be one of")])
def test_bad_workers_per_gpu(spec, match, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(ValueError, match=match):
        parse_executor(spec)


@pytest.mark.parametrize("visible", ["", "-1"])
def test_gpus_without_a_gpu_is_an_error_not_a_cpu_pool(monkeypatch, visible):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(ValueError, match=r"executor='gpus' trains one worker per GPU, but this process sees no "
                                         r"CUDA GPU .*use 'auto' or 'processes:N'"):
        parse_executor("gpus")


@pytest.mark.parametrize("spec", ["gpus:0,0", "gpus:a,b", "gpus:0,,1", "gpus:-1"])
def test_gpus_ids_are_checked(spec):
    with pytest.raises(ValueError, match=r"gpus:IDS takes distinct GPU numbers"):
        parse_executor(spec)


def test_each_process_claims_a_gpu_no_other_holds(tmp_path, monkeypatch):
    """Lock files per GPU: the first free one is taken; all taken is an error naming them; a lock goes with its
    holder (its file closed), so a replacement worker takes over the GPU of one that died."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(workers, "_GPU_LOCKS", [])
    assert workers.claim_gpu(["0", "1"], tmp_path) == "0" and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert workers.claim_gpu(["0", "1"], tmp_path) == "1" and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    with pytest.raises(RuntimeError, match=r"every GPU of \['0', '1'\] is held by other workers \(1 each"):
        workers.claim_gpu(["0", "1"], tmp_path)
    os.close(workers._GPU_LOCKS.pop(0))       # the holder of GPU 0 ends
    assert workers.claim_gpu(["0", "1"], tmp_path) == "0"
    # two workers a GPU: the second round of slots, spread over both GPUs before either gets a third
    assert [workers.claim_gpu(["0", "1"], tmp_path, 2) for _ in range(2)] == ["0", "1"]
    with pytest.raises(RuntimeError, match=r"\(2 each"):
        workers.claim_gpu(["0", "1"], tmp_path, 2)
    for fd in workers._GPU_LOCKS:
        os.close(fd)


def _pinned(folder):
    """Waits (up to a minute) until two workers have each taken a task, so that both are seen."""
    import torch
    (Path(folder) / str(os.getpid())).touch()
    deadline = time.time() + 60
    while len(list(Path(folder).iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.05)
    return os.environ["CUDA_VISIBLE_DEVICES"], os.getpid(), torch.get_num_threads()


def test_the_pool_pins_each_worker_to_its_own_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with executor_for("gpus") as pool:
        seen = list(pool.map(_pinned, [str(tmp_path)] * 4))
    by_pid = {pid: gpu for gpu, pid, _ in seen}
    assert sorted(by_pid.values()) == ["3", "5"]            # two workers, one GPU each, never the same
    assert all(by_pid[pid] == gpu for gpu, pid, _ in seen)  # a worker keeps its GPU


def test_the_shipped_gpu_template_is_a_valid_slurm_file(tmp_path):
    template = Path(__file__).resolve().parents[1] / "slurm" / "gpu.yaml"
    text = template.read_text().replace("shared_temp_directory: \"~\"", f"shared_temp_directory: {str(tmp_path)!r}")
    (tmp_path / "gpu.yaml").write_text(text)
    conf = read_slurm_file(tmp_path / "gpu.yaml")
    assert conf["gpus"] >= 1 and conf["cores"] >= conf["gpus"]


@pytest.mark.parametrize("extra, match", [
    ("gpus: 0\n", "gpus must be a positive int, got 0"),
    ("gpus: 16\n", r"gpus must be at most cores \(8\): each GPU's worker needs a core of its own, got 16"),
])
def test_bad_gpus_in_a_slurm_file(tmp_path, extra, match):
    path = tmp_path / "gpu.yaml"
    path.write_text("cores: 8\nmemory: 64GB\nwalltime: '04:00:00'\n" + extra)
    with pytest.raises(ValueError, match=match):
        read_slurm_file(path)
