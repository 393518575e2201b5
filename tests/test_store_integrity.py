"""What the store keeps is what the run produced (issue 7, sections 2 and 3; issue 25, items 1 and 3).

Checkpoints are tied to their run, every stored file is checked against its SHA-256 in DONE,
temporaries do not outlive a crash, writes are fsynced and readable by the group, and a run whose
loss became NaN is stored as diverged. A resume verifies its checkpoint and the files the run started
from; an old-format DONE is not trusted.
"""

import json
import os
import shutil
import stat
import warnings

import pytest
import torch

import sparsegap.runs.job as runs_mod
from _damage import DAMAGES, FORGED, damage, interrupted_after_epoch
from sparsegap.runs.atomic import sha256
from sparsegap.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sparsegap.runs import RunStore, get_or_train
from sparsegap.bookkeeping import diverged_at
from sparsegap.train import train


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


@pytest.fixture
def strict():
    """Any warning is an error: for the paths that must be silent."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def dense_cfg(epochs=3, seed=0, **train):
    return RunConfig("dense", DataConfig("tishby", train_size=300), ModelConfig("mlp", hidden=(16,)),
                     TrainConfig(epochs=epochs, batch_size=50, **({"lr": 0.05} | train)), seed=seed)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- checkpoints ---------------------------------------------------------------------------------


def test_a_checkpoint_carries_its_run_hash(store, monkeypatch):
    cfg = dense_cfg(epochs=3)
    ckpt = torch.load(interrupted_after_epoch(cfg, store, 1, monkeypatch), weights_only=True)
    assert ckpt["run_hash"] == cfg.hash() and ckpt["epoch"] == 1


def test_a_checkpoint_of_another_run_is_refused_and_discarded(store, tmp_path, monkeypatch):
    mine, other = dense_cfg(seed=0), dense_cfg(seed=1)   # same shapes: the checkpoint would load
    reference = get_or_train(mine, RunStore(tmp_path / "reference"), progress=False)
    foreign = interrupted_after_epoch(other, store, 2, monkeypatch)
    store.path(mine).mkdir(parents=True)
    shutil.copy(foreign, store.path(mine) / "checkpoint.pt")
    with pytest.warns(UserWarning, match="checkpoint belongs to another run.*discarded"):
        run = get_or_train(mine, store, progress=False)
    assert same_weights(run.weights, reference.weights)
    assert json.loads((run.path / "meta.json").read_text())["resumed_at_epoch"] == 0


@pytest.mark.parametrize("content", [
    {"epoch": 2},                                                       # the audit's case
    "right hash, no keys",
    "wrong types",
    "weights of another shape",
    ["not", "a", "dict"],
])
def test_a_malformed_checkpoint_is_discarded_and_training_starts_over(store, tmp_path, monkeypatch, content):
    cfg = dense_cfg(epochs=3)
    reference = get_or_train(cfg, RunStore(tmp_path / "reference"), progress=False)
    good = torch.load(interrupted_after_epoch(cfg, store, 2, monkeypatch), weights_only=True)
    if content == "right hash, no keys":
        content = {"epoch": 2, "run_hash": cfg.hash()}
    elif content == "wrong types":
        content = good | {"epoch": "2", "model": "weights"}
    elif content == "weights of another shape":
        content = good | {"model": {k: v[:1] for k, v in good["model"].items()}}
    torch.save(content, store.path(cfg) / "checkpoint.pt")
    with pytest.warns(UserWarning, match="checkpoint .*(malformed|unreadable).*discarded"):
        run = get_or_train(cfg, store, progress=False)
    assert same_weights(run.weights, reference.weights)
    assert not (run.path / "checkpoint.pt").exists()


# --- checksums -----------------------------------------------------------------------------------


def test_done_records_the_sha256_of_every_stored_file(store):
    d = dense_cfg()
    f = RunConfig("finetune", d.data, d.model, d.train, sparsity=0.5, parent=d)
    for cfg, files in ((d, {"config.json", "init.pt", "weights.pt", "history.json", "meta.json"}),
                       (f, {"config.json", "init.pt", "masks.pt", "weights.pt", "history.json", "meta.json"})):
        run = get_or_train(cfg, store, progress=False)
        done = json.loads((run.path / "DONE").read_text())
        assert done["run_hash"] == cfg.hash() and set(done["sha256"]) == files
        assert done["sha256"]["weights.pt"] == sha256((run.path / "weights.pt").read_bytes())


@pytest.mark.parametrize("swapped", ["weights.pt", "history.json", "init.pt", "meta.json"])
def test_a_file_swapped_from_another_seed_is_a_damaged_run(store, swapped):
    mine, other = dense_cfg(seed=0), dense_cfg(seed=1)
    run = get_or_train(mine, store, progress=False)
    get_or_train(other, store, progress=False)
    shutil.copy(store.path(other) / swapped, store.path(mine) / swapped)
    with pytest.warns(UserWarning, match=f"damaged .*{swapped} does not match its SHA-256"):
        again = get_or_train(mine, store, progress=False)
    assert same_weights(again.weights, run.weights)
    assert again.history["train_loss"] == run.history["train_loss"]


@pytest.mark.parametrize("swapped", [None, "weights.pt", "init.pt"])
def test_a_run_with_an_old_done_marker_is_unverified_and_trained_again(store, swapped):
    """A DONE of the format before checksums (the bare config hash) records nothing to check its files against:
    the run is trained again (issue 25, item 3). Upgrading the marker would checksum whatever is there now,
    swapped weights included, and load them silently ever after."""
    mine, other = dense_cfg(seed=0), dense_cfg(seed=1)
    run = get_or_train(mine, store, progress=False)
    get_or_train(other, store, progress=False)
    if swapped:
        shutil.copy(store.path(other) / swapped, store.path(mine) / swapped)
    (run.path / "DONE").write_text(mine.hash())
    with pytest.warns(UserWarning, match="damaged .*DONE is of the old format.*cannot be verified.*training it again"):
        again = get_or_train(mine, store, progress=False)
    assert same_weights(again.weights, run.weights) and same_weights(again.init, run.init)
    assert json.loads((run.path / "DONE").read_text())["run_hash"] == mine.hash()   # the new format, checksummed


@pytest.mark.parametrize("marker", ["garbage", "0123456789abcdef", '{"run_hash": "x", "sha256": {}}'])
def test_a_bad_done_marker_is_a_damaged_run(store, marker):
    cfg = dense_cfg()
    run = get_or_train(cfg, store, progress=False)
    (run.path / "DONE").write_text(marker)
    with pytest.warns(UserWarning, match="damaged .*DONE"):
        again = get_or_train(cfg, store, progress=False)
    assert same_weights(again.weights, run.weights)


# --- temporaries, fsync, modes -------------------------------------------------------------------


def test_orphan_temporaries_are_swept_when_the_lock_is_taken(store, monkeypatch):
    cfg = dense_cfg(epochs=3)
    path = interrupted_after_epoch(cfg, store, 1, monkeypatch).parent
    orphans = [path / ".checkpoint.pt.4242-deadbeef.tmp", path / ".weights.pt.4242-0badf00d.tmp"]
    for o in orphans:
        o.write_bytes(b"half a file")
    get_or_train(cfg, store, progress=False)
    assert not list(path.glob("*.tmp")) and not list(path.glob(".*.tmp"))


def test_writes_are_fsynced_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    runs_mod.atomic_write_text("hello", tmp_path / "greeting.txt")
    assert events == [("fsync", "file"), ("replace", "greeting.txt"), ("fsync", "dir")]
    assert (tmp_path / "greeting.txt").read_text() == "hello"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_stored_files_respect_the_umask(store, umask):
    old = os.umask(umask)
    try:
        run = get_or_train(dense_cfg(epochs=1), store, progress=False)
        run.measure("thing", {}, lambda: {"v": 1})
    finally:
        os.umask(old)
    files = [p for p in run.path.rglob("*") if p.is_file()]
    assert len(files) >= 7
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p.name


# --- diverged runs -------------------------------------------------------------------------------


def test_train_stops_at_the_first_non_finite_loss():
    from sparsegap.runs import build_model_for, load_data
    cfg = dense_cfg(epochs=4, lr=1e10)
    history = train(build_model_for(cfg.model, cfg.data, seed=0), load_data(cfg.data), cfg.train,
                    progress=False, device="cpu")
    d = history["diverged"]
    assert d["loss"] == "nan" and d["epoch"] == 1 and 1 <= d["step"] <= 6   # 6 steps per epoch
    assert all(len(history[k]) == d["epoch"] - 1 for k in ("epoch", "train_loss", "test_acc"))
    assert diverged_at(3, 17, float("inf")) == {"epoch": 3, "step": 17, "loss": "inf"}
    assert diverged_at(3, 17, float("-inf"))["loss"] == "inf"


@pytest.mark.parametrize("train_cfg, epoch", [({"lr": 1e10}, 1), ({"lr": 1.0, "weight_decay": 1e3}, 2)])
def test_a_diverged_run_is_stored_as_diverged_and_never_trained_again(store, train_cfg, epoch):
    cfg = dense_cfg(epochs=4, **train_cfg)
    with pytest.warns(UserWarning, match=f"diverged: loss nan at epoch {epoch}"):
        run = get_or_train(cfg, store, progress=False)
    assert run.diverged is not None and run.diverged["epoch"] == epoch and run.diverged["loss"] == "nan"
    assert len(run.history["epoch"]) == epoch - 1 < cfg.train.epochs
    assert json.loads((run.path / "meta.json").read_text())["status"] == "diverged"
    assert store.is_done(cfg) and not (run.path / "checkpoint.pt").exists()
    mtime = (run.path / "weights.pt").stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = get_or_train(cfg, store, progress=False)   # loaded, silently: it is deterministic
    assert again.diverged == run.diverged
    assert (run.path / "weights.pt").stat().st_mtime_ns == mtime


def test_a_finished_run_is_not_diverged(store):
    run = get_or_train(dense_cfg(epochs=1), store, progress=False)
    assert run.diverged is None
    assert json.loads((run.path / "meta.json").read_text())["status"] == "done"


# --- unfinished runs: checkpoint and start files verified on resume (issue 25, item 1) --------------


def sparse_cfg(parent, sparsity=0.5, kind="finetune"):
    return RunConfig(kind, parent.data, parent.model, parent.train, seed=parent.seed, sparsity=sparsity,
                     parent=parent)


CASES = [(d, False) for d in DAMAGES] + [(d, True) for d in FORGED]


@pytest.mark.parametrize("kind, forge", CASES, ids=[f"{d}{', checksum forged' if f else ''}" for d, f in CASES])
def test_a_damaged_unfinished_run_warns_and_trains_from_the_start(store, tmp_path, monkeypatch, kind, forge):
    d = dense_cfg(epochs=3)
    mine, sibling = sparse_cfg(d, 0.5), sparse_cfg(d, 0.8)   # same shapes, other masks and init
    reference = get_or_train(mine, RunStore(tmp_path / "reference"), progress=False)
    get_or_train(d, store, progress=False)                    # the parent, not interrupted
    interrupted_after_epoch(sibling, store, 1, monkeypatch)
    interrupted_after_epoch(mine, store, 1, monkeypatch)
    damage(kind, store.path(mine), store.path(sibling), mine.hash(), forge)
    with pytest.warns(UserWarning, match="checkpoint .*; discarded, training from the start"):
        run = get_or_train(mine, store, progress=False)
    assert run.diverged is None and json.loads((run.path / "meta.json").read_text())["status"] == "done"
    assert same_weights(run.weights, reference.weights) and same_weights(run.init, reference.init)
    assert same_weights(run.masks, reference.masks)
    assert run.history["train_loss"] == reference.history["train_loss"]
    assert json.loads((run.path / "meta.json").read_text())["resumed_at_epoch"] == 0


@pytest.mark.parametrize("kind", ["finetune", "scratch"])
def test_an_undamaged_unfinished_run_resumes_silently_to_the_same_bits(store, tmp_path, monkeypatch, kind):
    d = dense_cfg(epochs=3)
    cfg = sparse_cfg(d, 0.5, kind)
    reference = get_or_train(cfg, RunStore(tmp_path / "reference"), progress=False)
    get_or_train(d, store, progress=False)
    ckpt = torch.load(interrupted_after_epoch(cfg, store, 2, monkeypatch), weights_only=True)
    assert set(ckpt["files"]) == {"config.json", "init.pt", "masks.pt"} and len(ckpt["sha256"]) == 64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = get_or_train(cfg, store, progress=False)
    assert json.loads((run.path / "meta.json").read_text())["resumed_at_epoch"] == 2
    assert same_weights(run.weights, reference.weights)
    assert run.history["train_loss"] == reference.history["train_loss"]


def test_a_checkpoint_without_a_checksum_is_discarded(store, tmp_path, monkeypatch):
    cfg = dense_cfg(epochs=3)
    reference = get_or_train(cfg, RunStore(tmp_path / "reference"), progress=False)
    path = interrupted_after_epoch(cfg, store, 2, monkeypatch)
    old = {k: v for k, v in torch.load(path, weights_only=True).items() if k not in ("sha256", "files", "code_epoch")}
    torch.save(old, path)            # the format before issue 25
    with pytest.warns(UserWarning, match="checkpoint carries no checksum.*discarded"):
        run = get_or_train(cfg, store, progress=False)
    assert same_weights(run.weights, reference.weights)


def test_init_swapped_while_the_run_trains_is_not_stored(store, tmp_path, monkeypatch):
    mine, other = dense_cfg(seed=0), dense_cfg(seed=1)
    reference = get_or_train(mine, RunStore(tmp_path / "reference"), progress=False)
    get_or_train(other, store, progress=False)
    real_save, swapped = runs_mod.atomic_save, []

    def swapping_save(obj, path):
        real_save(obj, path)
        if path.name == "checkpoint.pt" and obj["epoch"] == 2 and not swapped:
            shutil.copy(store.path(other) / "init.pt", store.path(mine) / "init.pt")
            swapped.append(path)

    monkeypatch.setattr(runs_mod, "atomic_save", swapping_save)
    with pytest.warns(UserWarning, match="init.pt changed while the run trained .*training it again"):
        run = get_or_train(mine, store, progress=False)
    assert swapped and same_weights(run.init, reference.init) and same_weights(run.weights, reference.weights)


def kinds_that_resume():
    d = dense_cfg(epochs=3)
    gradual = RunConfig("gradual", d.data, d.model, d.train, sparsity=0.8, update_start=0.1, update_end=0.6,
                        update_every=2)
    dst = RunConfig("dst", d.data, d.model, d.train, sparsity=0.8, dst_method="set", drop_fraction=0.3,
                    update_every=2, update_end=0.75)
    kept = RunConfig("dense", d.data, d.model, d.train, save_weights_at=(3, 8))   # 6 steps an epoch
    curve = RunConfig("curve", d.data, d.model, d.train, parent=RunConfig("scratch", d.data, d.model, d.train, parent=gradual), partner=gradual,
                      curve_degree=2, curve_mode="sparse")
    return {"gradual (an updater, no start masks)": gradual, "dst (an updater, start masks)": dst,
            "dense with kept weights": kept, "curve": curve}


@pytest.mark.parametrize("name", list(kinds_that_resume()))
def test_every_kind_resumes_silently_to_the_same_bits(store, tmp_path, monkeypatch, name):
    """The checks of a resume know what each kind writes: an updater's masks change (masks.pt is rewritten at
    the end, not checked), kept weights are checked once written, a curve's masks are not the run's."""
    cfg = kinds_that_resume()[name]
    reference = get_or_train(cfg, RunStore(tmp_path / "reference"), progress=False)
    for parent in filter(None, (cfg.parent, cfg.partner)):
        get_or_train(parent, store, progress=False)
    ckpt = torch.load(interrupted_after_epoch(cfg, store, 2, monkeypatch), weights_only=True)
    if cfg.save_weights_at:
        assert {"weights-iter3.pt", "weights-iter8.pt"} <= set(ckpt["files"])
    with warnings.catch_warnings(record=True) as caught:   # (a curve's resume has a warning of torch's own)
        warnings.simplefilter("always")
        run = get_or_train(cfg, store, progress=False)
    assert not [str(w.message) for w in caught if "lr_scheduler" not in str(w.message)]
    assert json.loads((run.path / "meta.json").read_text())["resumed_at_epoch"] == 2
    assert same_weights(run.weights, reference.weights)
    assert (run.masks is None) == (reference.masks is None)
    assert run.masks is None or same_weights(run.masks, reference.masks)
    assert all(same_weights(run.saved[k], reference.saved[k]) for k in cfg.save_weights_at)


def test_kept_weights_swapped_in_an_unfinished_run_are_caught(store, tmp_path, monkeypatch):
    cfg = kinds_that_resume()["dense with kept weights"]
    reference = get_or_train(cfg, RunStore(tmp_path / "reference"), progress=False)
    path = interrupted_after_epoch(cfg, store, 2, monkeypatch).parent
    shutil.copy(path / "weights-iter8.pt", path / "weights-iter3.pt")
    with pytest.warns(UserWarning, match="checkpoint was trained from another weights-iter3.pt .*discarded"):
        run = get_or_train(cfg, store, progress=False)
    assert same_weights(run.saved[3], reference.saved[3]) and same_weights(run.weights, reference.weights)
