"""The package keeps its shape: import layers without upward arrows or cycles (import-linter, with the contracts
in pkg/pyproject.toml), modules small enough to read in one sitting, and one recipe per run kind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "pkg"
MAX_LINES = 600


def lint_imports(package_parent: Path, config: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    env = os.environ | {"PYTHONPATH": str(package_parent)}
    return subprocess.run([str(exe), str(config), "--no-cache"], cwd=package_parent, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
    """Layers from the book machinery down to the foundations, no cycle at any depth, and no measurement that
    imports the run store (pkg/pyproject.toml, [tool.importlinter])."""
    done = lint_imports(PKG, PKG / "pyproject.toml")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout


@pytest.mark.parametrize("planted, contract", [
    ("from sparsegap.runs import RunStore  # planted", "layers"),        # a foundation reaching up
    ("from sparsegap import config as _c  # planted", "cycle"),          # checks <- config <- checks
])
def test_the_contracts_catch_a_planted_import(tmp_path, planted, contract):
    """The check can fail: the same contracts on a copy of the package with one planted import are broken."""
    shutil.copytree(PKG / "sparsegap", tmp_path / "sparsegap", ignore=shutil.ignore_patterns("__pycache__"))
    checks = tmp_path / "sparsegap" / "checks.py"
    checks.write_text(checks.read_text() + f"\n{planted}\n")
    done = lint_imports(tmp_path, PKG / "pyproject.toml")
    assert done.returncode != 0 and "BROKEN" in done.stdout
    if contract == "cycle":
        assert "No cycles are allowed in sparsegap" in done.stdout


def test_no_module_is_longer_than_one_sitting():
    long = {str(p.relative_to(PKG)): n for p in sorted((PKG / "sparsegap").rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them along a seam): {long}"


def test_every_run_kind_has_one_recipe():
    """Adding a kind of run is its vocabulary in config and one recipe: the two must name the same kinds, and the
    recipes that change a mask while training are exactly the kinds config calls mask updaters."""
    from sparsegap.config import RUN_KINDS, UPDATER_KINDS
    from sparsegap.runs import RECIPES
    assert tuple(RECIPES) == RUN_KINDS
    assert {k for k, r in RECIPES.items() if r.updater is not None} == set(UPDATER_KINDS)
    assert [k for k, r in RECIPES.items() if r.curve] == ["curve"]


def test_every_module_has_a_layer():
    """A new module must take its place in the layers, or the contract would not see it."""
    import pkgutil
    import tomllib

    import sparsegap
    contracts = tomllib.loads((PKG / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["id"] == "layers")["layers"]
    listed = {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}
    modules = {m.name for m in pkgutil.iter_modules(sparsegap.__path__)}
    assert modules - listed == set(), f"modules in no layer of pkg/pyproject.toml: {sorted(modules - listed)}"
    assert listed - modules == set(), f"layers name modules that do not exist: {sorted(listed - modules)}"
