"""`sparsegap runs ls|show|rm|gc|export` (issue 27, sections 2 and 4) on a tiny real store.

The store is trained once per module (a few seconds): two dense runs, a finetune child of the first, a run that
diverged and one interrupted after its first epoch; each test that changes it works on a copy.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sparsegap
from _damage import interrupted_after_epoch
from sparsegap import manage_runs
from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.runs import MissingRun, RunStore, get_or_train, provenance

REPO_ROOT = Path(__file__).resolve().parents[1]


def dense(seed: int, epochs: int = 2, lr: float = 0.05) -> RunConfig:
    return RunConfig("dense", DataConfig("tishby", train_size=200), ModelConfig("mlp", hidden=(8,)),
                     TrainConfig(epochs=epochs, batch_size=50, lr=lr), seed=seed)


D0, D1 = dense(0), dense(1)
F = RunConfig("finetune", D0.data, D0.model, D0.train, seed=0, sparsity=0.5, parent=D0)
DIVERGED = dense(3, lr=1e9)
PARTIAL = dense(2, epochs=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("manage-runs") / "runs"
    store = RunStore(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # the diverged run says so
        for cfg in (D0, F, D1, DIVERGED):
            get_or_train(cfg, store, device="cpu", progress=False)
    with pytest.MonkeyPatch.context() as m:
        interrupted_after_epoch(PARTIAL, store, 1, m)
    return root


@pytest.fixture
def runs(trained, tmp_path) -> Path:
    """A copy of the trained store, for a test that changes it."""
    return Path(shutil.copytree(trained, tmp_path / "runs"))


def cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `sparsegap runs ARGV`."""
    try:
        code = manage_runs.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def own_lock(root: Path, cfg: RunConfig) -> Path:
    """A lock on ``cfg`` held by a live owner on this host (this test process), as a training sweep holds it."""
    lock = root / ".locks" / f"{cfg.run_id}.lock"
    lock.parent.mkdir(exist_ok=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start_time": time.time() - 1}))
    return lock


def table_rows(out: str) -> dict[str, str]:
    """Run id -> its line in `ls`'s table."""
    return {line.split()[0]: line for line in out.splitlines()[1:-1]}


# ------------------------------------------------------------------------------------------------- ls

def test_ls_lists_every_run_with_its_status_epochs_time_and_provenance(trained, capsys):
    code, out, _ = cli(capsys, "ls", "--runs-dir", trained)
    assert code == 0
    rows = table_rows(out)
    assert set(rows) == {c.run_id for c in (D0, D1, F, DIVERGED, PARTIAL)}
    assert " done " in rows[D0.run_id] and " 2/2 " in rows[D0.run_id]
    assert "diverged (epoch 1)" in rows[DIVERGED.run_id]
    assert "partial (1 of 3 epochs)" in rows[PARTIAL.run_id]
    meta = json.loads((trained / F.run_id / "meta.json").read_text())
    for shown in (sparsegap.__version__, meta["device_name"], meta["started_utc"],
                  manage_runs.format_seconds(meta["seconds"])):
        assert shown in rows[F.run_id]
    if meta["git_commit"]:
        assert meta["git_commit"][:10] in rows[F.run_id]
    assert out.splitlines()[-1].startswith("5 runs, ")


def test_ls_machine_formats_carry_numbers_and_the_code_epoch(trained, capsys):
    code, out, _ = cli(capsys, "ls", "--runs-dir", trained, "--format", "json")
    rows = {r["run"]: r for r in json.loads(out)}
    meta = json.loads((trained / D1.run_id / "meta.json").read_text())
    assert code == 0 and rows[D1.run_id]["seconds"] == meta["seconds"]
    assert rows[D1.run_id]["code_epoch"] == provenance.CODE_EPOCH == meta["code_epoch"]
    assert rows[PARTIAL.run_id]["epochs"] == 1 and rows[PARTIAL.run_id]["of_epochs"] == 3
    code, out, _ = cli(capsys, "ls", "--runs-dir", trained, "--format", "csv", "--kind", "finetune")
    (row,) = list(csv.DictReader(out.splitlines()))
    assert code == 0 and row["run"] == F.run_id and row["status"] == "done" and row["model"] == "mlp(8)"


@pytest.mark.parametrize("filters, expected", [
    (["--kind", "finetune"], [F]),
    (["--kind", "dense", "--status", "done"], [D0, D1]),
    (["--status", "diverged", "--status", "partial"], [DIVERGED, PARTIAL]),
    (["--dataset", "tishby", "--model", "mlp", "--kind", "FINETUNE"], [F]),
    (["--model", "lenet5"], []),
])
def test_ls_filters(trained, capsys, filters, expected):
    code, out, _ = cli(capsys, "ls", "--runs-dir", trained, "--format", "json", *filters)
    assert code == 0 and sorted(r["run"] for r in json.loads(out)) == sorted(c.run_id for c in expected)


@pytest.mark.parametrize("flag, value, allowed", [
    ("--kind", "sparse", "dense, finetune"), ("--status", "finished", "done, diverged, stale"),
    ("--model", "vgg16", "lenet300-100"), ("--dataset", "imagenet", "tishby"), ("--format", "xml", "table, csv")])
def test_ls_refuses_a_bad_filter_listing_what_is_allowed(trained, capsys, flag, value, allowed):
    code, _, err = cli(capsys, "ls", "--runs-dir", trained, flag, value)
    assert code == 2 and flag in err and repr(value) in err and allowed in err


def test_ls_shows_a_run_in_progress_and_one_of_another_code_epoch(runs, capsys, monkeypatch):
    shutil.rmtree(runs / D1.run_id)
    get_or_train_started = runs / D1.run_id
    get_or_train_started.mkdir()                  # a sweep has just started it: config, no checkpoint yet
    (get_or_train_started / "config.json").write_text(json.dumps(D1.full_dict()))
    own_lock(runs, D1)
    monkeypatch.setattr(provenance, "CODE_EPOCH", provenance.CODE_EPOCH + 1)
    code, out, _ = cli(capsys, "ls", "--runs-dir", runs)
    rows = table_rows(out)
    assert code == 0 and "in progress (locked)" in rows[D1.run_id]
    assert f"stale (code epoch {provenance.CODE_EPOCH - 1})" in rows[D0.run_id]
    code, out, _ = cli(capsys, "ls", "--runs-dir", runs, "--status", "in-progress", "--format", "json")
    assert [r["run"] for r in json.loads(out)] == [D1.run_id] and f"pid {os.getpid()}" in json.loads(out)[0]["detail"]


def test_ls_verify_finds_a_swapped_weight_file(runs, capsys):
    shutil.copy(runs / D1.run_id / "weights.pt", runs / D0.run_id / "weights.pt")
    _, out, _ = cli(capsys, "ls", "--runs-dir", runs)
    assert " done " in table_rows(out)[D0.run_id]             # the cheap look reads no weights
    _, out, _ = cli(capsys, "ls", "--runs-dir", runs, "--verify", "--status", "damaged", "--format", "json")
    (row,) = json.loads(out)
    assert row["run"] == D0.run_id and "weights.pt" in row["detail"]


# ------------------------------------------------------------------------------------------------- show

def test_show_prints_config_meta_and_history_summary_by_a_unique_prefix(trained, capsys):
    code, out, _ = cli(capsys, "show", "--runs-dir", trained, F.run_id[:12])
    history = json.loads((trained / F.run_id / "history.json").read_text())
    best = max(range(len(history["test_acc"])), key=lambda e: history["test_acc"][e])
    assert code == 0 and f"run      {F.run_id}" in out and "status   done" in out
    assert f'parent: "{D0.run_id}"' in out and '"sparsity": 0.5' not in out and "sparsity: 0.5" in out
    assert "meta (provenance)" in out and f"version: {sparsegap.__version__}" in out and "started_utc: " in out
    assert f"best test_acc: {history['test_acc'][best]:.4g} at epoch {history['epoch'][best]}" in out
    assert "diverged: no" in out
    code, out, _ = cli(capsys, "show", "--runs-dir", trained, DIVERGED.run_id, "--format", "json")
    shown = json.loads(out)
    assert shown["status"] == "diverged" and shown["history"]["diverged"]["epoch"] == 1
    assert shown["meta"]["code_epoch"] == provenance.CODE_EPOCH and shown["config"]["seed"] == 3


@pytest.mark.parametrize("prefix, message", [("dense-", "ambiguous: 4 runs"), ("imp-", "no run in"),
                                              ("../runs", "not a path"), ("", "not a path")])
def test_show_refuses_an_unknown_or_ambiguous_run(trained, capsys, prefix, message):
    code, _, err = cli(capsys, "show", "--runs-dir", trained, prefix)
    assert code == 2 and message in err and "sparsegap runs show: error" in err


def test_a_runs_dir_that_is_not_a_store_is_refused(tmp_path, capsys):
    for command in (["ls"], ["show", "dense"], ["rm", "dense"], ["gc"], ["export", "dense", "--out", tmp_path]):
        code, _, err = cli(capsys, *command, "--runs-dir", tmp_path / "missing")
        assert code == 2 and "--runs-dir" in err and "missing" in err


# ------------------------------------------------------------------------------------------------- rm

def test_rm_is_a_dry_run_without_yes(runs, capsys):
    code, out, _ = cli(capsys, "rm", "--runs-dir", runs, D1.run_id[:10], F.run_id)
    assert code == 0 and f"would remove {D1.run_id}" in out and "pass --yes" in out
    assert (runs / D1.run_id / "DONE").exists() and (runs / F.run_id / "DONE").exists()


def test_rm_yes_removes_whole_runs_and_leaves_nothing_behind(runs, capsys):
    code, out, _ = cli(capsys, "rm", "--runs-dir", runs, D1.run_id, PARTIAL.run_id[:12], "--yes")
    assert code == 0 and f"removed {D1.run_id}" in out
    store = RunStore(runs)
    with pytest.raises(MissingRun):
        store.load(D1)
    assert not (runs / D1.run_id).exists() and not (runs / PARTIAL.run_id).exists()
    assert not list((runs / ".removing").iterdir()) and not list((runs / ".locks").glob("*.lock"))
    assert store.load(D0).config == D0 and store.load(F).config == F   # the others untouched, checksums and all


def test_rm_refuses_a_run_locked_by_a_live_owner_and_names_it(runs, capsys):
    lock = own_lock(runs, D1)
    code, out, err = cli(capsys, "rm", "--runs-dir", runs, D1.run_id, F.run_id, "--yes")
    assert code == 1 and f"refused {D1.run_id}" in err and f"pid {os.getpid()} on {socket.gethostname()}" in err
    assert (runs / D1.run_id / "DONE").exists() and lock.exists()      # neither the run nor its lock touched
    assert not (runs / F.run_id).exists() and "1 refused" in out       # the other one went


def test_rm_takes_over_the_lock_of_a_dead_owner(runs, capsys):
    lock = runs / ".locks" / f"{D1.run_id}.lock"
    lock.parent.mkdir(exist_ok=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "start_time": time.time()}))
    with pytest.warns(UserWarning, match="taking over the stale lock"):
        code, _, _ = cli(capsys, "rm", "--runs-dir", runs, D1.run_id, "--yes")
    assert code == 0 and not (runs / D1.run_id).exists() and not lock.exists()


