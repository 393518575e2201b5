"""The cost of a sweep before it starts: which runs, how many are in the store, how many epochs, how long.

``python -m sparsegap.bookbuild --profile paper --plan`` prints :func:`plan_book`. Each chapter's study module
lists its runs (``planned_runs(params)``); nothing is trained and no dataset is loaded or downloaded. The time
is an estimate: for every distinct network (architecture, input shape, classes, batch, precision, memory
format) a few real SGD steps are timed on the current device, at a small probe batch scaled up linearly to the
run's batch, and each epoch is costed as its training steps plus one forward pass over the training and test
sets. It is rough both ways: trackers (Tr(F) during training, gradient SNR, ...) and the chapters' own
measurements are not counted, while small networks, which the book trains in batches of up to 16, cost far
less than their single-network probe says (the cpu profile: 1.9 h planned, about 30 min of CPU time spent).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pandas as pd
import torch

from ..config import DataConfig, RunConfig
from ..data import NUM_CLASSES
# SPLITS: the datasets' known sizes, reached as plan.SPLITS too
from ..datasets import SPLITS, split_sizes  # noqa: F401

PROBE_BATCH = 16
PROBE_STEPS = 2


def data_sizes(data: DataConfig) -> tuple[tuple[int, ...], int, int]:
    """(input shape, training samples, test samples) that ``data`` trains and evaluates on, from the datasets'
    known sizes (:data:`SPLITS`): a plan loads nothing. Subset sizes beyond the dataset's are refused, as
    loading the data would refuse them."""
    return split_sizes(data.name, data.train_size, data.test_size, data.validation)


@dataclass(frozen=True)
class _Net:
    model: object
    shape: tuple[int, ...]
    classes: int
    precision: str
    channels_last: bool


def _step_seconds(net: _Net, device: torch.device) -> float:
    """Seconds of one SGD step per sample, timed on ``device`` at :data:`PROBE_BATCH`."""
    from ..models import build_model
    m = net.model
    model = build_model(m.name, num_classes=net.classes, input_shape=net.shape, width=m.width, hidden=m.hidden,
                        init=m.init, seed=0).to(device)
    x = torch.randn(PROBE_BATCH, *net.shape, device=device)
    y = torch.randint(0, net.classes, (PROBE_BATCH,), device=device)
    if net.channels_last and x.dim() == 4:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(net.precision)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    step()                                     # warm-up (allocations, kernel selection)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(PROBE_STEPS):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / PROBE_STEPS / PROBE_BATCH


def plan_runs(configs: list[RunConfig], store=None, *, device: str | torch.device = "auto",
              timings: dict | None = None) -> pd.DataFrame:
    """One row per distinct run: kind, network, epochs, whether it is in the store, and the estimated seconds to
    train it (0 when stored). ``timings`` caches the per-network probe across calls. Every config first passes
    the checks that training runs before anything trains (:func:`~.recipes.check_runnable`), so that a plan
    never shows a sweep that training would refuse."""
    from .recipes import chain as _chain
    from .recipes import check_runnable
    from .store import check_store as _check_store
    from ..train import resolve_device
    store = _check_store(store, "plan_runs")
    device = resolve_device(device)
    for c in dict.fromkeys(configs):
        check_runnable(c)
    timings = {} if timings is None else timings
    rows = []
    for cfg in dict.fromkeys(a for c in configs for a in _chain(c)):
        shape, n_train, n_test = data_sizes(cfg.data)
        t = cfg.train
        net = _Net(cfg.model, shape, NUM_CLASSES[cfg.data.name], t.precision, t.channels_last)
        if net not in timings:
            timings[net] = _step_seconds(net, device)
        per_sample = timings[net]
        epoch = per_sample * (n_train + (n_train + n_test) / 3)   # the steps, then a forward pass over both sets
        done = store.is_current(cfg)          # a run of another code epoch trains again
        rows.append({"run": cfg.run_id, "kind": cfg.kind, "model": cfg.model.label, "dataset": cfg.data.name,
                     "train samples": n_train, "epochs": t.epochs, "in store": done,
                     "seconds": 0.0 if done else t.epochs * epoch})
    return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame) -> dict:
    todo = runs[~runs["in store"]]
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
    from IPython.display import HTML, display
    runs = plan_notebook(module, values)
    s = summarize(runs)
    by = (runs.assign(to_train=~runs["in store"], train_epochs=runs.epochs.where(~runs["in store"], 0))
          .groupby(["kind", "model", "dataset"], sort=False)
          .agg(runs=("run", "size"), stored=("in store", "sum"), to_train=("to_train", "sum"),
               epochs=("train_epochs", "sum"), seconds=("seconds", "sum")).reset_index())
    by["time (estimate)"] = [format_hours(x / 3600) for x in by.pop("seconds")]
    by = by.rename(columns={"to_train": "to train", "epochs": "epochs to train"})
    display(HTML(f"<p><b>Plan</b>: {s['runs']} runs, {s['in store']} in the store, {s['to train']} to train "
                 f"({s['epochs to train']} epochs), about {format_hours(s['hours (estimate)'])} on "
                 f"{_device_name(values)} (SGD steps timed here; trackers and measurements not counted).</p>"
                 + by.to_html(index=False)))
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
