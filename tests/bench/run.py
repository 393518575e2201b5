"""Run every benchmark (tests/bench/bench_*.py, each with a main()) and print its table.

Benchmarks measure speed as ratios against a baseline timed in the same run, so that a noisy or
slower machine changes both sides alike. They never fail a build; `make bench` prints them.
"""

import importlib.util
import sys
import time
from pathlib import Path

here = Path(__file__).parent


def main() -> None:
    names = sys.argv[1:]
    for path in sorted(here.glob("bench_*.py")):
        if names and path.stem not in names and path.stem.removeprefix("bench_") not in names:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"\n=== {path.stem} ===", flush=True)
        t0 = time.perf_counter()
        module.main([])  # each benchmark parses its own options; run.py passes none
        print(f"({path.stem}: {time.perf_counter() - t0:.1f} s)", flush=True)


if __name__ == "__main__":   # benchmarks that spawn worker processes (dask) import this module again in them
    main()
