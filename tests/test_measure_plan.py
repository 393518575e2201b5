"""The plan of the chapters' own measurements (:mod:`sparsegap.runs.measure_plan`): what it counts, and that it
lists exactly what a build measures."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from sparsegap import bookbuild
from sparsegap.runs import RunStore
from sparsegap.runs import measure_plan as mp

ROOT = Path(__file__).resolve().parents[1]


def _planned(notebook: str, profile: str = "smoke", **extra) -> list:
    module, values = bookbuild.notebook_parameters(ROOT / "notebooks" / f"{notebook}.ipynb", profile)
    return module.planned_measurements(values | extra)


@pytest.mark.parametrize("kind, samples, count, match", [
    ("hessian", 10, 1, "kind"), ("forward", -1, 1, "samples"), ("forward", 10, 1.5, "count"),
    ("forward", True, 1, "samples")])
def test_a_bad_pass_is_refused_by_name(kind, samples, count, match):
    with pytest.raises(ValueError, match=match):
        mp.Pass(kind, samples, count)


def test_a_pass_costs_its_count_times_its_size(monkeypatch):
    costs = {"forward": (0.5, 0.01), "hvp": (0.3, 0.03), "hvp-once": (0.2, 0.015)}
    monkeypatch.setattr(mp, "pass_cost", lambda cfg, kind, timings=None, device="cpu": costs[kind])
    cfg = _planned("03_curvature")[0].run
    m = mp.planned(cfg, "x", {}, mp.Pass("forward", 100, 3), mp.Pass("forward", 0, 5))
    assert mp.measurement_seconds(m) == pytest.approx(3 * (0.5 + 0.01 * 100))
    # Hutchinson: one gradient graph, then one Hessian-vector product a probe. Timed with 3 probes (0.3 + 0.03 n)
    # and with 1 (0.2 + 0.015 n): a probe adds (0.05 + 0.0075 n), the graph (0.15 + 0.0075 n) once.
    m = mp.planned(cfg, "x", {}, mp.Pass("hvp", 100, 50))
    assert mp.measurement_seconds(m) == pytest.approx((0.15 + 0.75) + 50 * (0.05 + 0.75))


def test_a_real_pass_is_timed_once_per_network_and_kind():
    cfg = _planned("05_paths_and_cosines")[0].run
    timings: dict = {}
    fixed, per_sample = mp.pass_cost(cfg, "forward", timings)
    assert fixed >= 0 and per_sample > 0 and len(timings) == 1
    assert mp.pass_cost(cfg, "forward", timings) == (fixed, per_sample)      # cached, not timed again


def test_a_kept_measurement_is_found_by_the_parameters_the_plan_knows(tmp_path):
    m = _planned("03_curvature")[0]
    store = RunStore(tmp_path)
    assert not mp.is_stored(m, store)
    folder = tmp_path / m.run.run_id / "measurements"
    folder.mkdir(parents=True)
    params = json.loads(m.params)
    (folder / "curvature-0.json").write_text(json.dumps({"name": "curvature", "params": params | {"n": 1},
                                                         "value": {}}))
    assert not mp.is_stored(m, store)                       # another measurement of that name
    (folder / "curvature-1.json").write_text(json.dumps({"name": "curvature", "params": params | {"x_sum": 2.5},
                                                         "value": {}}))
    assert mp.is_stored(m, store)                           # the plan's parameters, and more it cannot know
    table = mp.plan_measurements([m, m], store)
    assert len(table) == 1 and table["in store"].all() and table.seconds.sum() == 0


def test_a_measurement_is_planned_in_the_first_chapter_that_takes_it(tmp_path, monkeypatch):
    monkeypatch.setattr(mp, "measurement_seconds", lambda m, timings=None, device="cpu": 2.0)
    ms = _planned("03_curvature")
    done: set = set()
    first = mp.plan_measurements(ms, RunStore(tmp_path), done=done)
    again = mp.plan_measurements(ms, RunStore(tmp_path), done=done)
    assert first.seconds.sum() == 2.0 * len(ms) and not first["planned earlier"].any()
    assert again.seconds.sum() == 0 and again["planned earlier"].all()


def test_hutchinson_is_planned_at_its_most_probes_and_the_paths_at_their_points():
    (m, *_) = _planned("03_curvature", max_probes=7)
    assert {p.kind: p.count for p in m.passes} == {"fisher": 1, "hvp": 7, "jacobian": 1}
    paths = [m for m in _planned("05_paths_and_cosines", path_points=9) if m.name == "path_from_init_s"]
    assert paths and all(p.count == 9 for m in paths for p in m.passes if p.kind == "forward")


def test_the_book_plan_counts_each_chapters_measurements_and_start(tmp_path, monkeypatch):
    monkeypatch.setattr(mp, "measurement_seconds", lambda m, timings=None, device="cpu": 1.0)
    import sparsegap.runs.plan as plan_module
    monkeypatch.setattr(plan_module, "epoch_costs", lambda probe, device, track=(): (0.0, {k: 0.0 for k in track}))
    plan = bookbuild.plan_book("smoke", ROOT / "notebooks", ["02_fisher_trajectory", "03_curvature",
                                                             "05_paths_and_cosines"],
                               runs_dir=tmp_path, device="cpu", log=lambda s: None, startup=4.0)
    assert plan.measurements["planned earlier"].dtype == bool == plan.measurements["in store"].dtype
    chapters = plan.chapters().set_index("notebook")
    assert chapters.measure["02_fisher_trajectory"] == 0                 # a chapter that measures nothing
    for nb in ("03_curvature", "05_paths_and_cosines"):
        assert chapters.measure[nb] == len(_planned(nb)) and chapters.startup[nb] == 4.0
        assert chapters.total[nb] == chapters.train[nb] + chapters.measure[nb] + 4.0


def test_every_measurement_a_build_keeps_is_planned(built_book):
    """The plan lists what the notebooks measure: run by run, name by name, parameters included, chapter 12's
    too, whose picks the plan reads from the store once its runs are there."""
    store = RunStore(built_book.runs_dir)
    planned = {}
    for nb in bookbuild.find_notebooks(ROOT / "notebooks"):
        module, values = bookbuild.notebook_parameters(nb, "smoke")
        if hasattr(module, "planned_measurements"):
            planned[nb.stem] = module.planned_measurements(values | {"runs_dir": str(built_book.runs_dir)})
    assert {"03_curvature", "05_paths_and_cosines", "08_redense_and_landscape", "10_gradient_flow",
            "11_energy_landscape", "12_remedies"} <= set(planned)
    kept = collections.Counter()
    for f in built_book.runs_dir.glob("*/measurements/*.json"):
        kept[(f.parent.parent.name, json.loads(f.read_text())["name"])] += 1
    for stem, ms in planned.items():
        assert ms, f"{stem} plans no measurement"
        missing = [(m.run.run_id, m.name, m.params) for m in ms if not mp.is_stored(m, store)]
        assert not missing, f"{stem} plans measurements that its build did not take: {missing[:3]}"
    pairs = {(m.run.run_id, m.name) for ms in planned.values() for m in ms}
    unplanned = [k for k in kept if k not in pairs]
    assert not unplanned, f"measured but not planned: {unplanned[:5]}"


def test_a_chapter_measures_on_cuda_where_it_trains_there_else_on_the_cpu(monkeypatch):
    import torch

    import sparsegap.train as train_module
    assert mp.measurement_device("cpu") == torch.device("cpu")
    for trained_on, measured_on in (("cuda:1", "cuda:1"), ("mps", "cpu"), ("cpu", "cpu")):
        monkeypatch.setattr(train_module, "resolve_device", lambda device, d=trained_on: torch.device(d))
        assert mp.measurement_device("auto") == torch.device(measured_on)



def test_the_paper_plan_of_every_measuring_chapter_loads_no_data(tmp_path, monkeypatch):
    """The paper profile's datasets (CIFAR) are not on a machine that only plans: shapes come from the known
    sizes, never from loading (the first version built each network through the data and failed here)."""
    import sparsegap.data as data_module

    def no_loading(*args, **kwargs):
        raise AssertionError("the plan loaded a dataset")
    monkeypatch.setattr(data_module, "load_dataset", no_loading)
    monkeypatch.setattr(mp, "pass_cost", lambda cfg, kind, timings=None, device="cpu": (0.0, 1e-6))
    for nb in ("03_curvature", "05_paths_and_cosines", "08_redense_and_landscape", "10_gradient_flow",
               "11_energy_landscape", "12_remedies"):
        ms = _planned(nb, "paper", runs_dir=str(tmp_path))
        table = mp.plan_measurements(ms, RunStore(tmp_path))
        assert len(table) == len(set(ms)), nb
        with_passes = [bool(m.passes) for m in dict.fromkeys(ms)]
        assert ((table.seconds > 0) == with_passes).all(), nb     # distances between weights: no pass, 0 s
    resnet = next(m for m in _planned("11_energy_landscape", "paper", runs_dir=str(tmp_path)) if m.name == "path_to_ps")
    assert any(p.kind == "bn" for p in resnet.passes)      # a network with BatchNorm re-estimates along a path
