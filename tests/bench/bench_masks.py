"""Cost of masks in training: one epoch of LeNet-300-100 at 90% sparsity, masked vs unmasked.

Both sides run the library's own training loop (sparsegap.train.train) on the same 10k samples;
the reported time is the loop alone (history["seconds"]), without the per-epoch evaluation.
The two sides alternate, and the median of the repetitions is compared. Target: ratio <= 1.05.
"""

import statistics
from types import SimpleNamespace

import torch

from sparsegap.config import TrainConfig
from sparsegap.models import build_model
from sparsegap.pruning import apply_masks, global_magnitude_masks
from sparsegap.train import train


def main(argv: list[str] | None = None, reps: int = 9, n: int = 10_000) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    data = SimpleNamespace(x_train=x, y_train=y, x_test=x[:100], y_test=y[:100])
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05)
    template = build_model("lenet300-100", num_classes=10, input_shape=(1, 28, 28), seed=0)
    masks = global_magnitude_masks(template, 0.9)

    def epoch(masked: bool) -> float:
        model = build_model("lenet300-100", num_classes=10, input_shape=(1, 28, 28), seed=0)
        if masked:
            apply_masks(model, masks)
        h = train(model, data, cfg, masks=masks if masked else None, device="cpu", progress=False)
        return h["seconds"][0]

    epoch(True), epoch(False)  # warm-up
    times = {True: [], False: []}
    for _ in range(reps):
        for masked in (False, True):
            times[masked].append(epoch(masked))
    dense, sparse = statistics.median(times[False]), statistics.median(times[True])
    print(f"threads: {torch.get_num_threads()}, samples per epoch: {n}, batch 128, repetitions: {reps}")
    print(f"{'epoch without masks':28s} {dense:8.3f} s (median)")
    print(f"{'epoch with masks (s=0.9)':28s} {sparse:8.3f} s (median)")
    print(f"ratio masked / unmasked: {sparse / dense:.3f}   (target <= 1.05)")


if __name__ == "__main__":
    main()
