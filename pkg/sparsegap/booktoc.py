"""The table of contents of a book that holds only some chapters (a build with ``--only``).

Jupyter Book builds the pages its toc lists (``only_build_toc_files: true``), and a toc entry whose file is
missing is a Sphinx warning, which the strict build (``-W``) turns into an error. A book folder whose
``notebooks/`` lacks some chapters therefore gets a copy of ``_toc.yml`` without them, written under
``_build/`` and passed to ``jupyter-book build --toc``: the committed toc is never edited. A chapter is in the
book when its executed notebook is in ``<book>/notebooks`` (this build's, or an earlier build's, which the
ledger page reads too, so its links and the toc agree).

Two chapters link to each other (02 and 10); in a partial book such a link may point to a chapter that is
not there, which MyST reports as ``myst.xref_missing``. A partial build suppresses that one warning (the
link is rendered as text); a full build keeps it an error.
"""

from __future__ import annotations

from pathlib import Path

import yaml

PARTIAL_TOC = Path("_build") / "_toc.partial.yml"
CHAPTER_PREFIX = "notebooks/"
PARTIAL_SUPPRESS = ("myst.xref_missing",)


def _entries(node) -> list[dict]:
    """The file entries of a toc node, depth first."""
    out = []
    for key in ("parts", "chapters", "sections"):
        for child in node.get(key, []) or []:
            if "file" in child:
                out.append(child)
            out += _entries(child)
    return out


def toc_chapters(toc: dict) -> list[str]:
    """The toc's notebook pages (``notebooks/<name>``), in order."""
    return [e["file"] for e in _entries(toc) if str(e["file"]).startswith(CHAPTER_PREFIX)]


def missing_chapters(book_dir: Path, toc: dict | None = None) -> list[str]:
    """The toc's notebook pages that have no executed notebook in ``<book>/notebooks``."""
    book_dir = Path(book_dir)
    toc = toc if toc is not None else yaml.safe_load((book_dir / "_toc.yml").read_text())
    return [page for page in toc_chapters(toc) if not (book_dir / f"{page}.ipynb").is_file()]


def without(toc: dict, pages: set[str]) -> dict:
    """A copy of ``toc`` without the entries of ``pages``; a part or section left with no chapters goes too."""
    def prune(node: dict) -> dict:
        node = dict(node)
        for key in ("parts", "chapters", "sections"):
            if key not in node:
                continue
            kept = []
            for child in node[key] or []:
                if child.get("file") in pages:
                    continue
                child = prune(child)
                if "file" in child or child.get("chapters") or child.get("sections") or "url" in child \
                        or "glob" in child:
                    kept.append(child)
            node[key] = kept
        return node

    return prune(toc)


def partial_toc(book_dir: Path) -> tuple[Path | None, list[str]]:
    """(the toc to build with, the chapters left out): (None, []) when every chapter is executed, so the
    committed ``_toc.yml`` is used; else a filtered copy under ``<book>/_build``. No chapter at all is an error:
    there would be no book to read."""
    book_dir = Path(book_dir)
    toc = yaml.safe_load((book_dir / "_toc.yml").read_text())
    missing = missing_chapters(book_dir, toc)
    if not missing:
        return None, []
    if len(missing) == len(toc_chapters(toc)):
        raise FileNotFoundError(f"{book_dir / 'notebooks'} holds no executed chapter of the book; execute at least "
                                f"one first (e.g. `sparsegap book --only 02_fisher_trajectory`)")
    path = book_dir / PARTIAL_TOC
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Written by sparsegap.bookbuild for a build without "
                    f"{len(missing)} chapter(s); the book's toc is _toc.yml.\n"
                    + yaml.safe_dump(without(toc, set(missing)), sort_keys=False))
    return path, missing
