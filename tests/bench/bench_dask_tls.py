"""What TLS costs the local dask cluster (issue 25, item 6), as a ratio to one epoch of a small run.

    python tests/bench/bench_dask_tls.py [--tasks 200] [--repeats 3]

``executor="dask"`` starts its LocalCluster with ``Security.temporary()``; the same cluster without it is the
baseline. Timed, alternating the two, best of ``--repeats``: the cluster's start-up (with TLS it makes a 2048-bit
RSA key), a round of ``--tasks`` trivial tasks (the per-task cost: TLS encrypts every message, the connections
are kept open, so a handshake is paid once per connection), and 4 one-epoch LeNet-300-100 runs on the digits.
The unit: one epoch of LeNet-300-100 on the digits (1,437 images, batch 64), trained in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path
from unittest import mock

from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.runs import RunStore, executors, load_data, run_all
from sparsegap.runs.workers import warm_up

DATA = DataConfig("digits")


def configs(seeds) -> list[RunConfig]:
    train = TrainConfig(epochs=1, batch_size=64, lr=0.05, schedule="constant")
    return [RunConfig("dense", DATA, ModelConfig("lenet300-100"), train, seed=s) for s in seeds]


def one_round(tls: bool, tasks: int, tmp: Path, seeds) -> tuple[float, float, float]:
    # the baseline: the same LocalCluster with security=None, i.e. plain TCP, as before issue 25
    plain = contextlib.nullcontext() if tls else mock.patch.object(executors, "temporary_security", lambda kind: None)
    t0 = time.perf_counter()
    with plain:
        with executors.executor_for("dask") as ex:
            ex.client.run(load_data, DATA)
            startup = time.perf_counter() - t0
            assert ex.client.scheduler.address.startswith("tls://" if tls else "tcp://")
            t0 = time.perf_counter()
            ex.map(abs, range(tasks))
            trivial = time.perf_counter() - t0
            t0 = time.perf_counter()
            run_all(configs(seeds), RunStore(tmp / f"{'tls' if tls else 'tcp'}-{seeds[0]}"), executor=ex,
                    progress=False, batch=False)
            runs = time.perf_counter() - t0
    return startup, trivial, runs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    load_data(DATA)
    warm_up()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        epochs = []
        for i in range(3):
            t0 = time.perf_counter()
            run_all(configs([100 + i]), RunStore(tmp / f"epoch-{i}"), progress=False, batch=False)
            epochs.append(time.perf_counter() - t0)
        epoch = min(epochs)
        best = {True: [float("inf")] * 3, False: [float("inf")] * 3}
        for r in range(args.repeats):
            for tls in (False, True):
                got = one_round(tls, args.tasks, tmp, range(10 * r + 4 * tls, 10 * r + 4 * tls + 4))
                best[tls] = [min(a, b) for a, b in zip(best[tls], got)]
    print(f"one epoch of LeNet-300-100 on the digits, in this process: {epoch:.3f} s (the unit)")
    for i, what in enumerate(("cluster start-up", f"{args.tasks} trivial tasks", "4 one-epoch runs")):
        plain, tls = best[False][i], best[True][i]
        print(f"{what:22s} tcp {plain:7.3f} s   tls {tls:7.3f} s   extra {tls - plain:+.3f} s "
              f"= {(tls - plain) / epoch:+.3f} epochs")
    per_task = (best[True][1] - best[False][1]) / args.tasks
    print(f"per task: {per_task * 1e3:+.2f} ms = {per_task / epoch:+.4f} epochs")


if __name__ == "__main__":
    main()
