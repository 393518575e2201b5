"""Cost of subset trackers: one epoch of LeNet-300-100 on 5k Fashion-MNIST with 30% label noise.

    python tests/bench/bench_trackers.py [--reps 7]

The same epoch (batch 128, the full 10k test set, one torch thread) with and without a tracker
recorded every epoch: ``accuracy:test@1`` and ``accuracy:permuted@1`` (target: ratio <= 1.10 each,
issue 9), then, for information, the memorization chapter's three accuracy trackers together and
``fisher_trace:permuted@1`` (per-sample gradients of the 1500 noisy samples: not cheap).

An epoch is timed from the end of ``on_train_begin`` (after the trackers' one-off measurement at
the initialisation) to the end of ``on_epoch_end``: the training loop, train()'s own evaluation of
the training and test sets, and the trackers' end-of-epoch measurement. The sides alternate, and
the fastest of the repetitions is kept (on a shared machine other processes only ever add time).
"""

from __future__ import annotations

import argparse
import time

import torch

from sparsegap.config import DataConfig, TrainConfig
from sparsegap.models import build_model
from sparsegap.runs import load_data
from sparsegap.runs.threads import use_threads
from sparsegap.trackers import make_trackers
from sparsegap.train import train

TARGETS = {"accuracy:test@1": 1.10, "accuracy:permuted@1": 1.10}
INFO = {"the chapter's accuracies": ("accuracy:permuted@1", "accuracy:unpermuted@1", "accuracy:restored@1"),
        "fisher_trace:permuted@1": ("fisher_trace:permuted@1",)}


class _EpochTimer:
    """Placed after the trackers: starts once they have measured the initialisation, stops after
    they have measured the end of the epoch."""

    wants_step_end = False

    def on_train_begin(self, state) -> None:
        self.t0 = time.perf_counter()

    def on_epoch_end(self, state) -> None:
        self.seconds = time.perf_counter() - self.t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="repetitions of each side")
    args = parser.parse_args(argv)
    data = load_data(DataConfig("fashion-mnist", train_size=5000, noise=0.3))
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05, momentum=0.9, weight_decay=2e-4)
    sides = {"none": ()} | {spec: (spec,) for spec in TARGETS} | INFO

    def epoch(specs) -> float:
        model = build_model("lenet300-100", num_classes=10, input_shape=(1, 28, 28), seed=0)
        timer = _EpochTimer()
        train(model, data, cfg, callbacks=[*make_trackers(specs, data), timer], device="cpu", progress=False)
        return timer.seconds

    with use_threads(1):
        for specs in sides.values():  # warm-up
            epoch(specs)
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.reps):
            for name, specs in sides.items():
                times[name].append(epoch(specs))
        threads = torch.get_num_threads()
    base = min(times["none"])
    print(f"threads: {threads}, {data!r}, batch 128, repetitions: {args.reps}")
    print(f"{'epoch without trackers':40s} {base:8.3f} s (fastest)")
    for name in sides:
        if name == "none":
            continue
        t = min(times[name])
        target = f"(target <= {TARGETS[name]:.2f})" if name in TARGETS else "(for information)"
        print(f"{'with ' + name:40s} {t:8.3f} s   ratio {t / base:.3f}   {target}")


if __name__ == "__main__":
    main()
