"""``sparsegap runs``: list, show, remove, garbage-collect and export the runs of a run store.

    sparsegap runs ls [--kind dense] [--model lenet5] [--dataset cifar10] [--status partial] [--format csv]
    sparsegap runs show dense-3f2a                 # a unique prefix of the run id is enough
    sparsegap runs rm finetune-91c0 scratch-77e1 --yes
    sparsegap runs gc [--profile cpu] [--stale] [--yes]
    sparsegap runs export scratch-77e1 --out exported/
    python -m sparsegap.manage_runs ls             # the same without the console script

Every subcommand takes ``--runs-dir`` (default: ``$SPARSEGAP_RUNS_DIR``, else the checkout's ``data/runs``, else
the user cache).

**Statuses.** *done*; *diverged* (its loss became NaN or infinite: kept, never trained again); *stale* (trained by
another code epoch, :data:`sparsegap.runs.provenance.CODE_EPOCH`: trained again when asked for); *damaged* (DONE,
config or meta unreadable, files missing; ``ls --verify`` also checks every checksum, reading every weight file);
*in-progress* (no DONE, its lock held by a live owner); *partial* (no DONE, nobody on it: it resumes when asked for).

**Removing is safe.** ``rm`` and ``gc`` remove a run only under its lock, taken without waiting: a run whose lock a
live owner holds (a sweep training it) is refused, naming the owner. The run's directory is renamed into
``<store>/.removing/`` (atomic: a reader sees the whole run or none of it), then deleted. Both are dry runs unless
``--yes`` is given (they print what would go and exit 0); they never prompt, so a script acts alike on a terminal.

**What gc keeps.** Every run a chapter's ``planned_runs`` lists under the profiles given (default: all of cpu, smoke
and paper: a run wrongly removed costs its training time, one wrongly kept only disk), with the runs it is trained
from (:func:`sparsegap.runs.recipes.chain`); every run descending from such a run, since a plan cannot list what
results decide (chapter 12 trains the settings its validation runs choose; its plan counts a stand-in); every run
in progress. ``--stale`` also removes the runs of another code epoch, planned or not (they are never reused). gc
judges by the book's own parameters: runs trained with others (``-p seeds=[5]``, the robustness check's shifted
seeds in ``data/runs-robustness``) are not planned, so read the dry run before passing ``--yes``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Sequence

from .config import RUN_KINDS, SPARSE_KINDS, RunConfig
from .runs import provenance
from .runs.store import DamagedRun, RunStore, StaleRun, refuse_link

STATUSES = ("done", "diverged", "stale", "damaged", "in-progress", "partial")
FORMATS = ("table", "csv", "json")
REMOVING = ".removing"   # inside the store: where a run goes between its rename and its deletion


class UsageError(ValueError):
    """Bad input on the command line: printed as a usage error (exit status 2)."""


# ------------------------------------------------------------------------------------------------- inspecting

@dataclasses.dataclass
class RunInfo:
    """What one run directory holds, read cheaply (no weights are loaded; :func:`inspect_run` with ``verify``
    checks the checksums too)."""

    run_id: str
    path: Path
    config: RunConfig | None
    status: str                 # one of STATUSES
    detail: str                 # why, for people: who holds the lock, where it diverged, what is damaged
    epochs: int | None          # epochs trained (history rows; a partial run's checkpoint epoch)
    meta: dict
    history: dict
    code_epoch: int | None      # the epoch its meta.json or checkpoint was written by
    size: int                   # bytes on disk

    @property
    def kind(self) -> str:
        return self.run_id.rsplit("-", 1)[0]

    @property
    def total_epochs(self) -> int | None:
        return None if self.config is None else self.config.train.epochs

    @property
    def model(self) -> str:
        if self.config is None:
            return ""
        m = self.config.model
        return m.label + (f"({','.join(map(str, m.hidden))})" if m.hidden else "")

    @property
    def dataset(self) -> str:
        return "" if self.config is None else self.config.data.name

    @property
    def stale(self) -> bool:
        return self.code_epoch is not None and self.code_epoch != provenance.current_epoch()

    FIELDS = ("run", "kind", "model", "dataset", "status", "detail", "epochs", "of_epochs", "seconds", "bytes",
              "version", "commit", "dirty", "device", "started_utc", "code_epoch")

    def row(self) -> dict:
        """The machine-readable row of ``ls --format csv|json``: seconds and bytes as numbers."""
        m = self.meta
        return dict(zip(self.FIELDS, (
            self.run_id, self.kind, self.model, self.dataset, self.status, self.detail, self.epochs, self.total_epochs,
            m.get("seconds"), self.size, m.get("version"), m.get("git_commit"), m.get("git_dirty"),
            m.get("device_name") or m.get("device"), m.get("started_utc"), self.code_epoch)))


def _json(path: Path):
    return json.loads(path.read_text())


def _checkpoint(path: Path) -> tuple[int | None, int | None, str]:
    """(epoch, code epoch, problem) of a run's checkpoint, memory-mapped so that only its header is read."""
    import torch
    try:
        ckpt = torch.load(path, weights_only=True, mmap=True, map_location="cpu")
        return int(ckpt["epoch"]), provenance.epoch_of(ckpt), ""
    except Exception as e:   # truncated, or not a checkpoint: a resume discards it too
        return None, None, f"unreadable checkpoint ({type(e).__name__})"


