"""The hidden first cell of every notebook: install sparsegap where it cannot be imported.

A chapter opened from the book's Colab button runs in a fresh runtime without the library; this cell
installs it there (``pip install "sparsegap[book] @ git+<repository>#subdirectory=pkg"``) and does
nothing where ``import sparsegap`` already works (a checkout with ``make``, Binder, papermill in the
book build). ``SPARSEGAP_INSTALL_SPEC`` replaces what pip installs: a wheel, a fork, a branch.

    python book/_scripts/install_cell.py           # add the cell to notebooks/*.ipynb, or bring it up to date
    python book/_scripts/install_cell.py --check   # exit 1 when a notebook lacks the cell or has another one

The repository is ``repository.url`` of ``book/_config.yml``, the one the launch buttons use. The cell
binds only ``_``-prefixed names and modules, which a chapter's parameter check ignores; the book drops it
(``remove-cell``) and Jupyter and Colab fold it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import nbformat
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TAG = "install-sparsegap"          # finds the cell; Jupyter Book's remove-cell hides it
CELL_ID = "install-sparsegap"
ENV_VAR = "SPARSEGAP_INSTALL_SPEC"


def repository_url(config: Path = REPO_ROOT / "book" / "_config.yml") -> str:
    url = (yaml.safe_load(config.read_text()).get("repository") or {}).get("url")
    if not isinstance(url, str) or not url.startswith("https://"):
        raise ValueError(f"repository.url of {config} must be an https URL, got {url!r}")
    return url.rstrip("/")


def default_spec(url: str) -> str:
    """What the cell installs unless ``SPARSEGAP_INSTALL_SPEC`` says otherwise."""
    return f"sparsegap[book] @ git+{url}#subdirectory=pkg"


def cell_source(url: str) -> str:
    # Colab reads the #@title line: the cell shows as a folded form titled by it.
    # pip runs as a subprocess of this kernel's own interpreter (what %pip does), with its output captured
    # so that a failure shows pip's message in the notebook rather than in the kernel's log.
    return f'''\
#@title Install sparsegap where it is missing (a fresh Colab runtime) {{ display-mode: "form" }}
# Does nothing where `import sparsegap` works. {ENV_VAR} replaces what pip installs (a wheel, a fork).
try:
    import sparsegap as _sparsegap
except ImportError:
    import importlib as _importlib
    import os as _os
    import subprocess as _subprocess
    import sys as _sys

    _spec = (_os.environ.get("{ENV_VAR}")
             or "{default_spec(url)}")
    print(f"installing {{_spec}} (a minute or two)", flush=True)
    _pip = _subprocess.run([_sys.executable, "-m", "pip", "install", "--quiet", _spec],
                           capture_output=True, text=True)
    if _pip.returncode != 0:
        raise RuntimeError(f"pip install {{_spec!r}} failed:\\n{{_pip.stdout[-3000:]}}{{_pip.stderr[-3000:]}}")
    _importlib.invalidate_caches()  # the failed import above may have cached the old contents of site-packages
    import sparsegap as _sparsegap
    print(f"sparsegap {{_sparsegap.__version__}} installed", flush=True)
'''


def new_cell(url: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(cell_source(url), id=CELL_ID)
    cell.metadata = {"tags": ["remove-cell", TAG], "jupyter": {"source_hidden": True}, "cellView": "form"}
    return cell


def install_cells(nb: nbformat.NotebookNode) -> list[int]:
    """Indices of the cells tagged as the install cell."""
    return [i for i, c in enumerate(nb.cells) if TAG in c.get("metadata", {}).get("tags", [])]


def with_install_cell(nb: nbformat.NotebookNode, url: str) -> bool:
    """Make the install cell ``nb``'s first cell, up to date; True when ``nb`` changed. Other cells are untouched."""
    wanted = new_cell(url)
    found = install_cells(nb)
    if found == [0] and nb.cells[0].source == wanted.source and nb.cells[0].metadata == wanted.metadata \
            and nb.cells[0].get("id") == CELL_ID and not nb.cells[0].outputs:
        return False
    for i in reversed(found):
        del nb.cells[i]
    nb.cells.insert(0, wanted)
    return True


def problems(nb: nbformat.NotebookNode, url: str) -> list[str]:
    found = install_cells(nb)
    if found != [0]:
        return [f"the install cell (tag {TAG!r}) must be the one first cell, found at {found}"]
    copy = nbformat.from_dict(nb)
    return ["the install cell differs from book/_scripts/install_cell.py's"] if with_install_cell(copy, url) else []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 on a missing or stale cell")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="default: every notebooks/*.ipynb of this checkout")
    args = parser.parse_args(argv)
    url = repository_url()
    paths = args.notebooks or sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
    bad = 0
    for path in paths:
        # NO_CONVERT keeps each notebook's nbformat version; ids of the other cells stay as they are.
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        if args.check:
            for p in problems(nb, url):
                print(f"{path.name}: {p}", file=sys.stderr)
                bad += 1
        elif with_install_cell(nb, url):
            nbformat.validate(nb)
            nbformat.write(nb, path)
            print(f"{path.name}: install cell written")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
