"""Property: a protected release always respects its budget, before and after export -> PNG -> import.

For random eps, fractions, objectives, target scopes and seeds: ||delta||_inf <= eps, protected pixels in [0, 1],
labels and ids untouched, only the chosen ids change and their number is exactly the fraction's, and the
artifact re-checks all of it on load.
"""

from __future__ import annotations

import tempfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poisonlab.attacks.poisoning import PoisonSet
from poisonlab.attacks.poisoning.availability import AvailabilityPoisoning, ProtectTask
from poisonlab.attacks.poisoning.protect_config import protect_config
from poisonlab.attacks.poisoning.protect_experiment import choose_protected
from poisonlab.budget import PoisonBudget
from poisonlab.config import TrainConfig
from poisonlab.data import Dataset
from poisonlab.errors import CheckpointError
from poisonlab.models import build_model
from poisonlab.rng import SeedTree
from poisonlab.training import Trainer

TOL = 1e-6


@pytest.fixture(scope="module")
def setting(digits_small: Dataset) -> tuple[Dataset, torch.nn.Module]:
    base = Dataset("digits8", (digits_small.images[:96] * 255).round() / 255, digits_small.labels[:96],
                   digits_small.ids[:96], digits_small.classes)  # fmt: skip
    model = build_model("mlp", base.shape, 10, SeedTree(0).generator("init"), width=16)
    Trainer(model, base, TrainConfig(epochs=1, batch_size=32, lr=0.05), SeedTree(0)).fit()
    return base, model.eval()


def _assert_admissible(ps: PoisonSet, base: Dataset, count: int) -> None:
    view = ps.to_view(base).materialize()
    assert len(ps) == count and ps.poison_ids.unique().numel() == count
    assert torch.equal(view.labels, base.labels) and torch.equal(view.ids, base.ids)
    diff = view.images - base.images
    assert float(diff.abs().max()) <= ps.eps + TOL
    assert float(view.images.min()) >= 0.0 and float(view.images.max()) <= 1.0
    changed = base.ids[diff.flatten(1).abs().amax(1) > 0]
    assert bool(torch.isin(changed, ps.poison_ids).all())


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    levels=st.integers(1, 96),
    fraction=st.sampled_from([1.0, 0.5, 0.25, 1 / 96]),
    seed=st.integers(0, 2**20),
    steps=st.integers(1, 2),
    objective=st.sampled_from(["reverse-ce", "negative-ce"]),
    scope=st.sampled_from(["batch", "all"]),
    method=st.sampled_from(["alignment", "adversarial-targeted", "adversarial-untargeted"]),
)
def test_protected_release_respects_budget_through_png(
    setting, levels, fraction, seed, steps, objective, scope, method
):
    base, model = setting
    seeds = SeedTree(seed)
    ids = choose_protected(base, fraction, seeds.generator("selection"))
    count = PoisonBudget(fraction=fraction).resolve(len(base))
    cfg = protect_config(
        eps=f"{levels}/255",
        fraction=fraction,
        steps=steps,
        tau=5.0,
        pbatch=32,
        objective=objective,
        target_scope=scope,
        method=method,
        pgd_tau=1.0,
    )  # fmt: skip  (large steps hit the bounds)
    ps = AvailabilityPoisoning(cfg, augment=seed % 2 == 0).craft(ProtectTask(base, ids), [model], seeds)
    _assert_admissible(ps, base, count)
    with tempfile.TemporaryDirectory() as tmp:
        ps.export_images(tmp, base)
        back = ps.import_images(tmp, base)
        ps.save(f"{tmp}/protected")
        loaded = PoisonSet.load(f"{tmp}/protected", base)
    _assert_admissible(back, base, count)
    assert torch.equal(back.deltas, ps.quantized(base).deltas)
    assert torch.equal(loaded.deltas, ps.deltas) and torch.equal(loaded.poison_ids, ps.poison_ids)
    assert loaded.recipe == "availability" and loaded.meta["objective"] == objective
    assert loaded.meta["method"] == method


def test_loading_refuses_a_release_that_breaks_its_budget(setting, tmp_path) -> None:
    base, model = setting
    cfg = protect_config(eps="4/255", steps=1)
    ps = AvailabilityPoisoning(cfg).craft(ProtectTask(base, base.ids[:8]), [model], SeedTree(0))
    ps.save(tmp_path / "ok")
    shifted = Dataset("shifted", (base.images + 0.1).clamp(0, 1), base.labels, base.ids, base.classes)
    with pytest.raises(CheckpointError, match="invalid poison set"):
        PoisonSet.load(tmp_path / "ok", shifted)  # the deltas no longer keep these images in the ball/box
