"""Many networks of one architecture as one stacked model: the arithmetic of :mod:`sparsegap.batched`.

:class:`Stack` holds the parameters, momentum buffers, masks and learning rates of the active
members stacked along a new leading dimension, and makes every member's own ``nn.Parameter`` a view
of its row, so that the member modules always show their current weights. It computes each
member's loss on its own batch, the update of ``torch.optim.SGD`` with one learning rate per member,
and each member's evaluation.

Two engines compute the stacked forward and backward passes: :class:`BmmEngine`, hand-written
batched matrix products for plain MLPs (``nn.Sequential`` of Flatten, Linear and ReLU: the MLPs and
LeNet-300-100), and :class:`VmapEngine`, ``torch.func.functional_call`` under ``torch.func.vmap``
for any other architecture without buffers (LeNet-5); a third, :class:`sparsegap.grouped.GroupedEngine`,
runs networks with BatchNorm as one grouped network, the stack holding their running statistics too.
:func:`check_batchable` says which models can be stacked at all: dropout (random masks) cannot, and BatchNorm
only on the grouped engine.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .metrics.basic import Evaluation, evaluate_logits

__all__ = ["ENGINES", "BmmEngine", "Stack", "VmapEngine", "activation_size", "check_batchable", "engine_for",
           "mlp_ops"]

ENGINES = ("auto", "bmm", "vmap", "grouped")
_EVAL_ELEMENTS = 1 << 22  # batched evaluation: at most this many activations (16 MB) per layer output


# ----------------------------------------------------------------------------- what can be stacked

def check_batchable(models: Sequence[nn.Module], buffers: bool = False) -> None:
    """Same architecture, no dropout, and no buffers (BatchNorm statistics) unless ``buffers`` (the grouped
    engine, :mod:`sparsegap.grouped`), else a ValueError."""
    if not models:
        raise ValueError("train_batched needs at least one model, got none")
    for i, m in enumerate(models):
        if not isinstance(m, nn.Module):
            raise TypeError(f"models[{i}] must be an nn.Module, got {type(m).__name__}")
    first = models[0]
    for name, mod in first.named_modules():
        if not buffers and (isinstance(mod, nn.modules.batchnorm._NormBase)
                            or any(True for _ in mod.buffers(recurse=False))):
            raise ValueError(f"models with BatchNorm or other buffers are trained as one batched model by the grouped "
                             f"engine only (module {name or '<root>'} is a {type(mod).__name__}); pass "
                             "engine='grouped' (or 'auto'), or train them one by one with sparsegap.train.train")
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


def mlp_ops(model: nn.Module) -> list[tuple] | None:
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


def has_buffers(model: nn.Module) -> bool:
    return any(True for _ in model.buffers())


def engine_for(model: nn.Module, engine: str = "auto") -> str:
    """``bmm`` for plain MLPs, ``grouped`` for models with buffers (BatchNorm), ``vmap`` for everything else (or
    the engine asked for, if it applies)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        return "bmm" if mlp_ops(model) is not None else "grouped" if has_buffers(model) else "vmap"
    if engine != "grouped" and has_buffers(model):   # the grouped engine checks what it can group itself
        raise ValueError(f"engine={engine!r} cannot train models with buffers (BatchNorm statistics); use "
                         "engine='grouped' or 'auto'")
    if engine == "bmm" and mlp_ops(model) is None:
        raise ValueError("engine='bmm' needs a plain MLP (nn.Sequential of Flatten, Linear and ReLU); "
                         "use engine='vmap' or 'auto'")
    return engine



# ----------------------------------------------------------------------------- the stacked model

