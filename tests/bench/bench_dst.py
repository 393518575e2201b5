"""Cost of dynamic sparse training and of the gradient-norm tracker, against static sparse training.

LeNet-300-100 at 90% sparsity, 10k samples, batch 64 (157 steps per epoch), the library's training loop
(``history["seconds"]``: the epoch's steps and callbacks, without the per-epoch evaluation):

- a static sparse epoch (fixed random mask) — the baseline;
- RigL updating the mask every 100 steps (one update in each epoch here; its dense gradient comes from
  the step's own backward pass). Target: <= 1.15x;
- SET at the same interval, for information;
- the static epoch with the ``grad_norm@1`` tracker (one forward and backward pass on 256 samples after
  the epoch; timed as the whole epoch with evaluation, since the tracker runs at the epoch's end).
  Target: <= 1.05x.

The sides alternate, and medians of the repetitions are compared.
"""

import statistics
import time
from types import SimpleNamespace

import torch

from sparsegap.config import TrainConfig
from sparsegap.dst import DynamicSparse, masks_for_densities
from sparsegap.models import build_model
from sparsegap.train import train
from sparsegap.trackers import make_trackers


def main(argv: list[str] | None = None, reps: int = 15, n: int = 10_000) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    data = SimpleNamespace(x_train=x, y_train=y, x_test=x[:1000], y_test=y[:1000])
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, schedule="constant")
    template = build_model("lenet300-100", num_classes=10, input_shape=(1, 28, 28), seed=0)
    masks = masks_for_densities(template, 0.1, seed=0)

    def epoch(case: str) -> float:
        model = build_model("lenet300-100", num_classes=10, input_shape=(1, 28, 28), seed=0)
        cbs = {"static": [], "grad_norm@1": make_trackers(["grad_norm@1"], data),
               "rigl": [DynamicSparse("rigl", 0.3, 100, 10_000, seed=0)],
               "set": [DynamicSparse("set", 0.3, 100, 10_000, seed=0)]}[case.split(" ")[0]]
        t0 = time.perf_counter()
        h = train(model, data, cfg, masks={k: v.clone() for k, v in masks.items()}, callbacks=cbs, device="cpu",
                  progress=False)
        whole = time.perf_counter() - t0
        return whole if case.endswith("(whole)") else h["seconds"][0]

    cases = ["static", "rigl", "set", "static (whole)", "grad_norm@1 (whole)"]
    for c in cases:
        epoch(c)   # warm-up
    times = {c: [] for c in cases}
    for _ in range(reps):
        for c in cases:
            times[c].append(epoch(c))
    med = {c: statistics.median(v) for c, v in times.items()}
    print(f"threads: {torch.get_num_threads()}, samples per epoch: {n}, batch 64, sparsity 0.9, repetitions: {reps}")
    for c in cases:
        print(f"{c:28s} {med[c]:8.3f} s (median)")
    print(f"ratio RigL (update every 100 steps) / static epoch: {med['rigl'] / med['static']:.3f}   (target <= 1.15)")
    print(f"ratio SET / static epoch: {med['set'] / med['static']:.3f}")
    print(f"ratio with grad_norm@1 / without (whole epoch): {med['grad_norm@1 (whole)'] / med['static (whole)']:.3f}"
          f"   (target <= 1.05)")


if __name__ == "__main__":
    main()
