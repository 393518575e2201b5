"""The one training loop: SGD with momentum and weight decay, masks, callbacks, per-epoch history.

Data live in memory as tensors, so batches are drawn by indexing with a permutation instead of
a DataLoader. The permutation of epoch ``e`` comes from a generator seeded by ``(seed, e)``,
which makes a run resumed from an epoch checkpoint follow exactly the same batches as an
uninterrupted one.

Callbacks are objects with any of ``on_train_begin(state)``, ``on_after_backward(state)``,
``on_step_end(state)`` and ``on_epoch_end(state)``. ``on_after_backward`` sees the minibatch's
*dense* gradient in ``p.grad`` (before the pruned weights' entries are zeroed and before the
optimizer step): RigL reads it there instead of paying a second backward pass. A mask updater
(gradual pruning, SET, RigL) is a callback that changes ``state.masks`` in place, calls
:func:`sparsegap.pruning.apply_masks` and clears the optimizer state of the weights it prunes or
regrows (a stale momentum buffer would move them on the next step).
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .bookkeeping import (diverged_after_epoch, epoch_checkpoint, has_diverged, new_history, record_divergence,
                          record_epoch)
from .config import TrainConfig
from .metrics.basic import evaluate_logits, evaluated_logits
from .pruning import GradientMasker, Masks, apply_masks, check_masks, masks_to
from .augment import augment_batch
from .schedule import DataSchedule
from .seeds import seed_stream


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present, then Apple's MPS, else the CPU. A device that this
    machine does not have is an error here, before anything is built or written."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, str):
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") from e
    else:
        raise TypeError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' (a str or torch.device), "
                        f"got {device!r} of type {type(device).__name__}")
    _check_available(resolved, device)
    return resolved


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def _check_available(resolved: torch.device, asked) -> None:
    auto = ("CUDA" if torch.cuda.is_available() else "MPS" if _mps_available() else "the CPU")
    fallback = f"device='auto' picks CUDA, then MPS, else the CPU (here: {auto})"
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device={asked!r}, but no CUDA GPU is available (torch.cuda.is_available() is "
                             f"False); use device='cpu', or {fallback}")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device={asked!r}, but this machine has {count} CUDA GPU(s): "
                             f"cuda:0 to cuda:{count - 1}; or {fallback}")
    elif resolved.type == "mps" and not _mps_available():
        raise ValueError(f"device={asked!r}, but Apple's MPS is not available here; use device='cpu', "
                         f"or {fallback}")


def progress_enabled(progress: bool) -> bool:
    """Progress bars, unless turned off for the whole process (the book build sets SPARSEGAP_PROGRESS=0)."""
    return bool(progress) and os.environ.get("SPARSEGAP_PROGRESS", "1") != "0"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed_stream(seed, epoch))
    return torch.randperm(n, generator=g)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    """A per-epoch schedule; multistep milestones are fractions of the epochs (the paper's 100/150/200 of 250)."""
    if cfg.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.milestone_epochs(), gamma=cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


@dataclass(frozen=True)
class EpochLogits:
    """The logits of an epoch's evaluation of the training and test sets (CPU tensors), after ``step`` optimizer
    steps and ``epochs`` recorded epochs: the trackers that read the same weights on these samples or some of
    their rows (:class:`sparsegap.metrics.callbacks.SharedLogits`) take them instead of a forward pass of their own."""

    step: int
    epochs: int
    train: torch.Tensor
    test: torch.Tensor


@dataclass
class TrainState:
    """What callbacks see. ``log`` records a value at the current epoch and step."""

    model: nn.Module
    masks: Masks | None
    optimizer: torch.optim.Optimizer
    data: Any
    device: torch.device
    config: TrainConfig
    history: dict = field(default_factory=dict)
    epoch: int = 0
    step: int = 0
    batch: tuple | None = None
    loss: torch.Tensor | None = None
    steps_per_epoch: int = 1
    indices: torch.Tensor | None = None   # the training samples of this epoch under a data schedule (None: all)
    logits: EpochLogits | None = None     # the last end-of-epoch evaluation's logits

    def log(self, name: str, value: float | list[int], se: float | None = None) -> None:
        """Record ``value`` with the current epoch index, global step, and epochs completed
        (``step / steps_per_epoch``: 0 at the initialisation, 1.0 after the first epoch).
        A number is stored as a float; a list or tuple (e.g. predicted classes) as a list of ints.
        ``se``, the standard error of an estimate, goes to the trace's ``"se"`` list, beside its value."""
        trace = self.history.setdefault("trace", {}).setdefault(
            name, {"epoch": [], "step": [], "epochs": [], "value": []})
        trace["epoch"].append(self.epoch)
        trace["step"].append(self.step)
        trace["epochs"].append(self.step / self.steps_per_epoch)
        trace["value"].append([int(v) for v in value] if isinstance(value, (list, tuple)) else float(value))
        if se is not None or "se" in trace:   # one entry per value: NaN where none was given (a run resumed from
            # a checkpoint written before its tracker gave standard errors, say)
            trace.setdefault("se", [math.nan] * (len(trace["value"]) - 1)).append(
                math.nan if se is None else float(se))


def _call(callbacks: Iterable, hook: str, state: TrainState) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(state)


def fisher_penalty(model: nn.Module, logits: torch.Tensor, masks: Masks | None = None, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """R(θ), the "Fisher penalty" of Jastrzębski et al. (2021): the squared norm of the minibatch gradient
    of the mean cross-entropy against labels ŷ sampled from the model's own softmax (a differentiable,
    one-sample proxy of Tr(F)), over the active weights (``masks`` leave pruned entries out). Built with
    ``create_graph=True`` so that R itself can be differentiated (one extra backward pass through it)."""
    with torch.no_grad():
        probs = torch.softmax(logits.detach().float(), dim=1)
        labels = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(F.cross_entropy(logits, labels), params, create_graph=True)
    total = logits.new_zeros(())
    for name, g in zip(names, grads):
        if masks and name in masks:
            g = g * masks[name].to(g.dtype)
        total = total + (g * g).sum()
    return total


def _compiled_loss(model: nn.Module, mode: str):
    """``cfg.compile``'s forward pass and cross-entropy of a full batch as one ``torch.compile``d function (static
    shapes), or None for "off". Compiled and eager steps agree to float tolerance, not bitwise, which is why the
    setting is part of a run's hash when it is set."""
    if mode == "off":
        return None

    def loss(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(xb), yb)
    return torch.compile(loss, mode=None if mode == "default" else mode, dynamic=False)


def _defer_check(device: torch.device) -> bool:
    """Whether the non-finite-loss check waits for the epoch's end. On an accelerator a per-step read stalls the
    launch queue (about 14 ms a step at batch 128 on an H200, issue 26); on the CPU the read costs nothing and
    the epoch's snapshot would (1-3% of a LeNet-300-100 epoch), so the CPU checks every step."""
    return device.type != "cpu"


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer, scaler, device: torch.device) -> tuple:
    """What an epoch's steps change, copied at its start (on the device: no host sync): the weights
    and buffers, the optimizer's state, the fp16 scaler's and the global generators' (dropout)."""
    rng = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)
    return (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()),
            scaler.state_dict() if scaler is not None else None, rng)


