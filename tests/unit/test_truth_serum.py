"""Truth Serum poisons: the targeted construction (r replicas, one fixed wrong label per target, appended),
the untargeted construction's sizes and shares, determinism, and precision at fixed recall."""

from __future__ import annotations

import pytest
import torch

from poisonlab.attacks.inference.truth_serum import choose_targets, targeted_poisons, untargeted_poisons
from poisonlab.data import Dataset
from poisonlab.errors import ConfigError
from poisonlab.metrics.membership import precision_at_recall


def test_targeted_replicas_with_fixed_wrong_label(digits_small: Dataset) -> None:
    before = digits_small.images.clone()
    targets = choose_targets(len(digits_small), 12, torch.Generator().manual_seed(0))
    assert len(targets.unique()) == 12 and bool((targets.diff() > 0).all())
    view, chosen = targeted_poisons(digits_small, targets, 8, torch.Generator().manual_seed(1))
    full = view.materialize()
    assert len(full) == len(digits_small) + 96
    assert bool((chosen.wrong_labels != digits_small.labels[targets]).all())
    x, y = full.images[len(digits_small) :].view(12, 8, -1), full.labels[len(digits_small) :].view(12, 8)
    assert torch.equal(x, digits_small.images[targets].flatten(1)[:, None].expand(-1, 8, -1))
    assert torch.equal(y, chosen.wrong_labels[:, None].expand(-1, 8))
    assert torch.equal(view.changed_ids(), full.ids[len(digits_small) :])  # only appended samples
    assert torch.equal(before, digits_small.images)
    again, _ = targeted_poisons(digits_small, targets, 8, torch.Generator().manual_seed(1))
    assert torch.equal(again.extra_labels, view.extra_labels)
    # the wrong labels are spread over the other classes
    many = targeted_poisons(digits_small, torch.arange(240), 1, torch.Generator().manual_seed(2))[1].wrong_labels
    assert len(many.unique()) == 10
    with pytest.raises(ConfigError, match="poison_targets"):
        choose_targets(10, 11, torch.Generator())
    with pytest.raises(ConfigError, match="replicas"):
        targeted_poisons(digits_small, targets, 0)


def test_untargeted_share_and_construction(digits_small: Dataset) -> None:
    pool = digits_small.subset(torch.arange(100))
    universe = digits_small.subset(torch.arange(100, 240))
    view = untargeted_poisons(universe, pool, share=0.5, victim_size=70, generator=torch.Generator().manual_seed(0))
    assert len(view.extra_labels) == 70  # half of the final training set
    # all relabelled (default): no appended sample keeps its pool label
    src = view.extra_images.flatten(1)
    match = (src[:, None] == pool.images.flatten(1)[None]).all(-1).float().argmax(1)
    assert bool((view.extra_labels != pool.labels[match]).all())
    ood = untargeted_poisons(
        universe, pool, 0.25, 60, label_noise_share=0.0, mislabeled_ood_share=1.0,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert len(ood.extra_labels) == 20
    inv = 1 - ood.extra_images.flatten(1)
    assert bool((inv[:, None] == pool.images.flatten(1)[None]).all(-1).any(1).all())
    with pytest.raises(ConfigError, match="untargeted_share"):
        untargeted_poisons(universe, pool, share=1.0)


def test_precision_at_recall_hand_computed() -> None:
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    labels = [1, 0, 1, 1, 0, 0]
    assert precision_at_recall(scores, labels, 1 / 3) == 1.0  # first member alone
    assert precision_at_recall(scores, labels, 0.5) == pytest.approx(2 / 3)  # needs 2 members: 3 calls
    assert precision_at_recall(scores, labels, 1.0) == pytest.approx(3 / 4)
    assert precision_at_recall([1, 1, 0], [1, 0, 1], 0.5) == 0.5  # the tie is called together
