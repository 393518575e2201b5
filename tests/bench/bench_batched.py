"""Many small networks trained as one, and the thread policy, against their baselines in the same run.

    python tests/bench/bench_batched.py [--epochs 3] [--members 18] [--lenet-members 16]

1. The 12-bit chapter's sweep (MLP 12-64-32-32-18-18-6-6-2, He init, ``tishby``, batch 12, lr
   0.001, no momentum; 2 dense members and 16 masked ones at 4 sparsities): ``train_batched``
   against ``train()`` one network after another. Target: >= 5x.
2. A LeNet-300-100 sweep on 4k Fashion-MNIST images (``mnist-5k`` when Fashion-MNIST is not
   installed), batch 128: batched or not as :func:`sparsegap.batched.should_batch` decides,
   against one after another. Target: >= 0.95x. When should_batch says no, the forced batch is
   shown for information.
3. The thread policy: one training step at 1 and at 2 torch threads for the 12-bit MLP (batch 12),
   LeNet-300-100 (batch 128) and LeNet-5 (batch 128), with ``threads_for``'s choice. Two threads
   only help when the second core is free: the load average printed says whether it was.
4. What deterministic builds cost (issue 22): a batch of LeNet-300-100s at 1 thread (what every build
   now uses) against 2 threads (what a -j1 build used to give a large batch); one run alone through the
   batched trainer (as every batch-eligible run left alone now trains) against ``train()``; and the
   per-epoch evaluation member by member (now) against one product broadcast over the stack (before).

Times are wall-clock of whole calls (training loop plus per-epoch evaluation), with one torch
thread unless said otherwise; each side is timed twice, interleaved, and the faster kept, because
on a shared machine other processes only ever add time.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch

from sparsegap.batched import forward_macs, should_batch, train_batched
from sparsegap.config import DataConfig, TrainConfig
from sparsegap.models import build_model
from sparsegap.pruning import apply_masks, global_magnitude_masks
from sparsegap.runs import load_data
from sparsegap.runs.threads import cores, threads_for, use_threads
from sparsegap.train import train

HIDDEN_12BIT = (64, 32, 32, 18, 18, 6, 6)


def one_after_another(models, data, cfgs, masks, seeds) -> float:
    t0 = time.perf_counter()
    for m, c, mk, s in zip(models, cfgs, masks, seeds):
        train(copy.deepcopy(m), data, c, masks=mk, seed=s, device="cpu", progress=False)
    return time.perf_counter() - t0


def batched(models, data, cfgs, masks, seeds, *, decide: bool = False) -> float:
    """train_batched on copies; with ``decide``, only if should_batch says so (else one after another)."""
    t0 = time.perf_counter()
    if decide and not should_batch(models[0], cfgs[0].batch_size, len(models),
                                   input_shape=tuple(data.x_train.shape[1:])):
        return one_after_another(models, data, cfgs, masks, seeds)
    train_batched([copy.deepcopy(m) for m in models], data, cfgs, masks=masks, seeds=seeds, device="cpu",
                  progress=False)
    return time.perf_counter() - t0


def best_of(fns: dict, reps: int = 2) -> dict:
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for name, fn in fns.items():
            best[name] = min(best[name], fn())
    return best


def sweep(model_fn, data, cfg, n_members: int, sparsities, *, min_density: float = 0.0):
    """Dense members, then masked ones (magnitude masks of a dense member's init), seeds 0, 1, ..."""
    models, masks = [], []
    for i in range(n_members):
        m = model_fn(i)
        s = ([None] + list(sparsities))[i % (len(sparsities) + 1)]
        mk = None if s is None else global_magnitude_masks(m, s, min_density=min_density)
        apply_masks(m, mk)
        models.append(m)
        masks.append(mk)
    return models, data, [cfg] * n_members, masks, list(range(n_members))


def bench_12bit(epochs: int, n_members: int) -> None:
    data = load_data(DataConfig("tishby"))
    cfg = TrainConfig(epochs=epochs, batch_size=12, lr=0.001, momentum=0.0, weight_decay=0.0, milestones=(0.5,))

    def model_fn(seed):
        return build_model("mlp", num_classes=2, input_shape=(12,), hidden=HIDDEN_12BIT, init="kaiming", seed=seed)

    args = sweep(model_fn, data, cfg, n_members, (0.5, 0.7, 0.8, 0.9), min_density=0.05)
    t = best_of({"one after another": lambda: one_after_another(*args), "batched": lambda: batched(*args)})
    print(f"1. 12-bit sweep: {n_members} MLPs x {epochs} epochs on tishby ({len(data.y_train)} samples), batch 12")
    for name, s in t.items():
        print(f"   {name:28s} {s:7.2f} s")
    print(f"   speed-up batched / one after another: {t['one after another'] / t['batched']:.2f}x   (target >= 5x)")


def bench_lenet300(n_members: int) -> None:
    try:
        data = load_data(DataConfig("fashion-mnist", train_size=4000))
    except Exception as e:  # not installed: the same sizes from the bundled MNIST subset
        print(f"   (fashion-mnist unavailable: {type(e).__name__}; using mnist-5k)")
        data = load_data(DataConfig("mnist-5k"))
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05, momentum=0.9, weight_decay=2e-4)

    def model_fn(seed):
        return build_model("lenet300-100", num_classes=10, input_shape=tuple(data.x_train.shape[1:]), seed=seed)

    args = sweep(model_fn, data, cfg, n_members, (0.5, 0.8, 0.9))
    decision = should_batch(args[0][0], 128, n_members)
    sides = {"one after another": lambda: one_after_another(*args),
             "as should_batch decides": lambda: batched(*args, decide=True)}
    if not decision:  # for information: what batching would have given
        sides["batched (forced)"] = lambda: batched(*args)
    t = best_of(sides)
    print(f"2. LeNet-300-100 sweep: {n_members} networks x 1 epoch on {data.name} ({len(data.y_train)} samples), "
          f"batch 128; should_batch -> {decision}")
    for name, s in t.items():
        print(f"   {name:28s} {s:7.2f} s   ratio {t['one after another'] / s:.2f}x")
    print(f"   ratio as decided / one after another: {t['one after another'] / t['as should_batch decides']:.2f}x"
          "   (target >= 0.95x)")


