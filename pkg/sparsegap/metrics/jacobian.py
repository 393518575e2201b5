"""Jacobian norm: E_x ||∂f(x)/∂x||_F², f the logits (the paper's sensitivity measure, Table 2)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sparsegap.checks import positive_int
from sparsegap.metrics.persample import check_model_input, check_xy, eval_mode, iter_chunks, param_device_dtype


def jacobian_norm(model: nn.Module, x: Tensor, *, chunk_size: int = 256) -> float:
    """Mean over the rows of ``x`` of the squared Frobenius norm of the input-logit Jacobian.

    One backward pass per class on the chunk's summed logits: in eval mode samples do not
    interact, so ∂(Σ_i f_c(x_i))/∂x_i = ∂f_c(x_i)/∂x_i and a chunk costs C input-gradient passes.
    """
    check_xy(x, None, y_required=False)
    positive_int(None, "chunk_size", chunk_size)
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (the Jacobian is taken with respect to it), "
                        f"got dtype {x.dtype}")
    check_model_input(model, x)
    device, dtype = param_device_dtype(model)
    total = 0.0
    with eval_mode(model), torch.enable_grad():
        for sl in iter_chunks(len(x), chunk_size):
            xc = x[sl].to(device=device, dtype=dtype).requires_grad_(True)
            out = model(xc)
            if out.ndim != 2:
                raise ValueError("the model must return logits of shape (N, classes), "
                                 f"got {tuple(out.shape)}")
            n_cls = out.shape[1]
            for c in range(n_cls):
                (g,) = torch.autograd.grad(out[:, c].sum(), xc, retain_graph=c + 1 < n_cls)
                total += float(g.double().pow(2).sum())
    return total / len(x)
