"""Static checks of the source notebooks (their execution is tested in test_book.py)."""

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def parameters(path: Path) -> dict:
    nb = json.loads(path.read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    tree = ast.parse("".join(cells[0]["source"]))
    return {t.targets[0].id: ast.literal_eval(t.value) for t in tree.body if isinstance(t, ast.Assign)}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_parameterized(path):
    nb = json.loads(path.read_text())
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), "commit notebooks without outputs"
    params = parameters(path)
    assert params.get("device") == "auto" and "runs_dir" in params
    for profile in ("smoke", "paper"):
        f = ROOT / "notebooks" / "params" / profile / f"{path.stem}.yaml"
        assert f.exists(), f"missing {f.relative_to(ROOT)}"


def _profiles(a_stem: str, b_stem: str):
    """(profile, values of a, values of b) for the defaults and every parameter file: a file's value,
    else the notebook's default."""
    import yaml
    a, b = parameters(ROOT / "notebooks" / f"{a_stem}.ipynb"), parameters(ROOT / "notebooks" / f"{b_stem}.ipynb")
    yield "defaults", a, b
    for profile in ("smoke", "paper"):
        fa = yaml.safe_load((ROOT / "notebooks" / "params" / profile / f"{a_stem}.yaml").read_text())
        fb = yaml.safe_load((ROOT / "notebooks" / "params" / profile / f"{b_stem}.yaml").read_text())
        yield profile, a | fa, b | fb


@pytest.mark.parametrize("a_stem, b_stem, names, inside", [
    # 03 measures 01's networks, at some of its sparsities; 10 follows 01's Sol-S and Sol-F at one of them
    ("01_two_regimes", "03_curvature", "two_regimes.RUN_PARAMETERS", ("sparsities", "sparsities")),
    ("01_two_regimes", "05_paths_and_cosines", "two_regimes.RUN_PARAMETERS", ("sparsity", "sparsities")),
    # 12 reads 01's regimes from its runs and reuses its Sol-S and Sol-F
    ("01_two_regimes", "12_remedies", "two_regimes.RUN_PARAMETERS", ("sparsities", "sparsities")),
    # 06 studies one chain of 05, at one of its noise levels
    ("07_sparse_double_descent", "08_redense_and_landscape", "double_descent.CHAIN_PARAMETERS", ("noise", "noises")),
    # 08 and 11 read 07's P-S, L-S and S-S at some of its sparsities
    ("09_difficulty_of_sparse_training", "10_gradient_flow", "difficulty.RUN_PARAMETERS", ("sparsities", "sparsities")),
    ("09_difficulty_of_sparse_training", "11_energy_landscape", "difficulty.RUN_PARAMETERS", ("sparsity", "sparsities")),
])
def test_chapters_that_read_another_chapters_runs_share_its_parameters(a_stem, b_stem, names, inside):
    """Otherwise the reading chapter would train runs of its own (defaults and every parameter file)."""
    import importlib
    module, attr = names.split(".")
    shared = getattr(importlib.import_module(f"sparsegap.studies.{module}"), attr)
    for profile, a, b in _profiles(a_stem, b_stem):
        for name in set(shared) - set(inside):
            assert a[name] == b[name], f"{profile}: {name} differs between {a_stem} and {b_stem}"
        mine, theirs = b[inside[0]], a[inside[1]]
        assert set(mine if isinstance(mine, list) else [mine]) <= set(theirs), profile


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_paper_parameter_files_pass_each_notebooks_checks(path):
    """The paper profile parses: its file over the notebook's defaults passes the chapter's PARAMETERS (types,
    ranges, names), and asks for downloads. (Running it needs a GPU and the datasets.)"""
    import json

    import yaml

    from sparsegap import data as D
    from sparsegap.studies import chapter_module
    cell = next(c for c in json.loads(path.read_text())["cells"]
                if "parameters" in c.get("metadata", {}).get("tags", []))
    namespace: dict = {}
    exec("".join(cell["source"]), namespace)
    namespace.pop("__builtins__")
    namespace.update(yaml.safe_load((ROOT / "notebooks" / "params" / "paper" / f"{path.stem}.yaml").read_text()))
    spec = chapter_module(path.stem).PARAMETERS
    try:
        values = spec.check(namespace, show=False)
        assert values["download"] is True and D.downloads_allowed()
    finally:
        D.allow_downloads(False)


def _code(path: Path) -> str:
    return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")


def test_every_notebook_has_a_study_module_with_planned_runs():
    """The chapter -> study-module map (sparsegap.studies.CHAPTERS, which the plan and the robustness check use):
    every notebook has an entry, every entry imports and plans its runs, and is the module the notebook checks
    its parameters with (and whose planned_runs its plan_only shows)."""
    import importlib

    from sparsegap.studies import CHAPTERS, chapter_module
    assert sorted(CHAPTERS) == [p.stem for p in NOTEBOOKS]
    for stem, name in CHAPTERS.items():
        module = importlib.import_module(name)
        assert callable(getattr(module, "planned_runs", None)), f"{name} has no planned_runs"
        assert module.PARAMETERS.notebook == stem and module.PARAMETERS.module == name
        package, short = name.rsplit(".", 1)
        assert f"from {package} import {short} as study" in _code(ROOT / "notebooks" / f"{stem}.ipynb")
        assert chapter_module(stem + ".ipynb") is module
    with pytest.raises(ValueError, match="notebook='99_nothing' has no study module"):
        chapter_module("99_nothing")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_leave_the_run_configs_to_their_study_module(path):
    """A notebook passes its parameters to its study module, which builds the runs (as the plan does): it
    spells no config, tracker or sweep of its own."""
    code = _code(path)
    for spelled in ("RunConfig(", "TrainConfig(", "two_regime_configs(", "run_all(", "run_two_regimes(",
                    "fisher_trace@", "track="):
        assert spelled not in code, f"{path.stem} builds its runs by hand: {spelled!r}"