def test_rm_checks_every_name_before_removing_any(runs, capsys):
    code, _, err = cli(capsys, "rm", "--runs-dir", runs, D1.run_id, "nothing-like-this", "--yes")
    assert code == 2 and "nothing-like-this" in err and (runs / D1.run_id / "DONE").exists()


# ------------------------------------------------------------------------------------------------- gc

def test_gc_keeps_planned_runs_their_parents_and_descendants_and_removes_the_rest(runs, capsys, monkeypatch):
    plans = []
    monkeypatch.setattr(manage_runs, "planned_configs",
                        lambda profiles, notebooks_dir=None: plans.append(profiles) or [F])
    code, out, _ = cli(capsys, "gc", "--runs-dir", runs)
    assert code == 0 and plans == [["cpu", "smoke", "paper"]]          # every profile unless told
    assert "keeping 2 of 5 runs" in out and "dry run: 3 runs" in out and len(list(runs.glob("*-*"))) == 5
    code, out, _ = cli(capsys, "gc", "--runs-dir", runs, "--profile", "cpu", "--yes")
    assert code == 0 and plans[-1] == ["cpu"]
    assert sorted(p.name for p in runs.glob("*-*")) == sorted([D0.run_id, F.run_id])   # the parent stays
    monkeypatch.setattr(manage_runs, "planned_configs", lambda profiles, notebooks_dir=None: [D0])
    code, out, _ = cli(capsys, "gc", "--runs-dir", runs, "--yes")
    assert code == 0 and "1 descending from a planned run" in out and (runs / F.run_id / "DONE").exists()


