"""Per-sample squared gradient norms ||∇θ ℓ(x_i, y_i)||² from one backward pass per chunk.

Which parameters count (the same rule in every curvature estimator of ``sparsegap.metrics``):
every parameter with ``requires_grad=True`` -- weights, biases, BatchNorm scales and shifts --
and, for a parameter that has a mask, only its unpruned coordinates (the gradient is multiplied
by the mask before its norm is taken). Pruned weights are not part of θ for a sparse network.

How it is fast. ``nn.Linear``, ``nn.Conv2d`` and BatchNorm layers are handled in closed form
from their input activations ``a`` (forward hook) and output gradients ``δ`` (one
``autograd.grad`` of the summed per-sample losses w.r.t. the layer outputs): the per-sample
weight gradient is ``G_i = Σ_t δ_{i,t} a_{i,t}ᵀ`` (t runs over sequence positions, or over conv
output pixels with ``a`` the unfolded input patches), so
  * without weight sharing (t = 1):  ||G_i||² = ||a_i||² ||δ_i||², and with a mask M
    ||M ⊙ G_i||² = Σ_jk M_jk δ_ij² a_ik² = (δ_i²)ᵀ M (a_i²), a plain matmul (a sparse one for
    very sparse masks);
  * with sharing: ``G_i`` itself (masked if needed), by a batched matmul for Linear and by a
    convolution with one group per sample for Conv2d (cheaper on CPU than ``F.unfold`` + matmul),
    or the Gram form Σ (A_i A_iᵀ) ⊙ (Δ_i Δ_iᵀ) with unfolded A when that is cheaper and no
    mask applies;
  * biases: ||Σ_t δ_{i,t}||²;
  * BatchNorm (eval mode, running statistics): γ and β act per channel, so the per-sample
    gradients are Σ_t δ_{i,c,t} x̂_{i,c,t} and Σ_t δ_{i,c,t}.
Every other trainable parameter (LayerNorm, GroupNorm, custom modules, tied weights, grouped
convs, BatchNorm without running statistics) falls back to ``torch.func.vmap(grad(...))``
restricted to those parameters; it costs about one more forward and backward pass per chunk and
label set, and on CPU it is far slower than the closed forms (hence BatchNorm has one).

Measurements run in eval mode: BatchNorm then uses its running statistics, so each sample's
output depends on that sample alone and per-sample gradients are well defined (in train mode the
batch statistics couple the samples). The model's modes are restored afterwards, parameters'
``requires_grad`` is left alone and nothing is written into ``.grad``.
"""

from __future__ import annotations

import math

import contextlib
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparsegap.checks import positive_int
from sparsegap.pruning import check_masks

# Per-layer scratch tensors (unfolded inputs, per-sample gradient matrices) are processed in
# sub-batches of samples so that none of them exceeds this many elements (~64 MB in float32).
_SCRATCH_ELEMENTS = 1 << 24
# A Linear mask at most this dense (and this large) is multiplied as a sparse CSR matrix: at
# the paper's sparsities (90-97%) that is 2-5x cheaper than the dense product on CPU, while the
# break-even measured on CPU is near 25% density.
_CSR_MAX_DENSITY = 0.15
_CSR_MIN_ELEMENTS = 1 << 14


# ----------------------------------------------------------------------------- validation helpers

@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode, then restore each one's own previous mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training  # not m.train(): that would recurse and overwrite children


def param_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters(), None)
    if p is None:
        raise ValueError("model has no parameters; curvature estimators need at least one")
    return p.device, p.dtype


def _first_bad_row(bad: Tensor) -> int:
    """Index of the first sample (row) that has a True in ``bad``."""
    return int(bad.reshape(len(bad), -1).any(1).nonzero()[0, 0])


def _all_finite(x: Tensor) -> bool:
    """One reduction, no temporary: NaN propagates through min/max and an infinity ends up in one of
    them (10x cheaper than isfinite(x).all(), which mattered for the Fisher trace's speed)."""
    lo, hi = torch.aminmax(x.detach())
    return math.isfinite(float(lo)) and math.isfinite(float(hi))


