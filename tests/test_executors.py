"""Where the runs of a sweep train (sparsegap.runs.executors): the executor keyword, and a process pool that
trains the same runs, bitwise, as this process does.

The pool tests spawn two worker processes (a few seconds of start-up); the runs are tiny MLPs on digits.
"""

from __future__ import annotations

import json

import pytest
import torch

from sparsegap.runs import executors, workers
from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.runs.executors import EXECUTORS, executor_for, parse_executor
from sparsegap.runs import RunStore, run_all
from sparsegap.runs.threads import WORKERS_ENV

# ------------------------------------------------------------------------------------ parse_executor


@pytest.mark.parametrize("spec, n", [
    ("local", 0), ("LOCAL", 0), ("  Local\n", 0),
    ("processes:3", 3), ("processes:1", 1), ("Processes:2", 2), (" PROCESSES:12 ", 12),
])
def test_parse_executor_local_and_processes(spec, n, monkeypatch):
    monkeypatch.setattr(executors, "cores", lambda: 4)      # 12 processes are allowed on 4 cores
    assert parse_executor(spec).workers == n
    assert parse_executor(spec).kind == ("processes" if n else "local")


@pytest.mark.parametrize("spec, kind, address, path", [
    ("dask", "dask", "", ""), ("DASK", "dask", "", ""),
    ("dask:tcp://10.0.0.5:8786", "dask", "tcp://10.0.0.5:8786", ""),
    ("slurm:~/cluster.yaml", "slurm", "", "~/cluster.yaml"),
])
def test_parse_executor_dask_and_slurm(spec, kind, address, path):
    s = parse_executor(spec)
    assert (s.kind, s.address, s.path) == (kind, address, path)


@pytest.mark.parametrize("n_cores, n_workers, expected", [
    (2, None, 2),      # alone on two cores: two processes
    (2, "2", 0),       # a two-job book build on two cores: one core each, so train in process
    (8, "2", 4),
    (8, "3", 2),
    (8, "5", 0),       # 8 // 5 = 1 < 2
    (1, None, 0),
    (16, "1", 16),
])
def test_parse_executor_auto(monkeypatch, n_cores, n_workers, expected):
    monkeypatch.setattr(executors, "cores", lambda: n_cores)
    if n_workers is None:
        monkeypatch.delenv(WORKERS_ENV, raising=False)
    else:
        monkeypatch.setenv(WORKERS_ENV, n_workers)
    assert parse_executor("auto").workers == expected
    assert parse_executor(" AUTO ").workers == expected


@pytest.mark.parametrize("spec, error", [
    ("processes:0", ValueError), ("processes:x", ValueError), ("processes:", ValueError),
    ("processes:-1", ValueError), ("processes:1.5", ValueError), ("ray", ValueError), ("", ValueError),
    ("dask:", ValueError), ("slurm:", ValueError),
    (3, TypeError), (None, TypeError), (2.0, TypeError),
])
def test_parse_executor_refuses_bad_values(spec, error):
    with pytest.raises(error) as info:
        parse_executor(spec)
    message = str(info.value)
    assert "executor" in message
    assert repr(spec) in message                      # the value given
    for allowed in EXECUTORS:                         # and the values allowed
        assert allowed in message


@pytest.mark.parametrize("n_cores, allowed", [(1, 4), (2, 8), (16, 64), (512, 1024)])
def test_processes_beyond_four_per_core_are_refused(monkeypatch, n_cores, allowed):
    monkeypatch.setattr(executors, "cores", lambda: n_cores)
    assert parse_executor(f"processes:{allowed}").workers == allowed
    for n in (allowed + 1, 99999):
        with pytest.raises(ValueError, match=rf"executor='processes:{n}': {n} processes is more than {allowed} "
                                             rf"\(4 per core of the {n_cores} .*1 <= N <= {allowed}"):
            parse_executor(f"processes:{n}")


@pytest.mark.parametrize("bad", [5, 2.0, object(), ["processes:2"]])
def test_a_non_executor_is_refused_naming_executor_the_value_and_the_forms(bad):
    with pytest.raises(TypeError) as info:
        executors.check_executor(bad)
    message = str(info.value)
    assert message.startswith("executor must be None") and repr(bad) in message and type(bad).__name__ in message
    assert all(form in message for form in EXECUTORS) and "map method" in message


