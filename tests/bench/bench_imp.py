"""Cost of one round of iterative pruning against a plain training run of the same length.

Both sides go through the run store (``get_or_train``) from the same trained dense parent, with the
chapter's cpu setting (LeNet-300-100, 2,000 MNIST images with 40% label noise, batch 32, 40 epochs
shortened to ``epochs``): a plain sparse run (``scratch`` at the round's sparsity: load the parent,
one-shot mask, train, write) and an imp round (load the parent and the root, score, nested mask,
rewind, train, write). Each repetition trains both afresh in new store directories, alternating;
medians are compared. Target: imp / plain <= 1.05. The gradient heuristic (one extra backward
pass) is measured too, for information.
"""

import statistics
import tempfile
import time

import torch

from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig, imp_chain
from sparsegap.runs import RunStore, get_or_train


def main(argv: list[str] | None = None, reps: int = 5, epochs: int = 5) -> None:
    data = DataConfig("mnist-5k", train_size=2000, noise=0.4)
    model = ModelConfig("lenet300-100", init="kaiming")
    train = TrainConfig(epochs=epochs, batch_size=32, lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant")
    dense = RunConfig("dense", data, model, train)
    base = tempfile.mkdtemp(prefix="bench-imp-")
    parent_store = RunStore(f"{base}/parent")
    get_or_train(dense, parent_store, progress=False)
    round2 = imp_chain(dense, 2, prune_rate=0.5, exclude_output=True)
    get_or_train(round2[0], parent_store, progress=False)   # the round-1 parent of the timed round 2
    cases = {
        "plain sparse run (scratch, s=0.75)": RunConfig("scratch", data, model, train, sparsity=round2[1].sparsity,
                                                        parent=dense, exclude_output=True),
        "imp round 2, magnitude": round2[1],
        "imp round 2, gradient": imp_chain(dense, 2, prune_rate=0.5, exclude_output=True, prune="gradient")[1],
    }
    import shutil
    times = {k: [] for k in cases}
    for rep in range(reps + 1):                  # the first repetition warms up
        for name, cfg in cases.items():
            store = RunStore(f"{base}/rep{rep}-{len(times[name])}")
            shutil.copytree(parent_store.root, store.root, dirs_exist_ok=True)
            if cfg.prune == "gradient":         # its own round-1 parent, trained outside the timing
                get_or_train(cfg.parent, store, progress=False)
            t0 = time.perf_counter()
            get_or_train(cfg, store, progress=False)
            if rep:
                times[name].append(time.perf_counter() - t0)
    shutil.rmtree(base, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    plain = med["plain sparse run (scratch, s=0.75)"]
    print(f"threads: {torch.get_num_threads()}, {epochs} epochs of 2,000 samples, batch 32, repetitions: {reps}")
    for name, t in med.items():
        print(f"{name:38s} {t:8.3f} s (median)   ratio {t / plain:.3f}")
    print(f"ratio imp round (magnitude) / plain run: {med['imp round 2, magnitude'] / plain:.3f}   (target <= 1.05)")


if __name__ == "__main__":
    main()
