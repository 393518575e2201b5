"""The plan against what a build measured: does ``bookbuild --plan`` tell the truth?

The cpu profile is planned cold (against an empty store, each run and each measurement counted in the first
chapter that needs it, in notebook order, as a cold build takes them), then compared per chapter with what a
cold build of the same profile recorded in the run store:

- ``train``: each run's meta.json, its wall time with evaluation and trackers (a batched run's share of its
  group);
- ``measure``: each measurement file's seconds (``Run.measure``), the chapters' own measurements;
- ``rest`` (with ``--warm-seconds``): each chapter's wall time in a warm rebuild on that same store, which trains
  and measures nothing: the kernel's start, the imports, loading the runs, the figures and the verdicts. The
  plan runs and times each notebook's prelude (``startup``: the kernel's start, the imports and the dataset);
  it does not count the figures, tables and verdicts after the runs.

A chapter's measured time is the sum of the three, each a wall clock of its own; it is what the chapter costs
built alone (``-j1``). A ``-j2`` build's chapter walls (``--chapter-seconds``) also hold the time a kernel waits
for a run that the other kernel trains, so they are shown beside it, not compared. The plan is meant to hold
within ±30% per chapter.

    python tests/bench/bench_plan.py [--store data/runs] [--warm-seconds warm.json] [--chapter-seconds cold.json]

Both JSON files are objects notebook -> seconds (``bookbuild`` prints them as its "timings"). The store must
hold the runs of a build made with this code on this kind of machine; runs missing from it are reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from sparsegap.bookbuild import plan_book

REPO = Path(__file__).resolve().parents[2]


def measured_seconds(store: Path, run_ids) -> dict[str, float]:
    out = {}
    for rid in run_ids:
        meta = store / rid / "meta.json"
        if meta.is_file():
            out[rid] = float(json.loads(meta.read_text()).get("seconds", 0.0))
    return out


def measurement_seconds(store: Path, rows: pd.DataFrame) -> list[float]:
    """The recorded seconds of each planned measurement (a run's file of that name; NaN where none is kept, or
    it was written before measurements recorded their time)."""
    out = []
    for rid, name in zip(rows.run, rows.measurement):
        files = sorted((store / rid / "measurements").glob(f"{name}-*.json"))
        secs = [json.loads(f.read_text()).get("seconds") for f in files]
        secs = [s for s in secs if s is not None]
        out.append(sum(secs) / len(secs) if secs else float("nan"))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, default=REPO / "data" / "runs")
    ap.add_argument("--warm-seconds", type=Path)
    ap.add_argument("--chapter-seconds", type=Path)
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as empty:
        t0 = time.perf_counter()
        plan = plan_book(args.profile, REPO / "notebooks", runs_dir=Path(empty), log=lambda s: None)
        planning = time.perf_counter() - t0
    runs = plan.runs[~plan.runs["planned earlier"]]
    got = measured_seconds(args.store, runs.run)
    runs = runs.assign(measured=runs.run.map(got))
    missing = int(runs.measured.isna().sum())
    runs = runs[runs.measured.notna()]           # compared on the runs both have
    ms = plan.measurements[~plan.measurements["planned earlier"]]
    ms = ms.assign(measured=measurement_seconds(args.store, ms))
    m_missing = int(ms.measured.isna().sum())
    ms = ms[ms.measured.notna()]
    table = plan.chapters()[["notebook", "startup"]]
    for what, rows in (("train", runs), ("measure", ms)):
        sums = rows.groupby("notebook", sort=False)[["seconds", "measured"]].sum()
        table[f"{what} planned"] = table.notebook.map(sums.seconds).fillna(0.0)
        table[f"{what} measured"] = table.notebook.map(sums.measured).fillna(0.0)
    table["planned"] = table["train planned"] + table["measure planned"] + table.startup
    table["measured"] = table["train measured"] + table["measure measured"]
    if args.warm_seconds:
        warm = json.loads(args.warm_seconds.read_text())
        table["rest measured"] = table.notebook.map(warm)
        table["measured"] += table["rest measured"]
    table["ratio"] = table.planned / table.measured
    if args.chapter_seconds:
        table["-j2 chapter wall"] = table.notebook.map(json.loads(args.chapter_seconds.read_text()))
    pd.set_option("display.width", 250)
    print(f"plan of the {args.profile} profile made in {planning:.1f} s ({min(plan.startup.values()):.1f} to {max(plan.startup.values()):.1f} s to start a notebook); "
          f"measured: {args.store} ({missing} planned runs and {m_missing} planned measurements missing from it)")
    print(table.round(1).assign(ratio=table.ratio.round(2)).to_string(index=False))
    for what in ("train", "measure"):
        p, m = table[f"{what} planned"].sum(), table[f"{what} measured"].sum()
        print(f"{what}: planned {p:.0f} s, measured {m:.0f} s, ratio {p / max(m, 1e-9):.2f}")
    tot_p, tot_m = table.planned.sum(), table.measured.sum()
    print(f"all chapters: planned {tot_p:.0f} s, measured {tot_m:.0f} s, ratio {tot_p / max(tot_m, 1e-9):.2f}"
          + ("" if args.warm_seconds else " (without --warm-seconds, the chapters' rest is not in 'measured')"))
    within = table.ratio.between(0.7, 1.3)
    print(f"chapters within ±30%: {int(within.sum())} of {int(within.size)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
