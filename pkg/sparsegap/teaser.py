"""The introduction's teaser: chapter 1's figure, as the executed notebook glued it, with chapter 1's verdict as
its caption; and the pages the build makes from the executed notebooks (``<book>/_generated/``)."""

from __future__ import annotations

from pathlib import Path

TEASER_NOTEBOOK = "01_two_regimes"
TEASER_KEY = "fig-01-two-regimes"  # chapter 1's glued figure, shown on the introduction
TEASER_CLAIM = "P-F1"


def glued_png(notebook: Path, key: str) -> tuple[bytes, dict] | None:
    """The PNG an executed notebook glued under ``key`` (the output whose metadata has ``scrapbook.name``
    == key) and its display metadata (``{"width": ..., "height": ...}``), or None when it has none."""
    import base64

    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {})
            if meta.get("scrapbook", {}).get("name") == key and "image/png" in out.get("data", {}):
                data = out["data"]["image/png"]
                return base64.b64decode(data if isinstance(data, str) else "".join(data)), dict(
                    meta.get("image/png", {}))
    return None


def write_teaser(book_dir: Path) -> Path:
    """Write ``<book>/_generated/teaser.md``, which the introduction includes: chapter 1's glued figure
    (saved as ``_generated/teaser.png``) with a caption quoting chapter 1's verdict, or, when the book
    holds no executed chapter 1 (``--only``), a note that the results are not built."""
    from . import ledger

    book_dir = Path(book_dir)
    out_dir = book_dir / ledger.GENERATED
    out_dir.mkdir(parents=True, exist_ok=True)
    notebook = book_dir / "notebooks" / f"{TEASER_NOTEBOOK}.ipynb"
    found = glued_png(notebook, TEASER_KEY) if notebook.is_file() else None
    png = out_dir / "teaser.png"
    if found is None:
        png.unlink(missing_ok=True)
        why = ("chapter 1 was not executed (for instance, a build with `--only`)" if not notebook.is_file()
               else f"chapter 1 did not glue its figure `{TEASER_KEY}`")
        text = "\n".join([
            "```{note}", f"The results are not built in this copy of the book: {why}, so its figure of the two "
            "regimes is not shown here. `make book` builds every chapter.", "```", ""])
    else:
        data, meta = found
        png.write_bytes(data)
        page = f"notebooks/{TEASER_NOTEBOOK}"
        source = nbformat_text(notebook)
        ref = (f"{{numref}}`{TEASER_KEY}`" if f":name: {TEASER_KEY}" in source
               else f"[chapter 1]({page}.ipynb)")
        verdicts = [r for r in ledger.book_rows(book_dir)
                    if r["claim_id"] == TEASER_CLAIM and r["source"] == TEASER_NOTEBOOK]
        said = " ".join(f"Verdict {r['label']}, *{r['status']}*: {_md_escape(r['finding'])}"
                        for r in verdicts if r["finding"])
        options = [":name: fig-intro-teaser",
                   ":alt: Chapter 1's figure of the two regimes: Sol-F and Sol-S against sparsity, at this "
                   "book's scale."]
        if meta.get("width"):  # drawn at 2x pixel density: shown at its CSS size, crisp
            options.append(f":width: {int(meta['width'])}px")
        text = "\n".join([
            f"```{{figure}} {ledger.GENERATED}/teaser.png", *options, "",
            f"The two regimes at this book's scale: chapter 1's figure ({ref}), drawn by this build. {said}".rstrip(),
            "```", ""])
    return ledger._atomic_write(out_dir / "teaser.md", text)


def _md_escape(text: str) -> str:
    """``text`` as literal Markdown: its emphasis, link, code and HTML characters escaped."""
    return "".join("\\" + ch if ch in "\\`*_[]<>{}|#" else ch for ch in text)


def nbformat_text(notebook: Path) -> str:
    """Every Markdown cell's source of a notebook, joined (to look for a figure's ``:name:``)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def write_generated(book_dir: Path) -> None:
    """The pages made from the executed notebooks: the ledger, and the introduction's results summary
    and teaser figure (``<book>/_generated/``)."""
    from .ledger import write_ledger

    write_ledger(book_dir)
    write_teaser(book_dir)
