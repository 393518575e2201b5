"""Build the book: execute every notebook with papermill, then render the HTML with Jupyter Book.

    python -m sparsegap.bookbuild --profile cpu            # what `make book` runs
    python -m sparsegap.bookbuild --profile smoke --runs-dir /tmp/runs --only 01_two_regimes

A profile picks the notebooks' parameters: ``cpu`` runs each notebook with its own defaults (the
``parameters`` cell *is* the cpu profile), ``smoke`` and ``paper`` inject
``notebooks/params/<profile>/<name>.yaml``. Executed copies go to ``<book>/notebooks/<name>.ipynb``;
the book is configured with ``execute_notebooks: off``, so Sphinx only renders what papermill wrote.
Notebooks run with the notebooks folder as working directory, as they do when opened in Jupyter.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import yaml

from . import booktoc, kernels, paths
from .kernels import KERNEL, kernel_env

# Kept for code that imports it; the defaults now come from sparsegap.paths (the checkout, else the user cache).
REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("cpu", "smoke", "paper")
# Written by book/_scripts/fetch_widget_js.sh; without it widget pages would reach for a CDN.
WIDGET_SENTINEL = Path("_widgets") / "_widgets" / "embed-amd.js"


class NotebookFailed(RuntimeError):
    """A notebook raised during execution; the message carries papermill's error."""


@dataclass(frozen=True)
class NotebookRun:
    name: str
    seconds: float
    output: Path


def find_notebooks(notebooks_dir: Path | None, only: Sequence[str] | None = None) -> list[Path]:
    """The notebooks to run, sorted by name; ``only`` selects some by name (with or without .ipynb).
    ``notebooks_dir`` None: :func:`sparsegap.paths.notebooks_dir`."""
    notebooks_dir = Path(paths.notebooks_dir() if notebooks_dir is None else notebooks_dir)
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"notebooks_dir={str(notebooks_dir)!r} is not a directory")
    available = {p.stem: p for p in sorted(notebooks_dir.glob("*.ipynb"))}
    if not only:
        return list(available.values())
    names = [n.removesuffix(".ipynb") for n in only]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"only={unknown!r}: no such notebook in {notebooks_dir}; "
                         f"allowed: {sorted(available)}")
    return [available[n] for n in dict.fromkeys(names)]


def load_parameters(notebook: Path, profile: str) -> dict:
    """Papermill parameters of ``notebook`` for ``profile``; unknown keys are an error, not a no-op."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is not one of {PROFILES}")
    if profile == "cpu":
        return {}
    path = notebook.parent / "params" / profile / f"{notebook.stem}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"profile {profile!r} needs the parameter file {path}, "
                                f"which does not exist (one YAML mapping per notebook)")
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path} must hold a YAML mapping of parameter names to values, "
                         f"got {type(params).__name__}")
    # A misspelt key would otherwise silently run the cpu default, which can take an hour.
    _check_declared(notebook, params, str(path))
    return params


def _check_declared(notebook: Path, params: Mapping, source: str) -> None:
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(f"{source}: unknown parameters {unknown}; "
                         f"the notebook's parameters cell declares {sorted(declared)}")


def execute_notebook(notebook: Path, book_dir: Path, parameters: dict, profile: str) -> NotebookRun:
    """Run one notebook into ``<book>/notebooks/``; the file appears only once execution succeeded."""
    import papermill

    book_dir = Path(book_dir)
    final = book_dir / "notebooks" / notebook.name
    partial = book_dir / "_build" / "partial" / notebook.name
    failed = book_dir / "_build" / "failed" / notebook.name
    final.parent.mkdir(parents=True, exist_ok=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        for attempt in range(KERNEL_START_ATTEMPTS):
            try:
                papermill.execute_notebook(str(notebook), str(partial), parameters=parameters or None,
                                           kernel_name=KERNEL, cwd=str(notebook.parent),
                                           progress_bar=False)
                break
            except Exception as err:
                if not _kernel_did_not_start(err) or attempt == KERNEL_START_ATTEMPTS - 1:
                    raise
                # Kernels started at the same moment by parallel builds can draw the same free TCP port
                # (jupyter_client picks ports before binding them): the kernel dies before it answers.
                # Nothing of the notebook ran, so starting it again is safe.
                print(f"  {notebook.stem}: the kernel did not start ({err}); starting it again", file=sys.stderr,
                      flush=True)
                time.sleep(1.0 + random.random() * 2)
    except Exception as err:  # PapermillExecutionError, or a kernel that would not start
        # Keep the half-run notebook for debugging, but outside the pages Sphinx renders.
        failed.parent.mkdir(parents=True, exist_ok=True)
        if partial.exists():
            os.replace(partial, failed)
            where = f" (partial output: {failed})"
        else:
            where = ""
        raise NotebookFailed(f"notebook {notebook.stem} failed with profile {profile!r}{where}:\n"
                             f"{type(err).__name__}: {err}") from err
    _hide_injected_parameters(partial)
    os.replace(partial, final)
    return NotebookRun(notebook.stem, time.perf_counter() - start, final)


KERNEL_START_ATTEMPTS = 3


def _kernel_did_not_start(err: Exception) -> bool:
    """A kernel that died or could not bind its ports before running any cell (not a notebook error)."""
    import papermill
    if isinstance(err, papermill.PapermillExecutionError):
        return False
    text = f"{type(err).__name__}: {err}"
    return any(s in text for s in ("Kernel died before replying to kernel_info", "Address already in use",
                                   "Kernel didn't respond"))


def _hide_injected_parameters(path: Path) -> None:
    """Hide papermill's injected-parameters cell: the parameter table of the next cell shows its values."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "remove-input" not in tags:
            tags.append("remove-input")
    nbformat.write(nb, path)


