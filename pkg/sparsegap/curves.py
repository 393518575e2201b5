"""Bézier curves between two solutions (Garipov et al. 2018), as Evci et al. (2019) use them.

A curve of degree n between θ_0 and θ_n has n − 1 trainable control points θ_1..θ_{n-1}:
φ(t) = Σ_k C(n, k) (1 − t)^(n−k) t^k θ_k. The endpoints are frozen buffers; the control points start
on the straight line (θ_k = θ_0 + k/n·(θ_n − θ_0)). Training draws one t ~ U(0, 1) per minibatch and
minimizes the cross-entropy at φ(t) plus the L2 term λ/2·‖φ(t)‖². In the *sparse* mode the control
points are held to the endpoints' shared mask (their gradients and values are zero off it); in the
*dense* mode they are free. A trained curve is a run in the store (``RunConfig(kind="curve")``):
:func:`train_curve` has the training loop's checkpoint contract, so it resumes and is never trained twice.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .bookkeeping import HISTORY_KEYS, epoch_checkpoint, new_history, record_epoch
from .config import CURVE_DEGREES as DEGREES, TrainConfig
from .metrics.basic import evaluate
from .seeds import seed_stream
from .train import epoch_permutation, progress_enabled


def _key(name: str) -> str:
    return name.replace(".", "__")


class BezierCurve(nn.Module):
    """A curve between two networks of one architecture (``base`` gives it: its own weights are unused)."""

    def __init__(self, base: nn.Module, start: dict, end: dict, degree: int, masks: dict | None = None):
        super().__init__()
        if degree not in DEGREES:
            raise ValueError(f"degree (the curve's order) must be one of {DEGREES}, got {degree!r}")
        self.base, self.degree = base, degree
        self.names = [n for n, _ in base.named_parameters()]
        for n in self.names:
            if start[n].shape != end[n].shape:
                raise ValueError(f"the endpoints differ at {n!r}: {tuple(start[n].shape)} vs {tuple(end[n].shape)}")
        self.buffers_of_base = {k: v for k, v in start.items() if k not in self.names}
        self.buffers_of_end = {k: v for k, v in end.items() if k not in self.names}
        for n in self.names:
            self.register_buffer(f"start__{_key(n)}", start[n].detach().clone().float())
            self.register_buffer(f"end__{_key(n)}", end[n].detach().clone().float())
        self.masks = {n: m.bool() for n, m in (masks or {}).items()}
        self.controls = nn.ParameterList()
        for k in range(1, degree):
            point = {}
            for n in self.names:
                a, b = getattr(self, f"start__{_key(n)}"), getattr(self, f"end__{_key(n)}")
                v = a + (k / degree) * (b - a)
                point[n] = v * self.masks[n] if n in self.masks else v
            self.controls.append(nn.Parameter(torch.cat([point[n].reshape(-1) for n in self.names])))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def _unflatten(self, flat: torch.Tensor) -> dict:
        out, i = {}, 0
        for n in self.names:
            shape = getattr(self, f"start__{_key(n)}").shape
            size = int(np.prod(shape)) if len(shape) else 1
            out[n] = flat[i: i + size].view(shape)
            i += size
        return out

    def point(self, t: float | torch.Tensor) -> dict:
        """φ(t) as a parameter dict of the base network (differentiable in the control points)."""
        n = self.degree
        coeffs = [math.comb(n, k) * (1 - t) ** (n - k) * t ** k for k in range(n + 1)]
        ctrl = [self._unflatten(c) for c in self.controls]
        out = {}
        for name in self.names:
            v = coeffs[0] * getattr(self, f"start__{_key(name)}") + coeffs[n] * getattr(self, f"end__{_key(name)}")
            for k, c in enumerate(ctrl, start=1):
                v = v + coeffs[k] * c[name]
            out[name] = v
        return out

    def network_at(self, t: float) -> nn.Module:
        """A copy of the base network with the weights φ(t) (and the first endpoint's buffers)."""
        import copy
        net = copy.deepcopy(self.base)
        with torch.no_grad():
            state = {k: v.detach().clone() for k, v in self.point(float(t)).items()}
            buffers = self.buffers_of_end if float(t) == 1.0 else self.buffers_of_base
            net.load_state_dict(state | {k: v.clone() for k, v in buffers.items()})
        return net

    def forward(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, self.point(t), (x,))

    def hold_mask(self) -> None:
        """Sparse mode: zero the control points off the shared mask (after each step)."""
        if not self.masks:
            return
        flat_mask = torch.cat([(self.masks[n] if n in self.masks else torch.ones_like(
            getattr(self, f"start__{_key(n)}"), dtype=torch.bool)).reshape(-1) for n in self.names])
        with torch.no_grad():
            for c in self.controls:
                c.mul_(flat_mask.to(c.dtype))
                if c.grad is not None:
                    c.grad.mul_(flat_mask.to(c.dtype))


def train_curve(curve: BezierCurve, data, cfg: TrainConfig, *, seed: int = 0, checkpoint: dict | None = None,
                on_epoch_end: Callable[[dict], None] | None = None, progress: bool = True) -> dict:
    """Train the control points: per minibatch one t ~ U(0, 1), loss CE(φ(t)) + λ/2·‖φ(t)‖² with
    λ = ``cfg.weight_decay`` (the optimizer itself applies no weight decay), SGD with ``cfg``'s lr,
    momentum and schedule. The history has the training loop's keys, measured at the curve's
    midpoint t = 0.5; checkpoints follow the run store's contract (model, optimizer, history, epoch)."""
    from tqdm.auto import tqdm

    from .train import make_scheduler
    opt = torch.optim.SGD(curve.controls.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    sched = make_scheduler(opt, cfg)
    history, start = new_history(), 0
    if checkpoint is not None:
        curve.load_state_dict(checkpoint["model"])
        for _ in range(checkpoint["epoch"]):
            sched.step()
        opt.load_state_dict(checkpoint["optimizer"])
        history, start = checkpoint["history"], checkpoint["epoch"]
    x, y = data.x_train, data.y_train
    n, bs = len(x), cfg.batch_size
    lam = cfg.weight_decay
    for epoch in tqdm(range(start, cfg.epochs), disable=not progress_enabled(progress), leave=False, desc="curve"):
        t0 = time.perf_counter()
        perm = epoch_permutation(n, seed, epoch)
        lr = opt.param_groups[0]["lr"]
        for i in range(0, n, bs):
            idx = perm[i: i + bs]
            g = torch.Generator().manual_seed(seed_stream(seed, int(curve.step)))
            t = float(torch.rand((), generator=g))
            point = curve.point(t)
            loss = F.cross_entropy(functional_call(curve.base, point, (x[idx],)), y[idx])
            if lam:
                loss = loss + 0.5 * lam * sum((v ** 2).sum() for v in point.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            curve.hold_mask()
            opt.step()
            curve.hold_mask()
            curve.step += 1
        sched.step()
        mid = curve.network_at(0.5)
        tr, te = evaluate(mid, data.x_train, data.y_train), evaluate(mid, data.x_test, data.y_test)
        record_epoch(history, epoch + 1, lr, tr, te, time.perf_counter() - t0)
        if on_epoch_end is not None:
            on_epoch_end(epoch_checkpoint(curve.state_dict(), opt.state_dict(), curve.masks or None, history,
                                          epoch + 1))
    assert set(HISTORY_KEYS) <= set(history)
    return history


def curve_path(curve: BezierCurve, data, *, ts=None, subsets=("train", "test"), weight_decay: float = 0.0,
               reestimate_bn: bool | None = None, device: torch.device | str = "cpu") -> pd.DataFrame:
    """Loss and accuracy (and with ``weight_decay`` the L2 term and the objective) along the curve, with
    BatchNorm statistics re-estimated at every point for BN models, as :func:`sparsegap.landscape.linear_path`
    does on lines (the endpoints t = 0 and 1 keep their own statistics). Each point's network is evaluated on
    ``device``."""
    from .checks import device as check_device
    from .landscape import _check_points, _evaluate_rows, _reestimate_bn, _resolve_reestimate, _resolve_subsets
    points = _check_points("ts", ts, np.linspace(0.0, 1.0, 21))
    resolved = _resolve_subsets(subsets, data)
    reestimate = _resolve_reestimate(reestimate_bn, curve.base, data, None)
    device = check_device("device", device)
    rows = []
    for t in points:
        net = curve.network_at(t).to(device)
        if reestimate and t not in (0.0, 1.0):
            _reestimate_bn(net, data.x_train, max_batches=None)
        point = _evaluate_rows(net, "t", t, resolved, device)
        if weight_decay:
            with torch.no_grad():
                l2 = 0.5 * weight_decay * float(sum(p.double().pow(2).sum() for p in net.parameters()))
            point = [r | {"l2": l2, "objective": r["loss"] + l2} for r in point]
        rows += point
    return pd.DataFrame(rows)