def check_xy(x: Tensor, y: Tensor | None, *, y_required: bool = True) -> None:
    """What can be checked without the model: x a non-empty tensor of finite values, y (when given)
    one non-negative integer class index per row of x. :func:`check_model_input` does the rest."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"x must hold at least one sample, got shape {tuple(x.shape)}")
    if (x.is_complex() and not bool(torch.isfinite(x).all())) or (x.is_floating_point() and not _all_finite(x)):
        bad = ~torch.isfinite(x)  # counted only on failure: the check runs before every estimate
        raise ValueError(f"x must hold finite values, got {int(bad.sum())} NaN or infinite value(s) "
                             f"(first in row {_first_bad_row(bad)} of x, shape {tuple(x.shape)})")
    if y is None:
        if y_required:
            raise ValueError("y is required here, got None")
        return
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"y must have shape ({len(x)},) to match x, got {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer class indices, got dtype {y.dtype}")
    if int(y.min()) < 0:
        raise ValueError(f"y must hold class indices >= 0, got {int(y.min())} "
                         f"(row {_first_bad_row(y < 0)} of y)")


_INDEX_INPUTS = (nn.Embedding, nn.EmbeddingBag)  # models that take integer x


def _expected_input(model: nn.Module) -> str:
    """What the model's first layer wants, for error messages ('' when it cannot be read off)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            return (f"; its first layer {name!r} is Linear(in_features={m.in_features}), so each sample "
                    f"must hold {m.in_features} values (after flattening)")
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            dims = {1: "L", 2: "H, W", 3: "D, H, W"}[m.weight.ndim - 2]
            return (f"; its first layer {name!r} is {type(m).__name__}(in_channels={m.in_channels}), "
                    f"so x must have shape (N, {m.in_channels}, {dims})")
        if isinstance(m, _INDEX_INPUTS):
            return (f"; its first layer {name!r} is {type(m).__name__}({m.num_embeddings}, ...), so x "
                    f"must hold integer indices in [0, {m.num_embeddings})")
    return ""