def execute_notebooks(profile: str = "cpu", book_dir: Path | None = None, notebooks_dir: Path | None = None,
                      only: Sequence[str] | None = None, runs_dir: Path | None = None,
                      log: Callable[[str], None] | None = None, jobs: int | None = 1,
                      oversubscribe: bool = False, executor: str | None = None,
                      overrides: Mapping[str, Mapping[str, object]] | None = None) -> list[NotebookRun]:
    """Execute the notebooks with ``profile``, ``jobs`` at a time (None: one per core), each in its own kernel.

    Notebooks that need the same runs do not wait for each other by any fixed order: the run store's
    per-run locks make one kernel train a run while the other waits for it and then loads it. With
    any number of jobs every kernel gets one torch thread (see :mod:`sparsegap.runs.threads`), so that the runs and
    verdicts do not depend on ``jobs`` or ``executor``. ``executor`` (a keyword
    of :mod:`sparsegap.runs.executors`) overrides every notebook's ``executor`` parameter; ``overrides`` maps a notebook's
    name (its stem) to parameters set over the profile's (e.g. the paper profile at 1 epoch). On a failure the
    notebooks not yet started are cancelled, the running ones finish, and the first failure is raised.
    ``book_dir`` and ``notebooks_dir`` default to :func:`sparsegap.paths.book_dir` and :func:`~sparsegap.paths.notebooks_dir`.
    """
    from .runs.threads import check_workers

    book_dir = paths.book_dir() if book_dir is None else book_dir
    jobs = check_workers(jobs, oversubscribe=oversubscribe)
    log = log or functools.partial(print, flush=True)  # one line per notebook as it happens, also in a log file
    notebooks = find_notebooks(notebooks_dir, only)
    # Read every parameter file before running anything: a typo should not cost a long run first.
    params = {nb.stem: load_parameters(nb, profile) for nb in notebooks}
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            raise TypeError(f"overrides must map notebook names to parameter dicts, got {type(overrides).__name__}")
        unknown = sorted(set(overrides) - set(params))
        if unknown:
            raise ValueError(f"overrides={unknown}: no such notebook among those executed; allowed: {sorted(params)}")
        for nb in notebooks:
            extra = overrides.get(nb.stem, {})
            if not isinstance(extra, Mapping):
                raise TypeError(f"overrides[{nb.stem!r}] must be a dict of parameters, got {type(extra).__name__}")
            _check_declared(nb, extra, f"overrides[{nb.stem!r}]")
            params[nb.stem] = params[nb.stem] | dict(extra)
    if executor is not None:       # one keyword for every notebook (their `executor` parameter)
        from .runs.executors import parse_executor
        parse_executor(executor)
        params = {stem: p | {"executor": executor} for stem, p in params.items()}
    jobs = min(jobs, len(notebooks)) or 1
    with kernel_env(runs_dir, workers=jobs):
        if jobs == 1:
            runs = []
            for nb in notebooks:
                log(f"executing {nb.name} ({profile} profile) ...")
                run = execute_notebook(nb, book_dir, params[nb.stem], profile)
                log(f"  {run.name}: {run.seconds:.1f} s")
                runs.append(run)
            return runs
        return _execute_parallel(notebooks, params, Path(book_dir), profile, jobs, log)


