"""The objective of adversarial poisons (Fowl, Goldblum, Chiang, Geiping, Czaja, Goldstein, "Adversarial Examples
Make Strong Poisons", NeurIPS 2021, arXiv 2106.10807; code ``lhfowl/adversarial_poisons``).

Threat model: as for secure dataset release (ALGORITHMS.md section 4): the owner perturbs every released image
within l-inf eps and keeps its true label; the competitor trains any architecture from scratch on the release.

A release made of adversarial examples of a trained surrogate is a strong availability poison: a model trained
on it learns the (partly non-robust) features the perturbation adds. The class-targeted variant pushes every
image towards the permuted label ``(y + 1) mod C`` (the reference's ``_label_map``), so the features of class
``y + 1`` are paired with the label ``y`` and a victim learns a consistently wrong mapping; the untargeted
variant maximises the cross-entropy at the true label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from poisonlab.attacks.poisoning.gradient_matching import perturbed_minibatches

AdversarialMethod = Literal["adversarial-targeted", "adversarial-untargeted"]


def permuted_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The reference's label permutation for class-targeted poisons: ``(y + 1) mod C``."""
    return (y + 1) % num_classes


def adversarial_poison_loss(logits: torch.Tensor, y: torch.Tensor, method: AdversarialMethod) -> torch.Tensor:
    """The loss the perturbation descends: CE towards the permuted label (targeted), or -CE at the true label
    (untargeted). Mean over the batch."""
    if method == "adversarial-targeted":
        return nn.functional.cross_entropy(logits, permuted_labels(y, logits.shape[1]))
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
) -> tuple[float, torch.Tensor]:
    """Loss of ``x + delta`` (mean over minibatches of ``pbatch`` and over surrogates) and its gradient in
    ``delta``: one batched backward per minibatch and surrogate, each minibatch augmented once and shared by the
    ensemble (as :func:`~poisonlab.attacks.poisoning.gradient_matching.alignment`)."""
    grad = torch.zeros_like(delta)
    losses = []
    n_models = len(surrogates)
    for sl, d, inputs in perturbed_minibatches(delta, x, pbatch, augment, generator):
        loss = sum(adversarial_poison_loss(m(inputs), y[sl], method) for m in surrogates) / n_models
        (g,) = torch.autograd.grad(loss, d)
        grad[sl] += g
        losses.append(float(loss.item()))
    return sum(losses) / len(losses), grad