def _restore(snapshot: tuple, model: nn.Module, optimizer: torch.optim.Optimizer, scaler,
             device: torch.device) -> None:
    weights, opt, scale, (cpu_rng, cuda_rng) = snapshot
    model.load_state_dict(weights)
    optimizer.load_state_dict(opt)
    if scaler is not None:
        scaler.load_state_dict(scale)
    torch.set_rng_state(cpu_rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state(cuda_rng, device)


def train(model: nn.Module, data, cfg: TrainConfig, *, masks: Masks | None = None, seed: int = 0,
          callbacks: Iterable = (), device: str | torch.device = "auto",
          checkpoint: dict | None = None, on_epoch_end: Callable[[dict], None] | None = None,
          progress: bool = True, desc: str = "train", reference: torch.Tensor | None = None) -> dict:
    """Train ``model`` on ``data`` (a :class:`sparsegap.data.DataSplits`) and return its history.

    ``checkpoint`` is a dict from a previous call's ``on_epoch_end`` to resume from: the model,
    optimizer state, the masks, the history and the next epoch (the scheduler is fast-forwarded).
    ``on_epoch_end(ckpt)`` receives such a dict after every epoch so that the caller can store it.
    A non-finite training loss stops training and sets ``history["diverged"]`` (see
    :func:`sparsegap.bookkeeping.diverged_at`); no checkpoint is written for the epoch it happened in.
    On an accelerator the steps never wait for the device to say whether the loss was finite: it is read
    once at the epoch's end, and a diverged epoch is replayed from its start to stop at the bad step, with the
    weights of before it. With callbacks that act during the steps (``on_after_backward``, or
    ``on_step_end`` unless ``wants_step_end`` is false) every step is checked, so they never see a
    diverged network.

    ``cfg.data_schedule`` other than "full" trains each epoch on the subset that
    :class:`sparsegap.schedule.DataSchedule` picks (``state.indices``; its size is logged as the trace
    ``samples``); ``reference`` is the dense network's predicted class of every training sample, which
    the "disagree" schedule needs.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    device = resolve_device(device)
    callbacks = list(callbacks)
    model.to(device)
    if masks is not None:
        check_masks(model, masks)
    masks = masks_to(masks, device)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg)
    history, start_epoch, start_step = new_history(), 0, None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        # The scheduler is fast-forwarded rather than restored: its state dict holds objects
        # (a Counter, lambdas) that torch.load(weights_only=True) refuses, and it is a pure
        # function of the epoch anyway. The optimizer state (lr included) is loaded after it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(checkpoint["epoch"]):
                scheduler.step()
        optimizer.load_state_dict(checkpoint["optimizer"])
        masks = masks_to(checkpoint.get("masks"), device)
        history, start_epoch = checkpoint["history"], checkpoint["epoch"]
        start_step = checkpoint.get("step")
    apply_masks(model, masks)
    seed_everything(seed + start_epoch)

    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    if cfg.channels_last or cfg.augment != "none":
        if x_train.dim() != 4:
            what = "channels_last" if cfg.channels_last else f"augment={cfg.augment!r}"
            raise ValueError(f"TrainConfig.{what} applies to image inputs of shape (N, C, H, W); {data.name} has "
                             f"inputs of shape {tuple(x_train.shape[1:])}")
    # the evaluation reads the copies on the device too: no copy of either set from the host at every epoch
    x_test = data.x_test.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
        x_train = x_train.contiguous(memory_format=torch.channels_last)
        x_test = x_test.contiguous(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True   # fixed input shapes: let cuDNN pick its fastest kernels
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    if scaler is not None and checkpoint is not None and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    n, bs = len(x_train), cfg.batch_size
    steps_per_epoch = -(-n // bs)
    schedule = None
    if cfg.data_schedule != "full":
        schedule = DataSchedule(cfg, n, seed=seed, reference=reference)
        if checkpoint is not None:
            schedule.load_state_dict(checkpoint.get("schedule"))
    # a data schedule makes epochs of different lengths: the checkpoint then carries the step count
    step = start_epoch * steps_per_epoch if start_step is None else start_step
    state = TrainState(model, masks, optimizer, data, device, cfg, history, epoch=start_epoch,
                       step=step, steps_per_epoch=steps_per_epoch)
    mask_gradients = GradientMasker(model)
    # callbacks whose on_step_end does something (see batched._Member for ``wants_step_end``)
    step_callbacks = [cb for cb in callbacks if getattr(cb, "wants_step_end", True)]
    grad_callbacks = [cb for cb in callbacks if getattr(cb, "on_after_backward", None) is not None]
    # Callbacks must never see a diverged network (a pruner's magnitudes would be NaN, a tracker would log
    # junk), so with any that act during the steps the loss is checked at every step, a host sync each.
    # Without them the check waits for the epoch's end: see run_steps.
    check_each_step = bool(step_callbacks or grad_callbacks) or not _defer_check(device)
    full_batch_loss = _compiled_loss(model, cfg.compile)

    def batch_loss(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(logits or None, loss) of a batch: compiled for full batches when ``cfg.compile`` asks, eager for the last,
        shorter one (a second graph for its shape would cost a compilation for one step an epoch)."""
        if full_batch_loss is not None and len(xb) == bs:
            return None, full_batch_loss(xb, yb)
        logits = model(xb)
        return logits, F.cross_entropy(logits, yb)

    def run_steps(epoch: int, perm: torch.Tensor, reg_coef: float, losses: torch.Tensor | None) -> None:
        """One epoch's steps. ``losses`` None: stop at the first non-finite loss (a host sync per step);
        else each step's loss is written to ``losses`` on the device and the steps never wait for it."""
        reg_gen = torch.Generator(device=device).manual_seed(seed_stream(seed, epoch + 7)) if reg_coef else None
        aug_gen = torch.Generator().manual_seed(seed_stream(seed, epoch + 13)) if cfg.augment != "none" else None
        for k, i in enumerate(range(0, len(perm), bs)):
            idx = perm[i: i + bs]
            xb, yb = x_train[idx], y_train[idx]
            if aug_gen is not None:
                xb = augment_batch(cfg.augment, xb, aug_gen)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits, loss = batch_loss(xb, yb)
                if reg_coef:
                    loss = loss + reg_coef * fisher_penalty(model, logits, state.masks, generator=reg_gen)
            if losses is not None:
                losses[k] = loss.detach()
            elif not torch.isfinite(loss):
                record_divergence(history, epoch + 1, state.step + 1, loss.item())
                return
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
            else:                       # fp16: a scaled backward pass, the gradients unscaled before anyone reads them
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            if grad_callbacks:
                state.batch, state.loss = (xb, yb), loss
                _call(grad_callbacks, "on_after_backward", state)
            mask_gradients(state.masks)
            if scaler is None:
                optimizer.step()
            else:                       # skips the step when the gradients overflowed, then adapts the scale
                scaler.step(optimizer)
                scaler.update()
            state.step += 1
            if step_callbacks:
                state.batch, state.loss = (xb, yb), loss
                _call(step_callbacks, "on_step_end", state)

    _call(callbacks, "on_train_begin", state)
    bar = tqdm(range(start_epoch, cfg.epochs), desc=desc, initial=start_epoch, total=cfg.epochs,
               disable=not progress_enabled(progress), leave=False)
    for epoch in bar:
        state.epoch = epoch
        t0 = time.perf_counter()   # the epoch's time includes ranking the samples for a schedule
        if schedule is None:
            perm = epoch_permutation(n, seed, epoch).to(device)
        else:
            state.indices = schedule.indices(epoch, model, x_train, y_train, state.masks)
            perm = (epoch_permutation(n, seed, epoch).to(device) if state.indices is None else
                    state.indices[epoch_permutation(len(state.indices), seed, epoch).to(device)])
            state.log("samples", len(perm))
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        reg_coef = cfg.fisher_reg_at(epoch)
        if check_each_step:
            run_steps(epoch, perm, reg_coef, None)
        else:
            snapshot = _snapshot(model, optimizer, scaler, device)
            first_step = state.step
            # float64 holds any loss exactly (a float64 loss past float32's range is still finite); MPS has none
            losses = torch.empty(-(-len(perm) // bs), device=device,
                                 dtype=torch.float32 if device.type == "mps" else torch.float64)
            run_steps(epoch, perm, reg_coef, losses)
            if not bool(torch.isfinite(losses).all()):   # the one host sync of the epoch's steps
                # Replayed from the epoch's start with the check at every step, the run stops where it
                # always did: at the first non-finite loss, with the weights from before that step and the
                # BatchNorm statistics of its forward pass. Only a diverging run pays for the replay.
                _restore(snapshot, model, optimizer, scaler, device)
                state.step = first_step
                run_steps(epoch, perm, reg_coef, None)
        if has_diverged(history):
            break
        scheduler.step()
        seconds = time.perf_counter() - t0
        tr_logits, y = evaluated_logits(model, x_train, data.y_train, device=device)
        tr = evaluate_logits(tr_logits, y)
        if diverged_after_epoch(history, epoch + 1, state.step, tr.loss):
            break
        te_logits, y = evaluated_logits(model, x_test, data.y_test, device=device)
        te = evaluate_logits(te_logits, y)
        record_epoch(history, epoch + 1, lr, tr, te, seconds)
        state.logits = EpochLogits(state.step, len(history["epoch"]), tr_logits, te_logits)
        state.batch = state.loss = None
        _call(callbacks, "on_epoch_end", state)
        bar.set_postfix(train=f"{tr.accuracy:.3f}", test=f"{te.accuracy:.3f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch_checkpoint(
                model.state_dict(), optimizer.state_dict(), state.masks, history, epoch + 1, step=state.step,
                schedule=schedule.state_dict() if schedule is not None else None,
                scaler=scaler.state_dict() if scaler is not None else None))
    bar.close()
    return history
