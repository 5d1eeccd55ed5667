"""Embedded datasets, ids, splits and the PoisonedDataset view."""

from __future__ import annotations

import pytest
import torch

from poisonlab.data import Dataset, PoisonedDataset, load_dataset
from poisonlab.errors import ConfigError, DataError


def test_mnist5k_split_is_fixed_stratified_and_ids_are_stable() -> None:
    a, b = load_dataset("mnist5k"), load_dataset("mnist5k")
    assert len(a.train) == 4000 and len(a.test) == 1000 and a.train.shape == (1, 28, 28)
    assert torch.equal(a.train.ids, b.train.ids) and torch.equal(a.test.images, b.test.images)
    assert torch.bincount(a.train.labels).tolist() == [400] * 10
    assert torch.bincount(a.test.labels).tolist() == [100] * 10
    assert sorted(torch.cat([a.train.ids, a.test.ids]).tolist()) == list(range(5000))
    assert 0.0 <= float(a.train.images.min()) and float(a.train.images.max()) <= 1.0


def test_digits_and_synthetic() -> None:
    d = load_dataset("digits")
    assert d.train.shape == (1, 8, 8) and len(d.train) + len(d.test) == 1797
    s1, s2 = load_dataset("synthetic"), load_dataset("synthetic")
    assert s1.train.shape == (3, 32, 32) and len(s1.train) == 2000 and len(s1.test) == 500
    assert torch.equal(s1.train.images, s2.train.images)  # deterministic
    assert torch.bincount(s1.train.labels, minlength=10).min() > 150


def test_unknown_dataset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="data.name"):
        load_dataset("imagenet-21k")


def test_dataset_shape_validation() -> None:
    with pytest.raises(DataError, match="shape"):
        Dataset("x", torch.zeros(2, 8, 8), torch.zeros(2, dtype=torch.long), torch.arange(2), ("a",))
    with pytest.raises(DataError, match="labels"):
        Dataset("x", torch.zeros(2, 1, 8, 8), torch.tensor([0, 5]), torch.arange(2), ("a", "b"))


def test_positions_of(digits_small) -> None:
    ids = digits_small.ids[[5, 0, 17]]
    assert digits_small.positions_of(ids).tolist() == [5, 0, 17]
    with pytest.raises(DataError, match="unknown sample ids"):
        digits_small.positions_of([10**9])


def test_poisoned_view_never_mutates_base_and_reports_changes(digits_small) -> None:
    base_images = digits_small.images.clone()
    base_labels = digits_small.labels.clone()
    ids = digits_small.ids[[3, 7]]
    delta = torch.zeros(2, *digits_small.shape)
    delta[:, 0, 0, 0] = torch.tensor([0.1, -0.1])
    x = digits_small.images[[3, 7]]
    delta = (x + delta).clamp(0, 1) - x
    extra = torch.rand(3, *digits_small.shape)
    view = PoisonedDataset(
        digits_small,
        delta_ids=ids,
        deltas=delta,
        label_ids=digits_small.ids[[9]],
        labels=torch.tensor([4]),
        extra_images=extra,
        extra_labels=torch.tensor([1, 2, 3]),
    )
    out = view.materialize()
    assert torch.equal(digits_small.images, base_images) and torch.equal(digits_small.labels, base_labels)
    assert len(out) == len(digits_small) + 3 == len(view)
    assert torch.allclose(out.images[[3, 7]], x + delta)
    assert out.labels[9] == 4 and out.labels[-3:].tolist() == [1, 2, 3]
    new_ids = out.ids[-3:]
    assert int(new_ids.min()) > int(digits_small.ids.max())
    expected = sorted(ids.tolist() + [int(digits_small.ids[9])] + new_ids.tolist())
    assert view.changed_ids().tolist() == expected
    unchanged = ~torch.isin(out.ids[: len(digits_small)], view.changed_ids())
    assert torch.equal(out.images[: len(digits_small)][unchanged], base_images[unchanged])


def test_poisoned_view_validation(digits_small) -> None:
    ids = digits_small.ids[:2]
    with pytest.raises(DataError, match="deltas: expected shape"):
        PoisonedDataset(digits_small, delta_ids=ids, deltas=torch.zeros(3, *digits_small.shape))
    with pytest.raises(DataError, match="within"):
        PoisonedDataset(digits_small, delta_ids=ids, deltas=torch.full((2, *digits_small.shape), 2.0))
    with pytest.raises(DataError, match="unique"):
        PoisonedDataset(
            digits_small, delta_ids=torch.cat([ids[:1], ids[:1]]), deltas=torch.zeros(2, *digits_small.shape)
        )
    with pytest.raises(DataError, match="unknown sample ids"):
        PoisonedDataset(digits_small, delta_ids=torch.tensor([10**9]), deltas=torch.zeros(1, *digits_small.shape))
    with pytest.raises(DataError, match="labels"):
        PoisonedDataset(digits_small, label_ids=ids, labels=torch.tensor([0, 10]))
    with pytest.raises(DataError, match="reuse"):
        PoisonedDataset(
            digits_small,
            extra_images=torch.zeros(1, *digits_small.shape),
            extra_labels=torch.tensor([0]),
            extra_ids=ids[:1],
        )
