"""Claim verdicts as values: what a chapter concludes about one row of the reproduction plan.

A chapter's verdict rule (in :mod:`sparsegap.studies`) returns a :class:`Verdict`. Shown in a notebook
it renders itself, with the same look in every chapter, and carries its data under
:data:`VERDICT_MIME`, which is how the ledger page ("Claims and verdicts") finds every verdict in the
executed notebooks: the page is built from them, never typed by hand.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field

import numpy as np

from . import stats as _stats
from .claims import check_claim_id
from .stats import OUTCOMES, Interval

# The statuses of a claim of the papers, and of a remedy the paper proposes without testing it (P-S4).
STATUSES = ("reproduced", "partly", "not reproduced", "inconclusive")
TESTED = ("tested: helps", "tested: no effect", "tested: hurts")
ALL_STATUSES = STATUSES + TESTED
VERDICT_MIME = "application/vnd.sparsegap.verdict+json"
STATUS_COLORS = {"reproduced": "#2e7d32", "partly": "#b26a00", "not reproduced": "#c62828", "inconclusive": "#546e7a",
           "tested: helps": "#2e7d32", "tested: no effect": "#546e7a", "tested: hurts": "#c62828"}


def status_of(parts) -> str:
    """The status of a claim judged in parts, each the outcome of :meth:`sparsegap.stats.Interval.test`
    ("holds", "fails", "undecided"; a bool counts as holds/fails): *reproduced* when every part holds,
    *partly* when some do, *not reproduced* when none holds and the evidence contradicts at least one,
    *inconclusive* when none holds and none is contradicted (the seeds cannot decide)."""
    outcomes = [("holds" if p else "fails") if isinstance(p, (bool, np.bool_)) else p for p in parts]
    bad = [o for o in outcomes if o not in OUTCOMES]
    if bad:
        raise ValueError(f"status_of(parts) takes outcomes {OUTCOMES} (or bools), got {bad!r}")
    if not outcomes:
        return "inconclusive"
    if all(o == "holds" for o in outcomes):
        return "reproduced"
    if any(o == "holds" for o in outcomes):
        return "partly"
    return "not reproduced" if any(o == "fails" for o in outcomes) else "inconclusive"


def all_of(outcomes) -> str:
    """One outcome for a part of a claim made of several tests: *fails* if any fails, *holds* if all hold,
    else *undecided*."""
    outcomes = list(outcomes)
    if any(o == "fails" for o in outcomes):
        return "fails"
    return "holds" if outcomes and all(o == "holds" for o in outcomes) else "undecided"


def detectable_line(what: str, effect: Interval, fmt: str = ".3g") -> str:
    """The reason line every chapter gives: the smallest ``what`` its seeds detect (80% power, at the spread
    ``effect`` measured), and how many seeds an effect of the size measured would need when more than these."""
    n = effect.n
    de = effect.detectable()
    if not math.isfinite(de):
        return f"With {n} seed{'s' if n != 1 else ''} no {what} can be detected (at least 2 are needed)."
    need = effect.seeds_needed(effect.estimate)
    tail = (f"; about {need} seeds would decide one of the size measured ({abs(effect.estimate):{fmt}})"
            if need and need > n else "")
    return f"With {n} seeds the smallest {what} these seeds detect (80% power) is {de:{fmt}}{tail}."


def remedy_status(effect: Interval, margin: float) -> str:
    """The status of a remedy from the interval of its gain over the plain baseline: *helps* when it is
    clearly above zero, *hurts* when clearly below, *no effect* when it lies within ``±margin`` (every
    effect as large as ``margin`` excluded), *inconclusive* otherwise."""
    if effect.lo > 0:
        return "tested: helps"
    if effect.hi < 0:
        return "tested: hurts"
    if -margin < effect.lo and effect.hi < margin:
        return "tested: no effect"
    return "inconclusive"


def clearly_above(a, b, *, paired: bool) -> bool:
    """mean(a) exceeds mean(b): the 95% interval of the difference (:mod:`sparsegap.stats`; paired when
    the runs share seeds) lies above zero."""
    return _stats.clearly_above(a, b, paired=paired)


def mean_std(values, fmt: str = ".1%") -> str:
    """``mean ± std`` over seeds (sample std; 0 for one seed), for a verdict's reasons."""
    v = np.asarray(values, dtype=float)
    return f"{v.mean():{fmt}} ± {v.std(ddof=1) if len(v) > 1 else 0.0:{fmt}}"