def inspect_run(store: RunStore, path: Path, *, verify: bool = False) -> RunInfo:
    """The status of the run directory ``path`` of ``store``."""
    run_id = path.name
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    config, problem = None, ""
    try:
        config = RunConfig.from_dict(_json(path / "config.json"))
        if config.run_id != run_id:
            problem = f"config.json is of run {config.run_id}"
    except FileNotFoundError:
        problem = "no config.json"
    except Exception as e:
        problem = f"config.json does not load ({type(e).__name__}: {e})"
    info = RunInfo(run_id, path, config, "", "", None, {}, {}, None, size)
    if (path / "DONE").exists():
        return _finished(store, info, problem, verify)
    holder = store.holder(run_id)
    if (path / "checkpoint.pt").exists():
        info.epochs, info.code_epoch, why = _checkpoint(path / "checkpoint.pt")
    else:
        info.epochs, why = 0, "no checkpoint yet"
    if holder is not None:
        info.status, info.detail = "in-progress", f"locked by {holder}"
    else:
        info.status = "partial"
        info.detail = why or (f"checkpoint of code epoch {info.code_epoch}, trains from the start" if info.stale
                              else "resumes when asked for")
    return info


def _finished(store: RunStore, info: RunInfo, problem: str, verify: bool) -> RunInfo:
    path = info.path
    try:
        done = _json(path / "DONE")
        info.meta = _json(path / "meta.json")
        info.history = _json(path / "history.json")
        if not isinstance(done, dict) or not isinstance(info.meta, dict) or not isinstance(info.history, dict):
            raise ValueError("DONE, meta.json or history.json is not a JSON object")
        missing = [name for name in done.get("sha256", {}) if not (path / name).is_file()]
        if missing:
            problem = problem or f"missing {', '.join(missing)}"
    except Exception as e:
        problem = problem or f"{type(e).__name__}: {e}"
    info.code_epoch = provenance.epoch_of(info.meta) if info.meta else None
    info.epochs = len(info.history.get("epoch", [])) if info.history else None
    if not problem and verify and not info.stale:
        try:
            store.load(info.config)
        except StaleRun:
            pass
        except DamagedRun as e:
            problem = str(e)
    diverged = info.history.get("diverged")
    if problem:
        info.status, info.detail = "damaged", problem
    elif info.stale:
        info.status, info.detail = "stale", f"trained by code epoch {info.code_epoch}, this code is " \
                                            f"{provenance.current_epoch()}"
    elif diverged:
        info.status = "diverged"
        info.detail = f"loss {diverged.get('loss')} at epoch {diverged.get('epoch')}, step {diverged.get('step')}"
    else:
        info.status = "done"
    return info