def test_check_executor_accepts_what_run_all_takes():
    for ok in (None, "local", "processes:2", Recorder()):
        executors.check_executor(ok)


def test_run_all_refuses_a_non_executor_at_once(tmp_path):
    with pytest.raises(TypeError, match=r"executor must be None .*got 5 of type int"):
        run_all(sweep()[:1], RunStore(tmp_path), executor=5, progress=False)
    assert not any(tmp_path.iterdir())


def test_executor_for_local_yields_none():
    with executor_for("local") as ex:
        assert ex is None
    with executor_for() as ex:                        # the default is local
        assert ex is None


def test_executor_for_refuses_a_bad_spec_before_starting_anything():
    with pytest.raises(ValueError, match="executor"):
        with executor_for("processes:0"):
            pytest.fail("the block must not run")


# ----------------------------------------------------------------------------------------- the pool

DATA = DataConfig("digits", train_size=100, test_size=50)
MODEL = ModelConfig("mlp", hidden=(8,))
TRAIN = TrainConfig(epochs=2, batch_size=32, lr=0.05, schedule="constant")


def sweep() -> list[RunConfig]:
    dense = [RunConfig("dense", DATA, MODEL, TRAIN, seed=s) for s in (0, 1)]
    child = RunConfig("scratch", DATA, MODEL, TRAIN, seed=0, sparsity=0.5, parent=dense[0])
    return [*dense, child]


def without_seconds(history: dict) -> dict:
    return {k: v for k, v in history.items() if k != "seconds"}


def test_a_pool_trains_the_same_runs_as_this_process(tmp_path):
    cfgs = sweep()
    local = run_all(cfgs, RunStore(tmp_path / "local"), progress=False, batch=False)
    with executor_for("processes:2") as ex:
        assert ex is not None
        # the worker paid its one-time costs (imports, torch's lazy set-up) before any task (workers.warm_up)
        assert ex.submit(workers.warm_up_seconds).result() > 0
        pooled = run_all(cfgs, RunStore(tmp_path / "pool"), executor=ex, progress=False, batch=False)
    assert len(pooled) == len(local) == len(cfgs)
    for a, b, cfg in zip(local, pooled, cfgs):
        assert a.config == b.config == cfg
        assert b.path.is_relative_to(tmp_path / "pool")
        assert a.weights.keys() == b.weights.keys()
        for k in a.weights:
            assert torch.equal(a.weights[k], b.weights[k]), (cfg.kind, cfg.seed, k)
        assert without_seconds(a.history) == without_seconds(b.history), (cfg.kind, cfg.seed)
    # the two seeds and the child really are different runs
    assert not torch.equal(local[0].weights[next(iter(local[0].weights))],
                           local[1].weights[next(iter(local[1].weights))])
    assert local[2].masks                                     # the child is sparse


def test_leaving_the_block_on_an_error_stops_the_workers():
    processes = []
    with pytest.raises(RuntimeError, match="stop here"):
        with executor_for("processes:2") as ex:
            futures = [ex.submit(sum, [i, 1]) for i in range(4)]
            assert [f.result(timeout=120) for f in futures] == [1, 2, 3, 4]
            processes = list(ex._processes.values())
            assert processes and all(p.is_alive() for p in processes)
            raise RuntimeError("stop here")
    assert processes
    assert not any(p.is_alive() for p in processes)      # stopped by the time the block is left


class Recorder:
    """An executor in this process that records the tasks it is given."""

    def __init__(self):
        self.tasks = []

    def map(self, fn, items):
        items = list(items)
        self.tasks += items
        return [fn(i) for i in items]


def test_a_batched_group_is_one_task_and_never_split(tmp_path):
    cfgs = [RunConfig("dense", DATA, MODEL, TRAIN, seed=s) for s in range(3)]
    rec = Recorder()
    runs = run_all(cfgs, RunStore(tmp_path / "a"), executor=rec, progress=False, batch=True)
    assert [len(t) for t in rec.tasks] == [3]                      # the group of three is one task
    assert all(json.loads((r.path / "meta.json").read_text()).get("batch") == 3 for r in runs)
    rec = Recorder()
    run_all(cfgs, RunStore(tmp_path / "b"), executor=rec, progress=False, batch=False)
    assert [len(t) for t in rec.tasks] == [1, 1, 1]                # batch=False: one run per task
