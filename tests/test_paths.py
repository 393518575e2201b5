"""Default paths (sparsegap.paths): environment variables first, then the checkout, then the user cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sparsegap import bookbuild, paths, robustness
from sparsegap.data import data_root
from sparsegap.runs import RunStore, default_root

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(paths.RUNS_ENV, raising=False)
    monkeypatch.delenv(paths.DATA_ENV, raising=False)


def test_the_environment_variables_come_first(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.RUNS_ENV, str(tmp_path / "runs"))
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / "data"))
    assert paths.runs_dir() == default_root() == RunStore().root == tmp_path / "runs"
    assert paths.data_dir() == data_root() == tmp_path / "data"
    monkeypatch.setenv(paths.RUNS_ENV, "~/somewhere/runs")
    assert paths.runs_dir() == Path.home() / "somewhere" / "runs"


def test_an_empty_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv(paths.RUNS_ENV, "")
    monkeypatch.setenv(paths.DATA_ENV, "")
    assert paths.runs_dir() == REPO_ROOT / "data" / "runs"
    assert paths.data_dir() == REPO_ROOT / "data"


def test_in_the_checkout_the_defaults_are_its_folders(no_env):
    # What the Makefile, the book and the tests rely on: unchanged by sparsegap.paths.
    assert paths.checkout_root() == REPO_ROOT
    assert default_root() == RunStore().root == REPO_ROOT / "data" / "runs"
    assert data_root() == REPO_ROOT / "data"
    assert paths.notebooks_dir() == REPO_ROOT / "notebooks"
    assert paths.params_dir() == REPO_ROOT / "notebooks" / "params"
    assert paths.book_dir() == REPO_ROOT / "book"
    assert paths.book_sources() == REPO_ROOT / "book"
    assert bookbuild.find_notebooks(None) == bookbuild.find_notebooks(REPO_ROOT / "notebooks")
    assert robustness.DEFAULT_RUNS_DIR == REPO_ROOT / "data" / "runs-robustness"
    assert robustness.DEFAULT_OUT == REPO_ROOT / "data" / "robustness"
    assert robustness.DEFAULT_REFERENCE == REPO_ROOT / "book" / "notebooks"
    assert robustness.BOOK_RUNS_DIR == REPO_ROOT / "data" / "runs"


def test_a_checkout_is_recognised_by_its_layout(tmp_path):
    package = tmp_path / "repo" / "pkg" / "sparsegap"
    package.mkdir(parents=True)
    assert paths.checkout_root(package) is None            # no notebooks/ or book/ beside pkg/
    (tmp_path / "repo" / "notebooks").mkdir()
    assert paths.checkout_root(package) is None            # book/ still missing
    (tmp_path / "repo" / "book").mkdir()
    assert paths.checkout_root(package) == (tmp_path / "repo").resolve()
    # a site-packages layout: the folder above the package is not pkg/
    site = tmp_path / "lib" / "site-packages" / "sparsegap"
    site.mkdir(parents=True)
    (tmp_path / "lib" / "notebooks").mkdir()
    (tmp_path / "lib" / "book").mkdir()
    assert paths.checkout_root(site) is None


def test_the_packaged_notebooks_are_the_checkouts():
    # In the checkout the package data is a symlink to notebooks/, the one source a wheel copies.
    assert paths.PACKAGED_NOTEBOOKS.is_symlink()
    assert paths.PACKAGED_NOTEBOOKS.resolve() == (REPO_ROOT / "notebooks").resolve()
    for name in ("_config.yml", "references.bib", "_static/sparsegap.css"):
        shipped = paths.PACKAGE_DIR / "_book" / name
        assert shipped.is_symlink() and shipped.resolve() == (REPO_ROOT / "book" / name).resolve(), name


SNIPPET = """
import json, platformdirs, sparsegap.paths as p
out = {"root": p.checkout_root(), "runs": p.runs_dir(), "data": p.data_dir(), "book": p.book_dir(),
       "sources": p.book_sources(), "cache": platformdirs.user_cache_dir("sparsegap", appauthor=False)}
try:
    out["notebooks"] = p.notebooks_dir()
except FileNotFoundError as err:
    out["notebooks"] = "error: " + str(err)
print(json.dumps({k: None if v is None else str(v) for k, v in out.items()}))
"""


def _outside_a_checkout(tmp_path: Path, extra_env: dict | None = None) -> dict:
    """sparsegap.paths imported from a site-packages-like folder, with no checkout around it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", paths.RUNS_ENV, paths.DATA_ENV)}
    env |= {"PYTHONPATH": str(tmp_path / "site-packages"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env |= extra_env or {}
    done = subprocess.run([sys.executable, "-c", SNIPPET], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def site_packages(tmp_path):
    package = tmp_path / "site-packages" / "sparsegap"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    shutil.copy(Path(paths.__file__), package / "paths.py")
    return package


def test_outside_a_checkout_the_user_cache_holds_what_sparsegap_writes(tmp_path, site_packages):
    found = _outside_a_checkout(tmp_path)
    cache = Path(found["cache"])
    assert found["root"] is None
    if sys.platform.startswith("linux"):    # platformdirs follows XDG_CACHE_HOME there
        assert cache == tmp_path / "cache" / "sparsegap"
    assert Path(found["runs"]) == cache / "runs"
    assert Path(found["data"]) == cache / "data"
    assert Path(found["book"]) == cache / "book"
    assert Path(found["sources"]) == site_packages / "_book"
    assert found["notebooks"].startswith("error: ") and "_notebooks" in found["notebooks"]
    (site_packages / "_notebooks").mkdir()      # what a wheel ships
    assert Path(_outside_a_checkout(tmp_path)["notebooks"]) == site_packages / "_notebooks"


def test_outside_a_checkout_the_environment_variables_still_win(tmp_path, site_packages):
    found = _outside_a_checkout(tmp_path, {paths.RUNS_ENV: str(tmp_path / "r"), paths.DATA_ENV: str(tmp_path / "d")})
    assert (Path(found["runs"]), Path(found["data"])) == (tmp_path / "r", tmp_path / "d")