def resolve(store: RunStore, prefix: str) -> Path:
    """The run directory whose id is ``prefix`` or starts with it; :class:`UsageError` if none or several do."""
    if not prefix or any(c in prefix for c in "/\\\0"):
        raise UsageError(f"RUN={prefix!r} must be a run id or a unique prefix of one (such as 'dense-3f2a'), "
                         f"not a path")
    dirs = store.run_dirs()
    exact = [p for p in dirs if p.name == prefix]
    found = exact or [p for p in dirs if p.name.startswith(prefix)]
    if not found:
        raise UsageError(f"RUN={prefix!r}: no run in {store.root} has an id starting so ({len(dirs)} runs there; "
                         f"`sparsegap runs ls` lists them)")
    if len(found) > 1:
        shown = ", ".join(p.name for p in found[:8]) + (", ..." if len(found) > 8 else "")
        raise UsageError(f"RUN={prefix!r} is ambiguous: {len(found)} runs start so ({shown}); give more of the id")
    return found[0]


# ------------------------------------------------------------------------------------------------- formatting

def format_seconds(seconds) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return "-"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def format_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _short_status(info: RunInfo) -> str:
    if info.status == "partial":
        return f"partial ({info.epochs if info.epochs is not None else '?'} of {info.total_epochs or '?'} epochs)"
    if info.status == "in-progress":
        return "in progress (locked)"
    if info.status == "diverged":
        return f"diverged (epoch {info.history['diverged'].get('epoch')})"
    if info.status == "stale":
        return f"stale (code epoch {info.code_epoch})"
    if info.status == "damaged":
        return "damaged: " + (info.detail if len(info.detail) <= 40 else info.detail[:39] + "…")
    return info.status


def _commit(meta: dict) -> str:
    commit = meta.get("git_commit")
    return "-" if not commit else commit[:10] + ("+dirty" if meta.get("git_dirty") else "")


def _table(infos: list[RunInfo]) -> str:
    head = ("run", "model", "dataset", "status", "epochs", "time", "size", "version", "commit", "device",
            "started (UTC)", "epoch")
    rows = [(i.run_id, i.model or "?", i.dataset or "?", _short_status(i),
             f"{i.epochs if i.epochs is not None else '?'}/{i.total_epochs or '?'}",
             format_seconds(i.meta.get("seconds")),
             format_bytes(i.size), i.meta.get("version") or "-", _commit(i.meta),
             i.meta.get("device_name") or i.meta.get("device") or "-", i.meta.get("started_utc") or "-",
             str(i.code_epoch) if i.code_epoch is not None else "-") for i in infos]
    widths = [max(len(str(r[k])) for r in (head, *rows)) for k in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in (head, *rows)]
    seconds = sum(i.meta.get("seconds") or 0 for i in infos)
    lines.append(f"{len(infos)} runs, {format_bytes(sum(i.size for i in infos))}, "
                 f"{format_seconds(seconds)} of training")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- removing

def remove(store: RunStore, run_id: str) -> str | None:
    """Remove one run under its lock: None when removed (or already gone), else why it was refused."""
    lock = store.lock(run_id)
    if not lock.try_acquire():
        return f"locked by {store.holder(run_id) or 'another process'}, which may be training it; not removed"
    try:
        path = store.path(run_id)
        if not path.exists():
            return None
        trash = refuse_link(store.root / REMOVING, "the store's removal folder")
        trash.mkdir(exist_ok=True)
        # one rename takes the run out of the store whole; what follows only frees the disk
        target = trash / f"{run_id}.{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(path, target)
        shutil.rmtree(target, ignore_errors=True)   # what is left there is no run: the next rm or gc sweeps it
    finally:
        lock.release()
    return None