def check_model(model: object) -> None:
    """Else ``model=None`` fails as an AttributeError deep inside an estimator."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def check_model_input(model: nn.Module, x: Tensor, y: Tensor | None = None) -> int:
    """Run the model on the first sample of ``x`` and return its number of classes (logit width).

    Call after :func:`check_xy`. A non-floating ``x`` (int64 pixels...) is an error unless the model
    embeds indices; an ``x`` the model cannot take (wrong width or shape) is a ValueError naming x,
    its shape and what the first layer expects, instead of the RuntimeError of a matmul deep inside;
    ``y`` must hold indices below the number of classes.
    """
    check_model(model)
    device, dtype = param_device_dtype(model)
    if not (x.is_floating_point() or any(isinstance(m, _INDEX_INPUTS) for m in model.modules())):
        raise TypeError(f"x must be a floating-point tensor (the model's inputs), got dtype {x.dtype}; "
                        f"convert it, e.g. x.float()")
    first = x[:1].to(device=device, dtype=dtype if x.is_floating_point() else None)
    try:
        with eval_mode(model), torch.no_grad():
            out = model(first)
    except (RuntimeError, IndexError) as err:
        raise ValueError(f"x of shape {tuple(x.shape)} (dtype {x.dtype}) does not fit the model"
                         f"{_expected_input(model)}. The first forward pass failed with: {err}") from err
    if not isinstance(out, Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"the model must return logits of shape (N, classes), got {shape}")
    n_classes = out.shape[1]
    if y is not None and int(y.max()) >= n_classes:
        raise ValueError(f"y must hold class indices in [0, {n_classes}) (the model has {n_classes} outputs), "
                         f"got {int(y.max())} (row {_first_bad_row(y >= n_classes)} of y)")
    return n_classes


def trainable_params(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def measured_masks(model: nn.Module, masks: dict[str, Tensor] | None) -> dict[str, Tensor]:
    """``masks`` checked (:func:`sparsegap.pruning.check_masks` for a measurement) and returned as
    {name: 0/1 mask in the parameter's dtype and device}.

    Masks of frozen parameters are checked but dropped, since frozen parameters never count.
    """
    check_model(model)
    params = dict(model.named_parameters())
    return {name: m.detach().to(device=params[name].device, dtype=params[name].dtype)
            for name, m in check_masks(model, masks, measurement=True).items() if params[name].requires_grad}


def iter_chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


# ----------------------------------------------------------------------------- the engine

@dataclass
class _Layer:
    """A Linear, Conv2d or BatchNorm layer handled in closed form, with its trainable parameter names."""
    module: nn.Module
    weight: str | None
    bias: str | None
    calls: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (input, output) per call
    csr_mask: Tensor | None = None  # the weight's mask in sparse form, when that is cheaper


@dataclass
class _Plan:
    layers: list[_Layer]
    fallback: list[str]  # parameter names for torch.func


_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _fast_path_ok(m: nn.Module) -> bool:
    if type(m) is nn.Linear:  # exact type: a subclass may change what forward() computes
        return True
    if type(m) in _BN_TYPES:  # eval mode with running statistics: a per-channel affine map
        return m.affine and m.running_mean is not None and m.running_var is not None
    return (type(m) is nn.Conv2d and m.groups == 1 and m.padding_mode == "zeros"
            and not isinstance(m.padding, str))


def _plan(model: nn.Module) -> _Plan:
    trainable = trainable_params(model)
    uses: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1
    layers, covered = [], set()
    for prefix, m in model.named_modules():
        own = dict(m.named_parameters(recurse=False))
        if not _fast_path_ok(m) or any(uses[id(p)] > 1 for p in own.values()):
            continue  # tied weights would need the other users' gradients too
        names = {k: f"{prefix}.{k}" if prefix else k for k in ("weight", "bias")}
        w = names["weight"] if names["weight"] in trainable else None
        b = names["bias"] if own.get("bias") is not None and names["bias"] in trainable else None
        if w or b:
            layers.append(_Layer(m, w, b))
            covered.update(n for n in (w, b) if n)
    return _Plan(layers, [n for n in trainable if n not in covered])


def _as_rows(m: nn.Module, inp: Tensor, grad_out: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample input rows A (n, T, k) and output-gradient rows Δ (n, T, out) of one call."""
    n = inp.shape[0]
    if isinstance(m, nn.Linear):
        return inp.reshape(n, -1, inp.shape[-1]), grad_out.reshape(n, -1, grad_out.shape[-1])
    a = F.unfold(inp, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
    return a.transpose(1, 2), grad_out.flatten(2).transpose(1, 2)


def _per_sample_weight_grads(m: nn.Module, inp: Tensor, grad_out: Tensor) -> Tensor:
    """G_i = Σ_t δ_{i,t} a_{i,t}ᵀ for one call, shape (n, out, k)."""
    n = inp.shape[0]
    if isinstance(m, nn.Linear):
        a, d = _as_rows(m, inp, grad_out)
        return torch.bmm(d.transpose(1, 2), a)
    # A convolution with one group per sample yields every sample's weight gradient at once,
    # without materialising the unfolded input (which costs more than the arithmetic on CPU).
    g = torch.nn.grad.conv2d_weight(
        inp.reshape(1, -1, *inp.shape[2:]), (n * m.out_channels, *m.weight.shape[1:]),
        grad_out.reshape(1, -1, *grad_out.shape[2:]), m.stride, m.padding, m.dilation, groups=n)
    return g.reshape(n, m.out_channels, -1)


def _bn_sq_norms(layer: _Layer, calls: list[tuple[Tensor, Tensor]], masks: dict[str, Tensor]) -> Tensor:
    """BatchNorm in eval mode: y = γ x̂ + β per channel, so g_γ = Σ_t δ x̂ and g_β = Σ_t δ."""
    m = layer.module
    scale = (m.running_var + m.eps).rsqrt()
    g_w = g_b = 0
    for inp, d in calls:
        n, c = inp.shape[:2]
        d = d.reshape(n, c, -1)
        if layer.weight is not None:
            x_hat = (inp.reshape(n, c, -1) - m.running_mean[:, None]) * scale[:, None]
            g_w = g_w + (d * x_hat).sum(2)
        g_b = g_b + d.sum(2)
    total = 0
    for name, g in ((layer.weight, g_w), (layer.bias, g_b)):
        if name is not None:
            total = total + (g * masks[name] if name in masks else g).pow(2).sum(1)
    return total


def _layer_sq_norms(layer: _Layer, grads_out: list[Tensor | None], masks: dict[str, Tensor]) -> Tensor:
    """Squared norm of this layer's (masked) per-sample gradients, summed over its parameters."""
    calls = [(inp, g) for (inp, _), g in zip(layer.calls, grads_out) if g is not None]
    m, n = layer.module, layer.calls[0][0].shape[0]
    total = layer.calls[0][0].new_zeros(n)
    if not calls:
        return total
    if isinstance(m, _BN_TYPES):
        return total + _bn_sq_norms(layer, calls, masks)
    out_f, k = m.weight.shape[0], m.weight[0].numel()
    t_len = sum(g[0].numel() // out_f for _, g in calls)  # positions per sample over all calls
    w_mask = masks[layer.weight].reshape(out_f, -1) if layer.weight in masks else None
    direct_cost, gram_cost = t_len * k * out_f, t_len * t_len * (k + out_f)
    use_gram = w_mask is None and gram_cost < direct_cost and t_len > 1
    scratch = (t_len * (k + out_f) + 2 * t_len * t_len if use_gram
               else k + out_f if t_len == 1 else out_f * k)
    step = max(1, _SCRATCH_ELEMENTS // scratch)
    for sl in iter_chunks(n, step):
        if layer.bias is not None:
            db = sum(g[sl].reshape(g[sl].shape[0], -1, out_f).sum(1) if isinstance(m, nn.Linear)
                     else g[sl].flatten(2).sum(2) for _, g in calls)
            total[sl] += (db * masks[layer.bias] if layer.bias in masks else db).pow(2).sum(1)
        if layer.weight is None:
            continue
        if t_len == 1:  # a Linear layer without sharing: ||G_i||² needs no matrix at all
            a2, d2 = calls[0][0][sl].reshape(-1, k).pow(2), calls[0][1][sl].reshape(-1, out_f).pow(2)
            if w_mask is None:
                total[sl] += a2.sum(1) * d2.sum(1)
            elif layer.csr_mask is not None:  # stored as Mᵀ (k, out): only δ² gets transposed
                total[sl] += (torch.sparse.mm(layer.csr_mask, d2.T).T * a2).sum(1)
            else:
                total[sl] += ((d2 @ w_mask) * a2).sum(1)
        elif use_gram:  # few positions, many weights: Σ (A Aᵀ) ⊙ (Δ Δᵀ)
            rows = [_as_rows(m, inp[sl], g[sl]) for inp, g in calls]
            a, d = (torch.cat(r, 1) for r in zip(*rows))
            total[sl] += (torch.bmm(a, a.transpose(1, 2)) * torch.bmm(d, d.transpose(1, 2))).sum((1, 2))
        else:
            gw = sum(_per_sample_weight_grads(m, inp[sl], d[sl]) for inp, d in calls)
            total[sl] += (gw * w_mask if w_mask is not None else gw).pow(2).sum((1, 2))
    return total


def _fallback_sq_norms(model: nn.Module, names: list[str], x: Tensor, labels: Tensor,
                       masks: dict[str, Tensor]) -> Tensor:
    """torch.func per-sample gradients for the parameters the closed forms do not cover."""
    from torch.func import functional_call, grad, vmap

    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    state = {k: v.detach() for k, v in state.items()}
    diff = {k: state.pop(k) for k in names}

    def loss_one(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        out = functional_call(model, {**state, **p}, (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(diff, x, labels)
    total = x.new_zeros(len(x), dtype=next(iter(diff.values())).dtype)
    for k, g in grads.items():
        if k in masks:
            g = g * masks[k]
        total += g.flatten(1).pow(2).sum(1)
    return total


def forward_capturing(model: nn.Module, plan: _Plan, x: Tensor) -> Tensor:
    """The logits of ``x``, with grad enabled, each planned layer's (input, output) pairs appended to
    its ``calls`` (the closed forms read them after one backward pass)."""
    def capture(layer: _Layer):
        def hook(_m, inputs, output):
            layer.calls.append((inputs[0].detach(), output))
            # A clone keeps the captured output intact if the next op works in place (ReLU(inplace)).
            return output.clone()
        return hook

    handles = [layer.module.register_forward_hook(capture(layer)) for layer in plan.layers]
    try:
        with torch.enable_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return logits


def sq_grad_norms_chunk(model: nn.Module, plan: _Plan, x: Tensor,
                        make_labels: Callable[[Tensor], Tensor],
                        masks: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Squared per-sample gradient norms of -log p(label | x) for K label sets on one chunk.

    ``make_labels(logits) -> (K, n)`` picks the labels from the (detached) logits, so that
    Monte-Carlo labels and all-class sums need a single forward pass. Returns ``(sq (K, n),
    logits (n, C))``. The model must already be in eval mode.
    """
    logits = forward_capturing(model, plan, x)
    try:
        if logits.ndim != 2:
            raise ValueError(f"the model must return logits of shape (N, classes), got {tuple(logits.shape)}")
        labels = make_labels(logits.detach())
        sq = logits.new_zeros(labels.shape, dtype=torch.float64)
        outputs = [out for layer in plan.layers for _, out in layer.calls]
        logp = F.log_softmax(logits, dim=1)
        for k_idx, lab in enumerate(labels):
            if plan.layers and logp.requires_grad:
                loss = -logp.gather(1, lab[:, None]).sum()  # sum: each sample's δ is its own gradient
                grads = torch.autograd.grad(loss, outputs, retain_graph=k_idx < len(labels) - 1,
                                            allow_unused=True)
                pos = 0
                for layer in plan.layers:
                    sq[k_idx] += _layer_sq_norms(layer, list(grads[pos: pos + len(layer.calls)]), masks)
                    pos += len(layer.calls)
            if plan.fallback:
                sq[k_idx] += _fallback_sq_norms(model, plan.fallback, x, lab, masks)
    finally:
        for layer in plan.layers:
            layer.calls.clear()
    return sq, logits.detach()


# Sparse copies of masks, keyed by the caller's mask tensor: a training callback measures with
# the same masks again and again, and building the CSR matrix costs as much as using it.
# Tensors compare elementwise, so the key is id() and a weak reference confirms the identity.
_CSR_CACHE: dict[int, tuple[weakref.ref, tuple, Tensor]] = {}


def _csr_transposed(original: Tensor, mask: Tensor) -> Tensor:
    """Mᵀ as a sparse CSR matrix (``mask`` is ``original`` converted to the parameter's dtype)."""
    key = (original._version, mask.dtype, mask.device)
    hit = _CSR_CACHE.get(id(original))
    if hit is not None and hit[0]() is original and hit[1] == key:
        return hit[2]
    for k in [k for k, (ref, _, _) in _CSR_CACHE.items() if ref() is None]:
        del _CSR_CACHE[k]
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        csr = mask.T.to_sparse_csr()
    _CSR_CACHE[id(original)] = (weakref.ref(original), key, csr)
    return csr


def run_chunks(model: nn.Module, x: Tensor, make_labels: Callable[[Tensor, slice], Tensor],
               masks: dict[str, Tensor] | None, chunk_size: int
               ) -> Iterator[tuple[slice, Tensor, Tensor]]:
    """Yield ``(slice, sq (K, n), logits)`` chunk by chunk, with validation and eval mode."""
    positive_int(None, "chunk_size", chunk_size)
    masks_t = measured_masks(model, masks)
    device, dtype = param_device_dtype(model)
    plan = _plan(model)
    for layer in plan.layers:
        m = masks_t.get(layer.weight)
        if (isinstance(layer.module, nn.Linear) and m is not None and m.numel() >= _CSR_MIN_ELEMENTS
                and float(m.mean()) <= _CSR_MAX_DENSITY):
            layer.csr_mask = _csr_transposed(masks[layer.weight], m)
    with eval_mode(model):
        for sl in iter_chunks(len(x), chunk_size):
            xc = x[sl].to(device=device, dtype=dtype if x.is_floating_point() else None)
            sq, logits = sq_grad_norms_chunk(model, plan, xc, lambda lg: make_labels(lg, sl), masks_t)
            yield sl, sq, logits


def per_sample_grad_norms_sq(model: nn.Module, x: Tensor, y: Tensor, *,
                             masks: dict[str, Tensor] | None = None, chunk_size: int = 256) -> Tensor:
    """``||∇θ ℓ(x_i, y_i)||²`` for every sample, with ℓ = -log p(y_i | x_i) (cross-entropy).

    θ is every trainable parameter, restricted to the unpruned coordinates of masked ones (see
    the module docstring). Evaluated in eval mode, ``chunk_size`` samples per backward pass.
    Returns a float64 CPU tensor of shape (N,).
    """
    check_xy(x, y)
    check_model_input(model, x, y)
    out = torch.empty(len(x), dtype=torch.float64)
    for sl, sq, _ in run_chunks(model, x, lambda lg, sl: y[sl].to(lg.device)[None], masks, chunk_size):
        out[sl] = sq[0].cpu()
    return out