def mean_ci(values, fmt: str = ".1%") -> str:
    """``mean [lo, hi]``: the mean over seeds with its 95% t-interval, for a verdict's reasons."""
    return _stats.mean_interval(values).format(fmt)


@dataclass(frozen=True)
class Evidence:
    """One measured effect behind a verdict: ``name`` says what it is ("Sol-F − Sol-S, test accuracy,
    s = 0.95"), ``effect`` its value with the 95% interval and n, ``fmt`` how to print it, ``paper`` the
    paper's number for the same quantity where the paper gives one (as text, e.g. "+9 points"), and
    ``outcome`` what it says of the claim part it tests ("holds", "fails", "undecided", or "" when it
    is shown for context)."""

    name: str
    effect: Interval
    fmt: str = ".3g"
    paper: str = ""
    outcome: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"Evidence.name must say what was measured, got {self.name!r}")
        if not isinstance(self.effect, Interval):
            raise TypeError(f"Evidence.effect must be a sparsegap.stats.Interval, got {type(self.effect).__name__}")
        if self.outcome not in ("", *OUTCOMES):
            raise ValueError(f"Evidence.outcome must be one of {('', *OUTCOMES)}, got {self.outcome!r}")
        format(0.5, self.fmt)  # a bad format spec fails here, not when the page renders

    @property
    def text(self) -> str:
        """``name: 0.012 [0.004, 0.020] (n = 3)``, and the paper's number when there is one."""
        e = self.effect
        n = "" if e.method == "exact" else f" (95% CI, n = {e.n})"
        paper = f"; paper: {self.paper}" if self.paper else ""
        return f"{self.name}: {e.format(self.fmt)}{n}{paper}"

    def value_words(self) -> str:
        """The effect for prose, in the evidence's own format: accuracies (a ``%`` format) in signed
        percentage points, ``+0.30 points [95% CI −0.49, +1.08]``; anything else as ``fmt`` gives it."""
        if self.fmt.endswith("%"):
            return self.effect.points()
        return self.effect.words(self.fmt)

    @property
    def phrase(self) -> str:
        """``name: value [95% CI lo, hi]``, for a page's summary or its paper-vs-ours table."""
        return f"{self.name}: {self.value_words()}"

    def to_dict(self) -> dict:
        return {"name": self.name, "effect": self.effect.to_dict(), "fmt": self.fmt, "paper": self.paper,
                "outcome": self.outcome}

    @classmethod
    def from_dict(cls, d: dict) -> "Evidence":
        return cls(d["name"], Interval.from_dict(d["effect"]), d.get("fmt", ".3g"), d.get("paper", ""),
                   d.get("outcome", ""))


def anchor(claim_id: str, part: str = "") -> str:
    """The HTML id of a verdict on its page, e.g. ``verdict-p-f7-8`` for P-F7/8, ``verdict-p-f4-a`` for part a."""
    return "verdict-" + re.sub(r"[^a-z0-9]+", "-", f"{claim_id} {part}".lower()).strip("-")