def _remove_all(store: RunStore, infos: list[RunInfo], yes: bool) -> int:
    if not infos:
        print("nothing to remove")
        return 0
    total = f"{len(infos)} runs, {format_bytes(sum(i.size for i in infos))}, " \
            f"{format_seconds(sum(i.meta.get('seconds') or 0 for i in infos))} of training"
    if not yes:
        for i in infos:
            print(f"would {'refuse (locked)' if i.status == 'in-progress' else 'remove'} {i.run_id}  "
                  f"({_short_status(i)}, {format_bytes(i.size)})")
        print(f"dry run: {total} would be removed; pass --yes to remove them")
        return 0
    refused = []
    for i in infos:
        try:
            why = remove(store, i.run_id)
        except OSError as e:     # a run directory or lock that is a link, a file system refusing: the others go on
            why = f"{type(e).__name__}: {e}"
        if why is None:
            print(f"removed {i.run_id}")
        else:
            refused.append(i.run_id)
            print(f"refused {i.run_id}: {why}", file=sys.stderr)
    trash = store.root / REMOVING   # what a process killed mid-deletion left there (no run any more)
    for leftover in (trash.iterdir() if trash.is_dir() and not trash.is_symlink() else ()):
        shutil.rmtree(leftover, ignore_errors=True)
    print(f"removed {len(infos) - len(refused)} of {total}" + (f"; {len(refused)} refused" if refused else ""))
    return 1 if refused else 0


# ------------------------------------------------------------------------------------------------- gc

def planned_configs(profiles: Sequence[str], notebooks_dir: Path | None = None) -> list[RunConfig]:
    """Every run some chapter's ``planned_runs`` lists under one of ``profiles`` (``notebooks_dir`` None: the book's
    notebooks, :func:`sparsegap.bookbuild.find_notebooks`). An error in any chapter is raised: a partial list would
    let gc remove what the missing chapter needs."""
    from . import bookbuild
    configs = []
    for profile in profiles:
        for nb in bookbuild.find_notebooks(notebooks_dir):
            try:
                module, values = bookbuild.notebook_parameters(nb, profile)
                configs += module.planned_runs(values)
            except Exception as e:
                raise RuntimeError(f"the planned runs of {nb.stem} under the {profile} profile cannot be listed "
                                   f"({type(e).__name__}: {e}); nothing is removed") from e
    return configs


def gc_plan(infos: list[RunInfo], planned: Sequence[RunConfig], *, stale: bool) -> tuple[list[RunInfo], dict]:
    """(the runs gc removes, the counts of those it keeps by reason) for the runs ``infos`` of a store."""
    from .runs.recipes import chain
    referenced = {c.run_id for p in planned for c in chain(p)}
    kept = {"planned": 0, "descending from a planned run": 0, "in progress": 0}
    remove_these = []
    for i in infos:
        if i.status == "in-progress":
            kept["in progress"] += 1
        elif stale and i.stale:
            remove_these.append(i)
        elif i.run_id in referenced:
            kept["planned"] += 1
        elif i.config is not None and any(c.run_id in referenced for c in chain(i.config)[:-1]):
            kept["descending from a planned run"] += 1
        else:
            remove_these.append(i)
    return remove_these, kept


# ------------------------------------------------------------------------------------------------- export

def history_rows(history: dict) -> list[dict]:
    """One row per epoch: every per-epoch list of the history (the trackers' traces go to their own file)."""
    n = len(history.get("epoch", []))
    keys = [k for k, v in history.items() if isinstance(v, list) and len(v) == n]
    return [{k: history[k][e] for k in keys} for e in range(n)]


def trace_rows(history: dict) -> list[dict]:
    """The trackers' traces, long: one row per (tracker key, measurement); a non-scalar value as JSON."""
    rows = []
    for key, trace in (history.get("trace") or {}).items():
        for epoch, step, epochs, value in zip(trace["epoch"], trace["step"], trace["epochs"], trace["value"]):
            rows.append({"key": key, "epoch": epoch, "step": step, "epochs": epochs,
                         "value": value if isinstance(value, (int, float, str)) else json.dumps(value)})
    return rows


