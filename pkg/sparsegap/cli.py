"""The ``sparsegap`` command: re-execute the book's chapters anywhere, with your own parameters.

    sparsegap run 02 -p epochs=1 --profile smoke     # one chapter: an executed notebook and its HTML page
    sparsegap run 01_two_regimes -f my.yaml -p "seeds=[0, 1, 2]" --out results/
    sparsegap book --only 01 02 -p device=cuda       # execute chapters, then build the HTML book
    sparsegap plan --profile paper                   # what a profile would train, and about how long
    sparsegap runs ls                                # the run store (sparsegap runs --help)

A chapter is named by its notebook (``02_fisher_trajectory``) or its number (``02`` or ``2``). ``-p KEY=VALUE``
values are read as YAML (``epochs=1`` is an int, ``seeds=[0, 1]`` a list, ``runs_dir=null`` None) and checked
against the chapter's parameters before any kernel starts; ``--profile`` picks the parameter files the book
ships (cpu: the notebooks' own defaults; smoke: seconds; paper: the papers' settings, for a GPU), ``-f``
a file of your own over them, ``-p`` over both. ``epochs`` also sets a chapter's ``*_epochs`` parameters when
it has no ``epochs`` of its own (chapter 2: ``dense_epochs`` and ``sparse_epochs``).

Runs go to the run store (``--runs-dir``, else ``$SPARSEGAP_RUNS_DIR``, else the checkout's ``data/runs``,
else the user cache: :mod:`sparsegap.paths`), so a chapter run twice trains nothing the second time.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from . import bookbuild, booktoc, kernels, paths
from .ledger import notebook_title

PROG = "sparsegap"
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# ``epochs`` for a chapter that counts its epochs per stage: every ``<stage>_epochs`` it declares.
EPOCHS_ALIAS = "epochs"


class UsageError(Exception):
    """Bad input on the command line: the message names the option, the value and what is allowed."""


# ----------------------------------------------------------------------------------------------- input


def parse_assignment(text: str) -> tuple[str, object]:
    """``"epochs=1"`` -> ``("epochs", 1)``: the value read as YAML, so numbers, booleans, lists and null work."""
    key, sep, raw = str(text).partition("=")
    key = key.strip()
    if not sep or not KEY.fullmatch(key):
        raise UsageError(f"-p {text!r}: expected KEY=VALUE with KEY a parameter name (e.g. -p epochs=1, "
                         f"-p 'seeds=[0, 1]')")
    if not raw.strip():
        raise UsageError(f"-p {text!r}: no value after '='; write {key}=null for None")
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise UsageError(f"-p {text!r}: the value {raw!r} is not valid YAML ({err.problem or err}); "
                         f"quote lists in the shell: -p '{key}=[0, 1]'") from None


def parse_assignments(items: Sequence[str] | None) -> dict:
    return dict(parse_assignment(item) for item in items or ())


def resolve_chapter(name: str, notebooks_dir: Path | None = None) -> Path:
    """The notebook of chapter ``name``: its stem (``02_fisher_trajectory``, ``.ipynb`` allowed) or its number."""
    notebooks = bookbuild.find_notebooks(notebooks_dir)
    stems = {nb.stem: nb for nb in notebooks}
    text = str(name).removesuffix(".ipynb")
    if text in stems:
        return stems[text]
    if text.isdigit():
        found = [nb for nb in notebooks if nb.stem.split("_", 1)[0].isdigit() and int(nb.stem.split("_", 1)[0]) == int(text)]
        if len(found) == 1:
            return found[0]
    raise UsageError(f"chapter {name!r}: no such chapter; give its notebook or its number, one of "
                     f"{', '.join(sorted(stems))}")


def declared(notebook: Path) -> set[str]:
    """The parameters ``notebook`` declares in its ``parameters`` cell."""
    import papermill

    return set(papermill.inspect_notebook(str(notebook)))


def epochs_targets(names: set[str]) -> list[str]:
    """What ``epochs`` sets in a chapter declaring ``names``: ``epochs`` itself, else every ``*_epochs``."""
    if EPOCHS_ALIAS in names:
        return [EPOCHS_ALIAS]
    return sorted(n for n in names if n.endswith("_" + EPOCHS_ALIAS))


def accepts(notebook: Path, key: str) -> bool:
    names = declared(notebook)
    return key in names or (key == EPOCHS_ALIAS and bool(epochs_targets(names)))


def for_notebook(notebook: Path, values: Mapping) -> dict:
    """The part of ``values`` that ``notebook`` declares, with ``epochs`` spread over its ``*_epochs``
    parameters when it has no ``epochs`` itself."""
    names = declared(notebook)
    out = {k: v for k, v in values.items() if k in names}
    if EPOCHS_ALIAS in values:
        out |= {n: values[EPOCHS_ALIAS] for n in epochs_targets(names)}
    return out


def check_values(notebook: Path, profile: str, values: Mapping, source: str) -> None:
    """The chapter's own parameter check (types, ranges, unknown names with a suggestion), before a kernel starts."""
    try:
        bookbuild.notebook_parameters(notebook, profile, values)
    except (TypeError, ValueError) as err:
        raise UsageError(f"{source}: {err}") from None


