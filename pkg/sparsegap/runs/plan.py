"""The cost of a sweep before it starts: which runs, how many are in the store, how many epochs, how long.

``python -m sparsegap.bookbuild --profile paper --plan`` prints :func:`plan_book`. Each chapter's study module
lists its runs (``planned_runs(params)``); nothing is trained for real and no dataset is loaded or downloaded.
The runs to train are planned as :func:`~.sweep.run_all` would train them: in waves down their chains, with the
batch-eligible runs of a wave that share a schedule trained as one batched model. Each network (or batched
group) is timed by :mod:`.probe` on the current device at its real batch size after a warm-up epoch, through
the trainers themselves: the steps, the evaluation of both sets, each epoch's checkpoint, and each tracker at its
own rate. What the plan does not count: mask updaters' work, and what a run costs once (its masks, its first
and last files). A chapter's own measurements after training
(Hessians, landscapes, paths) are planned by :mod:`.measure_plan`.
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import torch

from ..config import RunConfig
# SPLITS: the datasets' known sizes, reached as plan.SPLITS too; data_sizes lives with the probes, which the
# measurement plan imports too (it cannot import this module, which imports it)
from ..datasets import SPLITS  # noqa: F401
from .probe import Probe, data_sizes, epoch_costs, probe_of, tracker_rate, with_every_epoch


def _waves(todo: list[RunConfig], done) -> list[list[RunConfig]]:
    """The waves in which :func:`~.sweep.run_all` trains ``todo``: each wave is every run whose needs are done."""
    from .recipes import needs
    finished, waves, pending = set(), [], list(todo)
    while pending:
        ready = [c for c in pending if all(n in finished or done(n) for n in needs(c))] or pending
        waves.append(ready)
        finished |= set(ready)
        pending = [c for c in pending if c not in finished]
    return waves


def _costs(probe: Probe, device: torch.device, timings: dict, track: tuple[str, ...] = ()) -> tuple[float, dict]:
    from .probe import _heavy
    if probe.sparse and _heavy(probe, device):      # probed as its dense run (see probe.HEAVY_MACS): once for both
        probe = dataclasses.replace(probe, sparse=False)
    key = (probe, track)
    if key not in timings:
        timings[key] = epoch_costs(probe, device, track)
    return timings[key]


def _run_seconds(cfg: RunConfig, members: int, batched: bool, device: torch.device, timings: dict) -> float:
    """Planned seconds of ``cfg`` in a group of ``members`` (its share of the group's time), its trackers included:
    each tracker what one measurement costs, at its rate. A run alone is probed once with all its trackers; a
    batched group without them, its trackers then timed on one member."""
    sizes = data_sizes(cfg.data)
    track = tuple(with_every_epoch(spec) for spec in cfg.track)     # a probe measures at every epoch
    alone = probe_of(cfg, 1, batched, sizes)
    base, per = _costs(alone, device, timings, track)
    if members > 1:
        base = _costs(probe_of(cfg, members, batched, sizes), device, timings)[0] / members
    steps = -(-sizes[1] // cfg.train.batch_size)
    epoch = base + sum(per[with_every_epoch(spec)] * tracker_rate(spec, steps) * _capped_share(spec, cfg, sizes)
                       for spec in cfg.track)
    return cfg.train.epochs * epoch


def _capped_share(spec: str, cfg: RunConfig, sizes: tuple) -> float:
    """The share of its samples that a tracker capped at N samples (``"fisher_trace~10000@5"``) measures at the run's
    full size: the probe sees fewer than N rows and times them all, which scaled to the whole set is the uncapped
    cost. 1 for a tracker without a cap."""
    from ..tracker_specs import parse_tracker
    t = parse_tracker(spec)
    if t.samples is None:
        return 1.0
    from ..data import subset_sizes
    rows = subset_sizes(sizes[1], sizes[2], cfg.data.noise)[t.subset]
    return min(1.0, t.samples / rows) if rows else 1.0


def plan_runs(configs: list[RunConfig], store=None, *, device: str | torch.device = "auto",
              timings: dict | None = None, done: set | None = None) -> pd.DataFrame:
    """One row per distinct run: kind, network, epochs, whether it is in the store, and the planned seconds to
    train it (0 when stored; a batched run's share of its group). ``timings`` caches the probes across calls;
    ``done`` (a set, updated) holds the runs planned already, by an earlier chapter of a book, which this plan
    counts as trained. Every config first passes the checks that training runs before anything trains
    (:func:`~.recipes.check_runnable`), so that a plan never shows a sweep that training would refuse."""
    from .job import batch_eligible
    from .recipes import chain as _chain
    from .recipes import check_runnable
    from .store import check_store as _check_store
    from .sweep import _groups
    from ..train import resolve_device
    store = _check_store(store, "plan_runs")
    device = resolve_device(device)
    for c in dict.fromkeys(configs):
        check_runnable(c)
    timings = {} if timings is None else timings
    done = set() if done is None else done
    runs = list(dict.fromkeys(a for c in configs for a in _chain(c)))
    stored = {c: store.is_current(c) for c in runs}       # a run of another code epoch trains again
    todo = [c for c in runs if not stored[c] and c not in done]
    seconds: dict[RunConfig, float] = {}
    for wave in _waves(todo, lambda c: stored.get(c) or c in done):
        for group in _groups(wave):
            if len(group) > 1:
                for c in group:
                    seconds[c] = _run_seconds(c, len(group), True, device, timings)
        for c in wave:
            if c not in seconds:
                seconds[c] = _run_seconds(c, 1, batch_eligible(c), device, timings)
    earlier = set(done)
    done |= set(todo)
    rows = []
    for cfg in runs:
        shape, n_train, n_test = data_sizes(cfg.data)
        rows.append({"run": cfg.run_id, "kind": cfg.kind, "model": cfg.model.label, "dataset": cfg.data.name,
                     "train samples": n_train, "epochs": cfg.train.epochs, "in store": stored[cfg],
                     "planned earlier": cfg in earlier and not stored[cfg], "seconds": seconds.get(cfg, 0.0)})
    return pd.DataFrame(rows)


@dataclasses.dataclass
class BookPlan:
    """A book's plan: what each notebook trains and measures, and what starting a notebook costs."""
    runs: pd.DataFrame            # one row per run and notebook (:func:`plan_runs`, with its notebook)
    measurements: pd.DataFrame    # one row per measurement and notebook (:func:`.measure_plan.plan_measurements`)
    startup: dict[str, float]     # notebook -> seconds of its start: kernel, imports, dataset (its prelude)

    def chapters(self) -> pd.DataFrame:
        """Planned seconds per notebook: ``train`` (its runs not stored or planned earlier, evaluation and
        trackers included), ``measure`` (its own measurements), ``startup`` and their ``total``."""
        def by_notebook(table):
            todo = table[~(table["in store"] | table["planned earlier"])]
            return todo.groupby("notebook", sort=False).seconds.sum()
        names = list(dict.fromkeys(self.runs.notebook))
        out = pd.DataFrame({"notebook": names})
        out["train"] = out.notebook.map(by_notebook(self.runs)).fillna(0.0)
        out["measure"] = out.notebook.map(by_notebook(self.measurements)).fillna(0.0)
        out["startup"] = out.notebook.map(self.startup).fillna(0.0)
        out["total"] = out.train + out.measure + out.startup
        return out


def summarize(runs: pd.DataFrame) -> dict:
    todo = runs[~(runs["in store"] | runs.get("planned earlier", False))]
    return {"runs": len(runs), "in store": int(runs["in store"].sum()), "to train": len(todo),
            "epochs to train": int(todo.epochs.sum()), "hours (estimate)": round(todo.seconds.sum() / 3600, 2)}


def format_hours(hours: float) -> str:
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h" if hours >= 1 else f"{math.ceil(hours * 60)} min"


def plan_notebook(module: str, values: dict, *, device: str | torch.device | None = None) -> pd.DataFrame:
    """:func:`plan_runs` of one chapter: its study module's ``planned_runs(values)`` against the store that
    ``values`` names (its ``runs_dir``), timed on ``values``' device unless ``device`` is given."""
    import importlib

    from .store import RunStore
    study = importlib.import_module(module)
    device = device if device is not None else values.get("device", "auto")
    return plan_runs(study.planned_runs(values), RunStore(values.get("runs_dir")), device=device)


def show_plan(module: str, values: dict) -> pd.DataFrame:
    """Display a chapter's plan (a notebook run with ``plan_only=True``): the totals, then one row per kind of
    run and network. Returns the per-run table."""
    import importlib

    from IPython.display import HTML, display

    from .measure_plan import plan_measurements
    from .store import RunStore
    runs = plan_notebook(module, values)
    s = summarize(runs)
    planned = getattr(importlib.import_module(module), "planned_measurements", lambda _: [])(values)
    device = values.get("device", "auto")
    measures = plan_measurements(planned, RunStore(values.get("runs_dir")), device=device)
    todo = measures[~measures["in store"]]
    by = (runs.assign(to_train=~runs["in store"], train_epochs=runs.epochs.where(~runs["in store"], 0))
          .groupby(["kind", "model", "dataset"], sort=False)
          .agg(runs=("run", "size"), stored=("in store", "sum"), to_train=("to_train", "sum"),
               epochs=("train_epochs", "sum"), seconds=("seconds", "sum")).reset_index())
    by["time (estimate)"] = [format_hours(x / 3600) for x in by.pop("seconds")]
    by = by.rename(columns={"to_train": "to train", "epochs": "epochs to train"})
    hours = s["hours (estimate)"] + todo.seconds.sum() / 3600
    display(HTML(f"<p><b>Plan</b>: {s['runs']} runs, {s['in store']} in the store, {s['to train']} to train "
                 f"({s['epochs to train']} epochs), and {len(todo)} measurements to take, about "
                 f"{format_hours(hours)} on {_device_name(values)} (training with its evaluation and trackers, "
                 f"and the measurements, timed here).</p>" + by.to_html(index=False)))
    return runs


def _device_name(values: dict) -> str:
    from ..train import resolve_device
    return str(resolve_device(values.get("device", "auto")))


def skip_remaining_cells(message: str) -> bool:
    """Make IPython run every later cell of this kernel as an empty one (papermill then executes the notebook to
    its end without running anything); False outside IPython, where there are no cells to skip."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    if _blank not in shell.input_transformers_post:
        shell.input_transformers_post.append(_blank)
    print(message)
    return True


def _blank(lines: list[str]) -> list[str]:
    return []