def masked_weights(run) -> dict:
    """The run's weights with its masks applied (pruned weights exactly zero), each a contiguous tensor of its
    own, as safetensors stores them."""
    import torch
    masks = run.masks or {}
    return {name: (torch.where(masks[name], w, torch.zeros_like(w)) if name in masks else w).contiguous().clone()
            for name, w in run.weights.items()}


def export(store: RunStore, path: Path, out: Path, *, force: bool = False) -> list[Path]:
    """Write ``history.csv`` (and ``trace.csv``), ``weights.safetensors`` (masked), ``masks.safetensors`` (a
    sparse run's), ``config.json`` and ``meta.json`` of the finished run at ``path`` into ``out``."""
    from safetensors.torch import save as safetensors_bytes

    from .runs.atomic import atomic_write
    info = inspect_run(store, path)
    if info.status in ("in-progress", "partial"):
        raise UsageError(f"run {info.run_id} is not finished ({_short_status(info)}): nothing to export yet")
    try:
        if info.config is None:
            raise DamagedRun(info.detail)
        run = store.load(info.config)
    except DamagedRun as e:   # StaleRun included: the store reads only the runs of this code epoch
        what = "stale" if isinstance(e, StaleRun) else "damaged"
        raise RuntimeError(f"run {info.run_id} is {what} ({e}): it cannot be exported") from None
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file, not a directory")
    about = {"run_id": info.run_id, "kind": info.kind, "config": json.dumps(run.config.to_dict(), sort_keys=True),
             "masked": str(run.masks is not None)}
    files = {"history.csv": _csv(history_rows(run.history)).encode(),
             "config.json": json.dumps(run.config.full_dict(), indent=2).encode(),
             "meta.json": json.dumps(info.meta, indent=2).encode(),
             "weights.safetensors": safetensors_bytes(masked_weights(run), metadata=about)}
    if trace_rows(run.history):
        files["trace.csv"] = _csv(trace_rows(run.history)).encode()
    if run.config.kind in SPARSE_KINDS and run.masks is not None:
        files["masks.safetensors"] = safetensors_bytes({k: m.contiguous().clone() for k, m in run.masks.items()},
                                                       metadata=about)
    there = [name for name in files if (out / name).exists()]
    if there and not force:
        raise UsageError(f"--out {str(out)!r} already holds {', '.join(there)}; pass --force to overwrite them")
    for name, blob in files.items():
        atomic_write(out / name, lambda f, b=blob: f.write(b))
    return [out / name for name in files]


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------- show

def _config_summary(cfg: RunConfig) -> dict:
    """The config with its parent and partner named by their run ids, not written out in full."""
    return cfg.full_dict() | {k: getattr(cfg, k).run_id for k in ("parent", "partner") if getattr(cfg, k) is not None}


def history_summary(history: dict) -> dict:
    rows = history_rows(history)
    summary = {"epochs": len(rows), "first": rows[0] if rows else None, "last": rows[-1] if rows else None,
               "best_test_acc": None, "diverged": history.get("diverged"),
               "traces": sorted(history.get("trace") or {})}
    accs = [r for r in rows if isinstance(r.get("test_acc"), (int, float))]
    if accs:   # the first epoch of the best, if several reach it
        best = max(accs, key=lambda r: r["test_acc"])
        summary["best_test_acc"] = {"value": best["test_acc"], "epoch": best["epoch"]}
    return summary


def _show(info: RunInfo) -> dict:
    return {"run": info.run_id, "path": str(info.path), "status": info.status, "detail": info.detail,
            "size": info.size, "config": _config_summary(info.config) if info.config else None,
            "meta": info.meta, "history": history_summary(info.history) if info.history else None}


