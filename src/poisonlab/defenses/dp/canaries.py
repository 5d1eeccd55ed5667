"""Audit canaries: strong-signal examples the auditor inserts at random, and their membership scores.

Mislabeled canaries (a held-out image with a wrong label) and out-of-distribution canaries (uniform noise with
a random label) are the input-space canaries of the auditing literature (Jagielski et al. 2020; Nasr et al.
2021; Steinke et al. 2023): a model fits them only by memorising them, so their loss tells members apart.

Threat model: the auditor controls which canaries exist and flips a fair coin per canary for inclusion; the
trainer's randomness (init, batches, DP noise) is independent of those coins.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.data.poisoned import PoisonedDataset
from poisonlab.errors import ConfigError

__all__ = ["Canaries", "canary_scores", "insert_canaries", "make_canaries"]


@dataclass(frozen=True)
class Canaries:
    """m canary images, their (canary) labels and the secret inclusion coins."""

    images: torch.Tensor
    labels: torch.Tensor
    included: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def make_canaries(source: Dataset, m: int, kind: str, generator: torch.Generator) -> Canaries:
    """Draw m canaries and flip a fair coin for each (all randomness from ``generator``, in this order:
    canary choice, labels, coins).

    Args:
        source: images that are not in the training set (e.g. the test split) for ``kind="mislabeled"``; for
            ``kind="noise"`` only its shape and classes are used.
        m: number of canaries.
        kind: "mislabeled" (m distinct source images, each labelled with a uniformly drawn *other* class) or
            "noise" (uniform [0, 1] images with uniformly drawn labels).

    Raises:
        ConfigError: m < 2, more mislabeled canaries than source images, or an unknown kind.
    """
    if not (isinstance(m, int) and m >= 2):
        raise ConfigError(f"audit.canaries: expected an integer >= 2, got {m!r}")
    k = source.num_classes
    if kind == "mislabeled":
        if m > len(source):
            raise ConfigError(f"audit.canaries: {m} mislabeled canaries need {m} held-out images, have {len(source)}")
        pick = torch.randperm(len(source), generator=generator)[:m]
        images = source.images[pick.to(source.device)].cpu().clone()
        shift = torch.randint(1, k, (m,), generator=generator)
        labels = (source.labels[pick.to(source.device)].cpu() + shift) % k
    elif kind == "noise":
        images = torch.rand((m, *source.shape), generator=generator)
        labels = torch.randint(0, k, (m,), generator=generator)
    else:
        raise ConfigError(f"audit.canary_kind: expected 'mislabeled' or 'noise', got {kind!r}")
    included = torch.rand(m, generator=generator) < 0.5
    return Canaries(images, labels, included)


def insert_canaries(base: Dataset, canaries: Canaries) -> PoisonedDataset:
    """The training set: ``base`` plus the included canaries appended (fresh ids; the base is not mutated)."""
    keep = canaries.included
    return PoisonedDataset(
        base, extra_images=canaries.images[keep].to(base.device), extra_labels=canaries.labels[keep].to(base.device)
    )


@torch.no_grad()
def canary_scores(model: nn.Module, canaries: Canaries, batch_size: int = 1000) -> torch.Tensor:
    """Per-canary membership score: minus the cross-entropy of the canary label (higher = more likely a member).

    Evaluated in eval mode (restored after), in batches; returns a float32 CPU tensor (m,).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = []
        for i in range(0, len(canaries), batch_size):
            logits = model(canaries.images[i : i + batch_size].to(device)).float()
            y = canaries.labels[i : i + batch_size].to(device)
            out.append(-nn.functional.cross_entropy(logits, y, reduction="none").cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)
