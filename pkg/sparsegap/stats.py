"""Small-sample statistics for every verdict: one rule, one place.

The book's comparisons rest on two to five seeds. With so few, a gap "above two standard errors" is
not a 95% statement (with one or two degrees of freedom it is roughly 70-80%), so every verdict uses
the intervals here instead:

* :func:`mean_interval`: the t-interval of a mean, with ``n - 1`` degrees of freedom;
* :func:`paired_difference`: the mean of per-seed differences ``a - b`` and its t-interval, for two
  solutions that share a seed (Sol-F and Sol-S of the same Sol-D, the runs of one chain);
* :func:`welch_difference`: ``mean(a) - mean(b)`` for independent samples, with the
  Welch-Satterthwaite degrees of freedom;
* :func:`ratio_interval`: Fieller's interval of ``mean(d) / mean(g)`` from paired samples (the share
  of a gap that a remedy closes);
* :func:`detectable_effect`: the smallest true effect a design of ``n`` seeds finds with 80% power,
  so that an *inconclusive* verdict can say how far it is from deciding.

*Clearly* means one thing everywhere: the 95% interval excludes zero (:attr:`Interval.clear`).
:meth:`Interval.test` turns an interval into the outcome of one part of a claim: it *holds* when the
interval lies on the claimed side of zero, *fails* when it excludes every effect of the claimed sign
at least ``margin`` large, and is *undecided* otherwise. With one seed nothing can be decided: the
interval is infinite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["LEVEL", "OUTCOMES", "Interval", "mean_interval", "paired_difference", "welch_difference",
           "difference", "ratio_interval", "detectable_effect", "clearly_above", "t_quantile", "seed_summary"]

LEVEL = 0.95
OUTCOMES = ("holds", "fails", "undecided")


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (``inf``: the normal)."""
    from scipy import stats
    return float(stats.t.ppf(q, df)) if math.isfinite(df) else float(stats.norm.ppf(q))


