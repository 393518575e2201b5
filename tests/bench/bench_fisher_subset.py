"""Tr(F) on a capped subset (issue 26): what it saves and what it costs in precision.

    python tests/bench/bench_fisher_subset.py [--n 5000] [--cap 1000] [--reps 3] [--runs data/runs]

1. Time: one measurement of the Tr(F) tracker (FisherTraceCallback, sampled labels, with its standard error)
   of a ResNet-20 (width 1) on ``--n`` random 3x32x32 images, on all of them and on ``--cap`` of them (the "~N"
   of the spec), one torch thread, the fastest of ``--reps``; and the standard error's own cost: fisher_trace
   alone against fisher_trace_se on the whole set.
2. Precision: the relative sd of the per-sample terms (sampled labels) of chapter 1's cpu-profile runs in the
   run store (LeNet-300-100 on 4,000 Fashion-MNIST images), at the initialisation and once trained, and the
   relative standard error it implies at procedure.FISHER_SAMPLES samples. Runs missing from the store are
   skipped.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from sparsegap.metrics import FisherTraceCallback
from sparsegap.metrics.fisher import fisher_trace, fisher_trace_se, per_sample_fisher
from sparsegap.models import build_model

REPO_ROOT = Path(__file__).resolve().parents[2]


class _State:
    def __init__(self, model):
        self.model, self.masks = model, None

    def log(self, name, value, se=None):
        pass


def fastest(fn, reps: int) -> float:
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def timing(n: int, cap: int, reps: int) -> None:
    model = build_model("resnet20", num_classes=10, input_shape=(3, 32, 32), width=1, seed=0)
    x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    full, sub = FisherTraceCallback(x), FisherTraceCallback(x, max_samples=cap)
    state = _State(model)
    t_full = fastest(lambda: full.measure(state), reps)
    t_sub = fastest(lambda: sub.measure(state), reps)
    print(f"ResNet-20 x1, one Tr(F) measurement: {n} samples {t_full:.2f} s, ~{cap} {t_sub:.2f} s; "
          f"ratio {t_full / t_sub:.2f} (samples {n / cap:.2f})")
    g = lambda: torch.Generator().manual_seed(0)     # noqa: E731
    x_small = x[:cap]
    t_plain = fastest(lambda: fisher_trace(model, x_small, generator=g()), reps)
    t_se = fastest(lambda: fisher_trace_se(model, x_small, generator=g()), reps)
    print(f"the standard error's cost on {cap} samples: fisher_trace {t_plain:.3f} s, fisher_trace_se {t_se:.3f} s "
          f"(ratio {t_se / t_plain:.3f})")


def precision(runs: Path) -> None:
    from sparsegap import bookbuild
    from sparsegap.runs import RunStore, load_data
    from sparsegap.studies import two_regimes
    from sparsegap.studies.procedure import FISHER_SAMPLES
    _, p = bookbuild.notebook_parameters(REPO_ROOT / "notebooks" / "01_two_regimes.ipynb", "cpu")
    cfgs = two_regimes.configs(p)
    store = RunStore(runs)
    for key, cfg in cfgs.items():
        if key[2] != 0 or key[1] not in (0.0, 0.9, 0.99, 0.995) or not store.is_done(cfg):
            continue
        run, data = store.load(cfg), load_data(cfg.data)
        for when, model in (("init", run.init_model()), ("trained", run.model())):
            t = per_sample_fisher(model, data.x_train, masks=run.masks, generator=torch.Generator().manual_seed(0))
            rel = float(t.std() / t.mean())
            print(f"{key[0]} s={key[1]:g} {when}: Tr(F) {float(t.mean()):.3g}, relative sd of the {len(t)} terms "
                  f"{rel:.2f}, relative SE at {FISHER_SAMPLES}: {rel / math.sqrt(FISHER_SAMPLES):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--cap", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--runs", type=Path, default=REPO_ROOT / "data" / "runs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    timing(args.n, args.cap, args.reps)
    precision(args.runs)


if __name__ == "__main__":
    main()
