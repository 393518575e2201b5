"""The kernels a book build starts: the environment each inherits, and what a notebook costs before its first run.

Every chapter starts the same way (its *prelude*): a kernel starts, the parameters are injected, the study module
and the plotting library are imported, the dataset is loaded and the figures are set up (the cell with
``%matplotlib inline`` ends it). Only then does it train or load runs. :func:`start_seconds` times that prelude for
real, with papermill as the build runs it, so that a plan (:func:`sparsegap.bookbuild.plan_book`) counts it per
chapter rather than guessing it: on this machine it is 3 to 7 s of a chapter's 6 to 15 s of work that is neither
training nor measuring (a warm rebuild's wall time); the rest, after the runs (loading them, figures, verdicts),
the plan does not count.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator, Mapping

KERNEL = "python3"
# The line that ends a notebook's prelude: its figures are set up, its runs come next.
PRELUDE_END = re.compile(r"^%matplotlib inline\s*$", re.MULTILINE)

__all__ = ["KERNEL", "PRELUDE_END", "kernel_env", "prelude", "start_seconds"]


@contextlib.contextmanager
def kernel_env(runs_dir: Path | None, workers: int = 1) -> Iterator[None]:
    """Environment inherited by the kernels papermill starts, restored afterwards."""
    saved = dict(os.environ)
    try:
        if runs_dir is not None:
            os.environ["SPARSEGAP_RUNS_DIR"] = str(Path(runs_dir).resolve())
        # One torch thread in every kernel (and in the workers an executor starts from it, which inherit the
        # environment), fixed before torch starts there, whatever -j is: a thread count can change the order
        # of a reduction, and a build's runs and verdicts must not depend on -j. With one kernel per core (the
        # default) that costs nothing; a -j1 build gives up the second thread of its largest steps (README,
        # "Threads"). The policy inside a kernel still learns how many kernels share the cores (executor "auto").
        from .runs.threads import THREADS_ENV, WORKERS_ENV, thread_env
        os.environ[WORKERS_ENV] = str(workers)
        os.environ.update(thread_env(1))
        os.environ[THREADS_ENV] = "1"
        # tqdm.auto would turn every training loop into progress-bar widgets stored in the page.
        os.environ.setdefault("SPARSEGAP_PROGRESS", "0")
        # `make` exports Agg for scripts; kernels should pick their inline backend as in Jupyter.
        os.environ.pop("MPLBACKEND", None)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def prelude(notebook: Path):
    """The notebook (an ``nbformat`` node) cut after its prelude: every cell up to and including the first code cell
    with a ``%matplotlib inline`` line. A ValueError names a notebook that has none."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and PRELUDE_END.search(cell.source):
            nb.cells = nb.cells[: i + 1]
            return nb
    raise ValueError(f"notebook {Path(notebook).name} has no code cell with a '%matplotlib inline' line, which ends "
                     f"a chapter's prelude (what it does before its runs); add it to the cell that sets up the figures")


def start_seconds(notebook: Path, parameters: Mapping | None = None, workers: int = 1) -> float:
    """Wall seconds of ``notebook``'s prelude run as a build of ``workers`` notebooks at a time runs it (papermill, a
    new kernel in the build's environment, ``parameters`` injected), downloads refused and an empty run store, so
    timing it fetches and trains nothing. A prelude that fails (a dataset that is not on disk) is a warning and
    counts the seconds up to its failure; a kernel that does not start is a warning and 0 s (the build itself
    retries it)."""
    import nbformat
    import papermill

    notebook = Path(notebook)
    parameters = dict(parameters or {})
    if "download" in papermill.inspect_notebook(str(notebook)):
        parameters["download"] = False
    with tempfile.TemporaryDirectory(prefix="sparsegap-prelude-") as tmp:
        source, output = Path(tmp) / notebook.name, Path(tmp) / f"executed-{notebook.name}"
        nbformat.write(prelude(notebook), str(source))
        with kernel_env(Path(tmp) / "runs", workers=workers):
            start = time.perf_counter()
            try:
                papermill.execute_notebook(str(source), str(output), parameters=parameters or None,
                                           kernel_name=KERNEL, cwd=str(notebook.parent), progress_bar=False)
            except papermill.PapermillExecutionError as err:
                seconds = time.perf_counter() - start
                warnings.warn(f"the prelude of {notebook.stem} stopped at its cell {err.cell_index} "
                              f"({err.ename}: {err.evalue}); the plan counts the {seconds:.1f} s up to there",
                              stacklevel=2)
                return seconds
            except Exception as err:  # noqa: BLE001 (a kernel that dies or cannot bind its ports)
                warnings.warn(f"the plan could not start a {KERNEL!r} kernel to time {notebook.stem}'s start "
                              f"({type(err).__name__}: {err}); it counts 0 s for it", stacklevel=2)
                return 0.0
            return time.perf_counter() - start