def step_timer(model, shape, batch_size: int, classes: int, steps: int):
    """A function timing ``steps`` SGD steps of ``model`` (seconds per step), after a warm-up."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch_size, *shape), torch.randint(0, classes, (batch_size,))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()

    def timed() -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - t0) / steps
    return timed


def bench_threads(reps: int = 4) -> None:
    print(f"3. threads: one training step at 1 and 2 torch threads, best of {reps} interleaved ({cores()} cores; "
          f"load average {os.getloadavg()[0]:.1f} before)")
    print(f"   {'model, batch':26s} {'fwd MACs':>9s} {'1 thread':>10s} {'2 threads':>10s} {'1 / 2':>7s}"
          "  threads_for(1)")
    cases = [("12-bit MLP, batch 12", lambda: build_model("mlp", num_classes=2, input_shape=(12,), hidden=HIDDEN_12BIT),
              (12,), 12, 2, 200),
             ("LeNet-300-100, batch 128", lambda: build_model("lenet300-100", num_classes=10, input_shape=(1, 28, 28)),
              (1, 28, 28), 128, 10, 40),
             ("LeNet-5, batch 128", lambda: build_model("lenet5", num_classes=10, input_shape=(1, 28, 28)),
              (1, 28, 28), 128, 10, 8)]
    for name, fn, shape, bs, classes, steps in cases:
        model = fn()
        timers = {n: step_timer(copy.deepcopy(model), shape, bs, classes, steps) for n in (1, 2)}
        best = dict.fromkeys(timers, float("inf"))
        for _ in range(reps):
            for n, timed in timers.items():
                with use_threads(n):
                    best[n] = min(best[n], timed())
        macs = forward_macs(model, bs, shape)
        print(f"   {name:26s} {macs / 1e6:8.2f}M {best[1] * 1e3:8.2f}ms {best[2] * 1e3:8.2f}ms "
              f"{best[1] / best[2]:6.2f}x  {threads_for(1, macs=macs)}")


def _broadcast_evaluation(P, ops, x, chunk: int):
    """The evaluation before issue 22: every member's logits from one product broadcast over the stack."""
    out = []
    for i in range(0, len(x), chunk):
        h, shared = x[i: i + chunk], True
        for op in ops:
            if op[0] == "flatten":
                h = h.flatten(1) if shared else h.flatten(2)
            elif op[0] == "relu":
                h = torch.relu(h)
            else:
                W, b = P[op[1]], (P[op[2]] if op[2] is not None else None)
                h = torch.matmul(h, W.transpose(1, 2))
                h = h if b is None else h + b.unsqueeze(1)
                shared = False
        out.append(h)
    return torch.cat(out, dim=1)