def _execute_parallel(notebooks: list[Path], params: dict, book_dir: Path, profile: str, jobs: int,
                      log: Callable[[str], None]) -> list[NotebookRun]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    log(f"executing {len(notebooks)} notebooks ({profile} profile), {jobs} at a time: "
        f"{', '.join(nb.stem for nb in notebooks)}")
    start = time.perf_counter()
    # spawn, not fork: a forked child inherits torch's thread pool in whatever state it is in.
    context = multiprocessing.get_context("spawn")
    gpus = visible_gpus()
    # Several GPUs: each worker (so each notebook's kernel, and the workers it starts) gets one of its own,
    # round robin, instead of every kernel training on cuda:0.
    queue = context.Queue() if len(gpus) > 1 else None
    for i in range(jobs if queue is not None else 0):
        queue.put(gpus[i % len(gpus)])
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_start_worker, initargs=(queue,))
    previous = _stop_on_sigterm() if threading.current_thread() is threading.main_thread() else None
    try:
        futures = {pool.submit(_execute_in_worker, nb, book_dir, params[nb.stem], profile): nb for nb in notebooks}
        pending, failure = set(futures), None
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                nb = futures[future]
                if future.cancelled():        # not started: an earlier failure cancelled it
                    continue
                if future.exception() is None:
                    run = future.result()
                    log(f"  {run.name}: {run.seconds:.1f} s  (done after {time.perf_counter() - start:.0f} s)")
                else:
                    log(f"  {nb.stem}: FAILED")
                    failure = failure or future.exception()
            if failure is not None:
                for future in pending:
                    future.cancel()
        if failure is not None:
            raise failure
    except (KeyboardInterrupt, SystemExit):
        # Stopped (Ctrl-C, or SIGTERM turned into SystemExit): stop the workers too, or they would go on
        # executing the queue; each one shuts down its kernel on the way out (SIGTERM, 30 s to do it).
        from .runs.executors import stop_workers
        stop_workers(pool, grace=30.0)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return [f.result() for f in futures]  # in notebook order


def _execute_in_worker(notebook: Path, book_dir: Path, parameters: dict, profile: str) -> NotebookRun:
    """:func:`execute_notebook` in a pool worker that exits once stopped: papermill has shut its kernel
    down by the time SystemExit gets here, and the worker must not go on to the next queued notebook."""
    try:
        return execute_notebook(notebook, book_dir, parameters, profile)
    except SystemExit as stop:
        os._exit(stop.code if isinstance(stop.code, int) else 1)


