"""What one epoch of a run costs on a device, measured by the trainers themselves.

A plan (:mod:`sparsegap.runs.plan`) must not load a dataset, so a probe trains on random data of the run's
shapes: the run's own network, its training settings (batch size, precision, memory format, augmentation,
Fisher regularizer, masks when sparse) through :func:`sparsegap.train.train`, or a group of batch-eligible
runs through :func:`sparsegap.batched.train_batched`, exactly as the run store would train them. An epoch is
then everything the trainer does in it: the steps, the evaluation of the training and test sets, and, timed
one tracker at a time, each tracker's measurement.

Why not time a few bare SGD steps and scale (the plan before issue 26)? Because the step is not where the time
goes at the book's scales. On a GPU a step at batch 128 costs about what one at batch 16 does (launch-bound),
so scaling a batch-16 probe linearly overstated the paper profile about 8-fold; on the CPU the small networks
train 16 to a batched model, and the evaluation of both sets and the Tr(F) tracker cost as much as the steps.

A probe epoch sees a fraction ``f`` of the run's training set (at most :data:`PROBE_STEPS` minibatches) and the
same fraction of its test set, after one warm-up epoch (allocations, cuDNN's autotuning, lazy kernels); its
wall time divided by ``f`` is the planned epoch. Costs that do not scale with the data (a tracker on a fixed
number of samples, a chapter's own measurements after training) are not what a probe sees; the plan says so.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass

import torch

from ..config import RunConfig
from ..data import NUM_CLASSES

PROBE_STEPS = 6          # minibatches of a probed epoch: enough to average a step, few enough for a quick plan
WARMUP_EPOCHS = 1
TIMED_EPOCHS = 2       # the fastest of these counts: a probe this short is easily slowed by anything beside it
# A network whose forward pass of one batch takes more multiply-accumulates than this is heavy for a CPU (ResNet-32
# x4 at batch 128: about 1.4e11; LeNet-300-100: 3.4e7). Planned on the CPU (the paper profile, planned before a
# GPU is at hand), the full probe would take minutes per network, so it is probed once, on HEAVY_STEPS minibatches
# of its real batch size, and a sparse run as its dense one (masks cost a CPU little beside these steps). Not a
# smaller batch scaled up: measured here, ResNet-32 costs 3.7 ms a sample at batch 16 against 2.7 at 128, and its
# first steps at a new batch size take seconds each (oneDNN's set-up), which one warm-up epoch pays.
HEAVY_MACS = 2e10
HEAVY_STEPS = 2


@dataclass(frozen=True)
class Probe:
    """What a probe's time depends on: the network, the shapes, the training settings but the schedule's length
    and learning rate, whether the run is sparse, and how many runs train as one model."""
    model: object
    shape: tuple[int, ...]
    classes: int
    train: object
    n_train: int
    n_test: int
    sparse: bool
    noise: bool
    members: int
    batched: bool
    curve_degree: int = 0    # > 0: a curve run, which trains the control points of a Bezier curve of that degree


def probe_of(cfg: RunConfig, members: int, batched: bool, sizes: tuple) -> Probe:
    shape, n_train, n_test = sizes
    t = dataclasses.replace(cfg.train, epochs=WARMUP_EPOCHS + TIMED_EPOCHS, lr=min(cfg.train.lr, 0.01), fisher_reg_epochs=(
        WARMUP_EPOCHS + TIMED_EPOCHS if cfg.train.fisher_reg else 0), data_schedule="full", subset=1.0, memorize_epochs=0,
        consolidate_epochs=0, rerank_every=0, milestones=())
    from .recipes import RECIPES
    curve = RECIPES[cfg.kind].curve
    return Probe(cfg.model, tuple(shape), NUM_CLASSES[cfg.data.name], t, n_train, n_test,
                 bool(getattr(cfg, "sparsity", 0.0)), bool(cfg.data.noise), members, batched,
                 cfg.curve_degree if curve else 0)


def fraction(p: Probe, scale: int = 1, steps: int = PROBE_STEPS) -> float:
    """The share of the run's training (and test) set that a probe epoch sees: ``scale`` times ``steps``
    minibatches, at most the whole set."""
    return min(1.0, scale * steps * p.train.batch_size / p.n_train)


class _Enough(Exception):
    """Raised at the end of a probe's last timed epoch: the trainer stops there."""


@functools.lru_cache(maxsize=None)
def _heavy(p: Probe, device: torch.device) -> bool:
    from ..batched import forward_macs
    from ..models import build_model
    if device.type != "cpu":
        return False
    m = p.model
    model = build_model(m.name, num_classes=p.classes, input_shape=p.shape, width=m.width, hidden=m.hidden,
                        init=m.init, seed=0)
    return forward_macs(model, p.train.batch_size, p.shape) * p.members > HEAVY_MACS


