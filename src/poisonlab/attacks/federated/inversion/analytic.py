"""Analytic recovery of the input to a fully-connected layer from its weight and bias gradients."""

from __future__ import annotations

import torch
from torch import nn

from poisonlab.attacks.federated.inversion.base import GradientInversion, labels_for
from poisonlab.attacks.federated.inversion.messages import ClientUpdate, ServerPayload
from poisonlab.attacks.federated.inversion.reconstruction import Reconstruction
from poisonlab.errors import ConfigError, PoisonlabError
from poisonlab.models.layers import Normalize


def analytic_fc_inversion(grad_weight: torch.Tensor, grad_bias: torch.Tensor, tol: float = 1e-6) -> torch.Tensor:
    """The input ``u`` of ``z = W u + b`` from ``dL/dW`` (K, D) and ``dL/db`` (K,).

    ``dL/dW_i = dL/db_i * u^T`` for every output row i (Geiping et al. 2020, Prop. in Sec. 3; Phong et al. 2018),
    so ``u = dL/dW_i / dL/db_i`` for any row with ``dL/db_i != 0``. All rows with ``|dL/db_i| > tol * max |dL/db|``
    are combined by least squares, ``u = sum_i b_i W_i / sum_i b_i^2`` (float64), which is exact for a single
    sample and the most stable choice numerically. For a batch the result is a mixture of the batch's inputs.

    Raises:
        PoisonlabError: every bias gradient is zero (nothing to divide by).
    """
    if grad_weight.dim() != 2 or grad_bias.shape != (grad_weight.shape[0],):
        raise ConfigError(
            f"analytic: expected (K, D) and (K,) gradients, got {tuple(grad_weight.shape)} and {tuple(grad_bias.shape)}"
        )
    gw, gb = grad_weight.double(), grad_bias.double()
    scale = gb.abs().max()
    if not bool(scale > 0):
        raise PoisonlabError("analytic: all bias gradients are zero; the layer input cannot be recovered")
    rows = gb.abs() > tol * scale
    b = gb[rows]
    return (b @ gw[rows]) / b.pow(2).sum()


class AnalyticFCInversion(GradientInversion):
    """Exact input recovery for a network whose first trainable layer is a biased fully-connected layer
    (Geiping, Bauermeister, Droege & Moeller, "Inverting Gradients", NeurIPS 2020, Sec. 3; Algorithm B of the
    spec). Works with a gradient update; the input normalisation of the first layer is undone.

    Threat model: honest-but-curious server; knows the architecture and parameters it sent and receives one
    client's gradient, never its data.

    Args:
        tol: relative threshold on ``|dL/db_i|`` for a row to be used.
        label_strategy: label rule for the reported label (see :func:`recover_labels`).
    """

    def __init__(self, tol: float = 1e-6, label_strategy: str = "auto") -> None:
        self.tol = tol
        self.label_strategy = label_strategy

    def reconstruct(self, payload: ServerPayload, update: ClientUpdate) -> Reconstruction:
        update.check_against(payload)
        if update.kind != "gradient":
            raise ConfigError("analytic: needs a gradient update (local_steps 0), got a FedAvg delta")
        w_name, b_name = _first_linear(payload.model)
        u = analytic_fc_inversion(update.tensors[w_name], update.tensors[b_name], self.tol)
        mean, std = payload.normalisation()
        c, h, w = payload.data_shape
        if u.numel() != c * h * w:
            raise ConfigError(f"analytic: the first linear layer takes {u.numel()} inputs, the image has {c * h * w}")
        x = u.reshape(1, c, h, w) * std.double() + mean.double()
        images = x.clamp(0, 1).float()
        labels, source = labels_for(payload, update, self.label_strategy)  # type: ignore[arg-type]
        meta = {"attack": "analytic-fc", "layer": w_name, "tol": self.tol, "batch": update.num_images}
        return Reconstruction(images, labels[:1], source, 0.0, torch.zeros(1), meta)


def _first_linear(model: nn.Module) -> tuple[str, str]:
    """Parameter names (weight, bias) of the first trainable layer, which must be a biased nn.Linear whose
    input is the image itself (only Normalize / Flatten / Identity leaves before it)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.bias is not None:
            prefix = f"{name}." if name else ""
            return f"{prefix}weight", f"{prefix}bias"
        is_leaf = not list(m.children())
        if list(m.parameters(recurse=False)) or (is_leaf and not isinstance(m, (Normalize, nn.Flatten, nn.Identity))):
            break
    raise ConfigError(
        "model: analytic inversion needs a network whose first layer is a biased fully-connected layer "
        "on the image (e.g. --model mlp)"
    )