def visible_gpus() -> list[str]:
    """The CUDA devices this process sees, as ``CUDA_VISIBLE_DEVICES`` entries; [] without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return (listed or [str(i) for i in range(count)])[:count]


def default_jobs() -> int | None:
    """Notebooks at once when ``-j`` is not given: one per visible GPU (at most one per core) when CUDA is
    present, else None (one per core)."""
    from .runs.threads import cores

    gpus = visible_gpus()
    return min(len(gpus), cores()) if gpus else None


def _start_worker(gpus=None) -> None:
    """A build worker: SIGTERM stops it cleanly, and with several GPUs it takes one of its own."""
    import queue

    _stop_on_sigterm()
    with contextlib.suppress(queue.Empty):
        if gpus is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpus.get(timeout=5)


def _stop_on_sigterm():
    """SIGTERM raises SystemExit, so that ``finally`` blocks run: papermill shuts down its kernel, the build
    stops its workers. Installed in the build's main process and in every worker; returns the old handler."""
    return signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def notebook_parameters(notebook: Path, profile: str, extra: Mapping | None = None) -> tuple[object, dict]:
    """(the chapter's study module, its checked parameters) for ``profile``: the parameters cell's defaults with
    the profile's file and then ``extra`` over them, checked by the chapter's ``PARAMETERS`` without starting
    anything. The module is the notebook's entry in :data:`sparsegap.studies.CHAPTERS`."""
    import json

    from .studies import chapter_module

    module = chapter_module(Path(notebook).stem)
    cells = json.loads(Path(notebook).read_text())["cells"]
    source = "".join(next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))["source"])
    namespace: dict = {}
    exec(source, namespace)        # the notebook's own defaults: plain assignments of literals
    namespace.pop("__builtins__", None)
    namespace.update(load_parameters(Path(notebook), profile))
    namespace.update(extra or {})
    return module, module.PARAMETERS.check(namespace, show=False, activate=False)


def plan_book(profile: str = "cpu", notebooks_dir: Path | None = None, only: Sequence[str] | None = None,
              runs_dir: Path | None = None, device: str = "auto", log: Callable[[str], None] = print,
              startup: float | None = None, jobs: int | None = None, oversubscribe: bool = False):
    """Print what each notebook would train and measure under ``profile``, with an estimate of its time
    (:mod:`sparsegap.runs.plan`, :mod:`sparsegap.runs.measure_plan`); returns the :class:`~.runs.plan.BookPlan`.
    Trains nothing and downloads nothing. A chapter's time is its training, its own measurements and its start
    (``startup`` seconds for every notebook; None: each notebook's prelude is run and timed here, its kernel, imports
    and dataset, :func:`sparsegap.kernels.start_seconds`).

    Planned in the environment a build of ``jobs`` notebooks at a time gives its kernels (None: the build's
    default, :func:`default_jobs`): one torch thread each, and ``$SPARSEGAP_WORKERS`` the notebooks at once, which
    the probes' thread policy and an ``executor="auto"`` read as the kernels do."""
    from .runs.threads import check_workers

    notebooks = find_notebooks(notebooks_dir, only)
    jobs = min(check_workers(default_jobs() if jobs is None else jobs, oversubscribe=oversubscribe),
               len(notebooks)) or 1
    with kernel_env(runs_dir, workers=jobs):
        return _plan_book(profile, notebooks, runs_dir, device, log, startup, jobs)


def _plan_book(profile: str, notebooks: list[Path], runs_dir: Path | None, device: str,
               log: Callable[[str], None], startup: float | None, jobs: int):
    import pandas as pd

    from .runs import RunStore
    from .runs.measure_plan import measurement_device, plan_measurements
    from .runs.plan import BookPlan, format_hours, plan_runs, summarize
    from .train import resolve_device
    timings: dict = {}
    done: set = set()        # runs an earlier notebook trains: a cold build trains each once, in notebook order
    measured: set = set()    # ... and measurements an earlier notebook takes
    runs, measurements = [], []
    timed = startup is None
    starts = {nb.stem: kernels.start_seconds(nb, load_parameters(nb, profile), workers=jobs) if timed
              else float(startup) for nb in notebooks}
    log(f"plan for the {profile} profile, built {jobs} notebook{'s' * (jobs > 1)} at a time (epochs of each network "
        f"timed on {resolve_device(device)}, with evaluation, trackers, checkpoints and batching; the chapters' "
        f"measurements on {measurement_device(device)}; "
        + (f"each notebook's start timed: its kernel, imports and data, {min(starts.values()):.0f} to "
           f"{max(starts.values()):.0f} s)" if timed else f"{float(startup):.0f} s to start each notebook)"))
    log(f"{'notebook':<36}{'runs':>6}{'stored':>8}{'to train':>10}{'epochs':>9}{'measure':>9}{'time':>12}")
    for nb in notebooks:
        module, values = notebook_parameters(nb, profile)
        values = values | ({"runs_dir": str(runs_dir)} if runs_dir else {})
        store = RunStore(values.get("runs_dir"))
        table = plan_runs(module.planned_runs(values), store, device=device, timings=timings,
                          done=done).assign(notebook=nb.stem)
        planned = getattr(module, "planned_measurements", lambda _: [])(values)
        mtable = plan_measurements(planned, store, device=device, timings=timings,
                                   done=measured).assign(notebook=nb.stem)
        runs.append(table)
        measurements.append(mtable)
        s = summarize(table)
        hours = s["hours (estimate)"] + (mtable.seconds.sum() + starts[nb.stem]) / 3600
        todo = int((~(mtable["in store"] | mtable["planned earlier"])).sum())
        log(f"{nb.stem:<36}{s['runs']:>6}{s['in store']:>8}{s['to train']:>10}{s['epochs to train']:>9}"
            f"{todo:>9}{format_hours(hours):>12}")
    plan = BookPlan(pd.concat(runs, ignore_index=True), pd.concat(measurements, ignore_index=True), starts)
    total = summarize(plan.runs.drop_duplicates("run"))
    chapters = plan.chapters()
    todo = int((~(plan.measurements["in store"] | plan.measurements["planned earlier"])).sum())
    log(f"{'all (runs shared between notebooks once)':<36}{total['runs']:>6}{total['in store']:>8}"
        f"{total['to train']:>10}{total['epochs to train']:>9}{todo:>9}"
        f"{format_hours(chapters.total.sum() / 3600):>12}")
    return plan


