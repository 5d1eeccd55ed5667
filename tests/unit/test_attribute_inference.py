"""Attribute inference: completions, Truth Serum poisons, known answers, base data untouched, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from poisonlab.attacks.inference.attribute import (
    attribute_results,
    calibrated_scores,
    completion_confidences,
    logit_confidence,
    truth_serum_attribute_poisons,
)
from poisonlab.attacks.inference.attribute_experiment import attribute_trial, load_attribute_config
from poisonlab.data.dataset import Dataset
from poisonlab.data.poisoned import PoisonedDataset
from poisonlab.data.tabular import CategoricalColumn, attribute_values, complete_records, fair_schema, load_fair
from poisonlab.errors import ConfigError
from poisonlab.metrics.intervals import wilson_interval

COLUMN = CategoricalColumn("colour", 2, ("red", "green", "blue", "grey"))  # features: 2 numeric + 4 one-hot


def _records(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features (n,1,1,6), labels, attribute values): random numeric features, a uniform random attribute."""
    g = torch.Generator().manual_seed(seed)
    numeric = torch.rand(n, 2, generator=g)
    values = torch.randint(0, 4, (n,), generator=g)
    x = torch.cat([numeric, nn.functional.one_hot(values, 4).float()], 1).reshape(n, 1, 1, 6)
    return x, torch.randint(0, 2, (n,), generator=g), values