@dataclass(frozen=True)
class Interval:
    """An effect with its ``level`` confidence interval ``[lo, hi]``, from ``n`` values (pairs, for a
    paired difference) with ``df`` degrees of freedom, by ``method`` ("t", "paired t", "welch",
    "fieller", "exact" for a value measured once without seed noise)."""

    estimate: float
    lo: float
    hi: float
    n: int
    df: float
    method: str
    level: float = LEVEL

    @property
    def clear(self) -> bool:
        """The interval excludes zero."""
        return self.lo > 0 or self.hi < 0

    @property
    def sign(self) -> int:
        """+1 when clearly above zero, -1 when clearly below, 0 when the interval holds zero."""
        return 1 if self.lo > 0 else -1 if self.hi < 0 else 0

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def test(self, direction: int = 1, margin: float = 0.0) -> str:
        """The outcome of the claim "the effect has sign ``direction``": ``holds`` when the interval lies on
        that side of zero; ``fails`` when it excludes every effect of that sign at least ``margin`` large
        (``margin=0``: the interval lies clearly on the other side); else ``undecided``."""
        if direction not in (1, -1):
            raise ValueError(f"direction must be 1 or -1, got {direction!r}")
        if margin < 0 or not math.isfinite(margin):
            raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
        lo, hi = (self.lo, self.hi) if direction == 1 else (-self.hi, -self.lo)
        if lo > 0:
            return "holds"
        if hi < margin:
            return "fails"
        return "undecided"

    @property
    def standard_error(self) -> float:
        """The standard error behind the interval (its half-width over the t quantile); NaN for an infinite
        interval or an exact value."""
        if self.method == "exact" or not math.isfinite(self.half_width) or not self.df > 0:
            return math.nan
        return self.half_width / t_quantile(0.5 + self.level / 2, self.df)

    def detectable(self, power: float = 0.8) -> float:
        """The smallest true effect that the design behind this interval (its n and the spread it measured)
        detects with probability ``power``: ``(t_{1-α/2} + t_{power}) · se``. Infinite when the interval is."""
        se = self.standard_error
        if not math.isfinite(se):
            return math.inf
        return (t_quantile(0.5 + self.level / 2, self.df) + t_quantile(power, self.df)) * se

    def seeds_needed(self, effect: float, power: float = 0.8, most: int = 1000) -> int | None:
        """The fewest seeds (pairs, for a paired difference; per group otherwise) that would detect an effect of
        size ``|effect|`` at the spread this interval measured; None when unknown or beyond ``most``."""
        se = self.standard_error
        if not math.isfinite(se) or effect == 0 or not math.isfinite(effect):
            return None
        paired = self.method in ("t", "paired t")
        sd = se * math.sqrt(self.n) / (1 if paired else math.sqrt(2))
        return next((n for n in range(2, most + 1)
                     if detectable_effect(sd, n, paired=paired, level=self.level, power=power) <= abs(effect)), None)

    def shifted(self, by: float) -> "Interval":
        """The interval of ``effect + by``: to test against a tolerance or a floor instead of zero."""
        return Interval(self.estimate + by, self.lo + by, self.hi + by, self.n, self.df, self.method, self.level)

    def format(self, fmt: str = ".3g", unit: str = "") -> str:
        """``0.012 [0.004, 0.020]`` (``fmt`` applies to all three; ``unit`` follows each)."""
        def f(v: float) -> str:
            return "-inf" if v == -math.inf else "inf" if v == math.inf else f"{v:{fmt}}{unit}"
        if self.method == "exact":
            return f(self.estimate)
        return f"{f(self.estimate)} [{f(self.lo)}, {f(self.hi)}]"

    def words(self, fmt: str = ".3g", *, scale: float = 1.0, unit: str = "", brackets: bool = False) -> str:
        """The interval for prose: ``−3.9 points [95% CI −10.9, +3.2]``, each end ``scale``-d and formatted
        with ``fmt``, minus signs typeset; ``brackets`` gives the compact ``−3.9 [−10.9, +3.2]`` of a table
        whose header says the unit and level. Without a bounded interval (one seed): ``+0.30 points (no
        interval: 1 seed)``; an exact value is the value alone; a missing estimate is "not measured"."""
        def f(v: float) -> str:
            return "−∞" if v == -math.inf else "∞" if v == math.inf else format(v * scale, fmt).replace("-", "−")
        if not math.isfinite(self.estimate):
            return "not measured"
        value = f(self.estimate) + ("" if brackets else unit)
        if self.method == "exact":
            return value
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            return f"{value} (no interval: {self.n} seed{'' if self.n == 1 else 's'})"
        if brackets:
            return f"{value} [{f(self.lo)}, {f(self.hi)}]"
        return f"{value} [{self.level:.0%} CI {f(self.lo)}, {f(self.hi)}]"

    def points(self, decimals: int = 2, *, words: bool = True) -> str:
        """A difference of fractions (accuracies) in signed percentage points: ``+0.30 points [95% CI −0.49,
        +1.08]``, or ``+0.30 [−0.49, +1.08]`` for a table (``words=False``); see :meth:`words`."""
        return self.words(f"+.{int(decimals)}f", scale=100.0, unit=" points", brackets=not words)

    def mapped(self, fn) -> "Interval":
        """The interval of ``fn(effect)`` for an increasing ``fn`` (e.g. ``lambda v: 10 ** v`` turns a log10
        ratio into a ratio): the ends map to the ends."""
        return Interval(fn(self.estimate), fn(self.lo), fn(self.hi), self.n, self.df, self.method, self.level)

    def to_dict(self) -> dict:
        return {"estimate": _json_float(self.estimate), "lo": _json_float(self.lo), "hi": _json_float(self.hi),
                "n": int(self.n), "df": _json_float(self.df), "method": self.method, "level": self.level}

    @classmethod
    def from_dict(cls, d: dict) -> "Interval":
        return cls(_from_json(d["estimate"]), _from_json(d["lo"]), _from_json(d["hi"]), int(d["n"]),
                   _from_json(d["df"]), d["method"], float(d.get("level", LEVEL)))

    @classmethod
    def exact(cls, value: float) -> "Interval":
        """A value without seed noise (one deterministic measurement): its interval is the point."""
        v = float(value)
        return cls(v, v, v, 1, math.inf, "exact")


def _json_float(v: float):
    """Floats for JSON: rounded to 6 significant digits (the evidence is read, not computed on), and the
    infinities and NaN as strings, which JSON lacks."""
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(f"{v:.6g}")


def _from_json(v) -> float:
    return float(v)


def _values(name: str, x) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    if a.size == 0:
        raise ValueError(f"{name} must hold at least one value, got none")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite numbers (leave diverged runs out first), got {a.tolist()}")
    return a


def _check_level(level: float) -> None:
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ValueError(f"level must be a probability strictly between 0 and 1, got {level!r}")


def mean_interval(x, level: float = LEVEL) -> Interval:
    """The mean of ``x`` with its t-interval (``n - 1`` degrees of freedom); infinite for one value."""
    _check_level(level)
    a = _values("x", x)
    n, m = len(a), float(a.mean())
    if n < 2:
        return Interval(m, -math.inf, math.inf, n, 0.0, "t", level)
    half = t_quantile(0.5 + level / 2, n - 1) * float(a.std(ddof=1)) / math.sqrt(n)
    return Interval(m, m - half, m + half, n, float(n - 1), "t", level)


def paired_difference(a, b, level: float = LEVEL) -> Interval:
    """``mean(a - b)`` over pairs that share a seed, with the t-interval of the differences."""
    x, y = _values("a", a), _values("b", b)
    if len(x) != len(y):
        raise ValueError(f"a paired difference needs as many values in a as in b (one per seed), "
                         f"got {len(x)} and {len(y)}")
    iv = mean_interval(x - y, level)
    return Interval(iv.estimate, iv.lo, iv.hi, iv.n, iv.df, "paired t", level)


