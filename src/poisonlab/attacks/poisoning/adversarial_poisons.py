"""The objective of adversarial poisons (Fowl, Goldblum, Chiang, Geiping, Czaja, Goldstein, "Adversarial Examples
Make Strong Poisons", NeurIPS 2021, arXiv 2106.10807; code ``lhfowl/adversarial_poisons``).

Threat model: as for secure dataset release (ALGORITHMS.md section 4): the owner perturbs every released image
within l-inf eps and keeps its true label; the competitor trains any architecture from scratch on the release.

A release made of adversarial examples of a trained surrogate is a strong availability poison: a model trained
on it learns the (partly non-robust) features the perturbation adds. The class-targeted variant pushes every
image towards the permuted label ``(y + 1) mod C`` (the reference's ``_label_map``), so the features of class
``y + 1`` are paired with the label ``y`` and a victim learns a consistently wrong mapping; the untargeted
variant maximises the cross-entropy at the true label.

The reference maps ``y -> (y + 1) mod C`` and says any permutation will do. ``nearest_derangement`` offers a
second: each class goes to the class the surrogates find easiest to reach from it (the permutation without fixed
points that maximises the ensemble's mean log-probability of the new class on the clean images), so the added
features are those of a neighbouring class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from poisonlab.attacks.poisoning.gradient_matching import perturbed_minibatches

AdversarialMethod = Literal["adversarial-targeted", "adversarial-untargeted"]


def permuted_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The reference's label permutation for class-targeted poisons: ``(y + 1) mod C``."""
    return (y + 1) % num_classes


def shift_map(num_classes: int) -> torch.Tensor:
    """The reference's permutation as a lookup table: entry ``c`` is ``(c + 1) mod C``."""
    return permuted_labels(torch.arange(num_classes), num_classes)


@torch.no_grad()
def class_affinity(
    surrogates: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor, num_classes: int, batch: int = 512
) -> torch.Tensor:
    """``A[i, j]``: mean over the clean images of class ``i`` of the ensemble's mean log-probability of class ``j``
    (classes absent from ``y`` get a row of zeros)."""
    total = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=x.device)
    for lo in range(0, x.shape[0], batch):
        logp = sum(torch.log_softmax(m(x[lo : lo + batch]).double(), dim=1) for m in surrogates) / len(surrogates)
        total.index_add_(0, y[lo : lo + batch], logp)
    counts = torch.bincount(y, minlength=num_classes).clamp(min=1).double()
    return (total / counts[:, None]).cpu()


def nearest_derangement(affinity: torch.Tensor) -> torch.Tensor:
    """The permutation ``pi`` without fixed points that maximises ``sum_i affinity[i, pi(i)]`` (an assignment
    problem with the diagonal forbidden, solved exactly). Returns the lookup table ``pi`` as a long tensor."""
    c = affinity.shape[0]
    if c < 2:
        raise ValueError("a label permutation without fixed points needs at least 2 classes")
    cost = -affinity.double().numpy().copy()
    cost[np.diag_indices(c)] = np.inf
    rows, cols = linear_sum_assignment(cost)
    table = torch.empty(c, dtype=torch.long)
    table[torch.from_numpy(rows)] = torch.from_numpy(cols).long()
    return table


def adversarial_poison_loss(
    logits: torch.Tensor, y: torch.Tensor, method: AdversarialMethod, label_map: torch.Tensor | None = None
) -> torch.Tensor:
    """The loss the perturbation descends: CE towards the permuted label ``label_map[y]`` (targeted; default the
    reference's shift), or -CE at the true label (untargeted). Mean over the batch."""
    if method == "adversarial-targeted":
        new = permuted_labels(y, logits.shape[1]) if label_map is None else label_map.to(y.device)[y]
        return nn.functional.cross_entropy(logits, new)
    return -nn.functional.cross_entropy(logits, y)


def adversarial_objective(
    delta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    surrogates: Sequence[nn.Module],
    method: AdversarialMethod,
    pbatch: int,
    augment: nn.Module | None = None,
    generator: torch.Generator | None = None,
    label_map: torch.Tensor | None = None,
) -> tuple[float, torch.Tensor]:
    """Loss of ``x + delta`` (mean over minibatches of ``pbatch`` and over surrogates) and its gradient in
    ``delta``: one batched backward per minibatch and surrogate, each minibatch augmented once and shared by the
    ensemble (as :func:`~poisonlab.attacks.poisoning.gradient_matching.alignment`)."""
    grad = torch.zeros_like(delta)
    losses = []
    n_models = len(surrogates)
    for sl, d, inputs in perturbed_minibatches(delta, x, pbatch, augment, generator):
        loss = sum(adversarial_poison_loss(m(inputs), y[sl], method, label_map) for m in surrogates) / n_models
        (g,) = torch.autograd.grad(loss, d)
        grad[sl] += g
        losses.append(float(loss.item()))
    return sum(losses) / len(losses), grad