@dataclass(frozen=True)
class Verdict:
    """One claim, judged from our measurements.

    ``claim_id`` is the plan's row id (P-F1, D-F3, ...), ``claim`` the paper's claim in one line,
    ``status`` one of :data:`ALL_STATUSES`, ``reasons`` the measured facts behind it, and ``scale`` the
    setting it was measured at (model, data, seeds, epochs). ``part`` tells apart several verdicts on
    one row of the plan (P-F4 (a) and (b): one figure, two claims). ``finding`` says in one sentence
    what we measured, with the key number; ``evidence`` carries the measured effects as data, each with
    its 95% interval and n (the first is the key effect the ledger shows), and ``seeds`` the seeds
    behind them.
    """

    claim_id: str
    claim: str
    status: str
    reasons: tuple[str, ...] = field(default_factory=tuple)
    scale: str = ""
    part: str = ""
    finding: str = ""
    evidence: tuple[Evidence, ...] = field(default_factory=tuple)
    seeds: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self):
        check_claim_id(self.claim_id)
        if self.status not in ALL_STATUSES:
            raise ValueError(f"Verdict.status must be one of {ALL_STATUSES}, got {self.status!r}")
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
        if not isinstance(self.finding, str):
            raise TypeError(f"Verdict.finding must be a string (one sentence), got {self.finding!r}")
        evidence = tuple(self.evidence)
        if not all(isinstance(e, Evidence) for e in evidence):
            raise TypeError(f"Verdict.evidence must be Evidence values, got {evidence!r}")
        object.__setattr__(self, "evidence", evidence)
        seeds = tuple(self.seeds)
        if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seeds):
            raise TypeError(f"Verdict.seeds must be ints, got {seeds!r}")
        object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))

    @property
    def label(self) -> str:
        """``P-F4`` or ``P-F4 (a)``."""
        return f"{self.claim_id} ({self.part})" if self.part else self.claim_id

    @property
    def key_effect(self) -> Evidence | None:
        """The first piece of evidence: the effect the ledger shows."""
        return self.evidence[0] if self.evidence else None

    def find(self, start: str) -> Evidence | None:
        """The first piece of evidence whose name starts with ``start`` (None when there is none)."""
        return next((e for e in self.evidence if e.name.startswith(start)), None)

    def effect_words(self, start: str, fmt: str = "", missing: str = "not measured") -> str:
        """The effect of the evidence named ``start...`` in words (``fmt``, or the evidence's own format;
        see :meth:`Evidence.value_words`), or ``missing`` when the verdict has no such evidence."""
        e = self.find(start)
        if e is None:
            return missing
        return e.effect.words(fmt) if fmt else e.value_words()

    def evidence_phrase(self, i: int = 0, missing: str = "not measured", *, status: bool = False) -> str:
        """Evidence ``i`` as ``name: value [95% CI ...]`` (:attr:`Evidence.phrase`), or ``missing``; with
        ``status``, followed by ``; verdict: <status>`` (a chapter summary's line)."""
        text = self.evidence[i].phrase if len(self.evidence) > i else missing
        return f"{text}; verdict: {self.status}" if status else text

    def to_dict(self) -> dict:
        return {"claim_id": self.claim_id, "claim": self.claim, "status": self.status,
                "reasons": list(self.reasons), "scale": self.scale, "part": self.part, "finding": self.finding,
                "evidence": [e.to_dict() for e in self.evidence], "seeds": list(self.seeds)}

    @classmethod
    def from_dict(cls, d: dict) -> "Verdict":
        return cls(d["claim_id"], d["claim"], d["status"], tuple(d.get("reasons", ())), d.get("scale", ""),
                   d.get("part", ""), d.get("finding", ""),
                   tuple(Evidence.from_dict(e) for e in d.get("evidence", ())), tuple(d.get("seeds", ())))

    # ------------------------------------------------------------------ rendering

    def _repr_markdown_(self) -> str:
        lines = [f"**{self.finding}**", ""] if self.finding else []
        lines += [f"**Verdict {self.label}: {self.status}.** Claim: {self.claim}", ""]
        lines += [f"- {e.text}" for e in self.evidence]
        lines += [f"- {r}" for r in self.reasons]
        if self.scale:
            lines += ["", f"*Measured at this scale: {self.scale}.*"]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        color = STATUS_COLORS[self.status]
        items = "".join(f"<li>{html.escape(e.text)}</li>" for e in self.evidence)
        items += "".join(f"<li>{html.escape(r)}</li>" for r in self.reasons)
        finding = (f'<p class="sparsegap-finding" style="margin:0 0 0.4em 0"><strong>{html.escape(self.finding)}'
                   f'</strong></p>') if self.finding else ""
        scale = (f'<p style="margin:0.4em 0 0 0;font-style:italic">Measured at this scale: '
                 f'{html.escape(self.scale)}.</p>') if self.scale else ""
        return (f'<div id="{anchor(self.claim_id, self.part)}" class="sparsegap-verdict" '
                f'style="border-left:6px solid {color};padding:0.6em 1em;margin:0.8em 0;background:#f8f8f8">'
                f'{finding}<p style="margin:0 0 0.4em 0"><strong>Verdict {html.escape(self.label)}: '
                f'<span style="color:{color}">{html.escape(self.status)}</span>.</strong> '
                f'Claim: {html.escape(self.claim)}</p><ul style="margin:0">{items}</ul>{scale}</div>')

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
