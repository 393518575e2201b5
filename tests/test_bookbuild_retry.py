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


def _tree(pid: int) -> set[int]:
    """pid and all its descendants, from /proc (Linux)."""
    from pathlib import Path
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo += [int(k) for k in kids]
    return out


def _alive(pid: int) -> bool:
    from pathlib import Path
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/task").exists(), reason="needs /proc")
def test_a_stopped_parallel_build_leaves_no_worker_or_kernel_running(tmp_path):
    """SIGTERM to the build stops its workers and their kernels; before, the workers went on with the queue."""
    import os
    import signal
    import subprocess
    import sys
    import time
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for name in ("a", "b", "c"):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("import time\ntime.sleep(120)")]
        (nbdir / f"{name}.ipynb").write_text(nbformat.writes(nb))
    script = (
        "import sys; from pathlib import Path; from sparsegap import bookbuild\n"
        f"nbs = sorted(Path({str(nbdir)!r}).glob('*.ipynb'))\n"
        f"bookbuild._execute_parallel(nbs, {{p.stem: {{}} for p in nbs}}, Path({str(tmp_path / 'book')!r}), 'cpu', 2, print)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ | {"PYTHONUNBUFFERED": "1"})
    tree = {proc.pid}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:        # the build, 2 workers and their 2 kernels
            tree = _tree(proc.pid)
            if len(tree) >= 5 and sum("ipykernel" in open(f"/proc/{p}/cmdline").read() for p in tree if _alive(p)) >= 2:
                break
            time.sleep(0.5)
        assert len(tree) >= 5, f"the build did not start its kernels in time: {tree}"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in tree):
            time.sleep(0.5)
        assert not [p for p in tree if _alive(p)], "processes of the stopped build are still running"
    finally:       # whatever the outcome, nothing of this test may outlive it
        for p in tree | _tree(proc.pid):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
