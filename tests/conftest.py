"""Shared pytest fixtures.

``built_book``: the whole book, built once per session the way ``make book`` builds it, but with
the ``smoke`` profile, a private run store and a private copy of ``book/``, so tests never touch the
checkout's ``book/_build`` or ``data/runs``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Test this checkout's code even where the (shared) venv's editable install points at another clone,
# here and in the notebook kernels the book tests start. `make` sets the same PYTHONPATH.
sys.path.insert(0, str(REPO_ROOT / "pkg"))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "pkg"), os.environ.get("PYTHONPATH")]))


@dataclass(frozen=True)
class BuiltBook:
    book_dir: Path                 # the private copy of book/
    html_dir: Path                 # <book_dir>/_build/html
    notebooks: dict[str, Path]     # notebook name -> executed copy under <book_dir>/notebooks
    runs_dir: Path                 # the run store the kernels used
    seconds: dict[str, float]      # per notebook, plus "(html)"


@pytest.fixture(scope="session")
def built_book(tmp_path_factory: pytest.TempPathFactory) -> BuiltBook:
    from sparsegap import bookbuild

    root = tmp_path_factory.mktemp("built-book")
    book = root / "book"
    # Sources only (plus the vendored widget scripts, if fetched): no stale build, no old notebooks.
    shutil.copytree(REPO_ROOT / "book", book,
                    ignore=shutil.ignore_patterns("_build", "notebooks", "._widgets.*"))
    # A no-op when the copied overlay is current; otherwise it (re)makes it from the npm cache.
    subprocess.run(["bash", str(book / "_scripts" / "fetch_widget_js.sh"), str(book)], check=True)

    # jobs=None: one kernel per core, as `make book` does, so the shared runs of 01 and 03 meet in the
    # run store's locks.
    runs = bookbuild.execute_notebooks("smoke", book, REPO_ROOT / "notebooks",
                                       runs_dir=root / "runs", log=lambda _: None, jobs=None)
    start = time.perf_counter()
    html = bookbuild.build_html(book)
    seconds = {r.name: r.seconds for r in runs} | {"(html)": time.perf_counter() - start}
    return BuiltBook(book, html, {r.name: r.output for r in runs}, root / "runs", seconds)


@pytest.fixture
def float64():
    """float64 for tight comparisons (the estimator tests), restored afterwards so other tests are unaffected."""
    import torch
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
