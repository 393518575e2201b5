"""A robustness check anyone can run: every verdict again, on a second, disjoint set of training seeds.

    python -m sparsegap.robustness                     # what `make robustness` runs (cpu profile, offset 100)
    python -m sparsegap.robustness --only 06_gradient_snr --profile smoke -j 1
    python -m sparsegap.robustness --compare-only      # no execution: compare the two folders already there

The verdict-bearing chapters (those whose study module states verdicts) run again with every training-seed
parameter shifted by ``--offset`` (``seeds = [0, 1, 2]`` becomes ``[100, 101, 102]``; chapter 12's
``remedy_seeds`` and ``select_seed`` likewise), through :func:`sparsegap.bookbuild.execute_notebooks`'s
``overrides``, into a run store of their own (``data/runs-robustness``) and a folder of their own
(``data/robustness/notebooks``); the book's store and pages are never touched. Data seeds (which samples are
noisy, a pruning heuristic's batches, a landscape's random directions) stay as they are: the check asks
whether the verdicts survive other trainings of the same experiment, not another experiment.

The first seed set is the book's executed notebooks (``--reference``, default ``book/notebooks``, what
`make book` writes). A chapter missing there (or executed there with another profile's parameters) runs with
its own seeds into ``<out>/reference`` and a store of its own (``data/runs-robustness-reference``).

The table, one line per verdict: its label, its status on each seed set, whether they agree, and the key
effect (the verdict's first evidence, with its 95% interval) on each; then ``k of n statuses agree``. It is
printed, and written as ``robustness.md`` and ``robustness.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from . import bookbuild, paths
from .bookbuild import PROFILES

# Parameters that choose the seeds runs are trained with: the seed set this check replaces.
TRAINING_SEED_PARAMETERS = ("seeds", "remedy_seeds", "select_seed")
# Parameters that choose data or a measurement's randomness: the same experiment keeps them.
DATA_SEED_PARAMETERS = ("noise_seed", "prune_seed", "direction_seed")
DEFAULT_OFFSET = 100
# Beside the book's store: <checkout>/data when run from a checkout, else the user cache (sparsegap.paths).
DEFAULT_OUT = paths.state_dir() / "robustness"
DEFAULT_RUNS_DIR = paths.state_dir() / "runs-robustness"
DEFAULT_REFERENCE = paths.book_dir() / "notebooks"
DEFAULT_REFERENCE_RUNS_DIR = paths.state_dir() / "runs-robustness-reference"
BOOK_RUNS_DIR = paths.state_dir() / "runs"
MISSING = "missing"
# Parameters of an executed notebook that say where it ran, not what it computed.
_WHERE = ("executor", "runs_dir", "device", "download")


def is_seed_like(name: str) -> bool:
    return name in ("seed", "seeds") or name.endswith(("_seed", "_seeds"))


def training_seed_parameters(declared: Iterable[str], notebook: str = "") -> list[str]:
    """The training-seed parameters among a notebook's ``declared`` ones. A seed-like name that is neither a
    known training seed nor a known data seed is an error: the check cannot tell whether to shift it."""
    declared = list(declared)
    unknown = [n for n in declared if is_seed_like(n)
               and n not in TRAINING_SEED_PARAMETERS and n not in DATA_SEED_PARAMETERS]
    if unknown:
        raise ValueError(f"{notebook or 'a notebook'} declares the seed parameter(s) {unknown}, which "
                         f"sparsegap.robustness does not know: add each to TRAINING_SEED_PARAMETERS (it chooses "
                         f"the seeds runs train with) or DATA_SEED_PARAMETERS (it chooses data or a measurement)")
    return [n for n in declared if n in TRAINING_SEED_PARAMETERS]


def seeds_of(values: Mapping[str, object], names: Iterable[str]) -> set[int]:
    """Every seed the parameters ``names`` of ``values`` name (ints or lists of ints; None names none)."""
    out: set[int] = set()
    for name in names:
        v = values.get(name)
        if v is None:
            continue
        out.update(int(s) for s in (v if isinstance(v, (list, tuple)) else [v]))
    return out


def shift_seeds(values: Mapping[str, object], names: Iterable[str], offset: int) -> dict[str, object]:
    """The overrides that move each training-seed parameter of ``values`` by ``offset``: a list keeps its
    length and order (``[0, 1, 2]`` -> ``[100, 101, 102]``), an int moves (``0`` -> ``100``), None stays."""
    check_offset(offset)
    out: dict[str, object] = {}
    for name in names:
        v = values.get(name)
        if v is None:
            continue
        out[name] = [int(s) + offset for s in v] if isinstance(v, (list, tuple)) else int(v) + offset
    return out


def check_offset(offset: object, seeds: Iterable[int] = ()) -> int:
    """``offset`` as an int, or a ValueError naming it: it must be a positive int, and the shifted ``seeds``
    must share none with ``seeds`` (the two sets disjoint)."""
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise ValueError(f"offset={offset!r}: must be a positive int (the seeds are shifted by it), "
                         f"e.g. {DEFAULT_OFFSET}")
    if offset <= 0:
        raise ValueError(f"offset={offset}: must be a positive int (a negative one would give negative seeds "
                         f"or the book's own; 0 gives the same seeds), e.g. {DEFAULT_OFFSET}")
    seeds = sorted(set(int(s) for s in seeds))
    common = sorted(set(seeds) & {s + offset for s in seeds})
    if common:
        smallest = max(seeds) - min(seeds) + 1
        raise ValueError(f"offset={offset} does not make the seed sets disjoint: seeds {common} would be in both "
                         f"(the first set is {seeds}); allowed: an offset of at least {smallest}, "
                         f"e.g. {max(DEFAULT_OFFSET, smallest)}")
    return offset


@dataclass(frozen=True)
class Chapter:
    """One verdict-bearing notebook under a profile: its training-seed parameters, their values (the first
    seed set) and the overrides that give the second."""

    name: str
    path: Path
    parameters: tuple[str, ...]
    values: dict
    overrides: dict

    @property
    def seeds_a(self) -> list[int]:
        return sorted(seeds_of(self.values, self.parameters))

    @property
    def seeds_b(self) -> list[int]:
        return sorted(seeds_of(self.overrides, self.parameters))


def has_verdicts(module) -> bool:
    """A chapter states verdicts when its study module builds :class:`sparsegap.verdict.Verdict` values."""
    try:
        return "Verdict(" in inspect.getsource(module)
    except (OSError, TypeError):
        return False


def verdict_notebooks(notebooks_dir: Path | None = None, only: Sequence[str] | None = None,
                      profile: str = "cpu") -> list[tuple[Path, object, dict]]:
    """(notebook, study module, its parameters under ``profile``) of every verdict-bearing notebook, or of those
    named by ``only`` (each of which must be one)."""
    found = []
    for nb in bookbuild.find_notebooks(notebooks_dir, only):
        module, values = bookbuild.notebook_parameters(nb, profile)
        if has_verdicts(module):
            found.append((nb, module, values))
        elif only:
            raise ValueError(f"only={nb.stem!r}: this notebook states no verdicts; allowed: the verdict-bearing "
                             f"notebooks {[n.stem for n, _, _ in verdict_notebooks(notebooks_dir, None, profile)]}")
    return found


def plan_chapters(notebooks_dir: Path | None = None, only: Sequence[str] | None = None,
                  profile: str = "cpu", offset: int = DEFAULT_OFFSET) -> list[Chapter]:
    """The verdict-bearing chapters with their shifted seeds; the offset must make the seeds of all of them
    (together: chapters share runs) disjoint from the shifted ones."""
    check_offset(offset)
    chapters = []
    for nb, module, values in verdict_notebooks(notebooks_dir, only, profile):
        names = tuple(training_seed_parameters(module.PARAMETERS.params, nb.stem))
        if not names:
            raise ValueError(f"{nb.stem} states verdicts but declares no training-seed parameter "
                             f"(one of {TRAINING_SEED_PARAMETERS}); the check cannot give it other seeds")
        chapters.append(Chapter(nb.stem, nb, names, {n: values.get(n) for n in names},
                                shift_seeds(values, names, offset)))
    check_offset(offset, set().union(*(set(c.seeds_a) for c in chapters)))
    return chapters


# ---------------------------------------------------------------------------------------------- comparison

@dataclass(frozen=True)
class Row:
    """One verdict on both seed sets."""

    notebook: str
    label: str
    claim: str
    status_a: str
    status_b: str
    effect_name: str
    effect_a: str
    effect_b: str
    seeds_a: tuple[int, ...]
    seeds_b: tuple[int, ...]

    @property
    def same(self) -> bool:
        return self.status_a == self.status_b and self.status_a != MISSING


def read_verdicts(path: Path) -> list:
    """The verdicts an executed notebook displayed (:func:`sparsegap.verdict.verdicts_in_notebook`)."""
    import nbformat

    from .verdict import verdicts_in_notebook
    return verdicts_in_notebook(nbformat.read(str(path), as_version=4))


def _key_effect(v) -> tuple[str, str]:
    e = v.key_effect
    return ("", "—") if e is None else (e.name, e.effect.format(e.fmt))


def _labelled(verdicts) -> dict:
    """Verdicts by label; a label that recurs in one notebook gets ``#2``, ``#3``."""
    out: dict = {}
    for v in verdicts:
        label, k = v.label, 2
        while label in out:
            label, k = f"{v.label} #{k}", k + 1
        out[label] = v
    return out