def _print_show(shown: dict) -> None:
    def row(r):
        return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items())
    status = shown["status"] + (f" ({shown['detail']})" if shown["detail"] else "")
    print(f"run      {shown['run']}\npath     {shown['path']}\nstatus   {status}\n"
          f"size     {format_bytes(shown['size'])}")
    print("config")
    for k, v in (shown["config"] or {}).items():
        print(f"  {k}: {json.dumps(v)}")
    meta = shown["meta"]
    print("meta (provenance)" if meta else "meta     (none yet: the run is not finished)")
    for k, v in meta.items():
        print(f"  {k}: {format_seconds(v) if k == 'seconds' else v}")
    h = shown["history"]
    if h:
        best = h["best_test_acc"]
        print(f"history\n  epochs: {h['epochs']}\n  first: {row(h['first']) if h['first'] else '-'}\n"
              f"  last: {row(h['last']) if h['last'] else '-'}")
        d = h["diverged"]
        print(f"  best test_acc: {best['value']:.4g} at epoch {best['epoch']}" if best else "  best test_acc: -")
        print(f"  diverged: loss {d.get('loss')} at epoch {d.get('epoch')}, step {d.get('step')}" if d else
              "  diverged: no", *([f"  traces: {', '.join(h['traces'])}"] if h["traces"] else []), sep="\n")


# ------------------------------------------------------------------------------------------------- command line

def _choice(what: str, allowed: Sequence[str]):
    """An argparse type: ``allowed`` forgiving case and '_' for '-'; the error lists what is allowed."""
    def parse(value: str) -> str:
        key = value.strip().lower().replace("_", "-")
        if key not in allowed:
            raise argparse.ArgumentTypeError(f"{what} {value!r} is not one of: {', '.join(allowed)}")
        return key
    return parse


def _parser() -> argparse.ArgumentParser:
    from .datasets import DATASETS
    from .models import MODELS
    parser = argparse.ArgumentParser(prog="sparsegap runs", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                     epilog="`sparsegap runs COMMAND --help` describes each command.")
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--runs-dir", type=Path, default=None, help="the run store (default: $SPARSEGAP_RUNS_DIR, "
                       "else the checkout's data/runs, else the user cache)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    ls = sub.add_parser("ls", parents=[store], help="list the runs, with status, epochs, time and provenance",
                        description="One row per run: id, model, dataset, status, epochs, training time, size and "
                                    "provenance. A filter given several times matches any of its values.")
    ls.add_argument("--kind", action="append", type=_choice("kind", RUN_KINDS), help=f"one of {', '.join(RUN_KINDS)}")
    ls.add_argument("--model", action="append", type=_choice("model", MODELS), help=f"one of {', '.join(MODELS)}")
    ls.add_argument("--dataset", action="append", type=_choice("dataset", DATASETS),
                    help=f"one of {', '.join(DATASETS)}")
    ls.add_argument("--status", action="append", type=_choice("status", STATUSES), help=f"one of {', '.join(STATUSES)}")
    ls.add_argument("--format", type=_choice("format", FORMATS), default="table",
                    help="table (for people: human-readable times and sizes), csv or json (seconds and bytes)")
    ls.add_argument("--verify", action="store_true",
                    help="check every finished run's checksums (reads every weight file: slower)")
    show = sub.add_parser("show", parents=[store], help="one run's config, meta (provenance) and history summary")
    show.add_argument("run", metavar="RUN", help="a run id, or a unique prefix of one")
    show.add_argument("--format", type=_choice("format", ("text", "json")), default="text", help="text or json")
    rm = sub.add_parser("rm", parents=[store], help="remove runs, under their locks (dry run without --yes)",
                        description="Remove runs under their locks (a run a live process holds is refused).")
    rm.add_argument("runs", nargs="+", metavar="RUN", help="run ids, or unique prefixes of them")
    rm.add_argument("--yes", action="store_true", help="remove them (without it: a dry run)")
    gc = sub.add_parser("gc", parents=[store], help="remove the runs no chapter plans (dry run without --yes)",
                        description="Remove the runs that no chapter's planned_runs lists under the profiles (nor "
                                    "their parents), but those descending from planned runs and those in progress.")
    gc.add_argument("--profile", action="append", type=_choice("profile", ("cpu", "smoke", "paper")),
                    help="keep the runs this profile plans (repeatable; default: every profile)")
    gc.add_argument("--stale", action="store_true", help="also remove the runs of another code epoch")
    gc.add_argument("--notebooks-dir", type=Path, help="the notebooks whose plans count (default: the book's)")
    gc.add_argument("--yes", action="store_true", help="remove them (without it: a dry run)")
    ex = sub.add_parser("export", parents=[store], help="a run's history as CSV, its masked weights as safetensors",
                        description="Write history.csv (trace.csv: its trackers), weights.safetensors (masks "
                                    "applied), masks.safetensors, config.json and meta.json of a run into --out.")
    ex.add_argument("run", metavar="RUN", help="a run id, or a unique prefix of one")
    ex.add_argument("--out", type=Path, required=True, help="the folder to write to (created if missing)")
    ex.add_argument("--force", action="store_true", help="overwrite the files already there")
    return parser