def build_html(book_dir: Path | None = None, strict: bool = True,
               repository_url: str | None = None) -> Path:
    """Render the book with Jupyter Book 1.x; returns the HTML folder. Warnings fail when ``strict``.

    The ledger page and the introduction's results (``_generated/``) are written first, from the
    executed notebooks in ``<book>/notebooks``; chapters not executed there are left out of the toc
    (:mod:`sparsegap.booktoc`). ``repository_url`` replaces ``repository.url`` of ``_config.yml`` (the
    repository, issues and source buttons point there) without editing the file.
    """
    book_dir = Path(paths.book_dir() if book_dir is None else book_dir)
    if not (book_dir / "_config.yml").is_file():
        raise FileNotFoundError(f"book_dir={str(book_dir)!r} has no _config.yml: the HTML needs the book's "
                                f"sources, which are in a checkout of the repository (its book/ folder)")
    if not (book_dir / WIDGET_SENTINEL).is_file():
        raise FileNotFoundError(f"{book_dir / WIDGET_SENTINEL} is missing; run "
                                f"`bash {book_dir}/_scripts/fetch_widget_js.sh {book_dir}` "
                                f"(or `make widgets`) to vendor the widget scripts")
    from .teaser import write_generated
    write_generated(book_dir)
    # Through this interpreter rather than PATH, so the venv's Jupyter Book is the one used.
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
           "build", str(book_dir)]
    toc, left_out = booktoc.partial_toc(book_dir)
    if toc is not None:
        print(f"bookbuild: {len(left_out)} chapter(s) not executed, left out of this build's toc ({toc}): "
              f"{', '.join(p.removeprefix(booktoc.CHAPTER_PREFIX) for p in left_out)}", flush=True)
        cmd += ["--toc", str(toc)]
    if repository_url is not None or toc is not None:
        cmd += ["--config", str(_config_with_repository(book_dir, repository_url,
                                                        suppress=booktoc.PARTIAL_SUPPRESS if toc else ()))]
    if strict:
        cmd += ["-W", "--keep-going"]
    subprocess.run(cmd, check=True)
    return book_dir / "_build" / "html"