def test_gc_stale_removes_the_runs_of_another_code_epoch_even_planned(runs, capsys, monkeypatch):
    monkeypatch.setattr(manage_runs, "planned_configs", lambda profiles, notebooks_dir=None: [F, D1, DIVERGED])
    (runs / PARTIAL.run_id).rename(runs.parent / "kept-aside")
    meta = runs / D1.run_id / "meta.json"
    meta.write_text(json.dumps(json.loads(meta.read_text()) | {"code_epoch": provenance.CODE_EPOCH - 1}))
    code, out, _ = cli(capsys, "gc", "--runs-dir", runs, "--yes")
    assert code == 0 and "nothing to remove" in out                    # all planned; stale ones only with --stale
    code, out, _ = cli(capsys, "gc", "--runs-dir", runs, "--stale", "--yes")
    assert code == 0 and sorted(p.name for p in runs.glob("*-*")) == sorted([D0.run_id, F.run_id, DIVERGED.run_id])


def test_gc_never_removes_a_run_in_progress(runs, capsys, monkeypatch):
    monkeypatch.setattr(manage_runs, "planned_configs", lambda profiles, notebooks_dir=None: [])
    (runs / PARTIAL.run_id / "checkpoint.pt").unlink()
    own_lock(runs, PARTIAL)                                            # a sweep training it again
    code, out, _ = cli(capsys, "gc", "--runs-dir", runs, "--yes")
    assert code == 0 and "1 in progress" in out and [p.name for p in runs.glob("*-*")] == [PARTIAL.run_id]


