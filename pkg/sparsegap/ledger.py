"""The ledger page, "Claims and verdicts": every row of the plan with the verdict the book states.

It is built from the executed notebooks (the verdicts they displayed, see
:func:`sparsegap.verdict.verdicts_in_notebook`), never typed by hand; rows no chapter covers yet are
listed as "not yet in the book", so the page shows the whole plan. The same rows give the results
summary the introduction includes (:func:`render_results`).

The table has four columns so that it reads at 800 px without scrolling sideways: the claim (its id,
the paper's claim, a link to the verdict titled with the chapter's name), the status in its colour,
what we measured (the key effect with its 95% interval, the paper's number under it; the finding where
no effect was measured), and the seeds and scale. Its look is in ``book/_static/sparsegap.css``.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml

from .claims import CLAIMS, PAPERS, PAPERS_SHORT
from .verdict import STATUS_COLORS, ALL_STATUSES, Verdict, anchor, verdicts_in_notebook

LEDGER_PAGE = "ledger"  # book/ledger.md, listed in book/_toc.yml
GENERATED = "_generated"  # book/_generated/: pages' pieces made at build time (results.md, teaser.png)
RESULTS_PAGE = "results.md"  # book/_generated/results.md, included by the introduction
NOT_YET = "not yet in the book"
NO_CLAIM = "shown (no claim)"
STATUS_ORDER = (*ALL_STATUSES, NO_CLAIM, NOT_YET)
# What each status means, in the words of the page's legend (and the introduction's).
STATUS_MEANING = {
    "reproduced": "every part of the claim holds",
    "partly": "some parts hold, others do not or cannot be decided",
    "not reproduced": "the evidence contradicts the claim",
    "inconclusive": "the seeds cannot decide, or a precondition of the test failed",
}


@dataclass(frozen=True)
class Entry:
    verdict: Verdict
    notebook: str  # stem of the executed notebook that displayed it
    title: str = ""  # its first heading


def collect(executed_dir: Path) -> list[Entry]:
    """Every verdict displayed by the executed notebooks in ``executed_dir``, by notebook name."""
    entries = []
    for path in sorted(Path(executed_dir).glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        entries += [Entry(v, path.stem, notebook_title(nb) or path.stem) for v in verdicts_in_notebook(nb)]
    return entries


def notebook_title(nb) -> str:
    """A notebook's title: its first Markdown heading of level 1, or "" if it has none."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def chapter_numbers(toc_file: Path) -> dict[str, int]:
    """``{"notebooks/01_two_regimes": 1, ...}``: the number the book gives each file of its numbered parts
    (Jupyter Book numbers chapters on across parts), or ``{}`` without a table of contents."""
    toc_file = Path(toc_file)
    if not toc_file.is_file():
        return {}
    toc = yaml.safe_load(toc_file.read_text()) or {}
    out: dict[str, int] = {}
    for part in toc.get("parts", []):
        if part.get("numbered"):
            for chapter in part.get("chapters", []):
                if "file" in chapter:
                    out[chapter["file"]] = len(out) + 1
    return out


def _section_title(page: str, title: str, numbers: dict[str, int]) -> str:
    number = numbers.get(page)
    return f"{number}. {title}" if number else title


def _finite(e) -> bool:
    return e is not None and all(math.isfinite(x) for x in (e.effect.estimate, e.effect.lo, e.effect.hi))


def _split_seeds(scale: str, seeds: tuple) -> tuple[str, str]:
    """(``"2 seeds"``, the scale without it): the seeds count from the verdict, else read off the scale."""
    m = re.search(r",?\s*\b(\d+) seeds?\b", scale)
    rest = (scale[:m.start()] + scale[m.end():]).strip(" ,;") if m else scale
    if seeds:
        return f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}", rest
    if m:
        n = int(m.group(1))
        return f"{n} seed{'s' if n != 1 else ''}", rest
    return "", scale