def _store(runs_dir: Path | None) -> RunStore:
    if runs_dir is not None and not runs_dir.is_dir():
        raise UsageError(f"--runs-dir {str(runs_dir)!r} is not a directory (a run store); leave it out for the "
                         f"default store")
    try:
        return RunStore(runs_dir)
    except (TypeError, ValueError, OSError) as e:
        raise UsageError(f"--runs-dir: {e}") from None


def _ls(args) -> int:
    store = _store(args.runs_dir)
    infos = [inspect_run(store, p, verify=args.verify) for p in store.run_dirs()]

    def keep(i: RunInfo) -> bool:
        return ((not args.kind or i.kind in args.kind) and (not args.model or (i.config and i.config.model.name in
                args.model)) and (not args.dataset or i.dataset in args.dataset)
                and (not args.status or i.status in args.status))
    infos = [i for i in infos if keep(i)]
    if args.format == "table":
        print(_table(infos) if infos else f"no runs in {store.root}" + (" match the filters" if
                                                                           store.run_dirs() else ""))
    elif args.format == "csv":
        print(_csv([i.row() for i in infos]) if infos else ",".join(RunInfo.FIELDS), end="" if infos else "\n")
    else:
        print(json.dumps([i.row() for i in infos], indent=1))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    where = f"sparsegap runs {args.command}"
    try:
        if args.command == "ls":
            return _ls(args)
        store = _store(args.runs_dir)
        if args.command == "show":
            shown = _show(inspect_run(store, resolve(store, args.run)))
            print(json.dumps(shown, indent=1)) if args.format == "json" else _print_show(shown)
            return 0
        if args.command == "rm":
            paths = list(dict.fromkeys(resolve(store, r) for r in args.runs))   # every name checked before any goes
            return _remove_all(store, [inspect_run(store, p) for p in paths], args.yes)
        if args.command == "gc":
            profiles = list(dict.fromkeys(args.profile or ("cpu", "smoke", "paper")))
            planned = planned_configs(profiles, args.notebooks_dir)
            infos = [inspect_run(store, p) for p in store.run_dirs()]
            doomed, kept = gc_plan(infos, planned, stale=args.stale)
            print(f"keeping {len(infos) - len(doomed)} of {len(infos)} runs (profiles {', '.join(profiles)}): "
                  + ", ".join(f"{n} {why}" for why, n in kept.items()))
            return _remove_all(store, doomed, args.yes)
        paths = export(store, resolve(store, args.run), args.out, force=args.force)
        print("\n".join(f"wrote {p}" for p in paths))
        return 0
    except UsageError as e:
        parser.exit(2, f"{where}: error: {e}\n")
    except (RuntimeError, OSError) as e:
        print(f"{where}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