def welch_difference(a, b, level: float = LEVEL) -> Interval:
    """``mean(a) - mean(b)`` for independent samples, with Welch's t-interval (Welch-Satterthwaite
    degrees of freedom). Infinite unless both samples have at least two values (a spread of zero in
    both gives a point)."""
    _check_level(level)
    x, y = _values("a", a), _values("b", b)
    d = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return Interval(d, -math.inf, math.inf, min(len(x), len(y)), 0.0, "welch", level)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se2 = float(vx + vy)
    if se2 == 0:
        return Interval(d, d, d, min(len(x), len(y)), math.inf, "welch", level)
    df = se2 ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    half = t_quantile(0.5 + level / 2, df) * math.sqrt(se2)
    return Interval(d, d - half, d + half, min(len(x), len(y)), float(df), "welch", level)


def difference(a, b, *, paired: bool, level: float = LEVEL) -> Interval:
    """:func:`paired_difference` or :func:`welch_difference`: say which, every time."""
    return paired_difference(a, b, level) if paired else welch_difference(a, b, level)


def clearly_above(a, b, *, paired: bool, level: float = LEVEL) -> bool:
    """mean(a) exceeds mean(b) with the ``level`` interval of the difference above zero."""
    return difference(a, b, paired=paired, level=level).lo > 0


def ratio_interval(d, g, level: float = LEVEL) -> Interval:
    """``mean(d) / mean(g)`` from paired samples with Fieller's interval: the ratios θ for which a paired
    t-test does not reject ``mean(d - θ g) = 0`` (``n - 1`` degrees of freedom). Infinite when mean(g)
    itself is not clearly away from zero, or for one pair."""
    _check_level(level)
    d, g = _values("d", d), _values("g", g)
    if len(d) != len(g):
        raise ValueError(f"ratio_interval needs paired samples, got {len(d)} and {len(g)} values")
    n = len(d)
    md, mg = float(d.mean()), float(g.mean())
    est = md / mg if mg != 0 else math.nan
    if n < 2:
        return Interval(est, -math.inf, math.inf, n, 0.0, "fieller", level)
    t2 = t_quantile(0.5 + level / 2, n - 1) ** 2 / n
    vdd, vgg = float(np.var(d, ddof=1)), float(np.var(g, ddof=1))
    vdg = float(np.cov(d, g, ddof=1)[0, 1])
    # (md - θ mg)^2 <= t2 (vdd - 2θ vdg + θ^2 vgg)  <=>  a θ^2 + b θ + c <= 0
    qa, qb, qc = mg * mg - t2 * vgg, -2 * (md * mg - t2 * vdg), md * md - t2 * vdd
    disc = qb * qb - 4 * qa * qc
    if qa <= 0 or disc < 0:
        return Interval(est, -math.inf, math.inf, n, float(n - 1), "fieller", level)
    r = math.sqrt(disc)
    return Interval(est, (-qb - r) / (2 * qa), (-qb + r) / (2 * qa), n, float(n - 1), "fieller", level)


def detectable_effect(sd: float, n: int, *, paired: bool, level: float = LEVEL, power: float = 0.8) -> float:
    """The smallest true difference that ``n`` seeds detect (interval clear of zero) with probability
    ``power``, when the per-seed values (paired: the per-seed differences) scatter with standard
    deviation ``sd``: ``(t_{1-α/2} + t_{power}) · sd · sqrt(k / n)``, k = 1 paired, 2 for two
    independent groups of ``n`` (df n - 1 and 2n - 2). Infinite for fewer than two seeds."""
    _check_level(level)
    _check_level(power)
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be a positive int (seeds), got {n!r}")
    if not (math.isfinite(sd) and sd >= 0):
        raise ValueError(f"sd must be a finite number >= 0, got {sd!r}")
    if n < 2:
        return math.inf
    df, k = (n - 1, 1) if paired else (2 * n - 2, 2)
    return (t_quantile(0.5 + level / 2, df) + t_quantile(power, df)) * sd * math.sqrt(k / n)


def seed_summary(table, by, columns, *, ci: bool = False):
    """Mean and sample std (ddof=1; NaN for one seed) over seeds of ``columns`` per group ``by``, as
    ``<col>`` and ``<col>_std`` (and, with ``ci=True``, the 95% t-interval as ``<col>_lo``/``<col>_hi``)
    plus ``seeds``: the tables and error bars the chapters draw, computed in this one place."""
    import pandas as pd
    by, columns = list(by), list(columns)
    g = table.groupby(by, sort=True)[columns]
    out = g.mean().join(g.std(ddof=1).add_suffix("_std")).join(g.size().rename("seeds"))
    if ci:
        half = g.std(ddof=1).mul([t_quantile(0.5 + LEVEL / 2, max(n - 1, 1)) if n > 1 else math.inf
                                  for n in g.size()], axis=0).div(np.sqrt(g.size()), axis=0)
        out = out.join((out[columns] - half).add_suffix("_lo")).join((out[columns] + half).add_suffix("_hi"))
    return out.reset_index() if isinstance(out, pd.DataFrame) else out
