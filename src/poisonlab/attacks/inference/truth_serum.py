"""Truth Serum: poisoning the training set to amplify membership leakage about other parties' points.

Paper: Tramèr, Shokri, San Joaquin, Le, Jagielski, Hong, Carlini, "Truth Serum: Poisoning Machine Learning
Models to Reveal Their Secrets", CCS 2022 (arXiv 2204.00032); reference code
``tensorflow/privacy:research/mi_poison_2022/train_poison.py``.

Both constructions only ADD samples (through :class:`~poisonlab.data.poisoned.PoisonedDataset`); the base
data is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from poisonlab.data.dataset import Dataset
from poisonlab.data.poisoned import PoisonedDataset
from poisonlab.errors import ConfigError


@dataclass(frozen=True)
class TargetedPoisons:
    """The targeted attack's choices: target positions in the universe, their wrong labels, replicas."""

    targets: torch.Tensor
    wrong_labels: torch.Tensor
    replicas: int


def choose_targets(n_points: int, n_targets: int, generator: torch.Generator) -> torch.Tensor:
    """``n_targets`` distinct positions drawn uniformly from the universe, sorted."""
    if not 0 < n_targets <= n_points:
        raise ConfigError(f"mia.poison_targets: expected 1..{n_points}, got {n_targets}")
    return torch.randperm(n_points, generator=generator)[:n_targets].sort().values


def targeted_poisons(
    universe: Dataset, targets: torch.Tensor, replicas: int = 8, generator: torch.Generator | None = None
) -> tuple[PoisonedDataset, TargetedPoisons]:
    """Algorithm A: ``replicas`` copies of each target image with one fixed, uniformly random wrong label per
    target (``(y + U{1..C-1}) mod C``, as the reference), appended to ``universe``.

    Threat model: the attacker may add ``len(targets) * replicas`` samples to the training set, cannot edit
    or remove anyone's data, knows each target's (x, y), and afterwards queries the model's logits.

    Returns:
        The poisoned view (appended samples only) and the choices behind it.
    """
    if replicas < 1:
        raise ConfigError(f"mia.replicas: expected >= 1, got {replicas}")
    targets = torch.as_tensor(targets, dtype=torch.long)
    c = universe.num_classes
    offset = torch.randint(1, c, (len(targets),), generator=generator)
    wrong = (universe.labels[targets] + offset) % c
    view = PoisonedDataset(
        universe,
        extra_images=universe.images[targets].repeat_interleave(replicas, 0),
        extra_labels=wrong.repeat_interleave(replicas),
    )
    return view, TargetedPoisons(targets, wrong, replicas)


def untargeted_poisons(
    universe: Dataset,
    pool: Dataset,
    share: float = 0.5,
    victim_size: int | None = None,
    label_noise_share: float = 1.0,
    mislabeled_ood_share: float = 0.0,
    generator: torch.Generator | None = None,
) -> PoisonedDataset:
    """Algorithm D: the attacker contributes ``share`` of the training data (samples drawn from its own
    ``pool`` of the same distribution, with replacement if the pool is too small), chosen to make every
    other party's points stand out: ``label_noise_share`` of its samples get a uniformly random wrong label,
    ``mislabeled_ood_share`` are out-of-distribution (the pool image's negative, ``1 - x``) with a random
    label, the rest are clean. The paper's exact construction was not recovered; this one is configurable.

    Threat model: the attacker owns ``share`` of the training set (e.g. a 50% partner in a joint training
    deal), names no targets, and afterwards queries the model's logits about other parties' points.

    Args:
        universe: the other parties' points (never modified).
        pool: the attacker's own data.
        share: the attacker's fraction of the final training set, in (0, 1).
        victim_size: how many victim points a model trains on (default: half the universe).
        label_noise_share: fraction of the attacker's samples relabelled.
        mislabeled_ood_share: fraction replaced by inverted images with random labels.
        generator: randomness.
    """
    if not 0 < share < 1:
        raise ConfigError(f"mia.untargeted_share: expected 0 < share < 1, got {share}")
    if label_noise_share < 0 or mislabeled_ood_share < 0 or label_noise_share + mislabeled_ood_share > 1:
        raise ConfigError("mia.label_noise_share + mia.mislabeled_ood_share: expected non-negative, sum <= 1")
    n_victim = victim_size if victim_size is not None else len(universe) // 2
    n = int(round(n_victim * share / (1 - share)))
    if n > len(pool):
        idx = torch.randint(0, len(pool), (n,), generator=generator)
    else:
        idx = torch.randperm(len(pool), generator=generator)[:n]
    x, y = pool.images[idx].clone(), pool.labels[idx].clone()
    kind = torch.rand(n, generator=generator)
    noisy = kind < label_noise_share
    ood = (kind >= label_noise_share) & (kind < label_noise_share + mislabeled_ood_share)
    c = universe.num_classes
    y = torch.where(noisy, (y + torch.randint(1, c, (n,), generator=generator)) % c, y)
    x = torch.where(ood[:, None, None, None], 1 - x, x)
    y = torch.where(ood, torch.randint(0, c, (n,), generator=generator), y)
    return PoisonedDataset(universe, extra_images=x, extra_labels=y)