def _config_with_repository(book_dir: Path, url: str | None, suppress: Sequence[str] = ()) -> Path:
    """A copy of ``_config.yml`` with ``repository.url`` set (None: kept) and Sphinx's ``suppress_warnings``
    extended by ``suppress``, under ``_build``; the book's pages and files are still found from the book folder."""
    if url is not None and (not isinstance(url, str) or not url.startswith(("https://", "http://"))):
        raise ValueError(f"repository_url must be an http(s) URL such as https://github.com/owner/repo, got {url!r}")
    config = yaml.safe_load((book_dir / "_config.yml").read_text())
    if url is not None:
        config.setdefault("repository", {})["url"] = url.rstrip("/")
    sphinx = config.setdefault("sphinx", {})
    if sphinx.get("local_extensions"):   # resolved against the config file's folder, which for the copy is _build/
        sphinx["local_extensions"] = {name: str((Path(book_dir) / where).resolve())
                                      for name, where in sphinx["local_extensions"].items()}
    if suppress:
        sphinx_config = sphinx.setdefault("config", {})
        sphinx_config["suppress_warnings"] = [*sphinx_config.get("suppress_warnings", []), *suppress]
    path = book_dir / "_build" / "_config.repository.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparsegap.bookbuild", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default="cpu",
                        help="parameter profile: cpu (notebook defaults), smoke (seconds), paper (GPU)")
    parser.add_argument("--book-dir", type=Path, help="the book's folder (default: the checkout's book/, else the "
                        "user cache's; the HTML needs the book's sources)")
    parser.add_argument("--notebooks-dir", type=Path, help="default: the checkout's notebooks/, else the packaged ones")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks")
    parser.add_argument("--no-html", action="store_true", help="execute notebooks, skip the HTML")
    parser.add_argument("--jobs", "-j", type=int, default=None,
                        help="notebooks executed at once (default: one per visible GPU with CUDA, else one per core)")
    parser.add_argument("--oversubscribe", action="store_true", help="allow more jobs than cores")
    parser.add_argument("--runs-dir", type=Path, help="run store for the kernels (SPARSEGAP_RUNS_DIR)")
    parser.add_argument("--plan", action="store_true",
                        help="list each notebook's runs, how many are stored, the epochs and an estimated time; "
                             "train nothing")
    parser.add_argument("--device", default="auto", help="device the --plan estimate times steps on")
    parser.add_argument("--executor", metavar="SPEC",
                        help='where every notebook trains its runs: "local", "processes:N", "auto", "dask", '
                             '"dask:ADDRESS" or "slurm:PATH" (default: each notebook\'s own parameter)')
    parser.add_argument("--no-strict", action="store_true", help="do not turn Sphinx warnings into errors")
    parser.add_argument("--repository-url", metavar="URL",
                        help="repository the book's buttons point to (default: repository.url of _config.yml)")
    args = parser.parse_args(argv)
    args.jobs = default_jobs() if args.jobs is None else args.jobs

    start = time.perf_counter()
    if args.plan:
        try:
            plan_book(args.profile, args.notebooks_dir, args.only, args.runs_dir, args.device, jobs=args.jobs,
                      oversubscribe=args.oversubscribe)
        except (FileNotFoundError, ValueError) as err:
            print(f"bookbuild: {err}", file=sys.stderr)
            return 1
        print(f"(plan made in {time.perf_counter() - start:.1f} s)")
        return 0
    try:
        runs = execute_notebooks(args.profile, args.book_dir, args.notebooks_dir, args.only,
                                 args.runs_dir, jobs=args.jobs, oversubscribe=args.oversubscribe,
                                 executor=args.executor)
    except (NotebookFailed, FileNotFoundError, ValueError) as err:
        print(f"bookbuild: {err}", file=sys.stderr)
        return 1
    html_seconds = None
    if not args.no_html:
        t0 = time.perf_counter()
        try:
            html = build_html(args.book_dir, strict=not args.no_strict, repository_url=args.repository_url)
        except (FileNotFoundError, ValueError) as err:
            print(f"bookbuild: {err}", file=sys.stderr)
            return 1
        except subprocess.CalledProcessError as err:
            print(f"bookbuild: jupyter-book build failed (exit {err.returncode})", file=sys.stderr)
            return 1
        html_seconds = time.perf_counter() - t0

    print("\ntimings")
    for run in runs:
        print(f"  {run.name:<32} {run.seconds:8.1f} s")
    if html_seconds is not None:
        print(f"  {'(html build)':<32} {html_seconds:8.1f} s   -> {html / 'index.html'}")
    print(f"  {'total':<32} {time.perf_counter() - start:8.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