def rows(entries: list[Entry], numbers: dict[str, int] | None = None,
         titles: dict[str, str] | None = None) -> list[dict]:
    """One row per verdict (per part of a claim), in plan order, then one per plan row without a verdict.

    ``numbers`` maps a page ("notebooks/01_two_regimes") to its chapter number (:func:`chapter_numbers`),
    ``titles`` a page to its title for the rows no verdict covers (those a page shows without claiming)."""
    numbers, titles = numbers or {}, titles or {}
    by_claim: dict[str, list[Entry]] = {}
    for e in entries:
        by_claim.setdefault(e.verdict.claim_id, []).append(e)
    out = []
    for claim_id, claim in CLAIMS.items():
        for e in by_claim.get(claim_id, []):
            v, key = e.verdict, e.verdict.key_effect
            measured = _finite(key)
            seeds, scale = _split_seeds(v.scale, v.seeds)
            page = f"notebooks/{e.notebook}"
            out.append({"claim_id": claim_id, "label": v.label, "paper_key": claim_id.split("-")[0],
                        "paper": claim.paper_short, "claim": v.claim, "status": v.status,
                        "effect": key.text if measured else "",
                        "effect_name": key.name if measured else "",
                        "effect_value": (f"{key.effect.format(key.fmt)}"
                                         + ("" if key.effect.method == "exact" else f" (95% CI, n = {key.effect.n})"))
                        if measured else "",
                        "paper_number": key.paper if key is not None else "",
                        "finding": v.finding, "seeds": seeds, "n_seeds": len(v.seeds), "scale": scale,
                        "link": f"{page}.html#{anchor(claim_id, v.part)}", "source": e.notebook,
                        "title": f"{_section_title(page, e.title or e.notebook, numbers)}, verdict {v.label}"})
        if claim_id not in by_claim:
            page = claim.shown_in
            status, link = (NO_CLAIM, f"{page}.html") if page else (NOT_YET, "")
            title = "Introduction" if page == "intro" else titles.get(page, "")
            if page and not title:
                title = page.rsplit("/", 1)[-1].split("_", 1)[-1].replace("_", " ").capitalize()
            out.append({"claim_id": claim_id, "label": claim_id, "paper_key": claim_id.split("-")[0],
                        "paper": claim.paper_short, "claim": claim.what, "status": status, "effect": "",
                        "effect_name": "", "effect_value": "", "paper_number": "", "finding": "",
                        "seeds": "", "n_seeds": 0, "scale": "", "link": link, "source": page,
                        "title": _section_title(page, title, numbers) if page else ""})
    return out


# ------------------------------------------------------------------------------------------- counts


def counts(table: list[dict], paper_key: str | None = None) -> dict[str, int]:
    """How many rows have each status (of one paper's rows when ``paper_key`` is "P", "D", ...), in
    :data:`STATUS_ORDER`."""
    found: dict[str, int] = {}
    for r in table:
        if paper_key is None or r["paper_key"] == paper_key:
            found[r["status"]] = found.get(r["status"], 0) + 1
    return {s: found[s] for s in STATUS_ORDER if s in found}


def status_html(status: str, n: int | None = None) -> str:
    """The status as a coloured label (``<span class="ledger-status">``), with a count before it if given."""
    color = STATUS_COLORS.get(status)
    text = html.escape(status if n is None else f"{n} {status}")
    style = f' style="color:{color};border-color:{color}"' if color else ""
    kind = "" if color else " ledger-status-plain"
    return f'<span class="ledger-status{kind}"{style}>{text}</span>'


def summary_html(table: list[dict]) -> str:
    """The counts per status, then one line per paper: raw HTML, for the ledger and the introduction."""
    total = ", ".join(status_html(s, n) for s, n in counts(table).items())
    lines = [f'<p class="ledger-summary"><strong>{len(table)} rows:</strong> {total}.</p>',
             '<ul class="ledger-papers">']
    for key in PAPERS:
        c = counts(table, key)
        if c:
            lines.append(f'<li><em>{html.escape(PAPERS_SHORT[key])}</em>: '
                         + ", ".join(status_html(s, n) for s, n in c.items()) + "</li>")
    lines.append("</ul>")
    return "\n".join(lines)


def summary_text(table: list[dict]) -> str:
    """``28 rows: 1 reproduced, 1 partly, ...`` in plain words."""
    return f"{len(table)} rows: " + ", ".join(f"{n} {s}" for s, n in counts(table).items())


# ------------------------------------------------------------------------------------------ the page


def _row_html(r: dict) -> str:
    e = html.escape
    link = f'<a href="{e(r["link"])}">{e(r["title"])}</a>' if r["link"] else ""
    claim = (f'<td class="ledger-claim"><strong>{e(r["label"])}</strong> {e(r["claim"])}'
             + (f'<span class="ledger-where">{link}</span>' if link else "") + "</td>")
    if r["effect_value"]:
        ours = f'{e(r["effect_name"])}: <span class="ledger-value">{e(r["effect_value"])}</span>'
    elif r["finding"]:
        ours = f'<span class="ledger-finding">{e(r["finding"])}</span>'
    else:
        ours = ""
    if r["paper_number"]:
        ours += f'<span class="ledger-paper-number">paper: {e(r["paper_number"])}</span>'
    scale = " · ".join(e(x) for x in (r["seeds"], r["scale"]) if x)
    return (f'<tr class="ledger-row" data-claim="{e(r["claim_id"])}" data-status="{e(r["status"])}" '
            f'data-source="{e(r["source"])}">{claim}<td class="ledger-verdict">{status_html(r["status"])}</td>'
            f'<td class="ledger-ours">{ours}</td><td class="ledger-scale">{scale}</td></tr>')


