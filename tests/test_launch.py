"""One click from the book to a running notebook: the Colab and Binder buttons, and the install cell.

- The launch buttons of a chapter open the committed, output-free ``notebooks/<name>.ipynb`` (the pages are
  built from executed copies that git ignores): ``book/_ext/launch_links.py``, checked on a two-chapter
  book built here (seconds), with and without bookbuild's ``--repository-url``, and on every chapter of the
  session's smoke book (``built_book``).
- Every notebook starts with the hidden cell of ``book/_scripts/install_cell.py``; in a fresh venv that
  has the dependencies but neither sparsegap nor this checkout, the cell installs a wheel built from
  ``pkg/`` and the chapter's study module imports from the venv.
- ``binder/`` installs ``pkg/`` from postBuild, with the Makefile's torch pair.
"""

from __future__ import annotations

import ast
import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from urllib.parse import urlsplit

import nbformat
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
BOOK = REPO_ROOT / "book"
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
CONFIG = yaml.safe_load((BOOK / "_config.yml").read_text())


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launch_links = _load("launch_links", BOOK / "_ext" / "launch_links.py")
install_cell = _load("install_cell", BOOK / "_scripts" / "install_cell.py")


def tracked_files() -> set[str]:
    """Files git tracks: a launch link must name one, as on GitHub (an ignored file exists only here)."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    return set(out.decode().split("\0")) - {""}


def launch_links_in(page_html: str) -> list[tuple[str, str, str, str, str]]:
    """(service, owner, repository, branch, path in the repository) of each Colab and Binder link of a page;
    a link to either service in another shape comes back with "?" parts."""
    launch = CONFIG["launch_buttons"]
    services = {
        "Binder": (launch["binderhub_url"], r"/v2/gh/([^/]+)/([^/]+)/([^?]+)\?urlpath=(?:lab/)?tree/(.+)"),
        "Colab": (launch["colab_url"], r"/github/([^/]+)/([^/]+)/blob/([^/]+)/(.+)"),
    }
    links = []
    for href in map(html.unescape, re.findall(r'href="([^"]+)"', page_html)):
        for service, (base, tail) in services.items():
            if urlsplit(href).netloc != urlsplit(base).netloc:
                continue
            match = re.fullmatch(re.escape(base.rstrip("/")) + tail, href)
            links.append((service, *match.groups()) if match else (service, "?", "?", "?", href))
    return links


def check_launch_links(html_dir: Path, repository_url: str, pages: list[str]) -> None:
    """Every chapter page among ``pages`` has a Colab and a Binder link to a tracked file of this repository,
    at ``repository_url`` and the configured branch; no other page has one."""
    owner, repo = urlsplit(repository_url).path.strip("/").split("/")[:2]
    branch = CONFIG["repository"]["branch"]
    tracked = tracked_files()
    problems, seen = [], set()
    for page in html_dir.rglob("*.html"):
        name = page.relative_to(html_dir).with_suffix("").as_posix()
        for service, o, r, b, path in launch_links_in(page.read_text(errors="replace")):
            seen.add((name, service))
            if (o, r, b) != (owner, repo, branch):
                problems.append(f"{name}: {service} opens {o}/{r}@{b}, not {owner}/{repo}@{branch} ({path})")
            elif path not in tracked:
                problems.append(f"{name}: {service} opens {path}, which is not a file of the repository")
    chapters = {p for p in pages if launch_links.source_notebook(p, CONFIG["sphinx"]["config"]["launch_notebook_sources"])}
    assert chapters, "no chapter page to check"
    missing = {(p, s) for p in chapters for s in ("Colab", "Binder")} - seen
    assert not missing, f"pages without their launch button: {sorted(missing)}"
    assert {n for n, _ in seen} <= chapters, f"launch buttons on pages that are not chapters: {seen}"
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- the URL mapping (no build)


SOURCES = {"notebooks/": "notebooks"}


def test_a_chapter_page_launches_its_source_notebook():
    assert launch_links.source_notebook("notebooks/01_two_regimes", SOURCES) == "notebooks/01_two_regimes.ipynb"
    assert launch_links.source_notebook("intro", SOURCES) is None
    assert launch_links.source_notebook("notebooks/", SOURCES) is None
    assert launch_links.source_notebook("a/b/c", {"a/": "x", "a/b/": "y/"}) == "y/c.ipynb"   # the longest prefix
    assert launch_links.source_notebook("a/c", {"a/": ""}) == "c.ipynb"


def test_the_theme_path_at_the_end_of_a_launch_url_is_replaced():
    old = launch_links.theme_path("notebooks/01_a", "book/", ".ipynb")
    assert old == "book/notebooks/01_a.ipynb" and launch_links.theme_path("x", "", ".md") == "x.md"
    new = "notebooks/01_a.ipynb"
    assert launch_links.retarget(f"https://mybinder.org/v2/gh/o/book/main?urlpath=lab/tree/{old}", old, new) \
        == f"https://mybinder.org/v2/gh/o/book/main?urlpath=lab/tree/{new}"
    assert launch_links.retarget(f"https://colab.research.google.com/github/o/r/blob/main/{old}", old, new) \
        == f"https://colab.research.google.com/github/o/r/blob/main/{new}"
    with pytest.raises(ValueError, match="does not end with the page's path 'book/notebooks/01_a.ipynb'"):
        launch_links.retarget("https://colab.research.google.com/github/o/r/blob/main/notebooks/01_a.ipynb", old, new)


@pytest.mark.parametrize("bad", [["notebooks/"], {"notebooks": "notebooks"}, {"/notebooks/": "x"}, {"notebooks/": 3}])
def test_bad_launch_sources_are_refused(bad):
    from sphinx.errors import ConfigError
    with pytest.raises(ConfigError, match="launch_notebook_sources must map page-name prefixes ending in '/'"):
        launch_links.check_sources(bad)


def test_every_chapter_of_the_toc_launches_a_tracked_notebook():
    from test_book import toc_pages

    sources = launch_links.check_sources(CONFIG["sphinx"]["config"]["launch_notebook_sources"])
    tracked = tracked_files()
    targets = {p: launch_links.source_notebook(p, sources) for p in toc_pages()}
    chapters = {p: t for p, t in targets.items() if t}
    assert sorted(chapters.values()) == sorted(str(p.relative_to(REPO_ROOT)) for p in NOTEBOOKS)
    assert set(chapters.values()) <= tracked


# ---------------------------------------------------------------- built pages


def _tiny_book(root: Path, chapters: list[str]) -> Path:
    """The book's own configuration and extension, with a title page and ``chapters`` as small executed
    notebooks (what bookbuild writes into book/notebooks)."""
    book = root / "book"
    book.mkdir(parents=True)
    for item in ("_config.yml", "_ext", "_static", "references.bib"):
        (shutil.copytree if (BOOK / item).is_dir() else shutil.copy)(BOOK / item, book / item)
    (book / "_widgets").mkdir()   # html_extra_path; the widget scripts themselves are not needed here
    (book / "intro.md").write_text("# A tiny book\n\nIts chapters come from executed notebooks.\n")
    (book / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "intro",
                                                   "chapters": [{"file": f"notebooks/{c}"} for c in chapters]}))
    for chapter in chapters:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        code = nbformat.v4.new_code_cell("print(1 + 1)", execution_count=1)
        code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="2\n")]
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {chapter}"), code]
        (book / "notebooks").mkdir(exist_ok=True)
        nbformat.write(nb, book / "notebooks" / f"{chapter}.ipynb")
    return book


def _build(book: Path, *extra: str) -> Path:
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(book),
           "-W", "--keep-going", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return book / "_build" / "html"


TINY_CHAPTERS = ["01_two_regimes", "12_remedies"]


def test_launch_links_of_a_built_book_open_repository_notebooks(tmp_path):
    book = _tiny_book(tmp_path, TINY_CHAPTERS)
    html_dir = _build(book)
    check_launch_links(html_dir, CONFIG["repository"]["url"], ["intro"] + [f"notebooks/{c}" for c in TINY_CHAPTERS])


def test_launch_links_follow_bookbuilds_repository_url(tmp_path):
    """``bookbuild --repository-url`` (the workflow passes the GitHub repository) builds from a copy of
    _config.yml under _build/; the launch extension must still load there, and the links follow the URL."""
    from sparsegap import bookbuild

    book = _tiny_book(tmp_path, TINY_CHAPTERS)
    config = bookbuild._config_with_repository(book, "https://github.com/someone/a-fork")
    html_dir = _build(book, "--config", str(config))
    check_launch_links(html_dir, "https://github.com/someone/a-fork",
                       ["intro"] + [f"notebooks/{c}" for c in TINY_CHAPTERS])


def test_every_chapter_of_the_smoke_book_launches_its_source_notebook(built_book):
    from test_book import toc_pages

    check_launch_links(built_book.html_dir, CONFIG["repository"]["url"], toc_pages())


# ---------------------------------------------------------------- the install cell


def test_every_notebook_starts_with_the_install_cell():
    url = install_cell.repository_url()
    assert url == CONFIG["repository"]["url"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        assert install_cell.problems(nb, url) == [], path.name
        cell = nb.cells[0]
        assert "remove-cell" in cell.metadata["tags"] and not cell.outputs
        assert install_cell.default_spec(url) in cell.source
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[1].metadata.get("tags", []), f"{path.name}: the parameters cell comes next"


def _bound_names(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def test_the_install_cell_binds_only_private_names():
    """A chapter's parameter check refuses any other global it does not know."""
    names = _bound_names(install_cell.cell_source(CONFIG["repository"]["url"]))
    assert names and all(n.startswith("_") for n in names), names