def _synthetic(p: Probe, f: float, seed: int = 0):
    """Random inputs and labels of the run's shapes, a share ``f`` of its sizes, as a DataSplits (with label noise
    when the run has some, so that trackers of the noisy subsets have samples to read)."""
    from ..data import add_label_noise
    from ..datasplits import DataSplits
    n_train = max(p.classes, round(f * p.n_train))
    n_test = max(p.classes, round(f * p.n_test))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, *p.shape, generator=g)
    y = torch.arange(n_train + n_test) % p.classes
    data = DataSplits("probe", x[:n_train], y[:n_train], x[n_train:], y[n_train:], p.classes)
    return add_label_noise(data, 0.2, 0) if p.noise else data


def _network(p: Probe, seed: int):
    from ..models import build_model
    from ..pruning import prunable_parameters
    m = p.model
    model = build_model(m.name, num_classes=p.classes, input_shape=p.shape, width=m.width, hidden=m.hidden,
                        init=m.init, seed=seed)
    # masked training costs the same whatever the density (the masks multiply dense tensors): half will do
    g = torch.Generator().manual_seed(seed)
    masks = ({n: torch.rand(q.shape, generator=g) < 0.5 for n, q in prunable_parameters(model).items()}
             if p.sparse else None)
    return model, masks


def epoch_seconds(p: Probe, device: torch.device, track: tuple[str, ...] = ()) -> float:
    """Seconds of one full-size epoch of the probe's run (of its whole group when batched), with the trackers
    ``track`` measuring at every epoch.

    An epoch's time is a part that grows with the data (steps, evaluation, trackers over a subset) and a part
    that does not (setting up the evaluation and the trackers, the checkpoint). Two probes, on a share ``f`` of
    the data and on twice it, separate them: the fixed part is counted once, the rest scaled to the whole set.
    A small network on a small batch (the tishby MLP at batch 12) has a fixed part that, scaled with the
    rest, would overstate its epoch 2- to 3-fold."""
    if _heavy(p, device):
        f = fraction(p, steps=HEAVY_STEPS)
        return _probe_epoch(dataclasses.replace(p, sparse=False), device, track, f, timed=1) / f
    f1, f2 = fraction(p), fraction(p, 2)
    t1 = _probe_epoch(p, device, track, f1)
    if f1 >= 1.0:
        return t1
    t2 = _probe_epoch(p, device, track, f2)
    per_share = max(0.0, (t2 - t1) / (f2 - f1))
    fixed = max(0.0, t1 - per_share * f1)
    return fixed + per_share if per_share > 0 else t1 / f1


def _probe_epoch(p: Probe, device: torch.device, track: tuple[str, ...], f: float, timed: int = TIMED_EPOCHS) -> float:
    """Wall seconds of one warmed-up epoch on a share ``f`` of the run's data (the fastest of ``timed``)."""
    from .threads import use_threads
    data = _synthetic(p, f)
    nets = [_network(p, seed) for seed in range(p.members)]
    epoch_times: list[float] = []
    last = [time.perf_counter()]

    def mark(_ckpt) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        epoch_times.append(now - last[0])
        last[0] = now
        if len(epoch_times) >= WARMUP_EPOCHS + timed:
            raise _Enough

    with use_threads(_threads(p, nets[0][0])):
        try:
            _train(p, nets, data, track, device, mark)
        except _Enough:
            pass
    if len(epoch_times) <= WARMUP_EPOCHS:
        raise RuntimeError(f"the probe of {p.model} on random data diverged before its timed epochs")
    return min(epoch_times[WARMUP_EPOCHS:])


def _threads(p: Probe, model) -> int:
    """The trainers' thread policy (:mod:`.threads`): batched groups one thread, a run alone by its size."""
    from ..batched import forward_macs
    from .threads import threads_for, workers
    if p.batched:
        return 1
    return threads_for(workers(), macs=forward_macs(model, p.train.batch_size, p.shape))


def _train(p: Probe, nets, data, track, device, mark) -> None:
    from ..trackers import make_trackers
    if p.curve_degree:
        from ..curves import BezierCurve, train_curve
        (a, masks), (b, _) = nets[0], _network(p, 1)
        curve = BezierCurve(a, a.state_dict(), b.state_dict(), p.curve_degree, masks=masks)
        train_curve(curve.to(device), data, p.train, on_epoch_end=mark, progress=False)
    elif p.batched:
        from ..batched import train_batched
        train_batched([m for m, _ in nets], data, p.train, masks=[k for _, k in nets],
                      callbacks=[make_trackers(track, data) for _ in nets], device=device,
                      on_epoch_end=[mark] + [None] * (p.members - 1), progress=False)
    else:
        from ..train import train
        model, masks = nets[0]
        train(model, data, p.train, masks=masks, callbacks=make_trackers(track, data), device=device,
              on_epoch_end=mark, progress=False)


def tracker_rate(spec: str, steps_per_epoch: int) -> float:
    """How many times per epoch tracker ``spec`` measures ("@3": a third of a time, "@50step": steps / 50)."""
    from ..tracker_specs import parse_tracker
    t = parse_tracker(spec)
    return steps_per_epoch / t.every if t.unit == "step" else 1.0 / t.every


def with_every_epoch(spec: str) -> str:
    """``spec`` measuring once per epoch, which a probe times: "fisher_trace:test@50step" -> "fisher_trace:test"."""
    return spec.split("@")[0]
