"""The client's local computation as pure functions of (parameters, images, labels), for torch.func.

The honest client and the attacker call the same functions: the client to produce its update, the attacker
to simulate it on candidate images and differentiate through it (``torch.func.grad`` nested inside
``grad``/``vmap``), exactly as the references' ``loss_steps`` / ``_grad_fn_multi_step`` unroll.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

Params = dict[str, torch.Tensor]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; float ``labels`` of shape (B, K) are logits of soft labels (DLG's joint label
    optimisation: ``-sum softmax(labels) * log_softmax(logits)``)."""
    if labels.is_floating_point():
        return torch.mean(torch.sum(-labels.softmax(-1) * logits.log_softmax(-1), dim=-1))
    return F.cross_entropy(logits, labels)


def batch_loss(model: nn.Module, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``model`` with ``params``/``buffers`` on the batch ``(x, y)``."""
    return cross_entropy(functional_call(model, (params, buffers), (x,)), y)


def parameter_gradient(model: nn.Module, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor) -> Params:
    """``d loss / d params`` as a differentiable function of ``x`` (FedSGD's shared gradient)."""
    return grad(lambda p: batch_loss(model, p, buffers, x, y))(params)


def local_delta(
    model: nn.Module,
    params: Params,
    buffers: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    lr: float,
    per_step: int | None = None,
) -> Params:
    """``theta_after - theta_before`` after ``steps`` plain SGD steps at ``lr`` (FedAvg's shared update).

    Step ``i`` uses images ``[s, s + per_step)`` of the batch (fewer at its end), then ``s`` advances by
    ``per_step`` modulo the batch size (breaching's ``data_per_step``); ``per_step=None`` uses the whole
    batch at every step (inverting-gradients' ``loss_steps``). Differentiable in ``x`` under ``torch.func``.
    """
    n = x.shape[0]
    per_step = n if per_step is None else per_step
    current = dict(params)
    start = 0
    for _ in range(steps):
        xs, ys = x[start : start + per_step], y[start : start + per_step]
        start = (start + per_step) % n
        g = grad(lambda p, xs=xs, ys=ys: batch_loss(model, p, buffers, xs, ys))(current)
        current = {k: v - lr * g[k] for k, v in current.items()}
    return {k: current[k] - params[k] for k in params}