def compare(reference: Path, shifted: Path, names: Sequence[str] | None = None) -> list[Row]:
    """One row per verdict of the executed notebooks ``names`` (default: every notebook in either folder
    that displayed a verdict), in notebook order and each notebook's order; a verdict or notebook found on
    one side only has status ``missing`` on the other."""
    reference, shifted = Path(reference), Path(shifted)
    for flag, folder in (("--reference", reference), ("--shifted", shifted)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{flag}={str(folder)!r} is not a directory of executed notebooks")
    if names is None:
        names = sorted({p.stem for p in reference.glob("*.ipynb")} | {p.stem for p in shifted.glob("*.ipynb")})
    rows = []
    for name in names:
        sides = []
        for folder in (reference, shifted):
            path = folder / f"{name}.ipynb"
            sides.append(_labelled(read_verdicts(path)) if path.is_file() else {})
        a, b = sides
        for label in list(a) + [lab for lab in b if lab not in a]:
            va, vb = a.get(label), b.get(label)
            ea, eb = _key_effect(va) if va else ("", "—"), _key_effect(vb) if vb else ("", "—")
            rows.append(Row(name, label, (va or vb).claim, va.status if va else MISSING,
                            vb.status if vb else MISSING, ea[0] or eb[0], ea[1], eb[1],
                            tuple(va.seeds) if va else (), tuple(vb.seeds) if vb else ()))
    return rows


def agreement(rows: Sequence[Row]) -> tuple[int, int]:
    """(statuses that agree, verdicts)."""
    return sum(r.same for r in rows), len(rows)


def _seeds_text(seeds: Sequence[int]) -> str:
    return ", ".join(str(s) for s in seeds) if seeds else "?"


def format_table(rows: Sequence[Row], a: str = "seeds A", b: str = "seeds B") -> str:
    """The table as aligned plain text, with the count of agreeing statuses below it."""
    head = ("verdict", f"status, {a}", f"status, {b}", "same?", f"key effect, {a}", f"key effect, {b}")
    body = [(f"{r.notebook[:2]} {r.label}", r.status_a, r.status_b, "yes" if r.same else "NO", r.effect_a, r.effect_b)
            for r in rows]
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    line = lambda cells: " | ".join(f"{c:<{w}}" for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    k, n = agreement(rows)
    return "\n".join([line(head), "-+-".join("-" * w for w in widths), *map(line, body), "",
                      f"{k} of {n} statuses agree"])


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def format_markdown(rows: Sequence[Row], a: str = "seeds A", b: str = "seeds B", header: str = "") -> str:
    """The table in Markdown, with the seeds of each chapter and the count below it."""
    k, n = agreement(rows)
    out = [header, ""] if header else []
    out += [f"| chapter | verdict | status, {a} | status, {b} | same? | key effect | on {a} | on {b} |",
            "|---|---|---|---|---|---|---|---|"]
    out += [f"| {_md(r.notebook)} | {_md(r.label)} | {r.status_a} | {r.status_b} | {'yes' if r.same else '**no**'} "
            f"| {_md(r.effect_name)} | {_md(r.effect_a)} | {_md(r.effect_b)} |" for r in rows]
    out += ["", f"**{k} of {n} statuses agree.**", "", "Seeds behind each chapter's verdicts:", ""]
    seen = {}
    for r in rows:
        seen.setdefault(r.notebook, (set(), set()))
        seen[r.notebook][0].update(r.seeds_a)
        seen[r.notebook][1].update(r.seeds_b)
    out += [f"- {name}: {a} {_seeds_text(sorted(sa))}; {b} {_seeds_text(sorted(sb))}"
            for name, (sa, sb) in seen.items()]
    return "\n".join(out) + "\n"


def write_report(rows: Sequence[Row], out: Path, meta: Mapping[str, object]) -> tuple[Path, Path]:
    """``robustness.md`` and ``robustness.json`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    k, n = agreement(rows)
    header = "# Robustness: every verdict on two disjoint seed sets\n\n" + "\n".join(
        f"- {key}: {value}" for key, value in meta.items())
    md = out / "robustness.md"
    md.write_text(format_markdown(rows, header=header))
    js = out / "robustness.json"
    js.write_text(json.dumps({**{k_: (str(v) if isinstance(v, Path) else v) for k_, v in meta.items()},
                              "agree": k, "verdicts": n,
                              "rows": [asdict(r) | {"same": r.same} for r in rows]}, indent=1) + "\n")
    return md, js


# ---------------------------------------------------------------------------------------------- running

def _ran_with(path: Path, expected: Mapping[str, object]) -> bool:
    """Whether the executed notebook ``path`` ran with the profile parameters ``expected`` (papermill's record;
    where it ran aside)."""
    import nbformat

    recorded = dict(nbformat.read(str(path), as_version=4).metadata.get("papermill", {}).get("parameters", {}))
    strip = lambda d: {k: v for k, v in d.items() if k not in _WHERE}  # noqa: E731
    return strip(recorded) == strip(dict(expected))


def _same_path(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def run(profile: str = "cpu", offset: int = DEFAULT_OFFSET, only: Sequence[str] | None = None,
        jobs: int | None = None, executor: str | None = None, runs_dir: Path = DEFAULT_RUNS_DIR,
        out: Path = DEFAULT_OUT, reference: Path = DEFAULT_REFERENCE,
        reference_runs_dir: Path = DEFAULT_REFERENCE_RUNS_DIR, notebooks_dir: Path | None = None,
        compare_only: bool = False, oversubscribe: bool = False,
        log: Callable[[str], None] | None = None) -> list[Row]:
    """Run the check (see the module's docstring) and return its rows; the table is written to ``out``."""
    log = log or functools.partial(print, flush=True)
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is not one of {PROFILES}")
    out, runs_dir, reference = Path(out), Path(runs_dir), Path(reference)
    shifted = out / "notebooks"
    if compare_only:
        if not reference.is_dir():
            raise FileNotFoundError(f"--reference={str(reference)!r} is not a directory; --compare-only needs the "
                                    f"executed notebooks of the first seed set there (`make book` writes "
                                    f"book/notebooks)")
        if not shifted.is_dir():
            raise FileNotFoundError(f"--out={str(out)!r} has no notebooks/ folder; --compare-only needs the executed "
                                    f"notebooks of the second seed set there (run without --compare-only first)")
        names = [n.removesuffix(".ipynb") for n in only] if only else None
        if names:
            bookbuild.find_notebooks(notebooks_dir, names)       # unknown names: the same error as a run
        rows = compare(reference, shifted, names)
        meta = {"seeds A": reference, "seeds B": shifted, "mode": "compare only"}
    else:
        check_offset(offset)
        for flag, path, book in (("--runs-dir", runs_dir, BOOK_RUNS_DIR), ("--out", out, paths.book_dir()),
                                 ("--reference-runs-dir", reference_runs_dir, BOOK_RUNS_DIR)):
            if _same_path(path, book):
                raise ValueError(f"{flag}={str(path)!r} is the book's; the check needs a folder of its own "
                                 f"(default {flag.lstrip('-').replace('-', '_')}: a folder under data/)")
        if _same_path(runs_dir, reference_runs_dir):
            raise ValueError(f"--runs-dir and --reference-runs-dir are both {str(runs_dir)!r}; each seed set needs "
                             f"a store of its own")
        chapters = plan_chapters(notebooks_dir, only, profile, offset)
        names = [c.name for c in chapters]
        # The first seed set: the book's pages, or this check's own where a page is missing or another profile's.
        ref_dirs = {}
        todo = []
        for c in chapters:
            page = reference / f"{c.name}.ipynb"
            if page.is_file() and _ran_with(page, bookbuild.load_parameters(c.path, profile)):
                ref_dirs[c.name] = reference
            else:
                why = "missing" if not page.is_file() else f"executed with other parameters than the {profile} profile"
                log(f"robustness: {page} is {why}; {c.name} runs with its own seeds into {out / 'reference'}")
                todo.append(c.name)
                ref_dirs[c.name] = out / "reference" / "notebooks"
        log(f"robustness: {len(chapters)} verdict-bearing chapters, {profile} profile, seeds shifted by {offset}; "
            f"store {runs_dir}, notebooks {shifted}")
        for c in chapters:
            log(f"  {c.name}: " + "; ".join(f"{p} {c.values[p]} -> {c.overrides[p]}" for p in c.overrides))
        start = time.perf_counter()
        if todo:
            log(f"robustness: the first seed set of {len(todo)} chapter(s), into {out / 'reference'}")
            bookbuild.execute_notebooks(profile, out / "reference", notebooks_dir, todo, reference_runs_dir,
                                        log=lambda s: log("  [seeds A] " + s.strip()), jobs=jobs,
                                        oversubscribe=oversubscribe, executor=executor)
        log(f"robustness: the second seed set, {len(chapters)} chapter(s)")
        done = []

        def progress(line: str) -> None:
            if line.startswith("  ") and line.rstrip().endswith(("s", ")")) and ":" in line:
                done.append(line)
                log(f"  [seeds B {len(done)}/{len(chapters)}] " + line.strip())
            else:
                log("  [seeds B] " + line.strip())

        bookbuild.execute_notebooks(profile, out, notebooks_dir, names, runs_dir, log=progress, jobs=jobs,
                                    oversubscribe=oversubscribe, executor=executor,
                                    overrides={c.name: c.overrides for c in chapters})
        rows = []
        for c in chapters:     # a verdict that does not list its seeds gets the chapter's
            rows += [dataclasses.replace(r, seeds_a=r.seeds_a or tuple(c.seeds_a),
                                         seeds_b=r.seeds_b or tuple(c.seeds_b))
                     for r in compare(ref_dirs[c.name], shifted, [c.name])]
        meta = {"profile": profile, "offset": offset, "seeds A": ", ".join(sorted({str(ref_dirs[n]) for n in names})),
                "seeds B": shifted, "store of seeds B": runs_dir,
                "minutes": round((time.perf_counter() - start) / 60, 1)}
    md, js = write_report(rows, out, meta)
    log("")
    log(format_table(rows))
    log(f"(written to {md} and {js})")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparsegap.robustness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default="cpu", help="parameter profile (default cpu)")
    parser.add_argument("--offset", type=int, default=DEFAULT_OFFSET,
                        help=f"the second seed set is the first shifted by this (default {DEFAULT_OFFSET})")
    parser.add_argument("--jobs", "-j", type=int, default=None,
                        help="notebooks executed at once (default: one per core)")
    parser.add_argument("--oversubscribe", action="store_true", help="allow more jobs than cores")
    parser.add_argument("--executor", metavar="SPEC", help="where every notebook trains its runs (as bookbuild)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these verdict-bearing notebooks")
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR,
                        help="run store of the second seed set (default data/runs-robustness)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder: notebooks/ (second seed set), reference/ (first, where the book's "
                             "is missing), robustness.md and .json (default data/robustness)")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE,
                        help="executed notebooks of the first seed set (default book/notebooks, from `make book`)")
    parser.add_argument("--reference-runs-dir", type=Path, default=DEFAULT_REFERENCE_RUNS_DIR,
                        help="run store for first-seed-set chapters missing from --reference "
                             "(default data/runs-robustness-reference)")
    parser.add_argument("--notebooks-dir", type=Path, help="default: the checkout's notebooks/, else the packaged ones")
    parser.add_argument("--compare-only", action="store_true",
                        help="execute nothing: compare --reference with <out>/notebooks")
    args = parser.parse_args(argv)
    try:
        run(args.profile, args.offset, args.only, args.jobs, args.executor, args.runs_dir, args.out, args.reference,
            args.reference_runs_dir, args.notebooks_dir, args.compare_only, args.oversubscribe)
    except (FileNotFoundError, ValueError) as err:
        print(f"robustness: {err}", file=sys.stderr)
        return 2
    except bookbuild.NotebookFailed as err:
        print(f"robustness: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
