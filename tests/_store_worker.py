"""Real, separate processes that use one run store, for the multi-process and fault-injection tests.

A Python interpreter with torch takes seconds to start on a busy 2-core machine, and the
fault-injection test starts more than 20 processes. So :class:`Zygote` starts this file once as a
server (``python tests/_store_worker.py``) that imports torch and sparsegap, and then forks one child
per job: each child is a real process (it holds locks, it can be SIGKILLed) that starts in
milliseconds. The server does no torch computation before forking, so forking is safe.

A job is a dict:
    root      the store's directory
    configs   RunConfig.full_dict() of each run
    sweep     true: run_all(configs); false: get_or_train on each config, in order
    log       a file to which every call of a training loop appends "<pid> <desc>", so that the
              tests can count how many times each run was trained
    out       where the child writes {run_id: digest of the returned weights}
    stderr    where the child's stdout and stderr go (warnings, fault-injection reports)
    env       extra environment variables (SPARSEGAP_FAULT_AFTER_WRITE)
    go        optional: wait until this file exists before starting (releases racers together)
    hang      optional: once training starts, write this file and sleep, holding the run's lock
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def weights_digest(weights: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode())
        h.update(weights[name].contiguous().numpy().tobytes())
    return h.hexdigest()


class Zygote:
    """The test's handle on the server: ``start(job) -> pid``, ``wait(pid) -> exit code``
    (negative: killed by that signal)."""

    def __init__(self):
        env = os.environ | {"PYTHONPATH": str(REPO / "pkg"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                            "SPARSEGAP_PROGRESS": "0"}
        env.pop("SPARSEGAP_FAULT_AFTER_WRITE", None)
        self.running: set[int] = set()
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, text=True)

    def _ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the zygote died (exit code {self.proc.wait()})")
        return json.loads(line)

    def start(self, job: dict) -> int:
        pid = self._ask({"start": job})["pid"]
        self.running.add(pid)
        return pid

    def wait(self, pid: int) -> int:
        self.running.discard(pid)
        return self._ask({"wait": pid})["exit"]

    def close(self) -> None:
        for pid in self.running:   # children of a test that failed before waiting for them
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _run_job(job: dict) -> None:
    import sparsegap.runs as runs
    from sparsegap.config import RunConfig

    os.environ.update(job.get("env") or {})

    def counted(real):
        def counted_train(*args, **kwargs):
            with open(job["log"], "a") as f:
                f.write(f"{os.getpid()} {kwargs.get('desc')}\n")
            if job.get("hang"):
                Path(job["hang"]).write_text(str(os.getpid()))
                time.sleep(600)
            return real(*args, **kwargs)
        return counted_train

    # both training loops: train() and the batched trainer (which trains the small MLPs, also alone)
    import sparsegap.runs.job as run_job
    run_job.train, run_job.train_batched = counted(run_job.train), counted(run_job.train_batched)
    configs = [RunConfig.from_dict(c) for c in job["configs"]]
    store = runs.RunStore(job["root"])
    while job.get("go") and not Path(job["go"]).exists():
        time.sleep(0.002)
    if job.get("sweep"):
        got = runs.run_all(configs, store, device="cpu", progress=False)
    else:
        got = [runs.get_or_train(c, store, device="cpu", progress=False) for c in configs]
    Path(job["out"]).write_text(json.dumps({r.config.run_id: weights_digest(r.weights) for r in got}))


def _child(job: dict) -> None:
    """Runs in the forked child; never returns."""
    code = 1
    try:
        fd = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        _run_job(job)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    # Imported once here and shared by every child (imports only: no torch computation before fork).
    import torch  # noqa: F401
    import sparsegap.data  # noqa: F401
    import sparsegap.models  # noqa: F401
    import sparsegap.runs  # noqa: F401

    for line in sys.stdin:
        request = json.loads(line)
        if "start" in request:
            pid = os.fork()
            if pid == 0:
                _child(request["start"])
            reply = {"pid": pid}
        else:
            _, status = os.waitpid(request["wait"], 0)
            reply = {"exit": os.waitstatus_to_exitcode(status)}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    serve()
