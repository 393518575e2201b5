"""Where sparsegap keeps things when nobody says: the run store, the datasets, the notebooks and the book.

Three places, in this order:

1. ``$SPARSEGAP_RUNS_DIR`` / ``$SPARSEGAP_DATA_DIR``, when set (the run store and the datasets only);
2. the checkout's folders, when the package runs from one (``<checkout>/pkg/sparsegap`` with ``notebooks/`` and
   ``book/`` beside ``pkg/``: an editable install or ``PYTHONPATH=pkg``): ``data/runs``, ``data``, ``notebooks``
   and ``book``, exactly as the Makefile, the book and the tests expect;
3. otherwise (a wheel in site-packages) the platform's user cache (``platformdirs``, e.g.
   ``~/.cache/sparsegap`` on Linux) for what sparsegap writes, and the notebooks and parameter files shipped
   inside the package (``sparsegap/_notebooks``) for what it reads.

Every default is computed when it is asked for, not at import, so that setting an environment variable
later (a test, the book build's kernels) takes effect.
"""

from __future__ import annotations

import os
from pathlib import Path

RUNS_ENV = "SPARSEGAP_RUNS_DIR"
DATA_ENV = "SPARSEGAP_DATA_DIR"
APP_NAME = "sparsegap"
PACKAGE_DIR = Path(__file__).resolve().parent
# The notebooks as package data: in a checkout a symlink to ../../notebooks, in a wheel a copy of them.
PACKAGED_NOTEBOOKS = PACKAGE_DIR / "_notebooks"


def checkout_root(package_dir: Path | None = None) -> Path | None:
    """The checkout the package runs from, or None (an installed wheel).

    A checkout is recognised by its layout, not by ``.git`` (an exported tarball is a checkout too):
    the package sits in ``<root>/pkg/sparsegap`` and ``<root>`` holds ``notebooks/`` and ``book/``."""
    package_dir = Path(package_dir).resolve() if package_dir is not None else PACKAGE_DIR
    pkg = package_dir.parent
    root = pkg.parent
    if pkg.name == "pkg" and (root / "notebooks").is_dir() and (root / "book").is_dir():
        return root
    return None


def user_cache_dir() -> Path:
    """The platform's user cache folder for sparsegap (created on first write, not here)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def _from_env(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def state_dir() -> Path:
    """The folder sparsegap writes into by default: ``<checkout>/data``, else the user cache."""
    root = checkout_root()
    return root / "data" if root is not None else user_cache_dir()


def runs_dir() -> Path:
    """The run store: ``$SPARSEGAP_RUNS_DIR``, else ``<checkout>/data/runs``, else ``<user cache>/runs``."""
    return _from_env(RUNS_ENV) or state_dir() / "runs"


def data_dir() -> Path:
    """The datasets: ``$SPARSEGAP_DATA_DIR``, else ``<checkout>/data``, else ``<user cache>/data``."""
    env = _from_env(DATA_ENV)
    if env is not None:
        return env
    root = checkout_root()
    return root / "data" if root is not None else user_cache_dir() / "data"


def notebooks_dir() -> Path:
    """The chapters' notebooks: ``<checkout>/notebooks``, else the copy shipped in the package."""
    root = checkout_root()
    if root is not None:
        return root / "notebooks"
    if not PACKAGED_NOTEBOOKS.is_dir():
        raise FileNotFoundError(f"sparsegap has no notebooks: {PACKAGED_NOTEBOOKS} is missing (a wheel built "
                                f"without its package data?) and the package does not run from a checkout")
    return PACKAGED_NOTEBOOKS


def params_dir() -> Path:
    """The parameter files of the profiles (``<notebooks>/params/<profile>/<chapter>.yaml``)."""
    return notebooks_dir() / "params"


def book_dir() -> Path:
    """The book: ``<checkout>/book`` (its sources, and where executed notebooks and HTML go), else
    ``<user cache>/book`` (executed notebooks only; the HTML needs the book's sources from a checkout)."""
    root = checkout_root()
    return root / "book" if root is not None else user_cache_dir() / "book"


def book_sources() -> Path:
    """The book's configuration, bibliography and style sheet, which a single chapter's page is rendered with:
    ``<checkout>/book``, else the copies shipped in the package (``sparsegap/_book``: ``_config.yml``,
    ``references.bib``, ``_static/sparsegap.css``)."""
    root = checkout_root()
    return root / "book" if root is not None else PACKAGE_DIR / "_book"
