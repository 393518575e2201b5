"""Notebook parameters, checked in one call right after the ``parameters`` cell.

Papermill injects overrides as a cell of plain assignments, and an unknown name (``-p sparsity``
for ``sparsities``) only draws a warning before the notebook runs on with its defaults. Each
chapter's study module therefore declares a :class:`ParameterSpec`, and the notebook's first cell
after the parameters calls::

    from sparsegap.studies import two_regimes as study
    study.PARAMETERS.check(globals())

which rejects unknown names, wrong types and out-of-range values with a message naming the
parameter, normalises values (papermill passes ``-p seeds "[0, 1]"`` as a string), writes them back
into the notebook's namespace, and shows the resolved parameters as a small table.

The check runs before the notebook imports anything else, so the only non-private names in the
namespace are IPython's own, the parameters, and modules or functions; anything else is a
parameter nobody declared.
"""

from __future__ import annotations

import difflib
import html
import math
import sys
import types
from dataclasses import dataclass
from typing import Any

from .config import COMPILE_MODES

# papermill's forms of a bool besides True and False: -p x true passes the str 'true' (any case), -p x 1 the int 1.
_BOOLS = {"true": True, "false": False, "1": True, "0": False}

# Names IPython puts in every user namespace.
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


@dataclass(frozen=True)
class Param:
    """One parameter: its kind, its allowed values, and a one-line meaning.

    ``kind`` is one of ``int``, ``float``, ``str``, ``bool``, ``ints``, ``floats``, ``strs`` (the
    last three are lists). ``low``/``high`` bound numbers and list items (``high_open`` makes the
    upper bound exclusive), ``choices`` restricts strings, ``none`` allows ``None``, and
    ``min_len`` / ``unique`` constrain lists.
    """

    kind: str
    doc: str = ""
    low: float | None = None
    high: float | None = None
    high_open: bool = False
    choices: tuple[str, ...] | None = None
    none: bool = False
    min_len: int = 1
    unique: bool = False

    def allowed(self) -> str:
        what = {"int": "an int", "float": "a number", "str": "a non-empty string",
                "bool": "True or False (or 'true', 'false', 1, 0, as papermill's -p passes them)",
                "ints": "a list of ints", "floats": "a list of numbers", "strs": "a list of strings"}[self.kind]
        bounds = []
        if self.low is not None:
            bounds.append(f">= {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        if bounds:
            what += (" with items " if self.kind in ("ints", "floats") else " ") + " and ".join(bounds)
        if self.choices:
            what += f" from {list(self.choices)}"
        if self.kind in ("ints", "floats", "strs") and self.unique:
            what += ", without duplicates"
        return what + (", or None" if self.none else "")

    def normalise(self, name: str, value: Any) -> Any:
        def bad(detail: str = "") -> ValueError:
            return ValueError(f"notebook parameter {name}={value!r} is not allowed{detail}: "
                              f"{name} must be {self.allowed()}")

        if value is None:
            if self.none:
                return None
            raise bad()
        if self.kind in ("ints", "floats", "strs"):
            if isinstance(value, str):
                import yaml
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError:
                    raise bad(" (not a list)") from None
                value = value if isinstance(value, list) else [value]
            if not isinstance(value, (list, tuple)):
                raise bad(" (not a list)")
            item = Param(self.kind[:-1], low=self.low, high=self.high, high_open=self.high_open,
                         choices=self.choices)
            items = [item.normalise(f"{name}[{i}]", v) for i, v in enumerate(value)]
            if len(items) < self.min_len:
                raise bad(f" (needs at least {self.min_len} item{'s' if self.min_len > 1 else ''})")
            if self.unique and len(set(items)) != len(items):
                raise bad(" (duplicates)")
            return items
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            # papermill's -p passes "true" as the string 'true' and "1" as the int 1 (only True/False
            # become bools); the README's own `-p plan_only true` must work
            if isinstance(value, str) and value.strip().lower() in _BOOLS:
                return _BOOLS[value.strip().lower()]
            if type(value) is int and value in (0, 1):
                return value == 1
            raise bad()
        if self.kind == "str":
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise bad()
            if not value.strip():    # every string parameter names something: runs_dir "" is no folder
                raise bad(" (empty)")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if self.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise bad()
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise bad()
        if self.low is not None and value < self.low:
            raise bad()
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            raise bad()
        return value


class ParameterSpec:
    """The parameters of one notebook, by name."""

    def __init__(self, notebook: str, *, module: str | None = None, **params: Param):
        self.notebook = notebook
        self.params = params
        # the chapter's study module (its planned_runs serves plan_only): by default the one declaring the spec
        self.module = module or sys._getframe(1).f_globals.get("__name__")

    def names(self) -> list[str]:
        return list(self.params)

    def check(self, namespace: dict, *, show: bool = True, activate: bool = True) -> dict:
        """Validate and normalise the parameters found in ``namespace`` (a notebook's ``globals()``).

        Writes the normalised values back, displays them as a collapsed table when ``show``, and
        returns them as a dict. An ``executor`` parameter's workers are started once and kept for this process
        (:func:`sparsegap.runs.executors.activate`), for the sweeps that name it (the study passes it to
        ``run_all``), a ``download`` parameter whether missing datasets
        may be downloaded (:func:`sparsegap.data.allow_downloads`). ``plan_only=True`` shows the runs the page
        would train and their estimated time (:func:`sparsegap.runs.plan.show_plan`), then has IPython skip every
        later cell of the notebook. ``activate=False`` only checks.
        """
        unknown = sorted(n for n, v in namespace.items()
                         if not n.startswith("_") and n not in _IPYTHON_NAMES and n not in self.params
                         and not isinstance(v, (types.ModuleType, type)) and not callable(v))
        if unknown:
            hints = []
            for n in unknown:
                close = difflib.get_close_matches(n, self.params, n=1)
                hints.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"unknown notebook parameter(s) {', '.join(hints)} for {self.notebook}; "
                             f"its parameters are {sorted(self.params)}")
        missing = [n for n in self.params if n not in namespace]
        if missing:
            raise ValueError(f"{self.notebook}: the parameters cell does not define {missing}")
        values = {n: p.normalise(n, namespace[n]) for n, p in self.params.items()}
        if activate and "download" in values:   # every later data load in this kernel (sparsegap.data.allow_downloads)
            from .data import allow_downloads
            allow_downloads(values["download"])
        if activate and "executor" in values:   # kept for the sweeps that name it (sparsegap.runs.executors.named)
            from .runs.executors import activate
            activate(values["executor"])
        namespace.update(values)
        if show:
            from IPython.display import HTML, display
            display(HTML(self.table_html(values)))
        if activate and values.get("plan_only"):
            from .runs.plan import show_plan, skip_remaining_cells
            show_plan(self.module, values)
            skip_remaining_cells(f"plan_only=True: nothing was trained, and the cells of {self.notebook} below "
                                 f"this one were skipped")
        return values

    def table_html(self, values: dict) -> str:
        rows = "".join(f"<tr><td><code>{html.escape(n)}</code></td><td><code>{html.escape(repr(v))}</code></td>"
                       f"<td>{html.escape(self.params[n].doc)}</td></tr>" for n, v in values.items())
        return (f"<details class='sparsegap-params'><summary>Parameters of this page ({len(values)})</summary>"
                f"<table><thead><tr><th>name</th><th>value</th><th>meaning</th></tr></thead>"
                f"<tbody>{rows}</tbody></table></details>")


