"""Cost of the two remedies of Section 4 (sparsegap.studies.remedies), against baselines measured in the same run.

    python tests/bench/bench_remedies.py [--reps 7]

LeNet-300-100 under a random 90%-sparse mask, 5,000 Fashion-MNIST-shaped random inputs (no download),
the library's thread policy (``threads_for``: one thread for this model and batch):

(a) one training epoch with the Fisher penalty, ``TrainConfig(epochs=1, fisher_reg=-0.1, fisher_reg_epochs=1)``
    (one double backward pass per step), against one plain epoch, ``TrainConfig(epochs=1)``. Both timed by
    ``history["seconds"]`` (the epoch's steps, without train()'s evaluation). Target: <= 3x;
(b) ranking the 5,000 samples for a data schedule, ``schedule.difficulty("fisher", ...)`` (per-sample Fisher
    with sampled labels) plus the stable descending sort that ``DataSchedule`` does, against one
    ``fisher_trace`` pass on the same samples. Target: <= 2x.

The per-sample Fisher is checked to average to ``fisher_trace`` before anything is timed. The sides
alternate and the median of the repetitions is compared.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from sparsegap.config import TrainConfig
from sparsegap.dst import masks_for_densities
from sparsegap.metrics.fisher import fisher_trace, per_sample_fisher
from sparsegap.models import build_model
from sparsegap.pruning import apply_masks
from sparsegap.schedule import difficulty
from sparsegap.runs.threads import threads_for, use_threads
from sparsegap.train import train

N, SPARSITY, SHAPE = 5000, 0.9, (1, 28, 28)


def lenet():
    return build_model("lenet300-100", num_classes=10, input_shape=SHAPE, seed=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="repetitions of each side")
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, *SHAPE, generator=g)
    y = torch.randint(0, 10, (N,), generator=g)
    data = SimpleNamespace(x_train=x, y_train=y, x_test=x[:1000], y_test=y[:1000])
    masks = masks_for_densities(lenet(), 1.0 - SPARSITY, seed=0)
    plain_cfg = TrainConfig(epochs=1)
    penalty_cfg = TrainConfig(epochs=1, fisher_reg=-0.1, fisher_reg_epochs=1)
    model = lenet()
    apply_masks(model, masks)                      # the ranking's model: pruned weights at zero

    def epoch(cfg) -> float:
        h = train(lenet(), data, cfg, masks={k: v.clone() for k, v in masks.items()}, device="cpu", progress=False)
        return h["seconds"][0]

    def timed(fn):
        def run() -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        return run

    def rank() -> torch.Tensor:
        scores = difficulty("fisher", model, x, y, masks=masks, seed=0, epoch=0)
        return torch.sort(scores, descending=True, stable=True).indices

    def trace() -> float:
        return fisher_trace(model, x, masks=masks, generator=torch.Generator().manual_seed(0))

    # each side returns its seconds
    sides = {"plain epoch": lambda: epoch(plain_cfg), "epoch with the Fisher penalty": lambda: epoch(penalty_cfg),
             "fisher_trace, one pass": timed(trace), "per-sample Fisher + sort": timed(rank)}
    threads = threads_for(1, lenet(), batch_size=plain_cfg.batch_size, input_shape=SHAPE)
    with use_threads(threads):
        per = per_sample_fisher(model, x[:500], masks=masks, generator=torch.Generator().manual_seed(1))
        ref = fisher_trace(model, x[:500], masks=masks, generator=torch.Generator().manual_seed(1))
        assert abs(float(per.mean()) - ref) <= 1e-5 * abs(ref), (float(per.mean()), ref)
        for fn in sides.values():                  # warm-up
            fn()
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.reps):
            for name, fn in sides.items():
                times[name].append(fn())
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"threads: {threads}, {N} samples, LeNet-300-100 at sparsity {SPARSITY}, batch {plain_cfg.batch_size}, "
          f"repetitions: {args.reps}")
    for name in sides:
        print(f"{name:32s} {med[name]:8.3f} s (median)")
    print(f"(a) ratio epoch with Fisher penalty / plain epoch: "
          f"{med['epoch with the Fisher penalty'] / med['plain epoch']:.2f}   (target <= 3)")
    print(f"(b) ratio per-sample Fisher ranking / fisher_trace pass: "
          f"{med['per-sample Fisher + sort'] / med['fisher_trace, one pass']:.2f}   (target <= 2)")


if __name__ == "__main__":
    main()