class Stack:
    """The active members' parameters, momentum buffers, masks and learning rates, stacked on dim 0.

    While a stack exists, each member's ``nn.Parameter`` objects point at their row of the stacked
    tensors (``p.data = P[k][row]``), so the member modules always show the current weights;
    :meth:`release` gives every member its own copy again.
    """

    def __init__(self, members: list[int], params_of: list[dict], bufs: list[dict | None], masks: list,
                 names: list[str], engine, buffers_of: list[dict] | None = None, buffer_names: Sequence[str] = ()):
        self.members = members
        self.names = names
        self.params_of = params_of
        self.engine = engine
        self.P = [torch.stack([params_of[i][n].detach() for i in members]).requires_grad_(engine.autograd)
                  for n in names]
        # the modules' own buffers (BatchNorm's running statistics: the grouped engine), stacked like the weights
        self.buffers_of, self.buffer_names = buffers_of, list(buffer_names)
        self.R = [torch.stack([buffers_of[i][n] for i in members]) for n in self.buffer_names]
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
            for n, R in zip(self.buffer_names, self.R):
                self.buffers_of[i][n].data = R[row]

    def release(self, bufs: list) -> None:
        """Give every member its own weights, momentum buffers and module buffers back."""
        for row, i in enumerate(self.members):
            for n, P in zip(self.names, self.P):
                self.params_of[i][n].data = P.detach()[row].clone()
            for n, R in zip(self.buffer_names, self.R):
                self.buffers_of[i][n].data = R[row].clone()
            bufs[i] = None if self.B is None else {n: B[row].clone() for n, B in zip(self.names, self.B)}

    def save_buffers(self) -> list[torch.Tensor]:
        """A copy of the module buffers, taken before a forward pass that may have to be run again."""
        return [r.clone() for r in self.R]

    def restore_buffers(self, saved: list[torch.Tensor], keep_rows: Sequence[int] = ()) -> None:
        """The module buffers as :meth:`save_buffers` copied them, but for the rows ``keep_rows``: members that
        stop at this forward pass keep the statistics it gave them, as a run of train() that diverges does."""
        keep = set(keep_rows)
        rows = [r for r in range(len(self.members)) if r not in keep]
        with torch.no_grad():
            for r, old in zip(self.R, saved):
                r[rows] = old[rows]

    def row_bufs(self, row: int) -> dict | None:
        return None if self.B is None else {n: B[row] for n, B in zip(self.names, self.B)}

    def set_lrs(self, lrs: list[float]) -> None:
        self.neg_lr.copy_(-torch.tensor(lrs, dtype=torch.float64))

    def losses(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """Each member's mean cross-entropy on its own batch, shape (members,); :meth:`sgd_step` follows."""
        return self.engine.losses(self.P, xb, yb, self.R)

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
                 activation_size: int) -> list[tuple[Evaluation, torch.Tensor]]:
        """:func:`sparsegap.metrics.basic.evaluate` for every member (same numbers to float precision), each with
        the member's logits (a CPU tensor, for the trackers that read the same samples).

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
            lg = torch.cat([self.engine.logits_member(self.P, row, x[i: i + chunk].to(device), self.R).float().cpu()
                            for i in range(0, len(x), chunk)])
            yr = y[row] if y.dim() == 2 else y      # labels per member (rows of the active members)
            out.append((evaluate_logits(lg, yr), lg))
        return out


@torch.no_grad()
def activation_size(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """The largest output (elements) of any layer for one sample, the input included."""
    sizes = [math.prod(input_shape)]
    handles = [m.register_forward_hook(lambda mod, inp, out: sizes.append(out.numel()))
               for m in model.modules() if not list(m.children())]
    was_training = model.training
    try:
        model.eval()   # BatchNorm's running statistics stay as they are
        p = next(model.parameters())
        model(torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return max(sizes)


def _member_losses(logits: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    m, b = yb.shape
    return F.cross_entropy(logits.reshape(m * b, -1), yb.reshape(-1), reduction="none").view(m, b).mean(1)


class BmmEngine:
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
                    for op in mlp_ops(model)]
        self.first_linear = next(k for k, op in enumerate(self.ops) if op[0] == "linear")
        self._saved: list = []

    @torch.no_grad()
    def losses(self, P, xb, yb, R=()):
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
    def logits_member(self, P, row: int, x, R=()):
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


class AutogradEngine:
    """An engine whose gradients come from autograd: :meth:`losses` keeps the sum of the members' losses (each
    member's gradient is that of its own loss), :meth:`grads` differentiates it once."""

    autograd = True
    _loss = None

    def _keep(self, losses: torch.Tensor) -> torch.Tensor:
        self._loss = losses.sum()
        return losses.detach()

    def grads(self, P):
        grads = list(torch.autograd.grad(self._loss, P))
        self._loss = None
        return grads


class VmapEngine(AutogradEngine):
    """Any buffer-free model: ``torch.func.functional_call`` under ``vmap``, gradients by autograd."""

    def __init__(self, model: nn.Module, names: list[str]):
        from torch.func import functional_call, vmap
        base = copy.deepcopy(model).to("meta")

        def f(params, x):
            return functional_call(base, dict(zip(names, params)), (x,))

        self._f, self._per_member = f, vmap(f, in_dims=(0, 0))

    def losses(self, P, xb, yb, R=()):
        return self._keep(_member_losses(self._per_member(tuple(P), xb), yb))

    @torch.no_grad()
    def logits_member(self, P, row: int, x, R=()):
        return self._f(tuple(p[row] for p in P), x)
