"""Cost of the run store's checks of issue 25, as ratios to one epoch of a small run.

LeNet-300-100 on the digits subset the tests use, trained by the library's loop. Timed: the checksum each
epoch's checkpoint now carries (its contents hashed), the verification of a resume (checksum, start files,
masks, finiteness; once per resume), the SHA-256 of the start files as written (once per run) and the
provenance of meta.json (git once per process, then cached; once per run). Each is the median of repetitions,
against the median epoch (history["seconds"], the loop alone) and the checkpoint's own write, timed here too.
"""

import statistics
import tempfile
import time
from pathlib import Path

import torch

from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.pruning import global_magnitude_masks
from sparsegap.runs import build_model_for, load_data, provenance
from sparsegap.runs.atomic import atomic_save, content_sha256, sha256, to_cpu
from sparsegap.runs.job import _resume_problem
from sparsegap.train import train


def median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None, reps: int = 21, epochs: int = 3) -> None:
    cfg = RunConfig("dense", DataConfig("digits"), ModelConfig("lenet300-100"),
                    TrainConfig(epochs=epochs, batch_size=32, lr=0.05), seed=0)
    data = load_data(cfg.data)
    model = build_model_for(cfg.model, cfg.data, seed=0)
    masks = global_magnitude_masks(model, 0.5)
    ckpts = []
    history = train(model, data, cfg.train, masks=masks, device="cpu", progress=False, on_epoch_end=ckpts.append)
    epoch = statistics.median(history["seconds"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        init, mask_file = path / "init.pt", path / "masks.pt"
        atomic_save(to_cpu(model.state_dict()), init)
        atomic_save(to_cpu(masks), mask_file)
        files = {"init.pt": sha256(init.read_bytes()), "masks.pt": sha256(mask_file.read_bytes())}
        ckpt = to_cpu(ckpts[-2]) | {"run_hash": cfg.hash(), "code_epoch": provenance.CODE_EPOCH, "files": files}
        digest = median_time(lambda: content_sha256(ckpt), reps)
        ckpt["sha256"] = content_sha256(ckpt)
        write = median_time(lambda: atomic_save(ckpt, path / "checkpoint.pt"), reps)
        (path / "config.json").write_text("{}")
        ckpt["files"]["config.json"] = sha256(b"{}")
        ckpt["sha256"] = content_sha256({k: v for k, v in ckpt.items() if k != "sha256"})
        sparse = RunConfig("finetune", cfg.data, cfg.model, cfg.train, sparsity=0.5, parent=cfg)
        loaded = torch.load(path / "checkpoint.pt", weights_only=True)
        loaded["sha256"], loaded["files"] = ckpt["sha256"], ckpt["files"]
        assert _resume_problem(loaded, sparse, path, masks) is None
        verify = median_time(lambda: _resume_problem(loaded, sparse, path, masks), reps)
        start_files = median_time(lambda: [sha256(p.read_bytes()) for p in (init, mask_file)], reps)
    provenance.git_state.cache_clear()
    t0 = time.perf_counter()
    provenance.provenance("cpu", time.time())
    first = time.perf_counter() - t0
    cached = median_time(lambda: provenance.provenance("cpu", time.time()), reps)

    print(f"LeNet-300-100 on digits ({len(data.y_train)} samples, batch 32), {torch.get_num_threads()} threads; "
          f"medians of {reps}")
    print(f"{'one epoch (the loop)':44s} {1000 * epoch:8.2f} ms")
    print(f"{'checkpoint write (atomic_save, as before)':44s} {1000 * write:8.2f} ms  ({write / epoch:.4f} epoch)")
    rows = [("checkpoint checksum, every epoch", digest), ("resume verification, once per resume", verify),
            ("start files SHA-256, once per run", start_files),
            ("provenance, first run of a process (git)", first), ("provenance, later runs (cached)", cached)]
    for name, seconds in rows:
        print(f"{name:44s} {1000 * seconds:8.2f} ms  ratio to an epoch {seconds / epoch:.4f}")


if __name__ == "__main__":
    main()