def test_where_sparsegap_imports_the_cell_installs_nothing_and_the_parameters_still_check(monkeypatch):
    from sparsegap.studies import chapter_module

    def no_pip(*args, **kwargs):
        raise AssertionError(f"the install cell ran {args}")

    monkeypatch.setattr(subprocess, "run", no_pip)
    monkeypatch.setenv(install_cell.ENV_VAR, "/nonexistent.whl")
    for path in (NOTEBOOKS[0], NOTEBOOKS[-1]):
        nb = nbformat.read(path, as_version=4)
        namespace: dict = {}
        exec(nb.cells[0].source, namespace)
        exec(next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", [])), namespace)
        namespace.pop("__builtins__")
        chapter_module(path.stem).PARAMETERS.check(namespace, show=False, activate=False)


def test_papermill_injects_parameters_after_the_parameters_cell():
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    # What papermill.execute_notebook does before it starts a kernel.
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOKS[0])), {"epochs": 1})
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    assert first_code == 0 and install_cell.TAG in tags[0]
    parameters = next(i for i, t in enumerate(tags) if "parameters" in t)
    assert "injected-parameters" in tags[parameters + 1]


def test_writing_the_cell_again_changes_nothing(tmp_path):
    path = shutil.copy(NOTEBOOKS[0], tmp_path / NOTEBOOKS[0].name)
    before = Path(path).read_bytes()
    assert install_cell.main([str(path)]) == 0 and Path(path).read_bytes() == before
    assert install_cell.main(["--check", str(path)]) == 0
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    nb.cells[0].source = nb.cells[0].source.replace("sparsegap[book]", "sparsegap")
    ids = [c.id for c in nb.cells]
    nbformat.write(nb, path)
    assert install_cell.main(["--check", str(path)]) == 1
    assert install_cell.main([str(path)]) == 0
    fixed = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    assert [c.id for c in fixed.cells] == ids and Path(path).read_bytes() == before


