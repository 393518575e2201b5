"""The plan against what a build measured: does ``bookbuild --plan`` tell the truth?

The cpu profile is planned cold (against an empty store, each run counted in the first chapter that needs it,
in notebook order, as a cold build trains it), then compared per chapter with the training seconds that a
cold build of the same profile recorded in the run store (each run's meta.json: its wall time, evaluation and
trackers included; a batched run's share of its group). The plan is meant to hold within ±30% per chapter.

    python tests/bench/bench_plan.py [--store data/runs] [--chapter-seconds timings.json]

``--chapter-seconds`` (a JSON object: notebook -> measured wall seconds of the build) adds each chapter's whole
time, so that what the plan leaves out (the chapters' own measurements after training) shows too. The store must
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, default=REPO / "data" / "runs")
    ap.add_argument("--chapter-seconds", type=Path)
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as empty:
        t0 = time.perf_counter()
        runs = plan_book(args.profile, REPO / "notebooks", runs_dir=Path(empty), log=lambda s: None)
        planning = time.perf_counter() - t0
    runs = runs[~runs["planned earlier"]]
    got = measured_seconds(args.store, runs.run)
    runs = runs.assign(measured=runs.run.map(got))
    missing = int(runs.measured.isna().sum())
    runs = runs[runs.measured.notna()]           # compared on the runs both have
    whole = json.loads(args.chapter_seconds.read_text()) if args.chapter_seconds else {}
    table = runs.groupby("notebook", sort=False).agg(runs=("run", "size"), planned=("seconds", "sum"),
                                                     measured=("measured", "sum")).reset_index()
    table["ratio"] = table.planned / table.measured
    if whole:
        table["chapter wall"] = table.notebook.map(whole)
        table["not planned"] = table["chapter wall"] - table.measured
    pd.set_option("display.width", 200)
    print(f"plan of the {args.profile} profile made in {planning:.1f} s; measured: {args.store} "
          f"({missing} planned runs missing from it)")
    print(table.round({"planned": 1, "measured": 1, "ratio": 2, "chapter wall": 1, "not planned": 1}).to_string(index=False))
    tot_p, tot_m = table.planned.sum(), table.measured.sum()
    print(f"all chapters: planned {tot_p:.0f} s, measured {tot_m:.0f} s, ratio {tot_p / max(tot_m, 1e-9):.2f}")
    within = table[(table.measured > 0)].ratio.between(0.7, 1.3)
    print(f"chapters within ±30%: {int(within.sum())} of {int(within.size)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
