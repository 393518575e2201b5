"""The plan of a sweep (sparsegap.runs.plan, bookbuild --plan): what each notebook trains, counted before it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparsegap import bookbuild
from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.runs.plan import data_sizes, plan_runs, summarize
from sparsegap.runs import RunStore, run_all
from sparsegap.runs.recipes import chain as _chain

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def test_every_notebooks_planned_runs_are_the_runs_it_trains(built_book, monkeypatch):
    """At smoke scale, after the book is built: every run a notebook's plan lists is in the store the notebooks
    filled, and the plans count exactly the runs there. Chapter 12 picks its sparsities and settings while it
    runs, so its plan has stand-ins for them: there only chapter 1's runs are checked by name, and its total by
    count (the stand-ins cost the same number of runs). Chapter 8's re-dense rounds are its chain's characteristic
    ones: a plan made after the build reads them from the store the notebooks filled."""
    monkeypatch.setenv("SPARSEGAP_RUNS_DIR", str(built_book.runs_dir))
    store = RunStore(built_book.runs_dir)
    planned = set()
    for nb in bookbuild.find_notebooks(ROOT / "notebooks"):
        module, values = bookbuild.notebook_parameters(nb, "smoke")
        runs = module.planned_runs(values)
        if nb.stem == "12_remedies":
            from sparsegap.studies.two_regimes import planned_runs as chapter_one
            checked = chapter_one(values)
        else:
            checked = runs
        missing = [c.run_id for c in checked if not store.is_done(c)]
        assert not missing, f"{nb.stem}: planned but not trained: {missing[:5]}"
        planned |= {a.run_id for c in runs for a in _chain(c)}   # with the parents they need
    stored = [p for p in Path(built_book.runs_dir).iterdir() if (p / "DONE").exists()]
    assert len(stored) == len(planned)


def test_the_plan_counts_stored_runs_and_epochs(tmp_path):
    data, model = DataConfig("digits", train_size=100, test_size=50), ModelConfig("mlp", hidden=(8,))
    t = TrainConfig(epochs=3, batch_size=16, lr=0.05, schedule="constant")
    dense = RunConfig("dense", data, model, t, seed=0)
    child = RunConfig("scratch", data, model, t, seed=0, sparsity=0.5, parent=dense)
    store = RunStore(tmp_path)
    before = plan_runs([child], store, device="cpu")
    assert list(before.kind) == ["dense", "scratch"]          # the parent is planned too
    assert summarize(before) | {"hours (estimate)": 0} == {"runs": 2, "in store": 0, "to train": 2,
                                                          "epochs to train": 6, "hours (estimate)": 0}
    assert (before.seconds > 0).all()
    run_all([dense], store, progress=False)
    after = summarize(plan_runs([child], store, device="cpu"))
    assert (after["in store"], after["to train"], after["epochs to train"]) == (1, 1, 3)


def test_data_sizes_need_no_dataset():
    assert data_sizes(DataConfig("cifar100")) == ((3, 32, 32), 50000, 10000)
    assert data_sizes(DataConfig("cifar10", train_size=4000, validation=500)) == ((3, 32, 32), 3500, 500)
    assert data_sizes(DataConfig("fashion-mnist", train_size=4000, test_size=1000)) == ((1, 28, 28), 4000, 1000)


@pytest.mark.parametrize("name", ["digits", "mnist1d", "tishby", "mnist-5k", "fashion-mnist"])
def test_the_plans_split_sizes_are_what_the_loaders_give(name):
    """plan.SPLITS writes the sizes down so that a plan loads nothing; for every dataset this machine has
    offline they must be what load_dataset returns (the CIFARs and MNIST are the official sizes)."""
    from sparsegap.data import load_dataset
    from sparsegap.runs.plan import SPLITS
    try:
        d = load_dataset(name)
    except FileNotFoundError as e:
        pytest.skip(f"{name} is not on this machine: {e}")
    assert SPLITS[name] == (tuple(d.x_train.shape[1:]), len(d.x_train), len(d.x_test))


def test_the_paper_plan_parses_every_notebook_and_trains_nothing(tmp_path, capsys, monkeypatch):
    """What the paper profile plans, not how long it takes: a ResNet-32 x4 probed on the CPU takes minutes, so the
    probe is a stand-in here (tests/bench/bench_plan.py checks the times against a build)."""
    import sparsegap.runs.plan as plan_module
    monkeypatch.setattr(plan_module, "epoch_costs", lambda probe, device, track=(): (60.0, {k: 1.0 for k in track}))
    plan = bookbuild.plan_book("paper", ROOT / "notebooks", ["01_two_regimes", "06_gradient_snr"],
                               runs_dir=tmp_path, device="cpu", startup=5.0)
    runs = plan.runs
    out = capsys.readouterr().out
    assert "01_two_regimes" in out and "06_gradient_snr" in out and "days" in out
    assert not any(tmp_path.iterdir())                       # nothing trained, nothing written
    r01 = runs[runs.notebook == "01_two_regimes"]
    assert len(r01) == 3 * (1 + 9 * 2) and set(r01.model) == {"resnet32 x4"} and set(r01.epochs) == {250}


def test_plan_on_the_command_line(tmp_path, capsys):
    assert bookbuild.main(["--plan", "--only", "06_gradient_snr", "--runs-dir", str(tmp_path), "--device", "cpu"]) == 0
    assert "plan made in" in capsys.readouterr().out


def test_plan_only_shows_the_plan_and_skips_every_later_cell(tmp_path):
    import nbformat
    import papermill

    out = tmp_path / "out.ipynb"
    params = bookbuild.load_parameters(NOTEBOOKS / "01_two_regimes.ipynb", "smoke")
    papermill.execute_notebook(str(NOTEBOOKS / "01_two_regimes.ipynb"), str(out), kernel_name=bookbuild.KERNEL,
                               parameters=params | {"plan_only": True, "runs_dir": str(tmp_path / "runs")},
                               cwd=str(NOTEBOOKS), progress_bar=False)
    cells = [c for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"]
    check = next(i for i, c in enumerate(cells) if "PARAMETERS.check" in c.source)
    shown = "".join(o.get("text", "") + str(o.get("data", {}).get("text/html", "")) for o in cells[check].outputs)
    module, values = bookbuild.notebook_parameters(NOTEBOOKS / "01_two_regimes.ipynb", "smoke")
    n = len(dict.fromkeys(a for c in module.planned_runs(values) for a in _chain(c)))
    assert f"{n} runs, 0 in the store, {n} to train" in shown and "plan_only=True" in shown
    assert "0 measurements to take" in shown                        # chapter 1 measures nothing after training
    assert all(not c.outputs for c in cells[check + 1:])           # every later cell ran as an empty one
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/DONE"))