def overrides_for(notebooks: Sequence[Path], values: Mapping, profile: str) -> dict[str, dict]:
    """``-p`` values for every notebook that declares them; a key that no selected notebook declares is an error."""
    per = {nb.stem: for_notebook(nb, values) for nb in notebooks}
    unused = sorted(k for k in values if not any(accepts(nb, k) for nb in notebooks))
    if unused:
        known = sorted(set().union(*(declared(nb) for nb in notebooks)))
        raise UsageError(f"-p {_with_hints(unused, known)}: no selected chapter declares "
                         f"{'this parameter' if len(unused) == 1 else 'these parameters'} "
                         f"({', '.join(nb.stem for nb in notebooks)}); their parameters are {known}")
    for nb in notebooks:
        if per[nb.stem]:
            check_values(nb, profile, per[nb.stem], f"-p for {nb.stem}")
    return {stem: extra for stem, extra in per.items() if extra}


def _with_hints(names: Sequence[str], known) -> str:
    import difflib

    return ", ".join(n + "".join(f" (did you mean {m!r}?)" for m in difflib.get_close_matches(n, known, n=1))
                     for n in names)


def read_params_file(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"-f {str(path)!r}: no such file (a YAML mapping of parameter names to values)")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"-f {str(path)!r}: not valid YAML ({err})") from None
    if not isinstance(values, dict):
        raise UsageError(f"-f {str(path)!r} must hold a YAML mapping of parameter names to values, "
                         f"got {type(values).__name__}")
    return values


# ----------------------------------------------------------------------------------------------- run


def run_chapter(chapter: str, profile: str = "cpu", params_file: Path | None = None,
                values: Mapping | None = None, out: Path = Path("."), runs_dir: Path | None = None,
                html: bool = True, log=print) -> tuple[Path, Path | None]:
    """Execute one chapter into ``<out>/<chapter>.ipynb`` and render ``<out>/<chapter>_html/<chapter>.html``;
    returns both paths (the page None without ``html``). The kernel runs in ``out``."""
    import papermill

    notebook = resolve_chapter(chapter)
    parameters = bookbuild.load_parameters(notebook, profile)
    if params_file is not None:
        parameters |= read_params_file(params_file)
    extra = for_notebook(notebook, values or {})
    unknown = sorted(k for k in values or {} if not accepts(notebook, k))
    if unknown:
        raise UsageError(f"-p {_with_hints(unknown, declared(notebook))}: {notebook.stem} does not declare "
                         f"{'this parameter' if len(unknown) == 1 else 'these parameters'}; "
                         f"its parameters are {sorted(declared(notebook))}")
    parameters |= extra
    check_values(notebook, "cpu", parameters, f"{notebook.stem} ({profile} profile"
                 + (f", -f {params_file}" if params_file else "") + (", -p" if extra else "") + ")")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    output = out / notebook.name
    log(f"{PROG} run: executing {notebook.stem} ({profile} profile) into {output}")
    start = time.perf_counter()
    with kernels.kernel_env(runs_dir):
        try:
            papermill.execute_notebook(str(notebook), str(output), parameters=parameters or None,
                                       kernel_name=kernels.KERNEL, cwd=str(out), progress_bar=False)
        except Exception as err:
            raise bookbuild.NotebookFailed(f"{notebook.stem} failed (the executed notebook, with the error, is "
                                           f"{output}):\n{type(err).__name__}: {err}") from err
    bookbuild._hide_injected_parameters(output)
    log(f"  executed in {time.perf_counter() - start:.1f} s")
    return output, render_page(output, out, log) if html else None


