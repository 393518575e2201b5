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


def test_curvature_chapter_reuses_the_two_regimes_runs():
    """03 measures the networks of 01: their shared defaults must agree, or 03 would train new runs."""
    a = parameters(ROOT / "notebooks" / "01_two_regimes.ipynb")
    b = parameters(ROOT / "notebooks" / "03_curvature.ipynb")
    shared = ["dataset", "train_size", "test_size", "model", "width", "seeds", "epochs", "batch_size", "lr",
              "momentum", "weight_decay", "milestones", "gamma", "exclude_output", "fisher_every"]
    for name in shared:
        assert a[name] == b[name], f"{name}: 01 has {a[name]!r}, 03 has {b[name]!r}"
    assert set(b["sparsities"]) <= set(a["sparsities"])


def test_curvature_parameter_files_match_the_two_regimes_ones():
    import yaml
    for profile in ("smoke", "paper"):
        a = yaml.safe_load((ROOT / "notebooks" / "params" / profile / "01_two_regimes.yaml").read_text())
        b = yaml.safe_load((ROOT / "notebooks" / "params" / profile / "03_curvature.yaml").read_text())
        for name in set(a) & set(b) - {"sparsities"}:
            assert a[name] == b[name], f"{profile}: {name} differs between 01 and 03"
        assert set(b["sparsities"]) <= set(a["sparsities"]), profile


def test_redense_chapter_reuses_the_double_descent_chain():
    """06 studies one chain of 05: the chain's parameters must agree (defaults and every parameter file),
    or 06 would train a chain of its own."""
    import yaml
    from sparsegap.studies.double_descent import CHAIN_PARAMETERS
    a = parameters(ROOT / "notebooks" / "05_sparse_double_descent.ipynb")
    b = parameters(ROOT / "notebooks" / "06_redense_and_landscape.ipynb")
    for name in CHAIN_PARAMETERS:
        assert a[name] == b[name], f"{name}: 05 has {a[name]!r}, 06 has {b[name]!r}"
    assert b["noise"] in a["noises"]
    for profile in ("smoke", "paper"):
        fa = yaml.safe_load((ROOT / "notebooks" / "params" / profile / "05_sparse_double_descent.yaml").read_text())
        fb = yaml.safe_load((ROOT / "notebooks" / "params" / profile / "06_redense_and_landscape.yaml").read_text())
        for name in CHAIN_PARAMETERS:
            assert fa.get(name, a[name]) == fb.get(name, b[name]), f"{profile}: {name} differs between 05 and 06"
        assert fb.get("noise", b["noise"]) in fa.get("noises", a["noises"]), profile


def test_gradient_flow_chapter_reuses_the_difficulty_runs():
    """08 reads 07's P-S, L-S and S-S: their run parameters must agree (defaults and parameter files)."""
    import yaml
    from sparsegap.studies.difficulty import RUN_PARAMETERS
    a = parameters(ROOT / "notebooks" / "07_difficulty_of_sparse_training.ipynb")
    b = parameters(ROOT / "notebooks" / "08_gradient_flow.ipynb")
    for name in RUN_PARAMETERS:
        assert a[name] == b[name], f"{name}: 07 has {a[name]!r}, 08 has {b[name]!r}"
    assert set(b["sparsities"]) <= set(a["sparsities"])
    for profile in ("smoke", "paper"):
        fa = yaml.safe_load((ROOT / "notebooks" / "params" / profile / "07_difficulty_of_sparse_training.yaml").read_text())
        fb = yaml.safe_load((ROOT / "notebooks" / "params" / profile / "08_gradient_flow.yaml").read_text())
        for name in RUN_PARAMETERS:
            assert fa.get(name, a[name]) == fb.get(name, b[name]), f"{profile}: {name} differs between 07 and 08"
        assert set(fb.get("sparsities", b["sparsities"])) <= set(fa.get("sparsities", a["sparsities"])), profile


def test_paths_chapter_reuses_the_two_regimes_runs():
    """10 reads 01's Sol-F and Sol-S at one of its sparsities: the run parameters must agree."""
    import yaml
    a = parameters(ROOT / "notebooks" / "01_two_regimes.ipynb")
    b = parameters(ROOT / "notebooks" / "10_paths_and_cosines.ipynb")
    shared = ["dataset", "train_size", "test_size", "model", "width", "seeds", "epochs", "batch_size", "lr",
              "momentum", "weight_decay", "milestones", "gamma", "exclude_output", "fisher_every"]
    for name in shared:
        assert a[name] == b[name], f"{name}: 01 has {a[name]!r}, 10 has {b[name]!r}"
    assert b["sparsity"] in a["sparsities"]
    fa = yaml.safe_load((ROOT / "notebooks" / "params" / "paper" / "01_two_regimes.yaml").read_text())
    fb = yaml.safe_load((ROOT / "notebooks" / "params" / "paper" / "10_paths_and_cosines.yaml").read_text())
    for name in set(fa) & set(fb):
        assert fa[name] == fb[name], f"paper: {name} differs between 01 and 10"
    assert fb["sparsity"] in fa["sparsities"]


def test_energy_chapter_reuses_the_difficulty_runs():
    """11 reads 07's P-S, L-S and S-S at one of its sparsities: the run parameters must agree."""
    import yaml
    from sparsegap.studies.difficulty import RUN_PARAMETERS
    a = parameters(ROOT / "notebooks" / "07_difficulty_of_sparse_training.ipynb")
    b = parameters(ROOT / "notebooks" / "11_energy_landscape.ipynb")
    for name in RUN_PARAMETERS:
        assert a[name] == b[name], f"{name}: 07 has {a[name]!r}, 11 has {b[name]!r}"
    assert b["sparsity"] in a["sparsities"]
    for profile in ("smoke", "paper"):
        fa = yaml.safe_load((ROOT / "notebooks" / "params" / profile / "07_difficulty_of_sparse_training.yaml").read_text())
        fb = yaml.safe_load((ROOT / "notebooks" / "params" / profile / "11_energy_landscape.yaml").read_text())
        for name in RUN_PARAMETERS:
            assert fa.get(name, a[name]) == fb.get(name, b[name]), f"{profile}: {name} differs between 07 and 11"
