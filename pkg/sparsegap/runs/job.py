"""One run trained into the store, under its lock: prepared (its start state written, or its checkpoint
found), trained by :func:`sparsegap.train.train`, the batched trainer or the curve trainer, and stored
with DONE last.

A run interrupted mid-training resumes from ``checkpoint.pt``. The checkpoint carries the run's hash (a
checkpoint of another run is never resumed), the code epoch it was written by, the SHA-256 of the files
written before training (config, init, masks, kept weights) as they were written, and the SHA-256 of its
own contents. A resume checks all of them, and that the masks are the run's and the weights finite; on any
mismatch it warns and trains from the start, so that what DONE checksums is what this run produced. A run
whose loss became NaN or infinite is stored as *diverged* and, training being deterministic, never trained
again.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..batched import engine_for, train_batched
from ..bookkeeping import HISTORY_KEYS
from ..config import RunConfig
from ..datasets import NUM_CLASSES
from ..pruning import Masks, prunable_parameters, same_masks
from ..trackers import make_trackers
from ..train import train
from . import provenance
from .atomic import atomic_save, atomic_write_text, content_sha256, sha256, to_cpu
from .lock import RunLock
from .materials import load_data, own_random_state
from .recipes import RECIPES, label
from .store import (DamagedRun, FilesChanged, Run, RunStore, StaleRun, saved_name, stored_files, sweep_temporaries,
                    write_result)
from .threads import threads_for, use_threads, workers


def tidy_finished(run: Run, store: RunStore) -> None:
    """Remove what a process killed between writing DONE and releasing the lock left behind: its
    checkpoint (as large as the weights and their momentum) and its lock.

    Never waits: a finished run is read without its lock (DONE comes last, checksums catch the rest),
    and a lock held by a live owner, or by one on another host that is not yet stale, may stand for
    hours. The tidying is then left to that owner, or to a later reader."""
    lock = store.lock(run.config)
    if ((run.path / "checkpoint.pt").exists() or lock.path.exists()) and lock.try_acquire():
        try:
            (run.path / "checkpoint.pt").unlink(missing_ok=True)
            sweep_temporaries(run.path)
        finally:
            lock.release()


def write_checkpoint(ckpt: dict, path: Path, run_hash: str, written: dict[str, str]) -> None:
    """Write an epoch's checkpoint into run folder ``path`` as a run in training does, stamped with the run's hash,
    the code epoch and the files written before training, and sealed with its content's SHA-256: the work a plan's
    probe (:mod:`.probe`) times at each epoch too."""
    ckpt = to_cpu(ckpt) | {"run_hash": run_hash, "code_epoch": provenance.current_epoch(), "files": dict(written)}
    ckpt["sha256"] = content_sha256(ckpt)
    atomic_save(ckpt, path / "checkpoint.pt")


@dataclass
class Job:
    """A run being trained under its lock: its initial state and the checkpoint to resume from."""

    cfg: RunConfig
    path: Path
    lock: RunLock
    model: nn.Module
    masks: Masks | None
    checkpoint: dict | None
    written: dict[str, str]              # file -> SHA-256 as written, of the files written before training
    final_masks: Masks | None = None     # the masks at the last epoch end (mask updaters change them)
    started: float = dataclasses.field(default_factory=time.time)

    def save_checkpoint(self, ckpt: dict) -> None:
        """The checkpoint of an epoch, but the last: the run's result is written right after it, and a process
        killed before that trains the last epoch again from the checkpoint before (the same weights)."""
        self.final_masks = to_cpu(ckpt.get("masks"))
        if ckpt["epoch"] < self.cfg.train.epochs:
            write_checkpoint(ckpt, self.path, self.cfg.hash(), self.written)
        self.lock.refresh()

    @property
    def label(self) -> str:
        return label(self.cfg)

    def callbacks(self, data) -> list:
        """The run's mask updater (gradual pruning, SET, RigL), its trackers, and the keeper of the
        weights at ``save_weights_at``. The updater comes first, so trackers see the updated mask."""
        cfg = self.cfg
        updater = RECIPES[cfg.kind].updater
        cbs = []
        if updater is not None:
            cbs.append(updater(cfg, cfg.train.epochs * -(-len(data.y_train) // cfg.train.batch_size)))
        cbs += make_trackers(cfg.track, data)
        if cfg.save_weights_at:
            cbs.append(_KeepWeights(cfg.save_weights_at, self.path, self.written))
        return cbs


class _KeepWeights:
    """Writes the weights after each training iteration in ``iterations`` (``weights-iter<k>.pt``),
    the points imp rounds rewind to. Written before the epoch's checkpoint, so a resumed run past k has it."""

    def __init__(self, iterations: tuple[int, ...], path: Path, written: dict[str, str]):
        self.iterations = set(iterations)
        self.path = path
        self.written = written

    def on_step_end(self, state) -> None:
        if state.step in self.iterations:
            self.written[saved_name(state.step)] = _save(to_cpu(state.model.state_dict()), self.path / saved_name(state.step))