def render_page(executed: Path, out: Path, log=print) -> Path:
    """One executed chapter as an HTML page, rendered by Jupyter Book as in the book (MyST, glued figures and
    numbers, citations, the verdicts' style), into ``<out>/<chapter>_html/``; returns the page."""
    import nbformat

    stem = Path(executed).stem
    sources = paths.book_sources()
    work = Path(out) / f".{stem}-page"
    shutil.rmtree(work, ignore_errors=True)
    (work / "_static").mkdir(parents=True)
    nb = nbformat.read(executed, as_version=4)
    if any("{cite" in c.source for c in nb.cells if c.cell_type == "markdown"):
        # The book lists its works cited on a page of their own; a page alone lists them at its end.
        nb.cells.append(nbformat.v4.new_markdown_cell("## References\n\n```{bibliography}\n```"))
    nbformat.write(nb, work / f"{stem}.ipynb")
    if (sources / "_static" / "sparsegap.css").is_file():
        shutil.copy(sources / "_static" / "sparsegap.css", work / "_static")
    book = yaml.safe_load((sources / "_config.yml").read_text()) if (sources / "_config.yml").is_file() else {}
    kept = {k: v for k, v in ((book.get("sphinx") or {}).get("config") or {}).items()
            if k in ("nb_merge_streams", "bibtex_reference_style")}
    config = {"title": notebook_title(nb) or stem, "author": book.get("author", "the sparsegap authors"),
              "copyright": str(book.get("copyright", "")),
              "only_build_toc_files": False, "execute": {"execute_notebooks": "off"},
              "parse": book.get("parse", {}),
              # links to other chapters have no target in a page alone: rendered as text
              "sphinx": {"config": kept | {"suppress_warnings": list(booktoc.PARTIAL_SUPPRESS)}}}
    if (sources / "references.bib").is_file():
        config["bibtex_bibfiles"] = [str((sources / "references.bib").resolve())]
    (work / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build",
           str(work / f"{stem}.ipynb"), "--config", str(work / "_config.yml")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    built = work / "_build" / "_page" / stem / "html"
    if done.returncode != 0 or not (built / f"{stem}.html").is_file():
        raise RuntimeError(f"jupyter-book could not render {executed} (exit {done.returncode}):\n"
                           f"{(done.stdout + done.stderr)[-3000:]}")
    target = Path(out) / f"{stem}_html"
    shutil.rmtree(target, ignore_errors=True)
    shutil.move(str(built), target)
    shutil.rmtree(work, ignore_errors=True)
    log(f"  page: {target / (stem + '.html')}")
    return target / f"{stem}.html"


# ----------------------------------------------------------------------------------------------- book


def build_book(profile: str, only: Sequence[str] | None, values: Mapping, jobs: int | None,
               runs_dir: Path | None, book_dir: Path | None, html: bool, oversubscribe: bool = False,
               executor: str | None = None, strict: bool = True) -> int:
    book_dir = Path(book_dir) if book_dir is not None else paths.book_dir()
    if html:        # before an hour of execution, not after
        if not (book_dir / "_config.yml").is_file():
            raise UsageError(f"--book-dir {str(book_dir)!r} holds no book sources (_config.yml, _toc.yml, the prose "
                             f"pages), which the HTML needs; they are in a checkout of the repository (its book/ "
                             f"folder): pass --book-dir CHECKOUT/book, or --no-html to execute the notebooks only "
                             f"(into {book_dir / 'notebooks'}), or `{PROG} run CHAPTER` for one chapter's page")
        if not (book_dir / bookbuild.WIDGET_SENTINEL).is_file():
            raise UsageError(f"{book_dir / bookbuild.WIDGET_SENTINEL} is missing; run `bash "
                             f"{book_dir}/_scripts/fetch_widget_js.sh {book_dir}` (or `make widgets`) first")
    notebooks = [resolve_chapter(c) for c in only] if only else bookbuild.find_notebooks(None)
    overrides = overrides_for(notebooks, values, profile) if values else None
    jobs = bookbuild.default_jobs() if jobs is None else jobs
    start = time.perf_counter()
    runs = bookbuild.execute_notebooks(profile, book_dir, None, [nb.stem for nb in notebooks], runs_dir, jobs=jobs,
                                       oversubscribe=oversubscribe, executor=executor, overrides=overrides)
    if html:
        index = bookbuild.build_html(book_dir, strict=strict) / "index.html"
        print(f"{PROG} book: {len(runs)} chapter(s) executed; the book is {index}")
    print(f"{PROG} book: done in {time.perf_counter() - start:.0f} s")
    return 0


# ----------------------------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def common(p, only: bool):
        p.add_argument("--profile", choices=bookbuild.PROFILES, default="cpu",
                       help="parameter profile: cpu (the notebooks' defaults), smoke (seconds), paper (the papers' "
                            "settings, for a GPU); default cpu")
        if only:
            p.add_argument("--only", nargs="+", metavar="CH", help="only these chapters (notebook name or number)")
        p.add_argument("--runs-dir", type=Path, help="run store (default: $SPARSEGAP_RUNS_DIR, else the checkout's "
                                                     "data/runs, else the user cache)")

    assign = dict(action="append", metavar="KEY=VALUE", default=[],
                  help="set a parameter (VALUE read as YAML); repeatable")
    book = sub.add_parser("book", help="execute chapters and build the HTML book",
                          description="Execute the chapters (all, or --only) and build the HTML book. -p applies to "
                                      "every chapter that declares the key. A partial build leaves the chapters not "
                                      "executed out of the book's table of contents.")
    common(book, only=True)
    book.add_argument("-p", "--param", dest="params", **assign)
    book.add_argument("-j", "--jobs", type=int, help="chapters executed at once (default: one per visible GPU with "
                                                     "CUDA, else one per core)")
    book.add_argument("--oversubscribe", action="store_true", help="allow more jobs than cores")
    book.add_argument("--executor", metavar="SPEC", help="where every chapter trains its runs (see bookbuild)")
    book.add_argument("--book-dir", type=Path, help="the book's folder (default: the checkout's book/)")
    book.add_argument("--no-html", action="store_true", help="execute the chapters, skip the HTML")
    book.add_argument("--no-strict", action="store_true", help="do not turn Sphinx warnings into errors")

    run = sub.add_parser("run", help="execute one chapter into a notebook and an HTML page",
                         description="Execute one chapter into <out>/<chapter>.ipynb and render its page "
                                     "<out>/<chapter>_html/<chapter>.html.")
    run.add_argument("chapter", metavar="CHAPTER", help="notebook name (02_fisher_trajectory) or number (02, 2)")
    common(run, only=False)
    run.add_argument("-p", "--param", dest="params", **assign)
    run.add_argument("-f", "--params-file", type=Path, metavar="FILE",
                     help="YAML file of parameters, over the profile's (-p goes over it)")
    run.add_argument("--out", type=Path, default=Path("."), help="output folder (default: the current one)")
    run.add_argument("--no-html", action="store_true", help="only the executed notebook")

    plan = sub.add_parser("plan", help="what a profile would train and an estimate of its time; trains nothing",
                          description="List, per chapter, the runs a profile would train, how many are stored, the "
                                      "epochs and an estimated time. Trains nothing, downloads nothing.")
    common(plan, only=True)
    plan.add_argument("--device", default="auto", help="device the estimate times steps on (default auto)")

    sub.add_parser("runs", help="list, show, remove, collect and export the stored runs (sparsegap runs --help)",
                   add_help=False)
    return parser


def _runs(argv: list[str]) -> int:
    try:
        from . import manage_runs
    except ImportError as err:
        print(f"{PROG} runs: the run-store commands are not available in this installation ({err})",
              file=sys.stderr)
        return 2
    return manage_runs.main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["runs"]:      # everything after "runs" is manage_runs' own command line, --help included
        return _runs(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            run_chapter(args.chapter, args.profile, args.params_file, parse_assignments(args.params), args.out,
                        args.runs_dir, html=not args.no_html)
            return 0
        if args.command == "book":
            return build_book(args.profile, args.only, parse_assignments(args.params), args.jobs, args.runs_dir,
                              args.book_dir, not args.no_html, args.oversubscribe, args.executor, not args.no_strict)
        start = time.perf_counter()
        only = [resolve_chapter(c).stem for c in args.only] if args.only else None
        bookbuild.plan_book(args.profile, None, only, args.runs_dir, args.device)
        print(f"(plan made in {time.perf_counter() - start:.1f} s)")
        return 0
    except (UsageError, FileNotFoundError, ValueError, TypeError) as err:
        print(f"{PROG} {args.command}: {err}", file=sys.stderr)
        return 2
    except bookbuild.NotebookFailed as err:
        print(f"{PROG} {args.command}: {err}", file=sys.stderr)
        return 1
    except (RuntimeError, subprocess.CalledProcessError) as err:
        print(f"{PROG} {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
