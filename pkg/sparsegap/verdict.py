"""Claim verdicts as values: what a chapter concludes about one row of the reproduction plan.

A chapter's verdict rule (in :mod:`sparsegap.studies`) returns a :class:`Verdict`. Shown in a notebook
it renders itself, with the same look in every chapter, and carries its data under
:data:`VERDICT_MIME`, which is how the ledger page ("Claims and verdicts") finds every verdict in the
executed notebooks: the page is built from them, never typed by hand.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from .claims import check_claim_id

STATUSES = ("reproduced", "partly", "not reproduced")
VERDICT_MIME = "application/vnd.sparsegap.verdict+json"
_COLORS = {"reproduced": "#2e7d32", "partly": "#b26a00", "not reproduced": "#c62828"}


def status_of(parts) -> str:
    """The status of a claim judged in parts: *reproduced* if every part holds, *partly* if some do."""
    parts = list(parts)
    return "reproduced" if parts and all(parts) else "partly" if any(parts) else "not reproduced"


def clearly_above(a, b) -> bool:
    """mean(a) exceeds mean(b) by more than two standard errors of the difference (Welch's, from the
    seed spreads): with three seeds a gap smaller than the seeds' own scatter is not a difference."""
    import numpy as np
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    se = np.sqrt((a.var(ddof=1) / len(a) if len(a) > 1 else 0.0) + (b.var(ddof=1) / len(b) if len(b) > 1 else 0.0))
    return bool(a.mean() - b.mean() > 2 * se)


def mean_std(values, fmt: str = ".1%") -> str:
    """``mean ± std`` over seeds (sample std; 0 for one seed), for a verdict's reasons."""
    import numpy as np
    v = np.asarray(values, dtype=float)
    return f"{v.mean():{fmt}} ± {v.std(ddof=1) if len(v) > 1 else 0.0:{fmt}}"


def anchor(claim_id: str, part: str = "") -> str:
    """The HTML id of a verdict on its page, e.g. ``verdict-p-f7-8`` for P-F7/8, ``verdict-p-f4-a`` for part a."""
    return "verdict-" + re.sub(r"[^a-z0-9]+", "-", f"{claim_id} {part}".lower()).strip("-")


@dataclass(frozen=True)
class Verdict:
    """One claim, judged from our measurements.

    ``claim_id`` is the plan's row id (P-F1, D-F3, ...), ``claim`` the paper's claim in one line,
    ``status`` one of :data:`STATUSES`, ``reasons`` the measured facts behind it, and ``scale`` the
    setting it was measured at (model, data, seeds, epochs). ``part`` tells apart several verdicts on
    one row of the plan (P-F4 (a) and (b): one figure, two claims).
    """

    claim_id: str
    claim: str
    status: str
    reasons: tuple[str, ...] = field(default_factory=tuple)
    scale: str = ""
    part: str = ""

    def __post_init__(self):
        check_claim_id(self.claim_id)
        if self.status not in STATUSES:
            raise ValueError(f"Verdict.status must be one of {STATUSES}, got {self.status!r}")
        if not isinstance(self.claim, str) or not self.claim.strip():
            raise ValueError(f"Verdict.claim must state the paper's claim in one line, got {self.claim!r}")
        reasons = (self.reasons,) if isinstance(self.reasons, str) else tuple(self.reasons)
        if not all(isinstance(r, str) for r in reasons):
            raise TypeError(f"Verdict.reasons must be strings, got {reasons!r}")
        object.__setattr__(self, "reasons", reasons)
        if not isinstance(self.scale, str):
            raise TypeError(f"Verdict.scale must be a string, got {self.scale!r}")
        if not isinstance(self.part, str) or not re.fullmatch(r"[a-z0-9]{0,3}", self.part):
            raise ValueError(f"Verdict.part must be a short label such as 'a' (or ''), got {self.part!r}")

    @property
    def label(self) -> str:
        """``P-F4`` or ``P-F4 (a)``."""
        return f"{self.claim_id} ({self.part})" if self.part else self.claim_id

    def to_dict(self) -> dict:
        return {"claim_id": self.claim_id, "claim": self.claim, "status": self.status,
                "reasons": list(self.reasons), "scale": self.scale, "part": self.part}

    @classmethod
    def from_dict(cls, d: dict) -> "Verdict":
        return cls(d["claim_id"], d["claim"], d["status"], tuple(d.get("reasons", ())), d.get("scale", ""),
                   d.get("part", ""))

    # ------------------------------------------------------------------ rendering

    def _repr_markdown_(self) -> str:
        lines = [f"**Verdict {self.label}: {self.status}.** {self.claim}", ""]
        lines += [f"- {r}" for r in self.reasons]
        if self.scale:
            lines += ["", f"*Measured at this scale: {self.scale}.*"]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        color = _COLORS[self.status]
        items = "".join(f"<li>{html.escape(r)}</li>" for r in self.reasons)
        scale = (f'<p style="margin:0.4em 0 0 0;font-style:italic">Measured at this scale: '
                 f'{html.escape(self.scale)}.</p>') if self.scale else ""
        return (f'<div id="{anchor(self.claim_id, self.part)}" class="sparsegap-verdict" '
                f'style="border-left:6px solid {color};padding:0.6em 1em;margin:0.8em 0;background:#f8f8f8">'
                f'<p style="margin:0 0 0.4em 0"><strong>Verdict {html.escape(self.label)}: '
                f'<span style="color:{color}">{html.escape(self.status)}</span>.</strong> '
                f'{html.escape(self.claim)}</p><ul style="margin:0">{items}</ul>{scale}</div>')

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return {"text/plain": f"Verdict({self.label}: {self.status})",
                "text/markdown": self._repr_markdown_(), "text/html": self._repr_html_(),
                VERDICT_MIME: self.to_dict()}

    def show(self) -> None:
        """Display the verdict and glue its status (``<claim_id>-status``) for other pages to quote."""
        from IPython.display import display

        display(self)
        try:
            from myst_nb import glue
        except ImportError:  # outside the book's environment the display is all that matters
            return
        glue(anchor(self.claim_id, self.part).removeprefix("verdict-") + "-status", self.status, display=False)


class VerdictMimeRenderer:
    """myst-nb plugin (entry point ``myst_nb.mime_renderers``): the verdict's data travel in the page's
    notebook for the ledger, while the book shows its HTML; without this, every verdict would draw an
    "unknown mime type" warning, which the strict book build turns into an error."""

    mime_priority_overrides = [("*", VERDICT_MIME, None)]

    @staticmethod
    def handle_mime(renderer, data, inline):
        return [] if data.mime_type == VERDICT_MIME else None


def verdicts_in_notebook(nb) -> list[Verdict]:
    """Every verdict an executed notebook (an nbformat node or a dict) displayed, in order."""
    out = []
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if VERDICT_MIME in data:
                out.append(Verdict.from_dict(dict(data[VERDICT_MIME])))
    return out