def test_gc_reads_the_chapters_plans(runs, capsys):
    """The real plans of the smoke profile: the tiny runs of this store are none of them, and nothing goes unasked."""
    planned = manage_runs.planned_configs(["smoke"])
    assert planned and all(isinstance(c, RunConfig) for c in planned)
    code, out, _ = cli(capsys, "gc", "--runs-dir", runs, "--profile", "smoke")
    assert code == 0 and "keeping 0 of 5 runs" in out and "dry run: 5 runs" in out
    assert len(list(runs.glob("*-*"))) == 5


def test_gc_refuses_a_bad_profile_and_removes_nothing_when_a_plan_fails(runs, capsys, tmp_path):
    code, _, err = cli(capsys, "gc", "--runs-dir", runs, "--profile", "gpu")
    assert code == 2 and "'gpu'" in err and "cpu, smoke, paper" in err
    broken = tmp_path / "notebooks"
    broken.mkdir()
    (broken / "01_two_regimes.ipynb").write_text("{not json")
    code, _, err = cli(capsys, "gc", "--runs-dir", runs, "--notebooks-dir", broken, "--yes")
    assert code == 1 and "01_two_regimes" in err and "nothing is removed" in err
    assert len(list(runs.glob("*-*"))) == 5


# ------------------------------------------------------------------------------------------------- export

def test_export_writes_the_history_as_csv_and_the_masked_weights_as_safetensors(trained, capsys, tmp_path):
    out = tmp_path / "export"
    code, printed, _ = cli(capsys, "export", "--runs-dir", trained, F.run_id[:14], "--out", out)
    assert code == 0 and "weights.safetensors" in printed
    run = RunStore(trained).load(F)
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert len(rows) == len(run.history["epoch"]) == F.train.epochs
    for key in ("epoch", "lr", "train_loss", "test_acc", "seconds"):
        assert [float(r[key]) for r in rows] == [float(v) for v in run.history[key]]
    weights, masks = load_file(out / "weights.safetensors"), load_file(out / "masks.safetensors")
    assert set(weights) == set(run.weights) and set(masks) == set(run.masks) and run.masks
    for name, w in run.weights.items():
        expected = w * run.masks[name] if name in run.masks else w
        assert torch.equal(weights[name], expected), name
    pruned = sum(int((~m).sum()) for m in run.masks.values())
    assert pruned > 0 and sum(int((weights[n] == 0).sum()) for n in masks) >= pruned
    assert all(torch.equal(masks[n], m) for n, m in run.masks.items())
    assert json.loads((out / "config.json").read_text())["sparsity"] == 0.5


