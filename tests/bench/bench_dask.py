"""A sweep of 8 small runs on a 2-worker dask LocalCluster, against the same sweep in this process.

    python tests/bench/bench_dask.py [--epochs 20]

8 dense LeNet-300-100 runs (seeds 0-7) on 2,000 Fashion-MNIST images, each in a fresh run store:
in this process one run after another (``batch=False``, as the cluster trains them: one run per task),
in this process batched (the default for such small networks, for reference), and on
``executor="dask"`` (a LocalCluster of single-threaded worker processes, one per core). The cluster's
start-up (worker processes, their imports and warm-up step, :func:`sparsegap.runs.workers.warm_up`, and their
copy of the data) is timed apart; this process is warmed up the same way before the baseline. Target: the cluster at least 1.7x faster than one run after another.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.runs.executors import executor_for, warm_up
from sparsegap.runs import RunStore, load_data, run_all


def _warm(data: DataConfig) -> None:
    load_data(data)


def sweep(epochs: int) -> list[RunConfig]:
    data = DataConfig("fashion-mnist", train_size=2000, test_size=1000)
    train = TrainConfig(epochs=epochs, batch_size=64, lr=0.05, schedule="constant")
    return [RunConfig("dense", data, ModelConfig("lenet300-100"), train, seed=s) for s in range(8)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args(argv)
    configs = sweep(args.epochs)
    load_data(configs[0].data)
    warm_up()        # this process pays torch's one-time set-up before the baseline, as the workers do at start
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_all(configs, RunStore(Path(tmp) / "serial"), progress=False, batch=False)
        serial = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_all(configs, RunStore(Path(tmp) / "batched"), progress=False)
        batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        with executor_for("processes:2") as pool:
            list(pool.map(load_data, [configs[0].data] * 2))
            t1 = time.perf_counter()
            run_all(configs, RunStore(Path(tmp) / "pool"), executor=pool, progress=False, batch=False)
            pooled = time.perf_counter() - t1
        t0 = time.perf_counter()
        with executor_for("dask") as ex:
            ex.client.run(_warm, configs[0].data)           # every worker: imports done, data loaded
            startup = time.perf_counter() - t0
            t1 = time.perf_counter()
            run_all(configs, RunStore(Path(tmp) / "dask"), executor=ex, progress=False, batch=False)
            on_dask = time.perf_counter() - t1
            n_workers = len(ex.client.scheduler_info()["workers"])
    print(f"8 runs of LeNet-300-100, {args.epochs} epochs on 2,000 images; {n_workers} dask workers, one thread each")
    print(f"in this process, one after another   {serial:7.1f} s   (baseline)")
    print(f"in this process, batched             {batched:7.1f} s   {serial / batched:.2f}x")
    print(f"process pool, processes:2            {pooled:7.1f} s   {serial / pooled:.2f}x")
    print(f"dask LocalCluster                    {on_dask:7.1f} s   {serial / on_dask:.2f}x   (target >= 1.7x; "
          f"cluster start-up {startup:.1f} s apart)")


if __name__ == "__main__":
    main()