def _clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH (conftest puts this checkout's pkg/ there), no user site, no package index."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")}
    return env | {"PYTHONNOUSERSITE": "1", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"} | extra


@pytest.mark.timeout(600)
def test_the_install_cell_installs_a_wheel_of_pkg_in_a_fresh_venv(tmp_path):
    """The cell as Colab runs it, where sparsegap is missing: pip installs ``sparsegap[book] @ <wheel>``.

    The venv reaches this venv's site-packages through a .pth for torch and the other dependencies (no
    index here), which Python reads without running the .pth files in it, so this venv's editable
    sparsegap stays out; pip resolves the [book] extra against them and installs the wheel into the venv."""
    # Built from a copy: building writes build/ and egg-info beside the sources.
    source = tmp_path / "src" / "pkg"
    shutil.copytree(REPO_ROOT / "pkg", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", str(source), "-w", str(wheels)], check=True, env=_clean_env(), timeout=300)
    (wheel,) = wheels.glob("sparsegap-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "work"   # the cell's working directory: empty, so nothing is importable from it
    work.mkdir()

    def run(code: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-c", code], cwd=work, capture_output=True, text=True, timeout=300,
                              env=_clean_env(**env))

    probe = run("import importlib.util, json, sys; "
                "print(json.dumps([sys.path, importlib.util.find_spec('sparsegap') is not None]))")
    path, importable = json.loads(probe.stdout)
    assert not importable, "sparsegap is importable before the cell runs"
    assert not [p for p in path if p and Path(p).resolve().is_relative_to(REPO_ROOT)], path

    cell = nbformat.read(NOTEBOOKS[0], as_version=4).cells[0].source
    spec = f"sparsegap[book] @ {wheel.as_uri()}"
    first = run(cell, **{install_cell.ENV_VAR: spec})
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"installing {spec}" in first.stdout and "sparsegap 0" in first.stdout, first.stdout

    after = run("import sparsegap, sparsegap.studies.two_regimes as s; print(sparsegap.__file__); "
                "print(s.PARAMETERS.notebook)")
    assert after.returncode == 0, after.stderr
    location, notebook = after.stdout.split()
    assert Path(location).is_relative_to(site) and notebook == "01_two_regimes"

    again = run(cell, **{install_cell.ENV_VAR: "/nonexistent.whl"})
    assert again.returncode == 0 and "installing" not in again.stdout, again.stdout + again.stderr


# ---------------------------------------------------------------- Binder


def test_binder_installs_pkg_after_the_repository_is_copied():
    env = yaml.safe_load((REPO_ROOT / "binder" / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert not [r for r in pip if "pkg" in r or r.startswith(("-e", "."))], "environment.yml comes before the copy"
    pins = re.search(r"TORCH_PINS := (.*)", (REPO_ROOT / "Makefile").read_text()).group(1).split()
    assert sorted(r for r in pip if not r.startswith("-")) == sorted(pins)
    post_build = REPO_ROOT / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK), "repo2docker runs postBuild as a program"
    commands = [line for line in post_build.read_text().splitlines() if line and not line.startswith("#")]
    assert any(re.search(r"pip install .*\./pkg\[book\]", line) for line in commands), commands
