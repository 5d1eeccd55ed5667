"""Shadow models: the reference keep-mask design, training sets that append poisons without touching the
universe, K-at-once equal to sequential, per-model resume (bit-identical) and refusal of another spec's
models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from poisonlab.attacks.inference.shadows import ShadowSpec, keep_masks, train_shadows, training_sets
from poisonlab.attacks.inference.truth_serum import targeted_poisons
from poisonlab.config import ModelConfig, TrainConfig
from poisonlab.data import Dataset
from poisonlab.errors import CheckpointError, ConfigError, Interrupted

MODEL = ModelConfig(name="mlp", width=16)
RECIPE = TrainConfig(epochs=2, batch_size=32, lr=0.05)


def test_keep_masks_each_point_in_half_the_models() -> None:
    keep = keep_masks(8, 500, torch.Generator().manual_seed(0))
    assert keep.shape == (8, 500) and keep.dtype == torch.bool
    assert (keep.sum(0) == 4).all()
    assert 200 < int(keep.sum(1).min()) and int(keep.sum(1).max()) < 300  # model sizes vary around half
    assert torch.equal(keep, keep_masks(8, 500, torch.Generator().manual_seed(0)))
    assert not torch.equal(keep, keep_masks(8, 500, torch.Generator().manual_seed(1)))
    assert (keep_masks(5, 10, torch.Generator().manual_seed(0)).sum(0) == 2).all()
    with pytest.raises(ConfigError, match="shadows"):
        keep_masks(1, 10, torch.Generator())


def test_training_sets_append_poisons_and_leave_universe_alone(digits_small: Dataset) -> None:
    before = digits_small.images.clone(), digits_small.labels.clone()
    keep = keep_masks(4, len(digits_small), torch.Generator().manual_seed(0))
    view, chosen = targeted_poisons(digits_small, torch.tensor([3, 10]), 5, torch.Generator().manual_seed(0))
    sets = training_sets(digits_small, keep, view)
    for row, d in zip(keep, sets):
        assert len(d) == int(row.sum()) + 10
        assert torch.equal(d.ids[: int(row.sum())], digits_small.ids[row])
        assert torch.equal(d.labels[-10:], chosen.wrong_labels.repeat_interleave(5))
        assert torch.equal(d.images[-5:], digits_small.images[10].expand(5, -1, -1, -1))
    assert torch.equal(before[0], digits_small.images) and torch.equal(before[1], digits_small.labels)
    assert [len(d) for d in training_sets(digits_small, keep)] == keep.sum(1).tolist()


def _spec(data: Dataset, n: int = 4, tag: str = "") -> ShadowSpec:
    return ShadowSpec(MODEL, RECIPE, keep_masks(n, len(data), torch.Generator().manual_seed(0)), 7, tag)


def _same(a: list[torch.nn.Module], b: list[torch.nn.Module]) -> bool:
    return all(
        all(torch.equal(x, y) for x, y in zip(m.state_dict().values(), n.state_dict().values())) for m, n in zip(a, b)
    )


def test_k_at_once_equals_sequential_and_resumes(digits_small: Dataset, tmp_path: Path) -> None:
    spec = _spec(digits_small)
    one = train_shadows(digits_small, spec, tmp_path / "a", k_at_once=1, strategy="sequential")
    many = train_shadows(digits_small, spec, tmp_path / "b", k_at_once=4, strategy="processes")
    assert _same(one, many)  # processes: each member is the sequential oracle at the same thread count
    # resume: a missing model is retrained (bit-identical); the others are loaded from their artifacts
    import shutil

    shutil.rmtree(tmp_path / "a" / "model-002")
    again = train_shadows(digits_small, spec, tmp_path / "a", k_at_once=2, strategy="sequential")
    assert _same(one, again)
    assert all(not m.training for m in again)
    with pytest.raises(CheckpointError, match="shadow set"):
        train_shadows(digits_small, _spec(digits_small, tag="other"), tmp_path / "a")


def test_stop_between_groups_keeps_finished_models(digits_small: Dataset, tmp_path: Path) -> None:
    spec = _spec(digits_small)
    with pytest.raises(Interrupted):
        train_shadows(digits_small, spec, tmp_path, k_at_once=2, strategy="sequential", should_stop=lambda: True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-000", "model-001"]
    resumed = train_shadows(digits_small, spec, tmp_path, k_at_once=2, strategy="sequential")
    fresh = train_shadows(digits_small, spec, tmp_path / "fresh", k_at_once=4, strategy="sequential")
    assert _same(resumed, fresh)


def test_a_defended_shadow_set_has_its_own_hash_and_needs_a_name(digits_small: Dataset) -> None:
    from functools import partial

    from poisonlab.experiments.audit.defenses import defense_hooks, preset

    plain = _spec(digits_small)
    hooks = partial(defense_hooks, preset("mixup"))
    defended = ShadowSpec(MODEL, RECIPE, plain.keep, plain.seed, plain.tag, "mixup", hooks)
    assert defended.spec_hash(digits_small, None) != plain.spec_hash(digits_small, None)
    # an undefended spec's hash does not change when the defense field exists but is empty
    assert ShadowSpec(MODEL, RECIPE, plain.keep, plain.seed, plain.tag, "").spec_hash(digits_small, None) == (
        plain.spec_hash(digits_small, None)
    )
    with pytest.raises(ConfigError, match="defense name"):
        ShadowSpec(MODEL, RECIPE, plain.keep, plain.seed, plain.tag, "", hooks).spec_hash(digits_small, None)
