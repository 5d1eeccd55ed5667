"""Label recovery from the last (classification) layer of a shared gradient.

With a mean cross-entropy loss, ``dL/dz_k = (p_k - y_k) / B`` summed over the batch: only the classes present
can have a negative logit gradient. The bias gradient is exactly that sum; the weight gradient's rows are it
times the (non-negative, after a ReLU) features.
"""

from __future__ import annotations

from typing import Literal

import torch

from poisonlab.errors import ConfigError

LabelStrategy = Literal["auto", "idlg", "bias-sign", "weight-min"]


def recover_labels(
    last_weight_grad: torch.Tensor,
    last_bias_grad: torch.Tensor | None,
    num_images: int,
    strategy: LabelStrategy = "auto",
) -> tuple[torch.Tensor, str]:
    """Labels of the client's batch, sorted (a batch's order is not recoverable), and the rule used.

    Rules (``JonasGeiping/breaching`` ``_recover_label_information``):

    - ``idlg`` (Zhao, Mopuri & Bilen 2020, iDLG; single image): ``argmin_k sum_j dL/dW_kj``, the one class
      whose row of the last weight gradient is negative. Exact for one image with non-negative features.
    - ``bias-sign`` (breaching's bias-corrected analytic rule, after Wainakh et al.): every class with a
      negative bias gradient is present; the remaining ``B - #present`` labels are filled greedily by the
      most negative bias entry after subtracting the mean impact per image each time it is chosen.
    - ``weight-min`` (Yin et al. 2021, GradInversion): the ``B`` classes whose last-weight-gradient rows have
      the most negative minimum (assumes mostly distinct labels).
    - ``auto``: ``idlg`` for one image, ``bias-sign`` when the last layer has a bias, else ``weight-min``.

    Args:
        last_weight_grad: (K, D) gradient (or ``-delta``) of the classification weight.
        last_bias_grad: (K,) gradient of its bias, or None.
        num_images: batch size B.
        strategy: one of the rules above.
    """
    if last_weight_grad.dim() != 2:
        raise ConfigError(f"labels: the last weight gradient must be 2-d, got shape {tuple(last_weight_grad.shape)}")
    if strategy == "auto":
        strategy = "idlg" if num_images == 1 else ("bias-sign" if last_bias_grad is not None else "weight-min")
    w = last_weight_grad.detach().double()
    if strategy == "idlg":
        if num_images != 1:
            raise ConfigError(f"labels: the iDLG rule recovers one label, the batch has {num_images}")
        labels = w.sum(dim=-1).argmin().reshape(1)
    elif strategy == "weight-min":
        if num_images > w.shape[0]:
            raise ConfigError(f"labels: weight-min picks distinct classes, cannot pick {num_images} of {w.shape[0]}")
        labels = w.min(dim=-1).values.argsort()[:num_images]
    elif strategy == "bias-sign":
        if last_bias_grad is None:
            raise ConfigError("labels: the bias-sign rule needs a bias in the last layer")
        labels = _bias_sign(last_bias_grad.detach().double().clone(), num_images)
    else:
        raise ConfigError(f"labels: unknown strategy {strategy!r}; expected auto, idlg, bias-sign or weight-min")
    return labels.sort().values.long(), strategy


def _bias_sign(bias: torch.Tensor, num_images: int) -> torch.Tensor:
    present = (bias < 0).nonzero().flatten()
    if len(present) > num_images:  # numerical noise: keep the most negative
        present = bias.topk(num_images, largest=False).indices
    chosen = [int(c) for c in present]
    if not chosen:
        chosen = [int(bias.argmin())]
    impact = bias[present].sum() / num_images if len(present) else bias.min() / num_images
    bias[present] -= impact
    while len(chosen) < num_images:
        k = int(bias.argmin())
        chosen.append(k)
        bias[k] -= impact
    return torch.tensor(chosen[:num_images], device=bias.device)


def last_layer(update: dict[str, torch.Tensor], num_classes: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (weight, bias) entries of the classification layer: the last 2-d tensor with ``num_classes`` rows
    and, right after it, a bias of ``num_classes`` entries if there is one."""
    items = list(update.items())
    for i in range(len(items) - 1, -1, -1):
        _, t = items[i]
        if t.dim() == 2 and t.shape[0] == num_classes:
            nxt = items[i + 1][1] if i + 1 < len(items) else None
            bias = nxt if nxt is not None and nxt.shape == (num_classes,) else None
            return t, bias
    raise ConfigError(f"labels: no {num_classes}-row linear layer found in the update")
