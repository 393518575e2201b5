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
  non-finite loss>, "loss": "nan" | "inf"}`` (:func:`sparsegap.train.diverged_at`) and no row for
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

Two engines compute the stacked forward and backward passes: ``"bmm"``, hand-written batched
matrix products for plain MLPs (``nn.Sequential`` of Flatten, Linear and ReLU: the MLPs and
LeNet-300-100), and ``"vmap"``, ``torch.func.functional_call`` under ``torch.func.vmap`` for
any other architecture without buffers (LeNet-5). Measured on this machine's kind (2 cores, one
torch thread, one epoch of 18 12-bit MLPs on ``tishby``, batch 12): 12-19x faster than one after
another with ``bmm``, 6x with ``vmap``. BatchNorm (running statistics) and dropout (random
masks) are refused.

Whether batching pays is :func:`should_batch`'s call; see :data:`BATCH_MAX_MACS` for the rule
and the measurements behind it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .config import TrainConfig
from .metrics.basic import Evaluation, prediction_entropy
from .pruning import Masks, apply_masks, check_masks, masks_key, masks_to
from .train import (TrainState, diverged_at, epoch_permutation, make_optimizer, make_scheduler, new_history,
                    progress_enabled, resolve_device)

__all__ = ["ENGINES", "BATCH_MAX_MACS", "BATCH_MAX_PARAMS", "check_batchable", "check_compatible", "engine_for",
           "forward_macs", "should_batch", "train_batched", "trains_batched"]

ENGINES = ("auto", "bmm", "vmap")

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
_EVAL_ELEMENTS = 1 << 22  # batched evaluation: at most this many activations (16 MB) per layer output


# ----------------------------------------------------------------------------- checks

def _check_list(name: str, value, n: int, default):
    if value is None:
        return [default() if callable(default) else default for _ in range(n)]
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name} must have one entry per model ({n}), got {len(value)}")
    return value


def check_compatible(cfgs: Sequence[TrainConfig]) -> None:
    """Members of a batch may differ only in ``lr``: a ValueError names the first other difference."""
    cfgs = list(cfgs)
    if not cfgs:
        raise ValueError("cfgs is empty: a batch needs at least one TrainConfig")
    for i, c in enumerate(cfgs):
        if not isinstance(c, TrainConfig):
            raise TypeError(f"cfgs[{i}] must be a TrainConfig, got {type(c).__name__}")
    if any(c.fisher_reg for c in cfgs):
        raise ValueError("the Fisher regularizer (TrainConfig.fisher_reg) needs each member's own double backward "
                         "pass, which batched training does not do; train those runs with sparsegap.train.train")
    if any(c.gpu_options for c in cfgs):
        raise ValueError("mixed precision, channels_last and augmentation (TrainConfig.precision, channels_last, augment) "
                         "are for large networks trained one at a time; train those runs with sparsegap.train.train")
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


def check_batchable(models: Sequence[nn.Module]) -> None:
    """Same architecture, no buffers (BatchNorm statistics) and no dropout, else a ValueError."""
    if not models:
        raise ValueError("train_batched needs at least one model, got none")
    for i, m in enumerate(models):
        if not isinstance(m, nn.Module):
            raise TypeError(f"models[{i}] must be an nn.Module, got {type(m).__name__}")
    first = models[0]
    for name, mod in first.named_modules():
        if isinstance(mod, nn.modules.batchnorm._NormBase) or any(True for _ in mod.buffers(recurse=False)):
            raise ValueError(f"models with BatchNorm or other buffers cannot be trained as one batched model "
                             f"(module {name or '<root>'} is a {type(mod).__name__}); train them one by one "
                             "with sparsegap.train.train")
        if isinstance(mod, nn.modules.dropout._DropoutNd):
            raise ValueError(f"models with dropout cannot be trained as one batched model (module {name} is a "
                             f"{type(mod).__name__}); train them one by one with sparsegap.train.train")
    arch = repr(first)
    shapes = [(n, tuple(p.shape), p.dtype) for n, p in first.named_parameters()]
    for i, m in enumerate(models[1:], start=1):
        if repr(m) != arch or [(n, tuple(p.shape), p.dtype) for n, p in m.named_parameters()] != shapes:
            raise ValueError(f"models[{i}] has another architecture than models[0]; a batch needs one "
                             f"architecture:\n{m}\nvs\n{first}")
    owner: dict[int, int] = {}
    for i, m in enumerate(models):
        for p in m.parameters():
            j = owner.setdefault(id(p), i)
            if j != i:
                raise ValueError(f"models[{i}] shares parameters with models[{j}]; pass one model object per member")


# ----------------------------------------------------------------------------- cost and policy

