"""What one epoch of a run costs on a device, measured by the trainers themselves.

A plan (:mod:`sparsegap.runs.plan`) must not load a dataset, so a probe trains on random data of the run's
shapes: the run's own network, its training settings (batch size, precision, memory format, augmentation,
Fisher regularizer, masks when sparse) through :func:`sparsegap.train.train`, or a group of batch-eligible
runs through :func:`sparsegap.batched.train_batched`, exactly as the run store would train them. An epoch is
then everything the trainer does in it: the steps, the evaluation of the training and test sets, each member's
checkpoint as the store writes it, and, timed one tracker at a time, each tracker's measurement.

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
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DataConfig, RunConfig
from ..data import NUM_CLASSES
from ..datasets import split_sizes

PROBE_STEPS = 6          # minibatches of a probed epoch at least: enough to average a step, few enough for a quick plan
# ... and samples at least: the two probes' difference is scaled up to the whole set, so it must stand well above
# the noise. At batch 12 six steps (72 of the tishby set's 3,482 samples) put chapter 2's plan at 0.58 and, run
# again, at 1.71 of what the build measured; 2,048 samples scale the difference by 3.4, not by 48.
PROBE_SAMPLES = 2048
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
PROBE_HASH = "0" * 64     # the run hash a probe's checkpoints carry: a run's is as long


def data_sizes(data: DataConfig) -> tuple[tuple[int, ...], int, int]:
    """(input shape, training samples, test samples) that ``data`` trains and evaluates on, from the datasets'
    known sizes (:data:`sparsegap.datasets.SPLITS`): a plan loads nothing. Subset sizes beyond the dataset's are
    refused, as loading the data would refuse them."""
    return split_sizes(data.name, data.train_size, data.test_size, data.validation)


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


def fraction(p: Probe, scale: int = 1, steps: int | None = None) -> float:
    """The share of the run's training (and test) set that a probe epoch sees: ``scale`` times ``steps``
    minibatches (default: :data:`PROBE_STEPS`, or more to reach :data:`PROBE_SAMPLES`), at most the whole set."""
    if steps is None:
        steps = max(PROBE_STEPS, -(-PROBE_SAMPLES // p.train.batch_size))
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


def epoch_costs(p: Probe, device: torch.device, track: tuple[str, ...] = ()) -> tuple[float, dict[str, float]]:
    """(seconds of one full-size epoch of the probe's run, of its whole group when batched, without its trackers;
    {spec: seconds of one measurement of that tracker}), the trackers ``track`` measuring at every epoch of the
    probe, each timed on its own inside it (one probe for a run and all its trackers).

    An epoch's time is a part that grows with the data (steps, evaluation, trackers over a subset) and a part
    that does not (setting up the evaluation and the trackers, the checkpoint). Two probes, on a share ``f`` of
    the data and on twice it, separate them: the fixed part is counted once, the rest scaled to the whole set.
    A small network on a small batch (the tishby MLP at batch 12) has a fixed part that, scaled with the
    rest, would overstate its epoch 2- to 3-fold."""
    if _heavy(p, device):
        f = fraction(p, steps=HEAVY_STEPS)
        base, per = _probe_epoch(dataclasses.replace(p, sparse=False), device, track, f, timed=1)
        return base / f, {k: v / f for k, v in per.items()}
    f1, f2 = fraction(p), fraction(p, 2)
    b1, t1 = _probe_epoch(p, device, track, f1)
    if f1 >= 1.0:
        return b1, t1
    b2, t2 = _probe_epoch(p, device, track, f2)
    return _whole(b1, b2, f1, f2), {k: _whole(t1[k], t2[k], f1, f2) for k in t1}


def _whole(t1: float, t2: float, f1: float, f2: float) -> float:
    """The time at the whole data of something timed ``t1`` at share ``f1`` and ``t2`` at ``f2``: its fixed part
    and its part per share, fitted on the two."""
    per_share = max(0.0, (t2 - t1) / (f2 - f1))
    fixed = max(0.0, t1 - per_share * f1)
    return fixed + per_share if per_share > 0 else t1 / f1


class _Timed:
    """A tracker whose hooks are timed (the device synchronized around them): what it adds to an epoch."""

    HOOKS = ("on_epoch_end", "on_step_end", "on_after_backward")

    def __init__(self, callback, device: torch.device):
        self._callback, self._device, self.seconds = callback, device, 0.0

    def __getattr__(self, name):
        attr = getattr(self._callback, name)
        if name not in _Timed.HOOKS or not callable(attr):
            return attr

        def timed(*args, **kwargs):
            if self._device.type == "cuda":
                torch.cuda.synchronize(self._device)
            t0 = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                if self._device.type == "cuda":
                    torch.cuda.synchronize(self._device)
                self.seconds += time.perf_counter() - t0
        return timed


def _probe_epoch(p: Probe, device: torch.device, track: tuple[str, ...], f: float,
                 timed: int = TIMED_EPOCHS) -> tuple[float, dict[str, float]]:
    """(wall seconds of one warmed-up epoch on a share ``f`` of the run's data without its trackers, {spec: the
    trackers' seconds in it}): of the fastest of ``timed`` epochs."""
    from ..trackers import make_trackers
    from .job import write_checkpoint
    from .threads import use_threads
    data = _synthetic(p, f)
    nets = [_network(p, seed) for seed in range(p.members)]
    # one member's trackers are timed (a batched group's members measure alike); the others run untimed
    trackers = [[_Timed(cb, device) for cb in make_trackers(track, data)]] + [
        make_trackers(track, data) for _ in nets[1:]]
    epochs: list[tuple[float, dict[str, float]]] = []
    last = [time.perf_counter()]
    with tempfile.TemporaryDirectory(prefix="sparsegap-probe-") as tmp:
        # every member writes its checkpoint at each epoch's end, as a run in the store does (a copy of the
        # weights, the optimizer's state and the history, hashed, written and synced); the others' writes
        # fall in the next epoch's time, which is where a group's epoch pays them
        folders = [Path(tmp) / str(k) for k in range(p.members)]
        for folder in folders:
            folder.mkdir()

        def checkpoint(k: int):
            return lambda ckpt: write_checkpoint(ckpt, folders[k], PROBE_HASH, {})

        def mark(ckpt) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            spent = {spec: cb.seconds for spec, cb in zip(track, trackers[0])}
            epochs.append((now - last[0] - sum(spent.values()), spent))
            for cb in trackers[0]:
                cb.seconds = 0.0
            if len(epochs) >= WARMUP_EPOCHS + timed:
                raise _Enough
            last[0] = now
            checkpoint(0)(ckpt)

        with use_threads(_threads(p, nets[0][0])):
            try:
                _train(p, nets, data, trackers, device, [mark] + [checkpoint(k) for k in range(1, p.members)])
            except _Enough:
                pass
    if len(epochs) <= WARMUP_EPOCHS:
        raise RuntimeError(f"the probe of {p.model} on random data diverged before its timed epochs")
    return min(epochs[WARMUP_EPOCHS:], key=lambda e: e[0] + sum(e[1].values()))


def _threads(p: Probe, model) -> int:
    """The trainers' thread policy (:mod:`.threads`): batched groups one thread, a run alone by its size."""
    from ..batched import forward_macs
    from .threads import threads_for, workers
    if p.batched:
        return 1
    return threads_for(workers(), macs=forward_macs(model, p.train.batch_size, p.shape))


def _train(p: Probe, nets, data, trackers, device, on_epoch_end) -> None:
    """Train the probe's network(s) with ``trackers`` and ``on_epoch_end`` (one per member) as the run store would."""
    if p.curve_degree:
        from ..curves import BezierCurve, train_curve
        (a, masks), (b, _) = nets[0], _network(p, 1)
        curve = BezierCurve(a, a.state_dict(), b.state_dict(), p.curve_degree, masks=masks)
        train_curve(curve.to(device), data, p.train, on_epoch_end=on_epoch_end[0], progress=False)
    elif p.batched:
        from ..batched import train_batched
        train_batched([m for m, _ in nets], data, p.train, masks=[k for _, k in nets],
                      callbacks=trackers, device=device, on_epoch_end=on_epoch_end, progress=False)
    else:
        from ..train import train
        model, masks = nets[0]
        train(model, data, p.train, masks=masks, callbacks=trackers[0], device=device,
              on_epoch_end=on_epoch_end[0], progress=False)


def tracker_rate(spec: str, steps_per_epoch: int) -> float:
    """How many times per epoch tracker ``spec`` measures ("@3": a third of a time, "@50step": steps / 50)."""
    from ..tracker_specs import parse_tracker
    t = parse_tracker(spec)
    return steps_per_epoch / t.every if t.unit == "step" else 1.0 / t.every


def with_every_epoch(spec: str) -> str:
    """``spec`` measuring once per epoch, which a probe times: "fisher_trace:test@50step" -> "fisher_trace:test"."""
    return spec.split("@")[0]
