"""The run store: every trained network, keyed by the hash of its config.

Layout of one run (``<root>/<kind>-<hash>/``)::

    config.json    the full config (written first)
    init.pt        the initial weights (Init-D, Init-F or Init-S), masked
    masks.pt       the masks of a sparse run
    checkpoint.pt  the last epoch checkpoint, while training (removed when done)
    weights.pt     the final weights (Sol-D, Sol-F or Sol-S)
    history.json   the per-epoch history
    DONE           written last: the run is complete

Every file is written to a temporary name and renamed, so a reader never sees half a file.
A run interrupted mid-training resumes from ``checkpoint.pt``. A run directory that claims to
be done but does not load is reported with a warning and trained again, never a crash.
Everything is read back with ``torch.load(weights_only=True)``: no arbitrary unpickling.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import DataConfig, ModelConfig, RunConfig
from .pruning import Masks, apply_masks, global_magnitude_masks
from .trackers import make_trackers
from .train import progress_enabled, train

REPO_ROOT = Path(__file__).resolve().parents[2]
# Init-S must not be Init-D (that would be a lottery ticket), so scratch runs draw their
# initial weights from another seed stream.
SCRATCH_INIT_OFFSET = 1_000_003


def default_root() -> Path:
    return Path(os.environ.get("SPARSEGAP_RUNS_DIR") or REPO_ROOT / "data" / "runs")


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj, path: Path) -> None:
    _atomic(path, lambda p: torch.save(obj, p))


def atomic_write_text(text: str, path: Path) -> None:
    _atomic(path, lambda p: p.write_text(text))


class DamagedRun(Exception):
    pass


@dataclass
class Run:
    """A finished run: its config, history, weights and masks, loaded from the store."""

    config: RunConfig
    path: Path
    history: dict
    weights: dict
    init: dict
    masks: Masks | None

    def _build(self) -> nn.Module:
        return build_model_for(self.config.model, self.config.data)

    def model(self) -> nn.Module:
        """The trained network (Sol-D, Sol-F or Sol-S) on the CPU."""
        m = self._build()
        m.load_state_dict(self.weights)
        return m

    def init_model(self) -> nn.Module:
        """The network at its initialisation (Init-D, Init-F or Init-S)."""
        m = self._build()
        m.load_state_dict(self.init)
        return m

    def measure(self, name: str, params: dict, fn: Callable[[], dict]) -> dict:
        """A measurement on this run, computed once and kept beside it.

        ``fn()`` returns a JSON-serialisable dict; it is stored under
        ``measurements/<name>-<hash of params>.json`` so that rebuilding a chapter reuses it.
        """
        key = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]
        path = self.path / "measurements" / f"{name}-{key}.json"
        if path.exists():
            try:
                return json.loads(path.read_text())["value"]
            except (ValueError, KeyError):
                warnings.warn(f"measurement {path} is unreadable; measuring again")
        value = fn()
        atomic_write_text(json.dumps({"name": name, "params": params, "value": value}, default=str), path)
        return value

    @property
    def final(self) -> dict:
        """Last-epoch metrics."""
        return {k: v[-1] for k, v in self.history.items() if isinstance(v, list) and v}


@lru_cache(maxsize=8)
def load_data(cfg: DataConfig):
    """Datasets are small and shared by many runs: load each once per process."""
    from .data import load_dataset
    return load_dataset(cfg.name, train_size=cfg.train_size, test_size=cfg.test_size, seed=cfg.subset_seed)


def build_model_for(model_cfg: ModelConfig, data_cfg: DataConfig, seed: int | None = None) -> nn.Module:
    from .models import build_model
    data = load_data(data_cfg)
    return build_model(model_cfg.name, num_classes=data.num_classes, input_shape=tuple(data.input_shape),
                       width=model_cfg.width, hidden=model_cfg.hidden, seed=seed, init=model_cfg.init)


class RunStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def path(self, cfg: RunConfig) -> Path:
        return self.root / cfg.run_id

    def is_done(self, cfg: RunConfig) -> bool:
        return (self.path(cfg) / "DONE").exists()

    def load(self, cfg: RunConfig) -> Run:
        """Load a finished run; raises DamagedRun if anything is missing or inconsistent."""
        path = self.path(cfg)
        try:
            stored = json.loads((path / "config.json").read_text())
            if RunConfig.from_dict(stored).hash() != cfg.hash():
                raise DamagedRun("config.json does not match the directory's hash")
            history = json.loads((path / "history.json").read_text())
            if len(history.get("epoch", [])) != cfg.train.epochs:
                raise DamagedRun(f"history has {len(history.get('epoch', []))} epochs, config says {cfg.train.epochs}")
            weights = torch.load(path / "weights.pt", weights_only=True, map_location="cpu")
            init = torch.load(path / "init.pt", weights_only=True, map_location="cpu")
            masks = torch.load(path / "masks.pt", weights_only=True, map_location="cpu") if cfg.kind != "dense" else None
        except DamagedRun:
            raise
        except Exception as e:  # unreadable json, truncated or missing tensor files, ...
            raise DamagedRun(f"{type(e).__name__}: {e}") from e
        return Run(cfg, path, history, weights, init, masks)

    def runs(self) -> list[RunConfig]:
        """Configs of every finished run in the store."""
        out = []
        for d in sorted(self.root.glob("*/DONE")):
            try:
                out.append(RunConfig.from_dict(json.loads((d.parent / "config.json").read_text())))
            except Exception:
                continue
        return out


def _initial_state(cfg: RunConfig, store: RunStore, device, progress: bool) -> tuple[nn.Module, Masks | None]:
    if cfg.kind == "dense":
        return build_model_for(cfg.model, cfg.data, seed=cfg.seed), None
    sol_d = get_or_train(cfg.parent, store, device=device, progress=progress).model()
    masks = global_magnitude_masks(sol_d, cfg.sparsity, exclude_output=cfg.exclude_output,
                                   min_density=cfg.min_density)
    if cfg.kind == "finetune":
        model = sol_d                                             # Init-F: Sol-D under the mask
    else:
        model = build_model_for(cfg.model, cfg.data, seed=cfg.seed + SCRATCH_INIT_OFFSET)  # Init-S
    apply_masks(model, masks)
    return model, masks


def _load_checkpoint(path: Path) -> dict | None:
    ckpt_path = path / "checkpoint.pt"
    if not ckpt_path.exists():
        return None
    try:
        return torch.load(ckpt_path, weights_only=True, map_location="cpu")
    except Exception as e:
        warnings.warn(f"run {path.name}: checkpoint unreadable ({type(e).__name__}); training from the start")
        ckpt_path.unlink(missing_ok=True)
        return None


def get_or_train(cfg: RunConfig, store: RunStore | None = None, *, device: str = "auto",
                 progress: bool = True) -> Run:
    """The run for ``cfg``: from the store if it is there, else trained (its parent first) and stored."""
    if not isinstance(cfg, RunConfig):
        raise TypeError(f"cfg must be a RunConfig, got {type(cfg).__name__}")
    store = store or RunStore()
    path = store.path(cfg)
    if (path / "DONE").exists():
        try:
            return store.load(cfg)
        except DamagedRun as e:
            warnings.warn(f"run {path.name} in {store.root} is damaged ({e}); training it again")
            shutil.rmtree(path)

    model, masks = _initial_state(cfg, store, device, progress)
    path.mkdir(parents=True, exist_ok=True)
    checkpoint = _load_checkpoint(path)
    if checkpoint is None:
        atomic_write_text(json.dumps(cfg.full_dict(), indent=2), path / "config.json")
        atomic_save({k: v.cpu() for k, v in model.state_dict().items()}, path / "init.pt")
        if masks is not None:
            atomic_save({k: v.cpu() for k, v in masks.items()}, path / "masks.pt")

    def save_checkpoint(ckpt: dict) -> None:
        atomic_save(_to_cpu(ckpt), path / "checkpoint.pt")

    t0 = time.time()
    label = cfg.kind if cfg.kind == "dense" else f"{cfg.kind} s={cfg.sparsity:g}"
    data = load_data(cfg.data)
    history = train(model, data, cfg.train, masks=masks, seed=cfg.seed, device=device,
                    callbacks=make_trackers(cfg.track, data), checkpoint=checkpoint,
                    on_epoch_end=save_checkpoint, progress=progress, desc=f"{label} seed={cfg.seed}")
    atomic_save({k: v.cpu() for k, v in model.state_dict().items()}, path / "weights.pt")
    atomic_write_text(json.dumps(history), path / "history.json")
    atomic_write_text(json.dumps({"torch": torch.__version__, "seconds": time.time() - t0,
                                  "resumed_at_epoch": checkpoint["epoch"] if checkpoint else 0}), path / "meta.json")
    atomic_write_text(cfg.hash(), path / "DONE")
    (path / "checkpoint.pt").unlink(missing_ok=True)
    return store.load(cfg)


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def run_all(configs: Sequence[RunConfig], store: RunStore | None = None, *, executor=None,
            device: str = "auto", progress: bool = True) -> list[Run]:
    """Train (or load) a sweep of independent configs.

    Dense parents are trained first, once each, so that sparse runs sharing a Sol-D never
    train it twice. ``executor`` is anything with ``map`` (a process pool, a distributed
    engine's executor); the default runs in this process.
    """
    store = store or RunStore()
    configs = list(configs)
    parents = list(dict.fromkeys(c.parent for c in configs if c.parent is not None and not store.is_done(c.parent)))
    # A partial of a module-level function, not a lambda, so that process pools can pickle it.
    work = functools.partial(get_or_train, store=store, device=device, progress=progress)
    if executor is not None:
        list(executor.map(work, parents))
        return list(executor.map(work, configs))
    todo = parents + configs
    pending = sum(not store.is_done(c) for c in todo)
    with tqdm(total=len(todo), desc=f"runs ({pending} to train)", disable=not progress_enabled(progress),
              leave=False) as bar:
        results = []
        for c in todo:
            results.append(work(c))
            bar.update()
    return results[len(parents):]
