"""The parallel build starts a notebook's kernel again when it died before running anything."""

import json

import nbformat
import pytest

from sparsegap import bookbuild


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    path.write_text(nbformat.writes(nb))
    return path


def test_a_kernel_that_died_at_start_is_started_again(tmp_path, monkeypatch):
    import papermill
    calls = []

    def fake(src, dst, **kw):
        calls.append(src)
        if len(calls) == 1:
            raise RuntimeError("Kernel died before replying to kernel_info")
        (tmp_path / "book" / "_build" / "partial" / "nb.ipynb").write_text(open(src).read())

    monkeypatch.setattr(papermill, "execute_notebook", fake)
    monkeypatch.setattr(bookbuild.time, "sleep", lambda s: None)
    run = bookbuild.execute_notebook(_notebook(tmp_path / "nb.ipynb"), tmp_path / "book", {}, "cpu")
    assert len(calls) == 2 and run.output.exists()
    assert "".join(json.loads(run.output.read_text())["cells"][0]["source"]) == "x = 1"


def test_a_failing_notebook_is_not_run_again(tmp_path, monkeypatch):
    import papermill
    calls = []

    def fake(src, dst, **kw):
        calls.append(src)
        raise papermill.PapermillExecutionError(0, 1, "x = 1", "ValueError", "bad parameter", [])

    monkeypatch.setattr(papermill, "execute_notebook", fake)
    with pytest.raises(bookbuild.NotebookFailed, match="PapermillExecutionError"):
        bookbuild.execute_notebook(_notebook(tmp_path / "nb.ipynb"), tmp_path / "book", {}, "cpu")
    assert len(calls) == 1


def test_a_kernel_that_never_starts_fails_after_the_last_attempt(tmp_path, monkeypatch):
    import papermill
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("Address already in use")))
    monkeypatch.setattr(bookbuild.time, "sleep", lambda s: None)
    with pytest.raises(bookbuild.NotebookFailed, match="Address already in use"):
        bookbuild.execute_notebook(_notebook(tmp_path / "nb.ipynb"), tmp_path / "book", {}, "cpu")