def test_masked_weights_zero_exactly_the_pruned_weights():
    """Training keeps pruned weights at zero, so the stored run cannot tell a mask applied from one forgotten:
    weights with nonzero values under the mask can."""
    from types import SimpleNamespace
    g = torch.Generator().manual_seed(0)
    weights = {"fc1.weight": torch.randn(4, 3, generator=g), "fc1.bias": torch.randn(4, generator=g)}
    masks = {"fc1.weight": torch.rand(4, 3, generator=g) < 0.5}
    out = manage_runs.masked_weights(SimpleNamespace(weights=weights, masks=masks))
    assert torch.equal(out["fc1.weight"], weights["fc1.weight"] * masks["fc1.weight"])
    assert not torch.equal(out["fc1.weight"], weights["fc1.weight"])
    assert torch.equal(out["fc1.bias"], weights["fc1.bias"])
    assert all(t.is_contiguous() and t.data_ptr() != weights[n].data_ptr() for n, t in out.items())


def test_export_of_a_dense_run_keeps_its_weights_and_refuses_to_overwrite(trained, capsys, tmp_path):
    out = tmp_path / "export"
    assert cli(capsys, "export", "--runs-dir", trained, D1.run_id, "--out", out)[0] == 0
    run = RunStore(trained).load(D1)
    weights = load_file(out / "weights.safetensors")
    assert all(torch.equal(weights[n], w) for n, w in run.weights.items()) and not (out / "masks.safetensors").exists()
    if any(run.history.get("trace", {}).values()):
        assert (out / "trace.csv").exists()
    code, _, err = cli(capsys, "export", "--runs-dir", trained, D1.run_id, "--out", out)
    assert code == 2 and "already holds" in err and "--force" in err
    assert cli(capsys, "export", "--runs-dir", trained, D1.run_id, "--out", out, "--force")[0] == 0


def test_export_refuses_an_unfinished_run_and_a_file_as_out(trained, capsys, tmp_path):
    code, _, err = cli(capsys, "export", "--runs-dir", trained, PARTIAL.run_id, "--out", tmp_path / "x")
    assert code == 2 and "not finished" in err and not (tmp_path / "x").exists()
    (tmp_path / "file").write_text("")
    code, _, err = cli(capsys, "export", "--runs-dir", trained, D0.run_id, "--out", tmp_path / "file")
    assert code == 2 and "is a file" in err
    code, _, err = cli(capsys, "export", "--runs-dir", trained, D0.run_id)
    assert code == 2 and "--out" in err


# ------------------------------------------------------------------------------------------------- help

@pytest.mark.parametrize("command", [[], ["ls"], ["show"], ["rm"], ["gc"], ["export"]])
def test_every_subcommand_has_help(capsys, command):
    code, out, _ = cli(capsys, *command, "--help")
    assert code == 0 and out.startswith(f"usage: sparsegap runs {' '.join(command)}".rstrip())


def test_no_or_an_unknown_subcommand_is_a_usage_error(capsys):
    assert cli(capsys)[0] == 2
    code, _, err = cli(capsys, "list")
    assert code == 2 and "'list'" in err and "ls" in err


def test_python_m_runs_it(trained):
    done = subprocess.run([sys.executable, "-m", "sparsegap.manage_runs", "ls", "--runs-dir", str(trained),
                           "--kind", "finetune", "--format", "csv"], capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(REPO_ROOT / "pkg")})
    assert done.returncode == 0, done.stderr
    assert [r["run"] for r in csv.DictReader(done.stdout.splitlines())] == [F.run_id]