# Parameters that recur in many notebooks, with their usual bounds.
def sparsities(doc: str = "fractions of prunable weights removed") -> Param:
    return Param("floats", doc, low=0.0, high=1.0, high_open=True, unique=True)


def seeds(doc: str = "seeds; figures show the mean and spread over seeds") -> Param:
    return Param("ints", doc, unique=True)


def device() -> Param:
    return Param("str", '"auto" (CUDA, then MPS, else the CPU), "cpu", "cuda", "cuda:N" or "mps"')


def executor() -> Param:
    return Param("str", 'where runs train: "local", "processes:N", "auto", "dask", "dask:ADDRESS" or "slurm:PATH" '
                        '(sparsegap.runs.executors)')


def download() -> Param:
    return Param("bool", "True lets missing datasets be downloaded (torchvision); the paper profile sets it")


def plan_only() -> Param:
    return Param("bool", "True: show the runs this page would train and an estimate of their time, then skip "
                         "every later cell (nothing is trained)")


def runs_dir() -> Param:
    return Param("str", "run store folder; None means $SPARSEGAP_RUNS_DIR, else data/runs", none=True)


def environment_parameters() -> dict[str, Param]:
    """executor, download, plan_only, device and runs_dir: where and how a chapter runs, not what it computes."""
    return dict(executor=executor(), download=download(), plan_only=plan_only(), device=device(), runs_dir=runs_dir())


def fraction(doc: str, *, high_open: bool = False) -> Param:
    return Param("float", doc, low=0.0, high=1.0, high_open=high_open)


def data_parameters() -> dict[str, Param]:
    """dataset, train_size, test_size, model and width: the data and network of a chapter's runs."""
    return dict(
        dataset=Param("str", "dataset name, one of sparsegap.data.DATASETS"),
        train_size=Param("int", "class-balanced training subset; None means the full training set", low=1, none=True),
        test_size=Param("int", "test subset; None means the full test set", low=1, none=True),
        model=Param("str", "architecture, one of sparsegap.models.MODELS"),
        width=Param("float", "width factor of the ResNets' channels (the paper's ResNet-32 x4 is 4; 0.25 narrows "
                    "ResNet-18 to a quarter); 1 for the other models", low=1 / 64),
    )


def fast_training_parameters() -> dict[str, Param]:
    """augment, precision, channels_last and compile_mode (TrainConfig.compile; a notebook's ``compile`` would hide
    Python's builtin): TrainConfig's options for large networks (a GPU)."""
    return dict(
        augment=Param("str", '"crop-flip": a random 4-pixel shift and horizontal flip of every training batch',
                      choices=("none", "crop-flip")),
        precision=Param("str", '"bf16" or "fp16": mixed precision (meant for a GPU)', choices=("fp32", "bf16", "fp16")),
        channels_last=Param("bool", "True: channels-last memory format for convolutional models (meant for a GPU)"),
        compile_mode=Param("str", '"reduce-overhead": the steps as one torch.compile\'d function, CUDA graphs on a GPU '
                             '(meant for a GPU; "default" compiles without graphs)', choices=COMPILE_MODES),
    )


def training_parameters(epochs_doc: str = "epochs of every run") -> dict[str, Param]:
    """epochs, batch_size, lr, momentum, weight_decay, milestones and gamma: SGD with multistep decay."""
    return dict(
        epochs=Param("int", epochs_doc, low=1),
        batch_size=Param("int", "minibatch size", low=1),
        lr=Param("float", "initial SGD learning rate", low=0.0),
        momentum=fraction("SGD momentum", high_open=True),
        weight_decay=Param("float", "L2 weight decay", low=0.0),
        milestones=Param("floats", "lr decay points, as fractions of the epochs", low=0.0, high=1.0, min_len=0),
        gamma=fraction("lr decay factor"),
    )