def render(table: list[dict]) -> str:
    """The MyST page: a short introduction, the counts, and the table as raw HTML (links by anchor)."""
    body = []
    for key in PAPERS:
        paper_rows = [r for r in table if r["paper_key"] == key]
        if paper_rows:
            body.append(f'<tr class="ledger-group"><th colspan="4">{html.escape(PAPERS[key])}</th></tr>')
            body += [_row_html(r) for r in paper_rows]
    legend = "; ".join(f"*{s}*: {m}" for s, m in STATUS_MEANING.items())
    return "\n".join([
        "# Claims and verdicts", "",
        "Every row of the reproduction plan, with the verdict the book states for it, the effect it rests on",
        "and where the chapter shows it. This page is generated by `make book` from the verdicts the executed",
        "chapters displayed; nothing on it is typed by hand.", "",
        summary_html(table), "",
        "A verdict holds at the scale shown beside it, which is far smaller than the papers' own.",
        "An effect is *clear* only when its 95% interval (small-sample t, paired where runs share a seed)",
        f"excludes zero. {legend}.",
        "The remedies of Section 4 of the main paper, which its authors propose without testing,",
        "are *tested*: they *help*, have *no effect*, or *hurt*.",
        "Where no effect could be measured, the row gives the reason.", "",
        '<div class="ledger-wrap"><table class="ledger">',
        '<colgroup><col class="ledger-col-claim"><col class="ledger-col-verdict"><col class="ledger-col-ours">'
        '<col class="ledger-col-scale"></colgroup>',
        "<thead><tr><th>claim</th><th>verdict</th><th>ours: key effect (95% CI); the paper's number</th>"
        "<th>seeds · scale</th></tr></thead>",
        "<tbody>", *body, "</tbody>", "</table></div>", ""])


def render_results(table: list[dict], built: int | None = None, chapters: int | None = None) -> str:
    """The introduction's results summary (``_generated/results.md``): the counts per status and per
    paper from the same rows as the ledger, with a link to it. When only ``built`` of the book's
    ``chapters`` were executed (a build with ``--only``), it says so: the counts cover those alone."""
    judged = [r for r in table if r["status"] in ALL_STATUSES]
    papers = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}.get(len(PAPERS), str(len(PAPERS)))
    lines = []
    if chapters and built is not None and built < chapters:
        lines += [f"**The results are not built in full:** this copy of the book holds {built} of its "
                  f"{chapters} chapters (a build with `--only`), and the counts below cover those alone.", ""]
    return "\n".join(lines + [
        f"The chapters state {len(judged)} verdicts on the claims of the {papers} papers; every row of the",
        "reproduction plan, with the effect each verdict rests on, is in the ledger,",
        f"[Claims and verdicts]({LEDGER_PAGE}.md).", "",
        summary_html(table), ""])


def _atomic_write(path: Path, text: str) -> Path:
    from .runs.atomic import atomic_write_text   # the run store's durable write: a reader never sees half a page
    atomic_write_text(text, path)
    return path


def book_rows(book_dir: Path) -> list[dict]:
    """The ledger's rows for the book in ``book_dir``: its executed notebooks, numbered by its toc."""
    book_dir = Path(book_dir)
    titles = {}
    for path in sorted((book_dir / "notebooks").glob("*.ipynb")):
        titles[f"notebooks/{path.stem}"] = notebook_title(nbformat.read(path, as_version=4))
    return rows(collect(book_dir / "notebooks"), chapter_numbers(book_dir / "_toc.yml"), titles)


def write_ledger(book_dir: Path) -> Path:
    """Write ``<book>/ledger.md`` from ``<book>/notebooks/*.ipynb``, and the introduction's results
    summary ``<book>/_generated/results.md`` from the same rows; returns the ledger's path."""
    book_dir = Path(book_dir)
    table = book_rows(book_dir)
    chapters = [page for page in chapter_numbers(book_dir / "_toc.yml") if page.startswith("notebooks/")]
    built = sum((book_dir / f"{page}.ipynb").is_file() for page in chapters)
    _atomic_write(book_dir / GENERATED / RESULTS_PAGE, render_results(table, built, len(chapters)))
    return _atomic_write(book_dir / f"{LEDGER_PAGE}.md", render(table))
