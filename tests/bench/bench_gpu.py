"""Images per second on a GPU, against a plain PyTorch loop timed in the same run (issue 26).

    python tests/bench/bench_gpu.py [--images 20000] [--precision fp32 bf16]

ResNet-32 x4 on CIFAR-100-shaped random data at the paper file's settings (batch 128, SGD with momentum, channels
last, crop-flip):
- a plain loop (no library: model, SGD, cross-entropy; channels last), eager, the baseline;
- sparsegap's ``train()`` one run: eager, and with ``TrainConfig.compile="reduce-overhead"`` (CUDA graphs);
- a sweep of 4 and of 8 such runs on the one GPU, each in a worker process of the ``gpus*K`` executor: the
  aggregate images/s;
- the same sweeps as one grouped network (``train_batched(engine="grouped")``, :mod:`sparsegap.grouped`): the
  aggregate images/s of one process;
and LeNet-300-100 on MNIST-shaped random data: 16 runs batched (``train_batched``) against one alone.
Each timing is the second of two epochs (the first pays cuDNN's autotuning, compilation and CUDA-graph capture).
Without CUDA it prints why and stops; ``--allow-cpu`` runs the same code on the CPU at a toy size, to check it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

RESNET = dict(name="resnet32", width=4, classes=100, shape=(3, 32, 32), batch=128)
LENET = dict(name="lenet300-100", width=1, classes=10, shape=(1, 28, 28), batch=128)


def random_data(spec: dict, n: int, device: str):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *spec["shape"], generator=g)
    y = torch.randint(0, spec["classes"], (n,), generator=g)
    return SimpleNamespace(name="random", x_train=x, y_train=y, x_test=x[: n // 5], y_test=y[: n // 5])


def model_of(spec: dict, seed: int = 0):
    from sparsegap.models import build_model
    return build_model(spec["name"], num_classes=spec["classes"], input_shape=spec["shape"], width=spec["width"],
                       seed=seed)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_loop(spec: dict, n: int, device: str, precision: str) -> float:
    """Images/s of the second epoch of a loop with nothing but the model, SGD and the loss."""
    model = model_of(spec).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    data = random_data(spec, n, device)
    x = data.x_train.to(device).contiguous(memory_format=torch.channels_last)
    y = data.y_train.to(device)
    dtype = {"bf16": torch.bfloat16}.get(precision)
    seconds = []
    for _ in range(2):
        sync(device)
        t0 = time.perf_counter()
        for i in range(0, n, spec["batch"]):
            with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(model(x[i: i + spec["batch"]]), y[i: i + spec["batch"]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        seconds.append(time.perf_counter() - t0)
    return n / seconds[-1]


def library_run(spec: dict, n: int, device: str, precision: str, compile_mode: str, seed: int = 0) -> float:
    """Images/s of the second epoch of sparsegap's train() at the paper file's settings (steps only: the epoch's
    ``seconds`` in the history, before its evaluation)."""
    from sparsegap.config import TrainConfig
    from sparsegap.train import train
    cfg = TrainConfig(epochs=2, batch_size=spec["batch"], lr=0.05, schedule="constant", precision=precision,
                      channels_last=True, augment="crop-flip", compile=compile_mode)
    history = train(model_of(spec, seed), random_data(spec, n, device), cfg, device=device, progress=False, seed=seed)
    return n / history["seconds"][-1]


def _sweep_member(args) -> tuple[float, float, float]:
    spec, n, precision, compile_mode, seed = args
    t0 = time.time()
    rate = library_run(spec, n, "cuda" if torch.cuda.is_available() else "cpu", precision, compile_mode, seed)
    return t0, time.time(), rate


def sweep(spec: dict, n: int, k: int, precision: str, compile_mode: str, cpu: bool) -> float:
    """Aggregate images/s of ``k`` runs at once on the one GPU, each in a worker of the ``gpus*K`` executor: the
    images of all the runs' second epochs over the wall time in which they overlapped (approximated by the sum
    of the per-run rates, since every run times its own second epoch)."""
    from sparsegap.runs.executors import executor_for
    spec_name = f"processes:{k}" if cpu else f"gpus:0*{k}"
    with executor_for(spec_name) as pool:
        results = list(pool.map(_sweep_member, [(spec, n, precision, compile_mode, s) for s in range(k)]))
    return sum(rate for _, _, rate in results)


def grouped_sweep(spec: dict, n: int, k: int, device: str, precision: str) -> float:
    """Aggregate images/s of ``k`` runs trained as one grouped network (each its own batch, masks none, crop-flip,
    channels last): the images of the ``k`` runs' second epochs over its seconds."""
    from sparsegap.batched import train_batched
    from sparsegap.config import TrainConfig
    cfg = TrainConfig(epochs=2, batch_size=spec["batch"], lr=0.05, schedule="constant", precision=precision,
                      channels_last=True, augment="crop-flip")
    hs = train_batched([model_of(spec, s) for s in range(k)], random_data(spec, n, device), cfg, device=device,
                       seeds=list(range(k)), progress=False, engine="grouped")
    return n / hs[0]["seconds"][-1]          # a member's share of the epoch: k runs' images in k shares


