"""What a chapter's own measurements cost before they run: Hessians, Fisher traces, paths, cosines.

A chapter measures its trained runs after training (:meth:`~.store.Run.measure`: Tr(H) by Hutchinson, Tr(F),
losses along paths and curves, per-sample cosines). Its study module lists them for a plan
(``planned_measurements(params)``, one :class:`PlannedMeasurement` per measurement), each as the passes over data
it makes (:class:`Pass`): ``points`` evaluations of the training and test sets along a path, ``max_probes``
Hessian-vector products over the measured samples, one per-sample-gradient pass for Tr(F).

The plan times each kind of pass once per network, with the library's own function for it (``evaluate``,
``hessian_trace`` with one and with three probes, ``fisher_trace``, ...), on random data of the run's shapes and
a randomly initialised network (a plan trains nothing and loads no dataset), and scales by the samples and
passes. What
that leaves out, and why it is close enough:

- a measurement's cost does not depend on the weights' values, with one exception: Hutchinson's estimate stops
  at ``target_rse``, which trained weights reach after an unknown number of probes. The plan counts
  ``max_probes``, an upper bound (every one of the cpu profile's 21 curvature measurements ran to it);
- a measurement that makes no pass over data (the distance between two networks' weights: 39 of them took
  1.9 s in the cpu profile) has no passes and is planned at 0 s.

Every measurement is planned on the device it will run on (:func:`measurement_device`: CUDA where the chapter
trains on it, else the CPU).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass

import pandas as pd
import torch

from ..config import RunConfig
from .probe import data_sizes

PASS_KINDS = ("forward", "bn", "fisher", "hvp", "jacobian", "cosines")
PROBE_SAMPLES = 2048      # the most samples a pass is timed on (:func:`pass_cost`)
MIN_PROBE_SECONDS = 0.1   # each size is repeated until it has taken this long, so that short passes are averaged


@dataclass(frozen=True)
class Pass:
    """``count`` passes of one kind over ``samples`` samples."""
    kind: str
    samples: int
    count: int = 1

    def __post_init__(self):
        if self.kind not in PASS_KINDS:
            raise ValueError(f"Pass(kind=...) must be one of {PASS_KINDS}, got {self.kind!r}")
        for name in ("samples", "count"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"Pass({name}=...) must be an int >= 0, got {v!r}")


@dataclass(frozen=True)
class PlannedMeasurement:
    """A measurement a chapter keeps beside ``run`` (``Run.measure(name, params, ...)``): ``params`` holds the
    parameters a plan knows of it (a subset of those it is stored under), ``passes`` what it computes."""
    run: RunConfig
    name: str
    params: str          # JSON of the known parameters, sorted: hashable, and compared as stored
    passes: tuple[Pass, ...]


def measurement_device(device: str | torch.device = "cpu") -> torch.device:
    """Where a chapter measures its networks when it trains on ``device``: CUDA where it trains there, else the
    CPU (Apple's MPS has no float64, in which Tr(F), Tr(H) and the cosines are summed)."""
    from ..train import resolve_device
    d = resolve_device(device)
    return d if d.type == "cuda" else torch.device("cpu")


def planned(run: RunConfig, name: str, params: dict, *passes: Pass) -> PlannedMeasurement:
    return PlannedMeasurement(run, name, json.dumps(params, sort_keys=True, default=str), tuple(passes))


def path_passes(cfg: RunConfig, points: int, subsets: tuple[str, ...] = ("train", "test"),
                interior: int | None = None) -> tuple[Pass, ...]:
    """What :func:`sparsegap.landscape.linear_path` (and ``loss_along_direction``, ``curve_path``) costs: each of
    ``points`` evaluates each subset, and a network with BatchNorm re-estimates its statistics on the training
    set at each of the ``interior`` points (those not at t = 0 or 1; default: all but the two ends)."""
    _, n_train, n_test = data_sizes(cfg.data)
    sizes = {"train": n_train, "test": n_test}
    passes = [Pass("forward", sizes[s], points) for s in subsets]
    if _has_batchnorm(cfg):
        passes.append(Pass("bn", n_train, max(0, points - 2) if interior is None else interior))
    return tuple(passes)


def _has_batchnorm(cfg: RunConfig) -> bool:
    return _network_has_batchnorm(cfg.model, cfg.data.name)


@functools.lru_cache(maxsize=None)
def _network_has_batchnorm(model, dataset: str) -> bool:
    """Once per network (a book plans hundreds of paths over a few networks; a ResNet takes a while to build)."""
    from ..landscape import has_batchnorm
    return has_batchnorm(_network(model, dataset))


def _network(model, dataset: str):
    """The network, randomly initialised, built from the dataset's known input shape (a plan loads no data)."""
    from ..data import NUM_CLASSES
    from ..datasets import SPLITS
    from ..models import build_model
    return build_model(model.name, num_classes=NUM_CLASSES[dataset], input_shape=SPLITS[dataset][0],
                       width=model.width, hidden=model.hidden, seed=0, init=model.init)


def _probe_data(cfg: RunConfig, n: int):
    shape = data_sizes(cfg.data)[0]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    return x, g


def _pass_fn(kind: str, model, x, y, device: torch.device):
    from ..landscape import reestimate_bn
    from ..metrics.basic import evaluate
    from ..metrics.cosines import per_sample_cosines
    from ..metrics.fisher import fisher_trace
    from ..metrics.hessian import hessian_trace
    from ..metrics.jacobian import jacobian_norm
    direction = {k: torch.ones_like(p) for k, p in model.named_parameters()}
    return {
        "forward": lambda: evaluate(model, x, y, device=device),
        "bn": lambda: reestimate_bn(model, x),
        "fisher": lambda: fisher_trace(model, x, labels="sampled", generator=torch.Generator().manual_seed(0)),
        # Hutchinson computes the gradient and its graph once, then each probe is one Hessian-vector product:
        # timed with one probe and with three, the difference is what a probe adds (see measurement_seconds)
        "hvp": lambda: hessian_trace(model, x, y, max_probes=3, min_probes=3,
                                     generator=torch.Generator().manual_seed(0)),
        "hvp-once": lambda: hessian_trace(model, x, y, max_probes=1, min_probes=1,
                                          generator=torch.Generator().manual_seed(0)),
        "jacobian": lambda: jacobian_norm(model, x),
        "cosines": lambda: per_sample_cosines(model, x, y, direction),
    }[kind]


def pass_cost(cfg: RunConfig, kind: str, timings: dict | None = None,
              device: str | torch.device = "cpu") -> tuple[float, float]:
    """(seconds per pass, seconds per sample) of one pass of ``kind`` over ``cfg``'s network on the measurement
    device of ``device``, timed with the kernels' one thread (what a notebook measures with). ``timings`` caches
    it per network, input shape, kind and device.

    The pass is timed on 64, 128, 256, ... random samples (each size repeated for :data:`MIN_PROBE_SECONDS`)
    until one call takes half a second or the size reaches :data:`PROBE_SAMPLES` or the pass's own; the last
    two sizes give the cost per sample and what a pass costs whatever its size (a Hutchinson probe's graph, a
    chunk's set-up: on 512 samples that alone made a Hessian probe look twice as dear per sample as on 4,000)."""
    from .threads import use_threads
    device = measurement_device(device)
    key = ("measure", cfg.model, cfg.data.name, cfg.data.train_size, kind, str(device))
    if timings is not None and key in timings:
        return timings[key]
    cap = max(2, min(PROBE_SAMPLES, data_sizes(cfg.data)[1]))
    model = _network(cfg.model, cfg.data.name).to(device).eval()
    x, g = _probe_data(cfg, cap)
    with torch.no_grad():
        classes = model(x[:1].to(device)).shape[1]
    y = torch.randint(classes, (cap,), generator=g)
    points = []
    with use_threads(1):
        n = min(64, cap)
        _pass_fn(kind, model, x[:n], y[:n], device)()  # warm-up: allocations, lazy initialisation, autotuning
        while True:
            fn = _pass_fn(kind, model, x[:n], y[:n], device)
            reps, t0 = 0, time.perf_counter()
            while True:
                fn()
                if device.type == "cuda":     # BatchNorm's re-estimation returns before the device is done
                    torch.cuda.synchronize(device)
                reps += 1
                if time.perf_counter() - t0 >= MIN_PROBE_SECONDS:
                    break
            points.append((n, (time.perf_counter() - t0) / reps))
            if points[-1][1] >= 0.5 or n >= cap:
                break
            n = min(2 * n, cap)
    (n1, t1), (n2, t2) = points[-2] if len(points) > 1 else (0, 0.0), points[-1]
    per_sample = (t2 - t1) / (n2 - n1)
    if per_sample <= 0:                                  # noise: no fixed part to tell apart
        cost = (0.0, t2 / n2)
    else:
        cost = (max(0.0, t2 - per_sample * n2), per_sample)
    if timings is not None:
        timings[key] = cost
    return cost


def measurement_seconds(m: PlannedMeasurement, timings: dict | None = None,
                        device: str | torch.device = "cpu") -> float:
    """Planned seconds of ``m``: each pass what it costs at its size, times its count. Hutchinson's ``count``
    probes share one gradient graph: the graph once, and each probe's Hessian-vector product."""
    total = 0.0
    for p in m.passes:
        if not (p.count and p.samples):
            continue
        fixed, per_sample = pass_cost(m.run, p.kind, timings, device)
        if p.kind == "hvp":
            fixed1, per_sample1 = pass_cost(m.run, "hvp-once", timings, device)
            probe = max(0.0, (fixed - fixed1) / 2 + (per_sample - per_sample1) / 2 * p.samples)
            once = max(0.0, fixed1 + per_sample1 * p.samples - probe)
            total += once + p.count * probe
        else:
            total += p.count * (fixed + per_sample * p.samples)
    return total


def is_stored(m: PlannedMeasurement, store) -> bool:
    """Whether ``store`` keeps this measurement beside its run: a file of its name whose parameters include
    every parameter the plan knows."""
    folder = store.root / m.run.run_id / "measurements"
    if not folder.is_dir():
        return False
    want = json.loads(m.params)
    for f in folder.glob(f"{m.name}-*.json"):
        try:
            have = json.loads(f.read_text())
        except ValueError:
            continue
        if have.get("name") == m.name and all(have.get("params", {}).get(k) == v for k, v in want.items()):
            return True
    return False


def plan_measurements(planned_list: list[PlannedMeasurement], store, *, device: str | torch.device = "cpu",
                      timings: dict | None = None, done: set | None = None) -> pd.DataFrame:
    """One row per distinct measurement: its run, name, whether the store keeps it, and its planned seconds on
    the measurement device of ``device`` (0 when kept, or planned by an earlier chapter of a book: ``done``, a
    set, updated)."""
    timings = {} if timings is None else timings
    done = set() if done is None else done
    rows = []
    for m in dict.fromkeys(planned_list):
        stored = is_stored(m, store)
        earlier = m in done
        seconds = 0.0 if stored or earlier else measurement_seconds(m, timings, device)
        done.add(m)
        rows.append({"run": m.run.run_id, "measurement": m.name, "model": m.run.model.label, "in store": stored,
                     "planned earlier": earlier and not stored, "seconds": seconds})
    columns = ["run", "measurement", "model", "in store", "planned earlier", "seconds"]
    # typed even when empty (a chapter that measures nothing), so that the book's tables concatenate as booleans
    return pd.DataFrame(rows, columns=columns).astype({"in store": bool, "planned earlier": bool, "seconds": float})
