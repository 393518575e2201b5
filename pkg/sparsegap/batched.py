"""Many small networks of one architecture trained as one batched model.

A sweep of the 12-bit MLP (5k weights, batch 12) spends almost all of its time in PyTorch's
per-call overhead: each step is some 40 tiny kernels and autograd nodes. :func:`train_batched`
stacks the parameters of N such networks along a new leading dimension and trains them together,
so that one kernel does the work of N. Each member keeps its own identity, exactly as if it were
trained alone by :func:`sparsegap.train.train`:

* its own batches, from ``epoch_permutation(n, seeds[i], epoch)``;
* its own mask, applied to its own gradient before the update (so pruned weights stay exactly 0
  through momentum and weight decay), and its own learning rate;
* SGD with momentum and weight decay computed as ``torch.optim.SGD`` computes it (weight decay
  added to the gradient, the first momentum buffer equal to the gradient, dampening 0, no
  Nesterov) and the per-epoch schedule of :func:`sparsegap.train.make_scheduler`;
* its own history (the same keys as ``train()``'s), callbacks and trackers: a member is always an
  ordinary ``nn.Module`` -- the very object passed in ``models[i]`` -- whose parameters are views
  of its row of the stacked tensors, so a callback sees its current weights without any copy;
* its own checkpoints: ``on_epoch_end[i]`` receives the dict ``train()`` would have given
  (model and ``torch.optim.SGD`` state dicts, masks, history, epoch), so that a member can resume
  alone with ``train()``, and ``checkpoints[i]`` resumes it here; members may be at different
  epochs: an epoch trains only the members that have reached it;
* its own divergence, as in ``train()``: a member whose training loss becomes NaN or infinite
  stops with its weights as they were before that step, and its history gets
  ``history["diverged"] = {"epoch": <1-based epoch>, "step": <1-based global step of the
  non-finite loss>, "loss": "nan" | "inf"}`` (:func:`sparsegap.bookkeeping.diverged_at`) and no row for
  that epoch; so does a member whose end-of-epoch training loss is not finite (``"step"`` is then
  the epoch's last step). The others finish normally.

A member's result does not depend on the batch it trains in: with the ``bmm`` engine at one torch
thread, a member trained in a batch of 1, 2, 6 or 16, at any position, ends with bitwise the same
weights and history (the stacked products run one matrix product per member, and the evaluation
runs member by member; ``tests/test_batched.py``). This is what lets the run store train a run
either way and always store the same bits (:func:`trains_batched`). The same config trained by
:func:`sparsegap.train.train` agrees only to float precision (about 1e-7 relative after a few steps,
tested at 1e-5), not bitwise: ``train()``'s products sum in another order. The ``vmap`` engine is
not batch-invariant (a LeNet-5 alone and in a batch of 2 differ in the last bits).

The stacked model is :mod:`sparsegap.stacked`. Two engines compute its forward and backward
passes: ``"bmm"``, hand-written batched matrix products for plain MLPs (``nn.Sequential`` of
Flatten, Linear and ReLU: the MLPs and LeNet-300-100), and ``"vmap"``, ``torch.func.functional_call``
under ``torch.func.vmap`` for any other architecture without buffers (LeNet-5). Measured on this
machine's kind (2 cores, one torch thread, one epoch of 18 12-bit MLPs on ``tishby``, batch 12):
12-19x faster than one after another with ``bmm``, 6x with ``vmap``. Networks with BatchNorm (the
ResNets, issue 26) train on a third engine, ``"grouped"`` (:mod:`sparsegap.grouped`): the members as one
network of grouped convolutions, each member with its own BatchNorm statistics, with crop-flip (each member's
own draws, as train()'s), channels_last and bf16; it agrees with train() to float tolerance, not bitwise, so
the run store does not pick it (:func:`trains_batched`). Dropout (random masks) is refused.

Whether batching pays is :func:`should_batch`'s call; see :data:`BATCH_MAX_MACS` for the rule
and the measurements behind it.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .bookkeeping import (diverged_after_epoch, epoch_checkpoint, has_diverged, new_history, record_divergence,
                          record_epoch)
from .config import TrainConfig
from .pruning import Masks, apply_masks, check_masks, masks_key, masks_to
# ENGINES, check_batchable and engine_for live in stacked; importable from here as before.
from .augment import augment_batch
from .grouped import GroupedEngine, check_groupable
from .seeds import seed_stream
from .stacked import ENGINES, BmmEngine, Stack, VmapEngine, activation_size, check_batchable, engine_for, mlp_ops
from .train import (EpochLogits, TrainState, _defer_check, epoch_permutation, make_optimizer, make_scheduler, progress_enabled,
                    resolve_device)

__all__ = ["ENGINES", "BATCH_MAX_MACS", "BATCH_MAX_PARAMS", "check_batchable", "check_compatible", "engine_for",
           "forward_macs", "should_batch", "train_batched", "trains_batched"]


# Batching pays while a member's training step is dominated by PyTorch's per-call overhead, and
# while the stacked weights of all members stay small enough for the caches: the stacked update,
# mask and momentum passes are memory bound, and a stack of large layers spills out of L2 where N
# separate small models did not. Hence two bounds per member: the multiply-accumulates of one
# forward pass of a batch (forward_macs; a training step costs about three times that) and the
# parameter count. Measured on this machine's kind (2 cores, 2 MB L2 per core, one torch thread),
# one epoch's training loop, 8 members unless said otherwise, batched / one after another with
# train(), the best of 3 to 5 interleaved repetitions:
#   model, batch                        params   fwd MACs   bmm      vmap
#   12-bit MLP, batch 12 (18 members)      5k     0.06M   12-19x    6x
#   MLP 100-100-100-10, batch 64          20k      1.3M    3.3x
#   MLP 100-100-100-10, batch 1024        20k       22M    1.2x
#   MLP 784-100-10, batch 32 / 512        79k   2.5/41M    2.2x / 1.1x
#   MLP 784-200-10, batch 8 / 32         159k   1.3/5.1M   2.0x / 1.8x
#   LeNet-300-100, batch 8 / 32          267k   2.1/8.5M   1.6x / 1.6x
#   LeNet-300-100, batch 128             267k       34M    1.26x   0.89x
#   LeNet-300-100, batch 128, 34 members 267k       34M    1.04x (1.18x with the evaluation)
#   MLP 784-1000-10, batch 16 / 128      795k    13/102M   0.81x / 0.86x
#   LeNet-5 28x28, batch 2/4/8/16/32      62k  0.8-13M            2.1/1.6/1.2/0.89/0.72x
# The bounds sit where the measured gain falls to about 1.1x, so that "batch" does not lose.
# (The pilot found no gain for 34 LeNet-300-100s with autograd through stacked bmm; the
# hand-written backward of the bmm engine and the batched evaluation are what make it pay.)
BATCH_MAX_MACS = {"bmm": 48_000_000, "vmap": 3_500_000}
BATCH_MAX_PARAMS = 300_000


# ----------------------------------------------------------------------------- checks

def _check_list(name: str, value, n: int, default):
    if value is None:
        return [default() if callable(default) else default for _ in range(n)]
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name} must have one entry per model ({n}), got {len(value)}")
    return value


def check_compatible(cfgs: Sequence[TrainConfig], engine: str = "bmm") -> None:
    """Members of a batch may differ only in ``lr``: a ValueError names the first other difference. The GPU
    options (augmentation, channels_last, bf16) are for the ``grouped`` engine alone."""
    cfgs = list(cfgs)
    if not cfgs:
        raise ValueError("cfgs is empty: a batch needs at least one TrainConfig")
    for i, c in enumerate(cfgs):
        if not isinstance(c, TrainConfig):
            raise TypeError(f"cfgs[{i}] must be a TrainConfig, got {type(c).__name__}")
    if any(c.fisher_reg for c in cfgs):
        raise ValueError("the Fisher regularizer (TrainConfig.fisher_reg) needs each member's own double backward "
                         "pass, which batched training does not do; train those runs with sparsegap.train.train")
    if engine == "grouped":
        if any(c.precision == "fp16" or c.compile != "off" for c in cfgs):
            raise ValueError("the grouped engine trains in fp32 or bf16 without torch.compile (fp16 needs a loss "
                             "scaler per member); set TrainConfig.precision='bf16' or 'fp32' and compile='off', "
                             "or train those runs with sparsegap.train.train")
    elif any(c.gpu_options for c in cfgs):
        raise ValueError("mixed precision, channels_last and augmentation (TrainConfig.precision, channels_last, augment) "
                         "are for large networks, batched by engine='grouped' or trained one at a time with "
                         "sparsegap.train.train")
    if any(c.data_schedule != "full" for c in cfgs):
        raise ValueError("a data schedule (TrainConfig.data_schedule) gives each member its own samples per epoch, "
                         "which batched training does not do; train those runs with sparsegap.train.train")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "lr":
            continue
        first = getattr(cfgs[0], f.name)
        for i, c in enumerate(cfgs[1:], start=1):
            if getattr(c, f.name) != first:
                raise ValueError(f"configs in one batch may differ only in lr, but {f.name} differs: "
                                 f"cfgs[0].{f.name}={first!r}, cfgs[{i}].{f.name}={getattr(c, f.name)!r}")


# ----------------------------------------------------------------------------- cost and policy

def _infer_input_shape(model: nn.Module) -> tuple[int, ...]:
    for m in model.modules():
        if isinstance(m, nn.Linear):
            return (m.in_features,)
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            break
    raise ValueError("input_shape is needed for a model that starts with a convolution, e.g. (1, 28, 28)")


@torch.no_grad()
def forward_macs(model: nn.Module, batch_size: int = 1, input_shape: tuple[int, ...] | None = None) -> int:
    """Multiply-accumulates of Linear and Conv layers in one forward pass of ``batch_size`` samples.

    ``input_shape`` (one sample, no batch dim) is inferred for models that start with a Linear layer.
    """
    shape = tuple(input_shape) if input_shape is not None else _infer_input_shape(model)
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features
        else:
            total += out.numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters())
        model(torch.zeros(1, *shape, dtype=p.dtype, device=p.device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total * batch_size


def should_batch(model: nn.Module, batch_size: int, n_members: int, *,
                 input_shape: tuple[int, ...] | None = None) -> bool:
    """Whether training ``n_members`` copies of ``model`` as one batch is measured to pay.

    The rule: at least two members, a model :func:`check_batchable` accepts, at most
    :data:`BATCH_MAX_PARAMS` (300k) parameters per member, and one member's forward pass of a
    batch at most :data:`BATCH_MAX_MACS` multiply-accumulates for its engine (48M for plain MLPs
    on the bmm engine, 3.5M for the vmap engine). The 12-bit MLP at batch 12 (5k parameters,
    0.06M MACs: 12-19x) and LeNet-300-100 at batch 128 (267k, 34M: 1.1-1.3x) batch; LeNet-5 at
    batch 128 (53M MACs: 0.7x) and an MLP 784-1000-10 (795k parameters: 0.8x) do not.
    ``input_shape`` (one sample) is needed for models that start with a convolution.
    """
    if n_members < 2:
        return False
    try:
        check_batchable([model])
    except ValueError:
        return False
    if sum(p.numel() for p in model.parameters()) > BATCH_MAX_PARAMS:
        return False
    return forward_macs(model, batch_size, input_shape) <= BATCH_MAX_MACS[engine_for(model)]


def trains_batched(model: nn.Module, batch_size: int, *, input_shape: tuple[int, ...] | None = None) -> bool:
    """Whether a run of ``model`` at ``batch_size`` always trains through :func:`train_batched` (the run store's
    rule, :func:`sparsegap.runs.batch_eligible`), alone or in a batch of any size: a plain MLP (the ``bmm``
    engine) within :func:`should_batch`'s size rule, whatever the number of members.

    The rule does not depend on how many runs are at hand, so a run's arithmetic does not either. Only the
    bmm engine qualifies: its members' results are bitwise the same in a batch of any size and at any
    position (one thread; ``tests/test_batched.py``), while the vmap engine's are not (measured: a LeNet-5
    trained alone and in a batch of 2 or 6 differ in the last bits after one epoch).
    """
    try:
        check_batchable([model])
    except ValueError:
        return False
    if engine_for(model) != "bmm" or sum(p.numel() for p in model.parameters()) > BATCH_MAX_PARAMS:
        return False
    return forward_macs(model, batch_size, input_shape) <= BATCH_MAX_MACS["bmm"]


# ----------------------------------------------------------------------------- per-member bookkeeping

class _RNG:
    """A member's own global random state (torch, numpy, random), swapped in around its callbacks,
    so that a callback drawing from the global generators sees the stream it would see in train()."""

    def __init__(self, seed: int):
        saved = self._get()
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        self.state = self._get()
        self._set(saved)
        self._outer = None

    @staticmethod
    def _get():
        return torch.get_rng_state(), np.random.get_state(), random.getstate()

    @staticmethod
    def _set(s):
        torch.set_rng_state(s[0])
        np.random.set_state(s[1])
        random.setstate(s[2])

    def __enter__(self):
        self._outer = self._get()
        self._set(self.state)

    def __exit__(self, *exc):
        self.state = self._get()
        self._set(self._outer)


def _lr_table(cfg: TrainConfig) -> list[float]:
    """lr at the start of every epoch 0..epochs, as train()'s optimizer holds it (make_scheduler)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    sched = make_scheduler(opt, cfg)
    lrs = [opt.param_groups[0]["lr"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        for _ in range(cfg.epochs):
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
    return lrs


class _Member:
    def __init__(self, i: int, model: nn.Module, cfg: TrainConfig, seed: int, callbacks: list, data, device):
        self.i, self.model, self.cfg, self.seed = i, model, cfg, seed
        self.callbacks = list(callbacks)
        # A callback may say that its on_step_end does nothing (``wants_step_end = False``, e.g. a
        # tracker that measures per epoch): then the per-step bookkeeping (materialising the
        # member's state, swapping its random streams in and out) is skipped, which for a tiny
        # network at batch 12 was more than half the training time.
        self.step_callbacks = [cb for cb in self.callbacks if getattr(cb, "on_step_end", None) is not None
                               and getattr(cb, "wants_step_end", True)]
        self.optimizer = make_optimizer(model, cfg)
        make_scheduler(self.optimizer, cfg)  # sets "initial_lr", as in train()'s optimizer state
        self.lrs = _lr_table(cfg)
        self.state = TrainState(model, None, self.optimizer, data, device, cfg, new_history())
        self.start_epoch = 0
        self.diverged = False
        self.rng: _RNG | None = None
        self.mask_key = None

    def call(self, hook: str, lr_epoch: int, bufs: dict | None) -> None:
        """Run the member's callbacks for ``hook``, with its optimizer showing its lr and buffers."""
        callbacks = self.step_callbacks if hook == "on_step_end" else self.callbacks
        fns = [getattr(cb, hook, None) for cb in callbacks]
        fns = [fn for fn in fns if fn is not None]
        if not fns:
            return
        self.sync_optimizer(lr_epoch, bufs)
        with self.rng:
            for fn in fns:
                fn(self.state)

    def sync_optimizer(self, lr_epoch: int, bufs: dict | None) -> None:
        """Point the member's torch.optim.SGD at its lr after ``lr_epoch`` scheduler steps and its buffers."""
        self.optimizer.param_groups[0]["lr"] = self.lrs[lr_epoch]
        state = self.optimizer.state
        if bufs is None:
            state.clear()
        else:
            for n, p in self.model.named_parameters():
                state[p]["momentum_buffer"] = bufs[n]

    def checkpoint(self, bufs: dict | None, epoch: int) -> dict:
        """What train() gives its on_epoch_end after ``epoch`` epochs; tensors copied out of the stack."""
        self.sync_optimizer(epoch, bufs)
        opt = self.optimizer.state_dict()
        opt["state"] = {k: {name: v.detach().clone() for name, v in st.items()} for k, st in opt["state"].items()}
        return epoch_checkpoint({k: v.detach().clone() for k, v in self.model.state_dict().items()}, opt,
                                self.state.masks, self.state.history, epoch)


# ----------------------------------------------------------------------------- training

def _check_data(data, n_models: int) -> list:
    """One DataSplits per member: ``data`` itself for all, or a list whose entries differ only in
    their training labels (the same inputs and test set: label noise of other levels or seeds)."""
    if not isinstance(data, (list, tuple)):
        return [data] * n_models
    datas = list(data)
    if len(datas) != n_models:
        raise ValueError(f"data must be one DataSplits or a list of {n_models} (one per model), "
                         f"got a list of {len(datas)}")
    first = datas[0]
    for i, d in enumerate(datas[1:], start=1):
        if d is first:
            continue
        same = (d.x_train.shape == first.x_train.shape and d.x_test.shape == first.x_test.shape
                and torch.equal(d.x_train, first.x_train) and torch.equal(d.x_test, first.x_test)
                and torch.equal(d.y_test, first.y_test))
        if not same:
            raise ValueError(f"data[{i}] has other inputs or another test set than data[0]; the members of a "
                             f"batch may differ only in their training labels")
    return datas


def train_batched(models: Sequence[nn.Module], data, cfgs: Sequence[TrainConfig] | TrainConfig, *,
                  masks: Sequence[Masks | None] | None = None, seeds: Sequence[int] | None = None,
                  callbacks: Sequence[Sequence] | None = None, device: str | torch.device = "auto",
                  checkpoints: Sequence[dict | None] | None = None,
                  on_epoch_end: Sequence[Callable[[dict], None] | None] | None = None,
                  progress: bool = True, desc: str = "batch", engine: str = "auto") -> list[dict]:
    """Train every ``models[i]`` as :func:`sparsegap.train.train` would, all at once; return the histories.

    Every per-member argument is a list with one entry per model (``None`` means: no masks, seed 0,
    no callbacks, no checkpoint, no checkpoint callback for every member). ``cfgs`` may be one
    TrainConfig for all; members may differ only in ``lr``. ``data`` may also be a list, one
    DataSplits per member, that differ only in their training labels (label noise of another level
    or seed): the inputs and the test set must be equal. The models are trained in place, like
    ``train()``'s, and callbacks see ``models[i]`` itself in their :class:`TrainState`.
    ``engine``: ``"bmm"`` (plain MLPs), ``"vmap"`` (any buffer-free model) or ``"auto"``.
    A member's ``history["seconds"]`` is its share of the batched epoch's wall time.
    """
    models = list(models)
    check_batchable(models, buffers=True)
    engine = engine_for(models[0], engine)
    if engine == "grouped":
        check_groupable(models[0])
    n_models = len(models)
    cfgs = [cfgs] * n_models if isinstance(cfgs, TrainConfig) else _check_list("cfgs", cfgs, n_models, None)
    check_compatible(cfgs, engine)
    masks = _check_list("masks", masks, n_models, None)
    seeds = _check_list("seeds", seeds, n_models, 0)
    for i, s in enumerate(seeds):
        if isinstance(s, bool) or not isinstance(s, int):
            raise TypeError(f"seeds[{i}] must be an int, got {s!r}")
    callbacks = _check_list("callbacks", callbacks, n_models, list)
    for i, cbs in enumerate(callbacks):
        hooked = [type(cb).__name__ for cb in cbs if getattr(cb, "on_after_backward", None) is not None]
        if hooked:
            raise ValueError(f"callbacks[{i}] has {hooked} with on_after_backward, which batched training does "
                             f"not call (the members' gradients are never separate tensors); train that run "
                             f"with sparsegap.train.train")
    checkpoints = _check_list("checkpoints", checkpoints, n_models, None)
    on_epoch_end = _check_list("on_epoch_end", on_epoch_end, n_models, None)
    datas = _check_data(data, n_models)
    data = datas[0]
    device = resolve_device(device)
    cfg = cfgs[0]
    momentum, weight_decay = cfg.momentum, cfg.weight_decay

    members: list[_Member] = []
    bufs: list[dict | None] = [None] * n_models
    for i, model in enumerate(models):
        model.to(device)
        if masks[i] is not None:
            check_masks(model, masks[i])
        mem = _Member(i, model, cfgs[i], seeds[i], callbacks[i], datas[i], device)
        member_masks = masks_to(masks[i], device)
        ckpt = checkpoints[i]
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            member_masks = masks_to(ckpt.get("masks"), device)
            mem.state.history, mem.start_epoch = ckpt["history"], ckpt["epoch"]
            if has_diverged(mem.state.history):
                mem.diverged = True
            names = [n for n, _ in model.named_parameters()]
            saved = ckpt["optimizer"]["state"]
            if momentum != 0 and saved:
                bufs[i] = {names[k]: saved[k]["momentum_buffer"].to(device).clone() for k in range(len(names))}
        apply_masks(model, member_masks)
        mem.state.masks = member_masks
        mem.mask_key = masks_key(member_masks)
        mem.rng = _RNG(seeds[i] + mem.start_epoch)
        members.append(mem)

    names = [n for n, _ in models[0].named_parameters()]
    params_of = [dict(m.named_parameters()) for m in models]
    x_shape = tuple(data.x_train.shape[1:])
    if engine == "bmm" and len(x_shape) > 1 and mlp_ops(models[0])[0][0] != "flatten":
        raise ValueError(f"engine='bmm' needs 1-D samples or a model that starts with nn.Flatten; samples "
                         f"have shape {x_shape}; use engine='vmap'")
    buffer_names = [n for n, _ in models[0].named_buffers()]
    buffers_of = [dict(m.named_buffers()) for m in models]
    if engine == "grouped":
        if cfg.augment != "none" or cfg.channels_last:
            if len(x_shape) != 3:
                raise ValueError(f"TrainConfig.augment and channels_last apply to image inputs of shape (N, C, H, W); "
                                 f"{data.name} has inputs of shape {x_shape}")
        stack_engine = GroupedEngine(models[0], names, buffer_names, channels_last=cfg.channels_last,
                                     amp_dtype=torch.bfloat16 if cfg.precision == "bf16" else None)
    else:
        stack_engine = (BmmEngine if engine == "bmm" else VmapEngine)(models[0], names)

    x_train, x_test = data.x_train.to(device), data.x_test.to(device)   # evaluated from the device, no copy an epoch
    labels = torch.stack([d.y_train for d in datas]).to(device)   # members x samples
    largest_activation = activation_size(models[0], tuple(x_train.shape[1:]))
    n, bs = len(x_train), cfg.batch_size
    steps_per_epoch = -(-n // bs)
    for mem in members:
        mem.state.epoch, mem.state.step = mem.start_epoch, mem.start_epoch * steps_per_epoch
        mem.state.steps_per_epoch = steps_per_epoch
        mem.call("on_train_begin", mem.start_epoch, bufs[mem.i])

    def build(active: list[int]) -> Stack:
        return Stack(active, params_of, bufs, [m.state.masks for m in members], names, stack_engine,
                     buffers_of, buffer_names)

    def run_steps(epoch: int, stack: Stack, perm: torch.Tensor, perms: dict, y_train: torch.Tensor,
                  log: torch.Tensor | None):
        """One epoch's steps of the stack; returns (stack, perm, y_train), rebuilt without the members that diverged.
        ``log`` None: every step checks its losses (a host sync per step); else they are written to ``log``."""
        # each member's own crops and flips, drawn as train() draws them
        aug = ({i: torch.Generator().manual_seed(seed_stream(seeds[i], epoch + 13)) for i in stack.members}
               if cfg.augment != "none" else None)
        for start in range(0, n, bs):
            while True:  # once more without them if some member's loss is not finite
                idx = perm[:, start: start + bs]
                xb, yb = x_train[idx], y_train.gather(1, idx)
                if aug is not None:
                    xb = torch.stack([augment_batch(cfg.augment, xb[row], aug[i]) for row, i in enumerate(stack.members)])
                saved = stack.save_buffers() if stack.R and log is None else None
                losses = stack.losses(xb, yb)
                if log is not None:
                    log[start // bs].copy_(losses.detach())
                    break
                finite = torch.isfinite(losses)
                if bool(finite.all()):
                    break
                bad = (~finite).nonzero().flatten().tolist()
                for row in bad:
                    mem = members[stack.members[row]]
                    mem.diverged = True
                    record_divergence(mem.state.history, epoch + 1, mem.state.step + 1, float(losses[row]))
                if saved is not None:   # the others' statistics as before this forward pass, which runs again
                    stack.restore_buffers(saved, keep_rows=bad)
                stack.release(bufs)
                active = [i for i in stack.members if not members[i].diverged]
                stack = build(active) if active else None
                if stack is None:
                    break
                stack.set_lrs([members[i].lrs[epoch] for i in stack.members])
                perm = torch.stack([perms[i] for i in stack.members])
                y_train = labels[stack.members]
            if stack is None:
                break
            stack.sgd_step(momentum, weight_decay)
            masks_changed = False
            for row, i in enumerate(stack.members):
                mem = members[i]
                mem.state.step += 1
                if mem.step_callbacks:
                    mem.state.batch, mem.state.loss = (xb[row], yb[row]), losses[row]
                    mem.call("on_step_end", epoch, stack.row_bufs(row))
                    mem.state.batch = mem.state.loss = None
                    masks_changed |= masks_key(mem.state.masks) != mem.mask_key
            if masks_changed:  # a mask updater (pruning schedule, SET, RigL) changed some mask
                for mem in members:
                    mem.mask_key = masks_key(mem.state.masks)
                stack.set_masks([m.state.masks for m in members])
        return stack, perm, y_train

    stack: Stack | None = None
    first = min(m.start_epoch for m in members)
    bar = tqdm(range(first, cfg.epochs), desc=desc, initial=first, total=cfg.epochs,
               disable=not progress_enabled(progress), leave=False)
    try:
        for epoch in bar:
            active = [m.i for m in members if m.start_epoch <= epoch and not m.diverged]
            if stack is None or stack.members != active:
                if stack is not None:
                    stack.release(bufs)
                stack = build(active) if active else None
            if stack is None:
                continue
            t0 = time.perf_counter()
            y_train = labels[stack.members]
            perms = {i: epoch_permutation(n, seeds[i], epoch).to(device) for i in active}
            perm = torch.stack([perms[i] for i in stack.members])
            stack.set_lrs([members[i].lrs[epoch] for i in stack.members])
            for mem in (members[i] for i in stack.members):
                mem.state.epoch = epoch
            # On an accelerator, with no callback acting during the steps, the steps never wait for the device to
            # say whether a loss was finite (issue 26): each step's losses go to ``log`` on the device, read once
            # at the epoch's end; a member that diverged sends the whole epoch back to its start (a snapshot of
            # the stack) to be replayed with the check at every step, which stops each member where it always
            # did, with the same bits. The CPU checks every step, as train() does.
            log = None
            if _defer_check(device) and not any(members[i].step_callbacks for i in stack.members):
                log = torch.empty(steps_per_epoch, len(stack.members), device=device,
                                  dtype=torch.float32 if device.type == "mps" else torch.float64)
                snapshot = ([q.detach().clone() for q in stack.P],
                            None if stack.B is None else [b.clone() for b in stack.B],
                            {i: members[i].state.step for i in stack.members}, stack.save_buffers())
            stack, perm, y_train = run_steps(epoch, stack, perm, perms, y_train, log)
            if log is not None and not bool(torch.isfinite(log).all()):   # the one host sync of the epoch's steps
                with torch.no_grad():
                    for q, saved in zip(stack.P, snapshot[0]):
                        q.copy_(saved)
                stack.restore_buffers(snapshot[3])
                stack.B = snapshot[1]
                for i, step in snapshot[2].items():
                    members[i].state.step = step
                stack, perm, y_train = run_steps(epoch, stack, perm, perms, y_train, None)
            if stack is None:
                continue
            seconds = (time.perf_counter() - t0) / len(stack.members)
            trs = stack.evaluate(x_train, labels[stack.members], device, largest_activation)
            tes = stack.evaluate(x_test, data.y_test, device, largest_activation)
            for row, i in enumerate(stack.members):
                mem, (tr, tr_logits), (te, te_logits) = members[i], trs[row], tes[row]
                history = mem.state.history
                if diverged_after_epoch(history, epoch + 1, mem.state.step, tr.loss):
                    mem.diverged = True
                    continue
                record_epoch(history, epoch + 1, mem.lrs[epoch], tr, te, seconds)
                mem.state.logits = EpochLogits(mem.state.step, len(history["epoch"]), tr_logits, te_logits)
                mem.call("on_epoch_end", epoch + 1, stack.row_bufs(row))  # lr after the scheduler step
                if on_epoch_end[i] is not None:
                    on_epoch_end[i](mem.checkpoint(stack.row_bufs(row), epoch + 1))
            if any(masks_key(m.state.masks) != m.mask_key for m in members):
                for mem in members:
                    mem.mask_key = masks_key(mem.state.masks)
                stack.set_masks([m.state.masks for m in members])
            bar.set_postfix(members=len(stack.members))
    finally:
        if stack is not None:
            stack.release(bufs)
        bar.close()
    return [m.state.history for m in members]