def lenet_batched(n: int, device: str, members: int = 16) -> tuple[float, float]:
    """Seconds per member-epoch of LeNet-300-100: alone (train) and ``members`` batched (train_batched)."""
    from sparsegap.batched import train_batched
    from sparsegap.config import TrainConfig
    from sparsegap.train import train
    data = random_data(LENET, n, device)
    cfg = TrainConfig(epochs=2, batch_size=LENET["batch"], lr=0.05, schedule="constant")
    alone = train(model_of(LENET), data, cfg, device=device, progress=False)["seconds"][-1]
    hs = train_batched([model_of(LENET, s) for s in range(members)], data, cfg, device=device, progress=False)
    return alone, hs[0]["seconds"][-1]       # a member's share of the batched epoch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=20000, help="images per epoch (ResNet runs)")
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--sweeps", nargs="*", type=int, default=[4, 8], help="runs per GPU in the sweeps")
    ap.add_argument("--allow-cpu", action="store_true", help="run on the CPU at a toy size (checks the code only)")
    args = ap.parse_args(argv)
    cpu = not torch.cuda.is_available()
    if cpu and not args.allow_cpu:
        print("bench_gpu: skipped: no CUDA GPU here (torch.cuda.is_available() is False); run it on a GPU machine, "
              "or with --allow-cpu to check the code at a toy size")
        return 0
    device = "cpu" if cpu else "cuda"
    n = 512 if cpu else args.images
    spec = dict(RESNET, width=1, batch=32) if cpu else RESNET
    print(f"device: {torch.cuda.get_device_name() if not cpu else 'cpu (toy size: code check, not a timing)'}; "
          f"torch {torch.__version__}; {spec['name']} x{spec['width']}, batch {spec['batch']}, {n} images an epoch")
    rows = []
    for precision in args.precision:
        base = plain_loop(spec, n, device, precision)
        rows.append((f"plain loop, {precision}, eager", base, 1.0))
        for mode in ("off", "reduce-overhead"):
            if cpu and mode != "off":
                continue          # compiling on the CPU takes minutes and says nothing about a GPU
            rate = library_run(spec, n, device, precision, mode)
            rows.append((f"train(), {precision}, compile={mode}", rate, rate / base))
        for k in args.sweeps:
            mode = "off" if cpu else "reduce-overhead"
            rate = sweep(spec, n, k, precision, mode, cpu)
            rows.append((f"sweep of {k} on one GPU, {precision}, compile={mode} (aggregate)", rate, rate / base))
            rate = grouped_sweep(spec, n, k, device, precision)
            rows.append((f"sweep of {k} as one grouped network, {precision} (aggregate)", rate, rate / base))
    print(f"{'what':<64}{'images/s':>12}{'vs plain':>10}")
    for what, rate, ratio in rows:
        print(f"{what:<64}{rate:>12,.0f}{ratio:>10.2f}")
    alone, member = lenet_batched(4096 if cpu else 60000, device)
    print(f"LeNet-300-100, s per member-epoch: alone {alone:.3f}, 16 batched {member:.3f} ({alone / member:.1f}x)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
