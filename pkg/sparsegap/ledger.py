"""The ledger page, "Claims and verdicts": every row of the plan with the verdict the book states.

It is built from the executed notebooks (the verdicts they displayed, see
:func:`sparsegap.verdict.verdicts_in_notebook`), never typed by hand; rows no chapter covers yet are
listed as "not yet in the book", so the page shows the whole plan.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .claims import CLAIMS, PAPERS, PAPERS_SHORT
from .verdict import STATUS_COLORS, ALL_STATUSES, Verdict, anchor, verdicts_in_notebook

LEDGER_PAGE = "ledger"  # book/ledger.md, listed in book/_toc.yml
NOT_YET = "not yet in the book"
NO_CLAIM = "shown (no claim)"


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
        entries += [Entry(v, path.stem, _title(nb) or path.stem) for v in verdicts_in_notebook(nb)]
    return entries


def _title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def rows(entries: list[Entry]) -> list[dict]:
    """One row per verdict, in plan order, then one per plan row without a verdict."""
    by_claim: dict[str, list[Entry]] = {}
    for e in entries:
        by_claim.setdefault(e.verdict.claim_id, []).append(e)
    out = []
    for claim_id, claim in CLAIMS.items():
        for e in by_claim.get(claim_id, []):
            key = e.verdict.key_effect
            out.append({"claim_id": claim_id, "label": e.verdict.label, "paper": claim.paper_short,
                        "claim": e.verdict.claim, "status": e.verdict.status, "scale": e.verdict.scale,
                        "effect": key.text if key else "", "seeds": len(e.verdict.seeds),
                        "link": f"notebooks/{e.notebook}.html#{anchor(claim_id, e.verdict.part)}", "source": e.notebook,
                        "title": e.title or e.notebook})
        if claim_id not in by_claim:
            status, link = (NO_CLAIM, f"{claim.shown_in}.html") if claim.shown_in else (NOT_YET, "")
            out.append({"claim_id": claim_id, "label": claim_id, "paper": claim.paper_short, "claim": claim.what,
                        "status": status, "effect": "", "seeds": 0,
                        "scale": "", "link": link, "source": claim.shown_in,
                        "title": "Introduction" if claim.shown_in == "intro" else claim.shown_in})
    return out


def render(table: list[dict]) -> str:
    """The MyST page: a short introduction, the counts, and the table as raw HTML (links by anchor)."""
    counts = {}
    for r in table:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    order = [*ALL_STATUSES, NO_CLAIM, NOT_YET]
    summary = ", ".join(f"{counts[s]} {s}" for s in order if s in counts)
    cells = []
    for r in table:
        where = (f'<a href="{html.escape(r["link"])}">{html.escape(r["title"])}</a>' if r["link"] else "")
        cells.append(
            f'<tr class="ledger-row" data-claim="{html.escape(r["claim_id"])}" data-status="{html.escape(r["status"])}" '
            f'data-source="{html.escape(r["source"])}"><td><strong>{html.escape(r["label"])}</strong></td>'
            f'<td>{html.escape(r["paper"])}</td><td>{html.escape(r["claim"])}</td>'
            f'<td>{_status_cell(r["status"])}</td><td>{html.escape(r["effect"])}</td>'
            f'<td>{html.escape(r["scale"])}</td><td>{where}</td></tr>')
    return "\n".join([
        "# Claims and verdicts", "",
        "Every row of the reproduction plan, with the verdict the book states for it. This page is generated",
        "by `make book` from the verdicts the executed chapters displayed; nothing on it is typed by hand.",
        "A verdict holds at the scale shown beside it, which is far smaller than the papers' own.",
        "An effect is *clear* only when its 95% interval (small-sample t, paired where runs share a seed)",
        "excludes zero. *Reproduced*: every part of the claim holds; *partly*: some parts hold; *not reproduced*:",
        "the evidence contradicts the claim; *inconclusive*: the seeds cannot decide, or a precondition of the",
        "test failed. The remedies of Section 4 of the main paper, which its authors propose without testing,",
        "are *tested*: they *help*, have *no effect*, or *hurt*.",
        "Papers: " + "; ".join(f"*{PAPERS_SHORT[k]}*: {PAPERS[k]}" for k in PAPERS) + ".", "",
        f"**{len(table)} rows:** {summary}.", "",
        '<table class="ledger">',
        "<thead><tr><th>id</th><th>paper</th><th>claim</th><th>verdict</th><th>key effect (95% CI)</th>"
        "<th>measured at</th>"
        "<th>section</th></tr></thead>",
        "<tbody>", *cells, "</tbody>", "</table>", ""])


def _status_cell(status: str) -> str:
    color = STATUS_COLORS.get(status)
    text = html.escape(status)
    return f'<strong style="color:{color}">{text}</strong>' if color else text


def write_ledger(book_dir: Path) -> Path:
    """Write ``<book>/ledger.md`` from ``<book>/notebooks/*.ipynb``; returns its path."""
    book_dir = Path(book_dir)
    path = book_dir / f"{LEDGER_PAGE}.md"
    text = render(rows(collect(book_dir / "notebooks")))
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