def prepare(cfg: RunConfig, store: RunStore, parent: Run | None, lock: RunLock) -> Run | Job:
    """Under the lock: the finished run if another process trained it meanwhile, else the job to train."""
    path = store.path(cfg)
    if (path / "DONE").exists():              # trained meanwhile by the process we waited for, or damaged
        try:
            return store.load(cfg)
        except DamagedRun as e:
            warnings.warn(f"run {path.name} in {store.root} is {'stale' if isinstance(e, StaleRun) else 'damaged'} "
                          f"({e}); training it again")
            shutil.rmtree(path)
    sweep_temporaries(path)
    model, masks = RECIPES[cfg.kind].start(cfg, parent, store)
    checkpoint = _load_checkpoint(path, cfg, model, masks)
    if checkpoint is not None and cfg.save_weights_at:
        steps = checkpoint.get("step", checkpoint["epoch"] * -(-len(load_data(cfg.data).y_train) // cfg.train.batch_size))
        lost = [k for k in cfg.save_weights_at if k <= steps and not (path / saved_name(k)).exists()]
        if lost:
            warnings.warn(f"run {path.name}: the weights of iteration(s) {lost} are missing although the "
                          f"checkpoint is past them; discarded, training from the start")
            (path / "checkpoint.pt").unlink(missing_ok=True)
            checkpoint = None
    if checkpoint is not None:         # its files verified against the checksums it recorded
        return Job(cfg, path, lock, model, masks, checkpoint, dict(checkpoint["files"]))
    # From the start: the start state is written again (what an earlier attempt left may be stale or
    # swapped) and its checksums recorded as written, for the checkpoints to carry and the resume to verify.
    for k in cfg.save_weights_at:      # an earlier attempt's, rewritten as training passes them
        (path / saved_name(k)).unlink(missing_ok=True)
    text = json.dumps(cfg.full_dict(), indent=2)
    atomic_write_text(text, path / "config.json")
    written = {"config.json": sha256(text.encode()), "init.pt": _save(to_cpu(model.state_dict()), path / "init.pt")}
    if masks is not None:
        digest = _save(to_cpu(masks), path / "masks.pt")
        if RECIPES[cfg.kind].updater is None:   # an updater's masks.pt is rewritten by finish(), from the checkpoint's
            written["masks.pt"] = digest
    return Job(cfg, path, lock, model, masks, None, written)


def _save(obj, path: Path) -> str:
    """Save ``obj`` (atomically) and return the SHA-256 of the file, read back as a reader will see it."""
    atomic_save(obj, path)
    return sha256(path.read_bytes())


def finish(job: Job, store: RunStore, history: dict, seconds: float, threads: int, batch: int | None = None,
           engine: str = "", device="cpu") -> Run:
    """Store a trained job's result, DONE last. ``threads``: the torch threads it trained with; ``batch``: the size
    of the batch it was trained in by the batched trainer (None: trained by train()); ``device``: where it
    trained. :class:`FilesChanged` if a file written before training changed meanwhile (nothing is stored)."""
    if "diverged" in history:
        d = history["diverged"]
        warnings.warn(f"run {job.path.name} diverged: loss {d['loss']} at epoch {d['epoch']}, step {d['step']}; "
                      f"it is stored as diverged and will not be trained again")
    meta = provenance.provenance(device, job.started) | {
        "seconds": seconds, "threads": threads, "resumed_at_epoch": job.checkpoint["epoch"] if job.checkpoint else 0,
        "status": "diverged" if "diverged" in history else "done"}
    if batch is not None:  # trained by the batched trainer as one member of this many networks (1: alone)
        meta |= {"batch": batch, "engine": engine}
    if RECIPES[job.cfg.kind].updater is not None:   # the mask the updater ended with (children take it)
        final = job.final_masks or job.masks or {n: torch.ones_like(p, dtype=torch.bool) for n, p in
                                                 prunable_parameters(job.model, exclude_output=job.cfg.exclude_output).items()}
        atomic_save(to_cpu(final), job.path / "masks.pt")
    write_result(job.path, job.cfg, job.model, history, meta, job.written)
    return store.load(job.cfg)


def train_locked(cfg: RunConfig, store: RunStore, parent: Run | None, lock: RunLock, device,
                  progress: bool) -> Run:
    job = prepare(cfg, store, parent, lock)
    if isinstance(job, Run):
        return job
    if job.checkpoint is not None:
        job.final_masks = job.checkpoint.get("masks")
    t0 = time.time()
    data = load_data(cfg.data)
    if RECIPES[cfg.kind].curve:
        from ..curves import train_curve
        with use_threads(_threads(job.model.base, cfg, data)) as threads:
            history = train_curve(job.model, data, cfg.train, seed=cfg.seed, checkpoint=job.checkpoint,
                                  on_epoch_end=job.save_checkpoint, progress=progress)
        return finish(job, store, history, time.time() - t0, threads, device=device)
    if batch_eligible(cfg):   # alone, but by the batched trainer: the bits it has in any batch
        return train_jobs([job], store, device, progress)[0]
    reference = _dense_predictions(cfg, store, data) if cfg.train.data_schedule == "disagree" else None
    with use_threads(_threads(job.model, cfg, data)) as threads:
        history = train(job.model, data, cfg.train, masks=job.masks, seed=cfg.seed, device=device,
                        callbacks=job.callbacks(data), checkpoint=job.checkpoint,
                        on_epoch_end=job.save_checkpoint, progress=progress, desc=job.label, reference=reference)
    return finish(job, store, history, time.time() - t0, threads, device=device)


def _dense_predictions(cfg: RunConfig, store: RunStore, data) -> torch.Tensor:
    """The predicted class of every training sample by the dense run at the root of ``cfg``'s chain (the
    reference of the "disagree" data schedule), computed on the CPU in eval mode."""
    from ..metrics.basic import predict_logits
    return predict_logits(store.load(cfg.root).model(), data.x_train).argmax(1)  # RunConfig checked the root


def _threads(model: nn.Module, cfg: RunConfig, data) -> int:
    """Torch threads for training one run of ``model`` with train(), by the policy of sparsegap.runs.threads.
    (The batched trainer always uses one: :func:`train_jobs`.)"""
    from ..batched import forward_macs
    return threads_for(workers(), macs=forward_macs(model, cfg.train.batch_size, tuple(data.input_shape)))


def _load_checkpoint(path: Path, cfg: RunConfig, model: nn.Module, masks: Masks | None) -> dict | None:
    """The checkpoint to resume from, or None. One that is unreadable, malformed, of another run or
    code epoch, or that does not match its checksum or those of the files it records, is discarded
    with a warning (kept, it would fail, or mislead, every retry)."""
    ckpt_path = path / "checkpoint.pt"
    if not ckpt_path.exists():
        return None
    try:
        ckpt = torch.load(ckpt_path, weights_only=True, map_location="cpu")
        problem = _checkpoint_problem(ckpt, cfg, model) or _resume_problem(ckpt, cfg, path, masks)
    except Exception as e:
        problem = f"unreadable ({type(e).__name__})"
    if problem is None:
        return ckpt
    warnings.warn(f"run {path.name}: checkpoint {problem}; discarded, training from the start")
    ckpt_path.unlink(missing_ok=True)
    return None


def _resume_problem(ckpt: dict, cfg: RunConfig, path: Path, masks: Masks | None) -> str | None:
    """What makes a well-formed checkpoint of this run unfit to resume from: contents that are not those it was
    written with, other code, start files (config, init, masks, kept weights) that are not those it was trained
    from, masks that are not the run's, or weights that are not finite (they would store the run as diverged)."""
    if "sha256" not in ckpt:
        return "carries no checksum (written before checkpoints did), so it cannot be verified"
    if ckpt["sha256"] != content_sha256({k: v for k, v in ckpt.items() if k != "sha256"}):
        return "does not match its checksum (a bit flipped, or edited)"
    stale = provenance.stale_reason(ckpt)
    if stale:
        return f"was {stale}"
    files, recipe = ckpt.get("files"), RECIPES[cfg.kind]
    needed = {"config.json", "init.pt"} | ({"masks.pt"} if masks is not None and recipe.updater is None else set())
    if not isinstance(files, dict) or not needed <= set(files) or not set(files) <= set(stored_files(cfg)):
        return f"records the checksums of {sorted(files) if isinstance(files, dict) else files!r}, not of {sorted(needed)}"
    for name, digest in files.items():
        try:
            if sha256((path / name).read_bytes()) != digest:
                return f"was trained from another {name} than the one there now (swapped or corrupted)"
        except FileNotFoundError:
            return f"was trained from a {name} that is missing now"
    if not (recipe.curve or recipe.updater is not None or same_masks(ckpt["masks"], masks)):
        return "holds other masks than the run's (none, or another run's)"
    if not all(torch.isfinite(v).all() for v in ckpt["model"].values() if torch.is_floating_point(v)):
        return "holds weights that are not finite (NaN or inf), which training never checkpoints"
    return None


def _checkpoint_problem(ckpt, cfg: RunConfig, model: nn.Module) -> str | None:
    if not isinstance(ckpt, dict):
        return f"unreadable (a {type(ckpt).__name__}, not a dict)"
    missing = {"model", "optimizer", "history", "epoch", "masks"} - set(ckpt)
    if missing:
        return f"unreadable: malformed, without {sorted(missing)}"
    if "run_hash" not in ckpt:
        return "carries no run hash (written before checkpoints did), so it may belong to another run"
    if ckpt["run_hash"] != cfg.hash():
        return f"belongs to another run (run_hash {ckpt['run_hash']!r}, this run is {cfg.hash()!r})"
    epoch, history, state = ckpt["epoch"], ckpt["history"], ckpt["model"]
    if not (isinstance(epoch, int) and 1 <= epoch <= cfg.train.epochs):
        return f"unreadable: malformed, epoch={epoch!r}"
    if not (isinstance(history, dict) and all(len(history.get(k, ())) == epoch for k in HISTORY_KEYS)):
        return "unreadable: malformed history"
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if not (isinstance(state, dict) and {k: getattr(v, "shape", None) for k, v in state.items()} == expected):
        return "unreadable: its weights do not fit the model"
    if not isinstance(ckpt["optimizer"], dict) or not {"state", "param_groups"} <= set(ckpt["optimizer"]):
        return "unreadable: malformed optimizer state"
    return None


def batch_eligible(cfg: RunConfig) -> bool:
    """Whether ``cfg`` trains through the batched trainer (:func:`sparsegap.batched.train_batched`), alone or in a
    batch, wherever and by whomever it is trained: a model that :func:`sparsegap.batched.trains_batched` accepts
    (a plain MLP of the measured size) at the run's batch size, and none of what needs a run of its own (a mask
    updater touches the optimizer state, a gradient tracker reads p.grad, a data schedule picks each run's
    samples, the Fisher regularizer needs its own double backward, the GPU options are for large networks).
    A static rule: it depends on the config alone, never on the runs trained beside it."""
    r = RECIPES[cfg.kind]
    if (r.updater is not None or r.curve or cfg.train.fisher_reg or cfg.train.data_schedule != "full"
            or cfg.train.gpu_options or any(t.startswith("grad_snr") for t in cfg.track)):
        return False
    key = (cfg.model, cfg.data.name, cfg.train.batch_size)
    if key not in _ELIGIBLE:
        from ..batched import trains_batched
        from ..datasets import SPLITS
        from ..models import build_model
        shape = tuple(SPLITS[cfg.data.name][0])   # known without loading the data, so that a plan loads nothing
        m = cfg.model
        with own_random_state():     # the probe draws its weights from the global generator
            model = build_model(m.name, num_classes=NUM_CLASSES[cfg.data.name], input_shape=shape, width=m.width,
                                hidden=m.hidden, init=m.init)
            _ELIGIBLE[key] = trains_batched(model, cfg.train.batch_size, input_shape=shape)
    return _ELIGIBLE[key]


_ELIGIBLE: dict = {}    # (model config, dataset name, batch size) -> trains_batched (the architecture needs no more)


def train_jobs(jobs: list[Job], store: RunStore, device, progress: bool) -> list[Run]:
    """Train batch-eligible jobs (locked, prepared) as one batched model, and store them.

    Always at one torch thread: a member's arithmetic is then the same in a batch of any size (with more, the
    product of a member alone is split over the threads, in a batch the members are; measured to differ in
    the last bits). The members are one model's (:func:`sparsegap.runs.sweep._groups`)."""
    t0 = time.time()
    datas = [load_data(j.cfg.data) for j in jobs]
    with use_threads(1):
        histories = train_batched(
            [j.model for j in jobs], datas, [j.cfg.train for j in jobs], masks=[j.masks for j in jobs],
            seeds=[j.cfg.seed for j in jobs], callbacks=[j.callbacks(d) for j, d in zip(jobs, datas)],
            device=device, checkpoints=[j.checkpoint for j in jobs],
            on_epoch_end=[j.save_checkpoint for j in jobs], progress=progress,
            desc=(f"batch of {len(jobs)}: {jobs[0].label.split(' seed')[0]} ..." if len(jobs) > 1 else jobs[0].label))
    seconds = (time.time() - t0) / len(jobs)
    engine = engine_for(jobs[0].model)
    runs, changed = [], None
    for job, history in zip(jobs, histories):   # one member whose files changed must not cost the others theirs
        try:
            runs.append(finish(job, store, history, seconds, 1, batch=len(jobs), engine=engine, device=device))
        except FilesChanged as e:
            changed = changed or e
    if changed is not None:
        raise changed
    return runs