def _mlp_ops(model: nn.Module) -> list[tuple] | None:
    """The layers of a plain MLP (Sequential of Flatten/Linear/ReLU) for the bmm engine, else None."""
    if not isinstance(model, nn.Sequential):
        return None
    ops: list[tuple] = []
    for name, m in model.named_children():
        if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1 and not ops:
            ops.append(("flatten",))
        elif isinstance(m, nn.Linear):
            ops.append(("linear", f"{name}.weight", f"{name}.bias" if m.bias is not None else None))
        elif isinstance(m, nn.ReLU):
            ops.append(("relu",))
        else:
            return None
    return ops if any(op[0] == "linear" for op in ops) else None


def engine_for(model: nn.Module, engine: str = "auto") -> str:
    """``bmm`` for plain MLPs, ``vmap`` for everything else (or the engine asked for, if it applies)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        return "bmm" if _mlp_ops(model) is not None else "vmap"
    if engine == "bmm" and _mlp_ops(model) is None:
        raise ValueError("engine='bmm' needs a plain MLP (nn.Sequential of Flatten, Linear and ReLU); "
                         "use engine='vmap' or 'auto'")
    return engine


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


# ----------------------------------------------------------------------------- the stacked model

class _Stack:
    """The active members' parameters, momentum buffers, masks and learning rates, stacked on dim 0.

    While a stack exists, each member's ``nn.Parameter`` objects point at their row of the stacked
    tensors (``p.data = P[k][row]``), so the member modules always show the current weights;
    :meth:`release` gives every member its own copy again.
    """

    def __init__(self, members: list[int], params_of: list[dict], bufs: list[dict | None], masks: list,
                 names: list[str], engine):
        self.members = members
        self.names = names
        self.params_of = params_of
        self.engine = engine
        self.P = [torch.stack([params_of[i][n].detach() for i in members]).requires_grad_(engine.autograd)
                  for n in names]
        has_buf = [bufs[i] is not None for i in members]
        if any(has_buf) and not all(has_buf):  # members share an epoch, hence a step count
            raise RuntimeError("members of one stack must all have momentum buffers or none")
        self.B = [torch.stack([bufs[i][n] for i in members]) for n in names] if all(has_buf) else None
        self.set_masks(masks)
        self.neg_lr = torch.zeros(len(members), dtype=self.P[0].dtype, device=self.P[0].device)
        self._lr_views = [self.neg_lr.view(-1, *[1] * (p.dim() - 1)) for p in self.P]
        self.bind()

    def set_masks(self, masks: list) -> None:
        """Stacked float masks for every parameter some member masks (ones for the unmasked members)."""
        masked = {n for i in self.members if masks[i] for n in masks[i]}
        self.masked, self.M = [], []
        for k, (n, p) in enumerate(zip(self.names, self.P)):
            if n in masked:
                rows = [masks[i][n] if masks[i] and n in masks[i] else torch.ones(p.shape[1:], dtype=torch.bool)
                        for i in self.members]
                self.masked.append(k)
                self.M.append(torch.stack([r.to(p.device) for r in rows]).to(p.dtype))

    def bind(self) -> None:
        for row, i in enumerate(self.members):
            for n, P in zip(self.names, self.P):
                self.params_of[i][n].data = P.detach()[row]

    def release(self, bufs: list) -> None:
        """Give every member its own weights and momentum buffers back."""
        for row, i in enumerate(self.members):
            for n, P in zip(self.names, self.P):
                self.params_of[i][n].data = P.detach()[row].clone()
            bufs[i] = None if self.B is None else {n: B[row].clone() for n, B in zip(self.names, self.B)}

    def row_bufs(self, row: int) -> dict | None:
        return None if self.B is None else {n: B[row] for n, B in zip(self.names, self.B)}

    def set_lrs(self, lrs: list[float]) -> None:
        self.neg_lr.copy_(-torch.tensor(lrs, dtype=torch.float64))

    def losses(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """Each member's mean cross-entropy on its own batch, shape (members,); :meth:`sgd_step` follows."""
        return self.engine.losses(self.P, xb, yb)

    @torch.no_grad()
    def sgd_step(self, momentum: float, weight_decay: float) -> None:
        """torch.optim.SGD's update (dampening 0, no Nesterov), one learning rate per member.

        The gradient is masked first, so a pruned weight (0, gradient 0) gets no weight decay
        and a momentum buffer that stays 0: it stays exactly 0, as in train().
        """
        grads = self.engine.grads(self.P)
        if self.masked:
            torch._foreach_mul_([grads[k] for k in self.masked], self.M)
        if weight_decay != 0:
            grads = torch._foreach_add(grads, self.P, alpha=weight_decay)
        if momentum != 0:
            if self.B is None:  # the first step: the buffer is the gradient
                self.B = [g.clone() for g in grads]
            else:
                torch._foreach_mul_(self.B, momentum)
                torch._foreach_add_(self.B, grads)
            grads = self.B
        torch._foreach_addcmul_(self.P, grads, self._lr_views)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                 activation_size: int) -> list[Evaluation]:
        """:func:`sparsegap.metrics.basic.evaluate` for every member (same numbers to float precision).

        Member by member, in chunks sized by the model alone (no activation tensor exceeds
        ``_EVAL_ELEMENTS``; ``activation_size``: the largest layer output of one sample): a member's
        numbers are then computed by the same operations on the same shapes whatever the batch it is
        in, so they are bitwise those it gets alone. (One product broadcast over the whole stack gave
        the same bits here too, but as one matrix of ``members x outputs`` rows, whose kernel BLAS
        may choose by its size.)
        """
        chunk = max(1, min(1024, _EVAL_ELEMENTS // activation_size))
        y = y.cpu()
        out = []
        for row in range(len(self.members)):
            lg = torch.cat([self.engine.logits_member(self.P, row, x[i: i + chunk].to(device)).float().cpu()
                            for i in range(0, len(x), chunk)])
            yr = y[row] if y.dim() == 2 else y      # labels per member (rows of the active members)
            out.append(Evaluation(loss=float(F.cross_entropy(lg, yr)),
                                  accuracy=float((lg.argmax(1) == yr).float().mean()),
                                  entropy=float(prediction_entropy(lg).mean())))
        return out


@torch.no_grad()
def _activation_size(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """The largest output (elements) of any layer for one sample, the input included."""
    sizes = [math.prod(input_shape)]
    handles = [m.register_forward_hook(lambda mod, inp, out: sizes.append(out.numel()))
               for m in model.modules() if not list(m.children())]
    try:
        p = next(model.parameters())
        model(torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device))
    finally:
        for h in handles:
            h.remove()
    return max(sizes)


def _member_losses(logits: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    m, b = yb.shape
    return F.cross_entropy(logits.reshape(m * b, -1), yb.reshape(-1), reduction="none").view(m, b).mean(1)


class _BmmEngine:
    """Plain MLPs with stacked weights: batched matrix products forward, and a hand-written backward.

    Autograd's bookkeeping costs more than the arithmetic of these tiny layers; writing the
    backward out (dW = dZᵀA, db = Σ dZ, dA = dZ W, ReLU' from its output, softmax - onehot for the
    cross-entropy) makes an epoch of the 12-bit sweep about 2x faster than autograd on the same
    stacked products.
    """

    autograd = False

    def __init__(self, model: nn.Module, names: list[str]):
        index = {n: k for k, n in enumerate(names)}
        self.ops = [(op[0], index[op[1]], None if op[2] is None else index[op[2]]) if op[0] == "linear" else op
                    for op in _mlp_ops(model)]
        self.first_linear = next(k for k, op in enumerate(self.ops) if op[0] == "linear")
        self._saved: list = []

    @torch.no_grad()
    def losses(self, P, xb, yb):
        h, saved = xb, []
        for op in self.ops:
            if op[0] == "flatten":
                saved.append(h.shape)
                h = h.flatten(2)
            elif op[0] == "relu":
                h = torch.relu(h)
                saved.append(h)
            else:
                saved.append(h)
                W, b = P[op[1]], (P[op[2]] if op[2] is not None else None)
                Wt = W.transpose(1, 2)
                h = torch.bmm(h, Wt) if b is None else torch.baddbmm(b.unsqueeze(1), h, Wt)
        logp = torch.log_softmax(h, -1)
        self._saved, self._logp, self._y = saved, logp, yb
        return -logp.gather(-1, yb.unsqueeze(-1)).squeeze(-1).mean(1)

    @torch.no_grad()
    def grads(self, P):
        logp, yb, saved = self._logp, self._y, self._saved
        grads: list = [None] * len(P)
        g = logp.exp()  # d(mean nll)/d logits = (softmax - onehot) / batch
        g.scatter_add_(-1, yb.unsqueeze(-1), torch.full(yb.shape + (1,), -1.0, dtype=g.dtype, device=g.device))
        g.mul_(1.0 / yb.shape[1])
        for k in range(len(self.ops) - 1, self.first_linear - 1, -1):  # nothing before needs a gradient
            op, s = self.ops[k], saved[k]
            if op[0] == "flatten":
                g = g.reshape(s)
            elif op[0] == "relu":
                g = torch.ops.aten.threshold_backward(g, s, 0)
            else:
                grads[op[1]] = torch.bmm(g.transpose(1, 2), s)
                if op[2] is not None:
                    grads[op[2]] = g.sum(1)
                if k > self.first_linear:
                    g = torch.bmm(g, P[op[1]])
        self._saved = self._logp = self._y = None
        return grads

    @torch.no_grad()
    def logits_member(self, P, row: int, x):
        """Logits of member ``row`` (its row of the stacked weights) for the inputs ``x``: shape (len(x), classes)."""
        h = x
        for op in self.ops:
            if op[0] == "flatten":
                h = h.flatten(1)
            elif op[0] == "relu":
                h = torch.relu(h)
            else:
                h = F.linear(h, P[op[1]][row], None if op[2] is None else P[op[2]][row])
        return h


class _VmapEngine:
    """Any buffer-free model: ``torch.func.functional_call`` under ``vmap``, gradients by autograd."""

    autograd = True

    def __init__(self, model: nn.Module, names: list[str]):
        from torch.func import functional_call, vmap
        base = copy.deepcopy(model).to("meta")

        def f(params, x):
            return functional_call(base, dict(zip(names, params)), (x,))

        self._f, self._per_member = f, vmap(f, in_dims=(0, 0))
        self._loss = None

    def losses(self, P, xb, yb):
        losses = _member_losses(self._per_member(tuple(P), xb), yb)
        self._loss = losses.sum()  # each member's gradient is that of its own loss
        return losses.detach()

    def grads(self, P):
        grads = list(torch.autograd.grad(self._loss, P))
        self._loss = None
        return grads

    @torch.no_grad()
    def logits_member(self, P, row: int, x):
        return self._f(tuple(p[row] for p in P), x)


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
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "optimizer": opt, "masks": self.state.masks, "history": self.state.history, "epoch": epoch}


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
    check_batchable(models)
    n_models = len(models)
    cfgs = [cfgs] * n_models if isinstance(cfgs, TrainConfig) else _check_list("cfgs", cfgs, n_models, None)
    check_compatible(cfgs)
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
    engine = engine_for(models[0], engine)
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
            if "diverged" in mem.state.history:
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
    if engine == "bmm" and len(x_shape) > 1 and _mlp_ops(models[0])[0][0] != "flatten":
        raise ValueError(f"engine='bmm' needs 1-D samples or a model that starts with nn.Flatten; samples "
                         f"have shape {x_shape}; use engine='vmap'")
    stack_engine = (_BmmEngine if engine == "bmm" else _VmapEngine)(models[0], names)

    x_train = data.x_train.to(device)
    labels = torch.stack([d.y_train for d in datas]).to(device)   # members x samples
    activation_size = _activation_size(models[0], tuple(x_train.shape[1:]))
    n, bs = len(x_train), cfg.batch_size
    steps_per_epoch = -(-n // bs)
    for mem in members:
        mem.state.epoch, mem.state.step = mem.start_epoch, mem.start_epoch * steps_per_epoch
        mem.state.steps_per_epoch = steps_per_epoch
        mem.call("on_train_begin", mem.start_epoch, bufs[mem.i])

    def build(active: list[int]) -> _Stack:
        return _Stack(active, params_of, bufs, [m.state.masks for m in members], names, stack_engine)

    stack: _Stack | None = None
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
            for start in range(0, n, bs):
                while True:  # once more without them if some member's loss is not finite
                    idx = perm[:, start: start + bs]
                    xb, yb = x_train[idx], y_train.gather(1, idx)
                    losses = stack.losses(xb, yb)
                    finite = torch.isfinite(losses)
                    if bool(finite.all()):
                        break
                    for row in (~finite).nonzero().flatten().tolist():
                        mem = members[stack.members[row]]
                        mem.diverged = True
                        mem.state.history["diverged"] = diverged_at(epoch + 1, mem.state.step + 1,
                                                                    float(losses[row]))
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
            if stack is None:
                continue
            seconds = (time.perf_counter() - t0) / len(stack.members)
            trs = stack.evaluate(data.x_train, labels[stack.members], device, activation_size)
            tes = stack.evaluate(data.x_test, data.y_test, device, activation_size)
            for row, i in enumerate(stack.members):
                mem, tr, te = members[i], trs[row], tes[row]
                history = mem.state.history
                if not math.isfinite(tr.loss):  # the epoch's last step left the weights non-finite
                    mem.diverged = True
                    history["diverged"] = diverged_at(epoch + 1, mem.state.step, tr.loss)
                    continue
                for k, v in (("epoch", epoch + 1), ("lr", mem.lrs[epoch]), ("train_loss", tr.loss),
                             ("train_acc", tr.accuracy), ("train_entropy", tr.entropy), ("test_loss", te.loss),
                             ("test_acc", te.accuracy), ("test_entropy", te.entropy), ("seconds", seconds)):
                    history[k].append(v)
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