def bench_determinism(n_members: int, reps: int = 2) -> None:
    from sparsegap.stacked import BmmEngine as _BmmEngine, Stack as _Stack, activation_size as _activation_size
    try:
        data = load_data(DataConfig("fashion-mnist", train_size=4000))
    except Exception:
        data = load_data(DataConfig("mnist-5k"))
    shape = tuple(data.x_train.shape[1:])
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05, momentum=0.9, weight_decay=2e-4)
    args = sweep(lambda seed: build_model("lenet300-100", num_classes=10, input_shape=shape, seed=seed), data, cfg,
                 n_members, (0.5, 0.8, 0.9))

    def at(n, fn):
        def timed():
            with use_threads(n):
                return fn()
        return timed

    print(f"4. what determinism costs (load average {os.getloadavg()[0]:.1f} before)")
    t = best_of({"1 thread": at(1, lambda: batched(*args)), "2 threads": at(2, lambda: batched(*args))}, reps)
    print(f"   {n_members} LeNet-300-100s batched, 1 epoch of {len(data.y_train)}: 1 thread {t['1 thread']:.2f} s, "
          f"2 threads {t['2 threads']:.2f} s: 1 thread costs {t['1 thread'] / t['2 threads']:.2f}x "
          f"(a -j1 build; nothing at -j2)")
    for name, fn, d, c in (
            ("LeNet-300-100, batch 128", lambda s: build_model("lenet300-100", num_classes=10, input_shape=shape, seed=s),
             data, cfg),
            ("12-bit MLP, batch 12", lambda s: build_model("mlp", num_classes=2, input_shape=(12,), hidden=HIDDEN_12BIT,
                                                           init="kaiming", seed=s),
             load_data(DataConfig("tishby")), TrainConfig(epochs=1, batch_size=12, lr=0.001, momentum=0.0,
                                                          weight_decay=0.0))):
        one = ([fn(0)], d, [c], [None], [0])
        t = best_of({"train()": at(1, lambda: one_after_another(*one)), "batched": at(1, lambda: batched(*one))}, reps)
        print(f"   one {name} alone, 1 epoch: train() {t['train()']:.2f} s, batched trainer {t['batched']:.2f} s: "
              f"{t['batched'] / t['train()']:.2f}x the time")
    models = [m for m in args[0]]
    names = [n for n, _ in models[0].named_parameters()]
    params_of = [dict(m.named_parameters()) for m in models]
    engine = _BmmEngine(models[0], names)
    stack = _Stack(list(range(len(models))), params_of, [None] * len(models), [None] * len(models), names, engine)
    x_test = load_data(DataConfig("fashion-mnist") if data.name == "fashion-mnist" else DataConfig("mnist-5k")).x_test
    size = _activation_size(models[0], shape)
    chunk_old = max(1, min(1024, (1 << 22) // (len(models) * size)))
    y = torch.zeros(len(x_test), dtype=torch.long)
    with use_threads(1):
        t = best_of({"broadcast": lambda: _timed(lambda: _broadcast_evaluation(stack.P, engine.ops, x_test, chunk_old)),
                     "per member": lambda: _timed(lambda: stack.evaluate(x_test, y, torch.device("cpu"), size))}, reps)
    print(f"   evaluation of {len(models)} members on {len(x_test)} test images: broadcast (before) "
          f"{t['broadcast']:.2f} s, member by member (now) {t['per member']:.2f} s: "
          f"{t['per member'] / t['broadcast']:.2f}x the time")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the 12-bit sweep")
    parser.add_argument("--members", type=int, default=18, help="networks in the 12-bit sweep")
    parser.add_argument("--lenet-members", type=int, default=16, help="networks in the LeNet-300-100 sweep")
    args = parser.parse_args(argv)
    with use_threads(1):
        bench_12bit(args.epochs, args.members)
        bench_lenet300(args.lenet_members)
    bench_threads()
    bench_determinism(args.lenet_members)


if __name__ == "__main__":
    main()
