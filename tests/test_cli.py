"""The ``sparsegap`` command line (sparsegap.cli): help, bad input, one real chapter, a partial book, and a
wheel that carries the notebooks and runs a chapter in a fresh venv without the checkout."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

from sparsegap import bookbuild, cli

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "02_fisher_trajectory"      # the smallest chapter: a 12-bit MLP, seconds at smoke scale


def _main(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as stop:        # argparse: --help (0) and malformed options (2)
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("argv, expect", [
    ([], "COMMAND"), (["book"], "--only"), (["run"], "CHAPTER"), (["plan"], "--profile"), (["runs"], "usage"),
])
def test_every_subcommand_has_help(capsys, argv, expect):
    code, out, _ = _main(capsys, *argv, "--help")
    assert code == 0 and expect in out


def test_no_subcommand_is_a_usage_error(capsys):
    code, _, err = _main(capsys)
    assert code == 2 and "COMMAND" in err


# ----------------------------------------------------------------------------------------------- input


def test_values_are_read_as_yaml():
    assert cli.parse_assignment("epochs=1") == ("epochs", 1)
    assert cli.parse_assignment("lr=0.05") == ("lr", 0.05)
    assert cli.parse_assignment("seeds=[0, 1]") == ("seeds", [0, 1])
    assert cli.parse_assignment("download=true") == ("download", True)
    assert cli.parse_assignment("runs_dir=null") == ("runs_dir", None)
    assert cli.parse_assignment("device=cpu") == ("device", "cpu")
    assert cli.parse_assignment("executor=processes:2") == ("executor", "processes:2")


@pytest.mark.parametrize("text, says", [("epochs", "KEY=VALUE"), ("=1", "KEY=VALUE"), ("1x=2", "KEY=VALUE"),
                                        ("epochs=", "no value"), ("seeds=[0, 1", "not valid YAML")])
def test_a_bad_assignment_is_refused(text, says):
    with pytest.raises(cli.UsageError, match=says) as err:
        cli.parse_assignment(text)
    assert repr(text) in str(err.value)


@pytest.mark.parametrize("name", [CHAPTER, f"{CHAPTER}.ipynb", "02", "2"])
def test_a_chapter_is_named_by_its_notebook_or_its_number(name):
    assert cli.resolve_chapter(name) == REPO_ROOT / "notebooks" / f"{CHAPTER}.ipynb"


@pytest.mark.parametrize("name", ["99", "fisher", "0"])
def test_an_unknown_chapter_lists_the_chapters(name):
    with pytest.raises(cli.UsageError, match="no such chapter") as err:
        cli.resolve_chapter(name)
    assert CHAPTER in str(err.value) and "12_remedies" in str(err.value)


def test_overrides_go_to_the_chapters_that_declare_them():
    one, two = (cli.resolve_chapter(c) for c in ("01", "02"))
    over = cli.overrides_for([one, two], {"epochs": 3, "dataset": "tishby"}, "cpu")
    # chapter 1 declares epochs; chapter 2 counts its epochs per stage, and takes `epochs` for both
    assert over["01_two_regimes"]["epochs"] == 3
    assert over[CHAPTER]["dense_epochs"] == over[CHAPTER]["sparse_epochs"] == 3
    assert "epochs" not in over[CHAPTER]
    assert over[CHAPTER]["dataset"] == "tishby" and "dataset" in over["01_two_regimes"]


@pytest.mark.parametrize("argv, says", [
    (["run", "99"], "no such chapter"),
    (["run", "02", "-p", "epoch=1"], "does not declare"),
    (["run", "02", "-p", "sparsities=[0.5, 2.0]"], "sparsities"),       # the chapter's own range check
    (["run", "02", "-p", "dense_epochs=-1"], "dense_epochs"),
    (["run", "02", "-p", "epochs"], "KEY=VALUE"),
    (["run", "02", "-f", "/nonexistent/params.yaml"], "no such file"),
    (["book", "--only", "02", "-p", "nope=1", "--no-html"], "no selected chapter declares"),
    (["book", "--only", "99", "--no-html"], "no such chapter"),
    (["plan", "--only", "99"], "no such chapter"),
    (["run", "02", "--profile", "gpu"], "invalid choice"),
])
def test_bad_input_exits_non_zero_with_a_clear_message(capsys, tmp_path, argv, says):
    code, _, err = _main(capsys, *argv, *(["--runs-dir", str(tmp_path)] if argv[0] != "book" else []))
    assert code == 2 and says in err, err


def test_a_params_file_with_an_unknown_key_is_refused_with_a_suggestion(capsys, tmp_path):
    (tmp_path / "p.yaml").write_text("sparse_epoch: 1\n")
    code, _, err = _main(capsys, "run", "02", "-f", str(tmp_path / "p.yaml"), "--out", str(tmp_path))
    assert code == 2 and "sparse_epoch" in err and "did you mean 'sparse_epochs'" in err
    (tmp_path / "p.yaml").write_text("- 1\n- 2\n")
    code, _, err = _main(capsys, "run", "02", "-f", str(tmp_path / "p.yaml"), "--out", str(tmp_path))
    assert code == 2 and "mapping" in err


def test_the_html_book_needs_its_sources(capsys, tmp_path):
    code, _, err = _main(capsys, "book", "--only", "02", "--book-dir", str(tmp_path / "nobook"))
    assert code == 2 and "no book sources" in err and "--no-html" in err
    assert not (tmp_path / "nobook").exists()       # refused before anything ran


def test_runs_dispatches_everything_after_it_to_manage_runs(capsys, tmp_path):
    code, out, _ = _main(capsys, "runs", "ls", "--help")
    assert code == 0 and "sparsegap runs ls" in out
    code, _, err = _main(capsys, "runs", "frobnicate")
    assert code != 0 and "frobnicate" in err


# ----------------------------------------------------------------------------------------------- -j and GPUs


def test_jobs_default_to_one_per_visible_gpu(monkeypatch):
    from sparsegap.runs.threads import cores
    monkeypatch.setattr(bookbuild, "visible_gpus", lambda: [])
    assert bookbuild.default_jobs() is None                    # no CUDA: one per core, as before
    monkeypatch.setattr(bookbuild, "visible_gpus", lambda: ["0", "1"])
    assert bookbuild.default_jobs() == min(2, cores())
    monkeypatch.setattr(bookbuild, "visible_gpus", lambda: [str(i) for i in range(64)])
    assert bookbuild.default_jobs() == cores()                 # never more kernels than cores


def test_a_build_worker_takes_a_gpu_of_its_own(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    previous = signal.getsignal(signal.SIGTERM)
    try:
        gpus = queue.Queue()
        gpus.put("3")
        bookbuild._start_worker(gpus)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
        bookbuild._start_worker(None)                          # one GPU or none: left as it is
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    finally:
        signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------------------------- real runs


def test_run_executes_a_chapter_into_a_notebook_and_a_page(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEGAP_RUNS_DIR", str(tmp_path / "runs"))
    code, out, err = _main(capsys, "run", "2", "-p", "epochs=1", "--profile", "smoke", "--out", str(tmp_path / "out"))
    assert code == 0, err
    executed = tmp_path / "out" / f"{CHAPTER}.ipynb"
    page = tmp_path / "out" / f"{CHAPTER}_html" / f"{CHAPTER}.html"
    assert str(page) in out
    parameters = json.loads(executed.read_text())["metadata"]["papermill"]["parameters"]
    smoke = yaml.safe_load((REPO_ROOT / "notebooks" / "params" / "smoke" / f"{CHAPTER}.yaml").read_text())
    assert parameters == smoke | {"dense_epochs": 1, "sparse_epochs": 1}
    runs = sorted((tmp_path / "runs").glob("*-*/config.json"))
    assert runs and all(json.loads(r.read_text())["train"]["epochs"] == 1 for r in runs)
    html = page.read_text()
    assert "The Fisher trace during training" in html and "Claim verdict" in html
    assert "{cite" not in html and "Ye <em>et al.</em>, 2022" in html     # citations rendered...
    assert "The price of sparsity: generalization and memorization" in html   # ...and listed at the end
    assert not list((tmp_path / "out").glob(".*-page"))         # the rendering folder is cleaned up


def test_a_partial_book_leaves_the_other_chapters_out_and_builds_under_W(capsys, tmp_path, monkeypatch):
    book = tmp_path / "book"
    shutil.copytree(REPO_ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "notebooks", "._widgets.*"))
    subprocess.run(["bash", str(book / "_scripts" / "fetch_widget_js.sh"), str(book)], check=True,
                   capture_output=True)
    toc = (book / "_toc.yml").read_bytes()
    code, out, err = _main(capsys, "book", "--only", "02", "--profile", "smoke", "-p", "epochs=1", "-j", "1",
                           "--book-dir", str(book), "--runs-dir", str(tmp_path / "runs"))
    assert code == 0, err + out[-3000:]
    html = book / "_build" / "html"
    assert (html / "notebooks" / f"{CHAPTER}.html").is_file()
    assert not (html / "notebooks" / "01_two_regimes.html").exists()
    assert (book / "_toc.yml").read_bytes() == toc                  # the committed toc is never edited
    partial = yaml.safe_load((book / "_build" / "_toc.partial.yml").read_text())
    files = json.dumps(partial)
    assert f"notebooks/{CHAPTER}" in files and "notebooks/01_two_regimes" not in files
    assert "How sparse networks are found" not in files             # a part with no chapter left goes too
    assert "left out of this build's toc" in out


# ----------------------------------------------------------------------------------------------- the wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of pkg/ (its symlinks kept) beside copies of what they point to, so that
    building leaves nothing in the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    repo = root / "repo"
    shutil.copytree(REPO_ROOT / "pkg", repo / "pkg", symlinks=True,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    shutil.copytree(REPO_ROOT / "notebooks", repo / "notebooks")
    (repo / "book" / "_static").mkdir(parents=True)
    for name in ("_config.yml", "references.bib", "_static/sparsegap.css"):
        shutil.copy(REPO_ROOT / "book" / name, repo / "book" / name)
    shutil.copy(REPO_ROOT / "LICENSE", repo / "LICENSE")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           str(repo / "pkg"), "-w", str(root / "dist")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (found,) = (root / "dist").glob("sparsegap-*.whl")
    return found


def test_the_wheel_carries_the_notebooks_and_parameter_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    notebooks = REPO_ROOT / "notebooks"
    expected = {f"sparsegap/_notebooks/{p.relative_to(notebooks).as_posix()}"
                for p in [*notebooks.glob("*.ipynb"), *(notebooks / "params").rglob("*.yaml")]}
    assert len(expected) >= 36 and expected <= names, sorted(expected - names)
    assert {"sparsegap/_book/_config.yml", "sparsegap/_book/references.bib",
            "sparsegap/_book/_static/sparsegap.css", "sparsegap/cli.py", "sparsegap/paths.py"} <= names
    info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{info}/licenses/LICENSE" in names
    archive = zipfile.ZipFile(wheel)
    assert "sparsegap = sparsegap.cli:main" in archive.read(f"{info}/entry_points.txt").decode()
    metadata = archive.read(f"{info}/METADATA").decode()
    assert "License-Expression: MIT" in metadata and "Project-URL: Repository" in metadata
    assert not any("/_notebooks/" in n and n.endswith(".py") for n in names)


def test_a_fresh_venv_with_only_the_wheel_runs_a_chapter(wheel, tmp_path):
    """The issue's "done when": no checkout on sys.path, the working directory elsewhere, the run store and
    the data in the user cache. torch and the other dependencies come from this venv through a .pth file."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # No PYTHONPATH anywhere: with the checkout's pkg/ on it, pip would take sparsegap as installed already.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SPARSEGAP_RUNS_DIR", "SPARSEGAP_DATA_DIR", "MPLBACKEND")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")        # the user cache, here private to the test
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, env=env)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(python), "-c", "import sparsegap, sparsegap.paths as p; "
                            "print(sparsegap.__file__); print(p.checkout_root())"],
                           env=env, cwd=work, capture_output=True, text=True, check=True).stdout.split()
    assert Path(where[0]).is_relative_to(site) and where[1] == "None"
    done = subprocess.run([str(venv / "bin" / "sparsegap"), "run", CHAPTER, "-p", "epochs=1", "--profile", "smoke"],
                          env=env, cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert (work / f"{CHAPTER}.ipynb").is_file()
    assert (work / f"{CHAPTER}_html" / f"{CHAPTER}.html").is_file()
    store = tmp_path / "cache" / "sparsegap" / "runs"
    metas = [json.loads(m.read_text()) for m in store.glob("*-*/meta.json")]
    assert metas and all(m["git_commit"] is None for m in metas)   # trained by the installed copy, not a checkout
