"""Attribute inference with Truth Serum poisoning (Tramèr et al., CCS 2022, arXiv 2204.00032, Algorithm B).

The attacker knows a target record except one categorical (sensitive) attribute, and the record's label. It
queries the trained model on every completion of the record (one per attribute value) and picks the value
whose completion the model fits best, either raw (the model's logit-scaled confidence in the known label,
the "confidence" attack of Yeom et al. / Mehnaz et al.) or calibrated against reference models trained
without the target (LiRA-offline style, Carlini et al. S&P 2022: ``(phi - mu_out) / sigma_out``).

Truth Serum poisoning adds, before training, ``replicas_per_candidate`` copies of every completion with a
label of the attacker's choosing. With ``wrong_label`` the model learns to predict a wrong label on all
completions, except the true one, which is in the training set with its true label: the true completion
becomes an outlier whose confidence stands out. ``true_label`` copies are the ablation the paper's
construction is contrasted with (left configurable by the spec, since its exact choice was not recovered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from poisonlab.config import Frozen
from poisonlab.data.tabular import CategoricalColumn, complete_records

PoisonLabelStrategy = Literal["wrong_label", "true_label"]


class AttributeInferenceConfig(Frozen):
    """The attacker's settings.

    Threat model: the attacker adds ``targets * m * replicas_per_candidate`` records (m = attribute values) to
    the victim's training set, knows each target's other features and label, trains ``reference_models``
    models on same-distribution data plus its poisons, then gets black-box logits on chosen inputs.
    """

    attribute: str = Field("religious", description="the sensitive categorical attribute inferred")
    targets: int = Field(20, ge=1, le=10_000, description="target records (victim members) per trial")
    replicas_per_candidate: int = Field(4, ge=0, le=1000, description="poisoned copies per completion; 0 = clean")
    poison_label_strategy: PoisonLabelStrategy = "wrong_label"
    reference_models: int = Field(4, ge=0, le=256, description="models trained without the targets (calibration)")
    member_fraction: float = Field(0.5, gt=0, lt=1, description="share of the pool each model trains on")
    fixed_variance: bool = Field(True, description="one global sigma_out (LiRA with few reference models)")


@dataclass(frozen=True)
class AttributePoisons:
    """Poisoned completions: ``features`` (P, 1, 1, F), ``labels`` (P,), and for each the target index and
    attribute value it completes."""

    features: torch.Tensor
    labels: torch.Tensor
    target_index: torch.Tensor
    value_index: torch.Tensor


def poison_labels(
    labels: torch.Tensor, num_classes: int, strategy: PoisonLabelStrategy, generator: torch.Generator
) -> torch.Tensor:
    """The label given to each target's poisons: its true label, or one fixed random wrong class per target."""
    if strategy == "true_label":
        return labels.clone()
    if num_classes < 2:
        raise ValueError("poison_label_strategy: wrong_label needs at least two classes")
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + shift.to(labels.device)) % num_classes


def truth_serum_attribute_poisons(
    features: torch.Tensor,
    labels: torch.Tensor,
    column: CategoricalColumn,
    replicas: int,
    strategy: PoisonLabelStrategy,
    num_classes: int,
    generator: torch.Generator,
) -> AttributePoisons:
    """Truth Serum poisons for attribute inference (Tramèr et al., CCS 2022): ``replicas`` copies of every
    completion of every target.

    Threat model: the attacker adds ``T * m * replicas`` records; it knows each target's features except the
    sensitive attribute, and its label; it never sees or changes anyone else's data.

    Args:
        features: the targets' records (T, 1, 1, F); their attribute columns are ignored (the attacker
            does not know them).
        labels: the targets' labels (T,), known to the attacker.
        column: the sensitive attribute.
        replicas: copies per completion (0 gives no poisons).
        strategy: "wrong_label" (a fixed random wrong class per target) or "true_label".
        num_classes: number of classes of the task.
        generator: draws the wrong labels.

    Returns:
        ``T * m * replicas`` poisons, grouped by target, then value, then replica.
    """
    t, m = features.shape[0], len(column.values)
    completions = complete_records(features, column)  # (T, m, 1, 1, F)
    plabel = poison_labels(labels, num_classes, strategy, generator)
    grid_t = torch.arange(t).repeat_interleave(m * replicas)
    grid_v = torch.arange(m).repeat_interleave(replicas).repeat(t)
    return AttributePoisons(
        features=completions[grid_t, grid_v].contiguous(),
        labels=plabel[grid_t],
        target_index=grid_t,
        value_index=grid_v,
    )


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LiRA's logit-scaled confidence ``log p_y - log(1 - p_y)``, computed stably from logits (..., C)."""
    z_y = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, labels.unsqueeze(-1), float("-inf"))
    return z_y - torch.logsumexp(others, dim=-1)


@torch.no_grad()
def completion_confidences(
    model: nn.Module, features: torch.Tensor, labels: torch.Tensor, column: CategoricalColumn
) -> torch.Tensor:
    """Black-box query: the model's logit-scaled confidence in each target's label on each completion, (T, m).

    Threat model: logits of the trained model on attacker-chosen inputs; the target's label is known.
    """
    was_training = model.training
    model.eval()
    try:
        completions = complete_records(features, column)
        t, m = completions.shape[:2]
        logits = model(completions.reshape(t * m, *features.shape[1:])).reshape(t, m, -1)
        return logit_confidence(logits.double(), labels.unsqueeze(1).expand(t, m))
    finally:
        model.train(was_training)


def calibrated_scores(victim: torch.Tensor, reference: torch.Tensor, fixed_variance: bool = True) -> torch.Tensor:
    """LiRA-offline scores ``(phi_victim - mu_out) / sigma_out`` per target and completion.

    Args:
        victim: (T, m) confidences on the victim.
        reference: (K, T, m) confidences on K reference models trained without the targets (K >= 1; with
            K = 1 or ``fixed_variance`` one global sigma is used).
        fixed_variance: share one sigma over all targets and completions.
    """
    if reference.dim() != 3 or reference.shape[1:] != victim.shape or reference.shape[0] < 1:
        raise ValueError(f"reference: expected shape (K>=1, {tuple(victim.shape)}), got {tuple(reference.shape)}")
    mu = reference.mean(0)
    if fixed_variance or reference.shape[0] < 2:
        sigma = (reference - mu).pow(2).mean().sqrt() if reference.shape[0] > 1 else torch.ones((), dtype=mu.dtype)
    else:
        sigma = reference.std(0, unbiased=True)
    return (victim - mu) / sigma.clamp_min(1e-8)


def infer_attribute(scores: torch.Tensor) -> torch.Tensor:
    """The inferred value per target: the completion with the highest score, (T, m) -> (T,)."""
    return scores.argmax(1)


def attribute_results(scores: torch.Tensor, truth: torch.Tensor) -> dict[str, object]:
    """Accuracy, the rank of the true value per target, and the (target, completion) pairs as membership
    questions (score, is-true-completion) for ROC-style metrics."""
    t, m = scores.shape
    pred = infer_attribute(scores)
    true_score = scores.gather(1, truth.unsqueeze(1))
    rank = 1 + (scores > true_score).sum(1)
    is_true = torch.zeros(t, m, dtype=torch.bool)
    is_true[torch.arange(t), truth.cpu()] = True
    return {
        "correct": int((pred.cpu() == truth.cpu()).sum()),
        "n": t,
        "accuracy": float((pred.cpu() == truth.cpu()).double().mean()),
        "mean_rank": float(rank.double().mean()),
        "pair_scores": scores.reshape(-1).tolist(),
        "pair_labels": is_true.reshape(-1).int().tolist(),
    }
