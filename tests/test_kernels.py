"""A notebook's start, as a plan counts it: its prelude (kernel, parameters, imports, dataset) run and timed for real."""

from __future__ import annotations

import warnings
from pathlib import Path

import nbformat
import pytest

from sparsegap import bookbuild, kernels
from sparsegap.runs import measure_plan as mp
from sparsegap.runs import plan as plan_module

ROOT = Path(__file__).resolve().parents[1]
# the calls that train or load runs: none belongs in a prelude, which a plan runs to time a chapter's start
TRAINING_CALLS = ("store=", "run_all(", "run_configs(", "get_or_train(")


def _notebook(path: Path, *sources: str, parameters: str = "wait = 0.0\ndownload = True") -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# a chapter"), cell] + [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": kernels.KERNEL, "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


@pytest.mark.parametrize("notebook", sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_every_chapters_prelude_ends_where_its_figures_are_set_up_and_trains_nothing(notebook):
    cells = kernels.prelude(ROOT / "notebooks" / f"{notebook}.ipynb").cells
    code = [c for c in cells if c.cell_type == "code"]
    assert kernels.PRELUDE_END.search(code[-1].source)
    assert any("parameters" in c.metadata.get("tags", []) for c in code)
    assert not [c.source.split("\n")[0] for c in code if any(call in c.source for call in TRAINING_CALLS)]
    full = nbformat.read(str(ROOT / "notebooks" / f"{notebook}.ipynb"), as_version=4).cells
    assert any(call in c.source for c in full[len(cells):] for call in TRAINING_CALLS)   # the runs come after it


def test_a_notebook_without_the_end_of_a_prelude_is_refused_by_name(tmp_path):
    nb = _notebook(tmp_path / "99_no_figures.ipynb", "import math")
    with pytest.raises(ValueError, match=r"99_no_figures\.ipynb has no code cell with a '%matplotlib inline' line"):
        kernels.prelude(nb)


def test_a_prelude_is_timed_in_a_real_kernel_with_its_parameters_and_downloads_refused(tmp_path):
    nb = _notebook(tmp_path / "98_chapter.ipynb",
                   "import time\nassert download is False, 'a plan must not download'\ntime.sleep(wait)",
                   "%matplotlib inline",
                   "raise RuntimeError('the runs: after the prelude, never run by the plan')")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)      # no cell failed: not the parameters', not the last one
        seconds = kernels.start_seconds(nb, {"wait": 1.5})
    assert 1.5 < seconds < 120


def test_a_prelude_that_fails_warns_and_counts_its_seconds_up_to_there(tmp_path):
    nb = _notebook(tmp_path / "97_no_data.ipynb", "raise FileNotFoundError('no CIFAR-100 here')", "%matplotlib inline")
    with pytest.warns(UserWarning, match=r"the prelude of 97_no_data stopped at its cell .*no CIFAR-100 here"):
        seconds = kernels.start_seconds(nb)
    assert 0 < seconds < 120


def test_a_kernel_that_does_not_start_costs_the_plan_a_warning_not_its_end(tmp_path, monkeypatch):
    nb = _notebook(tmp_path / "96_chapter.ipynb", "%matplotlib inline")
    monkeypatch.setattr(kernels, "KERNEL", "no-such-kernel-for-sparsegap")
    with pytest.warns(UserWarning, match="could not start a 'no-such-kernel-for-sparsegap' kernel"):
        assert kernels.start_seconds(nb) == 0.0


def test_the_book_plan_times_each_chapters_own_start_in_the_builds_environment(monkeypatch, tmp_path):
    """plan_book(startup=None) runs each notebook's prelude with its profile's parameters and counts it in that
    chapter alone; the preludes and the probes see what a build of ``jobs`` notebooks gives its kernels (one torch
    thread, $SPARSEGAP_WORKERS the notebooks at once), and the planner's own environment is restored after."""
    import os

    from sparsegap.runs.threads import THREADS_ENV, WORKERS_ENV
    seen, probed = {}, set()
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    monkeypatch.delenv(THREADS_ENV, raising=False)

    def timed(notebook, parameters=None, workers=1):
        seen[Path(notebook).stem] = (dict(parameters or {}), workers)
        return 10.0 + len(seen)

    def costs(probe, device, track=()):
        probed.add((os.environ.get(WORKERS_ENV), os.environ.get(THREADS_ENV)))
        return 0.0, {k: 0.0 for k in track}
    monkeypatch.setattr(kernels, "start_seconds", timed)
    monkeypatch.setattr(plan_module, "epoch_costs", costs)
    monkeypatch.setattr(mp, "pass_cost", lambda cfg, kind, timings=None, device="cpu": (0.0, 0.0))
    only = ["02_fisher_trajectory", "05_paths_and_cosines"]
    plan = bookbuild.plan_book("smoke", ROOT / "notebooks", only, runs_dir=tmp_path, device="cpu",
                               log=lambda s: None, jobs=2, oversubscribe=True)
    assert plan.startup == {"02_fisher_trajectory": 11.0, "05_paths_and_cosines": 12.0}
    params = bookbuild.load_parameters(ROOT / "notebooks" / "05_paths_and_cosines.ipynb", "smoke")
    assert seen["05_paths_and_cosines"] == (params, 2)
    assert probed == {("2", "1")}
    assert WORKERS_ENV not in os.environ and THREADS_ENV not in os.environ
    chapters = plan.chapters().set_index("notebook")
    assert chapters.startup.to_dict() == plan.startup
    assert (chapters.total == chapters.train + chapters.measure + chapters.startup).all()