class Memoriser(nn.Module):
    """Predicts the stored label with logit +8 on exact stored records and has no opinion elsewhere."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("x", x.reshape(len(x), -1))
        self.register_buffer("y", y)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hit = (inputs.reshape(len(inputs), 1, -1) == self.x[None]).all(-1).float()  # (B, N)
        return 8 * hit @ nn.functional.one_hot(self.y, 2).float()


def test_completions_overwrite_only_the_attribute() -> None:
    x, _, values = _records(5, 0)
    snapshot = x.clone()
    comp = complete_records(x, COLUMN)
    assert torch.equal(x, snapshot) and comp.shape == (5, 4, 1, 1, 6)
    assert torch.equal(attribute_values(comp.reshape(20, 1, 1, 6), COLUMN), torch.arange(4).repeat(5))
    assert torch.equal(comp[..., :2], x[:, None, ..., :2].expand(5, 4, 1, 1, 2))
    assert torch.equal(comp[torch.arange(5), values], x)  # the true completion is the record itself


@pytest.mark.parametrize("strategy", ["wrong_label", "true_label"])
def test_poisons_count_labels_and_features(strategy: str) -> None:
    x, y, _ = _records(6, 1)
    p = truth_serum_attribute_poisons(x, y, COLUMN, 3, strategy, 2, torch.Generator().manual_seed(0))
    assert p.features.shape == (6 * 4 * 3, 1, 1, 6) and p.labels.shape == (72,)
    expected = y[p.target_index] if strategy == "true_label" else 1 - y[p.target_index]
    assert torch.equal(p.labels, expected)
    assert torch.equal(p.features, complete_records(x, COLUMN)[p.target_index, p.value_index])
    assert len(truth_serum_attribute_poisons(x, y, COLUMN, 0, strategy, 2, torch.Generator()).labels) == 0


def test_wrong_labels_are_fixed_per_target_and_never_true() -> None:
    y = torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(0))
    x = torch.zeros(40, 1, 1, 6)
    p = truth_serum_attribute_poisons(x, y, COLUMN, 2, "wrong_label", 5, torch.Generator().manual_seed(1))
    assert bool((p.labels != y[p.target_index]).all())
    per_target = p.labels.reshape(40, 8)
    assert bool((per_target == per_target[:, :1]).all())


def test_poisoned_dataset_never_mutates_the_base() -> None:
    splits = load_fair()
    base = splits.train.subset(torch.arange(200))
    snapshot = (base.images.clone(), base.labels.clone(), base.ids.clone())
    column = fair_schema().attribute("religious")
    p = truth_serum_attribute_poisons(
        base.images[:5], base.labels[:5], column, 4, "wrong_label", 2, torch.Generator().manual_seed(0)
    )
    view = PoisonedDataset(base, extra_images=p.features, extra_labels=p.labels)
    data = view.materialize()
    data.images[:] = 0.5  # writing to the materialised copy must not reach the base either
    assert torch.equal(base.images, snapshot[0]) and torch.equal(base.labels, snapshot[1])
    assert torch.equal(base.ids, snapshot[2])
    assert len(data) == 200 + 80 and len(view.changed_ids()) == 80


def test_memorising_model_reveals_every_attribute() -> None:
    x, y, values = _records(60, 2)
    model = Memoriser(x, y)
    phi = completion_confidences(model, x, y, COLUMN)
    res = attribute_results(phi, values)
    assert res["accuracy"] == 1.0 and res["correct"] == 60 and res["mean_rank"] == 1.0


def test_independent_unseen_attribute_gives_chance() -> None:
    """A model trained on other records, where the attribute is independent of everything, cannot beat 1/m."""
    x, y, _ = _records(2000, 3)
    train_x, train_y = x[:1500], y[:1500]
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 2))
    for p in model.parameters():
        nn.init.uniform_(p, -0.3, 0.3, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(train_x), train_y).backward()
        opt.step()
    targets = slice(1500, 2000)
    x_t, y_t = x[targets], y[targets]
    truth = attribute_values(x_t, COLUMN)
    phi = completion_confidences(model, x_t, y_t, COLUMN)
    res = attribute_results(phi + 1e-9 * torch.rand(phi.shape, generator=g, dtype=phi.dtype), truth)
    lo, hi = wilson_interval(res["correct"], res["n"], 0.999)
    assert lo <= 0.25 <= hi


def test_logit_confidence_and_calibration() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
    p = logits.softmax(1)
    expected = torch.log(p[[0, 1], [0, 2]] / (1 - p[[0, 1], [0, 2]]))
    torch.testing.assert_close(logit_confidence(logits, torch.tensor([0, 2])), expected)
    victim = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    ref = torch.tensor([[[0.0, 3.0]], [[2.0, 3.0]]], dtype=torch.float64)
    # mu_out = (1, 3); the pooled residual std is sqrt(mean(1, 1, 0, 0)) = sqrt(1/2)
    expected = torch.tensor([[0.0, -(2**0.5)]], dtype=torch.float64)
    torch.testing.assert_close(calibrated_scores(victim, ref), expected)
    with pytest.raises(ValueError):
        calibrated_scores(victim, ref[:, :, :1])


def test_config_rejects_unknown_attribute_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="attack.attribute"):
        load_attribute_config(None, ["attack.attribute=height"])
    with pytest.raises(ConfigError, match="attack.poison_label_strategy"):
        load_attribute_config(None, ["attack.poison_label_strategy=random"])
    with pytest.raises(ConfigError, match="attack.replicas_per_candidate"):
        load_attribute_config(None, ["attack.replicas_per_candidate=-1"])


def test_trial_is_deterministic_under_a_seed() -> None:
    config = load_attribute_config(
        None,
        ["model.width=8", "train.epochs=1", "attack.targets=3", "attack.reference_models=1",
         "attack.member_fraction=0.05", "attack.replicas_per_candidate=2"],
    )  # fmt: skip
    arms = {"clean": 0, "poisoned": 2}
    a = attribute_trial(config, 0, arms)
    b = attribute_trial(config, 0, arms)
    c = attribute_trial(config, 1, arms)
    for r in (a, b):
        r["clean"].pop("seconds"), r["poisoned"].pop("seconds")
    assert a == b
    assert a["target_ids"] != c["target_ids"]
    assert a["poisoned"]["poisons"] == 3 * 4 * 2 and a["clean"]["poisons"] == 0


def test_dataset_schema_is_consistent() -> None:
    schema = fair_schema()
    splits = load_fair()
    assert splits.train.shape == (1, 1, len(schema.features))
    for col in schema.categorical:
        onehot = splits.train.images.reshape(len(splits.train), -1)[:, col.start : col.stop]
        assert torch.equal(onehot.sum(1), torch.ones(len(splits.train)))
    assert float(splits.train.images.min()) >= 0 and float(splits.train.images.max()) <= 1
    assert isinstance(splits.test, Dataset) and splits.train.classes == ("no affair", "affair")
